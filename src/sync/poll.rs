//! `provider-poll`: what changed in a CRM since the stored cursor, and now
//! and then everything, applied record by record.
//!
//! - **Incremental** (the usual poll): the integration's own
//!   `list-changed-contacts` lists the ids and change times of the records
//!   changed at or after the cursor, oldest first; each is read through
//!   `get-contact` and applied, and the cursor moves only after its page is
//!   applied. The listing bound is inclusive, so records at exactly the
//!   cursor time that were applied already are skipped, once their second
//!   is over (Pipedrive's times are whole seconds: a record read within its
//!   change's second may change again within it, unseen by the time).
//! - **Full** (a connection's first poll, an operator's backfill, and the
//!   scheduler's periodic full scan): `list-contacts` reads every live
//!   record; then every record a link names that the listing did not show
//!   is read by id, and applied as deleted when the CRM no longer has it.
//!   The listings of changes show no deleted records (Pipedrive's persons
//!   list, HubSpot's search), so this scan, with HubSpot's deletion
//!   webhooks and Integration.app's deletion events, is how a deletion in
//!   the CRM is noticed.

use std::collections::HashSet;
use std::time::Duration;

use workers::JobError;

use super::inbound::InboundSync;
use super::policy::Applied;
use crate::crm::CrmRecord;
use crate::domain::{CustomerId, Provider};
use crate::store::{FirstSyncCount, PollCursor, ScanProgress};
use crate::sync::{each, queue_err, store_err};

/// A poll's lease lapses this long after its worker dies.
const POLL_LEASE_TTL: Duration = Duration::from_secs(5);
/// A poll waits this long for a running one: longer than the lease, so a
/// poll whose worker died is taken over (from the cursor), while a poll that
/// is really running makes this one step aside.
const POLL_LEASE_WAIT: Duration = Duration::from_secs(7);
/// A change time this much before its read is over for good: a record read
/// later than that cannot change again at the same time (whole seconds,
/// plus a second for the CRM's clock against ours).
const SETTLED_MS: i64 = 2_000;
/// Records of a listed page applied at once.
const APPLY_AT_ONCE: usize = 16;

/// What a poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Records listed.
    pub listed: usize,
    /// Records applied (any outcome).
    pub applied: usize,
    /// Records skipped at the inclusive boundary.
    pub skipped: usize,
    /// Records that could not be applied (logged and passed over).
    pub failed: usize,
    /// Linked records the full scan found deleted.
    pub deleted: usize,
    /// Another poll of the provider was running; this one did nothing.
    pub busy: bool,
}

