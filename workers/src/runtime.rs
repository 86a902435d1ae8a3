//! The worker runtime: claims jobs of one queue from Redis, runs them through
//! the tower stack (retry → timeout → handler), acknowledges in batches, and
//! keeps the pool healthy (heartbeats, recovery of jobs held by dead workers,
//! graceful shutdown that gives unfinished work back).
//!
//! The concurrency bound is enforced at claim time: a job is only taken from
//! Redis when a slot is free, so nothing waits claimed-but-idle in memory.
//!
//! Redis may go away at any time. Claims back off while it is down; finished
//! and failed jobs are written as soon as it is back (see `outcome` and
//! `upkeep`); claims whose reply was lost are found and given back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder};

use crate::claim::{Settle, SettleLimits};
use crate::error::{Error, JobError};
use crate::job::{lock, DeadLetter, Job};
use crate::metrics::Metrics;
use crate::outcome::{run_one, Pause, Shared};
use crate::queue::{chrono_ms, Queue};
use crate::retry::{Backoff, RetryPolicy};
use crate::upkeep::{ack_loop, heartbeat_loop};

/// How one runtime behaves.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The queue to serve.
    pub queue: String,
    /// Unique name of this worker in the pool; recovery is keyed by it.
    pub worker_name: String,
    /// Jobs run at once in this process.
    pub concurrency: usize,
    /// Longest an attempt may run.
    pub timeout: Duration,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Longer waits than this are rescheduled in Redis rather than slept.
    pub max_inline_wait: Duration,
    /// Wait between claims when the queue is empty.
    pub poll_interval: Duration,
    /// How often this worker says it is alive (and looks for dead peers).
    pub heartbeat: Duration,
    /// A peer silent this long is dead; its jobs go back to the queue. A
    /// worker only looks for dead peers once its own heartbeats have
    /// succeeded without a gap for this long (see `upkeep`).
    pub dead_after: Duration,
    /// On shutdown, how long in-flight jobs may take to finish.
    pub shutdown_grace: Duration,
    /// How long finished jobs are kept for inspection.
    pub done_retention: Duration,
    /// At most this many finished jobs are kept per queue.
    pub done_keep: u64,
    /// Most jobs claimed in one round trip.
    pub fetch_batch: usize,
    /// A job whose workers died this many times while running it is
    /// dead-lettered ("worker died while running it") instead of run again.
    /// At least 1.
    pub max_stalls: u32,
    /// After a handler reports [`JobError::Unavailable`], no new job is
    /// claimed for this long, so a down dependency is not hammered by the
    /// whole backlog.
    pub unavailable_pause: Duration,
    /// How long a job put off without using an attempt (a dependency was
    /// unavailable, or the dead-letter hook failed) waits: `base` doubling
    /// per postponement in a row, up to `max`, with jitter.
    pub postpone_backoff: Backoff,
    /// How long dead jobs (and their attempt logs) are kept. Zero: no limit.
    pub dead_retention: Duration,
    /// At most this many dead jobs are kept per queue, the oldest dropped
    /// first. Zero: no limit.
    pub dead_keep: u64,
}

impl RuntimeConfig {
    pub(crate) fn settle_limits(&self) -> SettleLimits {
        SettleLimits {
            postpone: self.postpone_backoff,
            dead_retention: self.dead_retention,
            dead_keep: self.dead_keep,
        }
    }

    /// Defaults for `queue` under `worker_name`.
    pub fn new(queue: impl Into<String>, worker_name: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            worker_name: worker_name.into(),
            concurrency: 16,
            timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_inline_wait: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(20),
            done_retention: Duration::from_secs(3600),
            done_keep: 10_000,
            fetch_batch: 64,
            max_stalls: 3,
            unavailable_pause: Duration::from_secs(1),
            postpone_backoff: Backoff {
                base: Duration::from_millis(250),
                max: Duration::from_secs(5),
            },
            dead_retention: Duration::from_secs(180 * 24 * 3600),
            dead_keep: 10_000,
        }
    }
}

