//! What the three parts of a running worker share: the backend's polling
//! (claims), its layer (runs and settles each job) and its upkeep task
//! (heartbeats, acknowledgements, leaving the pool).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::claim::SettleLimits;
use crate::config::WorkerConfig;
use crate::job::{lock, DeadLetter};
use crate::metrics::Metrics;
use crate::queue::Queue;

/// State of one worker (one backend polled by one apalis worker).
pub(crate) struct Shared {
    pub(crate) queue: Queue,
    pub(crate) cfg: Arc<WorkerConfig>,
    pub(crate) qname: Arc<str>,
    /// The apalis worker's name: the key of its running set and heartbeat.
    pub(crate) worker: Arc<str>,
    pub(crate) limits: SettleLimits,
    pub(crate) dead_letter: Option<Arc<dyn DeadLetter>>,
    pub(crate) metrics: Option<Metrics>,
    /// Finished job ids for the batched ack writer in the upkeep task.
    pub(crate) ack: mpsc::UnboundedSender<Arc<str>>,
    /// Ids this worker holds claimed in Redis: from the claim until their ack
    /// or settle has been written. What is claimed in Redis but not here was
    /// claimed by a call whose reply was lost.
    pub(crate) held: Mutex<HashSet<Arc<str>>>,
    pub(crate) pause: Pause,
    /// Jobs handed to apalis whose run and settle have not finished: with
    /// the claimed ones still buffered, they fill the concurrency slots.
    pub(crate) in_flight: AtomicUsize,
    /// Set once `recover_own` and the first heartbeat went through; no
    /// claim is made before.
    pub(crate) started: AtomicBool,
    /// The worker task's waker, woken when a slot frees or start-up is done.
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    pub(crate) fn new(
        queue: Queue,
        cfg: Arc<WorkerConfig>,
        worker: &str,
        dead_letter: Option<Arc<dyn DeadLetter>>,
        metrics: Option<Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<Arc<str>>) {
        let (ack, rx) = mpsc::unbounded_channel();
        let shared = Self {
            queue,
            qname: cfg.queue.as_str().into(),
            worker: worker.into(),
            limits: cfg.settle_limits(),
            cfg,
            dead_letter,
            metrics,
            ack,
            held: Mutex::default(),
            pause: Pause::default(),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            waker: Mutex::new(None),
        };
        (shared, rx)
    }

    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut w = lock(&self.waker);
        if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
            *w = Some(waker.clone());
        }
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }

    /// Lets go of a job's id once its ack or settle is written.
    pub(crate) fn release(&self, id: &str) {
        lock(&self.held).remove(id);
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

/// One concurrency slot, taken when a job is handed to apalis and given back
/// when its run and settle are over (or its future is dropped).
pub(crate) struct Slot(pub(crate) Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.wake();
    }
}

/// A pause in claiming, set when a dependency is down.
#[derive(Clone, Default)]
pub(crate) struct Pause(Arc<Mutex<Option<tokio::time::Instant>>>);

impl Pause {
    pub(crate) fn extend(&self, by: Duration) {
        let until = tokio::time::Instant::now() + by;
        let mut p = lock(&self.0);
        *p = Some(p.map_or(until, |old| old.max(until)));
    }

    /// The end of the pause, if one is on.
    pub(crate) fn until(&self) -> Option<tokio::time::Instant> {
        lock(&self.0).filter(|u| *u > tokio::time::Instant::now())
    }
}

/// A boxed future the backend polls only through `&mut`, kept in a `Mutex`
/// that is never locked (`get_mut` costs nothing) so that the backend is
/// `Sync`: apalis' Monitor wants `Sync` of the worker factory that holds it.
pub(crate) struct SyncFuture<T>(Mutex<BoxFuture<'static, T>>);

impl<T> SyncFuture<T> {
    pub(crate) fn new(fut: impl Future<Output = T> + Send + 'static) -> Self {
        Self(Mutex::new(Box::pin(fut)))
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let fut = self.0.get_mut().unwrap_or_else(PoisonError::into_inner);
        fut.as_mut().poll(cx)
    }
}
