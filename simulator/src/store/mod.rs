//! The in-memory records of one account (a customer's CRM account on one
//! connection), kept in the CRM's own shape.
//!
//! One mutex guards an account's records and indexes, so each operation
//! (an upsert's lookup-then-write in particular) is atomic. Errors are a
//! `thiserror` enum the action and admin layers turn into their responses.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use crate::changes::{ChangeEvent, ChangeKind, ChangeListener, Origin};
use crate::clock::Clock;
use crate::connection::Connection;
use crate::mapping::FieldMapping;
use crate::owner::Owner;
use crate::record::Record;

mod index;
mod native;
mod universal;

use index::Inner;
pub(crate) use index::Sequence;
pub(crate) use native::LiveRecord;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("record {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A contact with that email exists already (HubSpot): its id.
    #[error("Contact already exists. Existing ID: {0}")]
    Exists(String),
}

/// The normalized `primaryEmail` of universal `fields`.
///
/// # Errors
/// `Invalid` when it is missing or blank.
fn email_of(fields: &Map<String, Value>) -> Result<String, StoreError> {
    fields
        .get("primaryEmail")
        .and_then(Value::as_str)
        .and_then(normalize_email)
        .ok_or_else(|| StoreError::Invalid("fields.primaryEmail is required".into()))
}

/// One account's records.
pub(crate) struct Store {
    conn: Connection,
    /// Shown to the listeners with every change.
    owner: Arc<Owner>,
    mapping: Arc<FieldMapping>,
    clock: Clock,
    listeners: Vec<Arc<dyn ChangeListener>>,
    inner: Mutex<Inner>,
}

fn parse_id(id: &str) -> Result<u64, StoreError> {
    id.trim()
        .parse()
        .map_err(|_| StoreError::NotFound(id.to_owned()))
}

fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    (!e.is_empty()).then_some(e)
}

