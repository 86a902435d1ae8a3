//! The runtime's background loops: batched acknowledgements, and the
//! heartbeat that also recovers the jobs of dead peers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::time::Instant;

use crate::job::lock;
use crate::queue::Queue;
use crate::runtime::RuntimeConfig;

/// Acknowledges finished jobs in batches. A batch whose ack fails is kept and
/// retried with a backoff until Redis takes it: dropping it would leave its
/// jobs claimed by this live worker, where nobody recovers them. Once every
/// sender is gone (shutdown) it keeps trying for `shutdown_grace`; what is
/// still unacknowledged then stays claimed and runs again after recovery.
pub(crate) async fn ack_loop(
    queue: Queue,
    cfg: Arc<RuntimeConfig>,
    mut rx: mpsc::UnboundedReceiver<Arc<str>>,
    held: Arc<Mutex<HashSet<Arc<str>>>>,
) {
    const MAX_BATCH: usize = 1024;
    let mut batch: Vec<Arc<str>> = Vec::with_capacity(MAX_BATCH);
    let mut closed_at: Option<Instant> = None;
    let mut wait = Duration::from_millis(50);
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(id) => batch.push(id),
                None => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if closed_at.is_none() && rx.is_closed() {
            closed_at = Some(Instant::now());
        }
        let ids: Vec<String> = batch.iter().map(|id| id.to_string()).collect();
        let acked = queue
            .ack(
                &cfg.queue,
                &cfg.worker_name,
                &ids,
                cfg.done_retention,
                cfg.done_keep,
            )
            .await;
        match acked {
            Ok(()) => {
                let mut held = lock(&held);
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

/// Heart-beats every `cfg.heartbeat` and recovers the jobs of peers silent
/// for `cfg.dead_after`.
///
/// A worker only reaps once its own heartbeats have succeeded without a gap
/// for `dead_after`: after a Redis outage every heartbeat in Redis is old,
/// and the first worker back must give its live peers the time to beat
/// again, or it would take their running jobs (running them twice and
/// counting false stalls). `first_beat` is when the start-up beat succeeded.
pub(crate) async fn heartbeat_loop(
    queue: Queue,
    cfg: Arc<RuntimeConfig>,
    info: Vec<(&'static str, String)>,
    first_beat: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut healthy_since = Some(first_beat);
    let mut last_beat = first_beat;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(cfg.heartbeat) => {}
        }
        if let Err(e) = queue
            .heartbeat(&cfg.queue, &cfg.worker_name, &info, cfg.dead_after * 2)
            .await
        {
            tracing::warn!(error = %e, "heartbeat failed");
            healthy_since = None;
            continue;
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
        match queue
            .reap(&cfg.queue, &cfg.worker_name, cfg.dead_after)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(queue = %cfg.queue, jobs = n, "recovered jobs of a dead worker")
            }
            Err(e) => tracing::warn!(error = %e, "looking for dead workers failed"),
        }
    }
}
