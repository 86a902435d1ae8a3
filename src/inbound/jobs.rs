//! Payloads of the inbound queues (a wire format: fields added later get
//! `#[serde(default)]`).

use serde::{Deserialize, Serialize};

use crate::domain::Provider;

/// Queue of inbound changes.
pub const INBOUND_QUEUE: &str = "inbound-change";
/// Queue of provider polls.
pub const POLL_QUEUE: &str = "provider-poll";

/// A CRM record changed. Idempotent: the handler fetches the record's
/// current state and ignores states older than the one applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundChange {
    /// The CRM.
    pub provider: Provider,
    /// The CRM record id.
    pub external_id: String,
    /// When the change happened (ms), as the event said.
    #[serde(default)]
    pub occurred_at: i64,
    /// The events this job stands for (for the sync log).
    #[serde(default)]
    pub event_ids: Vec<String>,
}

/// Poll a CRM for changed records. Idempotent: it resumes from the stored
/// cursor, and two polls of one provider never run at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPoll {
    /// The CRM.
    pub provider: Provider,
    /// Start from the beginning instead of the stored cursor.
    #[serde(default)]
    pub backfill: bool,
}
