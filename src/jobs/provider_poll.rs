//! `provider-poll`: list a CRM's changed records and apply each.

use std::sync::Arc;

use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{Contexts, Kind, Tuning};
use crate::domain::{CustomerId, Provider};
use crate::sync::InboundSync;

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
}

impl Kind for ProviderPoll {
    const QUEUE: &'static str = "provider-poll";
    type Context = Arc<InboundSync>;

    fn group(&self) -> Option<String> {
        Some(self.customer.to_string())
    }

    fn context(all: &Contexts) -> Self::Context {
        all.inbound.clone()
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
        ctx.record_failure(
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
pub async fn handle(
    job: ProviderPoll,
    ctx: Data<Arc<InboundSync>>,
    id: TaskId,
) -> Result<(), JobError> {
    crate::crm::job_scope(ctx.poll(&job.customer, job.provider, job.backfill, &id.to_string()))
        .await
        .map(|_| ())
}
