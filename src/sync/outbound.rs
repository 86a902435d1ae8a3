//! `outbound-upsert`: push the current state of one contact to one CRM.

mod first_sync;
mod push;

pub use first_sync::FirstSyncWrites;

use bson::DateTime;
use std::sync::Arc;
use std::time::Duration;

use workers::{JobError, Queue};

use super::inbound::InboundSync;
use super::policy::ConflictPolicy;
use super::{link_lease_name, queue_err, store_err, with_lease};
use crate::crm::CrmRecord;
use crate::crm::IntegrationApp;
use crate::domain::UniversalContact;
use crate::domain::{ContactId, CustomerId, Provider, SyncStatus};
use crate::store::{Contact, Direction, Link, Store, StoreError, SyncLog};

/// How long a push waits before it looks again for a record whose email
/// another contact's pending push is taking away.
const EMAIL_MOVE_WAIT: Duration = Duration::from_secs(1);

/// How many times a push merges again because the contact changed while
/// it was being merged, before it gives the attempt up.
const MERGE_ROUNDS: usize = 5;

/// The outbound sync service.
#[derive(Clone)]
pub struct Outbound {
    store: Store,
    crm: IntegrationApp,
    leases: Queue,
    /// Applies CRM-side changes found before a push (conflicts).
    inbound: Option<Arc<InboundSync>>,
}

impl Outbound {
    /// A service over the store, the Integration.app client, and the Redis
    /// where pushes of one link take turns.
    pub fn new(store: Store, crm: IntegrationApp, leases: Queue) -> Self {
        Self {
            store,
            crm,
            leases,
            inbound: None,
        }
    }

    /// Checks for CRM-side changes before each update and settles conflicts
    /// with `inbound`'s policy.
    pub fn with_conflicts(mut self, inbound: Arc<InboundSync>) -> Self {
        self.inbound = Some(inbound);
        self
    }

    /// Runs one push.
    ///
    /// # Errors
    /// Transient for store and network trouble, permanent for refusals.
    pub async fn run(
        &self,
        contact_id: ContactId,
        provider: Provider,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), JobError> {
        // Pushes of one link take turns, so an older state can never land
        // after a newer one; the contact is read once the lease is held.
        with_lease(
            &self.leases,
            &link_lease_name(contact_id, provider),
            "another job is pushing this contact",
            self.push_current(contact_id, provider, job_id, attempt),
        )
        .await
    }

    async fn push_current(
        &self,
        contact_id: ContactId,
        provider: Provider,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), JobError> {
        // A merge is computed from one read of the contact and written only
        // if the contact is still at that version; when it moved on, the
        // merge is done again from the newer state.
        for _ in 0..MERGE_ROUNDS {
            // One read of the contact and its links, shared with the other
            // jobs reading at the moment.
            let Some((contact, links)) = self
                .store
                .contact_with_links(contact_id)
                .await
                .map_err(store_err)?
            else {
                tracing::info!("contact no longer exists; nothing to push");
                return Ok(());
            };
            let link = links.into_iter().find(|l| l.provider == provider);
            if let Some(l) = &link {
                if l.sync_status == SyncStatus::Synced && l.synced_version >= contact.version {
                    tracing::info!(version = contact.version, "already synced; nothing to push");
                    return Ok(());
                }
            }
            let done = if contact.deleted_at.is_some() {
                self.push_deletion(&contact, provider, link.as_ref(), job_id, attempt)
                    .await?;
                true
            } else {
                self.push_merged(&contact, provider, link.as_ref(), job_id, attempt)
                    .await?
            };
            if done {
                return Ok(());
            }
        }
        Err(JobError::transient(
            "the contact kept changing while it was merged with its CRM record",
        ))
    }

