//! Why an action run failed, classified at the source: Integration.app's
//! error body (`ErrorData` of `@membranehq/sdk`) and the CRM's own answer
//! inside it decide transient or permanent, gone or needing a reconnect,
//! with `Retry-After`, so the retry policy never parses text.

use std::time::Duration;

use serde::Deserialize;
use workers::JobError;

use crate::domain::Provider;

/// Why an action run failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The CRM itself answered that the record does not exist (any more):
    /// its own 404 (or 410) travels with Integration.app's error. Only this
    /// means "the record is gone"; a 404 of Integration.app's own (a
    /// connection or action it does not know) is [`Self::NeedsReconnect`].
    #[error("not found: {0}")]
    NotFound(String),
    /// The customer's connection cannot be used: Integration.app does not
    /// know it (disconnected, deleted) or an action the app runs on it, or
    /// it is defunct. A configuration problem, not the job's: nothing may be
    /// deleted or marked synced on it, and the job waits (no attempt used)
    /// while the connection is probed now and then.
    #[error("the connection needs reconnecting: {message}")]
    NeedsReconnect {
        /// What Integration.app said.
        message: String,
        /// When the connection is probed again.
        retry_after: Duration,
    },
    /// Throttled (HTTP 429 or `rate_limit_exceeded`).
    #[error("rate limited: {message}")]
    RateLimited {
        /// What the service said.
        message: String,
        /// When it will accept calls again.
        retry_after: Option<Duration>,
    },
    /// The connection's own pool-wide budget is used up for a while: the
    /// job gives its worker slot back to other customers' jobs and comes
    /// back after `retry_after`, no attempt used.
    #[error("rate budget of the connection used up; back in {retry_after:?}")]
    OverBudget {
        /// When a grant is free again.
        retry_after: Duration,
    },
    /// Network failure, timeout, 5xx: may pass on retry.
    #[error("{0}")]
    Transient(String),
    /// The request was refused for a reason a retry cannot fix.
    #[error("{0}")]
    Permanent(String),
}

impl From<CrmError> for JobError {
    fn from(e: CrmError) -> Self {
        match e {
            CrmError::RateLimited {
                message,
                retry_after,
            } => JobError::throttled(format!("rate limited: {message}"), retry_after),
            CrmError::OverBudget { retry_after } => JobError::deferred(
                format!(
                    "rate budget used up; back in {} ms",
                    retry_after.as_millis()
                ),
                retry_after,
            ),
            CrmError::NeedsReconnect {
                message,
                retry_after,
            } => JobError::deferred(
                format!("the connection needs reconnecting: {message}"),
                retry_after,
            ),
            CrmError::Transient(m) => JobError::transient(m),
            CrmError::NotFound(m) => JobError::permanent(format!("not found: {m}")),
            CrmError::Permanent(m) => JobError::permanent(m),
        }
    }
}

/// Integration.app's error body, `ErrorData` of `@membranehq/sdk`
/// (`errors`): `{type, key?, message, data?, causedByError?}`, where
/// `causedByError` has the same shape. The CRM's own HTTP answer, when the
/// error came from it, is `data.response {status, headers, data}` of this
/// error or of one it was caused by (the SDK's `extractMembraneErrorData`
/// puts an HTTP client's failure there).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorData {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    caused_by_error: Option<Box<ErrorData>>,
}

impl ErrorData {
    /// This error and the ones it was caused by, outermost first.
    fn chain(&self) -> impl Iterator<Item = &ErrorData> {
        std::iter::successors(Some(self), |e| e.caused_by_error.as_deref())
    }

    /// Whether any error of the chain has `key`.
    fn has_key(&self, key: &str) -> bool {
        self.chain().any(|e| e.key.as_deref() == Some(key))
    }

    /// Whether any error of the chain is of `kind`.
    fn has_type(&self, kind: &str) -> bool {
        self.chain().any(|e| e.kind.as_deref() == Some(kind))
    }

    /// The HTTP status the CRM itself answered, when the error carries it.
    fn crm_status(&self) -> Option<u16> {
        self.chain().find_map(|e| {
            e.data
                .as_ref()?
                .pointer("/response/status")?
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
        })
    }
}

