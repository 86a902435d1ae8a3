//! `POST /api/integration/webhook/hubspot`: HubSpot's webhook deliveries.
//! Authenticated by signature (not by bearer token). A valid batch is
//! de-duplicated event by event, grouped into one change per CRM record,
//! durably queued as one `inbound-change` job per portal (the worker fans it
//! out into one job per record), and only then answered 200.

use std::collections::BTreeMap;

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{handler, Body, IntoResponse, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::signature::{verify, SignedRequest};
use crate::api::errors::error_response as error;
use crate::api::ApiState;
use crate::domain::{CustomerId, Provider};
use crate::jobs::{Delivery, InboundChange};

/// Most events HubSpot puts in one request.
pub const MAX_EVENTS: usize = 100;

/// Webhook settings the api needs.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The HubSpot app's client secret; `None` refuses every delivery.
    pub client_secret: Option<crate::domain::Secret>,
    /// The public base URL HubSpot calls (behind a proxy the Host header
    /// is not the public one); `None` rebuilds it from the request.
    pub public_base_url: Option<String>,
}

/// One HubSpot event (only what the app uses; the rest is ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    event_id: serde_json::Value,
    #[serde(default)]
    subscription_type: String,
    #[serde(default)]
    occurred_at: i64,
    object_id: serde_json::Value,
    /// The HubSpot account (portal) the record is in.
    #[serde(default)]
    portal_id: Option<serde_json::Value>,
    #[serde(default)]
    property_name: Option<String>,
    #[serde(default)]
    merged_object_ids: Vec<serde_json::Value>,
    #[serde(default)]
    primary_object_id: Option<serde_json::Value>,
    /// A merge's surviving record, when HubSpot gave it a new id.
    #[serde(default)]
    new_object_id: Option<serde_json::Value>,
    /// The object type of a generic `object.*` event (`0-1`: contacts).
    #[serde(default)]
    object_type_id: Option<String>,
}

impl Event {
    /// Whether the event is about a contact's own record. An app
    /// subscribed to more than contacts gets every object's events on one
    /// URL (HubSpot's webhooks API: `company.*`, `deal.*`, `ticket.*`, and
    /// generic `object.*` events naming their `objectTypeId`, `0-1` for
    /// contacts); fetching those as contacts would spend the portal's
    /// budget on records that are not contacts. An association change does
    /// not change the contact's own fields, so it is passed over too.
    fn is_contact_change(&self) -> bool {
        let kind = self.subscription_type.as_str();
        let (object, action) = kind.split_once('.').unwrap_or((kind, ""));
        let contact = match object {
            "contact" => true,
            "object" => self.object_type_id.as_deref() == Some("0-1"),
            _ => false,
        };
        contact && action != "associationChange"
    }
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn public_uri(req: &Request, base: Option<&str>) -> String {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    match base {
        Some(b) => format!("{}{path}", b.trim_end_matches('/')),
        None => {
            let host = req.header("host").unwrap_or("localhost");
            let scheme = req.header("x-forwarded-proto").unwrap_or("http");
            format!("{scheme}://{host}{path}")
        }
    }
}

/// The webhook endpoint.
#[handler]
pub async fn hubspot_webhook(
    req: &Request,
    body: Body,
    state: Data<&ApiState>,
    settings: Data<&WebhookSettings>,
) -> Response {
    let resp = handle(req, body, &state, &settings).await;
    count(&state, "hubspot", resp.status());
    resp
}

async fn handle(
    req: &Request,
    body: Body,
    state: &ApiState,
    settings: &WebhookSettings,
) -> Response {
    let Some(secret) = settings
        .client_secret
        .as_ref()
        .map(crate::domain::Secret::expose)
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "HUBSPOT_CLIENT_SECRET is not set",
        );
    };
    let Ok(bytes) = body.into_vec().await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "could not read the body",
        );
    };
    let uri = public_uri(req, settings.public_base_url.as_deref());
    let signed = SignedRequest {
        v3: req.header("x-hubspot-signature-v3"),
        timestamp: req.header("x-hubspot-request-timestamp"),
        legacy: req.header("x-hubspot-signature"),
        version: req.header("x-hubspot-signature-version"),
        method: req.method().as_str(),
        uri: &uri,
        body: &bytes,
    };
    if let Err(e) = verify(secret, &signed, chrono::Utc::now().timestamp_millis()) {
        tracing::warn!(reason = %e, "refused a HubSpot webhook");
        return error(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string());
    }
    let events: Vec<Event> = match serde_json::from_slice(&bytes) {
        Ok(ev) => ev,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("body is not a HubSpot event array: {e}"),
            )
        }
    };
    if events.len() > MAX_EVENTS {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("at most {MAX_EVENTS} events per request"),
        );
    }
    match accept(state, &events).await {
        Ok(jobs) => Json(json!({ "accepted": events.len(), "jobs": jobs })).into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "queueing webhook events failed");
            // HubSpot retries non-2xx answers, so nothing is lost.
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not queue the events; retry",
            )
        }
    }
}

