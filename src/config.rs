//! Configuration, read from the environment (12-factor), grouped by
//! concern. Every variable can also be given as a flag. Each process
//! subcommand reads only the groups it uses, so `contact-sync api --help`
//! lists what the api reads and nothing else. A malformed value stops
//! start-up with clap's one-line error naming it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::domain::{Provider, Secret};

/// The Redis holding the job queues.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Redis")]
pub struct RedisConfig {
    /// Redis holding the job queues.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of every Redis key, so deployments can share one Redis.
    #[arg(long, env = "REDIS_NAMESPACE", default_value = "contact-sync")]
    pub redis_namespace: String,
}

/// The MongoDB holding contacts, links and sync logs.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "MongoDB")]
pub struct MongoConfig {
    /// MongoDB holding contacts, links and sync logs.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    pub mongodb_uri: String,
    /// Database name inside MongoDB.
    #[arg(long, env = "MONGODB_DB", default_value = "contact_sync")]
    pub mongodb_db: String,
    /// Sync log entries are kept this many days, fractions allowed (a TTL
    /// index; 0: forever).
    #[arg(long, env = "SYNC_LOG_RETENTION_DAYS", default_value_t = 90.0)]
    pub sync_log_retention_days: f64,
}

impl MongoConfig {
    /// How long sync log entries are kept (zero: forever).
    pub fn sync_log_retention(&self) -> Duration {
        days(self.sync_log_retention_days)
    }
}

/// The HTTP api.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Api")]
pub struct ApiConfig {
    /// Where the api listens.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
    /// Bearer token required on /api/* (the api refuses to start without it).
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,
    /// More operator tokens (read and change), comma-separated.
    #[arg(
        long,
        env = "OPERATOR_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub operator_tokens: Vec<Secret>,
    /// Read-only tokens, comma-separated.
    #[arg(
        long,
        env = "VIEWER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub viewer_tokens: Vec<Secret>,
    /// Public base URL of the api as HubSpot calls it (e.g. behind a proxy);
    /// v2/v3 signatures cover the full URL. Default: rebuilt from the request.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// How long a HubSpot webhook event is remembered at least, in seconds,
    /// so a redelivery is recognised (HubSpot retries for up to 24 h); at
    /// most twice that. Every api of a pool must use the same value.
    #[arg(long, env = "WEBHOOK_DEDUP_SECS", default_value_t = 90_000)]
    pub webhook_dedup_secs: u64,
    /// Where to serve `/metrics` on a listener of its own, without a token.
    /// Unset: `/metrics` is served by the api and needs a viewer or
    /// operator token.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl ApiConfig {
    /// The api token, or the one-line reason the api cannot start.
    ///
    /// # Errors
    /// When `API_TOKEN` is unset or empty.
    pub fn require_api_token(&self) -> anyhow::Result<Secret> {
        match &self.api_token {
            Some(t) if !t.is_blank() => Ok(Secret::from(t.expose().trim())),
            _ => anyhow::bail!("API_TOKEN is not set: the api needs a bearer token for /api/*"),
        }
    }
}

/// The HubSpot app whose webhooks the api receives.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "HubSpot app")]
pub struct HubspotAppConfig {
    /// HubSpot app client secret: verifies webhook signatures (v1/v2/v3).
    #[arg(long, env = "HUBSPOT_CLIENT_SECRET", hide_env_values = true)]
    pub hubspot_client_secret: Option<Secret>,
}

/// Which CRMs the contacts are synced to.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Sync")]
pub struct SyncConfig {
    /// CRMs every contact is synced to, comma-separated.
    #[arg(
        long,
        env = "PROVIDERS",
        default_value = "hubspot,pipedrive",
        value_delimiter = ','
    )]
    pub providers: Vec<Provider>,
}

