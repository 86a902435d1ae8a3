//! Where a connection's first sync stands, kept on its poll cursor: its
//! phase (which the other connections of the customer wait on) and its
//! progress counters (which the api, the console and `/metrics` show).

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::ids::cursor_id;
use super::Store;
use crate::domain::{CustomerId, Provider};

/// How long a first sync may hold pushes to its connection: longer than a
/// first sync takes (Pipedrive's 30,000 writes for 20,000 contacts are 50
/// minutes at its floor), so that a hold never lapses mid-way at the sizes
/// measured; a first sync whose job was lost is queued again by the
/// scheduler's watchdog long before (`FIRST_SYNC_STALL_SECS`). A hold
/// that lapses lets pushes flow singly again: slower, never wrong.
pub const HOLD_MAX: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// A gather that has not moved on (a batch, a slice) for this long is
/// taken for lost: the pushes it made wait go on by themselves.
pub const GATHER_QUIET: std::time::Duration = std::time::Duration::from_secs(60);

/// The steps of a first sync, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstSyncPhase {
    /// Listing the CRM's records (the list is the import). The pushes that
    /// changes from the CRMs set off to the connection are held: its write
    /// step creates and updates in batches what the listings of every
    /// connection brought in.
    Listing,
    /// Listed; waits for the customer's other connections still listing.
    /// Pushes to it are still held.
    Waiting,
    /// Writing to the CRM what it lacks, in slices; pushes are held still
    /// (each slice plans again from what changed, and a last pass after
    /// the step takes what was held at its end).
    Writing,
    /// Finished.
    Done,
    /// Gave up (its job died); pushes to the connection are no longer held.
    Failed,
}

impl FirstSyncPhase {
    /// Whether it is still to finish (pushes to the connection are held
    /// meanwhile, see [`Store::held_providers`]).
    #[must_use]
    pub fn underway(self) -> bool {
        matches!(self, Self::Listing | Self::Waiting | Self::Writing)
    }
}

/// A connection's last first sync: where it stands and what it did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstSyncRecord {
    /// Its step (none on a record written before first syncs had steps:
    /// finished).
    #[serde(default)]
    pub phase: Option<FirstSyncPhase>,
    /// When it was asked for.
    #[serde(default)]
    pub started_at: Option<DateTime>,
    /// When its write step finished.
    pub finished_at: Option<DateTime>,
    /// When it last moved on: a step, a counter, a plan, or the watchdog
    /// queueing it again (none on a record written before: its start).
    #[serde(default)]
    pub touched_at: Option<DateTime>,
    /// CRM records listed.
    #[serde(default)]
    pub listed: i64,
    /// Listed records that met an app contact (by link or by email).
    #[serde(default)]
    pub matched: i64,
    /// Writes the write step planned: creates and updates.
    #[serde(default)]
    pub to_write: i64,
    /// The app's contacts created in the CRM by batch calls.
    pub batch_created: i64,
    /// Linked records updated by batch calls.
    #[serde(default)]
    pub batch_updated: i64,
    /// The app's contacts created one call each (a CRM without batch
    /// writes), without a look-up first.
    #[serde(default)]
    pub created: i64,
    /// Linked records updated one call each, after a batch read.
    #[serde(default)]
    pub updated: i64,
    /// The batch calls made (reads and writes).
    pub batch_calls: i64,
    /// Writes handed to single pushes (an input the CRM refused; every
    /// one on a CRM without batch writes).
    pub pushed: i64,
    /// Records that could not be listed, matched or written.
    #[serde(default)]
    pub errors: i64,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Done, and its last pass (the single pushes of what was held at the
    /// end of the write step) is still to run: a job killed between the
    /// two runs it when retried, or the watchdog queues it again.
    #[serde(default)]
    pub last_pass_owed: bool,
    /// A backlog of pushes gathered into the write step (no listing):
    /// see [`Store::begin_gather`].
    #[serde(default)]
    pub gather: bool,
}

impl FirstSyncRecord {
    /// Its phase, a record without one being finished.
    #[must_use]
    pub fn phase(&self) -> FirstSyncPhase {
        self.phase.unwrap_or(FirstSyncPhase::Done)
    }

