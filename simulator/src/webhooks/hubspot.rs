//! HubSpot's CRM-object webhook events for contact changes.
//!
//! A creation gives `contact.creation` and then, as HubSpot does, one
//! `contact.propertyChange` per tracked property it set; an update gives one
//! `contact.propertyChange` per tracked property whose value changed (a
//! cleared one has `propertyValue` ""); a deletion `contact.deletion`; a
//! merge `contact.merge` about the kept record. Each event carries the
//! `portalId` of the account whose record changed, and is batched with
//! the events of that portal only.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

use super::queue::{Item, Portal, Queue};
use super::WebhookConfig;
use crate::changes::{ChangeEvent, ChangeKind, ChangeListener, Origin};
use crate::connection::Connection;

/// The contact properties the app subscribes to changes of.
const TRACKED: [&str; 6] = [
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
];

/// The `subscriptionId` of each subscription type.
fn subscription_id(subscription_type: &str) -> u64 {
    match subscription_type {
        "contact.creation" => 1_001,
        "contact.propertyChange" => 1_002,
        "contact.deletion" => 1_003,
        "contact.merge" => 1_004,
        _ => 1_000,
    }
}

/// Turns HubSpot record changes into webhook events and queues them.
pub(super) struct HubSpotWebhooks {
    queue: Queue,
    app_id: u64,
    /// Unique and increasing (HubSpot only promises neither).
    next_event_id: AtomicU64,
}

impl HubSpotWebhooks {
    pub(super) fn new(queue: Queue, cfg: &WebhookConfig) -> Self {
        Self {
            queue,
            app_id: cfg.app_id,
            next_event_id: AtomicU64::new(1),
        }
    }

    /// An event with the fields every subscription type has.
    fn event(
        &self,
        e: &ChangeEvent<'_>,
        portal_id: u64,
        subscription_type: &str,
        object_id: u64,
    ) -> Value {
        let (change_source, source_id) = match e.origin {
            Origin::Action => ("INTEGRATION", self.app_id.to_string()),
            Origin::Admin => ("CRM_UI", "userId:1".to_owned()),
        };
        json!({
            "eventId": self.next_event_id.fetch_add(1, Ordering::SeqCst),
            "subscriptionId": subscription_id(subscription_type),
            "portalId": portal_id,
            "appId": self.app_id,
            "occurredAt": e.at_ms(),
            "subscriptionType": subscription_type,
            "attemptNumber": 0,
            "objectId": object_id,
            "changeSource": change_source,
            "sourceId": source_id,
        })
    }

    fn events(&self, e: &ChangeEvent<'_>, portal_id: u64) -> Vec<Value> {
        let id = e.record_id();
        match e.kind {
            ChangeKind::Created => {
                let mut creation = self.event(e, portal_id, "contact.creation", id);
                creation["changeFlag"] = json!("NEW");
                let mut out = vec![creation];
                out.extend(self.property_changes(e, portal_id));
                out
            }
            ChangeKind::Updated => self.property_changes(e, portal_id),
            ChangeKind::Deleted => {
                let mut deletion = self.event(e, portal_id, "contact.deletion", id);
                deletion["changeFlag"] = json!("DELETED");
                vec![deletion]
            }
            // "contact.restore: a contact is restored from deletion"
            // (HubSpot, Webhooks API, subscription types); no changeFlag
            // is documented for it.
            ChangeKind::Restored => vec![self.event(e, portal_id, "contact.restore", id)],
            ChangeKind::Merged { into } => {
                let mut merge = self.event(e, portal_id, "contact.merge", into);
                merge["primaryObjectId"] = json!(into);
                merge["mergedObjectIds"] = json!([id]);
                merge["newObjectId"] = json!(into);
                vec![merge]
            }
        }
    }

    fn property_changes(&self, e: &ChangeEvent<'_>, portal_id: u64) -> Vec<Value> {
        let after = properties(Some(&e.record.body));
        let before = properties(e.before);
        TRACKED
            .iter()
            .filter_map(|name| {
                let value = property_value(after, name);
                (value != property_value(before, name)).then(|| {
                    let mut event =
                        self.event(e, portal_id, "contact.propertyChange", e.record_id());
                    event["propertyName"] = json!(name);
                    event["propertyValue"] = json!(value);
                    event
                })
            })
            .collect()
    }
}

fn properties(body: Option<&Map<String, Value>>) -> Option<&Map<String, Value>> {
    body?.get("properties")?.as_object()
}

/// A property as HubSpot sends it: a string, "" when unset.
fn property_value(props: Option<&Map<String, Value>>, name: &str) -> String {
    match props.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

impl ChangeListener for HubSpotWebhooks {
    fn record_changed(&self, e: &ChangeEvent<'_>) {
        if e.connection != Connection::HubSpot {
            return;
        }
        let portal = Portal {
            portal_id: e.owner.account_id(),
            customer: e.owner.customer().to_owned(),
        };
        for event in self.events(e, portal.portal_id) {
            self.queue.push(Item::HubSpot {
                portal: portal.clone(),
                event,
            });
        }
    }
}
