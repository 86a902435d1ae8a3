//! `provider-poll`: list a CRM's changed records and apply each.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{Contexts, Enqueuer, Kind, Run, Tuning};
use crate::domain::{CustomerId, Provider};
use crate::store::{FirstSyncPhase, FirstSyncRecord};
use crate::sync::outbound::FirstSyncWrites;
use crate::sync::{store_err, InboundSync, Outbound};

/// Poll a CRM for changed records. Idempotent: it resumes from the stored
/// cursor, and two polls of one provider never run at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPoll {
    /// Whose connection (the default customer for jobs queued before
    /// there were customers).
    #[serde(default)]
    pub customer: CustomerId,
    /// The CRM.
    pub provider: Provider,
    /// Start from the beginning instead of the stored cursor.
    #[serde(default)]
    pub backfill: bool,
    /// The connection's first sync: a full listing, then the app's
    /// contacts the CRM has never seen created there (in batches where
    /// the CRM takes them).
    #[serde(default)]
    pub first_sync: bool,
    /// A first sync's next slice of writes, queued by the slice before:
    /// it lists nothing again.
    #[serde(default)]
    pub continued: bool,
}

/// How long a first sync waits for another poll of its connection.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// What `provider-poll` jobs run with.
#[derive(Clone)]
pub struct Polls {
    /// Lists and applies the CRM's records.
    pub inbound: Arc<InboundSync>,
    /// Creates the app's contacts the CRM lacks (a first sync).
    pub outbound: Arc<Outbound>,
    /// Queues the single pushes a first sync leaves.
    pub enqueuer: Enqueuer,
    /// How long a slice of a first sync's writes runs before it queues the
    /// next (`FIRST_SYNC_SLICE_SECS`).
    pub slice: Duration,
}

impl Kind for ProviderPoll {
    const QUEUE: &'static str = "provider-poll";
    type Context = Polls;

    fn group(&self) -> Option<String> {
        Some(self.customer.to_string())
    }

    fn context(all: &Contexts) -> Self::Context {
        Polls {
            inbound: all.inbound.clone(),
            outbound: all.outbound.clone(),
            enqueuer: all.enqueuer.clone(),
            slice: all.first_sync_slice,
        }
    }

    /// A poll walks many pages: it gets the time of many attempts, and two
    /// at a time are plenty.
    fn tune(cfg: &mut Tuning) {
        cfg.timeout *= 20;
        cfg.worker.concurrency = 2;
    }

    async fn handle(self, ctx: &Self::Context, r: &Run) -> Result<(), JobError> {
        run(self, ctx, &r.id).await
    }

    fn span(&self, job: &Job) -> tracing::Span {
        tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            customer = %self.customer, provider = %self.provider)
    }

    /// A sync log entry for the CRM; a first sync (or gather) given up on
    /// stops holding the connection's pushes, hands what it held to
    /// single pushes (its last pass: no CRM call), and the write steps
    /// waiting on its listing go on.
    async fn on_dead(
        self,
        ctx: &Self::Context,
        job: &Job,
        error: &JobError,
    ) -> Result<(), JobError> {
        if self.first_sync {
            let store = &ctx.inbound.store;
            store
                .fail_first_sync(&self.customer, self.provider, &error.to_string())
                .await
                .map_err(store_err)?;
            last_pass(&self, ctx, &job.id).await?;
            let all = store.first_syncs(&self.customer).await.map_err(store_err)?;
            if !all
                .iter()
                .any(|(_, f)| f.phase() == FirstSyncPhase::Listing)
            {
                for (other, f) in &all {
                    if f.phase() == FirstSyncPhase::Waiting {
                        ctx.enqueuer
                            .first_sync(&self.customer, *other)
                            .await
                            .map_err(crate::sync::queue_err)?;
                    }
                }
            }
        }
        ctx.inbound
            .record_failure(
                &self.customer,
                self.provider,
                None,
                &job.id,
                job.attempt,
                &format!("poll failed: {error}"),
            )
            .await
            .map_err(crate::sync::store_err)
    }
}

/// Runs a `provider-poll` job: a first sync's step, or a poll.
async fn run(job: ProviderPoll, ctx: &Polls, id: &str) -> Result<(), JobError> {
    if job.first_sync {
        return crate::crm::job_scope(first_sync(&job, ctx, id)).await;
    }
    crate::crm::job_scope(
        ctx.inbound
            .poll(&job.customer, job.provider, job.backfill, id),
    )
    .await?;
    Ok(())
}

