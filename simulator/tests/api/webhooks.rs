//! HubSpot webhooks: which events a change produces, and how they are
//! signed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use simulator::WebhookConfig;

use crate::helpers::TestApp;
use crate::receiver::{Received, Receiver};

pub const CLIENT_SECRET: &str = "hubspot-client-secret";
pub const PORTAL_ID: u64 = 62_515;
pub const APP_ID: u64 = 54_321;

/// Webhooks to `receiver` with short windows and retry delays.
pub fn hooks(receiver: &Receiver) -> WebhookConfig {
    let mut cfg = WebhookConfig::new(&receiver.url, CLIENT_SECRET);
    cfg.batch_window = Duration::from_millis(100);
    cfg.retry_base = Duration::from_millis(10);
    cfg.max_retry_delay = Duration::from_millis(50);
    cfg
}

pub async fn spawn_hooked() -> (TestApp, Receiver) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Some(hooks(&receiver)), None).await;
    (app, receiver)
}

/// Checks the headers and both signatures of a webhook request, as the app
/// is to check them.
pub fn assert_signed(r: &Received, url: &str) {
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-hubspot-signature-version"), "v1");
    let mut v1 = Sha256::new();
    v1.update(CLIENT_SECRET.as_bytes());
    v1.update(&r.body);
    assert_eq!(r.header("x-hubspot-signature"), hex::encode(v1.finalize()));

    let timestamp = r.header("x-hubspot-request-timestamp");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let age = now_ms - timestamp.parse::<i64>().expect("a ms timestamp");
    assert!((-1_000..300_000).contains(&age), "timestamp {age} ms old");
    let mut v3 = Hmac::<Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    v3.update(format!("POST{url}").as_bytes());
    v3.update(&r.body);
    v3.update(timestamp.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-hubspot-signature-v3"))
        .expect("v3 is base64");
    assert!(v3.verify_slice(&sig).is_ok(), "v3 signature");
}

pub async fn create_hubspot(app: &TestApp, properties: Value) -> (u64, i64) {
    let body = json!({ "properties": properties }).to_string();
    let r = app
        .admin(Method::POST, "/_sim/hubspot/records", Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (id_of(&r.body), updated_ms(&r.body))
}

fn id_of(record: &Value) -> u64 {
    record["id"].as_str().unwrap().parse().unwrap()
}

fn updated_ms(record: &Value) -> i64 {
    let at = record["updatedAt"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_millis()
}

fn of_type<'a>(events: &'a [Value], subscription_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["subscriptionType"] == subscription_type)
        .collect()
}

#[tokio::test]
async fn a_crm_user_creating_a_contact_sends_a_signed_batch() {
    let (app, receiver) = spawn_hooked().await;
    let (id, at) = create_hubspot(
        &app,
        json!({"email": "ann@example.com", "firstname": "Ann"}),
    )
    .await;

    let events = receiver.wait_for_events(3).await;
    for r in receiver.requests() {
        assert_signed(&r, &receiver.url);
        assert_eq!(r.path, "/hook");
    }
    assert_eq!(events.len(), 3, "creation + 2 properties: {events:#?}");
    let mut creation = events[0].clone();
    let event_id = creation.as_object_mut().unwrap().remove("eventId").unwrap();
    assert!(event_id.as_u64().is_some(), "eventId is a number");
    assert_eq!(
        creation,
        json!({
            "subscriptionId": 1001, "portalId": PORTAL_ID, "appId": APP_ID,
            "occurredAt": at, "subscriptionType": "contact.creation",
            "attemptNumber": 0, "objectId": id, "changeSource": "CRM_UI",
            "sourceId": "userId:1", "changeFlag": "NEW",
        })
    );
    let props: Vec<(&Value, &Value)> = events[1..]
        .iter()
        .map(|e| (&e["propertyName"], &e["propertyValue"]))
        .collect();
    assert_eq!(
        props,
        [
            (&json!("email"), &json!("ann@example.com")),
            (&json!("firstname"), &json!("Ann"))
        ]
    );
    for e in &events[1..] {
        assert_eq!(e["subscriptionType"], "contact.propertyChange");
        assert_eq!(
            (e["objectId"].as_u64(), e["occurredAt"].as_i64()),
            (Some(id), Some(at))
        );
    }
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["eventId"].as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "increasing ids {ids:?}"
    );
}

