//! The scheduler: queues a `provider-poll` per polled provider at every
//! multiple of the poll interval. Ticks come from apalis-cron (a
//! [`CronScheduler`] over an aligned interval, run by an apalis worker);
//! apalis-cron schedules per process, so each tick is also claimed once in
//! Redis and any number of scheduler replicas queue it exactly once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_cron::timezone::Utc;
use apalis_cron::{CronScheduler, Schedule, Tick};

use crate::domain::Provider;
use crate::jobs::Enqueuer;

/// Every multiple of a number of seconds since the epoch, so the replicas
/// of the scheduler tick at the same instants and agree on each tick's key.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    step_secs: u64,
}

impl Every {
    /// Ticks every `interval` (whole seconds, at least one).
    pub fn new(interval: Duration) -> Self {
        Self {
            step_secs: interval.as_secs().max(1),
        }
    }
}

impl Schedule<Utc> for Every {
    fn next_tick(&mut self, _: &Utc) -> Option<Tick<Utc>> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(Tick::new((now / self.step_secs + 1) * self.step_secs))
    }
}

/// What a tick needs.
struct Ticks {
    enqueuer: Enqueuer,
    providers: Vec<Provider>,
    step_secs: u64,
}

/// Queues the tick's polls, each claimed once pool-wide. A failure is
/// logged and the tick is not retried: the next one polls from the same
/// cursor.
async fn on_tick(tick: Tick<Utc>, ctx: Data<Arc<Ticks>>) {
    let index = tick.get_timestamp() / ctx.step_secs;
    let ttl = Duration::from_secs(ctx.step_secs * 2);
    for &p in &ctx.providers {
        let key = format!("tick:{p}:{}:{index}", ctx.step_secs * 1000);
        match ctx.enqueuer.queue().claim_once(&key, ttl).await {
            Ok(true) => match ctx.enqueuer.poll(p, false).await {
                Ok(id) => tracing::info!(provider = %p, job_id = %id, tick = index, "poll queued"),
                Err(e) => tracing::warn!(provider = %p, error = %e, "queueing a poll failed"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a scheduler tick failed"),
        }
    }
}

/// Runs until `shutdown` resolves.
///
/// # Errors
/// When the apalis worker fails.
pub async fn run(
    enqueuer: Enqueuer,
    providers: Vec<Provider>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let every = Every::new(interval);
    tracing::info!(
        ?providers,
        interval_secs = every.step_secs,
        "scheduler started"
    );
    let ticks = Arc::new(Ticks {
        enqueuer,
        providers,
        step_secs: every.step_secs,
    });
    let worker = WorkerBuilder::new("scheduler")
        .backend(CronScheduler::new(every))
        .data(ticks)
        .build(on_tick);
    worker
        .run_until(async move {
            shutdown.await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("scheduler: {e}"))?;
    tracing::info!("scheduler stopped");
    Ok(())
}