impl Store {
    /// An empty store for `owner`. `sequence` is where an earlier store of
    /// the same account left off (after a reset), so that ids are not
    /// reused; `None` starts at the connection's first id.
    pub(crate) fn new(
        owner: Arc<Owner>,
        mapping: Arc<FieldMapping>,
        clock: Clock,
        listeners: Vec<Arc<dyn ChangeListener>>,
        sequence: Option<Sequence>,
    ) -> Self {
        let conn = owner.connection();
        let sequence = sequence.unwrap_or(Sequence {
            next_id: conn.first_id(),
            last_ms: 0,
        });
        let inner = Inner {
            next_id: sequence.next_id,
            last_ms: sequence.last_ms,
            floor_ms: sequence.last_ms,
            ..Inner::default()
        };
        Self {
            conn,
            owner,
            mapping,
            clock,
            listeners,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here is meant to panic; should something, keep serving
        // the other requests rather than fail every one that follows.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn universal_fields(&self, rec: &Record) -> Map<String, Value> {
        self.mapping.to_universal(&self.conn.render(rec))
    }

    /// Creates a record from a native body and returns it.
    fn create(&self, inner: &mut Inner, body: Map<String, Value>, origin: Origin) -> Record {
        // After a reset, not before the times the earlier store handed out.
        let now = inner.tick(self.clock.now_ms(), inner.floor_ms);
        let id = inner.next_id;
        inner.next_id += 1;
        let mut rec = Record {
            id,
            created_ms: now,
            updated_ms: now,
            deleted_ms: None,
            body,
            email: None,
        };
        rec.email = self.email_of(&rec);
        inner.index(&rec);
        inner.records.insert(id, rec.clone());
        self.notify(None, &rec, ChangeKind::Created, origin);
        rec
    }

    /// Changes a record in place, bumping its update time (which `change`
    /// already sees) and its index entries.
    fn modify(
        &self,
        inner: &mut Inner,
        id: u64,
        kind: ChangeKind,
        origin: Origin,
        change: impl FnOnce(&mut Record),
    ) -> Record {
        let previous = inner.records.get(&id).map_or(0, |r| r.updated_ms);
        let now = inner.tick(self.clock.now_ms(), previous);
        let mut rec = inner.records.remove(&id).expect("caller checked the id");
        inner.unindex(&rec);
        rec.updated_ms = now;
        let before = rec.body.clone();
        change(&mut rec);
        rec.email = if rec.deleted_ms.is_some() {
            None
        } else {
            self.email_of(&rec)
        };
        inner.index(&rec);
        inner.records.insert(id, rec.clone());
        self.notify(Some(&before), &rec, kind, origin);
        rec
    }

    fn email_of(&self, rec: &Record) -> Option<String> {
        let fields = self.universal_fields(rec);
        fields
            .get("primaryEmail")
            .and_then(Value::as_str)
            .and_then(normalize_email)
    }

    fn notify(
        &self,
        before: Option<&Map<String, Value>>,
        rec: &Record,
        kind: ChangeKind,
        origin: Origin,
    ) {
        let event = ChangeEvent {
            connection: self.conn,
            owner: &self.owner,
            kind,
            origin,
            before,
            record: rec,
            mapping: &self.mapping,
        };
        self.listeners.iter().for_each(|l| l.record_changed(&event));
    }

    /// Applies universal `fields` to a live record: given keys replace, null
    /// clears, absent keys are kept.
    fn apply_fields(&self, inner: &mut Inner, id: u64, fields: &Map<String, Value>) -> Record {
        let before = self.universal_fields(&inner.records[&id]);
        let mut after = before.clone();
        for (key, value) in fields {
            if value.is_null() {
                after.remove(key);
            } else {
                after.insert(key.clone(), value.clone());
            }
        }
        self.modify(inner, id, ChangeKind::Updated, Origin::Action, |rec| {
            self.mapping.apply_change(&mut rec.body, &before, &after);
        })
    }

    fn live_id(inner: &Inner, id: &str) -> Result<u64, StoreError> {
        let n = parse_id(id)?;
        match inner.records.get(&n) {
            Some(rec) if rec.deleted_ms.is_none() => Ok(n),
            _ => Err(StoreError::NotFound(id.to_owned())),
        }
    }

    /// Updates the live record whose primary email matches `fields`'s
    /// (case-insensitively), or creates one. Returns (id, created).
    ///
    /// # Errors
    /// `Invalid` when `fields.primaryEmail` is missing or blank.
    pub(crate) fn upsert(&self, fields: &Map<String, Value>) -> Result<(String, bool), StoreError> {
        let email = email_of(fields)?;
        let mut inner = self.lock();
        let existing = inner
            .by_email
            .get(&email)
            .and_then(|ids| ids.first().copied());
        let (rec, created) = match existing {
            Some(id) => (self.apply_fields(&mut inner, id, fields), false),
            None => (
                self.create(&mut inner, self.mapping.to_native(fields), Origin::Action),
                true,
            ),
        };
        Ok((rec.id.to_string(), created))
    }

    /// Creates a record from universal `fields`. HubSpot keeps one contact
    /// per email: a second one is refused with the id of the first (its
    /// CRM API answers 409 `CONFLICT`, "Contact already exists. Existing
    /// ID: …"); Pipedrive keeps duplicates.
    ///
    /// # Errors
    /// `Invalid` when `fields.primaryEmail` is missing or blank; `Exists`
    /// on HubSpot when a live contact has that email.
    pub(crate) fn create_universal(
        &self,
        fields: &Map<String, Value>,
    ) -> Result<String, StoreError> {
        let email = email_of(fields)?;
        let mut inner = self.lock();
        if self.conn == Connection::HubSpot {
            if let Some(id) = inner.by_email.get(&email).and_then(|ids| ids.first()) {
                return Err(StoreError::Exists(id.to_string()));
            }
        }
        let rec = self.create(&mut inner, self.mapping.to_native(fields), Origin::Action);
        Ok(rec.id.to_string())
    }

    /// Applies universal `fields` to a live record.
    ///
    /// # Errors
    /// `NotFound` for an unknown or deleted id.
    pub(crate) fn update(
        &self,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<String, StoreError> {
        let mut inner = self.lock();
        let n = Self::live_id(&inner, id)?;
        Ok(self.apply_fields(&mut inner, n, fields).id.to_string())
    }

    /// Deletes a record (archived / is_deleted); deleting it again is a no-op.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub(crate) fn delete(&self, id: &str, origin: Origin) -> Result<(), StoreError> {
        self.set_deleted(id, origin, true)
    }

    /// Restores a deleted record, as HubSpot's recycle bin does (its
    /// `contact.restore` webhook: "a contact is restored from deletion");
    /// restoring a live one is a no-op.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub(crate) fn restore(&self, id: &str, origin: Origin) -> Result<(), StoreError> {
        self.set_deleted(id, origin, false)
    }

    fn set_deleted(&self, id: &str, origin: Origin, deleted: bool) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let n = parse_id(id)?;
        match inner.records.get(&n) {
            None => Err(StoreError::NotFound(id.to_owned())),
            Some(rec) if rec.deleted_ms.is_some() == deleted => Ok(()),
            Some(_) => {
                let kind = if deleted {
                    ChangeKind::Deleted
                } else {
                    ChangeKind::Restored
                };
                self.modify(&mut inner, n, kind, origin, |rec| {
                    rec.deleted_ms = deleted.then_some(rec.updated_ms);
                });
                Ok(())
            }
        }
    }
}
