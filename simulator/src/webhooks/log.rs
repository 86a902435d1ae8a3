//! What was sent: the batches (kept for redelivery) and every delivery
//! attempt (for tests to assert on), both bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;

/// How many attempts the log keeps; the oldest are dropped beyond this.
const LOG_CAPACITY: usize = 10_000;
/// How many past batches can be redelivered.
const ARCHIVE_CAPACITY: usize = 1_000;

/// Which kind of call a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A HubSpot webhook request: a JSON array of up to 100 events.
    HubSpot,
    /// An Integration.app flow call: one event object.
    Events,
}

impl Kind {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "hubspot" => Some(Self::HubSpot),
            "events" => Some(Self::Events),
            _ => None,
        }
    }
}

/// What one delivery sends, every attempt the same (apart from HubSpot's
/// `attemptNumber`, set per attempt).
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    /// The `/_sim/reset` generation it was made in; a reset drops the
    /// batches of earlier generations still waiting.
    pub(crate) generation: u64,
    /// Whose account the batch is about.
    pub(crate) owner: BatchOwner,
    /// HubSpot: the events of the array; events: the one call body.
    pub(crate) events: Arc<Vec<Value>>,
}

/// The account a batch is about, as far as it is known: a HubSpot batch
/// names its portal and customer, a flow call its customer, a raw
/// `/_sim/webhooks/send` neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchOwner {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) portal_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) customer: Option<String>,
}

/// One delivery attempt as `GET /_sim/webhooks` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Attempt {
    pub(crate) batch_id: u64,
    pub(crate) kind: Kind,
    /// `portalId` and `customer`, when the batch has them.
    #[serde(flatten)]
    pub(crate) owner: BatchOwner,
    /// 0 for the first delivery, then the retry number.
    pub(crate) attempt: u32,
    /// The app's HTTP status; null when there was no answer.
    pub(crate) status: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// How many events the request carried.
    pub(crate) events: usize,
    /// When the answer (or the failure) came, Unix ms.
    pub(crate) at_ms: i64,
}

/// The attempt log and the batch archive.
#[derive(Default)]
pub(super) struct Log {
    attempts: Mutex<VecDeque<Attempt>>,
    batches: Mutex<BTreeMap<u64, Batch>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    pub(super) fn record(&self, attempt: Attempt) {
        let mut attempts = lock(&self.attempts);
        if attempts.len() >= LOG_CAPACITY {
            attempts.pop_front();
        }
        attempts.push_back(attempt);
    }

    /// The attempts, oldest first, of one kind when given.
    pub(super) fn attempts(&self, kind: Option<Kind>) -> Vec<Attempt> {
        lock(&self.attempts)
            .iter()
            .filter(|a| kind.is_none_or(|k| a.kind == k))
            .cloned()
            .collect()
    }

    pub(super) fn clear_attempts(&self) {
        lock(&self.attempts).clear();
    }

    pub(super) fn keep(&self, batch: &Batch) {
        let mut batches = lock(&self.batches);
        batches.insert(batch.id, batch.clone());
        while batches.len() > ARCHIVE_CAPACITY {
            batches.pop_first();
        }
    }

    pub(super) fn batch(&self, id: u64) -> Option<Batch> {
        lock(&self.batches).get(&id).cloned()
    }

    pub(super) fn clear(&self) {
        self.clear_attempts();
        lock(&self.batches).clear();
    }
}
