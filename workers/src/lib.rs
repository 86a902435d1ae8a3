#![doc = include_str!("../README.md")]

mod error;
mod inspect;
mod keys;
mod lease;
mod metrics;
mod queue;
mod ratelimit;
mod retry;
mod runtime;

pub use error::{Error, JobError};
pub use inspect::{Discard, Throughput, WorkerInfo};
pub use lease::Lease;
pub use metrics::{series, Metrics, BUCKETS};
pub use queue::{new_job_id, AttemptRecord, JobInfo, JobState, PushOptions, Queue, QueueCounts};
pub use ratelimit::RateLimiter;
pub use retry::{Backoff, RetryPolicy};
pub use runtime::{job_span, DeadLetter, Job, MakeSpan, Runtime, RuntimeConfig};
