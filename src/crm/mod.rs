//! The Integration.app client: mints the workspace JWT, runs actions on a
//! provider's connection, and classifies failures at the source (transient
//! or permanent, with `Retry-After`), so the retry policy never parses text.

mod batch;
mod check;
mod contacts;
mod error;
mod listing;
mod record;
mod token;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use workers::RateLimiter;

use crate::domain::{CustomerId, Provider};
pub use batch::{BatchCreated, BatchUpdated, BATCH_MAX};
pub use check::{ConnectionState, Verdict, ACTIONS};
pub use contacts::Updated;
pub use error::CrmError;
use error::{classify, ErrorData};
pub use listing::{Changed, ChangedPage, Page, LIST, LIST_CHANGED};
pub use record::CrmRecord;
pub use token::TokenMinter;

#[derive(Deserialize)]
struct RunResponse<O> {
    output: O,
}

/// Longest a job's first CRM call waits in its worker slot for its
/// connection's budget; past this the job is deferred and the slot goes to
/// another job. Later calls of the job wait inline: deferring then would
/// throw away the grants its earlier calls used, and jobs that each got a
/// first call through but never a second would use the whole budget up.
pub const INLINE_BUDGET_WAIT: Duration = Duration::from_millis(300);

/// How often a connection that needs reconnecting is tried again, unless
/// set otherwise ([`IntegrationApp::with_reconnect_probe`]).
pub const RECONNECT_PROBE_EVERY: Duration = Duration::from_secs(30);

/// A CRM call slower than this is logged.
const SLOW_CALL: Duration = Duration::from_secs(1);

/// Pauses before a call that failed transiently and fast (a 5xx, a reset
/// connection; not a timeout) is tried again in place, when doing it twice
/// is harmless
/// ([`safe_to_repeat`]). One failed call would otherwise cost the whole
/// job an attempt, and a poll that reads many records would rarely get
/// through a CRM that fails now and then. (HubSpot's own Node.js client
/// retries 5xx answers in place too, `numberOfApiCallRetries`.)
const CALL_RETRIES: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// Whether a call may be made twice: reads, and an update, which writes
/// the same values again. A create may not (a 5xx may come after the
/// record was made): its retry is the job's, which looks the record up
/// first.
fn safe_to_repeat(action: &str) -> bool {
    ["get-", "find-", "list-"]
        .iter()
        .any(|p| action.starts_with(p))
        || action == "update-contact"
}

tokio::task_local! {
    /// CRM calls made so far by the job this task runs (see [`job_scope`]).
    static CALLS_IN_JOB: std::cell::Cell<u32>;
}

/// Runs one job's work: its first CRM call may defer the job when the
/// connection's budget is used up; the calls after it wait for it.
pub async fn job_scope<F: std::future::Future>(work: F) -> F::Output {
    CALLS_IN_JOB.scope(std::cell::Cell::new(0), work).await
}

/// Counts a call of the current job; whether it is the job's first (only
/// a first call may defer the job; outside a job, none does).
fn first_call_of_job() -> bool {
    CALLS_IN_JOB
        .try_with(|c| {
            let n = c.get();
            c.set(n.saturating_add(1));
            n == 0
        })
        .unwrap_or(false)
}

/// Pool-wide rate limits per connection (calls per window): each
/// customer's CRM account has its own budget, as HubSpot and Pipedrive
/// count per portal and per company.
#[derive(Clone)]
pub struct CrmLimits {
    /// The shared limiter.
    pub limiter: RateLimiter,
    /// Calls per window for HubSpot.
    pub hubspot: u32,
    /// Calls per window for Pipedrive.
    pub pipedrive: u32,
    /// The window. Slightly longer than a second on purpose: a grant and the
    /// request's arrival are a few ms apart, and the CRM counts arrivals.
    pub window: Duration,
}

/// Client of the Integration.app REST API. Cheap to clone.
#[derive(Clone)]
pub struct IntegrationApp {
    http: reqwest::Client,
    base: Arc<str>,
    tokens: Arc<TokenMinter>,
    limits: Option<CrmLimits>,
    metrics: Option<workers::Metrics>,
    /// Where a connection's own rate limit, and whether it needs
    /// reconnecting, are found.
    customers: Option<crate::store::Customers>,
    /// How often a connection that needs reconnecting is tried again.
    reconnect_probe: Duration,
}

