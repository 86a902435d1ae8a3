//! Everything a request handler needs, built once from the config.

use std::sync::Arc;

use anyhow::Context;

use crate::accounts::{Account, Accounts};
use crate::auth::Auth;
use crate::calls::CallLog;
use crate::changes::{ChangeListener, LogChanges};
use crate::clock::Clock;
use crate::config::Config;
use crate::connection::Connection;
use crate::faults::{FaultConfig, FaultSet, Faults};
use crate::webhooks::{Outbox, DEFAULT_PORTAL_ID};
use crate::SimulatorConfig;

/// Shared by all requests.
pub(crate) struct State {
    pub(crate) auth: Auth,
    pub(crate) config: Arc<Config>,
    pub(crate) faults: Faults,
    pub(crate) calls: CallLog,
    pub(crate) clock: Clock,
    /// Webhooks and flow events to the app.
    pub(crate) outbox: Outbox,
    pub(crate) accounts: Accounts,
}

impl State {
    /// Loads `integration-app/`, starts the outbound deliveries; no
    /// account exists yet.
    ///
    /// # Errors
    /// The config does not load or the deliveries cannot start.
    pub(crate) fn new(cfg: &SimulatorConfig) -> anyhow::Result<Self> {
        let config = Arc::new(
            Config::load(&cfg.config_dir)
                .with_context(|| format!("loading {}", cfg.config_dir.display()))?,
        );
        let clock = Clock::new();
        let (outbox, senders) = Outbox::start(cfg, clock)?;
        let mut listeners: Vec<Arc<dyn ChangeListener>> = vec![Arc::new(LogChanges)];
        listeners.extend(senders);
        let home_portal_id = cfg
            .webhooks
            .as_ref()
            .map_or(DEFAULT_PORTAL_ID, |w| w.portal_id);
        Ok(Self {
            auth: Auth::new(&cfg.workspace_key, &cfg.workspace_secret),
            accounts: Accounts::new(
                config.clone(),
                clock,
                listeners,
                cfg.default_customer.clone(),
                home_portal_id,
            ),
            faults: Faults::default(),
            calls: CallLog::default(),
            clock,
            outbox,
            config,
        })
    }

    /// `customer`'s account on `conn` (the default customer's when `None`),
    /// made if it is new.
    pub(crate) fn account(&self, customer: Option<&str>, conn: Connection) -> Arc<Account> {
        let customer = customer.unwrap_or(self.accounts.default_customer());
        self.accounts.get_or_create(customer, conn)
    }

    /// The fault settings as `GET /_sim/faults` shows them: `set`, with the
    /// throttle counts of `customer`'s accounts where they count under it.
    pub(crate) fn fault_view(&self, set: &FaultSet, customer: &str) -> FaultConfig {
        set.snapshot(|conn| {
            self.accounts
                .get(customer, conn)
                .and_then(|a| a.counters.throttle_left(set))
        })
    }

    /// Forgets accounts (records among them), faults, calls and deliveries
    /// (see `Outbox::reset`).
    pub(crate) fn reset(&self) {
        self.accounts.reset();
        self.faults.reset();
        self.calls.clear();
        self.outbox.reset();
    }
}
