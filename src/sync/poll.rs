//! `provider-poll`: list the records changed since the stored cursor, page
//! by page, apply each, and move the cursor only after its page is applied.
//! The listing bound is inclusive, so records at exactly the cursor time that
//! were applied already are skipped.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use workers::JobError;

use super::inbound::InboundSync;
use super::record::CrmRecord;
use crate::domain::{CustomerId, Provider};
use crate::sync::{queue_err, store_err};

/// A poll's lease lapses this long after its worker dies.
const POLL_LEASE_TTL: Duration = Duration::from_secs(5);
/// A poll waits this long for a running one: longer than the lease, so a
/// poll whose worker died is taken over (from the cursor), while a poll that
/// is really running makes this one step aside.
const POLL_LEASE_WAIT: Duration = Duration::from_secs(7);

/// Records asked for per page.
const PAGE: u32 = 100;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    records: Vec<serde_json::Value>,
    #[serde(default)]
    cursor: Option<String>,
}

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
    /// Another poll of the provider was running; this one did nothing.
    pub busy: bool,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl InboundSync {
    /// Runs one poll of `provider`.
    ///
    /// # Errors
    /// Transient for store and network trouble; the cursor keeps what was
    /// applied, so a retry resumes there.
    pub async fn poll(
        &self,
        customer: &CustomerId,
        provider: Provider,
        backfill: bool,
        job_id: &str,
    ) -> Result<PollReport, JobError> {
        if !self.syncs_with(customer, provider).await? {
            tracing::info!(%customer, %provider, "the connection is not enabled; not polled");
            return Ok(PollReport::default());
        }
        // One poll per connection at a time, pool-wide.
        let Some(lease) = self
            .leases
            .lease(
                &format!("poll:{customer}:{provider}"),
                POLL_LEASE_TTL,
                POLL_LEASE_WAIT,
            )
            .await
            .map_err(queue_err)?
        else {
            tracing::info!("a poll of this provider is already running");
            return Ok(PollReport {
                busy: true,
                ..PollReport::default()
            });
        };
        let mut cursor = if backfill {
            Default::default()
        } else {
            self.store
                .cursor(customer, provider)
                .await
                .map_err(store_err)?
        };
        let mut report = PollReport::default();
        let mut page_cursor: Option<String> = None;
        loop {
            let mut input = json!({ "updatedSince": rfc3339(cursor.since_ms), "limit": PAGE });
            if let Some(c) = &page_cursor {
                input["cursor"] = json!(c);
            }
            let read_at = self.leases.server_ms().await.map_err(queue_err)?;
            let page: Page = self
                .crm
                .run(customer, provider, "list-contacts", &input)
                .await?;
            report.listed += page.records.len();
            let (mut since, mut boundary) = (cursor.since_ms, cursor.boundary_ids.clone());
            for raw in &page.records {
                let rec = match CrmRecord::parse(raw) {
                    Ok(rec) => rec.read_at(read_at),
                    Err(e) => {
                        // unreadable: logged, and the poll goes on
                        self.skip_record(customer, provider, raw["id"].as_str(), job_id, &e)
                            .await?;
                        report.failed += 1;
                        continue;
                    }
                };
                if rec.updated_ms == cursor.since_ms && cursor.boundary_ids.contains(&rec.id) {
                    report.skipped += 1;
                    continue;
                }
                let (id, at) = (rec.id.clone(), rec.updated_ms);
                match self.apply(customer, provider, &id, Some(rec), job_id).await {
                    Ok(_) => report.applied += 1,
                    // One record the app cannot apply (a duplicate, a
                    // refusal) must not hold back every record after it.
                    Err(e) if !e.is_transient() => {
                        self.skip_record(customer, provider, Some(&id), job_id, &e.to_string())
                            .await?;
                        report.failed += 1;
                    }
                    Err(e) => return Err(e),
                }
                if at > since {
                    since = at;
                    boundary.clear();
                }
                if at == since && !boundary.contains(&id) {
                    boundary.push(id);
                }
            }
            let done = page.cursor.is_none();
            self.store
                .save_cursor(customer, provider, since, &boundary, done)
                .await
                .map_err(store_err)?;
            cursor.since_ms = since;
            cursor.boundary_ids = boundary;
            match page.cursor {
                Some(c) => page_cursor = Some(c),
                None => break,
            }
        }
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "releasing the poll lease failed; it expires by itself");
        }
        tracing::info!(
            listed = report.listed,
            applied = report.applied,
            skipped = report.skipped,
            failed = report.failed,
            "poll done"
        );
        Ok(report)
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
