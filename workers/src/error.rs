//! Errors of this crate. Infrastructure failures are [`Error`]; a handler's
//! failure is a [`JobError`] that says by itself whether retrying can help, so
//! the retry policy asks the error instead of parsing strings.
//!
//! Three kinds of job failure, told apart by who is at fault:
//! - [`JobError::Transient`]: the remote side failed this time (network, 5xx,
//!   429, a timeout); the attempt counts and the job is retried.
//! - [`JobError::Permanent`]: nothing will change (bad input); dead at once.
//! - [`JobError::Unavailable`]: one of the worker's *own* dependencies (its
//!   database, its cache) is down. Not the job's fault: the attempt is given
//!   back, the job waits a short capped backoff in Redis, and the backend
//!   pauses its claims so the backlog does not hammer the dependency.
//!
//! Handlers run under apalis, whose services fail with a boxed error;
//! [`JobError::classify`] turns it back into one of the three.

use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError};

/// A failure of Redis, or of what it holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// What was read back from Redis does not have the shape this crate wrote.
    #[error("corrupt job data: {0}")]
    Corrupt(String),
    /// The Redis URL cannot be used (a cluster URL listing no node).
    #[error("redis url: {0}")]
    Config(String),
}

/// Why a job attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Worth retrying (network, 5xx, 429, a timeout). `retry_after` is the
    /// earliest moment the other side said it will accept a new try.
    #[error("{message}")]
    Transient {
        /// What went wrong, for the attempt log and the dead set.
        message: String,
        /// The delay the remote side asked for, if any.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (bad input, a 4xx validation error): the job goes
    /// straight to the dead set.
    #[error("{message}")]
    Permanent {
        /// What went wrong.
        message: String,
    },
    /// The job may not run yet (a budget of its own, such as its account's
    /// rate limit, is used up) and gives its slot back: it is postponed by
    /// `retry_after` without using an attempt, and the worker goes on
    /// claiming other jobs.
    #[error("{message}")]
    Deferred {
        /// Why it waits.
        message: String,
        /// How long, at least.
        retry_after: Duration,
    },
    /// A dependency of the worker itself is unavailable; the job is fine.
    /// Uses no attempt, however long the outage lasts.
    #[error("{message}")]
    Unavailable {
        /// Which dependency, and how it failed.
        message: String,
        /// Wait at least this long before trying the job again, if known.
        retry_after: Option<Duration>,
    },
}

impl JobError {
    /// A failure that may pass on another attempt.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A transient failure with the delay the remote side asked for.
    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after,
        }
    }

    /// Not now: postponed by `retry_after`, no attempt used, no pause (see
    /// [`Deferred`](Self::Deferred)).
    pub fn deferred(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::Deferred {
            message: message.into(),
            retry_after,
        }
    }

    /// Whether the job gave its slot back to wait for a budget of its own.
    pub fn is_deferred(&self) -> bool {
        matches!(self, Self::Deferred { .. })
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
        }
    }

    /// One of the worker's own dependencies (say, its database) is down:
    /// the job is postponed without using an attempt.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// Whether another attempt may succeed. False for
    /// [`Unavailable`](Self::Unavailable), which is not an attempt's failure
    /// at all (see [`is_unavailable`](Self::is_unavailable)).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Whether a dependency of the worker was down, rather than the job failing.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The delay the remote side (or the dependency) asked for before the
    /// next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            Self::Deferred { retry_after, .. } => Some(*retry_after),
            Self::Permanent { .. } => None,
        }
    }

    /// Classifies the boxed error an apalis service stack returns: a
    /// [`JobError`] the handler returned as it is; apalis' `AbortError`
    /// ("do not retry") as permanent; anything else (tower's timeout
    /// `Elapsed`, a panic caught by `parallelize`, an extractor's error) as
    /// transient.
    pub fn classify(err: &BoxDynError) -> Self {
        if let Some(job) = err.downcast_ref::<JobError>() {
            return job.clone();
        }
        if err.is::<tower::timeout::error::Elapsed>() {
            return Self::transient("the attempt timed out");
        }
        if err.is::<AbortError>() {
            return Self::permanent(err.to_string());
        }
        Self::transient(err.to_string())
    }
}
