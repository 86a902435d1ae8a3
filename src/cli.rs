//! The command line: one binary, one subcommand per process.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app;
use crate::config::{ApiProcess, CheckProcess, LogFormat, SchedulerProcess, WorkerProcess};
use crate::ops_cli::{self, JobsCommand, LinksCommand, Target};

/// Two-way contact sync between MongoDB and CRMs through Integration.app.
#[derive(Parser, Debug)]
#[command(name = "contact-sync", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// The processes and tools.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The HTTP api: contacts, jobs, health.
    Api(ApiProcess),
    /// A worker of the pool: runs sync jobs.
    Worker(WorkerProcess),
    /// Enqueues periodic polls (safe to run several).
    Scheduler(SchedulerProcess),
    /// Operator: checks the workspace, every enabled connection and the
    /// actions the app runs on it, against Integration.app.
    Check(CheckProcess),
    /// Operator: list, inspect, retry, discard and purge jobs (through the api).
    Jobs {
        /// What to do.
        #[command(subcommand)]
        cmd: JobsCommand,
        /// The api to talk to.
        #[command(flatten)]
        target: Target,
    },
    /// Operator: list contacts' links with the CRMs and push them again.
    Links {
        /// What to do.
        #[command(subcommand)]
        cmd: LinksCommand,
        /// The api to talk to.
        #[command(flatten)]
        target: Target,
    },
    /// Operator: the live workers of every queue.
    Workers {
        /// The api to talk to.
        #[command(flatten)]
        target: Target,
    },
    /// Operator: queue depths and throughput, CRM connection health.
    Stats {
        /// The api to talk to.
        #[command(flatten)]
        target: Target,
    },
}

/// Sets up logging to stderr, filtered by `RUST_LOG`.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,poem=warn,mongodb=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs the chosen command.
///
/// # Errors
/// Start-up failures, with the variable or dependency at fault named.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(cli.log_format);
    match cli.command {
        Command::Api(cfg) => {
            let listener = app::bind(cfg.api.api_addr, "API_ADDR")?;
            app::run_api(&cfg, listener, app::shutdown_signal()).await
        }
        Command::Worker(cfg) => app::run_worker(&cfg, app::shutdown_signal()).await,
        Command::Scheduler(cfg) => app::run_scheduler(&cfg, app::shutdown_signal()).await,
        Command::Check(cfg) => crate::check::run(&cfg).await,
        Command::Jobs { cmd, target } => ops_cli::jobs(&target, cmd).await,
        Command::Links { cmd, target } => ops_cli::links(&target, cmd).await,
        Command::Workers { target } => ops_cli::workers(&target).await,
        Command::Stats { target } => ops_cli::stats(&target).await,
    }
}