/// Classifies a failed answer; a connection that needs reconnecting is
/// tried again after `probe`.
pub(super) fn classify(
    status: u16,
    data: &ErrorData,
    retry_after: Option<Duration>,
    action: &str,
    provider: Provider,
    raw: &str,
    probe: Duration,
) -> CrmError {
    let message = format!(
        "{action} on {provider}: HTTP {status}{}{}",
        data.kind
            .as_deref()
            .map(|k| format!(" {k}"))
            .unwrap_or_default(),
        data.message
            .as_deref()
            .or(Some(raw).filter(|r| !r.is_empty() && r.len() < 300))
            .map(|m| format!(": {m}"))
            .unwrap_or_default(),
    );
    if status == 429 || data.has_key("rate_limit_exceeded") {
        return CrmError::RateLimited {
            message,
            retry_after,
        };
    }
    // The CRM's own "no such record": the only proof a record is gone.
    match data.crm_status() {
        Some(404 | 410) => return CrmError::NotFound(message),
        // the record exists already (HubSpot refuses a second contact with
        // an email): the retry finds it and merges with it
        Some(409) => return CrmError::Transient(message),
        // The CRM throttled or failed: whatever status Integration.app
        // answers with (a failed action run may come back as a 400 whose
        // cause carries the CRM's answer), this is worth another try.
        Some(429) => {
            return CrmError::RateLimited {
                message,
                retry_after,
            }
        }
        Some(408 | 500..=599) => return CrmError::Transient(message),
        _ => {}
    }
    if data.has_key("connection_is_defunct") {
        return CrmError::NeedsReconnect {
            message,
            retry_after: probe,
        };
    }
    if data.has_key("access_token_expired") || data.has_key("lock_timeout") {
        return CrmError::Transient(message);
    }
    // Integration.app's own 404: a connection or an action it does not
    // know (its documented `{type: bad_request, key: not_found}`), which
    // says nothing about the record.
    if status == 404 || data.has_key("not_found") {
        return CrmError::NeedsReconnect {
            message,
            retry_after: probe,
        };
    }
    match status {
        408 | 500..=599 => CrmError::Transient(message),
        _ if data.has_type("concurrency") => CrmError::Transient(message),
        _ => CrmError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::RECONNECT_PROBE_EVERY;

    #[test]
    fn errors_are_classified_at_the_source() {
        let data = |kind: &str, key: &str| ErrorData {
            kind: Some(kind.into()),
            key: Some(key.into()),
            message: Some("m".into()),
            ..ErrorData::default()
        };
        let parse = |v: serde_json::Value| -> ErrorData { serde_json::from_value(v).unwrap() };
        let p = Provider::Hubspot;
        let cases: Vec<(u16, ErrorData, &str, &str)> = vec![
            (429, ErrorData::default(), "rate", "a bare 429"),
            (
                400,
                data("dependency_error", "rate_limit_exceeded"),
                "rate",
                "the key alone",
            ),
            (503, ErrorData::default(), "transient", "a 5xx"),
            (
                502,
                data("dependency_error", ""),
                "transient",
                "a bad gateway",
            ),
            (
                404,
                data("bad_request", "not_found"),
                "reconnect",
                "Integration.app's own 404: a connection or action it does not know",
            ),
            (
                404,
                ErrorData::default(),
                "reconnect",
                "a bare 404 is no proof the record is gone",
            ),
            (
                400,
                data("connection", "connection_is_defunct"),
                "reconnect",
                "a defunct connection",
            ),
            (
                400,
                parse(serde_json::json!({"type": "action_run", "message": "m",
                    "causedByError": {"type": "connection", "key": "connection_is_defunct", "message": "m"}})),
                "reconnect",
                "a defunct connection under an action run",
            ),
            (
                400,
                parse(serde_json::json!({"type": "action_run", "message": "m",
                    "causedByError": {"type": "connection", "message": "m",
                        "data": {"response": {"status": 404, "data": {}}}}})),
                "not_found",
                "the CRM's own 404, under the action run",
            ),
            (
                404,
                parse(serde_json::json!({"type": "connection", "message": "m",
                    "data": {"response": {"status": 410}}})),
                "not_found",
                "the CRM's 410",
            ),
            (
                400,
                parse(serde_json::json!({"type": "action_run", "message": "m",
                    "causedByError": {"type": "connection", "message": "m",
                        "data": {"response": {"status": 409}}}})),
                "transient",
                "the CRM's 409: the record exists, a retry finds it",
            ),
            (
                400,
                parse(serde_json::json!({"type": "action_run", "message": "m",
                    "causedByError": {"type": "connection", "message": "m",
                        "data": {"response": {"status": 503}}}})),
                "transient",
                "the CRM's 5xx, under a 400 action run",
            ),
            (
                400,
                parse(serde_json::json!({"type": "action_run", "message": "m",
                    "causedByError": {"type": "connection", "message": "m",
                        "data": {"response": {"status": 429}}}})),
                "rate",
                "the CRM's 429, under a 400 action run",
            ),
            (
                400,
                parse(serde_json::json!({"type": "action_run", "message": "m",
                    "causedByError": {"type": "connection", "message": "m",
                        "data": {"response": {"status": 400}}}})),
                "permanent",
                "the CRM refused the input",
            ),
            (
                400,
                data("connection", "access_token_expired"),
                "transient",
                "a token refresh",
            ),
            (400, data("bad_request", ""), "permanent", "refused input"),
            (
                401,
                data("bad_request", "not_authenticated"),
                "permanent",
                "a bad token",
            ),
        ];
        for (status, d, want, why) in cases {
            let got = match classify(status, &d, None, "a", p, "", RECONNECT_PROBE_EVERY) {
                CrmError::RateLimited { .. } => "rate",
                CrmError::OverBudget { .. } => "budget",
                CrmError::NeedsReconnect { .. } => "reconnect",
                CrmError::Transient(_) => "transient",
                CrmError::NotFound(_) => "not_found",
                CrmError::Permanent(_) => "permanent",
            };
            assert_eq!(got, want, "HTTP {status}: {why}");
        }
    }
}