/// A connection's first sync, in steps kept on its cursor: list (the
/// list is the import), wait for the customer's other connections still
/// listing (pushes to this one are held meanwhile), then write what the
/// CRM lacks in batches. The connection that lists last queues the write
/// step of the ones waiting. A retry of a write step cut short lists
/// again: the listing finds what a lost batch created.
async fn first_sync(job: &ProviderPoll, ctx: &Polls, id: &str) -> Result<(), JobError> {
    let (customer, provider) = (&job.customer, job.provider);
    let store = &ctx.inbound.store;
    let phase_of = |all: &[(Provider, FirstSyncRecord)], p: Provider| {
        all.iter().find(|(q, _)| *q == p).map(|(_, f)| f.phase())
    };
    let all = store.first_syncs(customer).await.map_err(store_err)?;
    let phase = match phase_of(&all, provider) {
        // a job queued without a start (before first syncs had steps)
        None => {
            store
                .begin_first_sync(customer, provider)
                .await
                .map_err(store_err)?;
            FirstSyncPhase::Listing
        }
        Some(p) => p,
    };
    // a write step cut short (not a slice queued by the one before) lists
    // again: the listing finds what a lost batch created (a gather's
    // batch create of an email HubSpot has is refused, and pushed singly)
    let gather = all.iter().any(|(p, f)| *p == provider && f.gather);
    let relist = phase == FirstSyncPhase::Writing && !job.continued && !gather;
    if phase == FirstSyncPhase::Listing || relist {
        let listed = ctx.inbound.poll(customer, provider, true, id).await?;
        if listed.busy {
            return Err(busy("lists"));
        }
        store
            .move_first_sync(
                customer,
                provider,
                &[FirstSyncPhase::Listing],
                FirstSyncPhase::Waiting,
            )
            .await
            .map_err(store_err)?;
    } else if phase == FirstSyncPhase::Done && last_pass_owed(&all, provider) {
        return last_pass(job, ctx, id).await;
    } else if !matches!(phase, FirstSyncPhase::Waiting | FirstSyncPhase::Writing) {
        tracing::info!(?phase, "the first sync is over; nothing to do");
        return Ok(());
    }
    // what the other connections list is created here in the same batches
    // (a gather lists nothing: it waits for no one)
    let all = store.first_syncs(customer).await.map_err(store_err)?;
    if !gather
        && all
            .iter()
            .any(|(_, f)| f.phase() == FirstSyncPhase::Listing)
    {
        tracing::info!("first sync listed; its writes wait for the other connections' listings");
        return Ok(());
    }
    for (other, f) in &all {
        if *other != provider && f.phase() == FirstSyncPhase::Waiting {
            ctx.enqueuer
                .first_sync(customer, *other)
                .await
                .map_err(crate::sync::queue_err)?;
        }
    }
    write_step(job, ctx, id, gather).await
}

/// Another poll of the connection holds its lease (the scheduler's, or
/// a full scan of many pages): the first sync waits for it, without
/// using an attempt.
fn busy(step: &str) -> JobError {
    JobError::deferred(
        format!("another poll of the connection is running; the first sync {step} after it"),
        BUSY_WAIT,
    )
}

/// The write step, under the connection's poll lease (one at a time).
async fn write_step(
    job: &ProviderPoll,
    ctx: &Polls,
    id: &str,
    gather: bool,
) -> Result<(), JobError> {
    let (customer, provider) = (&job.customer, job.provider);
    let store = &ctx.inbound.store;
    let Some(lease) = ctx
        .inbound
        .poll_lease(customer, provider)
        .await
        .map_err(crate::sync::queue_err)?
    else {
        return Err(busy("writes"));
    };
    let moved = store
        .move_first_sync(
            customer,
            provider,
            &[FirstSyncPhase::Waiting, FirstSyncPhase::Writing],
            FirstSyncPhase::Writing,
        )
        .await
        .map_err(store_err)?;
    if moved {
        let writes = FirstSyncWrites {
            customer,
            provider,
            pushes: &ctx.enqueuer,
            job_id: id,
            gather,
        };
        if ctx.outbound.write_first_sync(&writes, ctx.slice).await? {
            store
                .move_first_sync(
                    customer,
                    provider,
                    &[FirstSyncPhase::Writing],
                    FirstSyncPhase::Done,
                )
                .await
                .map_err(store_err)?;
            tracing::info!("first sync written");
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "releasing the poll lease failed; it expires by itself");
            }
            return last_pass(job, ctx, id).await;
        }
        ctx.enqueuer
            .continue_first_sync(customer, provider)
            .await
            .map_err(crate::sync::queue_err)?;
        tracing::info!("first sync: a slice written; the next is queued");
    }
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "releasing the poll lease failed; it expires by itself");
    }
    Ok(())
}

fn last_pass_owed(all: &[(Provider, FirstSyncRecord)], provider: Provider) -> bool {
    all.iter()
        .any(|(p, f)| *p == provider && f.last_pass_owed)
}

/// A done first sync's last pass, then its record that it ran. A job
/// killed before the record runs it again when retried (the watchdog
/// queues one lost): it plans from MongoDB, so a second run pushes only
/// what is still behind.
async fn last_pass(job: &ProviderPoll, ctx: &Polls, id: &str) -> Result<(), JobError> {
    let (customer, provider) = (&job.customer, job.provider);
    let writes = FirstSyncWrites {
        customer,
        provider,
        pushes: &ctx.enqueuer,
        job_id: id,
        gather: false,
    };
    ctx.outbound.last_pass(&writes).await?;
    ctx.inbound
        .store
        .last_pass_run(customer, provider)
        .await
        .map_err(store_err)
}

/// Queueing `provider-poll` jobs.
impl Enqueuer {
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
}
