//! Outbound calls from the simulated services to the app: HubSpot's signed
//! CRM-object webhooks and Integration.app's flow events for Pipedrive.
//!
//! Record changes reach the senders through the store's change listeners
//! (`hubspot.rs`, `flow.rs`), which only queue them (`queue.rs`, which also
//! holds the state the senders share); a background task (`dispatch.rs`)
//! batches, signs and posts them, retrying failures, so an action run never
//! waits for a delivery. `outbox.rs` starts the listeners and the
//! dispatcher, and holds what the admin routes act on: the delivery log,
//! the pause switch, past batches.
//! Delivery failures are logged and recorded, never returned to the writer.

use std::time::Duration;

mod dispatch;
mod flow;
mod hubspot;
mod log;
mod outbox;
mod post;
mod queue;
mod sign;

pub(crate) use log::Kind;
pub(crate) use outbox::{Outbox, OutboxError};

/// The `portalId` of the default customer's HubSpot account when
/// [`WebhookConfig::portal_id`] does not say otherwise.
pub(crate) const DEFAULT_PORTAL_ID: u64 = 62_515;

/// How many HubSpot events one webhook request carries at most.
pub(crate) const MAX_BATCH: usize = 100;
/// How many deliveries of one account are in flight at once (HubSpot's
/// default per-account concurrency).
pub(crate) const MAX_IN_FLIGHT: usize = 10;

/// Where and how the simulated HubSpot accounts send their CRM-object
/// webhooks (`contact.*` subscriptions) to the app.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Full URL the app receives HubSpot webhooks on, e.g.
    /// `http://127.0.0.1:8080/api/integration/webhook/hubspot`. It is also
    /// the URI in the v3 signature.
    pub url: String,
    /// The HubSpot app's client secret, the key of both signatures.
    pub client_secret: String,
    /// `portalId` of the default customer's HubSpot account (the other
    /// customers' accounts get ids of their own); every event carries the
    /// `portalId` of the account whose record changed.
    pub portal_id: u64,
    /// `appId` of every event, and the `sourceId` of changes the app made
    /// itself through action runs.
    pub app_id: u64,
    /// A batch is sent when it holds 100 events or this long after its
    /// first event.
    pub batch_window: Duration,
    /// An answer slower than this counts as a failed delivery (HubSpot: 5 s).
    pub timeout: Duration,
    /// Retries of a failed delivery before the batch is dropped (HubSpot: 10).
    pub max_retries: u32,
    /// The delay before the first retry; it doubles with each further retry
    /// up to `max_retry_delay`. (HubSpot spreads its retries over 24 hours;
    /// the defaults here are short so that tests see them.)
    pub retry_base: Duration,
    /// The longest delay between two retries.
    pub max_retry_delay: Duration,
}

impl WebhookConfig {
    /// Webhooks to `url` signed with `client_secret`: portal 62515, app
    /// 54321, a 100 ms batch window, a 5 s timeout and 10 retries after
    /// 200 ms, 400 ms, 800 ms … at most 5 s apart.
    pub fn new(url: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_secret: client_secret.into(),
            portal_id: DEFAULT_PORTAL_ID,
            app_id: 54_321,
            batch_window: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            max_retries: 10,
            retry_base: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(5),
        }
    }

    fn retry(&self) -> Retry {
        Retry {
            timeout: self.timeout,
            max_retries: self.max_retries,
            base: self.retry_base,
            cap: self.max_retry_delay,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("client_secret", &"<redacted>")
            .field("portal_id", &self.portal_id)
            .field("app_id", &self.app_id)
            .field("batch_window", &self.batch_window)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("max_retry_delay", &self.max_retry_delay)
            .finish()
    }
}

/// Where the Integration.app flows of the Pipedrive connections
/// (`data-record-created|updated|deleted` triggers) call the app. The calls
/// carry a token (`x-membrane-token` and `x-integration-app-token`) signed with the workspace secret,
/// naming the customer whose account the record belongs to.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// The app's events endpoint.
    pub url: String,
    /// As in [`WebhookConfig`]: slower answers count as failures.
    pub timeout: Duration,
    /// As in [`WebhookConfig`].
    pub max_retries: u32,
    /// As in [`WebhookConfig`].
    pub retry_base: Duration,
    /// As in [`WebhookConfig`].
    pub max_retry_delay: Duration,
}

impl EventsConfig {
    /// Events to `url`, with the same timeout and retry defaults as
    /// [`WebhookConfig::new`].
    pub fn new(url: impl Into<String>) -> Self {
        let defaults = WebhookConfig::new("", "");
        Self {
            url: url.into(),
            timeout: defaults.timeout,
            max_retries: defaults.max_retries,
            retry_base: defaults.retry_base,
            max_retry_delay: defaults.max_retry_delay,
        }
    }

    fn retry(&self) -> Retry {
        Retry {
            timeout: self.timeout,
            max_retries: self.max_retries,
            base: self.retry_base,
            cap: self.max_retry_delay,
        }
    }
}

/// How one kind of delivery is retried.
#[derive(Debug, Clone, Copy)]
struct Retry {
    timeout: Duration,
    max_retries: u32,
    base: Duration,
    cap: Duration,
}

impl Retry {
    /// The wait before retry number `n` (1-based): base × 2^(n-1), capped.
    fn delay(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let retry = WebhookConfig::new("u", "s").retry();
        let ms: Vec<u128> = (1..=10).map(|n| retry.delay(n).as_millis()).collect();
        assert_eq!(
            ms,
            [200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000, 5000]
        );
        assert_eq!(retry.delay(u32::MAX), Duration::from_secs(5));
    }
}
