//! The all-in-one stack (simulator + api + worker + scheduler in one process) used by
//! `contact-sync dev` and by the sync benchmark.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::app;
use crate::config::Config;

/// A running all-in-one stack.
pub struct Stack {
    /// Where the api listens.
    pub api_addr: SocketAddr,
    /// Where the simulator listens.
    pub sim_addr: SocketAddr,
    /// The api's bearer token.
    pub token: String,
    /// The configuration the parts run with.
    pub config: Config,
    stop: tokio::sync::watch::Sender<bool>,
    api: JoinHandle<anyhow::Result<()>>,
    worker: JoinHandle<anyhow::Result<()>>,
    scheduler: JoinHandle<anyhow::Result<()>>,
    sim: JoinHandle<anyhow::Result<()>>,
}

/// Fills in dev defaults for what a first run cannot know.
pub fn with_dev_defaults(mut cfg: Config) -> Config {
    let fill = |v: &mut Option<String>, d: &str| {
        if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
            *v = Some(d.to_owned());
        }
    };
    fill(&mut cfg.integration_app_workspace_key, "dev-workspace");
    fill(&mut cfg.integration_app_workspace_secret, "dev-secret");
    fill(&mut cfg.api_token, "dev-token");
    fill(&mut cfg.hubspot_client_secret, "dev-hubspot-secret");
    cfg
}

fn simulator_config(cfg: &Config) -> anyhow::Result<simulator::SimulatorConfig> {
    let (key, secret) = cfg.require_workspace()?;
    Ok(simulator::SimulatorConfig {
        workspace_key: key,
        workspace_secret: secret,
        config_dir: cfg.integration_app_config_dir.clone(),
        webhooks: match (
            cfg.simulator_webhook_url.as_ref().filter(|u| !u.is_empty()),
            &cfg.hubspot_client_secret,
        ) {
            (Some(url), Some(secret)) => Some(simulator::WebhookConfig::new(url, secret)),
            _ => None,
        },
        events: cfg
            .simulator_events_url
            .as_ref()
            .filter(|u| !u.is_empty())
            .map(|url| simulator::EventsConfig {
                customer_id: cfg.integration_app_customer_id.clone(),
                ..simulator::EventsConfig::new(url)
            }),
    })
}

/// Runs the simulator alone until `shutdown`.
///
/// # Errors
/// When the workspace is not configured or the config does not load.
pub async fn run_simulator(
    cfg: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = app::bind(cfg.simulator_addr, "SIMULATOR_ADDR")?;
    simulator::serve(simulator_config(cfg)?, listener, shutdown).await
}

impl Stack {
    /// Starts the three parts, the worker pointed at the simulator.
    ///
    /// # Errors
    /// When a port is taken or the configuration is incomplete.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let mut cfg = with_dev_defaults(cfg);
        let sim_listener = app::bind(cfg.simulator_addr, "SIMULATOR_ADDR")?;
        let sim_addr = sim_listener.local_addr()?;
        cfg.integration_app_url = format!("http://{sim_addr}");
        let api_listener = app::bind(cfg.api_addr, "API_ADDR")?;
        let api_addr = api_listener.local_addr()?;
        // the simulated CRMs report their changes to this api
        cfg.simulator_webhook_url
            .get_or_insert_with(|| format!("http://{api_addr}/api/integration/webhook/hubspot"));
        cfg.simulator_events_url
            .get_or_insert_with(|| format!("http://{api_addr}/api/integration/events"));

        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let sim = tokio::spawn(simulator::serve(
            simulator_config(&cfg)?,
            sim_listener,
            stopped(),
        ));
        let (c, s) = (cfg.clone(), stopped());
        let api = tokio::spawn(async move { app::run_api(&c, api_listener, s).await });
        let (c, s) = (cfg.clone(), stopped());
        let worker = tokio::spawn(async move { app::run_worker(&c, s).await });
        let (c, s) = (cfg.clone(), stopped());
        let scheduler = tokio::spawn(async move { app::run_scheduler(&c, s).await });
        Ok(Self {
            api_addr,
            sim_addr,
            token: cfg.api_token.clone().unwrap_or_default(),
            config: cfg,
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
