#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
//!
//! ## Layout
//! Dependencies point down this list, never up.
//! - `backend` — [`RedisBackend`]: the queues as an apalis backend (claims,
//!   its tower layer that settles each job, heartbeats and acks, the sink,
//!   the listings dashboards read).
//! - `config` — [`WorkerConfig`]: how the workers of one queue behave.
//! - `retry` — the tower retry policy and [`Backoff`].
//! - `job` — [`Job`] and the [`DeadLetter`] hook.
//! - `claim` — the worker's side of the queue (claim, ack, settle, reap).
//! - `queue`, `push`, `inspect`, `lease`, `ratelimit`, `metrics` — the
//!   client side; `model` — the shapes they return.
//! - `keys`, `conn` (one Redis or a cluster), `error` and the Lua scripts
//!   in `lua/` — below everything.

mod backend;
mod claim;
mod config;
mod conn;
mod error;
mod gather;
mod inspect;
mod job;
mod keys;
mod lease;
mod metrics;
mod model;
mod push;
mod queue;
mod ratelimit;
mod retry;

pub use backend::{job_span, JsonCodec, MakeSpan, RedisBackend, RedisLayer, RedisService};
pub use config::WorkerConfig;
pub use conn::Conn as RedisConn;
pub use error::{Error, JobError};
pub use gather::{Gathered, Gathering};
pub use inspect::{Discard, Minute, Throughput, WorkerInfo};
pub use job::{DeadLetter, Job};
pub use lease::Lease;
pub use metrics::{series, Metrics, BUCKETS};
pub use queue::{
    new_job_id, AttemptRecord, Group, JobInfo, JobState, PushOptions, Queue, QueueCounts,
};
pub use ratelimit::RateLimiter;
pub use retry::{Backoff, RetryPolicy};
