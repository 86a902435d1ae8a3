//! The steps of one push of a live contact: plan (read the CRM side,
//! merge field by field), take the CRM's values into the app, write down
//! the intent, write the CRM, record; and, for a contact with no usable
//! link, the CRM record found by its email.

use workers::JobError;

use super::{Outbound, EMAIL_MOVE_WAIT};
use crate::crm::{CrmRecord, Updated};
use crate::domain::{Provider, SyncStatus, UniversalContact};
use crate::store::{Contact, Link, StoreError};
use crate::sync::merge::{self, Merge};
use crate::sync::policy::ConflictPolicy;
use crate::sync::{queue_err, store_err};

/// A CRM write that landed: the record, the outcome, and the job.
struct Pushed<'a> {
    ext: String,
    outcome: &'static str,
    job_id: &'a str,
    attempt: u32,
}

/// Where a push writes, and what.
struct Target {
    /// The CRM record (the linked one, or one found by email); `None`:
    /// there is none, create it.
    ext: Option<String>,
    /// What each side takes.
    plan: Merge,
}

impl Outbound {
    /// Pushes one live contact, in steps: plan (read the CRM side, merge
    /// field by field), take the CRM's values into the app, write down the
    /// intent, write the CRM, record. Returns `false` when the contact
    /// changed meanwhile (or its record went) and the merge has to be done
    /// again.
    pub(super) async fn push_merged(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        job_id: &str,
        attempt: u32,
    ) -> Result<bool, JobError> {
        let Some(Target { ext, plan }) = self.plan_push(contact, provider, link, job_id).await?
        else {
            // the CRM record's deletion was applied instead
            return Ok(true);
        };
        // The app takes the CRM's values first: if the contact moved on
        // meanwhile, nothing has been written anywhere and the merge is
        // done again.
        let contact = if plan.to_app.is_empty() {
            contact.clone()
        } else {
            match self.take_into_app(contact, provider, &plan).await? {
                Some(updated) => updated,
                None => return Ok(false),
            }
        };
        let recorded = link.and_then(|l| l.push_intent.as_ref()) == Some(&plan.result);
        if !plan.to_crm.is_empty() && !recorded {
            // Written down before the CRM is, so a push that lands but is
            // not recorded (a crash, the database failing) is known as ours.
            // (A new contact's links hold it from the start: the api wrote
            // what creating the record would write.)
            self.store
                .record_push_intent(contact.id, &contact.customer_id, provider, &plan.result)
                .await
                .map_err(store_err)?;
        }
        let Some((ext, outcome)) = self.write_crm(&contact, provider, link, ext, &plan).await?
        else {
            // deleted in the CRM since it was read: do it again
            return Ok(false);
        };
        let pushed = Pushed {
            ext,
            outcome,
            job_id,
            attempt,
        };
        self.record_push(&contact, provider, link, &plan, pushed)
            .await?;
        Ok(true)
    }