/// What every process that queues jobs gives them.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Jobs")]
pub struct JobsConfig {
    /// Attempts a sync job gets before it is parked in the dead set.
    #[arg(long, env = "RETRY_ATTEMPTS", default_value_t = 3)]
    pub retry_attempts: u32,
    /// Start a connection's first sync when the api records it (a new
    /// customer's connections, a connection added to a customer).
    #[arg(long, env = "FIRST_SYNC_ON_CONNECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub first_sync_on_connect: bool,
    /// How long a slice of a first sync's writes runs before it queues
    /// the next as a job of its own (keep it well within 20 ×
    /// `JOB_TIMEOUT_SECS`, a poll job's timeout).
    #[arg(long, env = "FIRST_SYNC_SLICE_SECS", default_value_t = 240)]
    pub first_sync_slice_secs: u64,
}

/// A worker process of the pool.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Worker")]
pub struct WorkerConfig {
    /// Jobs one worker process runs at once, per queue.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,
    /// Unique name of this worker in the pool (default: host-pid-random).
    #[arg(long, env = "WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Who wins when a contact changed in the app and in a CRM: crm-wins,
    /// app-wins or newest-wins.
    #[arg(long, env = "CONFLICT_POLICY", default_value = "crm-wins")]
    pub conflict_policy: crate::sync::ConflictPolicy,
    /// A push that finds at least this many pushes to its connection
    /// waiting (a bulk import, a resync of many) hands them to one write
    /// step in batches, where the CRM takes batches (HubSpot); 0: never.
    #[arg(long, env = "GATHER_BACKLOG", default_value_t = 50)]
    pub gather_backlog: u64,
    /// First retry delay in ms; doubles each attempt, with jitter.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 500)]
    pub retry_base_ms: u64,
    /// Longest one job attempt may run, in seconds.
    #[arg(long, env = "JOB_TIMEOUT_SECS", default_value_t = 30)]
    pub job_timeout_secs: u64,
    /// How often a worker heart-beats, in ms.
    #[arg(long, env = "WORKER_HEARTBEAT_MS", default_value_t = 2000)]
    pub worker_heartbeat_ms: u64,
    /// A worker silent this long (ms) is dead; its jobs are run elsewhere.
    #[arg(long, env = "WORKER_DEAD_AFTER_MS", default_value_t = 15000)]
    pub worker_dead_after_ms: u64,
    /// On SIGTERM, how long in-flight jobs may take to finish, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// How long finished jobs stay inspectable, in seconds.
    #[arg(long, env = "JOB_RETENTION_SECS", default_value_t = 3600)]
    pub job_retention_secs: u64,
    /// A job whose worker died while running it this many times is dead
    /// ("worker died while running it") instead of being run again.
    #[arg(long, env = "MAX_STALLS", default_value_t = 3)]
    pub max_stalls: u32,
    /// Dead jobs are kept this many days, fractions allowed (0: no age limit).
    #[arg(long, env = "DEAD_RETENTION_DAYS", default_value_t = 180.0)]
    pub dead_retention_days: f64,
    /// At most this many dead jobs are kept per queue, the oldest dropped
    /// first (0: no count limit).
    #[arg(long, env = "DEAD_KEEP", default_value_t = 10_000)]
    pub dead_keep: u64,
}

impl WorkerConfig {
    /// A worker name unique in the pool.
    pub fn worker_name(&self) -> String {
        self.worker_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into());
            let tag: u32 = rand::random();
            format!("{host}-{}-{tag:08x}", std::process::id())
        })
    }

    /// How long dead jobs are kept (zero: no age limit).
    pub fn dead_retention(&self) -> Duration {
        days(self.dead_retention_days)
    }

    /// Longest one job attempt may run.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_secs)
    }
}

