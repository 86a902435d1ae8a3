//! The Integration.app client: mints the workspace JWT, runs actions on a
//! provider's connection, and classifies failures at the source (transient
//! or permanent, with `Retry-After`), so the retry policy never parses text.

mod token;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use workers::{JobError, RateLimiter};

use crate::domain::{CustomerId, Provider};
pub use token::TokenMinter;

/// Why an action run failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The record does not exist (any more) in the CRM.
    #[error("not found: {0}")]
    NotFound(String),
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
            CrmError::Transient(m) => JobError::transient(m),
            CrmError::NotFound(m) => JobError::permanent(format!("not found: {m}")),
            CrmError::Permanent(m) => JobError::permanent(m),
        }
    }
}

/// Integration.app's error body.
#[derive(Debug, Deserialize, Default)]
struct ErrorData {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

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

/// A CRM call slower than this is logged.
const SLOW_CALL: Duration = Duration::from_secs(1);

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
    /// Where a connection's own rate limit is found.
    customers: Option<crate::store::Customers>,
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
        })
    }

    /// Reads each connection's own rate limit (which overrides the
    /// provider's default) from `customers`.
    pub fn with_customers(mut self, customers: crate::store::Customers) -> Self {
        self.customers = Some(customers);
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
        may_defer: bool,
    ) -> Result<(), CrmError> {
        let default = match provider {
            Provider::Hubspot => l.hubspot,
            Provider::Pipedrive => l.pipedrive,
        };
        // the connection's own limit, from the customers cache (an outage
        // of MongoDB falls back to the default)
        let own = match &self.customers {
            Some(c) => c
                .get(customer)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.connection(provider).and_then(|conn| conn.rate_limit)),
            None => None,
        };
        let limit = own.unwrap_or(default);
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
    /// `input` as the body. Its time is observed (`crm_call_seconds`), and
    /// a call slower than a second is logged, so a CRM (or a network) that
    /// answers late shows up before a job times out on it.
    ///
    /// # Errors
    /// A classified [`CrmError`].
    pub async fn run<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        customer: &CustomerId,
        provider: Provider,
        action: &str,
        input: &I,
    ) -> Result<O, CrmError> {
        let may_defer = first_call_of_job();
        if let Some(l) = &self.limits {
            self.take_budget(l, customer, provider, may_defer).await?;
        }
        let started = std::time::Instant::now();
        let result = self.call(customer, provider, action, input).await;
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
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let data: ErrorData = serde_json::from_str(&text).unwrap_or_default();
        Err(classify(
            status.as_u16(),
            &data,
            retry_after,
            action,
            provider,
            &text,
        ))
    }
}

fn classify(
    status: u16,
    data: &ErrorData,
    retry_after: Option<Duration>,
    action: &str,
    provider: Provider,
    raw: &str,
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
    let key = data.key.as_deref().unwrap_or("");
    if status == 429 || key == "rate_limit_exceeded" {
        return CrmError::RateLimited {
            message,
            retry_after,
        };
    }
    match (status, key) {
        (404, _) | (_, "not_found") => CrmError::NotFound(message),
        (_, "access_token_expired" | "lock_timeout") => CrmError::Transient(message),
        (408, _) | (500..=599, _) => CrmError::Transient(message),
        _ if data.kind.as_deref() == Some("concurrency") => CrmError::Transient(message),
        _ => CrmError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_at_the_source() {
        let data = |kind: &str, key: &str| ErrorData {
            kind: Some(kind.into()),
            key: Some(key.into()),
            message: Some("m".into()),
        };
        let p = Provider::Hubspot;
        let cases: [(u16, ErrorData, &str); 7] = [
            (429, ErrorData::default(), "rate"),
            (400, data("dependency_error", "rate_limit_exceeded"), "rate"),
            (503, ErrorData::default(), "transient"),
            (502, data("dependency_error", ""), "transient"),
            (404, data("bad_request", "not_found"), "not_found"),
            (400, data("bad_request", ""), "permanent"),
            (401, data("bad_request", "not_authenticated"), "permanent"),
        ];
        for (status, d, want) in cases {
            let got = match classify(status, &d, None, "a", p, "") {
                CrmError::RateLimited { .. } => "rate",
                CrmError::OverBudget { .. } => "budget",
                CrmError::Transient(_) => "transient",
                CrmError::NotFound(_) => "not_found",
                CrmError::Permanent(_) => "permanent",
            };
            assert_eq!(got, want, "HTTP {status} {:?}", d.key);
        }
    }
}
