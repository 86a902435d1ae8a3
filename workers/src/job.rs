//! A claimed job as the handler sees it, and the application's hook for jobs
//! that are given up on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::error::JobError;
use crate::queue::{chrono_ms, AttemptRecord};

/// One claimed job, as the handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub id: Arc<str>,
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The payload as pushed (JSON).
    pub payload: Arc<str>,
    /// This attempt's number, from 1. In the dead-letter hook: the attempts
    /// the job used.
    pub attempt: u32,
    /// Attempts the job may use in all.
    pub max_attempts: u32,
    /// The worker running it.
    pub worker: Arc<str>,
    /// The attempt now running, shared by the clones the retry layer makes,
    /// so the runtime's copy knows which attempt ran last and when it began.
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

    pub(crate) fn next_attempt(&mut self, after: Duration) {
        self.attempt += 1;
        *lock(&self.current) = Current {
            number: self.attempt,
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