    async fn push_deletion(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), JobError> {
        let recorded = link.and_then(|l| l.external_id.clone());
        // no record on the link: one the push made may still be in the CRM
        let unrecorded = recorded.is_none();
        let known = match recorded {
            Some(ext) => Some(ext),
            None => self.unrecorded_create(contact, provider, link).await?,
        };
        if let Some(ext) = &known {
            self.crm
                .delete_contact(&contact.customer_id, provider, ext)
                .await?;
            self.record_synced(contact, provider, ext, job_id, None, None)
                .await?;
        }
        self.log(contact, provider, known, "deleted", job_id, attempt, None)
            .await?;
        if unrecorded {
            // the record an unrecorded create left is deleted (or there
            // was none): an event for it is no longer to be held back
            self.store
                .forget_unrecorded_create(&contact.customer_id, provider, &contact.email)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }

    /// The CRM record an earlier push of this contact created but did not
    /// get to record on the link (its worker died, or the CRM's answer was
    /// lost): found by the contact's email, and known as ours because it
    /// holds exactly what the link's push intent says that push wrote and
    /// no other contact is linked to it. Deleting the contact must delete
    /// it too, or it would stay in the CRM, and its own create event or the
    /// next poll would bring the contact back.
    ///
    /// # Errors
    /// As any CRM call or store read.
    async fn unrecorded_create(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
    ) -> Result<Option<String>, JobError> {
        let Some(link) = link.filter(|l| l.push_intent.is_some()) else {
            return Ok(None);
        };
        let Some(record) = self.find_by_email(contact, provider).await? else {
            return Ok(None);
        };
        if link.intent_matching(&record.fields).is_none() {
            // someone's record with this email, not what this contact wrote
            return Ok(None);
        }
        let elsewhere = self
            .store
            .link_by_external(&contact.customer_id, provider, &record.id)
            .await
            .map_err(store_err)?
            .is_some_and(|l| l.contact_id != contact.id);
        Ok((!elsewhere).then_some(record.id))
    }

    async fn read(
        &self,
        customer: &CustomerId,
        provider: Provider,
        ext: &str,
    ) -> Result<Option<CrmRecord>, JobError> {
        let read_at = self.leases.server_ms().await.map_err(queue_err)?;
        Ok(self
            .crm
            .get_contact(customer, provider, ext)
            .await?
            .map(|r| r.read_at(read_at)))
    }

    fn policy(&self) -> ConflictPolicy {
        self.inbound
            .as_ref()
            .map_or(ConflictPolicy::CrmWins, |i| i.policy)
    }

    async fn record_synced(
        &self,
        contact: &Contact,
        provider: Provider,
        ext: &str,
        job_id: &str,
        fields: Option<&UniversalContact>,
        pushed_ms: Option<i64>,
    ) -> Result<(), JobError> {
        match self
            .store
            .mark_synced(
                contact.id,
                &contact.customer_id,
                provider,
                ext,
                contact.version,
                job_id,
                fields,
                pushed_ms,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(m)) => Err(JobError::permanent(m)),
            Err(StoreError::Other(e)) => Err(store_err(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn log(
        &self,
        contact: &Contact,
        provider: Provider,
        external_id: Option<String>,
        outcome: &str,
        job_id: &str,
        attempt: u32,
        conflict: Option<String>,
    ) -> Result<(), JobError> {
        self.store
            .log_sync(&SyncLog {
                contact_id: Some(contact.id),
                customer_id: contact.customer_id.clone(),
                provider,
                direction: Direction::Outbound,
                outcome: outcome.into(),
                external_id,
                job_id: job_id.into(),
                attempts: i64::from(attempt),
                version: contact.version,
                error: None,
                conflict,
                at: DateTime::now(),
            })
            .await
            .map_err(store_err)
    }

    /// Records a job that ran out of attempts: link `error`, sync log.
    ///
    /// # Errors
    /// When the database fails (the runtime tries again later).
    pub async fn record_failure(
        &self,
        contact_id: ContactId,
        provider: Provider,
        version: i64,
        job_id: &str,
        attempts: u32,
        error: &str,
    ) -> anyhow::Result<()> {
        // Only read when a job is given up on: whose link and log it is.
        let customer = self
            .store
            .contact(contact_id)
            .await?
            .map(|c| c.customer_id)
            .unwrap_or_default();
        // Logged first: whoever sees the link in `error` finds why in the
        // log (and in the connection's health, which counts the log).
        self.store
            .log_sync(&SyncLog {
                contact_id: Some(contact_id),
                customer_id: customer.clone(),
                provider,
                direction: Direction::Outbound,
                outcome: "failed".into(),
                external_id: None,
                job_id: job_id.into(),
                attempts: i64::from(attempts),
                version,
                error: Some(error.into()),
                conflict: None,
                at: DateTime::now(),
            })
            .await?;
        self.store
            .mark_error(contact_id, &customer, provider, error, attempts, job_id)
            .await
    }
}
