//! Injected faults: latency, outages, random CRM errors, failing records,
//! forced throttling and per-connection rate limits, set through
//! `PUT /_sim/faults`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::error::ActionError;

/// The fault settings, as read and written on `/_sim/faults`. Every field is
/// optional on input; the defaults inject nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(crate) struct FaultConfig {
    /// Delay before every action call is handled.
    latency_ms: u64,
    /// Delay *after* a call has been carried out, before it is answered:
    /// the write has landed but its caller has not heard yet (as when a
    /// response is lost or late), so a caller that dies meanwhile never
    /// learns its write succeeded.
    respond_late_ms: u64,
    /// Probability (0..=1) that a call fails as if the CRM answered 500.
    error_rate: f64,
    /// Every action call answers 503.
    outage: bool,
    /// Emails (case-insensitive) or record ids whose calls answer 502.
    fail_records: Vec<String>,
    /// Emails (case-insensitive) or record ids the CRM refuses as invalid
    /// (400 validation error, which no retry can fix).
    reject_records: Vec<String>,
    /// Per connection: answer the next `remaining` calls with 429.
    throttle: BTreeMap<String, Throttle>,
    /// Per connection: at most N accepted calls in any 1000 ms.
    rate_limits: BTreeMap<String, u32>,
}

/// Forced throttling of one connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Throttle {
    /// Calls still to be refused; counts down (GET shows the live value).
    remaining: u32,
    #[serde(default = "one_second")]
    retry_after_secs: u64,
}

fn one_second() -> u64 {
    1
}

/// The rolling window of `rateLimits`.
const WINDOW_MS: i64 = 1000;

/// Live fault state shared by all requests.
#[derive(Default)]
pub(crate) struct Faults {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    config: FaultConfig,
    /// Accept times (Unix ms) within the last window, per connection.
    windows: HashMap<Connection, VecDeque<i64>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every setting and forgets the rate-limit windows.
    ///
    /// # Errors
    /// An unknown connection key or an error rate outside 0..=1.
    pub(crate) fn replace(&self, config: FaultConfig) -> Result<(), String> {
        let keys = config.throttle.keys().chain(config.rate_limits.keys());
        if let Some(bad) = keys.into_iter().find(|k| Connection::parse(k).is_none()) {
            return Err(format!("unknown connection {bad:?}"));
        }
        if !(0.0..=1.0).contains(&config.error_rate) {
            return Err("errorRate must be between 0 and 1".into());
        }
        *self.lock() = State {
            config,
            windows: HashMap::new(),
        };
        Ok(())
    }

