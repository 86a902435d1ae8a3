//! `contact-sync-dev`: the tools that run beside the product, not in it —
//! the simulator (an Integration.app stand-in with HubSpot and Pipedrive),
//! the all-in-one `dev` stack for a first run, and the benchmarks.
//!
//! # Layout
//! - `stack` — the simulator and the all-in-one stack (api, worker,
//!   scheduler and simulator in one process).
//! - `bench` — benchmarks over that stack, and the soak over real processes.

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: under many threads glibc's
/// malloc and free were about a fifth of the process's time in
/// `bench-sync`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod stack;

use stack::{DevConfig, SimulatorSettings};

/// Development tools for contact-sync: simulator, all-in-one stack, benchmarks.
#[derive(Parser, Debug)]
#[command(name = "contact-sync-dev", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    log_format: contact_sync::config::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The Integration.app stand-in with simulated HubSpot and Pipedrive.
    Simulator {
        #[command(flatten)]
        sim: SimulatorSettings,
        #[command(flatten)]
        integration: contact_sync::config::IntegrationAppConfig,
        #[command(flatten)]
        hubspot: contact_sync::config::HubspotAppConfig,
    },
    /// Everything in one process (api, worker, scheduler, simulator), for a
    /// first run.
    Dev(DevConfig),
    /// Benchmark: outbound sync throughput through the whole stack.
    BenchSync {
        #[command(flatten)]
        cfg: DevConfig,
        /// Contacts to create.
        #[arg(long, default_value_t = 2000)]
        contacts: usize,
        /// Creates in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Send creates at this steady rate per second instead (open loop;
        /// `--concurrency` is then ignored).
        #[arg(long)]
        rate: Option<f64>,
        /// Also count and time every MongoDB command of the stack (the
        /// driver's command monitor, which costs the process CPU itself).
        #[arg(long)]
        profile: bool,
    },
    /// Benchmark: HubSpot webhook ingest by the api alone, at a steady rate.
    BenchWebhooks {
        #[command(flatten)]
        cfg: DevConfig,
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
    /// Benchmark: one customer's backlog against another customer's
    /// single edits (fair groups).
    BenchFair {
        #[command(flatten)]
        cfg: DevConfig,
        /// Customer A's queued pushes (two per contact).
        #[arg(long, default_value_t = 50_000)]
        pushes: usize,
        /// Milliseconds between customer B's writes.
        #[arg(long, default_value_t = 100)]
        every_ms: u64,
        /// Longest the run goes on, in seconds.
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Benchmark: inbound apply throughput (changes/s).
    BenchInbound {
        #[command(flatten)]
        cfg: DevConfig,
        /// HubSpot records to create and apply.
        #[arg(long, default_value_t = 2000)]
        changes: usize,
        /// Send the changes as HubSpot does, in signed webhook batches of
        /// 100 events to the api, instead of queueing their jobs directly.
        #[arg(long)]
        webhooks: bool,
    },
    /// Benchmark: a customer's first sync at the CRMs' rate-limit floor
    /// (HubSpot 100 requests / 10 s, Pipedrive 20 / 2 s), beside that floor.
    BenchFirstSync {
        #[command(flatten)]
        cfg: DevConfig,
        /// Contacts on each side (the app, HubSpot, Pipedrive), half of
        /// each overlapping another side by email.
        #[arg(long, default_value_t = 200)]
        contacts: usize,
        /// Longest the run may take, in seconds.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
        /// The older first sync: every contact's push queued, and a
        /// backfill of each CRM.
        #[arg(long)]
        per_contact: bool,
        /// With `--per-contact`: the pushes waiting on a HubSpot
        /// connection are gathered into batch writes (`GATHER_BACKLOG`),
        /// as for a bulk import in the app.
        #[arg(long, requires = "per_contact")]
        gathered: bool,
    },
    /// Benchmark: a steady mixed load for a long while over the real
    /// processes; prints Redis memory, MongoDB documents and process RSS
    /// each minute.
    BenchSoak {
        #[command(flatten)]
        cfg: DevConfig,
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
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    contact_sync::cli::init_tracing(cli.log_format);
    let signal = contact_sync::app::shutdown_signal();
    match cli.command {
        Command::Simulator {
            sim,
            integration,
            hubspot,
        } => stack::run_simulator(&sim, &integration, &hubspot, signal).await,
        Command::Dev(cfg) => dev(cfg).await,
        Command::BenchSync {
            cfg,
            contacts,
            concurrency,
            rate,
            profile,
        } => bench::bench_sync(cfg, contacts, concurrency, rate, profile).await,
        Command::BenchWebhooks {
            cfg,
            rate,
            seconds,
            events,
            wrk,
        } => bench::bench_webhooks(cfg, rate, seconds, events, wrk).await,
        Command::BenchInbound {
            cfg,
            changes,
            webhooks,
        } => bench::bench_inbound(cfg, changes, webhooks).await,
        Command::BenchFair {
            cfg,
            pushes,
            every_ms,
            max_secs,
        } => {
            let fair = bench::Fair {
                pushes,
                every_ms,
                max_secs,
            };
            bench::bench_fair(cfg, fair).await
        }
        Command::BenchFirstSync {
            cfg,
            contacts,
            max_secs,
            per_contact,
            gathered,
        } => {
            let run = bench::FirstSync {
                contacts,
                max_secs,
                per_contact,
                gathered,
            };
            bench::bench_first_sync(cfg, run).await
        }
        Command::BenchSoak {
            cfg,
            minutes,
            contacts,
            app_rate,
            crm_rate,
        } => {
            let soak = bench::Soak {
                minutes,
                contacts,
                app_rate,
                crm_rate,
            };
            bench::bench_soak(cfg, soak).await
        }
    }
}

/// api + worker + scheduler + simulator in one process. Prints a line to try.
async fn dev(cfg: DevConfig) -> anyhow::Result<()> {
    let stack = stack::Stack::start(cfg).await?;
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
