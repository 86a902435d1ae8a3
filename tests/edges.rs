//! The edges where a sync tool earns or loses trust: pushes that landed but
//! were not recorded, writes and events caught between two stores, jobs
//! that can never finish, and our own dependencies going away.

mod common;

use std::time::Duration;

use common::{eventually, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// Waits until no sync job of any kind is left to run.
async fn settle(app: &TestApp) {
    let q = app.queue().await;
    eventually(Duration::from_secs(30), "every queue idle", || async {
        for _ in 0..2 {
            for queue in ["outbound-upsert", "inbound-change", "provider-poll"] {
                if q.counts(queue).await.ok()?.outstanding() > 0 {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
}

async fn patch(app: &TestApp, cid: &str, body: Value) {
    let (status, resp) = app
        .call(Method::PATCH, &format!("/api/contacts/{cid}"), Some(body))
        .await;
    assert_eq!(status, 202, "{resp}");
}

#[tokio::test]
async fn a_push_that_landed_but_was_not_recorded_does_not_revert_a_later_edit() {
    let mut app = TestApp::spawn().await;
    let (status, body) = app
        .create(json!({ "email": "dora@example.com", "firstName": "V1" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let cid = body["contact"]["id"].as_str().unwrap().to_owned();
    for p in ["hubspot", "pipedrive"] {
        app.wait_link(&cid, p, "synced", Duration::from_secs(10))
            .await;
    }
    settle(&app).await;
    let hs = app.link(&cid, "hubspot").await.unwrap()["externalId"]
        .as_str()
        .unwrap()
        .to_owned();

    // The CRMs accept the next push but their answers are late; the worker
    // dies before it hears, so nothing records that the push landed.
    app.set_faults(json!({ "respondLateMs": 8_000 })).await;
    patch(&app, &cid, json!({ "firstName": "V2" })).await;
    eventually(
        Duration::from_secs(10),
        "V2 landed in both CRMs",
        || async {
            let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
            let p = app.records("pipedrive").await;
            (h["properties"]["firstname"] == "V2" && p[0]["first_name"] == "V2").then_some(())
        },
    )
    .await;
    app.kill_worker(0);
    app.set_faults(json!({})).await;

    // A later edit in the app, then the pool comes back.
    patch(&app, &cid, json!({ "firstName": "V3" })).await;
    app.add_worker();
    settle(&app).await;
    for p in ["hubspot", "pipedrive"] {
        app.wait_link(&cid, p, "synced", Duration::from_secs(10))
            .await;
    }

    let (_, c) = app.contact(&cid).await;
    assert_eq!(
        c["firstName"], "V3",
        "our own unrecorded push is not mistaken for a CRM change: {c}"
    );
    let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
    assert_eq!(h["properties"]["firstname"], "V3", "{h}");
    let p = app.records("pipedrive").await;
    assert_eq!(p[0]["first_name"], "V3", "{p:?}");
}
