//! The write step of a customer's first sync with a CRM. The listings that
//! ran first (`InboundSync::poll`, a full scan of each connection being
//! first-synced) imported the CRMs' records, linked every app contact
//! whose email a CRM has, and held the pushes to the connections being
//! first-synced. What is left for a connection is:
//!
//! - the app's contacts it has never seen: created in batches where the
//!   CRM takes them (HubSpot: 100 a call), with the same intent, link and
//!   log as a single push's create;
//! - the linked records that lack values the app holds (a first link
//!   fills gaps both ways): read and updated in batches (HubSpot: 100 a
//!   call each), merged exactly as a single push merges;
//! - anything else (an input the CRM refused, a record changed in the CRM
//!   meanwhile, a CRM without batch writes): single pushes, which read the
//!   CRM first.
//!
//! The step is planned from MongoDB (no CRM call per contact), then
//! written, in slices that each plan again; once it is done, a last pass
//! a few seconds later hands to single pushes what was held at its very
//! end (a change applied while the connection still held pushes).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use workers::{JobError, Lease};

use super::Outbound;
use crate::crm::{CrmError, Updated, BATCH_MAX};
use crate::domain::{ContactId, CustomerId, Provider, SyncStatus, UniversalContact};
use crate::store::{Contact, FirstSyncCount, Link};
use crate::sync::link_lease_name;
use crate::sync::merge;
use crate::sync::{each, queue_err, store_err, PushQueue};

/// Contacts read from MongoDB a page at a time.
const PAGE: i64 = 1000;

/// Records of a batch written down at once (MongoDB writes of different
/// contacts; a batch call every 100 ms at HubSpot's rate leaves no time
/// to write 300 of them one after another).
const WRITES_AT_ONCE: usize = 16;

/// Single CRM calls of a write step made at once: the connection's rate
/// budget paces them; with each call's MongoDB writes around it, 4 in
/// flight made 7.7 calls/s of Pipedrive's 10 at 20,000 contacts, so
/// enough are in flight to keep the budget busy.
const CALLS_AT_ONCE: usize = 16;

/// The last pass runs this long after the write step is done: a change
/// applied under a hold read up to 2 s before (the customers cache) has
/// been written by then.
const LAST_PASS_AFTER: Duration = Duration::from_secs(5);

/// A batch holds its contacts' link leases this long after its worker
/// dies (as a push's lease).
const BATCH_LEASE_TTL: Duration = Duration::from_secs(10);

/// Whose first sync is written, where, and how its single pushes go.
pub struct FirstSyncWrites<'a> {
    /// The customer.
    pub customer: &'a CustomerId,
    /// The connection written to.
    pub provider: Provider,
    /// Queues the single pushes.
    pub pushes: &'a dyn PushQueue,
    /// The job writing (named in links and logs).
    pub job_id: &'a str,
    /// A backlog of pushes gathered (no listing ran): the contacts whose
    /// push waits in the queue are written too, under their link leases,
    /// and each push then finds its link synced.
    pub gather: bool,
}

/// What a connection lacks, from MongoDB.
#[derive(Debug, Default)]
struct Plan {
    /// Contacts no record of the CRM is linked to and no push was queued
    /// for.
    creates: Vec<ContactId>,
    /// Contacts whose linked record lacks values the app holds.
    updates: Vec<ContactId>,
    /// Contacts whose queued push ended (no longer live) without syncing
    /// them: a single push again, which looks the CRM up first.
    singles: Vec<ContactId>,
}

impl Plan {
    fn len(&self) -> usize {
        self.creates.len() + self.updates.len() + self.singles.len()
    }
}

