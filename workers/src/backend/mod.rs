//! [`RedisBackend`]: this crate's queues as an apalis 1.0 backend, so the
//! application runs its jobs as ordinary apalis workers.
//!
//! - `poll` — apalis' `Backend`: claims in batches of at most the free
//!   slots, start-up, shutdown.
//! - `layer` — the backend's tower layer, outermost around the application's
//!   middleware: the job's span, the settling of each job, its slot.
//! - `settle` — ack, retry later, postpone, dead-letter.
//! - `upkeep` — the worker's own task: heartbeats, recovery of dead peers'
//!   jobs, batched acks, leaving the pool.
//! - `sink`, `listing` — apalis' `Sink` / `TaskSink`, `FetchById` and the
//!   listing traits dashboards use.
//! - `shared` — what those parts of one worker share.

mod layer;
mod listing;
mod poll;
mod settle;
mod shared;
mod sink;
mod upkeep;

use std::marker::PhantomData;
use std::sync::Arc;

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use layer::{RedisLayer, RedisService};

use crate::config::WorkerConfig;
use crate::error::Error;
use crate::job::{DeadLetter, Job};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::retry::RetryPolicy;

/// Makes the span a job runs in (see [`RedisBackend::span`]).
pub type MakeSpan<Args> = Arc<dyn Fn(&Task<Args>) -> tracing::Span + Send + Sync>;

/// The default job span: `job` with its id, queue and attempt.
pub fn job_span<Args>(task: &Task<Args>) -> tracing::Span {
    match Job::of(task) {
        Some(job) => job.span(),
        None => tracing::info_span!("job", job_id = ?task.task_id()),
    }
}

/// One queue of this crate as an apalis backend. `Args` is the job's payload
/// type, stored as JSON. Cheap to clone; a clone shares the connection and
/// the configuration, not the polling state, so one clone can push while
/// another serves a worker.
///
/// Give it to `WorkerBuilder::backend`, install [`retry_policy`] with
/// `.retry(..)`, and after the Monitor returns call [`leave`] for each
/// worker name (see the crate docs).
///
/// [`retry_policy`]: Self::retry_policy
/// [`leave`]: Self::leave
pub struct RedisBackend<Args> {
    queue: Queue,
    cfg: Arc<WorkerConfig>,
    dead_letter: Option<Arc<dyn DeadLetter>>,
    metrics: Option<Metrics>,
    make_span: MakeSpan<Args>,
    codec: JsonCodec,
    /// Set while this instance serves a worker.
    run: Option<Box<poll::Running>>,
    sink: sink::SinkState,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> Clone for RedisBackend<Args> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            cfg: self.cfg.clone(),
            dead_letter: self.dead_letter.clone(),
            metrics: self.metrics.clone(),
            make_span: self.make_span.clone(),
            codec: JsonCodec,
            run: None,
            sink: sink::SinkState::default(),
            _args: PhantomData,
        }
    }
}

impl<Args> std::fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("queue", &self.cfg.queue)
            .finish_non_exhaustive()
    }
}

impl<Args: 'static> RedisBackend<Args> {
    /// A backend for `cfg.queue` on the Redis and namespace of `queue`.
    pub fn new(queue: Queue, cfg: WorkerConfig) -> Self {
        Self {
            queue,
            cfg: Arc::new(cfg),
            dead_letter: None,
            metrics: None,
            make_span: Arc::new(job_span::<Args>),
            codec: JsonCodec,
            run: None,
            sink: sink::SinkState::default(),
            _args: PhantomData,
        }
    }

    /// Makes the span each job runs in, retries and settling included, so
    /// every log line of a job carries what `make` puts in it (say, ids from
    /// the payload; [`Job::of`] gives the job's id and attempt). Default:
    /// [`job_span`]. A job dead-lettered without running logs in the default.
    pub fn span(
        mut self,
        make: impl Fn(&Task<Args>) -> tracing::Span + Send + Sync + 'static,
    ) -> Self {
        self.make_span = Arc::new(make);
        self
    }

    /// Records job outcomes, retries and durations into `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Installs the hook called before a job is parked dead.
    pub fn on_dead(mut self, hook: Arc<dyn DeadLetter>) -> Self {
        self.dead_letter = Some(hook);
        self
    }

    /// The queue client this backend uses.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The retry policy to install with `WorkerBuilder::retry`: the only one
    /// a worker of this backend should have (see [`RetryPolicy`]).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff: self.cfg.backoff,
            max_inline_wait: self.cfg.max_inline_wait,
            queue: self.queue.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Gives back everything `worker` still holds claimed, attempts
    /// returned, and removes it from the pool. Call it for each worker name
    /// once the Monitor has returned: when its `shutdown_timeout` cut a
    /// drain short, apalis dropped the worker without closing its backend.
    /// Jobs that finished but whose acknowledgement was not written yet run
    /// again (delivery is at least once).
    ///
    /// # Errors
    /// When Redis fails; peers then recover the claims once the worker
    /// counts as dead.
    pub async fn leave(&self, worker: &str) -> Result<(), Error> {
        let limits = self.cfg.settle_limits();
        self.queue.leave(&self.cfg.queue, worker, &limits).await
    }
}

impl<Args> BackendConfig for RedisBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Durable;
    type Config = WorkerConfig;
    type Layer = RedisLayer<Args>;

    fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> RedisLayer<Args> {
        let run = self.start_worker(worker);
        let layer = RedisLayer::new(run.shared.clone(), self.make_span.clone());
        self.run = Some(Box::new(run));
        layer
    }
}

impl<Args> WireFormatBackend for RedisBackend<Args> {
    type Codec = JsonCodec;
    type Compact = String;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}

/// Payloads are stored as JSON text.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    type Error = serde_json::Error;
    type Compact = String;

    fn encode(&self, val: &T) -> Result<String, serde_json::Error> {
        serde_json::to_string(val)
    }

    fn decode(&self, val: &String) -> Result<T, serde_json::Error> {
        serde_json::from_str(val)
    }
}
