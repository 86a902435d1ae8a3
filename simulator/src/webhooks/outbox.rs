//! The outbound side as the rest of the simulator sees it: started from the
//! config, fed by the change listeners, steered by the admin routes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;

use super::flow::FlowEvents;
use super::hubspot::HubSpotWebhooks;
use super::log::{Attempt, Batch, Kind, Log};
use super::{dispatch, Retry, MAX_IN_FLIGHT};
use crate::changes::ChangeListener;
use crate::clock::Clock;
use crate::SimulatorConfig;

/// Why an admin request on the outbound side cannot be done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutboxError {
    #[error("HubSpot webhooks are not configured")]
    NotConfigured,
    #[error("no batch {0} (it was never sent, or is too old, or was reset)")]
    UnknownBatch(u64),
}

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
    pub(super) customer_id: String,
    pub(super) retry: Retry,
}

/// What the listeners queue for the dispatcher.
pub(super) enum Item {
    /// One HubSpot event, to be batched with others.
    HubSpot(Value),
    /// One flow call body, sent on its own.
    Flow(Value),
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
    /// Bounds the requests in flight.
    pub(super) permits: Semaphore,
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
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(super) fn new_batch(&self, kind: Kind, generation: u64, events: Vec<Value>) -> Batch {
        let batch = Batch {
            id: self.next_batch.fetch_add(1, Ordering::SeqCst),
            kind,
            generation,
            events: Arc::new(events),
        };
        self.log.keep(&batch);
        batch
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
    /// Queues without waiting; an item queued while the simulator shuts
    /// down is dropped.
    pub(super) fn push(&self, item: Item) {
        let generation = self.shared.generation();
        if self.tx.send(Queued { generation, item }).is_err() {
            tracing::debug!("outbound queue closed, dropping an event");
        }
    }
}

/// Owns the background dispatcher (stopped when the outbox is dropped).
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    queue: Option<Queue>,
    task: Option<AbortHandle>,
}

impl Outbox {
    /// Starts the dispatcher when webhooks or events are configured, and
    /// returns the change listeners that feed it.
    ///
    /// # Errors
    /// A configured URL is not a URL, or there is no tokio runtime to run
    /// the dispatcher on.
    pub(crate) fn start(
        cfg: &SimulatorConfig,
        clock: Clock,
    ) -> anyhow::Result<(Self, Vec<Arc<dyn ChangeListener>>)> {
        for url in [
            cfg.webhooks.as_ref().map(|w| &w.url),
            cfg.events.as_ref().map(|e| &e.url),
        ]
        .into_iter()
        .flatten()
        {
            reqwest::Url::parse(url).with_context(|| format!("outbound URL {url:?}"))?;
        }
        let shared = Arc::new(Shared {
            log: Log::default(),
            hubspot: cfg.webhooks.as_ref().map(|w| HubSpotTarget {
                url: w.url.clone(),
                client_secret: w.client_secret.clone(),
                batch_window: w.batch_window,
                retry: w.retry(),
            }),
            events: cfg.events.as_ref().map(|e| EventsTarget {
                url: e.url.clone(),
                workspace_key: cfg.workspace_key.clone(),
                workspace_secret: cfg.workspace_secret.clone(),
                customer_id: e.customer_id.clone(),
                retry: e.retry(),
            }),
            client: reqwest::Client::builder()
                .build()
                .context("building the outbound HTTP client")?,
            permits: Semaphore::new(MAX_IN_FLIGHT),
            clock,
            paused: watch::Sender::new(false),
            held: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            next_batch: AtomicU64::new(1),
        });
        let mut outbox = Self {
            shared: shared.clone(),
            queue: None,
            task: None,
        };
        if shared.hubspot.is_none() && shared.events.is_none() {
            return Ok((outbox, Vec::new()));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .context("webhooks are sent from a tokio runtime: build the endpoint inside one")?;
        let (tx, rx) = unbounded_channel();
        outbox.task = Some(
            runtime
                .spawn(dispatch::run(shared.clone(), rx))
                .abort_handle(),
        );
        let queue = Queue { tx, shared };
        let mut listeners: Vec<Arc<dyn ChangeListener>> = Vec::new();
        if let Some(w) = &cfg.webhooks {
            listeners.push(Arc::new(HubSpotWebhooks::new(queue.clone(), w)));
        }
        if cfg.events.is_some() {
            listeners.push(Arc::new(FlowEvents::new(queue.clone())));
        }
        outbox.queue = Some(queue);
        Ok((outbox, listeners))
    }

    /// The delivery attempts, oldest first, of one kind when given.
    pub(crate) fn attempts(&self, kind: Option<Kind>) -> Vec<Attempt> {
        self.shared.log.attempts(kind)
    }

    pub(crate) fn clear_attempts(&self) {
        self.shared.log.clear_attempts();
    }

    /// Holds (or releases) deliveries; what comes meanwhile is queued.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.shared.paused.send_replace(paused);
    }

    /// Whether deliveries are paused, and how many wait for a resume.
    pub(crate) fn pause_state(&self) -> (bool, usize) {
        (
            *self.shared.paused.borrow(),
            self.shared.held.load(Ordering::SeqCst),
        )
    }

    /// Queues a past batch to be delivered again, with the same events.
    ///
    /// # Errors
    /// `UnknownBatch` when no such batch is kept.
    pub(crate) fn redeliver(&self, batch_id: u64) -> Result<(), OutboxError> {
        let batch = self.shared.log.batch(batch_id);
        match (batch, &self.queue) {
            (Some(mut batch), Some(queue)) => {
                batch.generation = self.shared.generation();
                queue.push(Item::Again(batch));
                Ok(())
            }
            _ => Err(OutboxError::UnknownBatch(batch_id)),
        }
    }

    /// Signs and posts `events` as one HubSpot webhook request, once, now
    /// (paused or not), and returns how it went.
    ///
    /// # Errors
    /// `NotConfigured` without a webhook config.
    pub(crate) async fn send_now(&self, events: Vec<Value>) -> Result<Attempt, OutboxError> {
        if self.shared.hubspot.is_none() {
            return Err(OutboxError::NotConfigured);
        }
        let batch = self
            .shared
            .new_batch(Kind::HubSpot, self.shared.generation(), events);
        Ok(self.shared.attempt(&batch, 0).await)
    }

    /// Forgets the log and past batches, drops what is still waiting to be
    /// delivered and resumes deliveries.
    pub(crate) fn reset(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.shared.log.clear();
        self.set_paused(false);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
