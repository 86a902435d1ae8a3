//! Injected faults: latency, outages, random CRM errors, failing records,
//! forced throttling and per-connection rate limits, set through
//! `PUT /_sim/faults`.
//!
//! Settings come in sets: the workspace-wide one, which applies to every
//! account, and a customer's own, which replaces it for that customer's
//! accounts. A set never changes once installed (a PUT installs a new one),
//! so a call takes it with one read lock and an `Arc` clone. What does
//! change, the throttle counts and rate-limit windows, is each account's
//! own (`Counters`), started afresh whenever the account meets a set other
//! than the one it last counted under.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
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
    /// Per connection: answer the next `remaining` calls of each account
    /// with 429.
    throttle: BTreeMap<String, Throttle>,
    /// Per connection: at most so many accepted calls of each account in
    /// any window (a rolling window, as both CRMs count).
    rate_limits: BTreeMap<String, RateLimit>,
    /// A HubSpot batch create holding a refused input (`rejectRecords`)
    /// is refused whole with a 400, as users of HubSpot's API report,
    /// instead of that input failing alone as its reference says (207).
    /// Which one a live portal does is not confirmed: both can be run.
    batch_refused_whole: bool,
}

/// A connection's rate limit, written as a number (calls per 1000 ms) or
/// as `{calls, windowMs}`. The published floors: HubSpot, 100 calls per
/// 10,000 ms for a private app on Free or Starter (HubSpot's API usage
/// guidelines); Pipedrive, a burst limit of 20 calls per rolling 2,000 ms
/// for an API token on Lite (Pipedrive's rate limiting docs). See
/// `docs/EXTERNAL-APIS.md`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RateLimit {
    /// Calls per 1000 ms.
    PerSecond(u32),
    /// Calls per window.
    #[serde(rename_all = "camelCase")]
    Window { calls: u32, window_ms: u64 },
}

