//! `provider-poll`: list a CRM's changed records and apply each.

use std::sync::Arc;

use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{Contexts, Enqueuer, Kind, Tuning};
use crate::domain::{CustomerId, Provider};
use crate::sync::{InboundSync, Outbound};

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
}

/// What `provider-poll` jobs run with.
#[derive(Clone)]
pub struct Polls {
    /// Lists and applies the CRM's records.
    pub inbound: Arc<InboundSync>,
    /// Creates the app's contacts the CRM lacks (a first sync).
    pub outbound: Arc<Outbound>,
    /// Queues the single pushes a first sync leaves.
    pub enqueuer: Enqueuer,
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
        }
    }

    /// A poll walks many pages: it gets the time of many attempts, and two
    /// at a time are plenty.
    fn tune(cfg: &mut Tuning) {
        cfg.timeout *= 20;
        cfg.worker.concurrency = 2;
    }

    fn span(&self, job: &Job) -> tracing::Span {
        tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            customer = %self.customer, provider = %self.provider)
    }

    /// A sync log entry for the CRM.
    async fn on_dead(
        self,
        ctx: &Self::Context,
        job: &Job,
        error: &JobError,
    ) -> Result<(), JobError> {
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

/// Runs a `provider-poll` job (an apalis worker function).
///
/// # Errors
/// Transient for store and network trouble, permanent for refusals.
pub async fn handle(job: ProviderPoll, ctx: Data<Polls>, id: TaskId) -> Result<(), JobError> {
    let id = id.to_string();
    let full = job.backfill || job.first_sync;
    let listed =
        crate::crm::job_scope(ctx.inbound.poll(&job.customer, job.provider, full, &id)).await?;
    if job.first_sync && !listed.busy {
        let mut report = crate::crm::job_scope(ctx.outbound.create_unlinked(
            &job.customer,
            job.provider,
            &ctx.enqueuer,
            &id,
        ))
        .await?;
        tracing::info!(
            created = report.batch_created,
            batch_calls = report.batch_calls,
            pushed = report.pushed,
            "first sync: the app's contacts the CRM lacked"
        );
        report.finished_at = Some(bson::DateTime::now());
        ctx.inbound
            .store
            .save_first_sync(&job.customer, job.provider, &report)
            .await
            .map_err(crate::sync::store_err)?;
    }
    Ok(())
}
