//! Applying CRM records to the app's store: the service, its entry points
//! (a change, a poll's record, a purge and a restore), and failures
//! recorded; the steps of applying one record are in `apply`.

mod apply;

use bson::DateTime;
use workers::{JobError, Queue};

use std::sync::Arc;

use super::policy::{Applied, ConflictPolicy};
use super::PushQueue;
use crate::crm::CrmRecord;
use crate::crm::IntegrationApp;
use crate::domain::{CustomerId, Email, Provider};
use crate::store::{Customers, Direction, Outbox, Store, StoreError, SyncLog};
use crate::sync::{link_lease_name, queue_err, store_err, with_lease};

/// The inbound sync service.
#[derive(Clone)]
pub struct InboundSync {
    pub(crate) store: Store,
    pub(crate) crm: IntegrationApp,
    pub(crate) pushes: Arc<dyn PushQueue>,
    /// Which CRMs each customer syncs with.
    pub(crate) customers: Customers,
    /// Who wins a conflict.
    pub policy: ConflictPolicy,
    pub(crate) leases: Queue,
}

fn norm(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl InboundSync {
    /// A service over the store, the CRM client, the queue of pushes and the
    /// Redis where jobs of one link take turns (`leases`).
    pub fn new(
        store: Store,
        crm: IntegrationApp,
        pushes: Arc<dyn PushQueue>,
        leases: Queue,
        customers: Customers,
        policy: ConflictPolicy,
    ) -> Self {
        Self {
            store,
            crm,
            pushes,
            customers,
            policy,
            leases,
        }
    }

    /// Handles an `inbound-change`: fetch the record, apply it.
    ///
    /// # Errors
    /// Transient for store and network trouble, permanent for refusals.
    pub async fn change(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
        job_id: &str,
    ) -> Result<Applied, JobError> {
        // A change queued before its connection was disabled (or one
        // routed while it was) is not applied: a disabled CRM must not
        // import, overwrite or delete anything, nor cascade to the others.
        if !self.syncs_with(customer, provider).await? {
            tracing::info!(%customer, %provider, "a change from a connection that is not enabled; ignored");
            return Ok(Applied::Skipped);
        }
        let (_, record) = self.read_now(customer, provider, external_id).await?;
        self.apply(customer, provider, external_id, record, job_id)
            .await
    }

    /// The CRM's record `external_id` (`get-contact`; `None` when the CRM
    /// itself answers that it has no such record), and when it was read:
    /// a time taken just before the read, on the clock every process
    /// shares, which the record carries too.
    ///
    /// # Errors
    /// A CRM failure; `Permanent` for a record the app cannot read.
    pub(crate) async fn read_now(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
    ) -> Result<(i64, Option<CrmRecord>), JobError> {
        let read_at = self.leases.server_ms().await.map_err(queue_err)?;
        let record = self
            .crm
            .get_contact(customer, provider, external_id)
            .await?
            .map(|r| r.read_at(read_at));
        Ok((read_at, record))
    }

    /// Erases what the app keeps of the person behind a CRM record the CRM
    /// deleted for privacy (HubSpot's `contact.privacyDeletion`, whose
    /// purpose its changelog gives as letting integrations "permanently
    /// delete the contact and all associated data"): the contact, deleted
    /// already by the change, loses its fields and email, its links the
    /// values they remember, its sync log entries their notes and errors.
    /// Ids and times stay, so what happened can still be followed. A record
    /// no contact is linked to leaves nothing to erase.
    ///
    /// # Errors
    /// Unavailable when MongoDB fails (the job comes back and erases again).
    pub async fn purge(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
    ) -> Result<(), JobError> {
        let Some(link) = self
            .store
            .link_by_external(customer, provider, external_id)
            .await
            .map_err(store_err)?
        else {
            return Ok(());
        };
        self.store
            .purge_contact(link.contact_id)
            .await
            .map_err(store_err)?;
        tracing::info!(contact_id = %link.contact_id, "a contact deleted for privacy in the CRM is erased");
        Ok(())
    }

    /// Brings back the contact a CRM record was linked to when the CRM
    /// restores that record from deletion (HubSpot's `contact.restore`: "a
    /// contact is restored from deletion"): a user asked for the person
    /// back, whoever deleted it. The contact returns with what it held, and
    /// the pushes written with it bring the other CRMs back too (a push
    /// that finds its record gone creates one). The change that follows
    /// merges what the restored record holds. Nothing is restored when the
    /// record is not live when read, the contact is not deleted or was
    /// erased for privacy; a contact whose email a live one has taken
    /// meanwhile is refused, naming both.
    ///
    /// # Errors
    /// Transient for store and CRM trouble, permanent for a taken email.
    pub async fn restore(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
    ) -> Result<(), JobError> {
        if !self.syncs_with(customer, provider).await? {
            return Ok(());
        }
        let Some(link) = self
            .store
            .link_by_external(customer, provider, external_id)
            .await
            .map_err(store_err)?
        else {
            return Ok(());
        };
        let work = async {
            let deleted = self
                .store
                .contact(link.contact_id)
                .await
                .map_err(store_err)?
                .is_some_and(|c| c.deleted_at.is_some());
            if !deleted {
                return Ok(());
            }
            let live = self
                .crm
                .get_contact(customer, provider, external_id)
                .await?
                .is_some_and(|r| !r.deleted);
            if !live {
                return Ok(());
            }
            // The other CRMs' records went with the deletion: their links
            // let go of them first, so the pushes below find the person by
            // email or create it, rather than read a deleted record as a
            // deletion to apply (or see nothing to write).
            let links = self
                .store
                .links_of(&[link.contact_id])
                .await
                .map_err(store_err)?;
            for other in links.iter().filter(|l| l.provider != provider) {
                if let Some(old) = &other.external_id {
                    self.store
                        .release_external_id(link.contact_id, other.provider, old)
                        .await
                        .map_err(store_err)?;
                }
            }
            let owed = self.owed(customer, provider, false).await?;
            match self
                .store
                .restore_contact(link.contact_id, Outbox::owed(&owed).as_ref())
                .await
            {
                Ok(Some(restored)) => {
                    tracing::info!(contact_id = %restored.id, %provider, "a contact restored with its CRM record");
                    self.push_owed(&restored, &owed).await
                }
                Ok(None) => Ok(()),
                Err(StoreError::Conflict(m)) => Err(JobError::permanent(format!(
                    "{provider} record {external_id} was restored, but contact {} cannot be: {m}",
                    link.contact_id
                ))),
                Err(StoreError::Other(e)) => Err(store_err(e)),
            }
        };
        with_lease(
            &self.leases,
            &link_lease_name(link.contact_id, provider),
            "another job is pushing this contact",
            work,
        )
        .await
    }

    /// Whether the customer's contacts sync with `provider`: its
    /// connection is enabled (and the deployment syncs with the CRM).
    ///
    /// # Errors
    /// Unavailable when MongoDB fails.
    pub async fn syncs_with(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<bool, JobError> {
        Ok(self
            .customers
            .providers(customer)
            .await
            .map_err(store_err)?
            .contains(&provider))
    }

    /// Applies the current state of one CRM record (`None`: gone).
    ///
    /// A record already linked is applied under its link's lease, the one
    /// pushes take: a push that has written the CRM but not yet recorded it
    /// on the link must finish first, or its echo would look like a change
    /// made in the CRM. (Leases are taken link first, then record, in both
    /// directions, so neither waits on the other in a cycle.)
    ///
    /// # Errors
    /// Transient for store trouble, permanent for conflicts.
    #[tracing::instrument(skip_all, fields(contact_id = tracing::field::Empty))]
    pub async fn apply(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
        record: Option<CrmRecord>,
        job_id: &str,
    ) -> Result<Applied, JobError> {
        // The contact the record belongs to: by link, else (a push that
        // created the record may not have recorded its id yet) by email.
        let owner = match self
            .store
            .link_by_external(customer, provider, external_id)
            .await
            .map_err(store_err)?
        {
            Some(l) => Some(l.contact_id),
            None => match record
                .as_ref()
                .and_then(|r| r.fields.primary_email.as_deref())
                .and_then(|e| Email::parse(e).ok())
            {
                Some(e) => self
                    .store
                    .live_contact_by_email(customer, &e)
                    .await
                    .map_err(store_err)?
                    .map(|c| c.id),
                None => None,
            },
        };
        if let Some(contact) = owner {
            tracing::Span::current().record("contact_id", tracing::field::display(contact));
        }
        let work = self.apply_during_push(customer, provider, external_id, record, job_id);
        match owner {
            Some(contact) => {
                with_lease(
                    &self.leases,
                    &link_lease_name(contact, provider),
                    "another job is pushing this contact",
                    work,
                )
                .await
            }
            None => work.await,
        }
    }

    /// [`Self::apply`] for a caller that already holds the link's lease (a
    /// push that found the CRM record changed).
    ///
    /// # Errors
    /// Transient for store trouble, permanent for conflicts.
    pub async fn apply_during_push(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
        record: Option<CrmRecord>,
        job_id: &str,
    ) -> Result<Applied, JobError> {
        let (applied, contact, conflict) = with_lease(
            &self.leases,
            &format!("ext:{customer}:{provider}:{external_id}"),
            "another job is applying this record",
            self.apply_held(customer, provider, external_id, record, job_id),
        )
        .await?;
        if let Some(contact) = contact {
            if !matches!(
                applied,
                Applied::Unchanged | Applied::Stale | Applied::Skipped
            ) {
                self.store
                    .log_sync(&SyncLog {
                        contact_id: Some(contact.id),
                        customer_id: contact.customer_id.clone(),
                        provider,
                        direction: Direction::Inbound,
                        outcome: applied.as_str().into(),
                        external_id: Some(external_id.into()),
                        job_id: job_id.into(),
                        attempts: 1,
                        version: contact.version,
                        error: None,
                        conflict,
                        at: DateTime::now(),
                    })
                    .await
                    .map_err(store_err)?;
            }
        }
        tracing::info!(outcome = applied.as_str(), "inbound change");
        Ok(applied)
    }

    /// Records a CRM record that could not be applied (a dead
    /// `inbound-change`, or a record a poll skipped): a sync log entry, and
    /// the link in `error` when the record is linked to a contact.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn record_failure(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: Option<&str>,
        job_id: &str,
        attempts: u32,
        error: &str,
    ) -> anyhow::Result<()> {
        let link = match external_id {
            Some(ext) => self.store.link_by_external(customer, provider, ext).await?,
            None => None,
        };
        // Logged first: whoever sees the link in `error` finds why in the
        // log (and in the connection's health, which counts the log).
        self.store
            .log_sync(&SyncLog {
                contact_id: link.as_ref().map(|l| l.contact_id),
                customer_id: customer.clone(),
                provider,
                direction: Direction::Inbound,
                outcome: "failed".into(),
                external_id: external_id.map(str::to_owned),
                job_id: job_id.into(),
                attempts: i64::from(attempts),
                version: 0,
                error: Some(error.into()),
                conflict: None,
                at: DateTime::now(),
            })
            .await?;
        if let Some(l) = &link {
            self.store
                .mark_error(l.contact_id, customer, provider, error, attempts, job_id)
                .await?;
        }
        Ok(())
    }
}