/// The Integration.app workspace the CRMs are reached through.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Integration.app")]
pub struct IntegrationAppConfig {
    /// Base URL of Integration.app (or of the simulator).
    #[arg(
        long,
        env = "INTEGRATION_APP_URL",
        default_value = "https://api.integration.app"
    )]
    pub integration_app_url: String,
    /// Workspace key: the `iss` of the tokens minted for Integration.app.
    #[arg(long, env = "INTEGRATION_APP_WORKSPACE_KEY")]
    pub integration_app_workspace_key: Option<String>,
    /// Workspace secret that signs those tokens (HS512) and Integration.app's
    /// flow events.
    #[arg(long, env = "INTEGRATION_APP_WORKSPACE_SECRET", hide_env_values = true)]
    pub integration_app_workspace_secret: Option<Secret>,
    /// Customer id (`id` claim) the connections belong to.
    #[arg(
        long,
        env = "INTEGRATION_APP_CUSTOMER_ID",
        default_value = "contact-sync"
    )]
    pub integration_app_customer_id: String,
    /// Longest one CRM call may take, in seconds (never longer than a job
    /// attempt). A call nobody answers then fails as transient and is
    /// retried, instead of holding its worker slot for the whole attempt.
    #[arg(long, env = "CRM_CALL_TIMEOUT_SECS", default_value_t = 10)]
    pub crm_call_timeout_secs: u64,
    /// While a connection needs reconnecting (Integration.app does not know
    /// it, or an action on it, or it is defunct), one call at most every
    /// this many seconds tries it again; its other jobs wait that long
    /// without using an attempt.
    #[arg(long, env = "RECONNECT_PROBE_SECS", default_value_t = 30)]
    pub reconnect_probe_secs: u64,
}

impl IntegrationAppConfig {
    /// Workspace key and secret, or the reason the process cannot start.
    ///
    /// # Errors
    /// When either is unset.
    pub fn require_workspace(&self) -> anyhow::Result<(String, Secret)> {
        let key = self
            .integration_app_workspace_key
            .clone()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("INTEGRATION_APP_WORKSPACE_KEY is not set"))?;
        let secret = self
            .integration_app_workspace_secret
            .clone()
            .filter(|k| !k.is_blank())
            .ok_or_else(|| anyhow::anyhow!("INTEGRATION_APP_WORKSPACE_SECRET is not set"))?;
        Ok((key, secret))
    }
}

/// Calls per second each CRM takes, shared by the whole pool.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Rate limits (per CRM, pool-wide)")]
pub struct RateLimits {
    /// HubSpot calls per second, shared by the whole pool.
    #[arg(long, env = "RATE_LIMIT_HUBSPOT", default_value_t = 9)]
    pub rate_limit_hubspot: u32,
    /// Pipedrive calls per second, shared by the whole pool.
    #[arg(long, env = "RATE_LIMIT_PIPEDRIVE", default_value_t = 9)]
    pub rate_limit_pipedrive: u32,
}

impl RateLimits {
    /// The pool-wide calls-per-second budget of a provider.
    pub fn per_second(&self, provider: Provider) -> u32 {
        match provider {
            Provider::Hubspot => self.rate_limit_hubspot,
            Provider::Pipedrive => self.rate_limit_pipedrive,
        }
    }

    /// Sets the budget of a provider.
    pub fn set(&mut self, provider: Provider, per_second: u32) {
        match provider {
            Provider::Hubspot => self.rate_limit_hubspot = per_second,
            Provider::Pipedrive => self.rate_limit_pipedrive = per_second,
        }
    }
}

