//! The `sync_logs` collection: one entry per outcome of a sync attempt.

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::domain::{ContactId, CustomerId, Provider};

/// Which way a change travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// App → CRM.
    Outbound,
    /// CRM → app.
    Inbound,
}

/// One sync outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncLog {
    /// The contact, when known (a CRM record the app could not apply may
    /// belong to none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    /// Whose CRM account and contacts.
    #[serde(default)]
    pub customer_id: CustomerId,
    /// The CRM.
    pub provider: Provider,
    /// Which way.
    pub direction: Direction,
    /// `created`, `updated`, `deleted`, `skipped` or `failed`.
    pub outcome: String,
    /// The CRM record, when known.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The job that did it.
    pub job_id: String,
    /// Attempts used.
    pub attempts: i64,
    /// The contact version pushed.
    #[serde(default)]
    pub version: i64,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// When both sides had changed: which side won, and by which policy.
    #[serde(default)]
    pub conflict: Option<String>,
    /// When.
    pub at: DateTime,
}

impl Store {
    /// Appends a sync log entry.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn log_sync(&self, entry: &SyncLog) -> anyhow::Result<()> {
        // The id is chosen here, once: the driver retries a write whose reply
        // was lost and would otherwise give each try an id of its own, so a
        // server that does not recognise the retry (SecantusDB) stored the
        // entry twice. With the id fixed the retry is a duplicate key.
        let mut doc = bson::to_document(entry).context("encoding a sync log")?;
        doc.insert("_id", bson::oid::ObjectId::new());
        // Inserted together with whatever other entries are being written
        // at the moment (one `insert` for all of them).
        match self.groups.log_inserts.call(doc).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) if e.is_duplicate_key() => Ok(()),
            Some(Err(e)) => Err(e.into_anyhow("writing a sync log")),
            None => Err(super::grouped::GroupError::Gone.into_anyhow("writing a sync log")),
        }
    }

    /// The newest sync logs of a contact.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn sync_logs(&self, contact: ContactId, limit: i64) -> anyhow::Result<Vec<SyncLog>> {
        self.logs
            .find(doc! { "contactId": contact.oid() })
            .sort(doc! { "at": -1 })
            .limit(limit)
            .await
            .context("listing sync logs")?
            .try_collect()
            .await
            .context("reading sync logs")
    }
}
