//! An account's records and the indexes kept beside them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::record::Record;

/// A position in the (updatedTime, id) order.
pub(crate) type Position = (i64, u64);

/// Where a store's id and time counters stand: what a store made after a
/// reset starts from, so that ids are not reused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sequence {
    pub(crate) next_id: u64,
    pub(crate) last_ms: i64,
}

/// Everything behind a store's mutex.
#[derive(Default)]
pub(super) struct Inner {
    pub(super) records: BTreeMap<u64, Record>,
    pub(super) by_updated: BTreeSet<Position>,
    /// Live records by lower-cased primary email; the lowest id wins a tie.
    pub(super) by_email: HashMap<String, BTreeSet<u64>>,
    /// Carried over to the account's next store by `/_sim/reset`
    /// (`Sequence`), so ids are not reused.
    pub(super) next_id: u64,
    pub(super) last_ms: i64,
}

impl Inner {
    pub(super) fn sequence(&self) -> Sequence {
        Sequence {
            next_id: self.next_id,
            last_ms: self.last_ms,
        }
    }

    /// Now, or 1 ms after the last time handed out if that is not earlier.
    pub(super) fn tick(&mut self, now_ms: i64) -> i64 {
        self.last_ms = now_ms.max(self.last_ms + 1);
        self.last_ms
    }

    pub(super) fn unindex(&mut self, rec: &Record) {
        self.by_updated.remove(&(rec.updated_ms, rec.id));
        if let Some(email) = &rec.email {
            if let Some(ids) = self.by_email.get_mut(email) {
                ids.remove(&rec.id);
                if ids.is_empty() {
                    self.by_email.remove(email);
                }
            }
        }
    }

    pub(super) fn index(&mut self, rec: &Record) {
        self.by_updated.insert((rec.updated_ms, rec.id));
        if let Some(email) = &rec.email {
            self.by_email
                .entry(email.clone())
                .or_default()
                .insert(rec.id);
        }
    }
}
