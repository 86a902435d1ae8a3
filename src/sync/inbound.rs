//! Applying one CRM record to the app's store.

use bson::DateTime;
use workers::{JobError, Queue};

use std::sync::Arc;

use super::policy::{Applied, ConflictPolicy};
use super::PushQueue;
use crate::crm::CrmRecord;
use crate::crm::IntegrationApp;
use crate::domain::UniversalContact;
use crate::domain::{CustomerId, Email, Provider};
use crate::store::{Contact, Customers, Direction, Outbox, Store, StoreError, SyncLog};
use crate::sync::merge;
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

    async fn apply_held(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
        record: Option<CrmRecord>,
        job_id: &str,
    ) -> Result<(Applied, Option<Contact>, Option<String>), JobError> {
        let link = self
            .store
            .link_by_external(customer, provider, external_id)
            .await
            .map_err(store_err)?;
        let linked = match &link {
            Some(l) => self.store.contact(l.contact_id).await.map_err(store_err)?,
            None => None,
        };
        let record = match record {
            Some(r) if !r.deleted => r,
            gone => {
                // Deleted (or merged away) in the CRM.
                let Some(contact) = linked.filter(|c| c.deleted_at.is_none()) else {
                    return Ok((Applied::Skipped, None, None));
                };
                let crm_ms = gone.map_or(0, |r| r.updated_ms);
                let owed = self.owed(customer, provider, false).await?;
                let deleted = self
                    .store
                    .delete_contact(contact.id, Outbox::owed(&owed).as_ref())
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| JobError::transient("contact vanished while deleting"))?;
                let holds = UniversalContact::from(&deleted);
                self.mark(
                    provider,
                    &deleted,
                    external_id,
                    crm_ms,
                    &holds,
                    true,
                    link.as_ref(),
                )
                .await?;
                self.push_owed(&deleted, &owed).await?;
                return Ok((Applied::Deleted, Some(deleted), None));
            }
        };
        if let Some(l) = &link {
            if record.updated_ms > 0 && record.updated_ms <= l.crm_updated_ms {
                return Ok((Applied::Stale, linked, None));
            }
            // Read before the app's latest push landed: that push replaced
            // it, and a CRM change made since has its own, newer event.
            if l.last_pushed_at
                .is_some_and(|t| record.fetched_ms < t.timestamp_millis())
            {
                return Ok((Applied::Stale, linked, None));
            }
        }
        let email = record
            .fields
            .primary_email
            .as_deref()
            .and_then(|e| Email::parse(e).ok());

        // The local side: the linked contact, or a live one with this email.
        let contact = match linked {
            Some(c) if c.deleted_at.is_some() => {
                // Deleted in the app; its deletion is on its way to the CRM.
                return Ok((Applied::Skipped, Some(c), None));
            }
            Some(c) => Some(c),
            None => match &email {
                Some(e) => self
                    .store
                    .live_contact_by_email(customer, e)
                    .await
                    .map_err(store_err)?,
                None => None,
            },
        };
        // The link of a contact met by email (the record's id is not on it).
        let own = match (&link, &contact) {
            (None, Some(c)) => self.store.link(c.id, provider).await.map_err(store_err)?,
            _ => None,
        };
        // A second CRM record with the email of a contact already linked to
        // another one (a duplicate in the CRM): linking it would steal the
        // link, merging it would mix two people. Refused, so the caller
        // logs it and moves on.
        let other = own
            .as_ref()
            .and_then(|l| l.external_id.as_deref())
            .filter(|x| *x != external_id);
        if let (Some(other), Some(c)) = (other, &contact) {
            return Err(JobError::permanent(format!(
                "{provider} record {external_id} has the email of contact {}, which is linked to {provider} record {other}; not applied",
                c.id
            )));
        }

        let Some(contact) = contact else {
            let Some(email) = email else {
                tracing::warn!("CRM record has no usable email; not imported");
                return Ok((Applied::Skipped, None, None));
            };
            // A record a since-deleted contact's push created (its answer
            // was lost, so no link records it) is not a new person: that
            // contact's deletion is on its way to remove it.
            let orphaned = self
                .store
                .unrecorded_create(customer, provider, &email)
                .await
                .map_err(store_err)?
                .is_some_and(|l| {
                    l.external_id.is_none() && l.intent_matching(&record.fields).is_some()
                });
            if orphaned {
                tracing::info!("the record of a deleted contact's unrecorded push; not imported");
                return Ok((Applied::Skipped, None, None));
            }
            let owed = self.owed(customer, provider, false).await?;
            let created = self.create(customer, &record, email, &owed).await?;
            let holds = merge::apply(&record.fields, &Vec::new());
            self.mark(
                provider,
                &created,
                external_id,
                record.updated_ms,
                &holds,
                true,
                None,
            )
            .await?;
            self.push_owed(&created, &owed).await?;
            return Ok((Applied::Created, Some(created), None));
        };

        // Field by field against what both held at the last sync (or, for
        // a contact met by email, with no base: gaps are filled both ways).
        let mut crm_fields = record.fields.clone();
        if email.is_none() {
            // a CRM record without a usable email never changes the app's
            crm_fields.primary_email = Some(contact.email.as_str().to_owned());
        }
        let base = match (&link, &own) {
            (Some(l), _) => l.merge_base(&crm_fields),
            // A record our own push created but did not get to record
            // (its worker died): what that push wrote is the base, so a
            // later edit in the app is not taken back by the record's echo.
            (None, Some(l)) => l.intent_matching(&crm_fields),
            (None, None) => None,
        };
        let winner = self.policy.winner(record.updated_ms, &contact);
        let plan = merge::merge(base, &UniversalContact::from(&contact), &crm_fields, winner);
        // What the CRM holds now: the base the next push diffs against.
        let crm_holds = merge::apply(&crm_fields, &Vec::new());
        let note = plan.note(self.policy.name(), provider.as_str());

        if plan.to_app.is_empty() {
            // Our own push coming back, a change applied already, or one
            // the app's values win: nothing changes locally.
            let synced = plan.to_crm.is_empty();
            self.mark(
                provider,
                &contact,
                external_id,
                record.updated_ms,
                &crm_holds,
                synced,
                link.as_ref(),
            )
            .await?;
            if synced {
                self.ensure_others(&contact, provider).await?;
                return Ok((Applied::Unchanged, Some(contact), None));
            }
            // the app holds values this CRM lacks: make sure they get there
            let all = self.connected(&contact).await?;
            self.ensure(&contact, &all).await?;
            let applied = if plan.conflicts.is_empty() {
                Applied::Unchanged
            } else {
                Applied::Kept
            };
            return Ok((applied, Some(contact), note));
        }

        let synced = plan.to_crm.is_empty();
        let owed = self.owed(customer, provider, !synced).await?;
        let patch = crate::store::ContactPatch {
            outbox: Outbox::owed(&owed),
            ..merge::patch_of(&plan.to_app)
        };
        let updated = match self
            .store
            .update_contact_at(contact.id, Some(contact.version), &patch)
            .await
        {
            Ok(Some(c)) => c,
            // changed meanwhile (or deleted): the retry merges the newer state
            Ok(None) => {
                return Err(JobError::transient(
                    "the contact changed while a CRM change was applied",
                ))
            }
            Err(StoreError::Conflict(m)) => return Err(JobError::permanent(m)),
            Err(StoreError::Other(e)) => return Err(store_err(e)),
        };
        self.mark(
            provider,
            &updated,
            external_id,
            record.updated_ms,
            &crm_holds,
            synced,
            link.as_ref(),
        )
        .await?;
        self.push_owed(&updated, &owed).await?;
        tracing::debug!(
            job_id,
            to_app = plan.to_app.len(),
            to_crm = plan.to_crm.len(),
            "applied CRM values"
        );
        Ok((Applied::Updated, Some(updated), note))
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

    async fn create(
        &self,
        customer: &CustomerId,
        record: &CrmRecord,
        email: Email,
        owed: &[(Provider, String)],
    ) -> Result<Contact, JobError> {
        let f = &record.fields;
        let clean = |v: &Option<String>| norm(v).map(str::to_owned);
        let new = crate::store::NewContact {
            customer_id: customer.clone(),
            first_name: clean(&f.first_name),
            last_name: clean(&f.last_name),
            email,
            phone: clean(&f.primary_phone),
            company_name: clean(&f.company_name),
            job_title: clean(&f.job_title),
            outbox: Outbox::owed(owed),
        };
        match self.store.insert_contact(new).await {
            Ok(c) => Ok(c),
            // created concurrently by another change: retry finds and links it
            Err(StoreError::Conflict(m)) => Err(JobError::transient(m)),
            Err(StoreError::Other(e)) => Err(store_err(e)),
        }
    }

    /// Records on the link that it mirrors the CRM record, which holds
    /// `crm_holds`; `synced` says whether the CRM also holds the contact's
    /// current version (else the link's synced version stays where it was).
    #[allow(clippy::too_many_arguments)]
    async fn mark(
        &self,
        provider: Provider,
        contact: &Contact,
        external_id: &str,
        crm_ms: i64,
        crm_holds: &UniversalContact,
        synced: bool,
        link: Option<&crate::store::Link>,
    ) -> Result<(), JobError> {
        let version = if synced {
            contact.version
        } else {
            link.map_or(0, |l| l.synced_version)
        };
        match self
            .store
            .mark_inbound(contact, provider, external_id, version, crm_ms, crm_holds)
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(m)) => Err(JobError::permanent(m)),
            Err(StoreError::Other(e)) => Err(store_err(e)),
        }
    }
}
