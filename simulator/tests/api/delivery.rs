//! How webhook batches are delivered: batching, retries, timeouts, pause,
//! redelivery, raw sends and reset.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::receiver::{Answer, Receiver, PATIENCE};
use crate::webhooks::{assert_signed, create_hubspot, hooks, spawn_hooked};

fn event_ids(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_u64().unwrap())
        .collect()
}

fn attempt_numbers(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["attemptNumber"].as_u64().unwrap())
        .collect()
}

/// The delivery log, polled until `done` holds for it.
pub async fn log_until(app: &TestApp, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = app.admin(Method::GET, "/_sim/webhooks", None).await;
        let log = r.body.as_array().unwrap().clone();
        if done(&log) {
            return log;
        }
        assert!(tokio::time::Instant::now() < deadline, "log stays {log:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_events() {
    let (app, receiver) = spawn_hooked().await;
    receiver.answer(&[500, 500]);
    create_hubspot(&app, json!({"email": "fay@example.com"})).await;

    let requests = receiver.wait_for(3).await;
    let first = event_ids(&requests[0].json);
    for (n, r) in requests.iter().enumerate() {
        assert_signed(r, &receiver.url);
        assert_eq!(event_ids(&r.json), first, "attempt {n}");
        assert!(
            attempt_numbers(&r.json).iter().all(|a| *a == n as u64),
            "attempt {n}"
        );
    }
    let log = log_until(&app, |l| l.len() == 3).await;
    let seen: Vec<(Value, Value, Value)> = log
        .iter()
        .map(|a| {
            (
                a["attempt"].clone(),
                a["status"].clone(),
                a["events"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (json!(0), json!(500), json!(2)),
            (json!(1), json!(500), json!(2)),
            (json!(2), json!(200), json!(2))
        ]
    );
    assert!(log
        .iter()
        .all(|a| a["batchId"] == log[0]["batchId"] && a["kind"] == "hubspot"));
}

#[tokio::test]
async fn a_slow_answer_counts_as_a_failure() {
    let receiver = Receiver::start().await;
    let mut cfg = hooks(&receiver);
    cfg.timeout = Duration::from_millis(200);
    let app = TestApp::spawn_with(Some(cfg), None).await;
    receiver.script([Answer {
        status: 200,
        delay: Duration::from_secs(2),
    }]);
    create_hubspot(&app, json!({"email": "gus@example.com"})).await;

    let log = log_until(&app, |l| l.iter().any(|a| a["status"] == 200)).await;
    assert_eq!(log[0]["status"], Value::Null);
    assert!(log[0]["error"].is_string(), "{log:#?}");
    assert_eq!(log[1]["attempt"], 1);
}

#[tokio::test]
async fn deliveries_wait_while_paused_and_batches_can_be_sent_again() {
    let (app, receiver) = spawn_hooked().await;
    let r = app.admin(Method::PUT, "/_sim/webhooks/pause", None).await;
    assert_eq!(r.body, json!({"paused": true, "held": 0}));
    create_hubspot(&app, json!({"email": "hal@example.com"})).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app
        .admin(Method::GET, "/_sim/webhooks/pause", None)
        .await
        .body["held"]
        != 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch is never held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(receiver.requests().is_empty(), "held while paused");

    app.admin(Method::PUT, "/_sim/webhooks/resume", None).await;
    let first = receiver.wait_for(1).await.remove(0);
    let log = log_until(&app, |l| l.len() == 1).await;
    let batch_id = log[0]["batchId"].clone();

    let body = json!({ "batchId": batch_id }).to_string();
    let r = app
        .admin(Method::POST, "/_sim/webhooks/redeliver", Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let again = receiver.wait_for(2).await.remove(1);
    assert_eq!(again.json, first.json, "a duplicate of the same events");
    assert_signed(&again, &receiver.url);
    let log = log_until(&app, |l| l.len() == 2).await;
    assert_eq!(log[1]["batchId"], batch_id);

    let unknown = json!({"batchId": 999_999}).to_string();
    let r = app
        .admin(Method::POST, "/_sim/webhooks/redeliver", Some(&unknown))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn raw_events_are_sent_once_as_given() {
    let (app, receiver) = spawn_hooked().await;
    receiver.answer(&[409]);
    let events = json!([
        {"eventId": 9, "subscriptionType": "contact.deletion", "objectId": 5, "occurredAt": 1, "attemptNumber": 3},
        {"eventId": 9, "subscriptionType": "contact.deletion", "objectId": 5, "occurredAt": 1, "attemptNumber": 3},
    ]);
    let body = json!({ "events": events }).to_string();
    let r = app
        .admin(Method::POST, "/_sim/webhooks/send", Some(&body))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], 409, "the app's answer: {}", r.body);

    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        1,
        "answered after the one delivery, not retried"
    );
    assert_eq!(requests[0].json, events);
    assert_signed(&requests[0], &receiver.url);
}

#[tokio::test]
async fn a_batch_holds_at_most_100_events() {
    let receiver = Receiver::start().await;
    let mut cfg = hooks(&receiver);
    cfg.batch_window = Duration::from_millis(500);
    let app = TestApp::spawn_with(Some(cfg), None).await;
    for n in 0..60 {
        create_hubspot(
            &app,
            json!({"email": format!("p{n}@example.com"), "phone": "1"}),
        )
        .await;
    }

    receiver.wait_for_events(180).await;
    let sizes: Vec<usize> = receiver
        .requests()
        .iter()
        .map(|r| r.json.as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 180);
    assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
    assert!(sizes.contains(&100), "a full batch goes at once: {sizes:?}");
}

#[tokio::test]
async fn reset_clears_the_log_and_resumes() {
    let (app, receiver) = spawn_hooked().await;
    create_hubspot(&app, json!({"email": "ida@example.com"})).await;
    log_until(&app, |l| l.len() == 1).await;
    app.admin(Method::PUT, "/_sim/webhooks/pause", None).await;

    let r = app.admin(Method::POST, "/_sim/reset", None).await;
    assert_eq!(r.status, StatusCode::OK);
    log_until(&app, |l| l.is_empty()).await;
    create_hubspot(&app, json!({"email": "jo@example.com"})).await;
    receiver.wait_for(2).await;
    log_until(&app, |l| l.len() == 1).await;

    let r = app.admin(Method::DELETE, "/_sim/webhooks", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    log_until(&app, |l| l.is_empty()).await;
}
