//! The background task between the listeners and the app: it batches HubSpot
//! events per portal (100 at most, or whatever came within the batch window
//! of the first), and runs each batch's delivery, retries included, as a
//! task of its own, at most `MAX_IN_FLIGHT` requests at a time per account.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::log::{Batch, BatchOwner, Kind};
use super::queue::{Item, Portal, Queued, Shared};
use super::MAX_BATCH;

/// HubSpot events of one portal waiting for their batch to close.
struct Pending {
    events: Vec<Value>,
    generation: u64,
    due: Instant,
}

/// The open batches, one per portal.
type Open = HashMap<Portal, Pending>;

/// Runs until the queue closes, then finishes the deliveries in flight.
/// Aborting it aborts them too.
pub(super) async fn run(shared: Arc<Shared>, mut rx: UnboundedReceiver<Queued>) {
    let window = shared
        .hubspot
        .as_ref()
        .map(|h| h.batch_window)
        .unwrap_or_default();
    let mut open = Open::new();
    let mut deliveries = JoinSet::new();
    loop {
        let due = open.values().map(|p| p.due).min();
        tokio::select! {
            queued = rx.recv() => {
                let Some(Queued { generation, item }) = queued else { break };
                match item {
                    Item::HubSpot { portal, event } => {
                        if open.get(&portal).is_some_and(|p| p.generation != generation) {
                            flush(&shared, &mut open, &portal, &mut deliveries);
                        }
                        let pending = open.entry(portal.clone()).or_insert_with(|| Pending {
                            events: Vec::new(),
                            generation,
                            due: Instant::now() + window,
                        });
                        pending.events.push(event);
                        if pending.events.len() >= MAX_BATCH {
                            flush(&shared, &mut open, &portal, &mut deliveries);
                        }
                    }
                    Item::Flow { customer, body } => {
                        let owner = BatchOwner { portal_id: None, customer: Some(customer) };
                        let batch = shared.new_batch(Kind::Events, generation, owner, vec![body]);
                        deliveries.spawn(deliver(shared.clone(), batch));
                    }
                    Item::Again(batch) => {
                        deliveries.spawn(deliver(shared.clone(), batch));
                    }
                }
            }
            () = async { sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                let now = Instant::now();
                let ripe: Vec<Portal> = open
                    .iter()
                    .filter(|(_, p)| p.due <= now)
                    .map(|(portal, _)| portal.clone())
                    .collect();
                for portal in ripe {
                    flush(&shared, &mut open, &portal, &mut deliveries);
                }
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
        }
    }
    let portals: Vec<Portal> = open.keys().cloned().collect();
    for portal in portals {
        flush(&shared, &mut open, &portal, &mut deliveries);
    }
    while deliveries.join_next().await.is_some() {}
}

/// Closes the open batch of `portal` and starts its delivery, unless a
/// reset came since its events were queued.
fn flush(shared: &Arc<Shared>, open: &mut Open, portal: &Portal, deliveries: &mut JoinSet<()>) {
    let Some(pending) = open.remove(portal) else {
        return;
    };
    if pending.events.is_empty() || pending.generation != shared.generation() {
        return;
    }
    let owner = BatchOwner {
        portal_id: Some(portal.portal_id),
        customer: Some(portal.customer.clone()),
    };
    let batch = shared.new_batch(Kind::HubSpot, pending.generation, owner, pending.events);
    deliveries.spawn(deliver(shared.clone(), batch));
}

/// Delivers `batch` until the app takes it (any 2xx) or the retries run
/// out. Each attempt waits for a free slot and for deliveries not to be
/// paused; a reset meanwhile drops the batch.
async fn deliver(shared: Arc<Shared>, batch: Batch) {
    let retry = match batch.kind {
        Kind::HubSpot => shared.hubspot.as_ref().map(|t| t.retry),
        Kind::Events => shared.events.as_ref().map(|t| t.retry),
    };
    let Some(retry) = retry else { return };
    for n in 0..=retry.max_retries {
        if n > 0 {
            sleep(retry.delay(n)).await;
        }
        shared.wait_unpaused().await;
        let Ok(_slot) = shared.slots(&batch.owner).acquire_owned().await else {
            return;
        };
        // Paused again while waiting for the slot.
        shared.wait_unpaused().await;
        if batch.generation != shared.generation() {
            return;
        }
        let attempt = shared.attempt(&batch, n).await;
        if attempt.status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
    }
    tracing::warn!(
        batch_id = batch.id,
        kind = ?batch.kind,
        retries = retry.max_retries,
        "dropping an outbound batch the app did not take"
    );
}