    /// What a push writes where: the record it goes to (none: create one)
    /// and the merge. `None` when the CRM record turned out deleted and
    /// that deletion was applied to the app instead.
    async fn plan_push(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        job_id: &str,
    ) -> Result<Option<Target>, JobError> {
        let app = UniversalContact::from(contact);
        let known = link.and_then(|l| l.external_id.clone());
        let snapshot = link.and_then(|l| l.synced_fields.as_ref());
        let target = match (&known, snapshot) {
            // The app wins every conflict, so the CRM need not be read: only
            // what the app changed since the last sync is sent, and fields
            // changed in the CRM alone are left as they are.
            (Some(ext), Some(base)) if self.policy() == ConflictPolicy::AppWins => {
                let to_crm = merge::diff(base, &app);
                Target {
                    ext: Some(ext.clone()),
                    plan: Merge {
                        result: merge::apply(base, &to_crm),
                        to_crm,
                        ..Merge::default()
                    },
                }
            }
            (Some(ext), _) => match self.read(&contact.customer_id, provider, ext).await? {
                Some(record) if record.deleted => {
                    if self.policy() != ConflictPolicy::AppWins {
                        if let Some(inbound) = &self.inbound {
                            tracing::info!("the CRM record was deleted; applying that first");
                            inbound
                                .apply_during_push(
                                    &contact.customer_id,
                                    provider,
                                    ext,
                                    Some(record),
                                    job_id,
                                )
                                .await?;
                            return Ok(None);
                        }
                    }
                    self.first_link(contact, provider, link, &app).await?
                }
                Some(record) => {
                    let base = link.and_then(|l| l.merge_base(&record.fields));
                    let winner = self.policy().winner(record.updated_ms, contact);
                    Target {
                        ext: Some(ext.clone()),
                        plan: merge::merge(base, &app, &record.fields, winner),
                    }
                }
                // gone from the CRM: the app is the source here, so the
                // record is found again by email or created anew
                None => self.first_link(contact, provider, link, &app).await?,
            },
            (None, _) => self.first_link(contact, provider, link, &app).await?,
        };
        Ok(Some(target))
    }

    /// Writes the CRM values a push's merge took into the contact, at the
    /// version merged, with the pushes on to the other CRMs in its outbox
    /// (a worker dying right after loses none). `None`: the contact moved
    /// on meanwhile.
    async fn take_into_app(
        &self,
        contact: &Contact,
        provider: Provider,
        plan: &Merge,
    ) -> Result<Option<Contact>, JobError> {
        let owed = match &self.inbound {
            Some(inbound) => inbound.owed(&contact.customer_id, provider, false).await?,
            None => Vec::new(),
        };
        let patch = crate::store::ContactPatch {
            outbox: crate::store::Outbox::owed(&owed),
            ..merge::patch_of(&plan.to_app)
        };
        match self
            .store
            .update_contact_at(contact.id, Some(contact.version), &patch)
            .await
        {
            Ok(Some(updated)) => {
                if let Some(inbound) = &self.inbound {
                    inbound.push_owed(&updated, &owed).await?;
                }
                Ok(Some(updated))
            }
            Ok(None) => Ok(None),
            Err(StoreError::Conflict(m)) => Err(JobError::permanent(m)),
            Err(StoreError::Other(e)) => Err(store_err(e)),
        }
    }

    /// Writes the CRM: a create when no record has the email, else an
    /// update of what it lacks. The record written and the outcome; `None`
    /// when the record was deleted in the CRM since it was read.
    async fn write_crm(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        ext: Option<String>,
        plan: &Merge,
    ) -> Result<Option<(String, &'static str)>, JobError> {
        let Some(ext) = ext else {
            // No record has the email (find-contact said so): create one.
            // Integration.app's find-or-create would not update a record
            // that appeared meanwhile; a create does not hide it: HubSpot
            // refuses the duplicate (409, retried: the retry finds the
            // record and merges), Pipedrive keeps both.
            let id = self
                .crm
                .create_contact(
                    &contact.customer_id,
                    provider,
                    &merge::fields_json(&plan.to_crm),
                )
                .await?;
            return Ok(Some((id, "created")));
        };
        let first = link.and_then(|l| l.external_id.as_deref()) != Some(ext.as_str());
        if !plan.to_crm.is_empty() {
            let fields = merge::fields_json(&plan.to_crm);
            let updated = self
                .crm
                .update_contact(&contact.customer_id, provider, &ext, &fields)
                .await?;
            if updated == Updated::Gone {
                return Ok(None);
            }
        }
        let outcome = match (first, plan.to_crm.is_empty()) {
            (true, _) => "linked",
            (false, false) => "updated",
            (false, true) if plan.to_app.is_empty() => "unchanged",
            (false, true) => "merged",
        };
        Ok(Some((ext, outcome)))
    }

