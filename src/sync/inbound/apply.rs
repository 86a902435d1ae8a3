//! The steps of applying one CRM record: read the link and the contact,
//! drop a stale record, find the local side, then import a new person,
//! delete a contact whose record is gone, or merge field by field.

use workers::JobError;

use super::{norm, InboundSync};
use crate::crm::CrmRecord;
use crate::domain::{CustomerId, Email, Provider, UniversalContact};
use crate::store::{Contact, Outbox, StoreError};
use crate::sync::merge;
use crate::sync::policy::Applied;
use crate::sync::store_err;

impl InboundSync {
    /// Applies one CRM record (or its deletion), in steps: read the
    /// link and the contact, drop a stale record, find the local side,
    /// then import a new person, or merge into the contact.
    pub(super) async fn apply_held(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
        record: Option<CrmRecord>,
        job_id: &str,
    ) -> Result<Outcome, JobError> {
        let at = Target {
            customer,
            provider,
            external_id,
        };
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
            // deleted (or merged away) in the CRM
            gone => return self.apply_gone(&at, gone, link.as_ref(), linked).await,
        };
        if link.as_ref().is_some_and(|l| is_stale(&record, l)) {
            return Ok((Applied::Stale, linked, None));
        }
        let email = record
            .fields
            .primary_email
            .as_deref()
            .and_then(|e| Email::parse(e).ok());
        // the local side: the linked contact, or a live one with this email
        let contact = match linked {
            // deleted in the app; its deletion is on its way to the CRM
            Some(c) if c.deleted_at.is_some() => return Ok((Applied::Skipped, Some(c), None)),
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
        // the link of a contact met by email (the record's id is not on it)
        let own = match (&link, &contact) {
            (None, Some(c)) => self.store.link(c.id, provider).await.map_err(store_err)?,
            _ => None,
        };
        refuse_duplicate(&at, contact.as_ref(), own.as_ref())?;
        let Some(contact) = contact else {
            return self.import_new(&at, &record, email).await;
        };
        self.merge_record(
            &at,
            &record,
            email.is_none(),
            contact,
            (link.as_ref(), own.as_ref()),
            job_id,
        )
        .await
    }

    /// A record gone from the CRM: its linked live contact is deleted, and
    /// the deletion owed to the other CRMs.
    async fn apply_gone(
        &self,
        at: &Target<'_>,
        gone: Option<CrmRecord>,
        link: Option<&crate::store::Link>,
        linked: Option<Contact>,
    ) -> Result<Outcome, JobError> {
        let Some(contact) = linked.filter(|c| c.deleted_at.is_none()) else {
            return Ok((Applied::Skipped, None, None));
        };
        let crm_ms = gone.map_or(0, |r| r.updated_ms);
        let owed = self.owed(at.customer, at.provider, false).await?;
        let deleted = self
            .store
            .delete_contact(contact.id, Outbox::owed(&owed).as_ref())
            .await
            .map_err(store_err)?
            .ok_or_else(|| JobError::transient("contact vanished while deleting"))?;
        let holds = UniversalContact::from(&deleted);
        self.mark(
            at.provider,
            &deleted,
            at.external_id,
            crm_ms,
            &holds,
            true,
            link,
        )
        .await?;
        self.push_owed(&deleted, &owed).await?;
        Ok((Applied::Deleted, Some(deleted), None))
    }

    /// A person the app does not know: a new contact, unless the record is
    /// what a since-deleted contact's push left.
    async fn import_new(
        &self,
        at: &Target<'_>,
        record: &CrmRecord,
        email: Option<Email>,
    ) -> Result<Outcome, JobError> {
        let Some(email) = email else {
            tracing::warn!("CRM record has no usable email; not imported");
            return Ok((Applied::Skipped, None, None));
        };
        // A record a since-deleted contact's push created (its answer was
        // lost, so no link records it) is not a new person: that
        // contact's deletion is on its way to remove it.
        let orphaned = self
            .store
            .unrecorded_create(at.customer, at.provider, &email)
            .await
            .map_err(store_err)?
            .is_some_and(|l| {
                l.external_id.is_none() && l.intent_matching(&record.fields).is_some()
            });
        if orphaned {
            tracing::info!("the record of a deleted contact's unrecorded push; not imported");
            return Ok((Applied::Skipped, None, None));
        }
        let owed = self.owed(at.customer, at.provider, false).await?;
        let created = self.create(at.customer, record, email, &owed).await?;
        let holds = merge::apply(&record.fields, &Vec::new());
        self.mark(
            at.provider,
            &created,
            at.external_id,
            record.updated_ms,
            &holds,
            true,
            None,
        )
        .await?;
        self.push_owed(&created, &owed).await?;
        Ok((Applied::Created, Some(created), None))
    }

