//! Outbound sync end to end: api → Redis → worker → simulated CRMs.

mod common;

use std::time::Duration;

use common::{eventually, record_email, Options, RedisCluster, TestApp};
use reqwest::Method;
use serde_json::json;

const PROVIDERS: [&str; 2] = ["hubspot", "pipedrive"];

#[tokio::test]
async fn create_update_delete_reach_both_crms() {
    create_update_delete(Options::default()).await;
}

/// The same on a 3-master Redis Cluster: each queue's keys share a hash
/// slot, so every script runs on one node. The namespace is chosen so the
/// pool-wide keys live on another node than the queues (a random one may
/// land on theirs).
#[tokio::test]
async fn create_update_delete_reach_both_crms_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let namespace = cluster.namespace_apart_from("outbound-upsert");
    create_update_delete(
        Options::default()
            .env("REDIS_URL", cluster.url())
            .env("REDIS_NAMESPACE", namespace),
    )
    .await;
    let held = cluster.keys_per_node();
    assert!(
        held.iter().filter(|n| **n > 0).count() >= 2,
        "the queues spread over the nodes: {held:?}"
    );
}

async fn create_update_delete(opts: Options) {
    let app = TestApp::with(opts).await;

    // create
    let id = app.create_ok("grace@example.com").await;
    for p in PROVIDERS {
        let link = app
            .wait_link(&id, p, "synced", Duration::from_secs(2))
            .await;
        let ext = link["externalId"].as_str().expect("external id").to_owned();
        let rec = app.sim_get(&format!("/{p}/records/{ext}")).await;
        assert_eq!(
            record_email(p, &rec).as_deref(),
            Some("grace@example.com"),
            "{p}: {rec}"
        );
    }
    let hs = app.link(&id, "hubspot").await.unwrap();
    let hs_id = hs["externalId"].as_str().unwrap().to_owned();
    let pd_id = app.link(&id, "pipedrive").await.unwrap()["externalId"]
        .as_str()
        .unwrap()
        .to_owned();

    // update
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{id}"),
            Some(json!({ "lastName": "Hopper", "jobTitle": "Admiral" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(3), "update in hubspot", || async {
        let r = app.sim_get(&format!("/hubspot/records/{hs_id}")).await;
        (r["properties"]["lastname"] == "Hopper" && r["properties"]["jobtitle"] == "Admiral")
            .then_some(())
    })
    .await;
    eventually(Duration::from_secs(3), "update in pipedrive", || async {
        let r = app.sim_get(&format!("/pipedrive/records/{pd_id}")).await;
        (r["last_name"] == "Hopper").then_some(())
    })
    .await;
    assert_eq!(
        app.records("hubspot").await.len(),
        1,
        "an update must not create a record"
    );

    // delete
    let (status, body) = app
        .call(Method::DELETE, &format!("/api/contacts/{id}"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    for p in PROVIDERS {
        eventually(
            Duration::from_secs(3),
            &format!("deleted in {p}"),
            || async { app.records(p).await.is_empty().then_some(()) },
        )
        .await;
    }
    let (status, _) = app.contact(&id).await;
    assert_eq!(status, 404, "a deleted contact is gone from the api");
}

#[tokio::test]
async fn the_same_job_delivered_twice_leaves_one_crm_record() {
    let app = TestApp::spawn().await;
    let id = app.create_ok("twice@example.com").await;
    app.wait_link(&id, "hubspot", "synced", Duration::from_secs(3))
        .await;

    // deliver the same payload again, twice, as a redelivery would
    let q = app.queue().await;
    let payload = json!({ "contactId": id, "provider": "hubspot", "version": 1 });
    for _ in 0..2 {
        q.push("outbound-upsert", &payload, workers::PushOptions::default())
            .await
            .unwrap();
    }
    let counts = q
        .wait_idle("outbound-upsert", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("drained");
    assert_eq!(counts.dead, 0);
    let records = app.records("hubspot").await;
    assert_eq!(records.len(), 1, "one CRM record: {records:?}");
}

#[tokio::test]
async fn a_record_that_always_fails_ends_in_error_then_retry_fixes_it() {
    let app = TestApp::spawn().await;
    app.set_faults(json!({ "failRecords": ["doomed@example.com"] }))
        .await;
    let (status, body) = app
        .create(json!({ "firstName": "Doomed", "email": "doomed@example.com" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["contact"]["id"].as_str().unwrap().to_owned();
    let job_id = common::job_id(&body, "hubspot");

    let link = app
        .wait_link(&id, "hubspot", "error", Duration::from_secs(10))
        .await;
    assert_eq!(link["attempts"], 3, "{link}");
    assert!(
        link["lastError"].as_str().unwrap().contains("502"),
        "reason kept: {link}"
    );
    let calls = app.calls("hubspot", "create-contact").await;
    assert_eq!(
        calls.len(),
        3,
        "exactly 3 attempts reached the CRM: {calls:?}"
    );

    // the job waits in the dead set with its errors
    // (the link turns `error` just before the job is parked)
    let job = eventually(
        Duration::from_secs(3),
        "the job in the dead set",
        || async {
            let (status, dead) = app
                .call(Method::GET, "/api/queues/outbound-upsert/dead", None)
                .await;
            assert_eq!(status, 200);
            dead.as_array()?
                .iter()
                .find(|j| j["id"] == job_id.as_str())
                .cloned()
        },
    )
    .await;
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["failedAttempts"].as_array().unwrap().len(), 3, "{job}");
    let (_, logs) = app
        .call(Method::GET, &format!("/api/contacts/{id}/sync-logs"), None)
        .await;
    assert!(
        logs.as_array()
            .unwrap()
            .iter()
            .any(|l| l["outcome"] == "failed" && l["provider"] == "hubspot"),
        "a sync log says so: {logs}"
    );
    // not silently re-run
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.calls("hubspot", "create-contact").await.len(),
        3,
        "no hidden retries"
    );

    // lift the fault and retry
    app.set_faults(json!({})).await;
    let (status, body) = app
        .call(Method::POST, &format!("/api/jobs/{job_id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    app.wait_link(&id, "hubspot", "synced", Duration::from_secs(3))
        .await;
    assert_eq!(app.records("hubspot").await.len(), 1);
    let (status, _) = app
        .call(Method::POST, &format!("/api/jobs/{job_id}/retry"), None)
        .await;
    assert_eq!(status, 409, "a job that is not dead cannot be retried");
}

#[tokio::test]
async fn a_bulk_retry_of_dead_pushes_marks_their_links_pending_and_syncs_them() {
    let mut app = TestApp::spawn().await;
    app.set_faults(json!({ "failRecords": ["bulk1@example.com", "bulk2@example.com"] }))
        .await;
    let ids = [
        app.create_ok("bulk1@example.com").await,
        app.create_ok("bulk2@example.com").await,
    ];
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.wait_links(&refs, "error", Duration::from_secs(10))
        .await;
    eventually(Duration::from_secs(3), "all four pushes dead", || async {
        let (_, dead) = app
            .call(Method::GET, "/api/queues/outbound-upsert/dead", None)
            .await;
        (dead.as_array()?.len() == 4).then_some(())
    })
    .await;
    // with no worker running, what the revive hook did stays visible
    app.kill_worker(0);
    app.set_faults(json!({})).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/queues/outbound-upsert/dead/retry?errorContains=502",
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["retried"], 4, "{body}");
    for id in &refs {
        for p in PROVIDERS {
            let link = app.link(id, p).await.expect("link");
            assert_eq!(
                link["syncStatus"], "pending",
                "the hook ran for each: {link}"
            );
        }
    }
    app.add_worker();
    app.wait_links(&refs, "synced", Duration::from_secs(10))
        .await;
    for p in PROVIDERS {
        assert_eq!(app.records(p).await.len(), 2, "{p}");
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let app = TestApp::spawn().await;
    app.set_faults(json!({ "throttle": { "pipedrive": { "remaining": 1, "retryAfterSecs": 1 } } }))
        .await;
    let id = app.create_ok("slow@example.com").await;
    app.wait_link(&id, "pipedrive", "synced", Duration::from_secs(5))
        .await;
    // the first call of a first push looks the record up by email
    let calls = app.calls("pipedrive", "find-contact").await;
    assert_eq!(
        calls.len(),
        2,
        "one throttled call, one that passed: {calls:?}"
    );
    assert_eq!(calls[0]["status"], 429);
    let gap = calls[1]["atMs"].as_i64().unwrap() - calls[0]["atMs"].as_i64().unwrap();
    assert!(gap >= 1000, "Retry-After of 1 s honoured, waited {gap} ms");
}

#[tokio::test]
async fn a_4xx_validation_error_is_not_retried() {
    let app = TestApp::spawn().await;
    app.set_faults(json!({ "rejectRecords": ["invalid@example.com"] }))
        .await;
    let id = app.create_ok("invalid@example.com").await;
    let link = app
        .wait_link(&id, "hubspot", "error", Duration::from_secs(5))
        .await;
    assert_eq!(link["attempts"], 1, "{link}");
    assert!(
        link["lastError"].as_str().unwrap().contains("400"),
        "{link}"
    );
    assert_eq!(app.calls("hubspot", "create-contact").await.len(), 1);
}

#[tokio::test]
async fn killing_a_worker_mid_batch_loses_and_duplicates_nothing() {
    kill_mid_batch(Options::default()).await;
}

#[tokio::test]
async fn killing_a_worker_mid_batch_on_a_redis_cluster_loses_and_duplicates_nothing() {
    let cluster = RedisCluster::start();
    kill_mid_batch(Options::default().env("REDIS_URL", cluster.url())).await;
}

async fn kill_mid_batch(opts: Options) {
    let mut app = TestApp::with(Options { workers: 2, ..opts }.env("WORKER_CONCURRENCY", 4)).await;
    app.set_faults(json!({ "latencyMs": 40 })).await;
    let n = 30;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app.create_ok(&format!("k{i}@example.com")).await);
    }
    // let part of the batch through, then kill -9 one worker mid-flight
    eventually(Duration::from_secs(10), "some progress", || async {
        (app.calls("hubspot", "create-contact").await.len() >= 5).then_some(())
    })
    .await;
    app.kill_worker(0);
    for id in &ids {
        for p in PROVIDERS {
            app.wait_link(id, p, "synced", Duration::from_secs(30))
                .await;
        }
    }
    for p in PROVIDERS {
        let records = app.records(p).await;
        let mut emails: Vec<_> = records.iter().filter_map(|r| record_email(p, r)).collect();
        emails.sort();
        emails.dedup();
        assert_eq!(records.len(), n, "{p}: every contact once");
        assert_eq!(emails.len(), n, "{p}: no duplicates");
    }
}

#[tokio::test]
async fn two_workers_share_one_rate_limit() {
    let limit = 5;
    let app = TestApp::with(
        Options {
            workers: 2,
            ..Options::default()
        }
        .env("RATE_LIMIT_HUBSPOT", limit)
        .env("PROVIDERS", "hubspot"),
    )
    .await;
    let n = 20;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app.create_ok(&format!("r{i}@example.com")).await);
    }
    for id in &ids {
        app.wait_link(id, "hubspot", "synced", Duration::from_secs(15))
            .await;
    }
    let mut at: Vec<i64> = app
        .calls("hubspot", "create-contact")
        .await
        .iter()
        .map(|c| c["atMs"].as_i64().unwrap())
        .collect();
    at.sort();
    assert_eq!(at.len(), n);
    let worst = (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1000).count())
        .max()
        .unwrap();
    assert!(
        worst <= limit as usize,
        "{worst} calls within one second, limit {limit}"
    );
}

#[tokio::test]
async fn rapid_updates_end_with_the_latest_state_in_the_crm() {
    let app = TestApp::with(
        Options {
            workers: 2,
            ..Options::default()
        }
        .env("PROVIDERS", "hubspot"),
    )
    .await;
    app.set_faults(json!({ "latencyMs": 20 })).await;
    let id = app.create_ok("rapid@example.com").await;
    for i in 1..=10 {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/api/contacts/{id}"),
                Some(json!({ "jobTitle": format!("v{i}") })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let q = app.queue().await;
    q.wait_idle("outbound-upsert", Duration::from_secs(20))
        .await
        .unwrap()
        .expect("drained");
    let link = app
        .wait_link(&id, "hubspot", "synced", Duration::from_secs(5))
        .await;
    let ext = link["externalId"].as_str().unwrap();
    let rec = app.sim_get(&format!("/hubspot/records/{ext}")).await;
    assert_eq!(
        rec["properties"]["jobtitle"], "v10",
        "the newest state wins: {rec}"
    );
    assert_eq!(app.records("hubspot").await.len(), 1);
}
