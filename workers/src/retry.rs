//! Retry with exponential backoff and jitter, as a `tower::retry::Policy`
//! over apalis tasks. Only transient errors are retried; a `Retry-After` from
//! the remote side is honoured. Short waits happen in place; a wait longer
//! than `max_inline_wait` is handed back to the backend, which reschedules
//! the job in Redis instead of holding a concurrency slot while it sleeps.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use rand::Rng;

use crate::error::JobError;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::queue::Queue;

/// Exponential backoff with "equal jitter": half the step is fixed, half random.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (from 1), never shorter
    /// than what the remote side asked for.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let step = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        let backoff = half + Duration::from_millis(jitter);
        retry_after.map_or(backoff, |ra| ra.max(backoff))
    }
}

/// The retry policy of a [`RedisBackend`]'s workers, for apalis'
/// `WorkerBuilder::retry` (made by [`RedisBackend::retry_policy`]).
///
/// Not apalis' stock `RetryPolicy`: that one counts attempts in memory,
/// retries any error, and knows nothing of `Retry-After`. Here attempts live
/// in Redis (each inline retry is recorded in the job's attempt log and the
/// queue's failed-attempt counts, and counted in its hash before it starts),
/// so they survive a worker's death;
/// only transient errors are retried; a wait longer than `max_inline_wait`,
/// or any wait once the worker is shutting down, is handed back to the
/// backend, which reschedules the job in Redis instead of holding a slot.
///
/// [`RedisBackend`]: crate::RedisBackend
/// [`RedisBackend::retry_policy`]: crate::RedisBackend::retry_policy
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) backoff: Backoff,
    pub(crate) max_inline_wait: Duration,
    pub(crate) queue: Queue,
    pub(crate) metrics: Option<Metrics>,
}

impl<Args: Clone, Res> tower::retry::Policy<Task<Args>, Res, BoxDynError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        task: &mut Task<Args>,
        result: &mut Result<Res, BoxDynError>,
    ) -> Option<Self::Future> {
        let err = JobError::classify(result.as_ref().err()?);
        let job = Job::of(task)?.clone();
        let attempt = job.last_attempt();
        // an unavailable dependency is not retried in place: the backend
        // postpones the job in Redis and pauses its claims
        if !err.is_transient() || attempt >= job.max_attempts {
            return None;
        }
        if task
            .data()
            .get::<WorkerContext>()
            .is_some_and(WorkerContext::is_shutting_down)
        {
            return None;
        }
        let delay = self.backoff.delay(attempt, err.retry_after());
        if delay > self.max_inline_wait {
            return None;
        }
        tracing::warn!(attempt, error = %err, retry_in_ms = delay.as_millis() as u64, "attempt failed; retrying");
        let record = job.failure_record(&err);
        job.next_attempt(delay);
        if let Some(m) = &self.metrics {
            m.inc("job_retries_total", &[("queue", &job.queue)]);
        }
        let queue = self.queue.clone();
        Some(Box::pin(async move {
            if let Err(e) = queue
                .record_retried_attempt(&job.queue, &job.id, &record)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %e, "could not record a failed attempt");
            }
            tokio::time::sleep(delay).await;
            if let Err(e) = queue.bump_attempt(&job.queue, &job.id).await {
                tracing::warn!(job_id = %job.id, error = %e, "could not count the next attempt");
            }
        }))
    }

    fn clone_request(&mut self, task: &Task<Args>) -> Option<Task<Args>> {
        // the clone shares the task's context, so apalis' attempt counter
        // (and the job's current attempt) move on for both
        Some(task.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3, None);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = b.delay(9, None);
            assert!(d9 <= Duration::from_millis(1000), "capped: {d9:?}");
            let ra = b.delay(1, Some(Duration::from_secs(2)));
            assert_eq!(ra, Duration::from_secs(2));
        }
    }
}
