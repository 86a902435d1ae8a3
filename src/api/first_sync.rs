//! A connection's first sync as the api shows it: its step, its progress
//! and the time its writes have left at the rate in effect.

use chrono::{DateTime, Utc};
use poem_openapi::Object;

use super::errors::ApiError;
use super::ApiState;
use crate::crm::BATCH_MAX;
use crate::domain::{CustomerId, Provider};
use crate::store::{FirstSyncPhase, FirstSyncRecord};

/// A connection's last first sync.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct FirstSyncView {
    /// `listing` (the CRM's records are read and imported; pushes to the
    /// connection are held), `waiting` (for the customer's other
    /// connections to list theirs), `writing` (what the CRM lacks is
    /// written, in batches where it takes them), `done` or `failed`.
    pub phase: String,
    /// A backlog of pushes gathered into batches (a bulk import in the
    /// app, a resync of many), not a first sync: it lists nothing and
    /// writes from `writing` on.
    pub gathered: bool,
    /// When it was asked for.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// CRM records listed.
    pub listed: i64,
    /// Listed records that met an app contact, by link or by email.
    pub matched: i64,
    /// Writes planned: the creates and updates the CRM lacked.
    pub to_write: i64,
    /// Writes made or handed to single pushes.
    pub written: i64,
    /// The app's contacts created by batch calls.
    pub batch_created: i64,
    /// Linked records updated by batch calls.
    pub batch_updated: i64,
    /// The app's contacts created one call each (a CRM without batch
    /// writes), without a look-up first: the listing was it.
    pub created: i64,
    /// Linked records updated one call each, after a batch read.
    pub updated: i64,
    /// Batch calls made (reads and writes).
    pub batch_calls: i64,
    /// Writes handed to single pushes (an input the CRM refused, a record
    /// changed in the CRM meanwhile; every one on a CRM without batch
    /// writes).
    pub pushed: i64,
    /// Records that could not be listed or written.
    pub errors: i64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Seconds its writes have left at the rate in effect (null while it
    /// lists: the CRM does not say how many records it holds).
    pub seconds_left: Option<f64>,
}

impl FirstSyncView {
    /// The view of `f`, a first sync of `provider` allowed `rate` calls a
    /// second.
    #[must_use]
    pub fn new(f: &FirstSyncRecord, provider: Provider, rate: u32) -> Self {
        let phase = f.phase();
        Self {
            phase: serde_json::to_value(phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            gathered: f.gather,
            started_at: f.started_at.map(|t| t.to_chrono()),
            finished_at: f.finished_at.map(|t| t.to_chrono()),
            listed: f.listed,
            matched: f.matched,
            to_write: f.to_write,
            written: f.written(),
            batch_created: f.batch_created,
            batch_updated: f.batch_updated,
            created: f.created,
            updated: f.updated,
            batch_calls: f.batch_calls,
            pushed: f.pushed,
            errors: f.errors,
            error: f.error.clone(),
            seconds_left: seconds_left(f, provider, rate),
        }
    }
}

impl ApiState {
    /// Starts a connection's first sync and queues its job; `None` when
    /// one is underway. A job that cannot be queued ends the first sync
    /// as failed, so the connection does not hold its pushes for it.
    ///
    /// # Errors
    /// 503 when MongoDB or Redis fails.
    pub(super) async fn start_first_sync(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<Option<String>, ApiError> {
        let started = self
            .store
            .begin_first_sync(customer, provider)
            .await
            .map_err(ApiError::unavailable)?;
        if !started {
            return Ok(None);
        }
        match self.enqueuer.first_sync(customer, provider).await {
            Ok(job_id) => Ok(Some(job_id)),
            Err(e) => {
                if let Err(e) = self
                    .store
                    .fail_first_sync(customer, provider, &format!("not queued: {e}"))
                    .await
                {
                    tracing::warn!(error = %e, "recording a first sync that was not queued failed; its hold lapses by itself");
                }
                Err(ApiError::unavailable(e))
            }
        }
    }

    /// Starts the first sync of connections just recorded, when the
    /// deployment does that on connect; one that cannot start is logged
    /// (the operator starts it with `…/initial-sync`).
    pub(super) async fn first_sync_on_connect(
        &self,
        customer: &CustomerId,
        providers: &[Provider],
    ) {
        if !self.first_sync_on_connect {
            return;
        }
        for &p in providers {
            match self.start_first_sync(customer, p).await {
                Ok(Some(job_id)) => {
                    tracing::info!(%customer, provider = %p, job_id, "first sync of a new connection queued");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%customer, provider = %p, error = ?e, "the first sync of a new connection did not start; ask for it with …/initial-sync");
                }
            }
        }
    }
}

/// The calls the writes left take, at `rate` a second: a batch call per
/// [`BATCH_MAX`] on HubSpot (reads and updates two calls, creates one:
/// 1.5 on average), one call a contact on a CRM without batch writes.
fn seconds_left(f: &FirstSyncRecord, provider: Provider, rate: u32) -> Option<f64> {
    match f.phase() {
        FirstSyncPhase::Listing | FirstSyncPhase::Waiting => None,
        FirstSyncPhase::Done | FirstSyncPhase::Failed => Some(0.0),
        FirstSyncPhase::Writing => {
            let left = f.writes_left() as f64;
            let calls = match provider {
                Provider::Hubspot => (left / BATCH_MAX as f64).ceil() * 1.5,
                Provider::Pipedrive => left,
            };
            (rate > 0).then(|| calls / f64::from(rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_follows_the_budget_and_is_unknown_while_listing() {
        let mut f = FirstSyncRecord {
            phase: Some(FirstSyncPhase::Writing),
            to_write: 1000,
            batch_created: 400,
            ..FirstSyncRecord::default()
        };
        // 600 left: 6 batches of 1.5 calls at 10 a second
        assert_eq!(seconds_left(&f, Provider::Hubspot, 10), Some(0.9));
        // 600 single calls
        assert_eq!(seconds_left(&f, Provider::Pipedrive, 10), Some(60.0));
        f.phase = Some(FirstSyncPhase::Listing);
        assert_eq!(seconds_left(&f, Provider::Hubspot, 10), None);
        f.phase = None;
        assert_eq!(seconds_left(&f, Provider::Hubspot, 10), Some(0.0));
        assert_eq!(FirstSyncView::new(&f, Provider::Hubspot, 10).phase, "done");
    }
}
