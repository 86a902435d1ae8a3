//! `inbound-change`: a CRM record changed; fetch it and apply it.

use std::sync::Arc;

use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{Contexts, Kind};
use crate::domain::Provider;
use crate::sync::InboundSync;

/// A CRM record changed. Idempotent: the handler fetches the record's
/// current state and ignores states older than the one applied (a wire
/// format: fields added later get `#[serde(default)]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundChange {
    /// The CRM.
    pub provider: Provider,
    /// The CRM record id.
    pub external_id: String,
    /// When the change happened (ms), as the event said.
    #[serde(default)]
    pub occurred_at: i64,
    /// The events this job stands for (for the sync log).
    #[serde(default)]
    pub event_ids: Vec<String>,
}

impl Kind for InboundChange {
    const QUEUE: &'static str = "inbound-change";
    type Context = Arc<InboundSync>;

    fn context(all: &Contexts) -> Self::Context {
        all.inbound.clone()
    }

    /// The job, the CRM and its record (the contact is added once known).
    fn span(&self, job: &Job) -> tracing::Span {
        tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            provider = %self.provider, external_id = %self.external_id)
    }

    /// A sync log entry, and the link in `error` when the record is linked.
    async fn on_dead(
        self,
        ctx: &Self::Context,
        job: &Job,
        error: &JobError,
    ) -> Result<(), JobError> {
        ctx.record_failure(
            self.provider,
            Some(&self.external_id),
            &job.id,
            job.attempt,
            &error.to_string(),
        )
        .await
        .map_err(crate::sync::store_err)
    }
}

/// Runs an `inbound-change` job (an apalis worker function).
///
/// # Errors
/// Transient for store and network trouble, permanent for refusals.
pub async fn handle(
    job: InboundChange,
    ctx: Data<Arc<InboundSync>>,
    id: TaskId,
) -> Result<(), JobError> {
    ctx.change(job.provider, &job.external_id, &id.to_string())
        .await
        .map(|_| ())
}
