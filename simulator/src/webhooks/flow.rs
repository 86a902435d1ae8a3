//! Integration.app flow events for the Pipedrive connections: each change
//! of a person is one call `{externalRecordId, data, event, integrationKey}`
//! for the customer whose account it is, `data` being the universal record
//! as `get-contact` returns it. A merge is the deletion of the merged
//! record. A disconnected account has no connection to run flows on, so
//! its changes make no calls.

use serde_json::json;

use super::queue::{Item, Queue};
use crate::changes::{ChangeEvent, ChangeKind, ChangeListener};
use crate::connection::Connection;

/// Turns Pipedrive record changes into flow calls and queues them.
pub(super) struct FlowEvents {
    queue: Queue,
}

impl FlowEvents {
    pub(super) fn new(queue: Queue) -> Self {
        Self { queue }
    }
}

/// The flow trigger a change fires.
fn trigger(kind: ChangeKind) -> &'static str {
    match kind {
        // A restored record is in the collection again. Integration.app
        // documents no restore event; created is the nearest (unconfirmed
        // without a live workspace).
        ChangeKind::Created | ChangeKind::Restored => "data-record-created",
        ChangeKind::Updated => "data-record-updated",
        ChangeKind::Deleted | ChangeKind::Merged { .. } => "data-record-deleted",
    }
}

impl ChangeListener for FlowEvents {
    fn record_changed(&self, e: &ChangeEvent<'_>) {
        if e.connection != Connection::Pipedrive || !e.owner.connected() {
            return;
        }
        self.queue.push(Item::Flow {
            customer: e.owner.customer().to_owned(),
            body: json!({
                "externalRecordId": e.record_id().to_string(),
                "data": e.universal(),
                "event": trigger(e.kind),
                "integrationKey": Connection::Pipedrive.key(),
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_is_the_deletion_of_the_merged_record() {
        let cases = [
            (ChangeKind::Created, "data-record-created"),
            (ChangeKind::Updated, "data-record-updated"),
            (ChangeKind::Deleted, "data-record-deleted"),
            (ChangeKind::Restored, "data-record-created"),
            (ChangeKind::Merged { into: 7 }, "data-record-deleted"),
        ];
        for (kind, expected) in cases {
            assert_eq!(trigger(kind), expected, "{kind:?}");
        }
    }
}