    /// Merges a record into its contact field by field, against what both
    /// held at the last sync: `(link, own)` are the record's link, or, for
    /// a contact met by email, the contact's own link, whose push intent is
    /// the base when the record is what an unrecorded push of ours created.
    async fn merge_record(
        &self,
        at: &Target<'_>,
        record: &CrmRecord,
        no_email: bool,
        contact: Contact,
        (link, own): (Option<&crate::store::Link>, Option<&crate::store::Link>),
        job_id: &str,
    ) -> Result<Outcome, JobError> {
        let mut crm_fields = record.fields.clone();
        if no_email {
            // a CRM record without a usable email never changes the app's
            crm_fields.primary_email = Some(contact.email.as_str().to_owned());
        }
        let base = match (link, own) {
            (Some(l), _) => l.merge_base(&crm_fields),
            // what an unrecorded push of ours wrote is the base, so a later
            // edit in the app is not taken back by the record's echo
            (None, Some(l)) => l.intent_matching(&crm_fields),
            (None, None) => None,
        };
        let winner = self.policy.winner(record.updated_ms, &contact);
        let plan = merge::merge(base, &UniversalContact::from(&contact), &crm_fields, winner);
        // what the CRM holds now: the base the next push diffs against
        let crm_holds = merge::apply(&crm_fields, &Vec::new());
        let note = plan.note(self.policy.name(), at.provider.as_str());
        let synced = plan.to_crm.is_empty();
        if plan.to_app.is_empty() {
            self.keep_app_values(at, &contact, record.updated_ms, &crm_holds, synced, link)
                .await?;
            if synced {
                return Ok((Applied::Unchanged, Some(contact), None));
            }
            let applied = match plan.conflicts.is_empty() {
                true => Applied::Unchanged,
                false => Applied::Kept,
            };
            return Ok((applied, Some(contact), note));
        }
        let updated = self
            .take_crm_values(at, record, &contact, &plan, &crm_holds, link)
            .await?;
        tracing::debug!(
            job_id,
            to_app = plan.to_app.len(),
            to_crm = plan.to_crm.len(),
            "applied CRM values"
        );
        Ok((Applied::Updated, Some(updated), note))
    }

    /// Writes into the contact the CRM values the merge took, at the
    /// version merged (a contact changed meanwhile is merged again by the
    /// retry), then marks the link and queues what the other CRMs owe.
    async fn take_crm_values(
        &self,
        at: &Target<'_>,
        record: &CrmRecord,
        contact: &Contact,
        plan: &merge::Merge,
        crm_holds: &UniversalContact,
        link: Option<&crate::store::Link>,
    ) -> Result<Contact, JobError> {
        let synced = plan.to_crm.is_empty();
        let owed = self.owed(at.customer, at.provider, !synced).await?;
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
            at.provider,
            &updated,
            at.external_id,
            record.updated_ms,
            crm_holds,
            synced,
            link,
        )
        .await?;
        self.push_owed(&updated, &owed).await?;
        Ok(updated)
    }

    /// Nothing changes locally (our own push coming back, a change applied
    /// already, or one the app's values win): the link is marked, and the
    /// app's values this CRM lacks (`synced` false) are made sure to get
    /// there.
    async fn keep_app_values(
        &self,
        at: &Target<'_>,
        contact: &Contact,
        crm_ms: i64,
        crm_holds: &UniversalContact,
        synced: bool,
        link: Option<&crate::store::Link>,
    ) -> Result<(), JobError> {
        self.mark(
            at.provider,
            contact,
            at.external_id,
            crm_ms,
            crm_holds,
            synced,
            link,
        )
        .await?;
        if synced {
            self.ensure_others(contact, at.provider).await
        } else {
            let all = self.connected(contact).await?;
            self.ensure(contact, &all).await
        }
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

/// What applying a record did, the contact it met, and the merge's
/// conflict note.
pub(super) type Outcome = (Applied, Option<Contact>, Option<String>);

/// The CRM record a change is applied from.
struct Target<'a> {
    customer: &'a CustomerId,
    provider: Provider,
    external_id: &'a str,
}

/// Whether the record is older than what the link has seen: changed no
/// later than the change last applied, or read before the app's latest
/// push landed (that push replaced it, and a CRM change made since has
/// its own, newer event).
fn is_stale(record: &CrmRecord, link: &crate::store::Link) -> bool {
    (record.updated_ms > 0 && record.updated_ms <= link.crm_updated_ms)
        || link
            .last_pushed_at
            .is_some_and(|t| record.fetched_ms < t.timestamp_millis())
}

/// A second CRM record with the email of a contact already linked to
/// another one (a duplicate in the CRM): linking it would steal the link,
/// merging it would mix two people. Refused, so the caller logs it and
/// moves on.
fn refuse_duplicate(
    at: &Target<'_>,
    contact: Option<&Contact>,
    own: Option<&crate::store::Link>,
) -> Result<(), JobError> {
    let other = own
        .and_then(|l| l.external_id.as_deref())
        .filter(|x| *x != at.external_id);
    match (other, contact) {
        (Some(other), Some(c)) => Err(JobError::permanent(format!(
            "{p} record {x} has the email of contact {c}, which is linked to {p} record {other}; not applied",
            p = at.provider,
            x = at.external_id,
            c = c.id
        ))),
        _ => Ok(()),
    }
}