    /// Writes planned and not yet made nor handed on.
    #[must_use]
    pub fn writes_left(&self) -> i64 {
        (self.to_write - self.written() - self.errors).max(0)
    }

    /// Writes made, or handed to single pushes.
    #[must_use]
    pub fn written(&self) -> i64 {
        self.batch_created + self.batch_updated + self.created + self.updated + self.pushed
    }
}

/// A counter of [`FirstSyncRecord`], for [`Store::count_first_sync`].
#[derive(Debug, Clone, Copy)]
pub enum FirstSyncCount {
    /// [`FirstSyncRecord::listed`].
    Listed,
    /// [`FirstSyncRecord::matched`].
    Matched,
    /// [`FirstSyncRecord::batch_created`].
    BatchCreated,
    /// [`FirstSyncRecord::batch_updated`].
    BatchUpdated,
    /// [`FirstSyncRecord::created`].
    Created,
    /// [`FirstSyncRecord::updated`].
    Updated,
    /// [`FirstSyncRecord::batch_calls`].
    BatchCalls,
    /// [`FirstSyncRecord::pushed`].
    Pushed,
    /// [`FirstSyncRecord::errors`].
    Errors,
}

impl FirstSyncCount {
    fn field(self) -> &'static str {
        match self {
            Self::Listed => "firstSync.listed",
            Self::Matched => "firstSync.matched",
            Self::BatchCreated => "firstSync.batchCreated",
            Self::BatchUpdated => "firstSync.batchUpdated",
            Self::Created => "firstSync.created",
            Self::Updated => "firstSync.updated",
            Self::BatchCalls => "firstSync.batchCalls",
            Self::Pushed => "firstSync.pushed",
            Self::Errors => "firstSync.errors",
        }
    }
}

/// The field of [`FirstSyncRecord::touched_at`].
const TOUCHED: &str = "firstSync.touchedAt";

/// The phases of a first sync underway, as stored.
const UNDERWAY: [&str; 3] = ["listing", "waiting", "writing"];

const LAST_PASS_OWED: &str = "firstSync.lastPassOwed";

fn phase_name(p: FirstSyncPhase) -> &'static str {
    match p {
        FirstSyncPhase::Listing => "listing",
        FirstSyncPhase::Waiting => "waiting",
        FirstSyncPhase::Writing => "writing",
        FirstSyncPhase::Done => "done",
        FirstSyncPhase::Failed => "failed",
    }
}

