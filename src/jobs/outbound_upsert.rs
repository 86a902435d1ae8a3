//! `outbound-upsert`: push the current state of one contact to one CRM.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use workers::{Job, JobError};

use super::{plan_jobs, pushes_of, Contexts, Enqueuer, Kind, OwedJobs, Run};
use crate::store::Contact;
use crate::domain::CustomerId;
use crate::domain::{ContactId, Provider};
use crate::store::Store;
use crate::sync::{queue_err, store_err, InboundSync, Outbound};

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
    /// Handed on by a write step (an input its batch refused, a contact
    /// left at its end): pushed singly, never gathered again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub singly: bool,
}

/// What `outbound-upsert` jobs run with.
#[derive(Clone)]
pub struct Pushes {
    /// Pushes one contact.
    pub outbound: Arc<Outbound>,
    /// Reads holds and backlogs, starts gathers.
    pub inbound: Arc<InboundSync>,
    /// Queues a gather's write step.
    pub enqueuer: Enqueuer,
    /// Pushes waiting that make a push gather them (0: never).
    pub gather_backlog: u64,
}

impl Kind for OutboundUpsert {
    const QUEUE: &'static str = "outbound-upsert";
    type Context = Pushes;

    fn group(&self) -> Option<String> {
        self.customer.as_ref().map(ToString::to_string)
    }

    fn context(all: &Contexts) -> Self::Context {
        Pushes {
            outbound: all.outbound.clone(),
            inbound: all.inbound.clone(),
            enqueuer: all.enqueuer.clone(),
            gather_backlog: all.gather_backlog,
        }
    }

    async fn handle(self, ctx: &Self::Context, run: &Run) -> Result<(), JobError> {
        if run.attempt == 1 && self.gathered(ctx).await? {
            return Err(JobError::deferred(
                "a gather writes the connection's backlog in batches; this push waits for it",
                GATHER_WAIT,
            ));
        }
        crate::crm::job_scope(
            ctx.outbound
                .run(self.contact_id, self.provider, &run.id, run.attempt),
        )
        .await
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
        ctx.outbound
            .record_failure(
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

/// How long a push waits, without using an attempt, before it looks
/// again whether the gather writing its connection's backlog is done.
const GATHER_WAIT: Duration = Duration::from_secs(5);

impl OutboundUpsert {
    /// Whether this push waits for a write step that gathers the backlog
    /// of its connection into batches: a live one, or one this push
    /// starts because at least `gather_backlog` pushes wait. The step
    /// writes the contact under its link lease; the push, run again once
    /// the step is done, finds its link synced. A push keeps its job
    /// throughout, so nothing rests on the step alone: were it lost, the
    /// push runs by itself once the step has stood still for
    /// `GATHER_QUIET`. Only on a first attempt (a retry may follow a
    /// call that landed), not for the step's own single pushes, and only
    /// where the CRM takes batches and refuses a second record of an
    /// email (HubSpot), as the step creates without looking emails up.
    /// HubSpot's contacts guide (developers.hubspot.com/docs/api/crm/
    /// contacts) names `email` the unique identifier of a contact and
    /// answers a create of an email it has with 409; its batch create
    /// reports such an input among the errors of a 207.
    async fn gathered(&self, ctx: &Pushes) -> Result<bool, JobError> {
        let (Some(customer), Provider::Hubspot, 1.., false) =
            (&self.customer, self.provider, ctx.gather_backlog, self.singly)
        else {
            return Ok(false);
        };
        let customers = &ctx.inbound.customers;
        if customers
            .gathering(customer)
            .await
            .map_err(store_err)?
            .contains(&self.provider)
        {
            return Ok(true);
        }
        if !customers
            .backlog_at_least(customer, self.provider, ctx.gather_backlog)
            .await
            .map_err(store_err)?
        {
            return Ok(false);
        }
        let store = &ctx.inbound.store;
        if store
            .begin_gather(customer, self.provider)
            .await
            .map_err(store_err)?
        {
            tracing::info!(%customer, provider = %self.provider, "a backlog of pushes: gathered into batches");
            ctx.enqueuer
                .continue_first_sync(customer, self.provider)
                .await
                .map_err(queue_err)?;
            return Ok(true);
        }
        // one is underway (another push started it), or a first sync
        Ok(store
            .gathering(customer)
            .await
            .map_err(store_err)?
            .contains(&self.provider))
    }
}

/// Queueing `outbound-upsert` jobs.
impl Enqueuer {
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

    /// [`Self::push_contact`] for a write step's single pushes (see
    /// [`OutboundUpsert::singly`]).
    ///
    /// # Errors
    /// When MongoDB or Redis fails; links already marked stay `pending`.
    pub async fn push_contact_singly(
        &self,
        store: &Store,
        contact: ContactId,
        customer: &CustomerId,
        providers: &[Provider],
        version: i64,
    ) -> anyhow::Result<()> {
        let jobs = plan_jobs(providers);
        store.mark_pending(contact, customer, &jobs, version).await?;
        self.push_all(pushes_of(contact, customer, &jobs, version, true))
            .await?;
        Ok(())
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
        self.push_all(pushes_of(contact, customer, jobs, version, false))
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
                pushes_of(*contact, customer, jobs, *version, false)
            })
            .collect::<Vec<_>>();
        if !pushes.is_empty() {
            self.push_all(pushes).await?;
        }
        Ok(())
    }
}
