//! Job kinds and the queue they go through. Each kind is one module with
//! its payload (a wire format), what running it does, and its hooks; the
//! [`registry!`] line below lists them, and every queue list of the
//! program (api, CLI, console, metrics, the workers started) comes from it.
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
use workers::{Job, JobError, JobState, PushOptions, Queue, RedisBackend, WorkerConfig};

use crate::domain::{ContactId, CustomerId, Provider};
use crate::store::{Contact, Store};
use crate::sync::PushQueue;

pub mod inbound_change;
pub mod outbound_upsert;
pub mod outbox;
pub mod provider_poll;
mod registry;

pub use inbound_change::{Delivery, InboundChange};
pub use outbound_upsert::OutboundUpsert;
pub use provider_poll::ProviderPoll;
pub use registry::{revive, run_workers, Contexts, QUEUES};

/// A kind of job: a payload type, the queue its name gives, and what
/// happens around running it. Running it is the module's `handle`, a plain
/// apalis worker function registered beside the kind in [`registry!`].
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

    /// Marks the contact's links with `providers` pending at `version` and
    /// queues one push per provider; returns `(provider, job id)` pairs.
    ///
    /// Each link records the id of the job that will bring it up to date
    /// before that job is pushed, so a link left `pending` by a crash
    /// between the two steps points at a job that does not exist and can be
    /// told apart from one whose push is merely waiting for a retry.
    ///
    /// # Errors
    /// When MongoDB or Redis fails; links already marked stay `pending`.
    pub async fn push_contact(
        &self,
        store: &Store,
        contact: ContactId,
        customer: &CustomerId,
        providers: &[Provider],
        version: i64,
    ) -> anyhow::Result<Vec<(Provider, String)>> {
        let jobs = plan_jobs(providers);
        self.push_jobs(store, contact, customer, &jobs, version)
            .await?;
        Ok(jobs)
    }

    /// [`Self::push_contact`] for jobs whose ids were chosen already (and
    /// perhaps written to the contact's outbox). Pushing a job id that
    /// exists already does nothing, so this may run more than once.
    ///
    /// # Errors
    /// When MongoDB or Redis fails; links already marked stay `pending`.
    pub async fn push_jobs(
        &self,
        store: &Store,
        contact: ContactId,
        customer: &CustomerId,
        jobs: &[(Provider, String)],
        version: i64,
    ) -> anyhow::Result<()> {
        store.mark_pending(contact, customer, jobs, version).await?;
        self.queue_jobs(contact, customer, jobs, version).await
    }

    /// [`Self::push_jobs`] for a contact just created: it has no links
    /// yet, so they are inserted `pending` rather than updated, with what
    /// the push that creates its CRM records will write as their intent.
    ///
    /// # Errors
    /// When MongoDB or Redis fails.
    pub async fn push_new_jobs(
        &self,
        store: &Store,
        contact: &Contact,
        jobs: &[(Provider, String)],
    ) -> anyhow::Result<()> {
        let intent = crate::sync::merge::created(&contact.into()).result;
        store
            .insert_pending_links(
                contact.id,
                &contact.customer_id,
                jobs,
                contact.version,
                &intent,
            )
            .await?;
        self.queue_jobs(contact.id, &contact.customer_id, jobs, contact.version)
            .await
    }

    /// Queues the pushes of `jobs` (links already marked).
    ///
    /// # Errors
    /// When Redis fails; jobs queued before stay queued.
    pub async fn queue_jobs(
        &self,
        contact: ContactId,
        customer: &CustomerId,
        jobs: &[(Provider, String)],
        version: i64,
    ) -> anyhow::Result<()> {
        self.push_all(pushes_of(contact, customer, jobs, version))
            .await?;
        Ok(())
    }

    /// [`Self::queue_jobs`] for many contacts at once, in one round trip
    /// (the outbox relay's round).
    ///
    /// # Errors
    /// When Redis fails; jobs queued before stay queued.
    pub async fn queue_jobs_of_many(&self, owed: &[OwedJobs<'_>]) -> anyhow::Result<()> {
        let pushes = owed
            .iter()
            .flat_map(|(contact, customer, jobs, version)| {
                pushes_of(*contact, customer, jobs, *version)
            })
            .collect::<Vec<_>>();
        if !pushes.is_empty() {
            self.push_all(pushes).await?;
        }
        Ok(())
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

    /// Queues an inbound change; returns the job id.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn inbound(&self, change: &InboundChange) -> Result<String, workers::Error> {
        self.push(change, None).await
    }

    /// Queues many inbound changes in one pipelined round trip; returns the
    /// job ids in order.
    ///
    /// # Errors
    /// When Redis fails; jobs of earlier batches stay queued.
    pub async fn inbound_many(
        &self,
        changes: &[InboundChange],
    ) -> Result<Vec<String>, workers::Error> {
        let bodies = changes
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| workers::Error::Corrupt(e.to_string()))?;
        let opts = PushOptions {
            max_attempts: self.max_attempts,
            ..PushOptions::default()
        };
        self.queue
            .push_many_raw(InboundChange::QUEUE, &bodies, opts)
            .await
    }

    /// Queues each delivery's new changes as one job, in one round trip: a
    /// delivery is one connection's changes, each with the keys of the
    /// events it stands for. A change is new if one of its keys is; its
    /// keys are seen from then on. The worker fans a job of several
    /// changes out into one job each. Returns how many changes were queued.
    ///
    /// # Errors
    /// When Redis fails; a delivery is then either queued and remembered
    /// whole or not at all.
    pub async fn inbound_gathered(&self, deliveries: &[Delivery]) -> Result<usize, workers::Error> {
        let corrupt = |e: serde_json::Error| workers::Error::Corrupt(e.to_string());
        let gatherings = deliveries
            .iter()
            .filter_map(|changes| Some((changes.first()?, changes)))
            .map(|((_, first), changes)| {
                // the batch job names the connection; its changes, the records
                let head = InboundChange {
                    external_id: String::new(),
                    occurred_at: 0,
                    event_ids: Vec::new(),
                    batch: Vec::new(),
                    purge: false,
                    restore: false,
                    ..first.clone()
                };
                let mut head_json = serde_json::to_string(&head).map_err(corrupt)?;
                // `{...}` becomes `{...,"batch":[`, closed by `]}`
                head_json.pop();
                head_json.push_str(",\"batch\":[");
                let items = changes
                    .iter()
                    .map(|(keys, c)| Ok((keys.clone(), serde_json::to_string(c).map_err(corrupt)?)))
                    .collect::<Result<Vec<_>, workers::Error>>()?;
                Ok(workers::Gathering {
                    items,
                    head: head_json,
                    tail: "]}".into(),
                    group: head.group(),
                })
            })
            .collect::<Result<Vec<_>, workers::Error>>()?;
        let opts = PushOptions {
            max_attempts: self.max_attempts,
            ..PushOptions::default()
        };
        let done = self
            .queue
            .push_gathered(InboundChange::QUEUE, &gatherings, &opts, self.dedup_ttl)
            .await?;
        Ok(done.iter().map(|g| g.new).sum())
    }

    /// Queues a poll of a customer's connection with `provider`; returns
    /// the job id.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn poll(
        &self,
        customer: &CustomerId,
        provider: Provider,
        backfill: bool,
    ) -> Result<String, workers::Error> {
        let job = ProviderPoll {
            customer: customer.clone(),
            provider,
            backfill,
            first_sync: false,
            continued: false,
        };
        self.push(&job, None).await
    }

    /// Queues the first sync of a customer's connection with `provider`
    /// (see [`ProviderPoll::first_sync`]); returns the job id.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<String, workers::Error> {
        self.queue_first_sync(customer, provider, false).await
    }

    /// Queues the next slice of a first sync's writes.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn continue_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<String, workers::Error> {
        self.queue_first_sync(customer, provider, true).await
    }

    async fn queue_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
        continued: bool,
    ) -> Result<String, workers::Error> {
        let job = ProviderPoll {
            customer: customer.clone(),
            provider,
            backfill: true,
            first_sync: true,
            continued,
        };
        self.push(&job, None).await
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
) -> Vec<(String, OutboundUpsert)> {
    jobs.iter()
        .map(|(provider, id)| {
            let payload = OutboundUpsert {
                contact_id: contact,
                provider: *provider,
                version,
                customer: Some(customer.clone()),
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
