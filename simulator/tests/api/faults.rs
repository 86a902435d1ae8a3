use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

fn upsert_input(email: &str) -> Value {
    json!({"fields": {"primaryEmail": email}})
}

#[tokio::test]
async fn throttle_answers_429_with_retry_after_then_lets_calls_through() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"throttle": {"hubspot": {"remaining": 2, "retryAfterSecs": 7}}}))
        .await;

    for n in 0..2 {
        let r = app
            .run("hubspot", "upsert-contact", upsert_input("t@example.com"))
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "call {n}");
        assert_eq!(r.headers["retry-after"], "7", "call {n}");
        assert_eq!(r.body["type"], "dependency_error");
        assert_eq!(r.body["key"], "rate_limit_exceeded");
        let response = &r.body["data"]["response"];
        assert_eq!(response["status"], 429);
        assert_eq!(response["headers"]["retry-after"], "7");
        assert_eq!(
            response["data"]["errorType"], "RATE_LIMIT",
            "HubSpot's own 429 body"
        );
    }
    let faults = app.admin(Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(
        faults["throttle"]["hubspot"]["remaining"], 0,
        "GET shows the count run down"
    );

    let out = app
        .ok("hubspot", "upsert-contact", upsert_input("t@example.com"))
        .await;
    assert_eq!(out["created"], true, "the throttled calls wrote nothing");
    app.ok("pipedrive", "upsert-contact", upsert_input("t@example.com"))
        .await;
}

#[tokio::test]
async fn rate_limit_allows_n_accepted_calls_per_second() {
    let app = TestApp::spawn().await;
    const LIMIT: usize = 3;
    app.put_faults(json!({"rateLimits": {"pipedrive": LIMIT}}))
        .await;

    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(app.run("pipedrive", "list-contacts", json!({})).await);
    }
    let limited = statuses
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("some call was limited");
    assert_eq!(limited.headers["retry-after"], "1");
    assert_eq!(limited.body["key"], "rate_limit_exceeded");
    assert_eq!(
        limited.body["data"]["response"]["data"]["errorCode"], 429,
        "Pipedrive's own 429 body"
    );
    assert_eq!(
        limited.body["data"]["response"]["headers"]["x-ratelimit-limit"],
        "3"
    );

    let calls = app.calls("?connection=pipedrive").await;
    let accepted: Vec<i64> = calls
        .iter()
        .filter(|c| c["status"] == 201)
        .map(|c| c["atMs"].as_i64().unwrap())
        .collect();
    for (i, t) in accepted.iter().enumerate() {
        let in_window = accepted[i..].iter().filter(|u| **u - t < 1000).count();
        assert!(
            in_window <= LIMIT,
            "more than {LIMIT} accepted calls within 1 s: {accepted:?}"
        );
    }
    let span = calls.last().unwrap()["atMs"].as_i64().unwrap() - calls[0]["atMs"].as_i64().unwrap();
    if span < 1000 {
        assert_eq!(accepted.len(), LIMIT, "all calls fell in one window");
    }

    app.ok("hubspot", "list-contacts", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = app.run("pipedrive", "list-contacts", json!({})).await;
        if r.status == StatusCode::CREATED {
            break;
        }
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the window never moved on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fail_records_answer_502_for_that_email_or_id() {
    let app = TestApp::spawn().await;
    let id = app
        .upsert("hubspot", json!({"primaryEmail": "ok@example.com"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.put_faults(json!({"failRecords": ["Bad@Example.com", id]}))
        .await;

    let cases = [
        ("upsert-contact", upsert_input("bad@example.com"), "email"),
        ("get-contact", json!({"id": id}), "id"),
        (
            "update-contact",
            json!({"id": id, "fields": {"firstName": "X"}}),
            "id on update",
        ),
    ];
    for (action, input, why) in cases {
        let r = app.run("hubspot", action, input).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{why}");
        assert_eq!(r.body["type"], "dependency_error", "{why}");
        assert_eq!(r.body["data"]["response"]["status"], 500, "{why}");
    }
    app.ok(
        "hubspot",
        "upsert-contact",
        upsert_input("fine@example.com"),
    )
    .await;
}

#[tokio::test]
async fn outage_answers_503_until_lifted() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"outage": true})).await;
    for conn in ["hubspot", "pipedrive"] {
        let r = app.run(conn, "list-contacts", json!({})).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{conn}");
        assert_eq!(r.body["type"], "internal", "{conn}");
    }
    app.put_faults(json!({})).await;
    app.ok("hubspot", "list-contacts", json!({})).await;
}

#[tokio::test]
async fn error_rate_one_fails_every_call_as_a_crm_500() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"errorRate": 1.0})).await;
    let r = app
        .run("pipedrive", "upsert-contact", upsert_input("x@example.com"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body["type"], "dependency_error");
    assert_eq!(r.body["data"]["response"]["status"], 500);
    assert!(app.records("pipedrive", true).await.is_empty());
}

#[tokio::test]
async fn latency_delays_every_action_call() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"latencyMs": 150})).await;
    let start = Instant::now();
    app.ok("hubspot", "list-contacts", json!({})).await;
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn bad_fault_settings_are_refused() {
    let app = TestApp::spawn().await;
    let cases = [
        ("{not json", "malformed JSON"),
        (r#"{"latencyMs": "slow"}"#, "wrong type"),
        (r#"{"outages": true}"#, "unknown field"),
        (r#"{"rateLimits": {"salesforce": 1}}"#, "unknown connection"),
        (r#"{"errorRate": 2}"#, "rate above 1"),
    ];
    for (body, why) in cases {
        let r = app.admin(Method::PUT, "/_sim/faults", Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert!(r.body["error"].is_string(), "{why}");
    }
    let current = app.admin(Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(
        current,
        json!({"latencyMs": 0, "respondLateMs": 0, "errorRate": 0.0, "outage": false, "failRecords": [], "rejectRecords": [], "throttle": {}, "rateLimits": {}, "batchRefusedWhole": false})
    );
}
