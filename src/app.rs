//! Start-up of each process: connect, build, serve, stop on a signal. `main`
//! only parses the configuration and calls in here, and tests start the
//! same processes the same way.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::{Acceptor, TcpAcceptor};
use workers::{Backoff, Queue, RateLimiter, WorkerConfig};

use crate::api::{self, ApiState};
use crate::config::{ApiProcess, MongoConfig, RedisConfig, SchedulerProcess, WorkerProcess};
use crate::crm::{CrmLimits, IntegrationApp, TokenMinter};
use crate::domain::{CustomerId, Provider, Secret};
use crate::jobs::{Contexts, Enqueuer, Tuning};
use crate::store::{Customers, Store};
use crate::sync::{InboundSync, Outbound};

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// How long a starting process waits out an outage of MongoDB or Redis
/// before it gives up: one restarted while a server is down (an
/// orchestrator's restart, a deploy) starts once it is back, as the running
/// processes carry on, instead of exiting.
const STARTUP_PATIENCE: Duration = Duration::from_secs(300);

/// Runs `attempt` until it succeeds, trying again while its error is an
/// outage (`outage`), with a doubling pause up to 5 s; any other error, or
/// an outage longer than [`STARTUP_PATIENCE`], is returned.
async fn patiently<T, F, Fut>(
    what: &str,
    outage: fn(&anyhow::Error) -> bool,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let until = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let mut pause = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if outage(&e) && tokio::time::Instant::now() + pause < until => {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = pause.as_millis() as u64,
                    "{what} unreachable at start-up; waiting for it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether Redis could not be reached (rather than refused us).
fn redis_outage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|r| r.is_io_error() || r.is_connection_refusal() || r.is_timeout())
    })
}

async fn connect_queue(cfg: &RedisConfig) -> anyhow::Result<Queue> {
    patiently("Redis", redis_outage, || async {
        Queue::connect(&cfg.redis_url, &cfg.redis_namespace)
            .await
            .with_context(|| format!("REDIS_URL {}: cannot connect", cfg.redis_url))
    })
    .await
}

/// Connects to MongoDB and prepares the database and the default customer.
async fn connect_store(
    cfg: &MongoConfig,
    integration: &crate::config::IntegrationAppConfig,
    providers: &[Provider],
) -> anyhow::Result<Store> {
    patiently("MongoDB", crate::store::is_outage, || async {
        let store = Store::connect_with(
            &cfg.mongodb_uri,
            &cfg.mongodb_db,
            Some(cfg.sync_log_retention()),
        )
        .await
        .context("MONGODB_URI: cannot connect or prepare the database")?;
        prepare_customers(&store, integration, providers).await?;
        Ok(store)
    })
    .await
}

/// Sets this process' default customer (`INTEGRATION_APP_CUSTOMER_ID`),
/// makes sure it exists, connected to `providers`, and gives it what was
/// written before there were customers.
async fn prepare_customers(
    store: &Store,
    cfg: &crate::config::IntegrationAppConfig,
    providers: &[Provider],
) -> anyhow::Result<()> {
    let id = CustomerId::parse(&cfg.integration_app_customer_id)
        .map_err(|m| anyhow::anyhow!("INTEGRATION_APP_CUSTOMER_ID: {m}"))?;
    CustomerId::set_default(id.clone());
    store
        .ensure_default_customer(&id, providers)
        .await
        .context("preparing the default customer")
}

