//! `outbound-upsert`: push the current state of one contact to one CRM.

use std::sync::Arc;

use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{Contexts, Kind};
use crate::domain::CustomerId;
use crate::domain::{ContactId, Provider};
use crate::store::Store;
use crate::sync::Outbound;

/// Payload of an outbound push. Idempotent: the handler reads the *current*
/// contact, so a duplicate or late job pushes the latest state, and a CRM
/// record is found by email before one is created, so a second delivery never
/// creates a second record. `version` is informational (added fields must be
/// `#[serde(default)]` so queued jobs still decode).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundUpsert {
    /// The contact to push.
    pub contact_id: ContactId,
    /// The CRM to push to.
    pub provider: Provider,
    /// The contact version when the job was queued.
    #[serde(default)]
    pub version: i64,
    /// The contact's customer: the job's fair-share group (absent in jobs
    /// queued before there were customers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerId>,
}

impl Kind for OutboundUpsert {
    const QUEUE: &'static str = "outbound-upsert";
    type Context = Arc<Outbound>;

    fn group(&self) -> Option<String> {
        self.customer.as_ref().map(ToString::to_string)
    }

    fn context(all: &Contexts) -> Self::Context {
        all.outbound.clone()
    }

    fn span(&self, job: &Job) -> tracing::Span {
        tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            contact_id = %self.contact_id, provider = %self.provider)
    }

    /// The link turns `error` and a sync log is written. If MongoDB cannot
    /// take that, the hook fails and is called again later, so a job is
    /// never parked with its link unmarked.
    async fn on_dead(
        self,
        ctx: &Self::Context,
        job: &Job,
        error: &JobError,
    ) -> Result<(), JobError> {
        ctx.record_failure(
            self.contact_id,
            self.provider,
            self.version,
            &job.id,
            job.attempt,
            &error.to_string(),
        )
        .await
        .map_err(crate::sync::store_err)
    }

    /// The link is marked `pending` again, pointing at the revived job.
    async fn on_revive(&self, store: &Store, job_id: &str) -> anyhow::Result<()> {
        let customer = store
            .contact(self.contact_id)
            .await?
            .map(|c| c.customer_id)
            .unwrap_or_default();
        store
            .mark_pending(
                self.contact_id,
                &customer,
                &[(self.provider, job_id.to_owned())],
                0,
            )
            .await?;
        Ok(())
    }
}

/// Runs an `outbound-upsert` job (an apalis worker function).
///
/// # Errors
/// Transient for store and network trouble, permanent for refusals.
pub async fn handle(
    job: OutboundUpsert,
    ctx: Data<Arc<Outbound>>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), JobError> {
    let attempt = u32::try_from(attempt.current()).unwrap_or(u32::MAX);
    crate::crm::job_scope(ctx.run(job.contact_id, job.provider, &id.to_string(), attempt)).await
}
