//! What happens to a claimed job once it has run (or must not run): ack it,
//! retry it later, postpone it, or dead-letter it. Redis writes that end a
//! claim are repeated until Redis answers, so a blinking Redis never strands
//! a job in this worker's running set.

use std::future::Future;
use std::time::Duration;

use apalis_core::error::BoxDynError;

use crate::backend::shared::Shared;
use crate::claim::Settle;
use crate::error::{Error, JobError};
use crate::job::Job;

/// Settles a job the handler ran: acknowledges it (through the batched ack
/// writer) or settles its failure; records the metrics.
pub(crate) async fn finish(shared: &Shared, job: &Job, error: Option<&BoxDynError>) {
    let outcome = match error {
        None => {
            // the ack writer lets go of the id once the ack is written
            let _ = shared.ack.send(job.id.clone());
            "completed"
        }
        Some(e) => settle_failure(shared, job, &JobError::classify(e)).await,
    };
    if let Some(m) = &shared.metrics {
        let q: &str = &job.queue;
        m.observe(
            "job_duration_seconds",
            &[("queue", q)],
            job.elapsed().as_secs_f64(),
        );
    }
    count(shared, job, outcome);
}

/// Dead-letters a job that is not to run (again): its stalls or attempts
/// are used up, an earlier dead-lettering failed, or its payload does not
/// decode. `attempt_failed` records the attempt its claim counted.
pub(crate) async fn bury(shared: &Shared, job: &Job, err: &JobError, attempt_failed: bool) {
    tracing::warn!(attempts = job.attempt, reason = %err, "job is not run; dead-lettering it");
    if attempt_failed {
        record(shared, job, err).await;
    }
    let outcome = dead_letter(shared, job, err).await;
    count(shared, job, outcome);
}

fn count(shared: &Shared, job: &Job, outcome: &str) {
    if let Some(m) = &shared.metrics {
        let q: &str = &job.queue;
        m.inc("jobs_total", &[("queue", q), ("outcome", outcome)]);
        if outcome == "rescheduled" {
            m.inc("job_retries_total", &[("queue", q)]);
        }
    }
}

async fn record(shared: &Shared, job: &Job, err: &JobError) {
    let rec = job.failure_record(err);
    if let Err(e) = shared.queue.record_attempt(&job.queue, &job.id, &rec).await {
        tracing::warn!(error = %e, "could not record a failed attempt");
    }
}

/// The retry layer has given up (or handed back a long wait): record the
/// attempt, then postpone, reschedule or dead-letter the job. Returns the
/// outcome for the metrics.
async fn settle_failure(shared: &Shared, job: &Job, err: &JobError) -> &'static str {
    if err.is_deferred() {
        let wait = err.retry_after().unwrap_or_default();
        tracing::debug!(error = %err, wait_ms = wait.as_millis() as u64, "job deferred; its attempt given back");
        settle(shared, job, Settle::Postpone(wait), &err.to_string()).await;
        return "deferred";
    }
    if err.is_unavailable() {
        let pause = shared.cfg.unavailable_pause;
        tracing::warn!(error = %err, pause_ms = pause.as_millis() as u64, "a dependency is unavailable: job postponed, its attempt given back, claims paused");
        shared.pause.extend(pause);
        let least = err.retry_after().unwrap_or_default();
        settle(shared, job, Settle::Postpone(least), &err.to_string()).await;
        return "postponed";
    }
    // The retry layer ran its attempts on clones; the last one is what counts.
    let mut last = job.clone();
    last.attempt = job.last_attempt();
    record(shared, &last, err).await;
    if err.is_transient() && last.attempt < job.max_attempts {
        let delay = shared.cfg.backoff.delay(last.attempt, err.retry_after());
        tracing::warn!(attempt = last.attempt, error = %err, retry_in_ms = delay.as_millis() as u64, "attempt failed; rescheduled");
        settle(shared, job, Settle::Retry(delay), &err.to_string()).await;
        return "rescheduled";
    }
    tracing::warn!(attempts = last.attempt, error = %err, "job is dead");
    dead_letter(shared, &last, err).await
}

/// Calls the application's hook, then parks the job dead; if the hook fails,
/// the job waits (no attempt used) and comes back to be dead-lettered again.
async fn dead_letter(shared: &Shared, job: &Job, err: &JobError) -> &'static str {
    if let Some(hook) = &shared.dead_letter {
        if let Err(e) = hook.on_dead(job, err).await {
            tracing::warn!(error = %e, "the dead-letter hook failed; it is called again after a backoff");
            if e.is_unavailable() {
                shared.pause.extend(shared.cfg.unavailable_pause);
            }
            settle(shared, job, Settle::Bury, &err.to_string()).await;
            return "postponed";
        }
    }
    settle(shared, job, Settle::Dead, &err.to_string()).await;
    "dead"
}

/// Writes how a failed job ends, retrying until Redis answers, then lets go
/// of its id.
async fn settle(shared: &Shared, job: &Job, how: Settle, error: &str) {
    let (q, w, id) = (&job.queue, &job.worker, &job.id);
    until_written("settling a job", || {
        shared.queue.settle(q, w, id, how, error, &shared.limits)
    })
    .await;
    shared.release(id);
}

/// Repeats a Redis write with a capped backoff until it succeeds. The writes
/// it is used for act only on jobs still claimed by this worker, so a repeat
/// after a lost reply changes nothing.
pub(crate) async fn until_written<F, Fut>(what: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match call().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
