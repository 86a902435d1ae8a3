//! `inbound-change`: a CRM record changed; fetch it and apply it.

use std::sync::Arc;

use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{Contexts, Kind};
use crate::domain::{CustomerId, Provider};
use crate::sync::InboundSync;

/// A CRM record changed. Idempotent: the handler fetches the record's
/// current state and ignores states older than the one applied (a wire
/// format: fields added later get `#[serde(default)]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundChange {
    /// Whose connection (the default customer for jobs queued before
    /// there were customers).
    #[serde(default)]
    pub customer: CustomerId,
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
    /// The CRM account the change came from, when the api could not tell
    /// whose it is (MongoDB was unavailable): the worker finds the customer
    /// by it, so webhooks are accepted without MongoDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

impl Kind for InboundChange {
    const QUEUE: &'static str = "inbound-change";
    type Context = Arc<InboundSync>;

    fn group(&self) -> Option<String> {
        Some(match &self.account_id {
            Some(a) => format!("{}:{a}", self.provider),
            None => self.customer.to_string(),
        })
    }

    fn context(all: &Contexts) -> Self::Context {
        all.inbound.clone()
    }

    /// The job, the CRM and its record (the contact is added once known).
    fn span(&self, job: &Job) -> tracing::Span {
        tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
            customer = %self.customer, provider = %self.provider, external_id = %self.external_id)
    }

    /// A sync log entry, and the link in `error` when the record is linked.
    async fn on_dead(
        self,
        ctx: &Self::Context,
        job: &Job,
        error: &JobError,
    ) -> Result<(), JobError> {
        ctx.record_failure(
            &self.customer,
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
    let customer = match &job.account_id {
        None => job.customer,
        Some(account) => match ctx
            .customers
            .route(job.provider, account)
            .await
            .map_err(crate::sync::store_err)?
        {
            Some(c) => c,
            None => {
                tracing::warn!(provider = %job.provider, account_id = %account, "a change in a CRM account no customer has connected; ignored");
                return Ok(());
            }
        },
    };
    crate::crm::job_scope(ctx.change(&customer, job.provider, &job.external_id, &id.to_string()))
        .await
        .map(|_| ())
}
