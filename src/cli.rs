//! The command line: one binary, one subcommand per process.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};
use crate::ops_cli::{self, JobsCommand, LinksCommand, Target};
use crate::{app, dev};

/// Two-way contact sync between MongoDB and CRMs through Integration.app.
#[derive(Parser, Debug)]
#[command(name = "contact-sync", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Configuration (environment variables or flags).
    #[command(flatten)]
    pub config: Config,
}

/// The processes and tools.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The HTTP api: contacts, jobs, health.
    Api,
    /// A worker of the pool: runs sync jobs.
    Worker,
    /// Enqueues periodic polls (safe to run several).
    Scheduler,
    /// The Integration.app stand-in with simulated HubSpot and Pipedrive.
    Simulator,
    /// Everything in one process (api, worker, simulator), for a first run.
    Dev,
    /// Benchmark: outbound sync throughput through the whole stack.
    BenchSync {
        /// Contacts to create.
        #[arg(long, default_value_t = 2000)]
        contacts: usize,
        /// Creates in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Benchmark: HubSpot webhook ingest by the api alone, at a steady rate.
    BenchWebhooks {
        /// Requests per second to send.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// How long to send.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Events per request (HubSpot sends at most 100).
        #[arg(long, default_value_t = 100)]
        events: usize,
        /// Also run `wrk` (closed loop) over pre-signed batches.
        #[arg(long)]
        wrk: bool,
    },
    /// Benchmark: inbound apply throughput (changes/s).
    BenchInbound {
        /// HubSpot records to create and apply.
        #[arg(long, default_value_t = 2000)]
        changes: usize,
    },
    /// Benchmark: a steady mixed load for a long while over the real
    /// processes; prints Redis memory, MongoDB documents and process RSS
    /// each minute.
    BenchSoak {
        /// How long the load runs, in minutes.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Contacts created at warm-up and edited from then on.
        #[arg(long, default_value_t = 500)]
        contacts: usize,
        /// App edits per second.
        #[arg(long, default_value_t = 10.0)]
        app_rate: f64,
        /// CRM edits per second (HubSpot and Pipedrive in turn).
        #[arg(long, default_value_t = 4.0)]
        crm_rate: f64,
    },
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

fn init_tracing(format: LogFormat) {
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
    init_tracing(cli.config.log_format);
    let cfg = cli.config;
    match cli.command {
        Command::Api => {
            let listener = app::bind(cfg.api_addr, "API_ADDR")?;
            app::run_api(&cfg, listener, app::shutdown_signal()).await
        }
        Command::Worker => app::run_worker(&cfg, app::shutdown_signal()).await,
        Command::Scheduler => app::run_scheduler(&cfg, app::shutdown_signal()).await,
        Command::Simulator => dev::run_simulator(&cfg, app::shutdown_signal()).await,
        Command::Dev => dev(cfg).await,
        Command::BenchSync {
            contacts,
            concurrency,
        } => crate::bench::bench_sync(cfg, contacts, concurrency).await,
        Command::BenchWebhooks {
            rate,
            seconds,
            events,
            wrk,
        } => crate::bench::bench_webhooks(cfg, rate, seconds, events, wrk).await,
        Command::BenchInbound { changes } => crate::bench::bench_inbound(cfg, changes).await,
        Command::BenchSoak {
            minutes,
            contacts,
            app_rate,
            crm_rate,
        } => {
            let soak = crate::bench::Soak {
                minutes,
                contacts,
                app_rate,
                crm_rate,
            };
            crate::bench::bench_soak(cfg, soak).await
        }
        Command::Jobs { cmd, target } => ops_cli::jobs(&target, cmd).await,
        Command::Links { cmd, target } => ops_cli::links(&target, cmd).await,
        Command::Workers { target } => ops_cli::workers(&target).await,
        Command::Stats { target } => ops_cli::stats(&target).await,
    }
}

/// api + worker + simulator in one process. Prints a line to try.
async fn dev(cfg: Config) -> anyhow::Result<()> {
    let stack = dev::Stack::start(cfg).await?;
    let (api, sim, token) = (stack.api_addr, stack.sim_addr, &stack.token);
    println!("contact-sync dev is up:");
    println!("  api        http://{api}   (docs: http://{api}/api/docs)");
    println!("  simulator  http://{sim}   (records: http://{sim}/_sim/hubspot/records)");
    println!("try:");
    println!(
        "  curl -s -X POST http://{api}/api/contacts -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"firstName\":\"Ada\",\"lastName\":\"Lovelace\",\"email\":\"ada@example.com\"}}'"
    );
    println!("  curl -s http://{api}/api/contacts -H 'Authorization: Bearer {token}'");
    stack.run_until_signal().await
}