/// Binds a listener, with the address in the error.
///
/// # Errors
/// When the address is taken or not local.
pub fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(addr).with_context(|| format!("{what}: cannot listen on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves the api on `listener` until `shutdown` resolves.
///
/// # Errors
/// When a dependency cannot be reached at start-up, or the token is unset.
pub async fn run_api(
    cfg: &ApiProcess,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = cfg.api.require_api_token()?;
    let tokens = api::auth::Tokens::new(
        std::iter::once(token.expose()).chain(cfg.api.operator_tokens.iter().map(Secret::expose)),
        cfg.api.viewer_tokens.iter().map(Secret::expose),
    );
    let hooks = api::Integration {
        webhook: api::hooks::hubspot::WebhookSettings {
            client_secret: cfg.hubspot.hubspot_client_secret.clone(),
            public_base_url: cfg.api.public_base_url.clone(),
        },
        events: api::hooks::flow::EventSettings {
            workspace_key: cfg.integration.integration_app_workspace_key.clone(),
            workspace_secret: cfg.integration.integration_app_workspace_secret.clone(),
        },
    };
    let queue = connect_queue(&cfg.redis).await?;
    let store = connect_store(&cfg.mongo, &cfg.integration, &cfg.sync.providers).await?;
    let state = ApiState {
        customers: Customers::new(store.clone(), cfg.sync.providers.clone()),
        store,
        metrics: workers::Metrics::new(&queue),
        enqueuer: Enqueuer::new(queue, cfg.jobs.retry_attempts)
            .with_dedup_ttl(Duration::from_secs(cfg.api.webhook_dedup_secs)),
        providers: cfg.sync.providers.clone(),
        first_sync_on_connect: cfg.jobs.first_sync_on_connect,
        rate_limits: Provider::ALL
            .iter()
            .map(|&p| (p, cfg.rate_limits.per_second(p)))
            .collect(),
        checker: api::Checker::new(
            &cfg.integration.integration_app_url,
            cfg.integration.require_workspace(),
            CustomerId::parse(&cfg.integration.integration_app_customer_id)
                .unwrap_or_else(|_| CustomerId::default_customer()),
            Duration::from_secs(cfg.integration.crm_call_timeout_secs.max(1)),
        )?,
    };
    if let Some(addr) = cfg.api.metrics_addr {
        let l = bind(addr, "METRICS_ADDR")?;
        let acceptor = TcpAcceptor::from_tokio(tokio::net::TcpListener::from_std(l)?)?;
        tracing::info!(addr = ?acceptor.local_addr(), "metrics listening");
        let metrics = api::metrics_app(state.clone());
        tokio::spawn(async move {
            if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(metrics).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    let metrics_here = cfg.api.metrics_addr.is_none();
    let acceptor = TcpAcceptor::from_tokio(tokio::net::TcpListener::from_std(listener)?)?;
    tracing::info!(addr = ?acceptor.local_addr(), "api listening");
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            api::app(state, tokens, hooks, metrics_here),
            shutdown,
            Some(Duration::from_secs(10)),
        )
        .await
        .context("api server failed")
}

/// What the job kinds of a worker run with: the CRM client (under the
/// pool-wide rate limits) and the sync services over it.
fn worker_contexts(
    cfg: &WorkerProcess,
    queue: &workers::Queue,
    store: &Store,
    metrics: &workers::Metrics,
) -> anyhow::Result<Contexts> {
    let (key, secret) = cfg.integration.require_workspace()?;
    let limits = CrmLimits {
        limiter: RateLimiter::new(queue),
        hubspot: cfg.rate_limits.per_second(Provider::Hubspot),
        pipedrive: cfg.rate_limits.per_second(Provider::Pipedrive),
        window: Duration::from_millis(1100),
    };
    let crm = IntegrationApp::new(
        &cfg.integration.integration_app_url,
        TokenMinter::new(&key, secret.expose()),
        Some(limits),
        // a CRM call may take no longer than one job attempt
        cfg.worker.job_timeout().min(Duration::from_secs(
            cfg.integration.crm_call_timeout_secs.max(1),
        )),
    )?
    .with_metrics(metrics.clone())
    .with_customers(Customers::new(store.clone(), cfg.sync.providers.clone()))
    .with_reconnect_probe(Duration::from_secs(
        cfg.integration.reconnect_probe_secs.max(1),
    ));
    let enqueuer = Enqueuer::new(queue.clone(), cfg.jobs.retry_attempts);
    let inbound = Arc::new(InboundSync::new(
        store.clone(),
        crm.clone(),
        Arc::new(enqueuer.clone()),
        queue.clone(),
        Customers::new(store.clone(), cfg.sync.providers.clone()),
        cfg.worker.conflict_policy,
    ));
    let outbound =
        Arc::new(Outbound::new(store.clone(), crm, queue.clone()).with_conflicts(inbound.clone()));
    Ok(Contexts {
        outbound,
        inbound,
        enqueuer,
        first_sync_slice: Duration::from_secs(cfg.jobs.first_sync_slice_secs),
        gather_backlog: cfg.worker.gather_backlog,
    })
}

/// Every queue's worker settings, before a job kind tunes its own.
fn worker_tuning(cfg: &WorkerProcess) -> Tuning {
    let mut worker = WorkerConfig::new("");
    worker.concurrency = cfg.worker.worker_concurrency;
    worker.max_attempts = cfg.jobs.retry_attempts;
    worker.backoff = Backoff {
        base: Duration::from_millis(cfg.worker.retry_base_ms),
        max: Duration::from_secs(300),
    };
    worker.heartbeat = Duration::from_millis(cfg.worker.worker_heartbeat_ms);
    worker.dead_after = Duration::from_millis(cfg.worker.worker_dead_after_ms);
    worker.shutdown_grace = Duration::from_secs(cfg.worker.shutdown_grace_secs);
    worker.done_retention = Duration::from_secs(cfg.worker.job_retention_secs);
    worker.max_stalls = cfg.worker.max_stalls;
    worker.dead_retention = cfg.worker.dead_retention();
    worker.dead_keep = cfg.worker.dead_keep;
    Tuning {
        worker,
        timeout: cfg.worker.job_timeout(),
    }
}

/// Runs the worker pool member until `shutdown` resolves, then drains.
///
/// # Errors
/// When a dependency cannot be reached at start-up.
pub async fn run_worker(
    cfg: &WorkerProcess,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let queue = connect_queue(&cfg.redis).await?;
    let store = connect_store(&cfg.mongo, &cfg.integration, &cfg.sync.providers).await?;
    let metrics = workers::Metrics::new(&queue);
    let contexts = worker_contexts(cfg, &queue, &store, &metrics)?;
    let name = cfg.worker.worker_name();
    let base = worker_tuning(cfg);
    tracing::info!(worker = %name, concurrency = cfg.worker.worker_concurrency, "worker started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Changes the api stored but could not queue (Redis down, a crash)
    // are queued from their outbox.
    let relay = tokio::spawn(crate::jobs::outbox::run(
        store.clone(),
        Enqueuer::new(queue.clone(), cfg.jobs.retry_attempts),
        async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let result =
        crate::jobs::run_workers(&queue, &contexts, &base, &name, &metrics, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = relay.await;
    let _ = metrics.flush().await;
    result.context("worker failed")
}

/// Runs the scheduler until `shutdown` resolves.
///
/// # Errors
/// When Redis cannot be reached at start-up.
pub async fn run_scheduler(
    cfg: &SchedulerProcess,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let enqueuer = Enqueuer::new(connect_queue(&cfg.redis).await?, cfg.jobs.retry_attempts);
    let store = connect_store(&cfg.mongo, &cfg.integration, &Provider::ALL).await?;
    crate::scheduler::run(
        enqueuer,
        store,
        cfg.scheduler.poll_providers.clone(),
        Duration::from_secs(cfg.scheduler.poll_interval_secs),
        Duration::from_secs(cfg.scheduler.full_scan_interval_secs),
        Duration::from_secs(cfg.scheduler.first_sync_stall_secs),
        shutdown,
    )
    .await
}
