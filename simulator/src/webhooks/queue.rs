//! What the change listeners hand to the dispatcher, and the state that the
//! dispatcher, the deliveries and the outbox share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, Semaphore};

use super::log::{Batch, BatchOwner, Kind, Log};
use super::{Retry, MAX_IN_FLIGHT};
use crate::clock::Clock;

/// The HubSpot side of the config, as delivery needs it.
pub(super) struct HubSpotTarget {
    pub(super) url: String,
    pub(super) client_secret: String,
    pub(super) batch_window: std::time::Duration,
    pub(super) retry: Retry,
}

/// The Integration.app side of the config, as delivery needs it.
pub(super) struct EventsTarget {
    pub(super) url: String,
    pub(super) workspace_key: String,
    pub(super) workspace_secret: String,
    pub(super) retry: Retry,
}

/// Whose account a HubSpot batch is about: the portal and its customer.
/// A batch only ever holds the events of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Portal {
    pub(super) portal_id: u64,
    pub(super) customer: String,
}

/// What the listeners queue for the dispatcher.
pub(super) enum Item {
    /// One HubSpot event, to be batched with others of its portal.
    HubSpot { portal: Portal, event: Value },
    /// One flow call body of `customer`'s account, sent on its own.
    Flow { customer: String, body: Value },
    /// A past batch, sent again as it was.
    Again(Batch),
}

/// An item tagged with the reset generation it was queued in.
pub(super) struct Queued {
    pub(super) generation: u64,
    pub(super) item: Item,
}

/// State shared by the dispatcher, the deliveries and the admin routes.
pub(super) struct Shared {
    pub(super) log: Log,
    pub(super) hubspot: Option<HubSpotTarget>,
    pub(super) events: Option<EventsTarget>,
    pub(super) client: reqwest::Client,
    /// Bounds the requests in flight, per account (see [`Shared::slots`]).
    permits: std::sync::Mutex<HashMap<BatchOwner, Arc<Semaphore>>>,
    pub(super) clock: Clock,
    paused: watch::Sender<bool>,
    /// Deliveries waiting for a resume.
    held: AtomicUsize,
    generation: AtomicU64,
    next_batch: AtomicU64,
}

/// Counts a delivery as held while it lives.
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Fresh state: an empty log, not paused, generation 0, batch ids from 1.
    pub(super) fn new(
        hubspot: Option<HubSpotTarget>,
        events: Option<EventsTarget>,
        client: reqwest::Client,
        clock: Clock,
    ) -> Self {
        Self {
            log: Log::default(),
            hubspot,
            events,
            client,
            permits: std::sync::Mutex::new(HashMap::new()),
            clock,
            paused: watch::Sender::new(false),
            held: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            next_batch: AtomicU64::new(1),
        }
    }

    /// The in-flight slots of the account a batch is from: HubSpot
    /// allows each account (portal) `MAX_IN_FLIGHT` concurrent requests,
    /// so one portal's backlog does not slow another's deliveries; flow
    /// calls are bounded per customer the same way.
    pub(super) fn slots(&self, owner: &BatchOwner) -> Arc<Semaphore> {
        let mut all = self.permits.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(owner.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)))
            .clone()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a new reset generation: what was queued before is dropped.
    pub(super) fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn new_batch(
        &self,
        kind: Kind,
        generation: u64,
        owner: BatchOwner,
        events: Vec<Value>,
    ) -> Batch {
        let batch = Batch {
            id: self.next_batch.fetch_add(1, Ordering::SeqCst),
            kind,
            generation,
            owner,
            events: Arc::new(events),
        };
        self.log.keep(&batch);
        batch
    }

    /// Holds (or releases) deliveries.
    pub(super) fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Whether deliveries are paused, and how many wait for a resume.
    pub(super) fn pause_state(&self) -> (bool, usize) {
        (*self.paused.borrow(), self.held.load(Ordering::SeqCst))
    }

    /// Returns at once unless deliveries are paused; then when resumed.
    pub(super) async fn wait_unpaused(&self) {
        let mut paused = self.paused.subscribe();
        if !*paused.borrow_and_update() {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.held);
        // The sender lives in `self`, so the wait cannot fail.
        let _ = paused.wait_for(|p| !*p).await;
    }
}

/// The listeners' handle on the dispatcher's queue.
#[derive(Clone)]
pub(super) struct Queue {
    tx: UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

impl Queue {
    /// A new queue, and the receiving end for the dispatcher.
    pub(super) fn new(shared: Arc<Shared>) -> (Self, UnboundedReceiver<Queued>) {
        let (tx, rx) = unbounded_channel();
        (Self { tx, shared }, rx)
    }

    /// Queues without waiting; an item queued while the simulator shuts
    /// down is dropped.
    pub(super) fn push(&self, item: Item) {
        let generation = self.shared.generation();
        if self.tx.send(Queued { generation, item }).is_err() {
            tracing::debug!("outbound queue closed, dropping an event");
        }
    }
}