impl RateLimit {
    /// Calls, and the window in ms.
    fn parts(self) -> (u32, i64) {
        match self {
            Self::PerSecond(calls) => (calls, WINDOW_MS),
            Self::Window { calls, window_ms } => {
                (calls, i64::try_from(window_ms.max(1)).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Forced throttling of one connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Throttle {
    /// Calls to be refused; each account counts down its own (GET shows
    /// one customer's live value).
    remaining: u32,
    #[serde(default = "one_second")]
    retry_after_secs: u64,
}

fn one_second() -> u64 {
    1
}

impl FaultConfig {
    /// # Errors
    /// An unknown connection key or an error rate outside 0..=1.
    fn validate(&self) -> Result<(), String> {
        let keys = self.throttle.keys().chain(self.rate_limits.keys());
        if let Some(bad) = keys.into_iter().find(|k| Connection::parse(k).is_none()) {
            return Err(format!("unknown connection {bad:?}"));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err("errorRate must be between 0 and 1".into());
        }
        Ok(())
    }

    /// Whether calls on `conn` need the account's counters.
    fn counts(&self, conn: Connection) -> bool {
        self.throttle.contains_key(conn.key()) || self.rate_limits.contains_key(conn.key())
    }
}

/// The rolling window of `rateLimits`.
const WINDOW_MS: i64 = 1000;

/// One installed set of settings.
#[derive(Debug)]
pub(crate) struct FaultSet {
    config: FaultConfig,
    /// Unique per installed set, so that an account can tell whether its
    /// counters were started under this set.
    generation: u64,
}

/// One account's throttle count and rate-limit window.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    inner: Mutex<CounterState>,
}

#[derive(Debug, Default)]
struct CounterState {
    /// The set these counts belong to; 0 before any.
    generation: u64,
    /// Calls still to be refused by the throttle.
    throttle_left: u32,
    /// Accept times (Unix ms) within the last window.
    window: VecDeque<i64>,
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, CounterState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The throttle count left under `set` on `conn`, when this account has
    /// started counting under it.
    pub(crate) fn throttle_left(&self, set: &FaultSet) -> Option<u32> {
        let state = self.lock();
        (state.generation == set.generation).then_some(state.throttle_left)
    }
}

impl FaultSet {
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.config.latency_ms)
    }

    pub(crate) fn respond_late(&self) -> Duration {
        Duration::from_millis(self.config.respond_late_ms)
    }

    pub(crate) fn outage(&self) -> bool {
        self.config.outage
    }

    /// Whether a batch holding a refused input is refused whole.
    pub(crate) fn batch_refused_whole(&self) -> bool {
        self.config.batch_refused_whole
    }

    /// Whether the CRM refuses the record with `email` as invalid
    /// (`rejectRecords`), as one input of a batch.
    pub(crate) fn rejects_email(&self, email: &str) -> bool {
        self.config
            .reject_records
            .iter()
            .any(|f| f.trim().eq_ignore_ascii_case(email.trim()))
    }

    /// The settings, the throttle counts replaced by `live(conn)` where it
    /// has one (an account's count as it runs down).
    pub(crate) fn snapshot(&self, live: impl Fn(Connection) -> Option<u32>) -> FaultConfig {
        let mut config = self.config.clone();
        for (key, throttle) in &mut config.throttle {
            if let Some(left) = Connection::parse(key).and_then(&live) {
                throttle.remaining = left;
            }
        }
        config
    }

    /// The CRM-side faults of one call of the account whose counters are
    /// `counters`, on `conn`, in order: forced throttling, the rate limit,
    /// random errors, failing records. A call refused by the throttle or
    /// the limit does not count towards the limit.
    ///
    /// # Errors
    /// The injected failure.
    pub(crate) fn check_crm(
        &self,
        conn: Connection,
        counters: &Counters,
        now_ms: i64,
        email: Option<&str>,
        record_id: Option<&str>,
    ) -> Result<(), ActionError> {
        let config = &self.config;
        if config.counts(conn) {
            let mut state = counters.lock();
            if state.generation != self.generation {
                *state = CounterState {
                    generation: self.generation,
                    throttle_left: config.throttle.get(conn.key()).map_or(0, |t| t.remaining),
                    window: VecDeque::new(),
                };
            }
            if state.throttle_left > 0 {
                state.throttle_left -= 1;
                let retry_after = config
                    .throttle
                    .get(conn.key())
                    .map_or(1, |t| t.retry_after_secs);
                return Err(ActionError::crm_rate_limited(conn, retry_after, None));
            }
            if let Some(&limit) = config.rate_limits.get(conn.key()) {
                let (calls, window_ms) = limit.parts();
                let window = &mut state.window;
                while window.front().is_some_and(|&t| t <= now_ms - window_ms) {
                    window.pop_front();
                }
                if window.len() >= calls as usize {
                    // whole seconds until the oldest call leaves the window
                    let free_in = window.front().map_or(0, |&t| t + window_ms - now_ms);
                    let retry_after = u64::try_from((free_in + 999) / 1000).unwrap_or(1).max(1);
                    return Err(ActionError::crm_rate_limited(
                        conn,
                        retry_after,
                        Some((calls, window_ms)),
                    ));
                }
                window.push_back(now_ms);
            }
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

/// The installed sets.
pub(crate) struct Faults {
    workspace: RwLock<Arc<FaultSet>>,
    /// Customers' own sets, by customer id.
    own: RwLock<HashMap<String, Arc<FaultSet>>>,
    next_generation: AtomicU64,
}

impl Default for Faults {
    /// The workspace-wide defaults, which inject nothing, and no
    /// customer's own.
    fn default() -> Self {
        Self {
            workspace: RwLock::new(Arc::new(FaultSet {
                config: FaultConfig::default(),
                generation: 1,
            })),
            own: RwLock::default(),
            next_generation: AtomicU64::new(2),
        }
    }
}

/// Poisoning is ignored: the maps stay consistent whatever panicked.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Faults {
    fn install(&self, config: FaultConfig) -> Result<Arc<FaultSet>, String> {
        config.validate()?;
        Ok(Arc::new(FaultSet {
            config,
            generation: self.next_generation.fetch_add(1, Ordering::SeqCst),
        }))
    }

    /// The set that applies to `customer`'s accounts: its own, else the
    /// workspace-wide one.
    pub(crate) fn for_customer(&self, customer: &str) -> Arc<FaultSet> {
        {
            let own = read(&self.own);
            if let Some(set) = own.get(customer) {
                return set.clone();
            }
        }
        self.workspace()
    }

    /// The workspace-wide set.
    pub(crate) fn workspace(&self) -> Arc<FaultSet> {
        read(&self.workspace).clone()
    }

    /// Replaces the workspace-wide settings; every account counts afresh
    /// under them.
    ///
    /// # Errors
    /// An unknown connection key or an error rate outside 0..=1.
    pub(crate) fn replace(&self, config: FaultConfig) -> Result<(), String> {
        let set = self.install(config)?;
        *write(&self.workspace) = set;
        Ok(())
    }

    /// Sets `customer`'s own settings, which replace the workspace-wide
    /// ones for its accounts.
    ///
    /// # Errors
    /// As for `replace`.
    pub(crate) fn replace_own(&self, customer: &str, config: FaultConfig) -> Result<(), String> {
        let set = self.install(config)?;
        write(&self.own).insert(customer.to_owned(), set);
        Ok(())
    }

    /// Drops `customer`'s own settings, so that the workspace-wide ones
    /// apply to it again. Whether it had any.
    pub(crate) fn drop_own(&self, customer: &str) -> bool {
        write(&self.own).remove(customer).is_some()
    }

    /// Back to the defaults: nothing injected anywhere.
    pub(crate) fn reset(&self) {
        self.replace(FaultConfig::default())
            .expect("the default fault settings are valid");
        write(&self.own).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::StatusCode;

    fn faults(json: serde_json::Value) -> Arc<FaultSet> {
        let f = Faults::default();
        f.replace(serde_json::from_value(json).unwrap()).unwrap();
        f.workspace()
    }

    fn status(r: Result<(), ActionError>) -> StatusCode {
        r.err().map_or(StatusCode::OK, |e| e.status)
    }

    #[test]
    fn rate_limit_is_a_sliding_window_of_accepted_calls_per_account() {
        let f = faults(serde_json::json!({"rateLimits": {"pipedrive": 2}}));
        let (one, other) = (Counters::default(), Counters::default());
        let at = |c, ms| status(f.check_crm(Connection::Pipedrive, c, ms, None, None));
        assert_eq!(at(&one, 0), StatusCode::OK);
        assert_eq!(at(&one, 500), StatusCode::OK);
        assert_eq!(at(&one, 900), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(at(&other, 900), StatusCode::OK, "another account's window");
        assert_eq!(at(&one, 999), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            at(&one, 1000),
            StatusCode::OK,
            "the call at 0 left the window"
        );
        assert_eq!(at(&one, 1001), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(at(&one, 1500), StatusCode::OK);
        let hubspot = Counters::default();
        assert_eq!(
            status(f.check_crm(Connection::HubSpot, &hubspot, 1500, None, None)),
            StatusCode::OK
        );
    }

    #[test]
    fn a_rate_limit_may_have_a_window_of_its_own_and_says_when_it_frees() {
        let f = faults(serde_json::json!({
            "rateLimits": {"hubspot": {"calls": 100, "windowMs": 10_000}}
        }));
        let c = Counters::default();
        let at = |ms| f.check_crm(Connection::HubSpot, &c, ms, None, None);
        for i in 0..100 {
            assert!(at(i * 10).is_ok(), "call {i} of the window");
        }
        let refused = at(2_500).expect_err("the 101st call within 10 s");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            refused.retry_after_secs,
            Some(8),
            "the call at 0 leaves at 10 s"
        );
        let headers = &refused.body.data.as_ref().unwrap()["response"]["headers"];
        assert_eq!(headers["x-hubspot-ratelimit-max"], "100");
        assert_eq!(
            headers["x-hubspot-ratelimit-interval-milliseconds"],
            "10000"
        );
        assert!(at(9_999).is_err());
        assert!(at(10_000).is_ok(), "the call at 0 left the window");
        let echoed = serde_json::to_value(f.snapshot(|_| None)).unwrap();
        assert_eq!(
            echoed["rateLimits"]["hubspot"],
            serde_json::json!({"calls": 100, "windowMs": 10_000})
        );
    }

    #[test]
    fn reject_records_answer_400() {
        let f = faults(serde_json::json!({"rejectRecords": ["bad@example.com"]}));
        let c = Counters::default();
        let r = f.check_crm(Connection::HubSpot, &c, 0, Some("BAD@example.com"), None);
        assert_eq!(status(r), StatusCode::BAD_REQUEST);
        let ok = f.check_crm(Connection::HubSpot, &c, 0, Some("good@example.com"), None);
        assert_eq!(status(ok), StatusCode::OK);
    }

    #[test]
    fn throttle_counts_down_per_account_then_lets_calls_through() {
        let f = faults(
            serde_json::json!({"throttle": {"hubspot": {"remaining": 2, "retryAfterSecs": 3}}}),
        );
        let (one, other) = (Counters::default(), Counters::default());
        let call = |c| status(f.check_crm(Connection::HubSpot, c, 0, None, None));
        assert_eq!(one.throttle_left(&f), None, "not counting yet");
        assert_eq!(call(&one), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(one.throttle_left(&f), Some(1));
        let live = f.snapshot(|_| one.throttle_left(&f));
        assert_eq!(live.throttle["hubspot"].remaining, 1);
        assert_eq!(call(&one), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(call(&one), StatusCode::OK);
        assert_eq!(call(&other), StatusCode::TOO_MANY_REQUESTS, "its own count");
    }

    #[test]
    fn a_new_set_restarts_the_counts_and_a_customers_own_replaces_the_workspace_one() {
        let faults = Faults::default();
        let throttle = |n| serde_json::json!({"throttle": {"hubspot": {"remaining": n}}});
        faults
            .replace(serde_json::from_value(throttle(1)).unwrap())
            .unwrap();
        let c = Counters::default();
        let call = |set: &FaultSet| status(set.check_crm(Connection::HubSpot, &c, 0, None, None));
        assert_eq!(
            call(&faults.for_customer("a")),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(call(&faults.for_customer("a")), StatusCode::OK);
        faults
            .replace_own("a", serde_json::from_value(throttle(1)).unwrap())
            .unwrap();
        assert_eq!(
            call(&faults.for_customer("a")),
            StatusCode::TOO_MANY_REQUESTS,
            "counted afresh under a's own"
        );
        assert_eq!(
            faults.for_customer("b").generation,
            faults.workspace().generation
        );
        assert!(faults.drop_own("a"));
        assert!(!faults.drop_own("a"));
        assert_eq!(
            faults.for_customer("a").generation,
            faults.workspace().generation
        );
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
                status(f.check_crm(Connection::HubSpot, &Counters::default(), 0, email, id)),
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
