//! Everything a request handler needs, built once from the config.

use std::sync::Arc;

use anyhow::Context;

use crate::auth::Auth;
use crate::calls::CallLog;
use crate::changes::{ChangeListener, LogChanges};
use crate::clock::Clock;
use crate::config::Config;
use crate::connection::Connection;
use crate::faults::Faults;
use crate::store::Store;
use crate::webhooks::Outbox;
use crate::SimulatorConfig;

/// Shared by all requests.
pub(crate) struct State {
    pub(crate) auth: Auth,
    pub(crate) config: Config,
    pub(crate) faults: Faults,
    pub(crate) calls: CallLog,
    pub(crate) clock: Clock,
    /// Webhooks and flow events to the app.
    pub(crate) outbox: Outbox,
    hubspot: Store,
    pipedrive: Store,
}

impl State {
    /// Loads `integration-app/`, sets up empty stores and starts the
    /// outbound deliveries.
    ///
    /// # Errors
    /// The config does not load or the deliveries cannot start.
    pub(crate) fn new(cfg: &SimulatorConfig) -> anyhow::Result<Self> {
        let config = Config::load(&cfg.config_dir)
            .with_context(|| format!("loading {}", cfg.config_dir.display()))?;
        let clock = Clock::new();
        let (outbox, senders) = Outbox::start(cfg, clock)?;
        let mut listeners: Vec<Arc<dyn ChangeListener>> = vec![Arc::new(LogChanges)];
        listeners.extend(senders);
        let store = |conn| Store::new(conn, config.mapping(conn), clock, listeners.clone());
        Ok(Self {
            auth: Auth::new(&cfg.workspace_key, &cfg.workspace_secret),
            hubspot: store(Connection::HubSpot),
            pipedrive: store(Connection::Pipedrive),
            faults: Faults::default(),
            calls: CallLog::default(),
            clock,
            outbox,
            config,
        })
    }

    pub(crate) fn store(&self, conn: Connection) -> &Store {
        match conn {
            Connection::HubSpot => &self.hubspot,
            Connection::Pipedrive => &self.pipedrive,
        }
    }

    /// Forgets records, faults, calls and deliveries (see `Outbox::reset`).
    pub(crate) fn reset(&self) {
        Connection::ALL.iter().for_each(|c| self.store(*c).clear());
        self.faults
            .replace(Default::default())
            .expect("the default fault settings are valid");
        self.calls.clear();
        self.outbox.reset();
    }
}
