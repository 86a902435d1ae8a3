//! Admin operations on records in the CRM's own shape (`/_sim`), standing
//! in for a user editing the CRM.

use serde_json::Value;

use super::{parse_id, ChangeKind, Origin, Store, StoreError};

impl Store {
    /// Creates a record from admin input in the native shape.
    ///
    /// # Errors
    /// `Invalid` when the input does not have the native shape.
    pub(crate) fn create_native(&self, input: Value) -> Result<Value, StoreError> {
        self.create_native_as(input, Origin::Admin)
    }

    /// Applies an admin PATCH to a live record and returns it.
    ///
    /// # Errors
    /// `NotFound` for an unknown or deleted id, `Invalid` for a malformed patch.
    pub(crate) fn patch_native(&self, id: &str, patch: Value) -> Result<Value, StoreError> {
        self.patch_native_as(id, patch, Origin::Admin)
    }

    /// Merges the live record `id` into the live record `into`, as a HubSpot
    /// user merging two contacts: `id` is deleted (archived), `into` is kept
    /// unchanged. Returns the kept record.
    ///
    /// # Errors
    /// `NotFound` when either record is unknown or deleted, `Invalid` when
    /// both are the same record.
    pub(crate) fn merge(&self, id: &str, into: &str) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let merged = Self::live_id(&inner, id)?;
        let primary = Self::live_id(&inner, into)?;
        if merged == primary {
            return Err(StoreError::Invalid(
                "a record cannot be merged into itself".into(),
            ));
        }
        let kind = ChangeKind::Merged { into: primary };
        self.modify(&mut inner, merged, kind, Origin::Admin, |rec| {
            rec.deleted_ms = Some(rec.updated_ms);
        });
        Ok(self.conn.render(&inner.records[&primary]))
    }

    /// One native record, deleted or not.
    pub(crate) fn get_native(&self, id: &str) -> Option<Value> {
        let inner = self.lock();
        let rec = inner.records.get(&parse_id(id).ok()?)?;
        Some(self.conn.render(rec))
    }

    /// All native records by id; deleted ones only when asked for.
    pub(crate) fn list_native(&self, include_deleted: bool) -> Vec<Value> {
        let inner = self.lock();
        inner
            .records
            .values()
            .filter(|r| include_deleted || r.deleted_ms.is_none())
            .map(|r| self.conn.render(r))
            .collect()
    }

    /// How many records are live (not deleted).
    pub(crate) fn live_count(&self) -> usize {
        let inner = self.lock();
        inner
            .records
            .values()
            .filter(|r| r.deleted_ms.is_none())
            .count()
    }

    /// Where the id and time counters stand, for the store that replaces
    /// this one after a reset.
    pub(crate) fn sequence(&self) -> super::Sequence {
        self.lock().sequence()
    }
}

/// A live record as the CRM's own list and search endpoints see it.
pub(crate) struct LiveRecord {
    pub(crate) id: u64,
    pub(crate) updated_ms: i64,
    /// The record in the CRM's own shape.
    pub(crate) native: Value,
}

impl Store {
    /// Every live record, by id.
    pub(crate) fn live_records(&self) -> Vec<LiveRecord> {
        let inner = self.lock();
        inner
            .records
            .values()
            .filter(|r| r.deleted_ms.is_none())
            .map(|r| LiveRecord {
                id: r.id,
                updated_ms: r.updated_ms,
                native: self.conn.render(r),
            })
            .collect()
    }
}

/// Writes through the CRM's own API in its native shape (HubSpot's batch
/// endpoints): the same as an action's write (`Origin::Action`), so its
/// webhooks say the integration made the change.
impl Store {
    /// The live record whose primary email is `email`
    /// (case-insensitively), rendered.
    pub(crate) fn find_native_by_email(&self, email: &str) -> Option<Value> {
        let key = super::normalize_email(email)?;
        let inner = self.lock();
        let id = inner.by_email.get(&key)?.first()?;
        inner.records.get(id).map(|r| self.conn.render(r))
    }

    /// Creates a record from native input. HubSpot keeps one contact per
    /// email: a live one with the input's email refuses it.
    ///
    /// # Errors
    /// `Invalid` for input that is not the native shape; `Exists` with the
    /// id of the contact that has the email.
    pub(crate) fn create_native_by_api(&self, input: Value) -> Result<Value, StoreError> {
        self.create_native_as(input, Origin::Action)
    }

    /// Applies a native patch to a live record.
    ///
    /// # Errors
    /// `NotFound` for an unknown or deleted id, `Invalid` for a malformed
    /// patch.
    pub(crate) fn patch_native_by_api(&self, id: &str, patch: Value) -> Result<Value, StoreError> {
        self.patch_native_as(id, patch, Origin::Action)
    }

    /// A create by an admin (a CRM user) or through the API. Through the
    /// API, HubSpot refuses an email a live contact has (checked under the
    /// same lock as the create, as HubSpot's unique property is).
    fn create_native_as(&self, input: Value, origin: Origin) -> Result<Value, StoreError> {
        let body = self
            .conn
            .body_from_input(input)
            .map_err(StoreError::Invalid)?;
        let mut inner = self.lock();
        if origin == Origin::Action && self.conn == crate::connection::Connection::HubSpot {
            let email = body
                .get("properties")
                .and_then(|p| p.get("email"))
                .and_then(Value::as_str)
                .and_then(super::normalize_email);
            if let Some(id) = email.and_then(|e| inner.by_email.get(&e)?.first().copied()) {
                return Err(StoreError::Exists(id.to_string()));
            }
        }
        let rec = self.create(&mut inner, body, origin);
        Ok(self.conn.render(&rec))
    }

    fn patch_native_as(&self, id: &str, patch: Value, origin: Origin) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let n = Self::live_id(&inner, id)?;
        let mut body = inner.records[&n].body.clone();
        self.conn
            .merge_patch(&mut body, patch)
            .map_err(StoreError::Invalid)?;
        let rec = self.modify(&mut inner, n, ChangeKind::Updated, origin, |rec| {
            rec.body = body
        });
        Ok(self.conn.render(&rec))
    }
}
