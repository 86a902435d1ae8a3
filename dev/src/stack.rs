//! The all-in-one stack (simulator + api + worker + scheduler in one process) used by
//! `contact-sync dev` and by the sync benchmark.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::task::JoinHandle;

use contact_sync::app;
use contact_sync::config::{Config, HubspotAppConfig, IntegrationAppConfig};
use contact_sync::domain::Secret;

/// The simulator (dev and tests only).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Simulator")]
pub struct SimulatorSettings {
    /// Folder of the declarative Integration.app config (read by the simulator).
    #[arg(
        long,
        env = "INTEGRATION_APP_CONFIG_DIR",
        default_value = "integration-app"
    )]
    pub integration_app_config_dir: PathBuf,
    /// Where the simulator listens.
    #[arg(long, env = "SIMULATOR_ADDR", default_value = "127.0.0.1:8090")]
    pub simulator_addr: SocketAddr,
    /// Where the simulator sends HubSpot webhooks (unset: none are sent;
    /// `dev` points it at its own api).
    #[arg(long, env = "SIMULATOR_WEBHOOK_URL")]
    pub simulator_webhook_url: Option<String>,
    /// Where the simulator sends Integration.app flow events for Pipedrive
    /// changes (unset: none are sent).
    #[arg(long, env = "SIMULATOR_EVENTS_URL")]
    pub simulator_events_url: Option<String>,
}

/// Everything the all-in-one stack and the benchmarks read: the product's
/// configuration and the simulator's.
#[derive(clap::Args, Debug, Clone)]
pub struct DevConfig {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub sim: SimulatorSettings,
}

impl std::ops::Deref for DevConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl std::ops::DerefMut for DevConfig {
    fn deref_mut(&mut self) -> &mut Config {
        &mut self.config
    }
}

/// A running all-in-one stack.
pub struct Stack {
    /// Where the api listens.
    pub api_addr: SocketAddr,
    /// Where the simulator listens.
    pub sim_addr: SocketAddr,
    /// The api's bearer token.
    pub token: String,
    stop: tokio::sync::watch::Sender<bool>,
    api: JoinHandle<anyhow::Result<()>>,
    worker: JoinHandle<anyhow::Result<()>>,
    scheduler: JoinHandle<anyhow::Result<()>>,
    sim: JoinHandle<anyhow::Result<()>>,
}

/// Fills in dev defaults for what a first run cannot know.
pub fn with_dev_defaults(mut cfg: DevConfig) -> DevConfig {
    let fill = |v: &mut Option<String>, d: &str| {
        if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
            *v = Some(d.to_owned());
        }
    };
    fill(
        &mut cfg.integration.integration_app_workspace_key,
        "dev-workspace",
    );
    let fill_secret = |v: &mut Option<Secret>, d: &str| {
        if v.as_ref().is_none_or(Secret::is_blank) {
            *v = Some(Secret::from(d));
        }
    };
    fill_secret(
        &mut cfg.integration.integration_app_workspace_secret,
        "dev-secret",
    );
    fill_secret(&mut cfg.api.api_token, "dev-token");
    fill_secret(&mut cfg.hubspot.hubspot_client_secret, "dev-hubspot-secret");
    cfg
}

fn simulator_config(
    sim: &SimulatorSettings,
    integration: &IntegrationAppConfig,
    hubspot: &HubspotAppConfig,
) -> anyhow::Result<simulator::SimulatorConfig> {
    let (key, secret) = integration.require_workspace()?;
    Ok(simulator::SimulatorConfig {
        workspace_key: key,
        workspace_secret: secret.expose().to_owned(),
        config_dir: sim.integration_app_config_dir.clone(),
        default_customer: integration.integration_app_customer_id.clone(),
        webhooks: match (
            sim.simulator_webhook_url.as_ref().filter(|u| !u.is_empty()),
            &hubspot.hubspot_client_secret,
        ) {
            (Some(url), Some(secret)) => Some(simulator::WebhookConfig::new(url, secret.expose())),
            _ => None,
        },
        events: sim
            .simulator_events_url
            .as_ref()
            .filter(|u| !u.is_empty())
            .map(simulator::EventsConfig::new),
    })
}

/// Runs the simulator alone until `shutdown`.
///
/// # Errors
/// When the workspace is not configured or the config does not load.
pub async fn run_simulator(
    sim: &SimulatorSettings,
    integration: &IntegrationAppConfig,
    hubspot: &HubspotAppConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = app::bind(sim.simulator_addr, "SIMULATOR_ADDR")?;
    simulator::serve(
        simulator_config(sim, integration, hubspot)?,
        listener,
        shutdown,
    )
    .await
}

impl Stack {
    /// Starts the three parts, the worker pointed at the simulator.
    ///
    /// # Errors
    /// When a port is taken or the configuration is incomplete.
    pub async fn start(cfg: DevConfig) -> anyhow::Result<Self> {
        let mut cfg = with_dev_defaults(cfg);
        let sim_listener = app::bind(cfg.sim.simulator_addr, "SIMULATOR_ADDR")?;
        let sim_addr = sim_listener.local_addr()?;
        cfg.integration.integration_app_url = format!("http://{sim_addr}");
        let api_listener = app::bind(cfg.api.api_addr, "API_ADDR")?;
        let api_addr = api_listener.local_addr()?;
        // the simulated CRMs report their changes to this api
        cfg.sim
            .simulator_webhook_url
            .get_or_insert_with(|| format!("http://{api_addr}/api/integration/webhook/hubspot"));
        cfg.sim
            .simulator_events_url
            .get_or_insert_with(|| format!("http://{api_addr}/api/integration/events"));

        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let sim = tokio::spawn(simulator::serve(
            simulator_config(&cfg.sim, &cfg.integration, &cfg.hubspot)?,
            sim_listener,
            stopped(),
        ));
        let (c, s) = (cfg.api_process(), stopped());
        let api = tokio::spawn(async move { app::run_api(&c, api_listener, s).await });
        let (c, s) = (cfg.worker_process(), stopped());
        let worker = tokio::spawn(async move { app::run_worker(&c, s).await });
        let (c, s) = (cfg.scheduler_process(), stopped());
        let scheduler = tokio::spawn(async move { app::run_scheduler(&c, s).await });
        Ok(Self {
            api_addr,
            sim_addr,
            token: cfg
                .api
                .api_token
                .as_ref()
                .map(|t| t.expose().to_owned())
                .unwrap_or_default(),
            stop,
            api,
            worker,
            scheduler,
            sim,
        })
    }

    /// Runs until a signal or until a part fails, then stops everything.
    ///
    /// # Errors
    /// The failure of a part.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let res = tokio::select! {
            _ = app::shutdown_signal() => Ok(()),
            r = &mut self.api => r.map_err(anyhow::Error::from).and_then(|r| r),
            r = &mut self.worker => r.map_err(anyhow::Error::from).and_then(|r| r),
        };
        let _ = self.stop.send(true);
        let _ = self.scheduler.await;
        let _ = self.sim.await;
        res
    }

    /// Stops every part and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.api.await;
        let _ = self.worker.await;
        let _ = self.scheduler.await;
        let _ = self.sim.await;
    }
}
