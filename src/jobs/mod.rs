//! Job kinds and the queue they go through. Each kind is one module with
//! its payload (a wire format), what running it does, its hooks and its
//! queueing helpers; the `registry!` list below names them and declares
//! their modules, and every queue list of the program (api, CLI, console,
//! metrics, the workers started) comes from it.
//!
//! Layout: `jobs` uses `sync` (the rules a job applies) and the `workers`
//! crate (the queue); `api` and `app` use `jobs`. The sync rules queue the
//! pushes they set off through [`crate::sync::PushQueue`], implemented here
//! by [`Enqueuer`].

use apalis_core::backend::{TaskSink, TaskSinkError};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use workers::{Job, JobError, JobState, Queue, RedisBackend, WorkerConfig};

use crate::domain::{ContactId, CustomerId, Provider};
use crate::store::Store;
use crate::sync::PushQueue;

pub mod outbox;
#[macro_use]
mod registry;

// The job kinds, one file each: a new kind is its file plus its line here.
registry!(
    outbound_upsert::OutboundUpsert,
    inbound_change::InboundChange,
    provider_poll::ProviderPoll,
);

pub use inbound_change::{Delivery, InboundChange};
pub use outbound_upsert::OutboundUpsert;
pub use provider_poll::ProviderPoll;
pub use registry::{revive, Contexts};

/// A kind of job: a payload type, the queue its name gives, how it runs
/// ([`Kind::handle`]) and what happens around running it. A kind is one
/// file of this module plus its line in the registry (`registry.rs`).
pub trait Kind: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// The queue, which is also the kind's name.
    const QUEUE: &'static str;
    /// What the handler is given (as apalis `Data<Self::Context>`).
    type Context: Clone + Send + Sync + 'static;

    /// Picks this kind's context out of every kind's.
    fn context(all: &Contexts) -> Self::Context;

    /// Adjusts the worker settings for this kind (default: none).
    fn tune(_cfg: &mut Tuning) {}

    /// The job's fair-share group (the customer it works for): jobs of
    /// different groups are claimed in turns, so one customer's backlog
    /// never holds back another's job. Default: none.
    fn group(&self) -> Option<String> {
        None
    }

    /// The span the job runs in (retries and dead-lettering included).
    fn span(&self, job: &Job) -> tracing::Span;

    /// Runs the job once (an attempt).
    ///
    /// # Errors
    /// Transient for store and network trouble (retried), permanent for
    /// refusals (dead at once), deferred or throttled to run it later.
    fn handle(
        self,
        ctx: &Self::Context,
        run: &Run,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Records, where users look, that the job was given up on (it is
    /// called again later when it fails).
    fn on_dead(
        self,
        ctx: &Self::Context,
        job: &Job,
        error: &JobError,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Runs before an operator sends a dead job of this kind back to its
    /// queue (single and bulk retries alike).
    fn on_revive(
        &self,
        _store: &Store,
        _job_id: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// The attempt of a job being run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The job's id.
    pub id: String,
    /// Which attempt this is (the first is 1).
    pub attempt: u32,
}

/// The settings of one kind's workers.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// The backend's settings (concurrency, retries, recovery).
    pub worker: workers::WorkerConfig,
    /// Longest one attempt may run.
    pub timeout: std::time::Duration,
}

/// Fresh job ids for one push per provider.
pub fn plan_jobs(providers: &[Provider]) -> Vec<(Provider, String)> {
    providers
        .iter()
        .map(|&p| (p, workers::new_job_id()))
        .collect()
}

/// Puts sync work on the queues. Used by the api; never calls a CRM.
#[derive(Clone)]
pub struct Enqueuer {
    queue: Queue,
    max_attempts: u32,
    /// How long a webhook event is remembered (redeliveries are dropped).
    dedup_ttl: std::time::Duration,
}

impl Enqueuer {
    /// An enqueuer giving each job `max_attempts`.
    pub fn new(queue: Queue, max_attempts: u32) -> Self {
        Self {
            queue,
            max_attempts,
            dedup_ttl: std::time::Duration::from_secs(90_000),
        }
    }

    /// Remembers webhook events for `ttl` (see [`Self::inbound_gathered`]).
    pub fn with_dedup_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// The queue handle.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Whether the job is still to run (queued, waiting for a retry, or
    /// running). Unknown and finished jobs are not.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn is_live(&self, job_id: &str) -> Result<bool, workers::Error> {
        Ok(self.queue.job(job_id).await?.is_some_and(|j| {
            matches!(
                j.state,
                JobState::Pending | JobState::Scheduled | JobState::Running
            )
        }))
    }

    /// Queues one job of kind `K`, on the queue its type names, under `id`
    /// (pushing an id that exists already does nothing) or a fresh one;
    /// returns the job id.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn push<K: Kind>(
        &self,
        job: &K,
        id: Option<String>,
    ) -> Result<String, workers::Error> {
        let id = id.unwrap_or_else(workers::new_job_id);
        self.push_all(vec![(id.clone(), job.clone())]).await?;
        Ok(id)
    }

    /// Queues jobs of kind `K`, each under its id, in one round trip through
    /// apalis' `TaskSink` on the kind's backend.
    ///
    /// # Errors
    /// When Redis fails; then none of them was queued.
    pub async fn push_all<K: Kind>(&self, jobs: Vec<(String, K)>) -> Result<(), workers::Error> {
        let mut cfg = WorkerConfig::new(K::QUEUE);
        cfg.max_attempts = self.max_attempts;
        let mut sink = RedisBackend::<K>::new(self.queue.clone(), cfg);
        let tasks = jobs.into_iter().map(|(id, job)| {
            let group = job.group();
            let task = TaskBuilder::new(job).task_id(TaskId::from_string(id));
            match group {
                Some(g) => task.data(workers::Group(g)).build(),
                None => task.build(),
            }
        });
        sink.push_all(futures::stream::iter(tasks))
            .await
            .map_err(|e| match e {
                TaskSinkError::PushError(e) => e,
                other => workers::Error::Corrupt(other.to_string()),
            })
    }
}