/// Serves one queue with a handler until told to stop.
pub struct Runtime<S> {
    queue: Queue,
    cfg: RuntimeConfig,
    handler: S,
    dead_letter: Option<Arc<dyn DeadLetter>>,
    metrics: Option<Metrics>,
    make_span: Option<MakeSpan>,
}

/// Makes the span a job runs in (see [`Runtime::span`]).
pub type MakeSpan = Arc<dyn Fn(&Job) -> tracing::Span + Send + Sync>;

/// The default job span: `job` with its id, queue and attempt.
pub fn job_span(job: &Job) -> tracing::Span {
    tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt)
}

impl<S> Runtime<S>
where
    S: Service<Job, Response = (), Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// A runtime for `cfg.queue` that runs `handler`.
    pub fn new(queue: Queue, cfg: RuntimeConfig, handler: S) -> Self {
        Self {
            queue,
            cfg,
            handler,
            dead_letter: None,
            metrics: None,
            make_span: None,
        }
    }

    /// Makes the span each job runs in, retries and dead-lettering
    /// included, so every log line of a job carries what `make` puts in it
    /// (say, ids decoded from the payload). Default: [`job_span`].
    pub fn span(mut self, make: impl Fn(&Job) -> tracing::Span + Send + Sync + 'static) -> Self {
        self.make_span = Some(Arc::new(make));
        self
    }

    /// Records job outcomes, retries and durations into `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Installs the hook called when a job is parked dead.
    pub fn on_dead(mut self, hook: Arc<dyn DeadLetter>) -> Self {
        self.dead_letter = Some(hook);
        self
    }

    /// Runs until `shutdown` completes, then stops claiming, lets in-flight
    /// jobs finish within the grace period and gives the rest back.
    ///
    /// # Errors
    /// When Redis fails at start-up, or is still unreachable when leaving the
    /// pool (the jobs left claimed are then recovered like a dead worker's).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let cfg = Arc::new(self.cfg);
        let queue = self.queue;
        let qname: Arc<str> = cfg.queue.as_str().into();
        let worker: Arc<str> = cfg.worker_name.as_str().into();
        let limits = cfg.settle_limits();

        // A previous life under the same name died with these claims: they
        // count as stalls, as if a peer had recovered them.
        let recovered = queue.recover_own(&qname, &worker).await?;
        if recovered > 0 {
            tracing::warn!(queue = %qname, worker = %worker, jobs = recovered, "recovered the jobs a previous run of this worker left behind");
        }
        let info = [
            ("queue", cfg.queue.clone()),
            ("concurrency", cfg.concurrency.to_string()),
            ("host", host_name()),
            ("pid", std::process::id().to_string()),
            ("started", chrono_ms().to_string()),
        ];
        queue
            .heartbeat(&qname, &worker, &info, cfg.dead_after * 2)
            .await?;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Aborted if this future is dropped, so a dropped runtime goes silent
        // and its peers recover its jobs, as after a crash.
        let mut beat = AbortOnDrop(tokio::spawn(heartbeat_loop(
            queue.clone(),
            cfg.clone(),
            info.to_vec(),
            tokio::time::Instant::now(),
            stop_rx,
        )));
        let held: Arc<Mutex<HashSet<Arc<str>>>> = Arc::default();
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Arc<str>>();
        let acker = tokio::spawn(ack_loop(queue.clone(), cfg.clone(), ack_rx, held.clone()));

        let policy = RetryPolicy {
            backoff: cfg.backoff,
            max_inline_wait: cfg.max_inline_wait,
            queue: queue.clone(),
            metrics: self.metrics.clone(),
        };
        let service = ServiceBuilder::new()
            .retry(policy)
            .map_err(JobError::from_boxed)
            .timeout(cfg.timeout)
            .service(self.handler);
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            cfg: cfg.clone(),
            limits,
            ack: ack_tx,
            dead_letter: self.dead_letter,
            metrics: self.metrics,
            held: held.clone(),
            pause: Pause::default(),
        });

        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        // After a failed claim the reply may have been lost with the jobs
        // claimed in Redis: look for them before claiming again.
        let mut check_claims = false;
        let mut failures = 0u32;
        tokio::pin!(shutdown);
        loop {
            if let Some(until) = shared.pause.until() {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep_until(until) => continue,
                }
            }
            let first = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            if shared.pause.until().is_some() {
                // the slot was freed by a job that found a dependency down
                continue;
            }
            let mut permits = vec![first];
            while permits.len() < cfg.fetch_batch.max(1) {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let claimed = match give_back_lost_claims(&shared, check_claims).await {
                Ok(()) => {
                    check_claims = false;
                    queue
                        .fetch(&qname, &worker, permits.len(), cfg.max_stalls)
                        .await
                }
                Err(e) => Err(e),
            };
            let claimed = match claimed {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    check_claims = true;
                    failures += 1;
                    tracing::warn!(queue = %qname, error = %e, "claiming jobs failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(permits);
                // an empty queue is polled; a failing Redis is backed off from
                let wait = cfg.poll_interval * 2u32.pow(failures.min(5));
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(wait.min(Duration::from_secs(2)).max(cfg.poll_interval)) => continue,
                }
            }
            permits.truncate(claimed.len());
            for (c, permit) in claimed.into_iter().zip(permits) {
                let id: Arc<str> = c.id.into();
                let job = Job::new(
                    id.clone(),
                    qname.clone(),
                    c.payload.into(),
                    c.attempt,
                    c.max_attempts,
                    worker.clone(),
                );
                lock(&held).insert(id);
                let span = self
                    .make_span
                    .as_ref()
                    .map_or_else(|| job_span(&job), |f| f(&job));
                tasks.spawn(run_one(
                    shared.clone(),
                    job,
                    c.bury,
                    span,
                    service.clone(),
                    permit,
                ));
            }
            while tasks.try_join_next().is_some() {}
        }

        tracing::info!(queue = %qname, worker = %worker, in_flight = tasks.len(), "stopping: no new claims");
        let drained = tokio::time::timeout(cfg.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            tracing::warn!(queue = %qname, jobs = lock(&held).len(), "grace period over: unfinished jobs go back to the queue");
        }
        // the last sender goes with `shared`: the ack loop drains and ends
        drop(shared);
        if let Err(e) = acker.await {
            tracing::warn!(error = %e, "ack task ended abnormally");
        }
        let _ = stop_tx.send(true);
        let _ = (&mut beat.0).await;
        // Whatever is still claimed (aborted jobs) goes back with its attempt.
        let deadline = tokio::time::Instant::now() + cfg.shutdown_grace;
        let mut wait = Duration::from_millis(50);
        loop {
            match queue.leave(&qname, &worker, &limits).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + wait >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "leaving the pool failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Gives back jobs claimed in Redis under this worker that it does not know
/// of: a claim whose reply was lost. They never ran, so their attempt is
/// given back. Does nothing unless `check`.
async fn give_back_lost_claims(shared: &Shared, check: bool) -> Result<(), Error> {
    if !check {
        return Ok(());
    }
    let (q, w) = (&shared.cfg.queue, &shared.cfg.worker_name);
    for id in shared.queue.claimed_by(q, w).await? {
        if lock(&shared.held).contains(id.as_str()) {
            continue;
        }
        // a job acknowledged meanwhile is no longer claimed: this is a no-op
        shared
            .queue
            .settle(q, w, &id, Settle::Requeue, "", &shared.limits)
            .await?;
        tracing::warn!(job_id = %id, "gave back a job claimed by a call whose reply was lost");
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