impl Outbound {
    /// Writes to `w.provider` what the customer's first sync found it
    /// lacks (see the module docs).
    ///
    /// # Errors
    /// Transient for store and network trouble; a retry plans again from
    /// what was recorded, and an input created by a lost batch is refused
    /// as a duplicate and linked by its single push.
    pub async fn write_first_sync(
        &self,
        w: &FirstSyncWrites<'_>,
        budget: Duration,
    ) -> Result<bool, JobError> {
        let began = Instant::now();
        let plan = self.plan_writes(w).await?;
        let so_far = self.written_so_far(w).await?;
        self.store
            .plan_first_sync(w.customer, w.provider, so_far + plan.len() as i64)
            .await
            .map_err(store_err)?;
        self.push_singly(w, &plan.singles).await?;
        let batches = w.provider == Provider::Hubspot;
        let mut chunks: Vec<(bool, &[ContactId])> = Vec::new();
        chunks.extend(plan.creates.chunks(BATCH_MAX).map(|c| (true, c)));
        chunks.extend(plan.updates.chunks(BATCH_MAX).map(|c| (false, c)));
        for (i, &(create, chunk)) in chunks.iter().enumerate() {
            match (create, batches) {
                (true, true) => self.create_batch(w, chunk).await?,
                (true, false) => self.create_one_by_one(w, chunk).await?,
                (false, _) => self.update_batch(w, chunk).await?,
            }
            // at least a chunk a slice, so every slice moves on
            if began.elapsed() >= budget && i + 1 < chunks.len() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes made by the slices of this step before this one.
    async fn written_so_far(&self, w: &FirstSyncWrites<'_>) -> Result<i64, JobError> {
        let cursor = self
            .store
            .cursor(w.customer, w.provider)
            .await
            .map_err(store_err)?;
        Ok(cursor.first_sync.map_or(0, |f| f.written() + f.errors))
    }

    /// Once the write step is done and the connection no longer holds
    /// pushes, and a few seconds on (longer than a cached hold is read),
    /// hands to single pushes what the step left behind: a change held
    /// while its last slice wrote, or imported as it began.
    ///
    /// # Errors
    /// Transient for store and Redis trouble.
    pub async fn last_pass(&self, w: &FirstSyncWrites<'_>) -> Result<(), JobError> {
        tokio::time::sleep(LAST_PASS_AFTER).await;
        let late = self.plan_writes(w).await?;
        if late.creates.len() + late.updates.len() == 0 {
            return Ok(());
        }
        tracing::info!(
            contacts = late.creates.len() + late.updates.len(),
            "first sync: contacts held at the end of the write step go to single pushes"
        );
        let so_far = self.written_so_far(w).await?;
        let planned = so_far + (late.creates.len() + late.updates.len()) as i64;
        self.store
            .plan_first_sync(w.customer, w.provider, planned)
            .await
            .map_err(store_err)?;
        // not `late.singles`: a push that has just ended is still marking
        // its link (a dead one `error`), and it is no contact of this pass's
        let all: Vec<ContactId> = [late.creates, late.updates].concat();
        self.push_singly(w, &all).await
    }

    /// Walks the customer's contacts and their links to `w.provider`.
    async fn plan_writes(&self, w: &FirstSyncWrites<'_>) -> Result<Plan, JobError> {
        let mut plan = Plan::default();
        let mut after = None;
        loop {
            let page = self
                .store
                .contacts_after(w.customer, after, PAGE)
                .await
                .map_err(store_err)?;
            let Some(last) = page.last() else {
                return Ok(plan);
            };
            after = Some(last.id);
            let ids: Vec<ContactId> = page.iter().map(|c| c.id).collect();
            let links = self.store.links_of(&ids).await.map_err(store_err)?;
            for c in &page {
                let link = links
                    .iter()
                    .find(|l| l.contact_id == c.id && l.provider == w.provider);
                self.classify(w, c, link, &mut plan).await?;
            }
        }
    }

    /// Puts one contact in its place in the plan (or none: synced, in
    /// `error` for an operator, or with a live push on its way).
    async fn classify(
        &self,
        w: &FirstSyncWrites<'_>,
        c: &Contact,
        link: Option<&Link>,
        plan: &mut Plan,
    ) -> Result<(), JobError> {
        let Some(l) = link else {
            plan.creates.push(c.id);
            return Ok(());
        };
        if l.sync_status == SyncStatus::Error || l.synced_version >= c.version {
            return Ok(());
        }
        if w.gather && l.pending_job_id.is_some() {
            match l.external_id {
                None => plan.creates.push(c.id),
                Some(_) => plan.updates.push(c.id),
            }
            return Ok(());
        }
        // a push queued for it is on its way
        let live = match &l.pending_job_id {
            Some(job) if l.pending_version > 0 => w.pushes.is_live(job).await.map_err(queue_err)?,
            _ => false,
        };
        match (&l.external_id, &l.pending_job_id, live) {
            (_, _, true) => {}
            // a create of this step's was on its way when its job stopped
            // (its answer lost): a single push looks the email up first
            (None, None, _) if l.push_intent.is_some() => plan.singles.push(c.id),
            // never queued: held for this step, or written by an earlier
            // run of it (a create it lost is refused as a duplicate, and
            // linked by the single push that follows)
            (None, None, _) => plan.creates.push(c.id),
            (Some(_), None, _) => plan.updates.push(c.id),
            // a push ran and ended without syncing it
            (_, Some(_), _) => plan.singles.push(c.id),
        }
        Ok(())
    }

    /// Hands contacts to single pushes.
    async fn push_singly(
        &self,
        w: &FirstSyncWrites<'_>,
        ids: &[ContactId],
    ) -> Result<(), JobError> {
        if ids.is_empty() {
            return Ok(());
        }
        let contacts = self.contacts(w.customer, ids).await?;
        for c in &contacts {
            w.pushes
                .push_singly(&self.store, c.id, w.customer, &[w.provider], c.version)
                .await
                .map_err(queue_err)?;
        }
        self.count(w, FirstSyncCount::Pushed, contacts.len()).await
    }

    /// The live contacts among `ids`, as they are now.
    async fn contacts(
        &self,
        customer: &CustomerId,
        ids: &[ContactId],
    ) -> Result<Vec<Contact>, JobError> {
        self.store
            .contacts_among(customer, ids)
            .await
            .map_err(store_err)
    }

    async fn count(
        &self,
        w: &FirstSyncWrites<'_>,
        what: FirstSyncCount,
        n: usize,
    ) -> Result<(), JobError> {
        self.store
            .count_first_sync(w.customer, w.provider, what, n as i64)
            .await
            .map_err(store_err)
    }

    /// Creates up to [`BATCH_MAX`] contacts in one call; the ones it did
    /// not create go to single pushes. A gather's contacts have pushes of
    /// their own waiting: each is created under its link lease, so no
    /// push of it runs meanwhile, and one a push holds is left to it.
    async fn create_batch(
        &self,
        w: &FirstSyncWrites<'_>,
        ids: &[ContactId],
    ) -> Result<(), JobError> {
        let chunk = self.contacts(w.customer, ids).await?;
        if !w.gather {
            return self.create_chunk(w, chunk).await;
        }
        let (mine, leases) = self.lease_unlinked(w, chunk).await?;
        let created = self.create_chunk(w, mine).await;
        for lease in leases {
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "releasing a link lease failed; it expires by itself");
            }
        }
        created
    }

