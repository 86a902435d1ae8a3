//! The seam where CRM-side record changes leave the store.
//!
//! Every write to a record (through an action or the admin routes) is
//! reported to the store's listeners, in write order: the log below, and,
//! when configured, the HubSpot webhook and Integration.app flow-event
//! senders (`webhooks/`).

use serde_json::{Map, Value};

use crate::connection::{universal_record, Connection};
use crate::mapping::FieldMapping;
use crate::owner::Owner;
use crate::record::Record;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Created,
    Updated,
    Deleted,
    /// A deleted record brought back.
    Restored,
    /// Merged into the live record `into` (which is kept): the record itself
    /// is now deleted.
    Merged {
        into: u64,
    },
}

/// Who made the change: the app through an action run, or a test/operator
/// through `/_sim` (the stand-in for a user editing the CRM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Action,
    Admin,
}

/// One record change, borrowed from the store for the time of the call.
pub(crate) struct ChangeEvent<'a> {
    pub(crate) connection: Connection,
    /// The account the record belongs to.
    pub(crate) owner: &'a Owner,
    pub(crate) kind: ChangeKind,
    pub(crate) origin: Origin,
    /// The native body (system fields apart) before the change; `None` for
    /// a creation.
    pub(crate) before: Option<&'a Map<String, Value>>,
    /// The record after the change; its update time is the change time,
    /// unique per account.
    pub(crate) record: &'a Record,
    /// To build the universal record, only for listeners that want it.
    pub(crate) mapping: &'a FieldMapping,
}

impl ChangeEvent<'_> {
    pub(crate) fn record_id(&self) -> u64 {
        self.record.id
    }

    /// When the change happened (the record's new update time, Unix ms).
    pub(crate) fn at_ms(&self) -> i64 {
        self.record.updated_ms
    }

    /// The record after the change as `get-contact` returns it.
    pub(crate) fn universal(&self) -> Value {
        universal_record(self.connection, self.mapping, self.record)
    }
}

/// Receives record changes. Called with the store's lock held, so that
/// events arrive in write order: implementations must not block (hand the
/// event to a channel and do slow work elsewhere).
pub(crate) trait ChangeListener: Send + Sync {
    fn record_changed(&self, event: &ChangeEvent<'_>);
}

/// Logs each change at debug level.
pub(crate) struct LogChanges;

impl ChangeListener for LogChanges {
    fn record_changed(&self, e: &ChangeEvent<'_>) {
        tracing::debug!(
            connection = e.connection.key(),
            customer = e.owner.customer(),
            account_id = e.owner.account_id(),
            record_id = e.record_id(),
            kind = ?e.kind,
            origin = ?e.origin,
            at_ms = e.at_ms(),
            "record changed"
        );
    }
}