/// The scheduler of periodic polls.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Scheduler")]
pub struct SchedulerConfig {
    /// CRMs the scheduler polls for changes, comma-separated (HubSpot too,
    /// as a safety net for lost webhooks).
    #[arg(
        long,
        env = "POLL_PROVIDERS",
        default_value = "pipedrive",
        value_delimiter = ','
    )]
    pub poll_providers: Vec<Provider>,
    /// Seconds between polls.
    #[arg(long, env = "POLL_INTERVAL_SECS", default_value_t = 600)]
    pub poll_interval_secs: u64,
    /// Seconds between full scans of a polled connection: every record is
    /// read and the linked ones no longer there are applied as deleted (a
    /// CRM's list of changes shows no deletions). 0 turns them off.
    #[arg(long, env = "FULL_SCAN_INTERVAL_SECS", default_value_t = 86_400)]
    pub full_scan_interval_secs: u64,
    /// Seconds a first sync underway may stand still (no page listed, no
    /// batch written, no step taken) before the scheduler queues it again:
    /// its job was lost, or ended before it queued the steps waiting on
    /// it. Well over a slice (`FIRST_SYNC_SLICE_SECS`). 0 turns it off.
    #[arg(long, env = "FIRST_SYNC_STALL_SECS", default_value_t = 900)]
    pub first_sync_stall_secs: u64,
}

/// What the api process reads.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiProcess {
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub hubspot: HubspotAppConfig,
    #[command(flatten)]
    pub sync: SyncConfig,
    #[command(flatten)]
    pub jobs: JobsConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    #[command(flatten)]
    pub integration: IntegrationAppConfig,
    #[command(flatten)]
    pub rate_limits: RateLimits,
}

/// What `contact-sync check` reads: the workspace, and the customers whose
/// connections it checks.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckProcess {
    #[command(flatten)]
    pub sync: SyncConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    #[command(flatten)]
    pub integration: IntegrationAppConfig,
}

/// What a worker process reads.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerProcess {
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub sync: SyncConfig,
    #[command(flatten)]
    pub jobs: JobsConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    #[command(flatten)]
    pub integration: IntegrationAppConfig,
    #[command(flatten)]
    pub rate_limits: RateLimits,
}

/// What the scheduler process reads.
#[derive(clap::Args, Debug, Clone)]
pub struct SchedulerProcess {
    #[command(flatten)]
    pub scheduler: SchedulerConfig,
    #[command(flatten)]
    pub jobs: JobsConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    /// Which customers have which connections.
    #[command(flatten)]
    pub mongo: MongoConfig,
    #[command(flatten)]
    pub integration: IntegrationAppConfig,
}

/// Everything, for tools that run the whole stack in one process (the
/// all-in-one `dev` and the benchmarks).
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub hubspot: HubspotAppConfig,
    #[command(flatten)]
    pub sync: SyncConfig,
    #[command(flatten)]
    pub jobs: JobsConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub scheduler: SchedulerConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    #[command(flatten)]
    pub integration: IntegrationAppConfig,
    #[command(flatten)]
    pub rate_limits: RateLimits,
}

impl Config {
    /// The api's part.
    pub fn api_process(&self) -> ApiProcess {
        ApiProcess {
            api: self.api.clone(),
            hubspot: self.hubspot.clone(),
            sync: self.sync.clone(),
            jobs: self.jobs.clone(),
            redis: self.redis.clone(),
            mongo: self.mongo.clone(),
            integration: self.integration.clone(),
            rate_limits: self.rate_limits.clone(),
        }
    }

    /// A worker's part.
    pub fn worker_process(&self) -> WorkerProcess {
        WorkerProcess {
            worker: self.worker.clone(),
            sync: self.sync.clone(),
            jobs: self.jobs.clone(),
            redis: self.redis.clone(),
            mongo: self.mongo.clone(),
            integration: self.integration.clone(),
            rate_limits: self.rate_limits.clone(),
        }
    }

    /// The scheduler's part.
    pub fn scheduler_process(&self) -> SchedulerProcess {
        SchedulerProcess {
            scheduler: self.scheduler.clone(),
            jobs: self.jobs.clone(),
            redis: self.redis.clone(),
            mongo: self.mongo.clone(),
            integration: self.integration.clone(),
        }
    }
}

/// How logs are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A number of days (fractions allowed; negative or not finite: zero).
fn days(d: f64) -> Duration {
    Duration::try_from_secs_f64(d * 86_400.0).unwrap_or(Duration::ZERO)
}
