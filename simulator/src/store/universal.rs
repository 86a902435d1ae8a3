//! Records in the universal shape, for `get-contact` and `list-contacts`.

use std::ops::Bound;

use serde_json::Value;

use super::{normalize_email, parse_id, Position, Store, StoreError};
use crate::connection::universal_record;
use crate::record::Record;

impl Store {
    fn universal(&self, rec: &Record) -> Value {
        universal_record(self.conn, &self.mapping, rec)
    }

    /// One record, deleted or not, as a universal record.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub(crate) fn get_universal(&self, id: &str) -> Result<Value, StoreError> {
        let inner = self.lock();
        let rec = inner
            .records
            .get(&parse_id(id)?)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        Ok(self.universal(rec))
    }

    /// The live record whose primary email is `email` (case-insensitive),
    /// as a universal record; the oldest one if several share it.
    pub(crate) fn find_universal_by_email(&self, email: &str) -> Option<Value> {
        let email = normalize_email(email)?;
        let inner = self.lock();
        let id = inner.by_email.get(&email)?.first().copied()?;
        inner.records.get(&id).map(|rec| self.universal(rec))
    }

    /// Up to `limit` universal records (deleted included) with
    /// updatedTime >= `since_ms` and position after `after`, in
    /// (updatedTime, id) order, plus the position to continue from when more
    /// remain.
    pub(crate) fn list_universal(
        &self,
        since_ms: Option<i64>,
        after: Option<Position>,
        limit: usize,
    ) -> (Vec<Value>, Option<Position>) {
        let inner = self.lock();
        let start = match (since_ms, after) {
            (Some(since), Some(pos)) if (since, 0) > pos => Bound::Included((since, 0)),
            (_, Some(pos)) => Bound::Excluded(pos),
            (Some(since), None) => Bound::Included((since, 0)),
            (None, None) => Bound::Unbounded,
        };
        let mut page: Vec<Position> = inner
            .by_updated
            .range((start, Bound::Unbounded))
            .take(limit + 1)
            .copied()
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let next = if more { page.last().copied() } else { None };
        let records = page
            .iter()
            .map(|(_, id)| self.universal(&inner.records[id]))
            .collect();
        (records, next)
    }
}