    /// Records a push that landed: the link (moved off a record gone from
    /// the CRM), its sync log entry.
    async fn record_push(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        plan: &Merge,
        pushed: Pushed<'_>,
    ) -> Result<(), JobError> {
        let Pushed {
            ext,
            outcome,
            job_id,
            attempt,
        } = pushed;
        // When the CRM write landed, on the clock every process shares: a
        // record read before this is older than the push.
        let pushed_ms = if plan.to_crm.is_empty() {
            None
        } else {
            Some(self.leases.server_ms().await.map_err(queue_err)?)
        };
        // the link moves to another record (its own was gone from the CRM)
        if let Some(old) = link
            .and_then(|l| l.external_id.as_deref())
            .filter(|old| *old != ext)
        {
            self.store
                .release_external_id(contact.id, provider, old)
                .await
                .map_err(store_err)?;
        }
        self.record_synced(
            contact,
            provider,
            &ext,
            job_id,
            Some(&plan.result),
            pushed_ms,
        )
        .await?;
        let note = plan.note(self.policy().name(), provider.as_str());
        self.log(contact, provider, Some(ext), outcome, job_id, attempt, note)
            .await?;
        tracing::info!(
            outcome,
            version = contact.version,
            to_crm = plan.to_crm.len(),
            to_app = plan.to_app.len(),
            "pushed"
        );
        Ok(())
    }

    /// The CRM side of a contact with no usable link: an existing record
    /// with its email (merged with, never overwritten blindly) or none.
    async fn first_link(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        app: &UniversalContact,
    ) -> Result<Target, JobError> {
        let Some(record) = self.find_by_email(contact, provider).await? else {
            return Ok(Target {
                ext: None,
                plan: merge::created(app),
            });
        };
        self.not_anothers(contact, provider, &record.id).await?;
        // Our own earlier push that was never recorded is a base, not a
        // stranger's record.
        let base = link.and_then(|l| l.intent_matching(&record.fields));
        let winner = self.policy().winner(record.updated_ms, contact);
        Ok(Target {
            ext: Some(record.id),
            plan: merge::merge(base, app, &record.fields, winner),
        })
    }

    /// The live CRM record with the contact's email (`find-contact`), if
    /// there is one.
    ///
    /// # Errors
    /// As any CRM call; permanent for a record that does not parse.
    pub(super) async fn find_by_email(
        &self,
        contact: &Contact,
        provider: Provider,
    ) -> Result<Option<CrmRecord>, JobError> {
        Ok(self
            .crm
            .find_contact(&contact.customer_id, provider, contact.email.as_str())
            .await?)
    }

    /// Refuses a record found by email that is linked to another contact:
    /// it is not this contact's, and merging would mix two people. The
    /// usual cause is an email that moved: that contact changed its email
    /// and gave the old one to this contact before its own push took the
    /// old address out of the CRM. While that push is pending this one
    /// waits for it (no attempt used) and looks again; else it fails.
    ///
    /// # Errors
    /// Deferred while the other contact's push is pending; permanent when
    /// it is not.
    async fn not_anothers(
        &self,
        contact: &Contact,
        provider: Provider,
        record: &str,
    ) -> Result<(), JobError> {
        let Some(other) = self
            .store
            .link_by_external(&contact.customer_id, provider, record)
            .await
            .map_err(store_err)?
            .filter(|l| l.contact_id != contact.id)
        else {
            return Ok(());
        };
        let email = contact.email.as_str();
        if other.sync_status == SyncStatus::Pending {
            return Err(JobError::deferred(
                format!(
                    "{provider} record {record} has the email {email} but is contact {}'s, whose push is pending; waiting for it to take the email away",
                    other.contact_id
                ),
                EMAIL_MOVE_WAIT,
            ));
        }
        Err(JobError::permanent(format!(
            "{provider} record {record} has the email {email} but is linked to contact {} ({}); not merged",
            other.contact_id,
            other.sync_status.as_str()
        )))
    }
}
