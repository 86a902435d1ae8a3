//! An account's records and the indexes kept beside them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::record::Record;

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
    /// Live records by lower-cased primary email; the lowest id wins a tie.
    pub(super) by_email: HashMap<String, BTreeSet<u64>>,
    /// Carried over to the account's next store by `/_sim/reset`
    /// (`Sequence`), so ids are not reused.
    pub(super) next_id: u64,
    pub(super) last_ms: i64,
    /// The last time the account's earlier store handed out (after a
    /// reset): new records are not given an earlier one.
    pub(super) floor_ms: i64,
}

impl Inner {
    pub(super) fn sequence(&self) -> Sequence {
        Sequence {
            next_id: self.next_id,
            last_ms: self.last_ms,
        }
    }

    /// The time of a change to a record last changed at `previous_ms`
    /// (0 for a new one): now, or 1 ms after `previous_ms` if now is not
    /// later, so each record's times strictly increase (an inbound change
    /// is told from an older one by its time). Records changed in the same
    /// millisecond share it, as in a CRM.
    pub(super) fn tick(&mut self, now_ms: i64, previous_ms: i64) -> i64 {
        let at = now_ms.max(previous_ms + 1);
        self.last_ms = self.last_ms.max(at);
        at
    }

    pub(super) fn unindex(&mut self, rec: &Record) {
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
        if let Some(email) = &rec.email {
            self.by_email
                .entry(email.clone())
                .or_default()
                .insert(rec.id);
        }
    }
}
