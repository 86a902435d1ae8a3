//! Records in the universal shape, for `get-contact` and `list-contacts`.

use std::ops::Bound;

use serde_json::Value;

use super::{normalize_email, parse_id, Store, StoreError};
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

    /// Up to `limit` live universal records with ids after `after`, by id,
    /// plus the id to continue after when more remain.
    pub(crate) fn list_universal(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> (Vec<Value>, Option<u64>) {
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let page: Vec<&Record> = inner
            .records
            .range((start, Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| r.deleted_ms.is_none())
            .take(limit + 1)
            .collect();
        let more = page.len() > limit;
        let page = &page[..page.len().min(limit)];
        let next = if more {
            page.last().map(|r| r.id)
        } else {
            None
        };
        (page.iter().map(|r| self.universal(r)).collect(), next)
    }
}
