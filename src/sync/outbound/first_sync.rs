//! The app's side of a customer's first sync with a CRM. The full listing
//! that runs first (`InboundSync::poll`, a full scan) imports the CRM's
//! records and links every app contact whose email the CRM has; what is
//! left are the app's contacts the CRM has never seen. Where the CRM takes
//! batches (HubSpot: 100 creates a call) they are created in batches,
//! with the same intent, link and log as a single push's create; the rest
//! (an input the CRM refused, a CRM without batch writes) go to single
//! pushes, which look the email up first.

use workers::JobError;

use super::Outbound;
use crate::crm::{CrmError, BATCH_MAX};
use crate::domain::{ContactId, CustomerId, Provider, UniversalContact};
use crate::store::{Contact, FirstSyncRecord};
use crate::sync::merge;
use crate::sync::{queue_err, store_err, PushQueue};

/// Contacts read from MongoDB a page at a time.
const PAGE: i64 = 1000;

impl Outbound {
    /// Creates in `provider` the customer's contacts that no record there
    /// is linked to, nor was ever pushed (see the module docs); returns
    /// what it did (`finished_at` left to the caller).
    ///
    /// # Errors
    /// Transient for store and network trouble; a retry finds the
    /// contacts still unlinked, and an input created by a lost batch is
    /// refused as a duplicate and linked by its single push.
    pub async fn create_unlinked(
        &self,
        customer: &CustomerId,
        provider: Provider,
        pushes: &dyn PushQueue,
        job_id: &str,
    ) -> Result<FirstSyncRecord, JobError> {
        let mut report = FirstSyncRecord::default();
        let mut skip = 0;
        loop {
            let (page, _) = self
                .store
                .list_contacts(Some(customer), None, skip, PAGE)
                .await
                .map_err(store_err)?;
            if page.is_empty() {
                return Ok(report);
            }
            skip += page.len() as u64;
            let unlinked = self.never_pushed(page, provider).await?;
            let mut single: Vec<&Contact> = Vec::new();
            if provider == Provider::Hubspot {
                for chunk in unlinked.chunks(BATCH_MAX) {
                    let left = self.create_batch(chunk, provider, job_id).await?;
                    report.batch_calls += 1;
                    report.batch_created += (chunk.len() - left.len()) as i64;
                    single.extend(chunk.iter().filter(|c| left.contains(&c.id)));
                }
            } else {
                single.extend(unlinked.iter());
            }
            for c in single {
                pushes
                    .push_contact(&self.store, c.id, customer, &[provider], c.version)
                    .await
                    .map_err(queue_err)?;
                report.pushed += 1;
            }
        }
    }

    /// The contacts of `page` with no record of `provider` linked and no
    /// push of theirs queued (a link at pending version 0 was written by
    /// an earlier run of this step only).
    async fn never_pushed(
        &self,
        page: Vec<Contact>,
        provider: Provider,
    ) -> Result<Vec<Contact>, JobError> {
        let ids: Vec<ContactId> = page.iter().map(|c| c.id).collect();
        let links = self.store.links_of(&ids).await.map_err(store_err)?;
        Ok(page
            .into_iter()
            .filter(|c| {
                !links.iter().any(|l| {
                    l.contact_id == c.id
                        && l.provider == provider
                        && (l.external_id.is_some() || l.pending_version > 0)
                })
            })
            .collect())
    }

    /// Creates up to [`BATCH_MAX`] contacts in one call; returns the ones
    /// it did not create.
    async fn create_batch(
        &self,
        chunk: &[Contact],
        provider: Provider,
        job_id: &str,
    ) -> Result<Vec<ContactId>, JobError> {
        let Some(customer) = chunk.first().map(|c| c.customer_id.clone()) else {
            return Ok(Vec::new());
        };
        let plans: Vec<merge::Merge> = chunk
            .iter()
            .map(|c| merge::created(&UniversalContact::from(c)))
            .collect();
        // written down before the CRM is, as a single push does: a create
        // that lands unrecorded is known as ours when found by email
        for (c, plan) in chunk.iter().zip(&plans) {
            self.store
                .record_push_intent(c.id, &customer, provider, &plan.result)
                .await
                .map_err(store_err)?;
        }
        let fields: Vec<_> = plans
            .iter()
            .map(|p| merge::fields_json(&p.to_crm))
            .collect();
        let done = match self
            .crm
            .batch_create_contacts(&customer, provider, &fields)
            .await
        {
            Ok(done) => done,
            // refused whole (HubSpot's reference has one bad input fail
            // alone; its users report a 400 for the batch): each contact
            // goes to a single push, where a bad one fails alone
            Err(CrmError::Permanent(why)) => {
                tracing::warn!(%provider, reason = %why, "a batch create was refused whole; its contacts are pushed singly");
                return Ok(chunk.iter().map(|c| c.id).collect());
            }
            Err(e) => return Err(e.into()),
        };
        let pushed_ms = Some(self.leases.server_ms().await.map_err(queue_err)?);
        let mut left = Vec::new();
        for (c, plan) in chunk.iter().zip(&plans) {
            let Some(ext) = done.created.get(&c.email.as_str().to_lowercase()) else {
                if let Some(why) = done.refused.get(&c.email.as_str().to_lowercase()) {
                    tracing::info!(contact = %c.id, %provider, reason = %why, "a batch create was refused; pushed singly");
                }
                left.push(c.id);
                continue;
            };
            self.record_synced(c, provider, ext, job_id, Some(&plan.result), pushed_ms)
                .await?;
            let note = plan.note(self.policy().name(), provider.as_str());
            self.log(c, provider, Some(ext.clone()), "created", job_id, 1, note)
                .await?;
        }
        Ok(left)
    }
}
