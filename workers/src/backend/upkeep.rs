//! A worker's upkeep task: start-up (recover its own previous claims,
//! first heartbeat), then heartbeats with the recovery of dead peers' jobs
//! and the trimming of finished ones, the batched acknowledgements, and on close the last acks and leaving the
//! pool.
//!
//! Why a task of its own rather than work done in `poll_ready`: apalis polls
//! a backend only when it wants a task — not while every slot is busy and not
//! while it drains at shutdown. Heartbeats driven from `poll_ready` would stop
//! during a long drain or a long job, and peers would take the live worker's
//! jobs. The task is owned by the backend and aborted when it is dropped, so
//! a dropped worker goes silent like a crashed one and its peers recover its
//! jobs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::shared::Shared;
use crate::claim::MAX_BATCH;
use crate::job::lock;
use crate::queue::chrono_ms;

/// Runs a worker's upkeep until `close` turns true, then writes the last
/// acks and leaves the pool.
pub(crate) async fn run(
    shared: Arc<Shared>,
    acks: mpsc::UnboundedReceiver<Arc<str>>,
    mut close: watch::Receiver<bool>,
    service: String,
) {
    let info = [
        ("queue", shared.cfg.queue.clone()),
        ("concurrency", shared.cfg.concurrency.to_string()),
        ("host", host_name()),
        ("pid", std::process::id().to_string()),
        ("started", chrono_ms().to_string()),
        ("service", service),
    ];
    let first_beat = tokio::select! {
        at = start(&shared, &info) => at,
        _ = close.wait_for(|c| *c) => return,
    };
    shared.started.store(true, Ordering::Release);
    shared.wake();
    tokio::select! {
        () = heartbeat_loop(&shared, &info, first_beat) => {}
        () = ack_loop(&shared, acks, close) => {}
    }
    leave(&shared).await;
}

/// Recovers what a previous life of this worker left claimed (as stalls,
/// as if a peer had reaped it) and beats once; repeats until Redis answers.
/// Claims must not start before: they would be taken for leftovers.
async fn start(shared: &Shared, info: &[(&str, String)]) -> Instant {
    let (q, w) = (&*shared.qname, &*shared.worker);
    let mut wait = Duration::from_millis(50);
    loop {
        let started = async {
            let recovered = shared.queue.recover_own(q, w).await?;
            if recovered > 0 {
                tracing::warn!(queue = %q, worker = %w, jobs = recovered, "recovered the jobs a previous run of this worker left behind");
            }
            shared
                .queue
                .heartbeat(q, w, info, shared.cfg.dead_after * 2)
                .await
        };
        match started.await {
            Ok(_) => return Instant::now(),
            Err(e) => {
                tracing::warn!(queue = %q, worker = %w, error = %e, retry_in_ms = wait.as_millis() as u64, "starting the worker failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Acknowledges finished jobs in batches. A batch whose ack fails is kept and
/// retried with a backoff until Redis takes it: dropping it would leave its
/// jobs claimed by this live worker, where nobody recovers them. Once `close`
/// turns true it writes what is left, trying for `shutdown_grace`; what is
/// still unacknowledged then stays claimed and runs again after recovery.
async fn ack_loop(
    shared: &Shared,
    mut rx: mpsc::UnboundedReceiver<Arc<str>>,
    mut close: watch::Receiver<bool>,
) {
    let cfg = &shared.cfg;
    let mut batch: Vec<Arc<str>> = Vec::with_capacity(MAX_BATCH);
    let mut closed_at: Option<Instant> = None;
    let mut wait = Duration::from_millis(50);
    loop {
        if batch.is_empty() && closed_at.is_none() {
            tokio::select! {
                id = rx.recv() => match id {
                    Some(id) => batch.push(id),
                    None => return,
                },
                _ = close.wait_for(|c| *c) => closed_at = Some(Instant::now()),
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if batch.is_empty() {
            // closing, and everything is written
            return;
        }
        let ids: Vec<String> = batch.iter().map(|id| id.to_string()).collect();
        let acked = shared
            .queue
            .ack(
                &shared.qname,
                &shared.worker,
                &ids,
                cfg.done_retention,
                cfg.done_keep,
            )
            .await;
        match acked {
            Ok(()) => {
                let mut held = lock(&shared.held);
                for id in batch.drain(..) {
                    held.remove(&id);
                }
                wait = Duration::from_millis(50);
            }
            Err(e) if closed_at.is_some_and(|t| t.elapsed() >= cfg.shutdown_grace) => {
                tracing::error!(error = %e, jobs = batch.len() + rx.len(), "stopping with finished jobs unacknowledged; they stay claimed and run again once recovered");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), retry_in_ms = wait.as_millis() as u64, "acknowledging jobs failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Heart-beats every `heartbeat`, trims the finished jobs kept past
/// `done_retention`, and recovers the jobs of peers silent for `dead_after`.
/// Never returns; it stops when dropped.
///
/// A worker only reaps once its own heartbeats have succeeded without a gap
/// for `dead_after`: after a Redis outage every heartbeat in Redis is old,
/// and the first worker back must give its live peers the time to beat
/// again, or it would take their running jobs (running them twice and
/// counting false stalls). `first_beat` is when the start-up beat succeeded.
async fn heartbeat_loop(shared: &Shared, info: &[(&str, String)], first_beat: Instant) {
    let cfg = &shared.cfg;
    let (q, w) = (&*shared.qname, &*shared.worker);
    let mut healthy_since = Some(first_beat);
    let mut last_beat = first_beat;
    loop {
        tokio::time::sleep(cfg.heartbeat).await;
        if let Err(e) = shared.queue.heartbeat(q, w, info, cfg.dead_after * 2).await {
            tracing::warn!(error = %e, "heartbeat failed");
            healthy_since = None;
            continue;
        }
        // acks trim the done set as they add to it; this trims it by age
        // when no job finishes (the done jobs' hashes have no TTL)
        if let Err(e) = shared
            .queue
            .ack(q, w, &[], cfg.done_retention, cfg.done_keep)
            .await
        {
            tracing::warn!(error = %e, "trimming finished jobs failed");
        }
        let now = Instant::now();
        if now.duration_since(last_beat) > cfg.dead_after {
            // silent long enough to look dead to the others: start over
            healthy_since = None;
        }
        last_beat = now;
        let since = *healthy_since.get_or_insert(now);
        if now.duration_since(since) < cfg.dead_after {
            continue;
        }
        match shared.queue.reap(q, w, cfg.dead_after).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(queue = %q, jobs = n, "recovered jobs of a dead worker"),
            Err(e) => tracing::warn!(error = %e, "looking for dead workers failed"),
        }
    }
}

/// Gives back whatever the worker still holds claimed (claimed but never
/// started), attempts returned, and leaves the pool; tries for
/// `shutdown_grace`. If Redis stays away, peers recover the claims later.
async fn leave(shared: &Shared) {
    let deadline = Instant::now() + shared.cfg.shutdown_grace;
    let mut wait = Duration::from_millis(50);
    loop {
        match shared
            .queue
            .leave(&shared.qname, &shared.worker, &shared.limits)
            .await
        {
            Ok(()) => return,
            Err(e) if Instant::now() + wait >= deadline => {
                tracing::error!(error = %e, "could not leave the pool; peers recover this worker's claims once it counts as dead");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "leaving the pool failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
