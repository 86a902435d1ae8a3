//! What the backend knows of a claimed job, and the application's hook for
//! jobs that are given up on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::task::Task;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::error::JobError;
use crate::queue::{chrono_ms, AttemptRecord};

/// One claimed job as stored in Redis: the backend puts it into every task's
/// data, so a handler can take it as `Data<Job>` and the dead-letter hook
/// gets it (with the raw payload) even for a payload that does not decode.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub id: Arc<str>,
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The payload as pushed (JSON).
    pub payload: Arc<str>,
    /// The attempt it was claimed for, from 1. In the dead-letter hook: the
    /// attempts the job used.
    pub attempt: u32,
    /// Attempts the job may use in all.
    pub max_attempts: u32,
    /// The worker running it.
    pub worker: Arc<str>,
    /// The attempt now running, shared by the clones the retry layer makes,
    /// so the backend's copy knows which attempt ran last and when it began.
    current: Arc<Mutex<Current>>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    number: u32,
    started: tokio::time::Instant,
    started_ms: i64,
}

impl Job {
    pub(crate) fn new(
        id: Arc<str>,
        queue: Arc<str>,
        payload: Arc<str>,
        attempt: u32,
        max_attempts: u32,
        worker: Arc<str>,
    ) -> Self {
        let current = Current {
            number: attempt,
            started: tokio::time::Instant::now(),
            started_ms: chrono_ms(),
        };
        Self {
            id,
            queue,
            payload,
            attempt,
            max_attempts,
            worker,
            current: Arc::new(Mutex::new(current)),
        }
    }

    /// The job a task of this crate's backend stands for; `None` for a task
    /// that did not come from it.
    pub fn of<Args>(task: &Task<Args>) -> Option<&Job> {
        task.data().get::<Job>()
    }

    /// Decodes the payload. A payload that does not decode will never decode,
    /// so the error is permanent.
    ///
    /// # Errors
    /// When the payload does not match `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.payload)
            .map_err(|e| JobError::permanent(format!("payload does not decode: {e}")))
    }

    /// The number of the attempt that ran last (the retry layer may have run
    /// several on clones of this job).
    pub(crate) fn last_attempt(&self) -> u32 {
        lock(&self.current).number
    }

    /// Time since the last attempt started.
    pub(crate) fn elapsed(&self) -> Duration {
        lock(&self.current).started.elapsed()
    }

    /// The default span of a job: `job` with its id, queue and attempt.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("job", job_id = %self.id, queue = %self.queue, attempt = self.attempt)
    }

    pub(crate) fn failure_record(&self, err: &JobError) -> AttemptRecord {
        let current = *lock(&self.current);
        AttemptRecord {
            attempt: current.number,
            worker: self.worker.to_string(),
            started_ms: current.started_ms,
            duration_ms: current.started.elapsed().as_millis() as u64,
            error: err.to_string(),
        }
    }

    /// The next attempt starts in `after`.
    pub(crate) fn next_attempt(&self, after: Duration) {
        let mut current = lock(&self.current);
        *current = Current {
            number: current.number + 1,
            started: tokio::time::Instant::now() + after,
            started_ms: chrono_ms() + after.as_millis() as i64,
        };
    }
}

/// Called when a job is given up on, before it is parked in the dead set, so
/// the application can record the failure where its users look.
///
/// If the hook fails, the job is *not* parked: it waits a short capped
/// backoff (without using an attempt) and the hook is called again, until it
/// succeeds. So the hook must be idempotent, and should fail only when its own
/// storage is unreachable.
pub trait DeadLetter: Send + Sync + 'static {
    /// The job ran out of attempts, failed permanently, or its workers kept
    /// dying while running it, with `error`. When this is a retry of a failed
    /// call, `error` is [`JobError::Permanent`] carrying the first call's
    /// message.
    ///
    /// # Errors
    /// When the failure could not be recorded; the call is then repeated later.
    fn on_dead<'a>(
        &'a self,
        job: &'a Job,
        error: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>>;
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