    /// The contacts of `chunk` still without a record linked in the CRM,
    /// each with its link's lease taken (one a push holds is left out: its
    /// push is on its way).
    async fn lease_unlinked(
        &self,
        w: &FirstSyncWrites<'_>,
        chunk: Vec<Contact>,
    ) -> Result<(Vec<Contact>, Vec<Lease>), JobError> {
        let ids: Vec<ContactId> = chunk.iter().map(|c| c.id).collect();
        let links = self.store.links_of(&ids).await.map_err(store_err)?;
        let (mut mine, mut leases) = (Vec::new(), Vec::new());
        for c in chunk {
            let linked = links.iter().any(|l| {
                l.contact_id == c.id && l.provider == w.provider && l.external_id.is_some()
            });
            if linked {
                continue;
            }
            let name = link_lease_name(c.id, w.provider);
            if let Some(lease) = self
                .leases
                .lease(&name, BATCH_LEASE_TTL, Duration::ZERO)
                .await
                .map_err(queue_err)?
            {
                leases.push(lease);
                mine.push(c);
            }
        }
        Ok((mine, leases))
    }

    /// Creates `chunk` (up to [`BATCH_MAX`] contacts) in one call; the
    /// ones it did not create go to single pushes.
    async fn create_chunk(
        &self,
        w: &FirstSyncWrites<'_>,
        chunk: Vec<Contact>,
    ) -> Result<(), JobError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let ids: Vec<ContactId> = chunk.iter().map(|c| c.id).collect();
        let ids = ids.as_slice();
        let provider = w.provider;
        let plans: Vec<merge::Merge> = chunk
            .iter()
            .map(|c| merge::created(&UniversalContact::from(c)))
            .collect();
        // written down before the CRM is, as a single push does: a create
        // that lands unrecorded is known as ours when found by email
        each(
            chunk.iter().zip(&plans),
            WRITES_AT_ONCE,
            |(c, plan)| async move {
                self.store
                    .record_push_intent(c.id, w.customer, provider, &plan.result)
                    .await
                    .map_err(store_err)
            },
        )
        .await?;
        let fields: Vec<_> = plans
            .iter()
            .map(|p| merge::fields_json(&p.to_crm))
            .collect();
        let done = match self
            .crm
            .batch_create_contacts(w.customer, provider, &fields)
            .await
        {
            Ok(done) => done,
            // refused whole (HubSpot's reference has one bad input fail
            // alone; its users report a 400 for the batch): each contact
            // goes to a single push, where a bad one fails alone
            Err(CrmError::Permanent(why)) => {
                tracing::warn!(%provider, reason = %why, "a batch create was refused whole; its contacts are pushed singly");
                self.count(w, FirstSyncCount::BatchCalls, 1).await?;
                return self.push_singly(w, ids).await;
            }
            Err(e) => return Err(e.into()),
        };
        self.count(w, FirstSyncCount::BatchCalls, 1).await?;
        let pushed_ms = Some(self.leases.server_ms().await.map_err(queue_err)?);
        let (mut left, mut made) = (Vec::new(), Vec::new());
        for (c, plan) in chunk.iter().zip(&plans) {
            match done.created.get(&c.email.as_str().to_lowercase()) {
                Some(ext) => made.push((c, ext.clone(), plan)),
                None => {
                    if let Some(why) = done.refused.get(&c.email.as_str().to_lowercase()) {
                        tracing::info!(contact = %c.id, %provider, reason = %why, "a batch create was refused; pushed singly");
                    }
                    left.push(c.id);
                }
            }
        }
        let created = made.len();
        each(made, WRITES_AT_ONCE, |(c, ext, plan)| async move {
            self.record_synced(c, provider, &ext, w.job_id, Some(&plan.result), pushed_ms)
                .await?;
            let note = plan.note(self.policy().name(), provider.as_str());
            self.log(c, provider, Some(ext), "created", w.job_id, 1, note)
                .await
        })
        .await?;
        self.count(w, FirstSyncCount::BatchCreated, created).await?;
        self.push_singly(w, &left).await
    }

    /// Reads and updates up to [`BATCH_MAX`] linked records in one call
    /// each, holding their links' leases as a push does; a record changed
    /// in the CRM since it was listed (its values go into the app first),
    /// gone, or refused goes to a single push.
    async fn update_batch(
        &self,
        w: &FirstSyncWrites<'_>,
        ids: &[ContactId],
    ) -> Result<(), JobError> {
        let (held, leases, mut single) = self.lease_behind(w, ids).await?;
        let written = self.read_merge_update(w, &held, &mut single).await;
        for lease in leases {
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "releasing a link lease failed; it expires by itself");
            }
        }
        let written = written?;
        let counter = match w.provider {
            Provider::Hubspot => FirstSyncCount::BatchUpdated,
            Provider::Pipedrive => FirstSyncCount::Updated,
        };
        self.count(w, counter, written).await?;
        self.push_singly(w, &single).await
    }

    /// The contacts of `ids` still behind their linked record, each with
    /// its link and its lease taken; and the ones whose lease another job
    /// holds (a push or an inbound change: a single push follows them).
    #[allow(clippy::type_complexity)]
    async fn lease_behind(
        &self,
        w: &FirstSyncWrites<'_>,
        ids: &[ContactId],
    ) -> Result<(Vec<(Contact, Link)>, Vec<Lease>, Vec<ContactId>), JobError> {
        let contacts = self.contacts(w.customer, ids).await?;
        let links = self.store.links_of(ids).await.map_err(store_err)?;
        let (mut held, mut leases, mut busy) = (Vec::new(), Vec::new(), Vec::new());
        for c in contacts {
            let Some(link) = links.iter().find(|l| {
                l.contact_id == c.id && l.provider == w.provider && l.external_id.is_some()
            }) else {
                continue;
            };
            if link.synced_version >= c.version {
                continue;
            }
            let name = link_lease_name(c.id, w.provider);
            match self
                .leases
                .lease(&name, BATCH_LEASE_TTL, Duration::ZERO)
                .await
                .map_err(queue_err)?
            {
                Some(lease) => {
                    leases.push(lease);
                    held.push((c, link.clone()));
                }
                None => busy.push(c.id),
            }
        }
        Ok((held, leases, busy))
    }

    /// The batch read, merge and update of leased contacts; returns how
    /// many were written, and adds to `single` the ones left to single
    /// pushes.
    async fn read_merge_update(
        &self,
        w: &FirstSyncWrites<'_>,
        held: &[(Contact, Link)],
        single: &mut Vec<ContactId>,
    ) -> Result<usize, JobError> {
        if held.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<(&str, &str)> = held
            .iter()
            .map(|(c, l)| {
                (
                    c.email.as_str(),
                    l.external_id.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let records = self
            .crm
            .batch_read_contacts(w.customer, w.provider, &wanted)
            .await?;
        self.count(w, FirstSyncCount::BatchCalls, 1).await?;
        let mut writes = Vec::new();
        for (c, link) in held {
            let ext = link.external_id.clone().unwrap_or_default();
            let Some(record) = records.iter().find(|r| r.id == ext && !r.deleted) else {
                single.push(c.id);
                continue;
            };
            // merged as a single push merges a linked record it read
            let base = link.merge_base(&record.fields);
            let winner = self.policy().winner(record.updated_ms, c);
            let plan = merge::merge(base, &UniversalContact::from(c), &record.fields, winner);
            if !plan.to_app.is_empty() || plan.to_crm.is_empty() {
                single.push(c.id);
                continue;
            }
            writes.push((c, ext, plan));
        }
        if writes.is_empty() {
            return Ok(0);
        }
        each(&writes, WRITES_AT_ONCE, |(c, _, plan)| async move {
            self.store
                .record_push_intent(c.id, w.customer, w.provider, &plan.result)
                .await
                .map_err(store_err)
        })
        .await?;
        let updated = match w.provider {
            Provider::Hubspot => self.update_in_one_call(w, &writes).await?,
            Provider::Pipedrive => self.update_one_by_one(w, &writes).await?,
        };
        let Some(done) = updated else {
            single.extend(writes.iter().map(|(c, _, _)| c.id));
            return Ok(0);
        };
        let pushed_ms = Some(self.leases.server_ms().await.map_err(queue_err)?);
        let (landed, refused): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .partition(|(_, ext, _)| done.contains(ext));
        single.extend(refused.iter().map(|(c, _, _)| c.id));
        let written = landed.len();
        each(landed, WRITES_AT_ONCE, |(c, ext, plan)| async move {
            self.record_synced(c, w.provider, &ext, w.job_id, Some(&plan.result), pushed_ms)
                .await?;
            let note = plan.note(self.policy().name(), w.provider.as_str());
            self.log(c, w.provider, Some(ext), "updated", w.job_id, 1, note)
                .await
        })
        .await?;
        Ok(written)
    }

    /// HubSpot: the updates in one batch call; the ids it updated, or
    /// `None` when it refused the batch whole.
    async fn update_in_one_call(
        &self,
        w: &FirstSyncWrites<'_>,
        writes: &[(&Contact, String, merge::Merge)],
    ) -> Result<Option<HashSet<String>>, JobError> {
        let updates: Vec<_> = writes
            .iter()
            .map(|(_, ext, plan)| (ext.clone(), merge::fields_json(&plan.to_crm)))
            .collect();
        let done = match self
            .crm
            .batch_update_contacts(w.customer, w.provider, &updates)
            .await
        {
            Ok(done) => done,
            Err(CrmError::Permanent(why)) => {
                tracing::warn!(provider = %w.provider, reason = %why, "a batch update was refused whole; its contacts are pushed singly");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        self.count(w, FirstSyncCount::BatchCalls, 1).await?;
        Ok(Some(done.updated))
    }

    /// A CRM without batch writes: one update a record, without the read a
    /// single push makes first (the batch read was it). A refused input
    /// is left out, for a single push.
    async fn update_one_by_one(
        &self,
        w: &FirstSyncWrites<'_>,
        writes: &[(&Contact, String, merge::Merge)],
    ) -> Result<Option<HashSet<String>>, JobError> {
        let done = each(writes, CALLS_AT_ONCE, |(_, ext, plan)| async move {
            let fields = merge::fields_json(&plan.to_crm);
            match self
                .crm
                .update_contact(w.customer, w.provider, ext, &fields)
                .await
            {
                Ok(Updated::Done) => Ok(Some(ext.clone())),
                Ok(Updated::Gone) | Err(CrmError::Permanent(_)) => Ok(None),
                Err(e) => Err(JobError::from(e)),
            }
        })
        .await?;
        Ok(Some(done.into_iter().flatten().collect()))
    }

    /// A CRM without batch writes: the app's contacts it lacks created one
    /// call each, without the look-up by email a single push makes first
    /// (the listing was it). Each link is read again first: a record
    /// linked since the plan (its CRM event was applied) is not created
    /// twice. A refused input goes to a single push.
    async fn create_one_by_one(
        &self,
        w: &FirstSyncWrites<'_>,
        ids: &[ContactId],
    ) -> Result<(), JobError> {
        let contacts = self.contacts(w.customer, ids).await?;
        let links = self.store.links_of(ids).await.map_err(store_err)?;
        let still: Vec<&Contact> = contacts
            .iter()
            .filter(|c| {
                !links.iter().any(|l| {
                    l.contact_id == c.id
                        && l.provider == w.provider
                        && (l.external_id.is_some() || l.pending_job_id.is_some())
                })
            })
            .collect();
        let made = each(still, CALLS_AT_ONCE, |c| async move {
            let plan = merge::created(&UniversalContact::from(c));
            self.store
                .record_push_intent(c.id, w.customer, w.provider, &plan.result)
                .await
                .map_err(store_err)?;
            let fields = merge::fields_json(&plan.to_crm);
            let ext = match self.crm.create_contact(w.customer, w.provider, &fields).await {
                Ok(ext) => ext,
                Err(CrmError::Permanent(why)) => {
                    tracing::info!(contact = %c.id, provider = %w.provider, reason = %why, "a create was refused; pushed singly");
                    return Ok(Err(c.id));
                }
                Err(e) => return Err(e.into()),
            };
            let pushed_ms = Some(self.leases.server_ms().await.map_err(queue_err)?);
            self.record_synced(c, w.provider, &ext, w.job_id, Some(&plan.result), pushed_ms)
                .await?;
            let note = plan.note(self.policy().name(), w.provider.as_str());
            self.log(c, w.provider, Some(ext), "created", w.job_id, 1, note)
                .await?;
            Ok(Ok(()))
        })
        .await?;
        let refused: Vec<ContactId> = made.iter().filter_map(|r| r.err()).collect();
        self.count(w, FirstSyncCount::Created, made.len() - refused.len())
            .await?;
        self.push_singly(w, &refused).await
    }
}
