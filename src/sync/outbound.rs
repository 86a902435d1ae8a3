//! `outbound-upsert`: push the current state of one contact to one CRM.

mod first_sync;

pub use first_sync::FirstSyncWrites;

use bson::DateTime;
use std::sync::Arc;
use std::time::Duration;

use workers::{JobError, Queue};

use super::inbound::InboundSync;
use super::merge::{self, Merge};
use super::policy::ConflictPolicy;
use super::{queue_err, store_err};
use crate::crm::CrmRecord;
use crate::crm::{IntegrationApp, Updated};
use crate::domain::UniversalContact;
use crate::domain::{ContactId, CustomerId, Provider, SyncStatus};
use crate::store::{Contact, Direction, Link, Store, StoreError, SyncLog};

/// How long a push waits before it looks again for a record whose email
/// another contact's pending push is taking away.
const EMAIL_MOVE_WAIT: Duration = Duration::from_secs(1);

/// How many times a push merges again because the contact changed while
/// it was being merged, before it gives the attempt up.
const MERGE_ROUNDS: usize = 5;

/// Where a push writes, and what.
struct Target {
    /// The CRM record (the linked one, or one found by email); `None`:
    /// there is none, create it.
    ext: Option<String>,
    /// What each side takes.
    plan: Merge,
}

/// The lease pushes and inbound changes of one link take turns on.
pub fn link_lease_name(contact: ContactId, provider: Provider) -> String {
    format!("link:{contact}:{provider}")
}

/// How long a job holds a lease without renewing it; a crashed holder
/// frees it within this long.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How long a job waits for another job holding the same lease.
const LEASE_WAIT: Duration = Duration::from_secs(15);

/// Runs `work` holding the pool-wide lease `name`, waiting for its holder,
/// and frees the lease after (a lease that cannot be freed expires by
/// itself). When the lease stays busy the job is retried a second later
/// (`busy` says why).
///
/// # Errors
/// Unavailable when Redis fails; throttled when the lease stays busy; else
/// whatever `work` returns.
pub async fn with_lease<T>(
    leases: &Queue,
    name: &str,
    busy: &'static str,
    work: impl std::future::Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    let lease = leases
        .lease(name, LEASE_TTL, LEASE_WAIT)
        .await
        .map_err(super::queue_err)?
        .ok_or_else(|| JobError::throttled(busy, Some(Duration::from_secs(1))))?;
    let res = work.await;
    if let Err(e) = lease.release().await {
        tracing::warn!(lease = name, error = %e, "releasing a lease failed; it expires by itself");
    }
    res
}

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

    /// Pushes one live contact: reads the CRM side, merges field by field,
    /// writes each side only what it lacks. Returns `false` when the contact
    /// changed meanwhile and the merge has to be done again.
    async fn push_merged(
        &self,
        contact: &Contact,
        provider: Provider,
        link: Option<&Link>,
        job_id: &str,
        attempt: u32,
    ) -> Result<bool, JobError> {
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
                            return Ok(true);
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

        let Target { ext, plan } = target;

        // The app takes the CRM's values first: if the contact moved on
        // meanwhile, nothing has been written anywhere and the merge is
        // done again.
        let contact = if plan.to_app.is_empty() {
            contact.clone()
        } else {
            // the pushes on to the other CRMs go with the write (its
            // outbox), so a worker dying right after it loses none
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
                    updated
                }
                Ok(None) => return Ok(false),
                Err(StoreError::Conflict(m)) => return Err(JobError::permanent(m)),
                Err(StoreError::Other(e)) => return Err(store_err(e)),
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
        let (ext, outcome) = match ext {
            // No record has the email (find-contact said so): create one.
            // Integration.app's find-or-create would not update a record
            // that appeared meanwhile; a create does not hide it: HubSpot
            // refuses the duplicate (409, retried: the retry finds the
            // record and merges), Pipedrive keeps both.
            None => {
                let id = self
                    .crm
                    .create_contact(
                        &contact.customer_id,
                        provider,
                        &merge::fields_json(&plan.to_crm),
                    )
                    .await?;
                (id, "created")
            }
            Some(ext) => {
                let first = link.and_then(|l| l.external_id.as_deref()) != Some(ext.as_str());
                if !plan.to_crm.is_empty() {
                    let fields = merge::fields_json(&plan.to_crm);
                    let updated = self
                        .crm
                        .update_contact(&contact.customer_id, provider, &ext, &fields)
                        .await?;
                    // deleted in the CRM since it was read: do it again
                    if updated == Updated::Gone {
                        return Ok(false);
                    }
                }
                let outcome = match (first, plan.to_crm.is_empty()) {
                    (true, _) => "linked",
                    (false, false) => "updated",
                    (false, true) if plan.to_app.is_empty() => "unchanged",
                    (false, true) => "merged",
                };
                (ext, outcome)
            }
        };
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
            &contact,
            provider,
            &ext,
            job_id,
            Some(&plan.result),
            pushed_ms,
        )
        .await?;
        let note = plan.note(self.policy().name(), provider.as_str());
        self.log(
            &contact,
            provider,
            Some(ext),
            outcome,
            job_id,
            attempt,
            note,
        )
        .await?;
        tracing::info!(
            outcome,
            version = contact.version,
            to_crm = plan.to_crm.len(),
            to_app = plan.to_app.len(),
            "pushed"
        );
        Ok(true)
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
    async fn find_by_email(
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
