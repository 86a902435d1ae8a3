//! Where the app meets the `workers` runtime: enqueueing, and the tower
//! services and dead-letter hooks for each queue.

use std::sync::Arc;

use futures::future::BoxFuture;
use workers::{DeadLetter, Job, JobError, JobState, PushOptions, Queue};

use crate::domain::{ContactId, Provider};
use crate::inbound::{InboundChange, InboundSync, ProviderPoll, INBOUND_QUEUE, POLL_QUEUE};
use crate::store::Store;
use crate::sync::{Outbound, OutboundUpsert, OUTBOUND_QUEUE};

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

    /// Remembers webhook events for `ttl` (see [`Self::inbound_unique`]).
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
        providers: &[Provider],
        version: i64,
    ) -> anyhow::Result<Vec<(Provider, String)>> {
        let jobs = plan_jobs(providers);
        self.push_jobs(store, contact, &jobs, version).await?;
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
        jobs: &[(Provider, String)],
        version: i64,
    ) -> anyhow::Result<()> {
        store.mark_pending(contact, jobs, version).await?;
        self.queue_jobs(contact, jobs, version).await
    }

    /// Queues the pushes of `jobs` (links already marked).
    ///
    /// # Errors
    /// When Redis fails; jobs queued before stay queued.
    pub async fn queue_jobs(
        &self,
        contact: ContactId,
        jobs: &[(Provider, String)],
        version: i64,
    ) -> anyhow::Result<()> {
        for (provider, id) in jobs {
            let payload = OutboundUpsert {
                contact_id: contact,
                provider: *provider,
                version,
            };
            let opts = PushOptions {
                max_attempts: self.max_attempts,
                id: Some(id.clone()),
                ..PushOptions::default()
            };
            self.queue.push(OUTBOUND_QUEUE, &payload, opts).await?;
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
        let opts = PushOptions {
            max_attempts: self.max_attempts,
            ..PushOptions::default()
        };
        self.queue.push(INBOUND_QUEUE, change, opts).await
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
        self.queue.push_many_raw(INBOUND_QUEUE, &bodies, opts).await
    }

    /// Queues the changes whose events were not seen before, in one Redis
    /// call: each item is a change with the keys of the events it stands
    /// for; it is queued if any of them is new, and its keys are seen from
    /// then on. Returns how many changes were queued.
    ///
    /// # Errors
    /// When Redis fails; then nothing was queued or remembered.
    pub async fn inbound_unique(
        &self,
        items: &[(Vec<String>, InboundChange)],
    ) -> Result<usize, workers::Error> {
        let raw = items
            .iter()
            .map(|(keys, change)| Ok((keys.clone(), serde_json::to_string(change)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| workers::Error::Corrupt(e.to_string()))?;
        let opts = PushOptions {
            max_attempts: self.max_attempts,
            ..PushOptions::default()
        };
        let ids = self
            .queue
            .push_unique(INBOUND_QUEUE, &raw, opts, self.dedup_ttl)
            .await?;
        Ok(ids.iter().flatten().count())
    }

    /// Queues a poll of `provider`; returns the job id.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn poll(&self, provider: Provider, backfill: bool) -> Result<String, workers::Error> {
        let opts = PushOptions {
            max_attempts: self.max_attempts,
            ..PushOptions::default()
        };
        self.queue
            .push(POLL_QUEUE, &ProviderPoll { provider, backfill }, opts)
            .await
    }
}

/// The span of an `outbound-upsert` job: the job, the contact and the CRM.
pub fn outbound_span(job: &Job) -> tracing::Span {
    match job.decode::<OutboundUpsert>() {
        Ok(p) => {
            tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            contact_id = %p.contact_id, provider = %p.provider)
        }
        Err(_) => workers::job_span(job),
    }
}

/// The span of an `inbound-change` job: the job, the CRM and its record
/// (the contact is added once it is known).
pub fn inbound_span(job: &Job) -> tracing::Span {
    match job.decode::<InboundChange>() {
        Ok(p) => {
            tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            provider = %p.provider, external_id = %p.external_id)
        }
        Err(_) => workers::job_span(job),
    }
}

