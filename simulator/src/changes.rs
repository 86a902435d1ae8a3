//! The seam where CRM-side record changes leave the store.
//!
//! Every write to a record (through an action or the admin routes) is
//! reported to the store's listeners, in write order. Today the only
//! listener logs; the webhook senders (HubSpot-style signed webhooks to the
//! app) will be further listeners.

use crate::connection::Connection;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// Who made the change: the app through an action run, or a test/operator
/// through `/_sim` (the stand-in for a user editing the CRM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Action,
    Admin,
}

/// One record change.
#[derive(Debug, Clone)]
pub(crate) struct ChangeEvent {
    pub(crate) connection: Connection,
    pub(crate) record_id: u64,
    pub(crate) kind: ChangeKind,
    pub(crate) origin: Origin,
    /// The record's new update time (Unix ms), unique per connection.
    pub(crate) at_ms: i64,
}

/// Receives record changes. Called with the store's lock held, so that
/// events arrive in write order: implementations must not block (hand the
/// event to a channel and do slow work elsewhere).
pub(crate) trait ChangeListener: Send + Sync {
    fn record_changed(&self, event: &ChangeEvent);
}

/// Logs each change at debug level.
pub(crate) struct LogChanges;

impl ChangeListener for LogChanges {
    fn record_changed(&self, e: &ChangeEvent) {
        tracing::debug!(
            connection = e.connection.key(),
            record_id = e.record_id,
            kind = ?e.kind,
            origin = ?e.origin,
            at_ms = e.at_ms,
            "record changed"
        );
    }
}
