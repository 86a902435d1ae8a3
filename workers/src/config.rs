//! How the workers of one queue behave: claiming, heart-beating, retrying,
//! settling and keeping jobs. The worker's name is not here: it is the name
//! given to apalis' `WorkerBuilder::new`, and recovery is keyed by it.

use std::time::Duration;

use crate::claim::SettleLimits;
use crate::retry::Backoff;

/// How the workers of one queue behave (see [`RedisBackend`]).
///
/// [`RedisBackend`]: crate::RedisBackend
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The queue to serve and push to.
    pub queue: String,
    /// Jobs one worker runs at once. Claims never exceed the free slots, so
    /// nothing waits claimed-but-idle in memory. apalis' `.concurrency(n)`
    /// is not needed; if given, give it this number (a smaller one leaves
    /// claimed jobs waiting for its permits).
    pub concurrency: usize,
    /// Attempts of a job pushed through apalis' `TaskSink` without
    /// `max_attempts` of its own.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Longer waits than this are rescheduled in Redis rather than slept.
    pub max_inline_wait: Duration,
    /// Wait between claims when the queue is empty.
    pub poll_interval: Duration,
    /// How often a worker says it is alive (and looks for dead peers).
    pub heartbeat: Duration,
    /// A peer silent this long is dead; its jobs go back to the queue. A
    /// worker only looks for dead peers once its own heartbeats have
    /// succeeded without a gap for this long (see `backend::upkeep`).
    pub dead_after: Duration,
    /// On shutdown, how long writing the last acknowledgements and leaving
    /// the pool may take. (How long in-flight jobs may take is the
    /// Monitor's `shutdown_timeout`.)
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
    ///
    /// [`JobError::Unavailable`]: crate::JobError::Unavailable
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

impl WorkerConfig {
    /// Defaults for `queue`.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            concurrency: 16,
            max_attempts: 3,
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

    pub(crate) fn settle_limits(&self) -> SettleLimits {
        SettleLimits {
            postpone: self.postpone_backoff,
            dead_retention: self.dead_retention,
            dead_keep: self.dead_keep,
        }
    }
}
