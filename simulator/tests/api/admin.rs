use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn health_is_ok() {
    let app = TestApp::spawn().await;
    let r = app.admin(Method::GET, "/_sim/health", None).await;
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({"ok": true})));
}

#[tokio::test]
async fn admin_records_round_trip_in_native_shape() {
    let app = TestApp::spawn().await;
    let body =
        json!({"id": "ignored", "properties": {"email": "Zed@Example.com", "firstname": "Zed"}})
            .to_string();
    let created = app
        .admin(Method::POST, "/_sim/hubspot/records", Some(&body))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "ignored", "the simulator owns ids");

    let out = app
        .upsert(
            "hubspot",
            json!({"primaryEmail": "zed@example.com", "lastName": "Z"}),
        )
        .await;
    assert_eq!(
        out,
        json!({"id": id, "created": false}),
        "upsert finds the CRM-side record"
    );

    let path = format!("/_sim/hubspot/records/{id}");
    let got = app.admin(Method::GET, &path, None).await;
    assert_eq!(got.body["properties"]["lastname"], "Z");

    let r = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        app.records("hubspot", false).await.is_empty(),
        "deleted hidden by default"
    );
    let all = app.records("hubspot", true).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["archived"], true);
    assert!(all[0]["archivedAt"].is_string());
    assert_eq!(
        app.admin(Method::GET, &path, None).await.body["archived"],
        true
    );
    let r = app.admin(Method::PATCH, &path, Some("{}")).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "deleted records cannot be patched"
    );
}

#[tokio::test]
async fn admin_errors_are_json() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            Method::GET,
            "/_sim/salesforce/records",
            None,
            StatusCode::NOT_FOUND,
            "unknown connection",
        ),
        (
            Method::POST,
            "/_sim/zoho/records",
            Some("{}"),
            StatusCode::NOT_FOUND,
            "unknown connection on POST",
        ),
        (
            Method::GET,
            "/_sim/hubspot/records/424242",
            None,
            StatusCode::NOT_FOUND,
            "unknown record",
        ),
        (
            Method::DELETE,
            "/_sim/pipedrive/records/424242",
            None,
            StatusCode::NOT_FOUND,
            "delete unknown",
        ),
        (
            Method::POST,
            "/_sim/pipedrive/records",
            Some("{oops"),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            Method::POST,
            "/_sim/pipedrive/records",
            Some("[1,2]"),
            StatusCode::BAD_REQUEST,
            "not an object",
        ),
        (
            Method::POST,
            "/_sim/hubspot/records",
            Some(r#"{"properties": 1}"#),
            StatusCode::BAD_REQUEST,
            "bad properties",
        ),
        (
            Method::GET,
            "/_sim/nothing/here/at/all",
            None,
            StatusCode::NOT_FOUND,
            "no route",
        ),
    ];
    for (method, path, body, status, why) in cases {
        let r = app.admin(method, path, body).await;
        assert_eq!(r.status, status, "{why}");
        assert!(r.body["error"].is_string(), "{why}: {}", r.body);
    }
}

#[tokio::test]
async fn calls_log_records_every_action_run() {
    let app = TestApp::spawn().await;
    let id = app
        .upsert("hubspot", json!({"primaryEmail": "log@example.com"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok("hubspot", "get-contact", json!({"id": id})).await;
    app.run("pipedrive", "get-contact", json!({"id": "77"}))
        .await;
    app.run_as(None, "pipedrive", "list-contacts", &json!({}))
        .await;

    let calls = app.calls("").await;
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0]["connection"], "hubspot");
    assert_eq!(calls[0]["action"], "upsert-contact");
    assert_eq!(calls[0]["status"], 201);
    assert_eq!(calls[0]["email"], "log@example.com");
    assert_eq!(
        calls[0]["recordId"],
        id.as_str(),
        "an upsert logs the id it resolved to"
    );
    assert_eq!(calls[1]["recordId"], id.as_str());
    assert!(calls[1].get("email").is_none());
    assert_eq!(
        (calls[2]["status"].as_u64(), calls[2]["recordId"].as_str()),
        (Some(400), Some("77")),
        "the CRM's own 404, under an action_run error"
    );
    assert_eq!(calls[3]["status"], 401);
    assert!(calls
        .windows(2)
        .all(|w| w[0]["atMs"].as_i64() <= w[1]["atMs"].as_i64()));

    assert_eq!(app.calls("?connection=pipedrive").await.len(), 2);
    assert_eq!(
        app.calls("?connection=hubspot&action=get-contact")
            .await
            .len(),
        1
    );

    let r = app.admin(Method::DELETE, "/_sim/calls", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(app.calls("").await.is_empty());
}

#[tokio::test]
async fn reset_clears_records_faults_and_calls() {
    let app = TestApp::spawn().await;
    let first = app
        .upsert("pipedrive", json!({"primaryEmail": "r@example.com"}))
        .await;
    app.put_faults(json!({"outage": true})).await;
    let r = app.admin(Method::POST, "/_sim/reset", None).await;
    assert_eq!(r.status, StatusCode::OK);

    assert!(app.records("pipedrive", true).await.is_empty());
    assert!(app.calls("").await.is_empty());
    assert_eq!(
        app.admin(Method::GET, "/_sim/faults", None).await.body["outage"],
        false
    );
    let again = app
        .upsert("pipedrive", json!({"primaryEmail": "r@example.com"}))
        .await;
    assert_eq!(again["created"], true);
    assert_ne!(again["id"], first["id"], "ids are not reused after a reset");
}