/// One contact's owed pushes: the contact, its customer, `(provider, job
/// id)` pairs and the version they push.
pub type OwedJobs<'a> = (ContactId, &'a CustomerId, Vec<(Provider, String)>, i64);

/// The push jobs of one contact, by their chosen ids.
fn pushes_of(
    contact: ContactId,
    customer: &CustomerId,
    jobs: &[(Provider, String)],
    version: i64,
    singly: bool,
) -> Vec<(String, OutboundUpsert)> {
    jobs.iter()
        .map(|(provider, id)| {
            let payload = OutboundUpsert {
                contact_id: contact,
                provider: *provider,
                version,
                customer: Some(customer.clone()),
                singly,
            };
            (id.clone(), payload)
        })
        .collect()
}

impl PushQueue for Enqueuer {
    fn push_contact<'a>(
        &'a self,
        store: &'a Store,
        contact: ContactId,
        customer: &'a CustomerId,
        providers: &'a [Provider],
        version: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            Enqueuer::push_contact(self, store, contact, customer, providers, version)
                .await
                .map(|_| ())
        })
    }

    fn push_singly<'a>(
        &'a self,
        store: &'a Store,
        contact: ContactId,
        customer: &'a CustomerId,
        providers: &'a [Provider],
        version: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Enqueuer::push_contact_singly(
            self, store, contact, customer, providers, version,
        ))
    }

    fn push_jobs<'a>(
        &'a self,
        store: &'a Store,
        contact: ContactId,
        customer: &'a CustomerId,
        jobs: &'a [(Provider, String)],
        version: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Enqueuer::push_jobs(
            self, store, contact, customer, jobs, version,
        ))
    }

    fn is_live<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<bool, workers::Error>> {
        Box::pin(Enqueuer::is_live(self, job_id))
    }
}
