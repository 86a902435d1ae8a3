//! The api's answers as this client reads them (see the OpenAPI document
//! at `/api/docs`). Only what the tables show is required; the rest has
//! defaults so a newer api with more fields still parses.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A job with its failed attempts (`JobView`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Job {
    pub id: String,
    pub queue: String,
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default)]
    pub payload: serde_json::Value,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default)]
    pub failed_attempts: Vec<Attempt>,
}

/// One failed attempt (`AttemptView`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Attempt {
    pub attempt: u32,
    pub worker: String,
    pub started_ms: i64,
    pub duration_ms: u64,
    pub error: String,
}

/// Jobs sent back to their queue (`Moved`).
#[derive(Debug, Deserialize)]
pub(super) struct Moved {
    pub retried: u64,
}

/// Jobs or links affected (`Count`).
#[derive(Debug, Deserialize)]
pub(super) struct Count {
    pub count: u64,
}

/// A page of links (`LinkPage`).
#[derive(Debug, Deserialize)]
pub(super) struct LinkPage {
    pub items: Vec<Link>,
    pub total: u64,
}

/// A contact's link with one CRM (`LinkRow`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Link {
    pub contact_id: String,
    pub provider: String,
    pub sync_status: String,
    pub external_id: Option<String>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub attempts: i64,
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// A live worker (`WorkerView`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Worker {
    pub name: String,
    pub queue: String,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub concurrency: Option<u32>,
    pub last_heartbeat_ms: i64,
    pub in_flight: u64,
}

/// One queue at a glance (`QueueOverview`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Queue {
    pub queue: String,
    pub pending: u64,
    pub scheduled: u64,
    pub running: u64,
    pub done: u64,
    pub dead: u64,
    pub completed_5m: u64,
    pub failed_5m: u64,
    pub failure_rate_5m: f64,
    pub oldest_pending_ms: Option<u64>,
}

/// Health of one CRM connection (`ConnectionView`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Connection {
    pub provider: String,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub error_rate_1h: f64,
    pub links_pending: u64,
    pub links_synced: u64,
    pub links_error: u64,
    pub rate_limit_used: u64,
    pub rate_limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_suffixed_fields_match_the_api_names() {
        let q: Queue = serde_json::from_value(serde_json::json!({
            "queue": "q", "pending": 1, "scheduled": 0, "running": 0, "done": 0, "dead": 0,
            "completedTotal": 0, "failedTotal": 0, "completed5m": 7, "failed5m": 1,
            "failureRate5m": 0.125
        }))
        .unwrap();
        assert_eq!((q.completed_5m, q.failed_5m), (7, 1));
        let c: Connection = serde_json::from_value(serde_json::json!({
            "provider": "hubspot", "errorRate1h": 0.5, "linksPending": 0, "linksSynced": 2,
            "linksError": 1, "rateLimitUsed": 0, "rateLimit": 9
        }))
        .unwrap();
        assert_eq!(c.error_rate_1h, 0.5);
    }
}