impl Store {
    /// Starts a connection's first sync (its listing step), unless one is
    /// underway; returns whether it started one.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn begin_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> anyhow::Result<bool> {
        self.begin(
            customer,
            provider,
            FirstSyncRecord {
                phase: Some(FirstSyncPhase::Listing),
                ..FirstSyncRecord::default()
            },
        )
        .await
    }

    /// Starts gathering a backlog of pushes to a connection into batches
    /// (a bulk import in the app, a resync of many): a write step without
    /// a listing, under the same hold, slices and last pass as a first
    /// sync's, unless a first sync or gather is underway. Returns whether
    /// it started one.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn begin_gather(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> anyhow::Result<bool> {
        self.begin(
            customer,
            provider,
            FirstSyncRecord {
                phase: Some(FirstSyncPhase::Writing),
                gather: true,
                ..FirstSyncRecord::default()
            },
        )
        .await
    }

    /// Writes `record`, started now, as the connection's first sync unless
    /// one is underway; returns whether it did.
    async fn begin(
        &self,
        customer: &CustomerId,
        provider: Provider,
        record: FirstSyncRecord,
    ) -> anyhow::Result<bool> {
        let fresh = bson::to_bson(&FirstSyncRecord {
            started_at: Some(DateTime::now()),
            touched_at: Some(DateTime::now()),
            ..record
        })
        .context("encoding a first sync")?;
        let res = self
            .cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider),
                "firstSync.phase": { "$nin": UNDERWAY.to_vec() } },
                doc! { "$set": { "firstSync": fresh },
                "$setOnInsert": { "sinceMs": 0_i64, "boundaryIds": [] } },
            )
            .upsert(true)
            .await;
        match res {
            Ok(r) => Ok(r.modified_count + u64::from(r.upserted_id.is_some()) > 0),
            // the upsert met the cursor with a first sync underway
            Err(e) if super::is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e).context("starting a first sync"),
        }
    }

    /// The first sync of each of the customer's connections that had one.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn first_syncs(
        &self,
        customer: &CustomerId,
    ) -> anyhow::Result<Vec<(Provider, FirstSyncRecord)>> {
        let ids: Vec<String> = Provider::ALL
            .iter()
            .map(|p| cursor_id(customer, *p))
            .collect();
        let customer_text = customer.as_str();
        Ok(self
            .first_sync_docs(doc! { "_id": { "$in": &ids }, "firstSync": { "$type": "object" } })
            .await?
            .into_iter()
            .filter_map(|(customer, p, f)| (customer == customer_text).then_some((p, f)))
            .collect())
    }

    /// The first syncs of the cursors `filter` selects: `(customer id,
    /// provider, record)`.
    async fn first_sync_docs(
        &self,
        filter: bson::Document,
    ) -> anyhow::Result<Vec<(String, Provider, FirstSyncRecord)>> {
        let docs: Vec<bson::Document> = self
            .cursors
            .clone_with_type::<bson::Document>()
            .find(filter)
            .projection(doc! { "firstSync": 1 })
            .await
            .context("reading first syncs")?
            .try_collect()
            .await
            .context("reading first syncs")?;
        Ok(docs
            .into_iter()
            .filter_map(|d| {
                let (customer, provider) = d.get_str("_id").ok()?.rsplit_once(':')?;
                let provider = provider.parse().ok()?;
                let record = bson::from_document(d.get_document("firstSync").ok()?.clone()).ok()?;
                Some((customer.to_owned(), provider, record))
            })
            .collect())
    }

    /// The connections of the customer whose pushes are held for their
    /// first sync's write step. A hold lapses `HOLD_MAX` after the
    /// first sync started, whatever became of its job: pushes are never
    /// held for good.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn held_providers(&self, customer: &CustomerId) -> anyhow::Result<Vec<Provider>> {
        let since = DateTime::now().timestamp_millis() - HOLD_MAX.as_millis() as i64;
        Ok(self
            .first_syncs(customer)
            .await?
            .into_iter()
            .filter(|(_, f)| {
                f.phase().underway() && f.started_at.is_some_and(|t| t.timestamp_millis() > since)
            })
            .map(|(p, _)| p)
            .collect())
    }

    /// The customer's connections whose backlog of pushes a gather writes
    /// now: underway, and moved on within [`GATHER_QUIET`] (one whose job
    /// was lost stops making pushes wait long before the watchdog queues
    /// it again).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn gathering(&self, customer: &CustomerId) -> anyhow::Result<Vec<Provider>> {
        let since = DateTime::now().timestamp_millis() - GATHER_QUIET.as_millis() as i64;
        Ok(self
            .first_syncs(customer)
            .await?
            .into_iter()
            .filter(|(_, f)| {
                f.gather
                    && f.phase().underway()
                    && f.touched_at.is_some_and(|t| t.timestamp_millis() > since)
            })
            .map(|(p, _)| p)
            .collect())
    }

    /// Moves a first sync to `to` if it is at one of `from`; returns
    /// whether it moved.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn move_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
        from: &[FirstSyncPhase],
        to: FirstSyncPhase,
    ) -> anyhow::Result<bool> {
        let from: Vec<&str> = from.iter().map(|p| phase_name(*p)).collect();
        let mut set = doc! { "firstSync.phase": phase_name(to), TOUCHED: DateTime::now() };
        if !to.underway() {
            set.insert("firstSync.finishedAt", DateTime::now());
        }
        if to == FirstSyncPhase::Done {
            set.insert(LAST_PASS_OWED, true);
        }
        let r = self
            .cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider), "firstSync.phase": { "$in": from } },
                doc! { "$set": set },
            )
            .await
            .context("moving a first sync on")?;
        Ok(r.matched_count > 0)
    }

    /// Records that a done first sync's last pass has run.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn last_pass_run(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> anyhow::Result<()> {
        self.cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider), LAST_PASS_OWED: true },
                doc! { "$set": { LAST_PASS_OWED: false, TOUCHED: DateTime::now() } },
            )
            .await
            .context("recording a first sync's last pass")?;
        Ok(())
    }

    /// Ends a first sync for good (`Failed`), saying why.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn fail_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
        error: &str,
    ) -> anyhow::Result<()> {
        self.cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider),
                "firstSync.phase": { "$in": UNDERWAY.to_vec() } },
                doc! { "$set": { "firstSync.phase": "failed", "firstSync.error": error,
                "firstSync.finishedAt": DateTime::now(), TOUCHED: DateTime::now() } },
            )
            .await
            .context("recording a failed first sync")?;
        Ok(())
    }

    /// Adds `n` to one of a first sync's counters.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn count_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
        what: FirstSyncCount,
        n: i64,
    ) -> anyhow::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider), "firstSync": { "$type": "object" } },
                doc! { "$inc": { what.field(): n }, "$set": { TOUCHED: DateTime::now() } },
            )
            .await
            .context("counting a first sync's progress")?;
        Ok(())
    }

    /// Records the writes a first sync's write step planned.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn plan_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
        to_write: i64,
    ) -> anyhow::Result<()> {
        self.cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider), "firstSync": { "$type": "object" } },
                doc! { "$set": { "firstSync.toWrite": to_write, TOUCHED: DateTime::now() } },
            )
            .await
            .context("recording a first sync's plan")?;
        Ok(())
    }

    /// Every first sync underway, of every customer: `(customer id,
    /// provider, record)`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn first_syncs_underway(
        &self,
    ) -> anyhow::Result<Vec<(String, Provider, FirstSyncRecord)>> {
        self.first_sync_docs(doc! { "firstSync.phase": { "$in": UNDERWAY.to_vec() } })
            .await
    }

    /// The first syncs underway (or done with their last pass owed) that
    /// have not moved on for `quiet`, and are to be queued again: a job
    /// lost with Redis's data, or a last listing whose job ended before it
    /// queued the write steps waiting on it. A waiting one is left out while a connection of its
    /// customer still lists: that one is queued, and its job releases
    /// the waiting ones. Each one returned is touched, so it is returned
    /// again only after another `quiet`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn stalled_first_syncs(
        &self,
        quiet: std::time::Duration,
    ) -> anyhow::Result<Vec<(CustomerId, Provider)>> {
        let now = DateTime::now().timestamp_millis();
        let cutoff = now - i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
        let underway = self
            .first_sync_docs(doc! { "$or": [
                { "firstSync.phase": { "$in": UNDERWAY.to_vec() } },
                { LAST_PASS_OWED: true },
            ] })
            .await?;
        let listing: std::collections::HashSet<&str> = underway
            .iter()
            .filter(|(_, _, f)| f.phase() == FirstSyncPhase::Listing)
            .map(|(c, _, _)| c.as_str())
            .collect();
        let mut stalled = Vec::new();
        for (customer, provider, f) in &underway {
            let last = f.touched_at.or(f.started_at).map(|t| t.timestamp_millis());
            if last.is_some_and(|t| t > cutoff)
                || (f.phase() == FirstSyncPhase::Waiting && listing.contains(customer.as_str()))
            {
                continue;
            }
            let Ok(id) = CustomerId::parse(customer) else {
                continue;
            };
            // touched only if still as read: a job that moved it meanwhile
            // is alive
            let r = self
                .cursors
                .update_one(
                    doc! { "_id": cursor_id(&id, *provider),
                    "firstSync.phase": phase_name(f.phase()),
                    TOUCHED: f.touched_at.map_or(bson::Bson::Null, bson::Bson::DateTime) },
                    doc! { "$set": { TOUCHED: DateTime::now() } },
                )
                .await
                .context("touching a stalled first sync")?;
            if r.modified_count > 0 {
                stalled.push((id, *provider));
            }
        }
        Ok(stalled)
    }
}
