//! The operator endpoint on the connections: per CRM, its health.

use std::time::Duration;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ms_time;
use crate::api::auth::ViewerAuth;
use crate::api::errors::{ApiError, ApiResult, UNAVAILABLE};
use crate::api::ApiState;
use crate::domain::{Provider, SyncStatus};

/// Health of one CRM connection.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    /// The CRM.
    pub provider: String,
    /// When a sync with it last succeeded.
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Poll cursor: records changed at or after this time are read next.
    pub poll_cursor: Option<chrono::DateTime<chrono::Utc>>,
    /// When the last poll finished.
    pub last_poll_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Failed outcomes / all outcomes in the last hour.
    pub error_rate_1h: f64,
    /// Links waiting for a push.
    pub links_pending: u64,
    /// Links up to date.
    pub links_synced: u64,
    /// Links failed for good.
    pub links_error: u64,
    /// Calls granted in the current rate-limit window.
    pub rate_limit_used: u64,
    /// Calls allowed per window.
    pub rate_limit: u32,
}

/// The operator endpoint on the connections.
pub struct ConnectionsOpsApi;

#[OpenApi(tag = "crate::api::Tag::Operators")]
impl ConnectionsOpsApi {
    /// Per CRM: last successful sync, poll cursor, error rate, links by
    /// status, rate-limit budget in use.
    #[oai(path = "/connections", method = "get")]
    async fn connections(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
    ) -> ApiResult<Json<Vec<ConnectionView>>, UNAVAILABLE> {
        let mut out = Vec::new();
        for p in Provider::ALL {
            let h = state
                .store
                .provider_health(p)
                .await
                .map_err(ApiError::unavailable)?;
            // The default customer's connection; each customer's own
            // are under /api/customers.
            let default = crate::domain::CustomerId::default_customer();
            let cursor = state
                .store
                .cursor(&default, p)
                .await
                .map_err(ApiError::unavailable)?;
            let used = state
                .enqueuer
                .queue()
                .rate_limit_use(&format!("crm:{default}:{p}"), Duration::from_millis(1100))
                .await
                .map_err(ApiError::unavailable)?;
            let count =
                |s: SyncStatus| h.links.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
            out.push(ConnectionView {
                provider: p.to_string(),
                last_success_at: h.last_success.map(|t| t.to_chrono()),
                poll_cursor: ms_time(cursor.since_ms),
                last_poll_at: cursor.last_poll_at.map(|t| t.to_chrono()),
                error_rate_1h: if h.recent == 0 {
                    0.0
                } else {
                    h.recent_failed as f64 / h.recent as f64
                },
                links_pending: count(SyncStatus::Pending),
                links_synced: count(SyncStatus::Synced),
                links_error: count(SyncStatus::Error),
                rate_limit_used: used,
                rate_limit: state.rate_limits.get(&p).copied().unwrap_or(0),
            });
        }
        Ok(Json(out))
    }
}
