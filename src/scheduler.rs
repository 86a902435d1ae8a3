//! The scheduler: queues a `provider-poll` once per poll interval for every
//! polled connection (each customer's enabled connection with a polled
//! provider), a full scan (which notices deletions) once per full-scan
//! interval, spread over the interval: the interval is cut into one-second
//! slots and each connection polls in its own slot (a hash of its name), so
//! a thousand connections polled every ten minutes give one or two polls a
//! second rather than a thousand at once. Ticks come from apalis-cron (a
//! [`CronScheduler`] over an aligned step, run by an apalis worker);
//! apalis-cron schedules per process, so each connection's poll of an
//! interval is also claimed once in Redis and any number of scheduler
//! replicas queue it exactly once. It also queues again a first sync that
//! stood still (`FIRST_SYNC_STALL_SECS`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_cron::timezone::Utc;
use apalis_cron::{CronScheduler, Schedule, Tick};

use crate::domain::{CustomerId, Provider};
use crate::jobs::Enqueuer;
use crate::store::Store;

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

/// Connections to poll: (customer, provider).
type Connections = Vec<(CustomerId, Provider)>;

/// What a tick needs.
struct Ticks {
    enqueuer: Enqueuer,
    store: Store,
    providers: Vec<Provider>,
    /// Seconds between ticks (one slot).
    step_secs: u64,
    /// Slots per poll interval.
    slots: u64,
    /// Every this many intervals a poll is a full scan (0: never).
    full_every: u64,
    /// How long a first sync underway may stand still before it is queued
    /// again (zero: never).
    stall: Duration,
    /// The connections to poll, and when they were read.
    known: tokio::sync::Mutex<Option<(std::time::Instant, Connections)>>,
}

/// How long the list of connections is used before it is read again.
const CONNECTIONS_TTL: Duration = Duration::from_secs(30);

/// The slot of the interval a connection polls in: the same on every
/// replica and every version (SHA-256, not the std hasher).
fn slot_of(customer: &CustomerId, provider: Provider, slots: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{customer}:{provider}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first) % slots.max(1)
}

/// The connections to poll: the cached list, read again when older than
/// [`CONNECTIONS_TTL`] or the interval.
async fn current(ctx: &Ticks) -> anyhow::Result<Connections> {
    let mut known = ctx.known.lock().await;
    let ttl = CONNECTIONS_TTL.min(Duration::from_secs(ctx.step_secs * ctx.slots));
    if let Some((at, list)) = known.as_ref() {
        if at.elapsed() < ttl {
            return Ok(list.clone());
        }
    }
    // every enabled connection with a polled provider
    let list = ctx.store.enabled_connections(&ctx.providers).await?;
    *known = Some((std::time::Instant::now(), list.clone()));
    Ok(list)
}

/// Queues again the first syncs that stood still for `ctx.stall`: their
/// job was lost (Redis lost its data) or ended before it queued the write
/// steps waiting on it. A first sync queued twice does its work once: its
/// steps run under the connection's poll lease and read the step they
/// are at. Each is queued by one replica (the store touches it once).
async fn watch_first_syncs(ctx: &Ticks) {
    let stalled = match ctx.store.stalled_first_syncs(ctx.stall).await {
        Ok(stalled) => stalled,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading the first syncs underway failed");
            return;
        }
    };
    for (customer, p) in stalled {
        match ctx.enqueuer.first_sync(&customer, p).await {
            Ok(id) => {
                tracing::warn!(%customer, provider = %p, job_id = %id, stall_secs = ctx.stall.as_secs(),
                    "a first sync stood still; queued again")
            }
            Err(e) => {
                tracing::warn!(%customer, provider = %p, error = %e, "queueing a stalled first sync failed")
            }
        }
    }
}

/// Queues the polls of the tick's slot, each claimed once pool-wide per
/// interval. A failure is logged and the poll is not retried: the next
/// interval polls from the same cursor. Every few ticks it also looks for
/// first syncs that stood still.
async fn on_tick(tick: Tick<Utc>, ctx: Data<Arc<Ticks>>) {
    let index = tick.get_timestamp() / ctx.step_secs;
    let stall_secs = ctx.stall.as_secs();
    if stall_secs > 0 && index.is_multiple_of((stall_secs / 4).clamp(1, 30)) {
        watch_first_syncs(&ctx).await;
    }
    let (interval, slot) = (index / ctx.slots, index % ctx.slots);
    let interval_ms = ctx.step_secs * ctx.slots * 1000;
    let ttl = Duration::from_secs(ctx.step_secs * ctx.slots * 2);
    let all = match current(&ctx).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading the connections to poll failed; the next tick tries again");
            return;
        }
    };
    for (customer, p) in all {
        if slot_of(&customer, p, ctx.slots) != slot {
            continue;
        }
        let key = format!("tick:{customer}:{p}:{interval_ms}:{interval}");
        let full = ctx.full_every > 0 && interval % ctx.full_every == 0;
        match ctx.enqueuer.queue().claim_once(&key, ttl).await {
            Ok(true) => match ctx.enqueuer.poll(&customer, p, full).await {
                Ok(id) => {
                    tracing::info!(%customer, provider = %p, job_id = %id, interval, slot, full, "poll queued")
                }
                Err(e) => {
                    tracing::warn!(%customer, provider = %p, error = %e, "queueing a poll failed")
                }
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a poll of the interval failed"),
        }
    }
}

/// Runs until `shutdown` resolves.
///
/// # Errors
/// When the apalis worker fails.
pub async fn run(
    enqueuer: Enqueuer,
    store: Store,
    providers: Vec<Provider>,
    interval: Duration,
    full_scan: Duration,
    first_sync_stall: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // One-second slots (an interval under a second is one slot of its own).
    let interval_secs = interval.as_secs().max(1);
    let full_every = match full_scan.as_secs() {
        0 => 0,
        secs => secs.div_ceil(interval_secs).max(1),
    };
    let every = Every::new(Duration::from_secs(1));
    tracing::info!(?providers, interval_secs, "scheduler started");
    let ticks = Arc::new(Ticks {
        enqueuer,
        store,
        providers,
        step_secs: every.step_secs,
        slots: interval_secs / every.step_secs,
        full_every,
        stall: first_sync_stall,
        known: tokio::sync::Mutex::new(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spread_evenly_over_the_slots() {
        let slots = 600;
        let mut per_slot = vec![0u32; slots as usize];
        for i in 0..1000 {
            let c = CustomerId::parse(&format!("customer-{i}")).unwrap();
            let s = slot_of(&c, Provider::Pipedrive, slots);
            assert_eq!(s, slot_of(&c, Provider::Pipedrive, slots), "stable");
            per_slot[s as usize] += 1;
        }
        let busiest = per_slot.iter().max().copied().unwrap_or(0);
        assert!(
            busiest <= 8,
            "1,000 connections over 600 slots: at most {busiest} in one"
        );
        assert_eq!(
            slot_of(&CustomerId::parse("x").unwrap(), Provider::Hubspot, 1),
            0
        );
    }
}