    /// The current settings, with live throttle counts.
    pub(crate) fn snapshot(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().config.latency_ms)
    }

    pub(crate) fn respond_late(&self) -> Duration {
        Duration::from_millis(self.lock().config.respond_late_ms)
    }

    pub(crate) fn outage(&self) -> bool {
        self.lock().config.outage
    }

    /// The CRM-side faults of one call, in order: forced throttling, the
    /// rate limit, random errors, failing records. A call refused by the
    /// throttle or the limit does not count towards the limit.
    ///
    /// # Errors
    /// The injected failure.
    pub(crate) fn check_crm(
        &self,
        conn: Connection,
        now_ms: i64,
        email: Option<&str>,
        record_id: Option<&str>,
    ) -> Result<(), ActionError> {
        let mut state = self.lock();
        let State { config, windows } = &mut *state;
        if let Some(t) = config
            .throttle
            .get_mut(conn.key())
            .filter(|t| t.remaining > 0)
        {
            t.remaining -= 1;
            return Err(ActionError::crm_rate_limited(
                conn,
                t.retry_after_secs,
                None,
            ));
        }
        if let Some(&limit) = config.rate_limits.get(conn.key()) {
            let window = windows.entry(conn).or_default();
            while window.front().is_some_and(|&t| t <= now_ms - WINDOW_MS) {
                window.pop_front();
            }
            if window.len() >= limit as usize {
                return Err(ActionError::crm_rate_limited(conn, 1, Some(limit)));
            }
            window.push_back(now_ms);
        }
        if config.error_rate > 0.0 && rand::random::<f64>() < config.error_rate {
            return Err(ActionError::crm_server_error(
                conn,
                "Simulated CRM server error",
            ));
        }
        let matches = |f: &&String| {
            email.is_some_and(|e| e.trim().eq_ignore_ascii_case(f.trim()))
                || record_id == Some(f.trim())
        };
        if let Some(f) = config.reject_records.iter().find(matches) {
            return Err(ActionError::crm_validation_error(
                conn,
                format!("Simulated validation error for {f}"),
            ));
        }
        if let Some(f) = config.fail_records.iter().find(matches) {
            return Err(ActionError::crm_server_error(
                conn,
                format!("Simulated CRM failure for {f}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::StatusCode;

    fn faults(json: serde_json::Value) -> Faults {
        let f = Faults::default();
        f.replace(serde_json::from_value(json).unwrap()).unwrap();
        f
    }

    fn status(r: Result<(), ActionError>) -> StatusCode {
        r.err().map_or(StatusCode::OK, |e| e.status)
    }

    #[test]
    fn rate_limit_is_a_sliding_window_of_accepted_calls() {
        let f = faults(serde_json::json!({"rateLimits": {"pipedrive": 2}}));
        let at = |ms| status(f.check_crm(Connection::Pipedrive, ms, None, None));
        assert_eq!(at(0), StatusCode::OK);
        assert_eq!(at(500), StatusCode::OK);
        assert_eq!(at(900), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(at(999), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(at(1000), StatusCode::OK, "the call at 0 left the window");
        assert_eq!(at(1001), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(at(1500), StatusCode::OK);
        assert_eq!(
            status(f.check_crm(Connection::HubSpot, 1500, None, None)),
            StatusCode::OK
        );
    }

    #[test]
    fn reject_records_answer_400() {
        let f = faults(serde_json::json!({"rejectRecords": ["bad@example.com"]}));
        let r = f.check_crm(Connection::HubSpot, 0, Some("BAD@example.com"), None);
        assert_eq!(status(r), StatusCode::BAD_REQUEST);
        let ok = f.check_crm(Connection::HubSpot, 0, Some("good@example.com"), None);
        assert_eq!(status(ok), StatusCode::OK);
    }

    #[test]
    fn throttle_counts_down_then_lets_calls_through() {
        let f = faults(
            serde_json::json!({"throttle": {"hubspot": {"remaining": 2, "retryAfterSecs": 3}}}),
        );
        let call = || status(f.check_crm(Connection::HubSpot, 0, None, None));
        assert_eq!(call(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(f.snapshot().throttle["hubspot"].remaining, 1);
        assert_eq!(call(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(call(), StatusCode::OK);
    }

    #[test]
    fn fail_records_match_email_case_insensitively_or_id() {
        let f = faults(serde_json::json!({"failRecords": ["Bad@Example.com", "42"]}));
        let cases = [
            (Some("bad@example.com"), None, StatusCode::BAD_GATEWAY),
            (None, Some("42"), StatusCode::BAD_GATEWAY),
            (Some("good@example.com"), Some("43"), StatusCode::OK),
        ];
        for (email, id, want) in cases {
            assert_eq!(
                status(f.check_crm(Connection::HubSpot, 0, email, id)),
                want,
                "{email:?} {id:?}"
            );
        }
    }

    #[test]
    fn replace_rejects_unknown_connections_and_bad_rates() {
        let cases = [
            serde_json::json!({"rateLimits": {"salesforce": 1}}),
            serde_json::json!({"throttle": {"x": {"remaining": 1}}}),
            serde_json::json!({"errorRate": 1.5}),
        ];
        for c in cases {
            let cfg: FaultConfig = serde_json::from_value(c.clone()).unwrap();
            assert!(Faults::default().replace(cfg).is_err(), "{c}");
        }
    }
}
