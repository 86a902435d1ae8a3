//! Integration.app flow events for Pipedrive changes.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{json, Value};
use simulator::EventsConfig;

use crate::delivery::log_until;
use crate::helpers::{TestApp, KEY, SECRET};
use crate::receiver::{Received, Receiver};

pub fn claims(r: &Received) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[KEY]);
    validation.set_required_spec_claims(&["iss", "sub"]);
    let token = r.header("x-membrane-token");
    assert_eq!(
        token,
        r.header("x-integration-app-token"),
        "both headers carry the same token"
    );
    decode::<Value>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("a token signed with the workspace secret")
    .claims
}

#[tokio::test]
async fn pipedrive_changes_call_the_events_endpoint() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(None, Some(EventsConfig::new(&receiver.url))).await;

    let person = json!({"first_name": "Kim", "last_name": "Lo",
        "emails": [{"value": "kim@example.com", "primary": true, "label": "work"}]});
    let r = app
        .admin(
            Method::POST,
            "/_sim/pipedrive/records",
            Some(&person.to_string()),
        )
        .await;
    let id = r.body["id"].to_string();
    let created = receiver.wait_for(1).await.remove(0);
    assert_eq!(created.header("content-type"), "application/json");
    let c = claims(&created);
    assert_eq!(c["sub"], "contact-sync");
    assert!(c["fields"].is_object(), "{c}");
    assert!(c.get("id").is_none(), "only the documented claims: {c}");
    let expected = app.get_contact("pipedrive", &id).await.body["output"].clone();
    assert_eq!(
        created.json,
        json!({"externalRecordId": id, "data": expected,
               "event": "data-record-created", "integrationKey": "pipedrive"})
    );

    app.ok(
        "pipedrive",
        "update-contact",
        json!({"id": id, "fields": {"jobTitle": "CTO"}}),
    )
    .await;
    app.ok("pipedrive", "delete-contact", json!({"id": id}))
        .await;
    let requests = receiver.wait_for(3).await;
    assert_eq!(requests[1].json["event"], "data-record-updated");
    assert_eq!(requests[1].json["data"]["fields"]["jobTitle"], "CTO");
    assert_eq!(requests[2].json["event"], "data-record-deleted");
    assert!(requests[2].json["data"]["deletedTime"].is_string());

    let log = log_until(&app, |l| l.len() == 3).await;
    assert!(
        log.iter()
            .all(|a| a["kind"] == "events" && a["events"] == 1 && a["status"] == 200),
        "{log:#?}"
    );
    let r = app
        .admin(Method::GET, "/_sim/webhooks?kind=events", None)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let r = app
        .admin(Method::GET, "/_sim/webhooks?kind=hubspot", None)
        .await;
    assert_eq!(r.body, json!([]), "no HubSpot webhooks configured");
}
