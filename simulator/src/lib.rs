#![doc = include_str!("../README.md")]

mod accounts;
mod admin;
mod auth;
mod batch;
mod calls;
mod changes;
mod clock;
mod config;
mod connection;
mod elements;
mod error;
mod faults;
mod formula;
mod mapping;
mod native;
mod ops;
mod owner;
mod record;
mod run;
mod schema;
mod state;
mod store;
mod webhooks;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::endpoint::BoxEndpoint;
use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::{get, post, EndpointExt, Route, Server};

use crate::error::admin_error;
use crate::state::State;
pub use crate::webhooks::{EventsConfig, WebhookConfig};

/// How long a graceful shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the simulator needs to start.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// Integration.app workspace key: the `iss` every bearer JWT must carry.
    pub workspace_key: String,
    /// Workspace secret the bearer JWTs are signed with.
    pub workspace_secret: String,
    /// The `integration-app/` directory: the Membrane elements (actions,
    /// data source, field mappings) in the Membrane CLI layout.
    pub config_dir: PathBuf,
    /// The customer of bearer tokens that name none and of admin calls
    /// without `?customer=`; its accounts get the home ids (HubSpot
    /// `webhooks.portal_id`, Pipedrive `companyId` 7001).
    pub default_customer: String,
    /// Where the HubSpot accounts send their signed contact webhooks;
    /// `None` sends none.
    pub webhooks: Option<WebhookConfig>,
    /// Where the Pipedrive connections' flows post record events; `None`
    /// posts none.
    pub events: Option<EventsConfig>,
}

impl std::fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("workspace_key", &self.workspace_key)
            .field("workspace_secret", &"<redacted>")
            .field("config_dir", &self.config_dir)
            .field("default_customer", &self.default_customer)
            .field("webhooks", &self.webhooks)
            .field("events", &self.events)
            .finish()
    }
}

/// Loads the YAML, builds the poem endpoint, serves on `listener` until
/// `shutdown` completes.
///
/// `listener` is an already bound std listener (port 0 is fine: read the
/// port from it before calling).
///
/// # Errors
/// The config does not load, the listener cannot be handed to tokio, or the
/// server fails.
pub async fn serve(
    cfg: SimulatorConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let endpoint = endpoint(cfg)?;
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("handing the listener to tokio")?;
    let acceptor = TcpAcceptor::from_tokio(listener).context("creating the acceptor")?;
    Server::new_with_acceptor(acceptor)
        .name("simulator")
        .run_with_graceful_shutdown(endpoint, shutdown, Some(SHUTDOWN_GRACE))
        .await
        .context("serving the simulator")
}

/// For embedding: the endpoint alone (state inside). With webhooks or
/// events configured it must be called inside a tokio runtime, which runs
/// their deliveries until the endpoint is dropped.
///
/// # Errors
/// The config in `cfg.config_dir` does not load, an outbound URL is
/// malformed, or deliveries have no runtime to run on.
pub fn endpoint(cfg: SimulatorConfig) -> anyhow::Result<BoxEndpoint<'static>> {
    let state = Arc::new(State::new(&cfg).context("starting the simulator")?);
    let route = Route::new()
        .at(
            "/connections/:connection/actions/:action/run",
            post(run::run_action),
        )
        .at("/connections/:connection", get(elements::get_connection))
        .at(
            "/connections/:connection/actions/:action",
            get(elements::get_action),
        )
        .nest("/_sim", admin::routes())
        .data(state)
        .catch_error(|_: NotFoundError| async {
            admin_error(StatusCode::NOT_FOUND, "no such route")
        })
        .catch_error(|_: MethodNotAllowedError| async {
            admin_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        });
    Ok(route.map_to_response().boxed())
}