impl IntegrationApp {
    /// A client for `base_url`, signing tokens with the workspace credentials.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        tokens: TokenMinter,
        limits: Option<CrmLimits>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').into(),
            tokens: Arc::new(tokens),
            limits,
            metrics: None,
            customers: None,
            reconnect_probe: RECONNECT_PROBE_EVERY,
        })
    }

    /// Reads each connection's own rate limit (which overrides the
    /// provider's default) from `customers`.
    pub fn with_customers(mut self, customers: crate::store::Customers) -> Self {
        self.customers = Some(customers);
        self
    }

    /// Tries a connection that needs reconnecting once every `every`.
    pub fn with_reconnect_probe(mut self, every: Duration) -> Self {
        self.reconnect_probe = every;
        self
    }

    /// Counts calls by provider, action and status, and rate-limit waits.
    pub fn with_metrics(mut self, metrics: workers::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, provider: Provider, action: &str, status: &str) {
        if let Some(m) = &self.metrics {
            m.inc(
                "crm_calls_total",
                &[
                    ("provider", provider.as_str()),
                    ("action", action),
                    ("status", status),
                ],
            );
        }
    }

    /// Takes one call of the connection's pool-wide budget: waits for it
    /// when it comes within [`INLINE_BUDGET_WAIT`] or the job made calls
    /// already (`may_defer` false), else hands the job's slot back
    /// ([`CrmError::OverBudget`]), so a customer held back by its own
    /// budget does not hold workers other customers could use.
    async fn take_budget(
        &self,
        l: &CrmLimits,
        customer: &CustomerId,
        provider: Provider,
        own_limit: Option<u32>,
        may_defer: bool,
    ) -> Result<(), CrmError> {
        let default = match provider {
            Provider::Hubspot => l.hubspot,
            Provider::Pipedrive => l.pipedrive,
        };
        let limit = own_limit.unwrap_or(default);
        let key = format!("crm:{customer}:{provider}");
        let started = tokio::time::Instant::now();
        loop {
            let wait = l
                .limiter
                .try_acquire(&key, limit, l.window)
                .await
                .map_err(|e| CrmError::Transient(format!("rate limiter unavailable: {e}")))?;
            let Some(wait) = wait else { break };
            if let Some(m) = &self.metrics {
                m.inc("rate_limit_waits_total", &[("provider", provider.as_str())]);
            }
            if may_defer && started.elapsed() + wait > INLINE_BUDGET_WAIT {
                if let Some(m) = &self.metrics {
                    m.inc(
                        "rate_limit_deferrals_total",
                        &[("provider", provider.as_str())],
                    );
                }
                return Err(CrmError::OverBudget { retry_after: wait });
            }
            // a little jitter so the waiting calls do not all ask at once
            let jitter = rand::random_range(0..=wait.as_millis() as u64 / 4 + 1);
            tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
        }
        let waited = started.elapsed();
        if !waited.is_zero() {
            if let Some(m) = &self.metrics {
                m.observe(
                    "rate_limit_wait_seconds",
                    &[("provider", provider.as_str())],
                    waited.as_secs_f64(),
                );
            }
            tracing::debug!(%provider, waited_ms = waited.as_millis() as u64, "waited for the rate limit");
        }
        Ok(())
    }

    /// Runs `action` on the customer's connection with the provider, with
    /// `input` as the body; a transient failure of a call that is safe to
    /// repeat is tried again in place ([`CALL_RETRIES`]).
    ///
    /// # Errors
    /// A classified [`CrmError`].
    async fn run<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        customer: &CustomerId,
        provider: Provider,
        action: &str,
        input: &I,
    ) -> Result<O, CrmError> {
        let mut pauses = CALL_RETRIES.iter();
        loop {
            let started = std::time::Instant::now();
            let result = self.run_once(customer, provider, action, input).await;
            // a CRM that answers late or not at all is not asked again in
            // place: that would hold the job for several call timeouts
            let quick = started.elapsed() < SLOW_CALL;
            match (&result, pauses.next()) {
                (Err(CrmError::Transient(e)), Some(pause)) if quick && safe_to_repeat(action) => {
                    tracing::debug!(%customer, %provider, action, error = %e, "a CRM call failed; trying it again");
                    tokio::time::sleep(*pause).await;
                }
                _ => return result,
            }
        }
    }

    /// One call of `action`. Its time is observed (`crm_call_seconds`), and
    /// a call slower than a second is logged, so a CRM (or a network) that
    /// answers late shows up before a job times out on it.
    async fn run_once<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        customer: &CustomerId,
        provider: Provider,
        action: &str,
        input: &I,
    ) -> Result<O, CrmError> {
        let may_defer = first_call_of_job();
        // The connection as recorded (an outage of MongoDB: as if it had
        // no settings of its own).
        let conn = match &self.customers {
            Some(c) => c
                .get(customer)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.connection(provider).cloned()),
            None => None,
        };
        let reconnect = conn.as_ref().and_then(|c| c.needs_reconnect.as_ref());
        if let Some(r) = reconnect {
            self.probe_slot(customer, provider, &r.error).await?;
        }
        if let Some(l) = &self.limits {
            let own_limit = conn.as_ref().and_then(|c| c.rate_limit);
            self.take_budget(l, customer, provider, own_limit, may_defer)
                .await?;
        }
        let started = std::time::Instant::now();
        let result = self.call(customer, provider, action, input).await;
        self.note_connection(customer, provider, reconnect.is_some(), &result)
            .await;
        let took = started.elapsed();
        if let Some(m) = &self.metrics {
            m.observe(
                "crm_call_seconds",
                &[("provider", provider.as_str()), ("action", action)],
                took.as_secs_f64(),
            );
        }
        if took > SLOW_CALL {
            tracing::warn!(%customer, %provider, action, took_ms = took.as_millis() as u64,
                ok = result.is_ok(), "a CRM call took over a second");
        }
        result
    }

    /// Lets one call of a connection that needs reconnecting through every
    /// probe period, pool-wide; the others wait without calling.
    async fn probe_slot(
        &self,
        customer: &CustomerId,
        provider: Provider,
        error: &str,
    ) -> Result<(), CrmError> {
        let Some(l) = &self.limits else {
            return Ok(());
        };
        let key = format!("crm:{customer}:{provider}:probe");
        match l.limiter.try_acquire(&key, 1, self.reconnect_probe).await {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(CrmError::NeedsReconnect {
                message: error.to_owned(),
                retry_after: wait.max(Duration::from_millis(100)),
            }),
            Err(e) => Err(CrmError::Transient(format!(
                "rate limiter unavailable: {e}"
            ))),
        }
    }

    /// Records what a call showed of its connection: that it needs
    /// reconnecting, or (when it was marked so) that it works again.
    async fn note_connection<O>(
        &self,
        customer: &CustomerId,
        provider: Provider,
        was_marked: bool,
        result: &Result<O, CrmError>,
    ) {
        let Some(customers) = &self.customers else {
            return;
        };
        let mark = match result {
            Err(CrmError::NeedsReconnect { message, .. }) if !was_marked => Some(Some(message)),
            // the CRM answered through it: the connection works
            Ok(_) | Err(CrmError::NotFound(_)) if was_marked => Some(None),
            _ => None,
        };
        let Some(mark) = mark else { return };
        match customers
            .mark_reconnect(customer, provider, mark.map(String::as_str))
            .await
        {
            Ok(false) => {}
            Ok(true) => match mark {
                Some(error) => {
                    tracing::warn!(%customer, %provider, error, "the connection needs reconnecting; its jobs wait")
                }
                None => tracing::info!(%customer, %provider, "the connection works again"),
            },
            Err(e) => {
                tracing::warn!(%customer, %provider, error = %format!("{e:#}"), "could not record the connection's state")
            }
        }
    }

    /// One call of [`Self::run`], past the rate limit.
    async fn call<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        customer: &CustomerId,
        provider: Provider,
        action: &str,
        input: &I,
    ) -> Result<O, CrmError> {
        let token = self.tokens.token(customer.as_str()).map_err(|e| {
            CrmError::Permanent(format!("cannot sign the Integration.app token: {e}"))
        })?;
        let url = format!("{}/connections/{provider}/actions/{action}/run", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(input)
            .send()
            .await
            .map_err(|e| {
                self.count(provider, action, "network_error");
                CrmError::Transient(format!("{action} on {provider}: {e}"))
            })?;
        let status = resp.status();
        self.count(provider, action, status.as_str());
        if status.is_success() {
            let body: RunResponse<O> = resp.json().await.map_err(|e| {
                CrmError::Permanent(format!("{action} on {provider}: unexpected response: {e}"))
            })?;
            return Ok(body.output);
        }
        Err(self.failure(resp, action, provider).await)
    }

    /// A GET of Integration.app's own api (`path` under the base URL) for
    /// the customer, past no rate limit: what the self-check reads.
    async fn get<O: DeserializeOwned>(
        &self,
        customer: &CustomerId,
        provider: Provider,
        path: &str,
    ) -> Result<O, CrmError> {
        let token = self.tokens.token(customer.as_str()).map_err(|e| {
            CrmError::Permanent(format!("cannot sign the Integration.app token: {e}"))
        })?;
        let resp = self
            .http
            .get(format!("{}/{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CrmError::Transient(format!("GET {path}: {e}")))?;
        if resp.status().is_success() {
            return resp
                .json()
                .await
                .map_err(|e| CrmError::Permanent(format!("GET {path}: unexpected response: {e}")));
        }
        Err(self.failure(resp, &format!("GET {path}"), provider).await)
    }

    /// The classified error of a failed answer.
    async fn failure(&self, resp: reqwest::Response, action: &str, provider: Provider) -> CrmError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let data: ErrorData = serde_json::from_str(&text).unwrap_or_default();
        classify(
            status.as_u16(),
            &data,
            retry_after,
            action,
            provider,
            &text,
            self.reconnect_probe,
        )
    }
}