/// The span of a `provider-poll` job: the job and the CRM.
pub fn poll_span(job: &Job) -> tracing::Span {
    match job.decode::<ProviderPoll>() {
        Ok(p) => {
            tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            provider = %p.provider)
        }
        Err(_) => workers::job_span(job),
    }
}

/// The tower service that runs `inbound-change` jobs.
pub fn inbound_service(
    sync: Arc<InboundSync>,
) -> impl tower::Service<
    Job,
    Response = (),
    Error = JobError,
    Future = BoxFuture<'static, Result<(), JobError>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |job: Job| {
        let sync = sync.clone();
        let fut: BoxFuture<'static, Result<(), JobError>> = Box::pin(async move {
            let p: InboundChange = job.decode()?;
            sync.change(p.provider, &p.external_id, &job.id)
                .await
                .map(|_| ())
        });
        fut
    })
}

/// The tower service that runs `provider-poll` jobs.
pub fn poll_service(
    sync: Arc<InboundSync>,
) -> impl tower::Service<
    Job,
    Response = (),
    Error = JobError,
    Future = BoxFuture<'static, Result<(), JobError>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |job: Job| {
        let sync = sync.clone();
        let fut: BoxFuture<'static, Result<(), JobError>> = Box::pin(async move {
            let p: ProviderPoll = job.decode()?;
            sync.poll(p.provider, p.backfill, &job.id).await.map(|_| ())
        });
        fut
    })
}

/// The tower service that runs `outbound-upsert` jobs.
pub fn outbound_service(
    sync: Arc<Outbound>,
) -> impl tower::Service<
    Job,
    Response = (),
    Error = JobError,
    Future = BoxFuture<'static, Result<(), JobError>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |job: Job| {
        let sync = sync.clone();
        let fut: BoxFuture<'static, Result<(), JobError>> = Box::pin(async move {
            let payload: OutboundUpsert = job.decode()?;
            sync.run(&payload, &job.id, job.attempt).await
        });
        fut
    })
}

/// A dead job whose payload does not decode has nothing to record; it is
/// parked as it is.
fn unreadable(job: &Job, e: &JobError) -> Result<(), JobError> {
    tracing::error!(job_id = %job.id, error = %e, "dead job has an unreadable payload");
    Ok(())
}

/// Dead-letter hook of `outbound-upsert`: the link turns `error`, a sync log
/// is written. If MongoDB cannot take that, the hook fails and the runtime
/// calls it again later, so a job is never parked with its link unmarked.
pub struct OutboundDeadLetter(pub Arc<Outbound>);

impl DeadLetter for OutboundDeadLetter {
    fn on_dead<'a>(
        &'a self,
        job: &'a Job,
        error: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let p = match job.decode::<OutboundUpsert>() {
                Ok(p) => p,
                Err(e) => return unreadable(job, &e),
            };
            self.0
                .record_failure(&p, &job.id, job.attempt, &error.to_string())
                .await
                .map_err(crate::sync::store_err)
        })
    }
}

/// Dead-letter hook of `inbound-change`: a sync log entry, and the link in
/// `error` when the record is linked.
pub struct InboundDeadLetter(pub Arc<InboundSync>);

impl DeadLetter for InboundDeadLetter {
    fn on_dead<'a>(
        &'a self,
        job: &'a Job,
        error: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let p = match job.decode::<InboundChange>() {
                Ok(p) => p,
                Err(e) => return unreadable(job, &e),
            };
            self.0
                .record_failure(
                    p.provider,
                    Some(&p.external_id),
                    &job.id,
                    job.attempt,
                    &error.to_string(),
                )
                .await
                .map_err(crate::sync::store_err)
        })
    }
}

/// Dead-letter hook of `provider-poll`: a sync log entry for the CRM.
pub struct PollDeadLetter(pub Arc<InboundSync>);

impl DeadLetter for PollDeadLetter {
    fn on_dead<'a>(
        &'a self,
        job: &'a Job,
        error: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let p = match job.decode::<ProviderPoll>() {
                Ok(p) => p,
                Err(e) => return unreadable(job, &e),
            };
            self.0
                .record_failure(
                    p.provider,
                    None,
                    &job.id,
                    job.attempt,
                    &format!("poll failed: {error}"),
                )
                .await
                .map_err(crate::sync::store_err)
        })
    }
}