impl InboundSync {
    /// Runs one poll of `provider`: a full scan when `full` or when the
    /// connection was never polled, else the changes since the cursor
    /// (none while the connection's first sync is underway).
    ///
    /// # Errors
    /// Transient for store and network trouble; the cursor keeps what was
    /// applied, so a retry resumes there.
    pub async fn poll(
        &self,
        customer: &CustomerId,
        provider: Provider,
        full: bool,
        job_id: &str,
    ) -> Result<PollReport, JobError> {
        if !self.syncs_with(customer, provider).await? {
            tracing::info!(%customer, %provider, "the connection is not enabled; not polled");
            return Ok(PollReport::default());
        }
        // One poll per connection at a time, pool-wide.
        let Some(lease) = self
            .poll_lease(customer, provider)
            .await
            .map_err(queue_err)?
        else {
            tracing::info!("a poll of this provider is already running");
            return Ok(PollReport {
                busy: true,
                ..PollReport::default()
            });
        };
        let cursor = self
            .store
            .cursor(customer, provider)
            .await
            .map_err(store_err)?;
        let scan = full || cursor.since_ms == 0 || cursor.scan.is_some();
        let first_sync = cursor.first_sync.as_ref();
        let report = if !full && first_sync.is_some_and(|f| f.phase().underway()) {
            // The first sync's listing read everything up to its start and
            // leaves the cursor there, so the first poll after it lists what
            // changed since; polling now would list the first sync's own
            // writes and hold the lease its write step needs.
            tracing::info!(
                "the connection's first sync is underway; this poll is left to the next"
            );
            PollReport::default()
        } else if scan {
            self.full_scan(customer, provider, cursor, job_id).await?
        } else {
            self.changes_since(customer, provider, cursor, job_id)
                .await?
        };
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "releasing the poll lease failed; it expires by itself");
        }
        tracing::info!(
            full = scan,
            listed = report.listed,
            applied = report.applied,
            skipped = report.skipped,
            failed = report.failed,
            deleted = report.deleted,
            "poll done"
        );
        Ok(report)
    }

    /// The lease one poll of a connection at a time holds (a first sync's
    /// write step too); `None` when another holds it.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn poll_lease(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<Option<workers::Lease>, workers::Error> {
        self.leases
            .lease(
                &format!("poll:{customer}:{provider}"),
                POLL_LEASE_TTL,
                POLL_LEASE_WAIT,
            )
            .await
    }

    /// Counts what applying the record `id` came to; a record the app
    /// cannot apply is logged and passed over.
    async fn tally(
        &self,
        applied: Result<Applied, JobError>,
        customer: &CustomerId,
        provider: Provider,
        id: &str,
        job_id: &str,
        report: &mut PollReport,
    ) -> Result<(), JobError> {
        match applied {
            Ok(applied) => {
                report.applied += 1;
                report.deleted += usize::from(applied == Applied::Deleted);
            }
            // One record the app cannot apply (a duplicate, a refusal) must
            // not hold back every record after it.
            Err(e) if !e.is_transient() => {
                self.skip_record(customer, provider, Some(id), job_id, &e.to_string())
                    .await?;
                report.failed += 1;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The incremental poll: one query from the cursor, paged, and a new
    /// query from the last change applied when the CRM's result window is
    /// reached.
    async fn changes_since(
        &self,
        customer: &CustomerId,
        provider: Provider,
        mut cursor: PollCursor,
        job_id: &str,
    ) -> Result<PollReport, JobError> {
        let mut report = PollReport::default();
        let mut query_since = cursor.since_ms;
        let mut page_cursor: Option<String> = None;
        loop {
            let page = self
                .crm
                .changed_since(customer, provider, query_since, page_cursor.as_deref())
                .await?;
            report.listed += page.changes.len();
            let (mut since, mut boundary) = (cursor.since_ms, cursor.boundary_ids.clone());
            for change in &page.changes {
                if change.updated_ms < since
                    || (change.updated_ms == since && boundary.contains(&change.id))
                {
                    report.skipped += 1;
                    continue;
                }
                let (read_at, record) = self.read_now(customer, provider, &change.id).await?;
                let applied = self
                    .apply(customer, provider, &change.id, record, job_id)
                    .await;
                self.tally(applied, customer, provider, &change.id, job_id, &mut report)
                    .await?;
                if change.updated_ms > since {
                    since = change.updated_ms;
                    boundary.clear();
                }
                if read_at - change.updated_ms >= SETTLED_MS && !boundary.contains(&change.id) {
                    boundary.push(change.id.clone());
                }
            }
            let done = page.next.is_none() && !page.window_full;
            self.store
                .save_cursor(customer, provider, since, &boundary, done)
                .await
                .map_err(store_err)?;
            let moved = since > cursor.since_ms;
            cursor.since_ms = since;
            cursor.boundary_ids = boundary;
            match page.next {
                Some(c) => page_cursor = Some(c),
                // A new query from where the applied changes reached; a
                // window of records all at one time cannot be passed.
                None if page.window_full && moved => {
                    query_since = cursor.since_ms;
                    page_cursor = None;
                }
                None => break,
            }
        }
        Ok(report)
    }

    /// The full scan: every live record, then the linked records it did not
    /// show, each read by id. The cursor then moves to the scan's start
    /// (less the settling time), where the next incremental poll goes on.
    /// A scan cut short resumes after its last applied page; such a scan
    /// did not see the earlier pages' records, so it leaves deletions to
    /// the next full one rather than read every linked record by id.
    async fn full_scan(
        &self,
        customer: &CustomerId,
        provider: Provider,
        cursor: PollCursor,
        job_id: &str,
    ) -> Result<PollReport, JobError> {
        let resumed = cursor.scan.clone();
        let started = match &resumed {
            Some(scan) => scan.started_ms,
            None => self.leases.server_ms().await.map_err(queue_err)?,
        };
        let mut report = PollReport::default();
        let mut seen = HashSet::new();
        let mut page_cursor: Option<String> = resumed.as_ref().map(|s| s.cursor.clone());
        // a first sync's listing shows its progress page by page
        let first_sync = cursor
            .first_sync
            .as_ref()
            .is_some_and(|f| f.phase().underway());
        loop {
            let read_at = self.leases.server_ms().await.map_err(queue_err)?;
            let page = self
                .crm
                .list_page(customer, provider, page_cursor.as_deref())
                .await?;
            report.listed += page.records.len();
            let failed = report.failed;
            let at = (customer, provider, job_id);
            let records = self
                .parse_page(at, &page.records, read_at, &mut report)
                .await?;
            seen.extend(records.iter().map(|r| r.id.clone()));
            let matched = self.apply_page(at, records, &mut report).await?;
            if first_sync {
                let counts = [
                    (FirstSyncCount::Listed, page.records.len()),
                    (FirstSyncCount::Matched, matched),
                    (FirstSyncCount::Errors, report.failed - failed),
                ];
                self.count_listed(customer, provider, counts).await?;
            }
            match page.cursor {
                Some(c) => {
                    let progress = ScanProgress {
                        started_ms: started,
                        cursor: c.clone(),
                    };
                    self.store
                        .save_scan(customer, provider, &progress)
                        .await
                        .map_err(store_err)?;
                    page_cursor = Some(c);
                }
                None => break,
            }
        }
        if resumed.is_none() {
            self.notice_deletions(customer, provider, &seen, job_id, &mut report)
                .await?;
        } else {
            tracing::info!(%customer, %provider, "a resumed full scan leaves deletions to the next one");
        }
        let since = (started - SETTLED_MS).max(cursor.since_ms);
        let boundary = if since == cursor.since_ms {
            cursor.boundary_ids
        } else {
            Vec::new()
        };
        self.store
            .save_cursor(customer, provider, since, &boundary, true)
            .await
            .map_err(store_err)?;
        Ok(report)
    }

    /// A listed page's records, each read at `read_at`; an unreadable one
    /// is logged as skipped, and the scan goes on.
    async fn parse_page(
        &self,
        (customer, provider, job_id): (&CustomerId, Provider, &str),
        raw: &[serde_json::Value],
        read_at: i64,
        report: &mut PollReport,
    ) -> Result<Vec<CrmRecord>, JobError> {
        let mut records = Vec::with_capacity(raw.len());
        for r in raw {
            match CrmRecord::parse(r) {
                Ok(rec) => records.push(rec.read_at(read_at)),
                Err(e) => {
                    self.skip_record(customer, provider, r["id"].as_str(), job_id, &e)
                        .await?;
                    report.failed += 1;
                }
            }
        }
        Ok(records)
    }

    /// Applies a page's records a few at a time (each takes its own
    /// leases, and the listing's pace is the CRM's rate, not ours), and
    /// tallies them; returns how many met an app contact.
    async fn apply_page(
        &self,
        (customer, provider, job_id): (&CustomerId, Provider, &str),
        records: Vec<CrmRecord>,
        report: &mut PollReport,
    ) -> Result<usize, JobError> {
        let applied = each(records, APPLY_AT_ONCE, |rec| async move {
            let applied = self
                .apply(customer, provider, &rec.id, Some(rec.clone()), job_id)
                .await;
            Ok((rec, applied))
        })
        .await?;
        let mut matched = 0;
        for (rec, applied) in applied {
            let applied = match applied {
                // raced another record of the page (one email twice):
                // applied again alone
                Err(e) if e.is_transient() => {
                    self.apply(customer, provider, &rec.id, Some(rec.clone()), job_id)
                        .await
                }
                other => other,
            };
            matched += usize::from(matches!(
                applied,
                Ok(Applied::Updated | Applied::Unchanged | Applied::Kept | Applied::Stale)
            ));
            self.tally(applied, customer, provider, &rec.id, job_id, report)
                .await?;
        }
        Ok(matched)
    }

    /// Reads by id every record a link names that the full listing did not
    /// show (`seen`): deleted, or made after its page was read.
    async fn notice_deletions(
        &self,
        customer: &CustomerId,
        provider: Provider,
        seen: &HashSet<String>,
        job_id: &str,
        report: &mut PollReport,
    ) -> Result<(), JobError> {
        let linked = self
            .store
            .linked_external_ids(customer, provider)
            .await
            .map_err(store_err)?;
        for id in linked.iter().filter(|id| !seen.contains(*id)) {
            let applied = self.change(customer, provider, id, job_id).await;
            self.tally(applied, customer, provider, id, job_id, report)
                .await?;
        }
        Ok(())
    }

    /// Adds a listed page to the connection's first sync progress.
    async fn count_listed(
        &self,
        customer: &CustomerId,
        provider: Provider,
        counts: [(FirstSyncCount, usize); 3],
    ) -> Result<(), JobError> {
        for (what, n) in counts {
            self.store
                .count_first_sync(customer, provider, what, n as i64)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }

    async fn skip_record(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: Option<&str>,
        job_id: &str,
        error: &str,
    ) -> Result<(), JobError> {
        tracing::warn!(
            external_id,
            error,
            "CRM record not applied; the poll goes on"
        );
        self.record_failure(customer, provider, external_id, job_id, 1, error)
            .await
            .map_err(store_err)
    }
}
