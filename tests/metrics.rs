//! `/metrics`, parsed as Prometheus text, moves by what the test caused.

mod common;

use std::time::Duration;

use common::{eventually, TestApp};
use prometheus_parse::{Scrape, Value as PValue};
use serde_json::json;

async fn scrape(app: &TestApp) -> Scrape {
    let text = app.metrics_text().await;
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text format")
}

/// The value of one series (counters, gauges, untyped; a histogram's count).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
            PValue::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            PValue::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_move_by_what_happened() {
    let app = TestApp::spawn().await;
    let before = scrape(&app).await;
    assert_eq!(
        value(
            &before,
            "queue_jobs",
            &[("queue", "outbound-upsert"), ("state", "pending")]
        ),
        0.0
    );

    let id = app.create_ok("metrics@example.com").await;
    app.wait_link(&id, "hubspot", "synced", Duration::from_secs(3))
        .await;
    app.wait_link(&id, "pipedrive", "synced", Duration::from_secs(3))
        .await;
    app.set_faults(json!({ "failRecords": ["metrics-fail@example.com"] }))
        .await;
    let bad = app.create_ok("metrics-fail@example.com").await;
    app.wait_link(&bad, "hubspot", "error", Duration::from_secs(10))
        .await;
    app.wait_link(&bad, "pipedrive", "error", Duration::from_secs(10))
        .await;
    let (status, _) = app.webhook_raw(b"[]", &[]).await;
    assert_eq!(status, 401);

    let s = eventually(Duration::from_secs(5), "metrics flushed", || async {
        let s = scrape(&app).await;
        let done = value(
            &s,
            "jobs_total",
            &[("queue", "outbound-upsert"), ("outcome", "completed")],
        );
        let dead = value(
            &s,
            "jobs_total",
            &[("queue", "outbound-upsert"), ("outcome", "dead")],
        );
        (done == 2.0 && dead == 2.0).then_some(s)
    })
    .await;
    let q = [("queue", "outbound-upsert")];
    assert_eq!(
        value(&s, "job_retries_total", &q),
        4.0,
        "2 retries for each of 2 dead jobs"
    );
    assert_eq!(
        value(&s, "job_duration_seconds", &q),
        4.0,
        "a duration per finished job"
    );
    assert_eq!(
        value(
            &s,
            "queue_jobs",
            &[("queue", "outbound-upsert"), ("state", "dead")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "links",
            &[("provider", "hubspot"), ("status", "synced")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "links", &[("provider", "hubspot"), ("status", "error")]),
        1.0
    );
    let hs_ok = [
        ("provider", "hubspot"),
        ("action", "create-contact"),
        ("status", "201"),
    ];
    assert_eq!(value(&s, "crm_calls_total", &hs_ok), 1.0);
    let hs_failed = [
        ("provider", "hubspot"),
        ("action", "create-contact"),
        ("status", "502"),
    ];
    assert_eq!(value(&s, "crm_calls_total", &hs_failed), 3.0);
    let hs_creates = [("provider", "hubspot"), ("action", "create-contact")];
    assert_eq!(
        value(&s, "crm_call_seconds", &hs_creates),
        4.0,
        "a duration per call, failed or not"
    );
    let refused = [("source", "hubspot"), ("result", "invalid_signature")];
    assert_eq!(value(&s, "webhook_requests_total", &refused), 1.0);
}

#[tokio::test]
async fn metrics_need_a_token_on_the_api_or_a_listener_of_their_own() {
    let app = TestApp::spawn().await;
    let url = format!("{}/metrics", app.api);
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "no token");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized", "{body}");
    let resp = app
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "wrong token");

    // METRICS_ADDR: a listener of its own, open; the api no longer serves it
    let port = common::free_port();
    let app =
        TestApp::with(common::Options::default().env("METRICS_ADDR", format!("127.0.0.1:{port}")))
            .await;
    let text = eventually(Duration::from_secs(10), "metrics listener up", || async {
        let r = app
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 200).then_some(r.text().await.ok()?)
    })
    .await;
    assert!(text.contains("queue_jobs"), "{text}");
    let resp = app
        .http
        .get(format!("{}/metrics", app.api))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