/// Queues the CRM records with a new event, one job per portal holding one
/// change per record, in one Redis round trip that also remembers the
/// events: an event counts as seen exactly when a job standing for it is
/// queued, so neither a crash nor a failed call can make HubSpot's retry
/// look like a duplicate. Returns the changes queued.
async fn accept(state: &ApiState, events: &[Event]) -> anyhow::Result<usize> {
    let customers = route_portals(state, events).await;
    let (per_record, tally) = changes_per_record(events, &customers);
    for (reason, n) in [
        ("unknown_portal", tally.ignored),
        ("not_a_contact_change", tally.other),
    ] {
        if n > 0 {
            state.metrics.add(
                "webhook_events_ignored_total",
                &[("source", "hubspot"), ("reason", reason)],
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }
    // one delivery per portal (one customer's connection)
    let mut deliveries: BTreeMap<String, Delivery> = BTreeMap::new();
    for ((portal, _), item) in per_record {
        deliveries.entry(portal).or_default().push(item);
    }
    let deliveries: Vec<Delivery> = deliveries.into_values().collect();
    Ok(state.enqueuer.inbound_gathered(&deliveries).await?)
}

/// Portal → the customer it is for (`true`: not known yet, the worker
/// finds it), or none. Each portal is one customer's HubSpot connection.
/// A portal no customer has connected is ignored (answered 200: HubSpot
/// would only retry it), and counted. When MongoDB cannot say whose a
/// portal is, the job carries the portal and the worker finds the
/// customer (webhooks need no MongoDB).
type Portals = BTreeMap<String, Option<(CustomerId, bool)>>;

async fn route_portals(state: &ApiState, events: &[Event]) -> Portals {
    let mut customers = Portals::new();
    for e in events {
        let portal = e.portal_id.as_ref().and_then(id_text).unwrap_or_default();
        if let std::collections::btree_map::Entry::Vacant(slot) = customers.entry(portal) {
            let c = match state.customers.route(Provider::Hubspot, slot.key()).await {
                Ok(Some(c)) => Some((c, false)),
                Ok(None) => {
                    tracing::warn!(portal_id = %slot.key(), "webhook events for a HubSpot portal no customer has connected; ignored");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "customer of a portal unknown for now; the worker finds it");
                    Some((CustomerId::default_customer(), true))
                }
            };
            slot.insert(c);
        }
    }
    customers
}

/// Events left out of a delivery.
#[derive(Default)]
struct Tally {
    /// For a portal no customer has connected.
    ignored: u64,
    /// Not about a contact.
    other: u64,
}

/// (portal, record) → the event keys and the change of that record.
type PerRecord = BTreeMap<(String, String), (Vec<String>, InboundChange)>;

/// One change per record of each portal, with the keys of the events it
/// stands for.
fn changes_per_record(events: &[Event], customers: &Portals) -> (PerRecord, Tally) {
    let mut per_record = PerRecord::new();
    let mut tally = Tally::default();
    let mut touch = |id: Option<String>, e: &Event, tally: &mut Tally| {
        let portal = e.portal_id.as_ref().and_then(id_text).unwrap_or_default();
        let Some((customer, deferred)) = customers.get(&portal).cloned().flatten() else {
            tally.ignored += 1;
            return;
        };
        let Some(id) = id else { return };
        let (keys, job) = per_record
            .entry((portal.clone(), id.clone()))
            .or_insert_with(|| (Vec::new(), change(customer, deferred, &portal, id.clone())));
        // eventId alone is not unique: the key is the event's whole
        // identity, and the record it is about (a merge names several).
        keys.push(seen_key(&format!(
            "hubspot:{portal}:{}:{}:{}:{}:{}:{id}",
            e.event_id,
            e.object_id,
            e.subscription_type,
            e.occurred_at,
            e.property_name.as_deref().unwrap_or("")
        )));
        job.occurred_at = job.occurred_at.max(e.occurred_at);
        // a deletion for privacy: the person's data goes from the app too
        job.purge |= e.subscription_type.ends_with(".privacyDeletion");
        // restored from deletion: a contact deleted with it comes back
        job.restore |= e.subscription_type.ends_with(".restore");
        job.event_ids.push(e.event_id.to_string());
    };
    for e in events {
        if !e.is_contact_change() {
            tally.other += 1;
            continue;
        }
        touch(id_text(&e.object_id), e, &mut tally);
        // a merge: the surviving record and the ones merged into it (each
        // read again: a merged one is gone, the survivor has their values)
        if let Some(p) = &e.primary_object_id {
            touch(id_text(p), e, &mut tally);
        }
        if let Some(n) = &e.new_object_id {
            touch(id_text(n), e, &mut tally);
        }
        for m in &e.merged_object_ids {
            touch(id_text(m), e, &mut tally);
        }
    }
    (per_record, tally)
}

/// The key an event is remembered by: 96 bits of the SHA-256 of its
/// identity, 16 characters instead of ~90, so a day of events takes a
/// fraction of the memory and Redis time.
fn seen_key(identity: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(identity.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
}

/// A change of record `id` in `portal`, for `customer` (`deferred`: the
/// customer is not known yet, and the worker finds it by the portal).
fn change(customer: CustomerId, deferred: bool, portal: &str, id: String) -> InboundChange {
    InboundChange {
        customer,
        account_id: deferred.then(|| portal.to_owned()),
        provider: Provider::Hubspot,
        external_id: id,
        occurred_at: 0,
        event_ids: Vec::new(),
        batch: Vec::new(),
        purge: false,
        restore: false,
    }
}

/// Counts a webhook request by its result.
pub(crate) fn count(state: &ApiState, source: &str, status: StatusCode) {
    let result = match status.as_u16() {
        200..=299 => "accepted",
        401 => "invalid_signature",
        400..=499 => "bad_request",
        _ => "unavailable",
    };
    state.metrics.inc(
        "webhook_requests_total",
        &[("source", source), ("result", result)],
    );
}