#[tokio::test]
async fn each_changed_property_is_one_event() {
    let (app, receiver) = spawn_hooked().await;
    let (id, _) = create_hubspot(&app, json!({"email": "bo@example.com", "phone": "1"})).await;
    receiver.wait_for_events(3).await;

    let patch = json!({"properties": {
        "firstname": "Bo", "lastname": "Li", "phone": null, "email": "bo@example.com",
        "favourite_colour": "blue"
    }});
    let path = format!("/_sim/hubspot/records/{id}");
    let r = app
        .admin(Method::PATCH, &path, Some(&patch.to_string()))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let at = updated_ms(&r.body);

    let events = receiver.wait_for_events(6).await;
    let changes: Vec<(&str, &str)> = events[3..]
        .iter()
        .map(|e| {
            assert_eq!(e["subscriptionType"], "contact.propertyChange");
            assert_eq!(e["occurredAt"], at);
            (
                e["propertyName"].as_str().unwrap(),
                e["propertyValue"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [("firstname", "Bo"), ("lastname", "Li"), ("phone", "")],
        "untracked and unchanged properties give none; a cleared one gives \"\""
    );

    let r = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let events = receiver.wait_for_events(7).await;
    assert_eq!(events[6]["subscriptionType"], "contact.deletion");
    assert_eq!(events[6]["objectId"], id);
    assert_eq!(events[6]["changeSource"], "CRM_UI");
}

#[tokio::test]
async fn the_apps_own_writes_come_back_as_integration_changes() {
    let (app, receiver) = spawn_hooked().await;
    let out = app
        .upsert(
            "hubspot",
            json!({"primaryEmail": "cy@example.com", "firstName": "Cy"}),
        )
        .await;
    let id: u64 = out["id"].as_str().unwrap().parse().unwrap();

    let events = receiver.wait_for_events(3).await;
    assert_eq!(of_type(&events, "contact.creation").len(), 1);
    for e in &events {
        assert_eq!(e["objectId"], id);
        assert_eq!(e["changeSource"], "INTEGRATION", "{e}");
        assert_eq!(e["sourceId"], APP_ID.to_string());
    }
}

#[tokio::test]
async fn merging_two_contacts_sends_contact_merge() {
    let (app, receiver) = spawn_hooked().await;
    let (merged, _) = create_hubspot(&app, json!({"email": "dee@example.com"})).await;
    let (primary, _) = create_hubspot(&app, json!({"email": "dee@work.example"})).await;
    receiver.wait_for_events(4).await;

    let path = format!("/_sim/hubspot/records/{merged}/merge");
    let body = json!({ "mergeInto": primary }).to_string();
    let r = app.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(id_of(&r.body), primary, "answers with the kept record");

    let events = receiver.wait_for_events(5).await;
    let merge = &events[4];
    assert_eq!(merge["subscriptionType"], "contact.merge");
    assert_eq!(merge["objectId"], primary);
    assert_eq!(merge["primaryObjectId"], primary);
    assert_eq!(merge["mergedObjectIds"], json!([merged]));
    assert_eq!(merge["newObjectId"], primary);
    let live = app.records("hubspot", false).await;
    assert_eq!(live.len(), 1);
    assert_eq!(id_of(&live[0]), primary);

    let again = app.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(
        again.status,
        StatusCode::NOT_FOUND,
        "the merged record is gone"
    );
    let path = format!("/_sim/hubspot/records/{primary}/merge");
    let itself = app.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(itself.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn without_webhooks_nothing_is_sent() {
    let app = TestApp::spawn().await;
    create_hubspot(&app, json!({"email": "eve@example.com"})).await;
    let r = app.admin(Method::GET, "/_sim/webhooks", None).await;
    assert_eq!((r.status, r.body), (StatusCode::OK, json!([])));
    let send = json!({"events": []}).to_string();
    let r = app
        .admin(Method::POST, "/_sim/webhooks/send", Some(&send))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}
