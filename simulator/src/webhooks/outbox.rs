//! The outbound side as the rest of the simulator sees it: started from the
//! config, fed by the change listeners, steered by the admin routes.

use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::dispatch;
use super::flow::FlowEvents;
use super::hubspot::HubSpotWebhooks;
use super::log::{Attempt, BatchOwner, Kind};
use super::queue::{EventsTarget, HubSpotTarget, Item, Queue, Shared};
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
        let shared = Arc::new(Shared::new(
            cfg.webhooks.as_ref().map(|w| HubSpotTarget {
                url: w.url.clone(),
                client_secret: w.client_secret.clone(),
                batch_window: w.batch_window,
                retry: w.retry(),
            }),
            cfg.events.as_ref().map(|e| EventsTarget {
                url: e.url.clone(),
                workspace_key: cfg.workspace_key.clone(),
                workspace_secret: cfg.workspace_secret.clone(),
                retry: e.retry(),
            }),
            reqwest::Client::builder()
                .build()
                .context("building the outbound HTTP client")?,
            clock,
        ));
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
        let (queue, rx) = Queue::new(shared.clone());
        outbox.task = Some(runtime.spawn(dispatch::run(shared, rx)).abort_handle());
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
        self.shared.set_paused(paused);
    }

    /// Whether deliveries are paused, and how many wait for a resume.
    pub(crate) fn pause_state(&self) -> (bool, usize) {
        self.shared.pause_state()
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
        let batch = self.shared.new_batch(
            Kind::HubSpot,
            self.shared.generation(),
            BatchOwner::default(),
            events,
        );
        Ok(self.shared.attempt(&batch, 0).await)
    }

    /// Forgets the log and past batches, drops what is still waiting to be
    /// delivered and resumes deliveries.
    pub(crate) fn reset(&self) {
        self.shared.next_generation();
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
