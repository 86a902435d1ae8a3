//! HubSpot's batch endpoints through `api-request-to-external-app` actions:
//! 100 inputs a call, one rate-limit request a call, and an input that
//! fails failing alone.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

fn creates(from: usize, n: usize) -> Value {
    let inputs: Vec<Value> = (from..from + n)
        .map(|i| json!({"properties": {"email": format!("b{i}@example.com"), "firstname": format!("B{i}")}}))
        .collect();
    json!({ "inputs": inputs })
}

#[tokio::test]
async fn a_batch_of_100_creates_is_one_call_and_one_bad_email_fails_alone() {
    let app = TestApp::spawn().await;
    let mut input = creates(0, 100);
    input["inputs"][42]["properties"]["email"] = json!("not-an-email");
    let out = app.ok("hubspot", "batch-create-contacts", input).await;
    assert_eq!(out["status"], "COMPLETE");
    assert_eq!(out["results"].as_array().unwrap().len(), 99, "{out}");
    assert_eq!(out["numErrors"], 1);
    assert_eq!(out["errors"][0]["category"], "VALIDATION_ERROR");
    assert_eq!(out["errors"][0]["context"]["email"][0], "not-an-email");
    assert_eq!(app.records("hubspot", false).await.len(), 99);
    assert_eq!(app.calls("?connection=hubspot").await.len(), 1);

    // an email a contact has already is a conflict naming it; the others
    // are created
    let mut again = creates(99, 2);
    again["inputs"][0]["properties"]["email"] = json!("B0@example.com");
    let out = app.ok("hubspot", "batch-create-contacts", again).await;
    assert_eq!(out["results"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["errors"][0]["category"], "CONFLICT");
    let existing = out["errors"][0]["context"]["existingId"][0]
        .as_str()
        .unwrap();
    assert!(
        out["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(existing),
        "{out}"
    );
}

#[tokio::test]
async fn more_than_100_inputs_are_refused_whole() {
    let app = TestApp::spawn().await;
    let r = app
        .run("hubspot", "batch-create-contacts", creates(0, 101))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.to_string().contains("limit"), "{}", r.body);
    assert!(app.records("hubspot", false).await.is_empty());
}

#[tokio::test]
async fn batch_read_by_email_and_update_by_id() {
    let app = TestApp::spawn().await;
    let made = app
        .ok("hubspot", "batch-create-contacts", creates(0, 3))
        .await;
    let id_of = |i: usize| made["results"][i]["id"].as_str().unwrap().to_owned();
    let out = app
        .ok(
            "hubspot",
            "batch-read-contacts",
            json!({"inputs": [{"id": "B1@EXAMPLE.com"}, {"id": "nobody@example.com"}]}),
        )
        .await;
    assert_eq!(out["results"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["results"][0]["id"], id_of(1).as_str());
    assert_eq!(out["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(out["errors"][0]["context"]["ids"][0], "nobody@example.com");

    let r = app
        .admin(
            Method::DELETE,
            &format!("/_sim/hubspot/records/{}", id_of(2)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let out = app
        .ok(
            "hubspot",
            "batch-update-contacts",
            json!({"inputs": [
                {"id": id_of(0), "properties": {"lastname": "Updated"}},
                {"id": id_of(2), "properties": {"lastname": "Gone"}},
            ]}),
        )
        .await;
    assert_eq!(out["results"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["results"][0]["properties"]["lastname"], "Updated");
    assert_eq!(out["errors"][0]["context"]["ids"][0], id_of(2).as_str());
}

#[tokio::test]
async fn hubspot_s_ten_second_window_counts_a_batch_as_one_request() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"rateLimits": {"hubspot": {"calls": 2, "windowMs": 10_000}}}))
        .await;
    for from in [0, 100] {
        app.ok("hubspot", "batch-create-contacts", creates(from, 100))
            .await;
    }
    let r = app
        .run("hubspot", "batch-create-contacts", creates(200, 1))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let headers = &r.body["data"]["response"]["headers"];
    assert_eq!(
        headers["x-hubspot-ratelimit-interval-milliseconds"],
        "10000"
    );
    assert_eq!(
        r.body["data"]["response"]["data"]["policyName"],
        "TEN_SECONDLY_ROLLING"
    );
    assert_eq!(app.records("hubspot", false).await.len(), 200);
}

#[tokio::test]
async fn a_rejected_input_fails_alone_or_with_batch_refused_whole_the_whole_call() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"rejectRecords": ["b3@example.com"]}))
        .await;
    let out = app
        .ok("hubspot", "batch-create-contacts", creates(0, 5))
        .await;
    assert_eq!(out["results"].as_array().unwrap().len(), 4, "{out}");
    assert_eq!(out["numErrors"], 1);
    assert_eq!(out["errors"][0]["category"], "VALIDATION_ERROR");
    assert_eq!(out["errors"][0]["context"]["email"][0], "b3@example.com");

    app.put_faults(json!({"rejectRecords": ["b7@example.com"], "batchRefusedWhole": true}))
        .await;
    let r = app
        .run("hubspot", "batch-create-contacts", creates(5, 5))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        app.records("hubspot", false).await.len(),
        4,
        "none of the 5 made"
    );
}
