//! `inbound-change`: a CRM record changed; fetch it and apply it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use workers::{Job, JobError, PushOptions};

use super::{Contexts, Enqueuer, Kind, Run};
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
    /// A webhook delivery's changes, gathered into one job at ingest (one
    /// Redis write for the batch instead of one per record); the worker
    /// fans them out into one job each. Empty for a job of one change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<InboundChange>,
    /// The CRM deleted the person for privacy (HubSpot's
    /// `contact.privacyDeletion`): once the deletion is applied, what the
    /// app keeps of the person is erased too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
    /// The CRM restored the record from deletion (HubSpot's
    /// `contact.restore`): a contact deleted with it comes back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

/// One webhook delivery's changes for one connection (same customer,
/// provider and account), each with the keys of the events it stands for
/// (see [`super::Enqueuer::inbound_gathered`]).
pub type Delivery = Vec<(Vec<String>, InboundChange)>;

/// What `inbound-change` jobs run with: the inbound sync rules, and the
/// queue a gathered batch fans out on.
#[derive(Clone)]
pub struct Inbound {
    /// The inbound sync rules.
    pub sync: Arc<InboundSync>,
    /// Queues a batch's changes.
    pub enqueuer: Enqueuer,
}

impl Kind for InboundChange {
    const QUEUE: &'static str = "inbound-change";
    type Context = Inbound;

    fn group(&self) -> Option<String> {
        Some(match &self.account_id {
            Some(a) => format!("{}:{a}", self.provider),
            None => self.customer.to_string(),
        })
    }

    fn context(all: &Contexts) -> Self::Context {
        Inbound {
            sync: all.inbound.clone(),
            enqueuer: all.enqueuer.clone(),
        }
    }

    /// The job, the CRM and its record (the contact is added once known).
    /// A batch names how many changes it holds instead of a record.
    async fn handle(self, ctx: &Self::Context, r: &Run) -> Result<(), JobError> {
        run(self, ctx, &r.id).await
    }

    fn span(&self, job: &Job) -> tracing::Span {
        if !self.batch.is_empty() {
            return tracing::info_span!("job", job_id = %job.id, queue = %job.queue, attempt = job.attempt,
                customer = %self.customer, provider = %self.provider, batch = self.batch.len());
        }
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
        // a batch that could not be fanned out: each of its changes failed
        let changes = match self.batch.is_empty() {
            true => vec![self],
            false => self.batch,
        };
        for c in changes {
            // a change queued before its customer was known is recorded as
            // the customer's whose account it is (none: nobody's, no link)
            let customer = match &c.account_id {
                None => c.customer.clone(),
                Some(account) => match ctx
                    .sync
                    .customers
                    .route(c.provider, account)
                    .await
                    .map_err(crate::sync::store_err)?
                {
                    Some(customer) => customer,
                    None => continue,
                },
            };
            ctx.sync
                .record_failure(
                    &customer,
                    c.provider,
                    Some(&c.external_id),
                    &job.id,
                    job.attempt,
                    &error.to_string(),
                )
                .await
                .map_err(crate::sync::store_err)?;
        }
        Ok(())
    }
}

/// Runs an `inbound-change` job: fans a gathered batch out, or applies
/// one record's change.
async fn run(job: InboundChange, ctx: &Inbound, id: &str) -> Result<(), JobError> {
    if !job.batch.is_empty() {
        return fan_out(&ctx.enqueuer, id, job.batch).await;
    }
    let ctx = &ctx.sync;
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
    crate::crm::job_scope(async {
        if job.restore {
            ctx.restore(&customer, job.provider, &job.external_id)
                .await?;
        }
        ctx.change(&customer, job.provider, &job.external_id, id)
            .await
    })
    .await?;
    if job.purge {
        ctx.purge(&customer, job.provider, &job.external_id).await?;
    }
    Ok(())
}

/// Queues one job per change of a gathered batch, under ids made from the
/// batch job's: pushing an id that exists does nothing, so a batch run
/// again (its worker died after the push) queues nothing twice.
async fn fan_out(
    enqueuer: &Enqueuer,
    batch_id: &str,
    batch: Vec<InboundChange>,
) -> Result<(), JobError> {
    let jobs = batch
        .into_iter()
        .enumerate()
        .map(|(i, change)| (format!("{batch_id}.{i}"), change))
        .collect();
    enqueuer
        .push_all(jobs)
        .await
        .map_err(crate::sync::queue_err)
}

/// Queueing `inbound-change` jobs.
impl Enqueuer {
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
}
