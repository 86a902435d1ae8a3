//! Response shapes shared by several endpoints.

use chrono::{DateTime, Utc};
use poem_openapi::Object;

use crate::store::{Link, SyncLog};

/// A contact with its sync status per CRM.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ContactView {
    /// Contact id (24 hex digits).
    pub id: String,
    /// The customer it belongs to.
    pub customer_id: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Primary email.
    pub email: String,
    /// Primary phone.
    pub phone: Option<String>,
    /// Employer.
    pub company_name: Option<String>,
    /// Role.
    pub job_title: Option<String>,
    /// Grows by one with every change.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Whether the contact was deleted (its deletion may still be syncing).
    pub deleted: bool,
    /// One entry per CRM.
    pub links: Vec<LinkView>,
}

/// Where a contact stands with one CRM.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// The CRM.
    pub provider: String,
    /// `pending`, `synced` or `error`.
    pub sync_status: String,
    /// The CRM record id, once known.
    pub external_id: Option<String>,
    /// Why the last push failed for good.
    pub last_error: Option<String>,
    /// Attempts the last failed push used.
    pub attempts: i64,
    /// When the CRM last accepted a push.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// The job that last touched the link.
    pub last_job_id: Option<String>,
}

impl From<&Link> for LinkView {
    fn from(l: &Link) -> Self {
        Self {
            provider: l.provider.to_string(),
            sync_status: l.sync_status.as_str().to_owned(),
            external_id: l.external_id.clone(),
            last_error: l.last_error.clone(),
            attempts: l.attempts,
            last_synced_at: l.last_synced_at.map(|t| t.to_chrono()),
            last_job_id: l.last_job_id.clone(),
        }
    }
}

/// One sync outcome.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SyncLogView {
    /// The contact, when known.
    pub contact_id: Option<String>,
    /// The CRM.
    pub provider: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// `upserted`, `updated`, `deleted` or `failed`.
    pub outcome: String,
    /// The CRM record.
    pub external_id: Option<String>,
    /// The job.
    pub job_id: String,
    /// Attempts used.
    pub attempts: i64,
    /// The contact version pushed.
    pub version: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// When both sides had changed: which side won.
    pub conflict: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<&SyncLog> for SyncLogView {
    fn from(l: &SyncLog) -> Self {
        Self {
            contact_id: l.contact_id.map(|c| c.to_string()),
            provider: l.provider.to_string(),
            direction: serde_json::to_value(l.direction)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            outcome: l.outcome.clone(),
            external_id: l.external_id.clone(),
            job_id: l.job_id.clone(),
            attempts: l.attempts,
            version: l.version,
            error: l.error.clone(),
            conflict: l.conflict.clone(),
            at: l.at.to_chrono(),
        }
    }
}

/// How many jobs were affected.
#[derive(Debug, Object, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    /// Jobs or links affected.
    pub count: u64,
}
