#![doc = include_str!("../README.md")]
//!
//! ## Layout
//! Dependencies point down this list, never up.
//! - `runtime` — [`Runtime`] and [`RuntimeConfig`]: the claim loop and shutdown.
//! - `outcome`, `upkeep` — what happens to a job after it ran; the ack and
//!   heartbeat loops.
//! - `retry` — the tower retry policy and [`Backoff`].
//! - `job` — [`Job`] and the [`DeadLetter`] hook.
//! - `claim` — the runtime's side of the queue (claim, ack, settle, reap).
//! - `queue`, `inspect`, `lease`, `ratelimit`, `metrics` — the client side.
//! - `keys`, `error` and the Lua scripts in `lua/` — below everything.

mod claim;
mod error;
mod inspect;
mod job;
mod keys;
mod lease;
mod metrics;
mod outcome;
mod queue;
mod ratelimit;
mod retry;
mod runtime;
mod upkeep;

pub use error::{Error, JobError};
pub use inspect::{Discard, Throughput, WorkerInfo};
pub use job::{DeadLetter, Job};
pub use lease::Lease;
pub use metrics::{series, Metrics, BUCKETS};
pub use queue::{new_job_id, AttemptRecord, JobInfo, JobState, PushOptions, Queue, QueueCounts};
pub use ratelimit::RateLimiter;
pub use retry::{Backoff, RetryPolicy};
pub use runtime::{job_span, MakeSpan, Runtime, RuntimeConfig};
