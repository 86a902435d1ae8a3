//! The edges where a sync tool earns or loses trust: pushes that landed but
//! were not recorded, writes and events caught between two stores, jobs
//! that can never finish, and our own dependencies going away.

mod common;

use std::time::Duration;

use common::{eventually, Options, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

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
    app.wait_links(&[cid.as_str()], "synced", Duration::from_secs(10))
        .await;
    app.settle(Duration::from_secs(30)).await;
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
    pool_back(&mut app, &cid).await;

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

#[tokio::test]
async fn a_create_that_landed_but_was_not_recorded_is_known_as_ours() {
    let mut app = TestApp::spawn().await;
    // The first pushes create the records, but the answers come too late:
    // the worker dies before it hears, so no link records an id. Only the
    // intent the api wrote with the new links says what was sent.
    app.set_faults(json!({ "respondLateMs": 8_000 })).await;
    let (status, body) = app
        .create(json!({ "email": "edna@example.com", "firstName": "V1" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let cid = body["contact"]["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "V1 created in both CRMs",
        || async {
            let h = app.records("hubspot").await;
            let p = app.records("pipedrive").await;
            (h.len() == 1 && p.len() == 1).then_some(())
        },
    )
    .await;
    app.kill_worker(0);
    app.set_faults(json!({})).await;

    // A later edit in the app, then the pool comes back. The CRM's
    // webhooks for the records it created wait too: whether they or the
    // pushes run first, neither takes the edit back.
    patch(&app, &cid, json!({ "firstName": "V2" })).await;
    let q = app.queue().await;
    eventually(
        Duration::from_secs(10),
        "the CRM's webhooks queued",
        || async { (q.counts("inbound-change").await.ok()?.outstanding() >= 2).then_some(()) },
    )
    .await;
    pool_back(&mut app, &cid).await;

    let (_, c) = app.contact(&cid).await;
    assert_eq!(
        c["firstName"], "V2",
        "the record our unrecorded create made is not taken for a CRM change: {c}"
    );
    let h = app.records("hubspot").await;
    assert_eq!(h.len(), 1, "no second record: {h:?}");
    assert_eq!(h[0]["properties"]["firstname"], "V2", "{h:?}");
    let p = app.records("pipedrive").await;
    assert_eq!(p.len(), 1, "no second record: {p:?}");
    assert_eq!(p[0]["first_name"], "V2", "{p:?}");
}

/// A worker starts again (after the test killed the last one); returns once
/// every queue is idle and `cid`'s links are synced.
async fn pool_back(app: &mut TestApp, cid: &str) {
    app.add_worker();
    app.settle(Duration::from_secs(30)).await;
    app.wait_links(&[cid], "synced", Duration::from_secs(10))
        .await;
}

async fn sync_logs(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, logs) = app
        .call(Method::GET, &format!("/api/sync-logs?{query}"), None)
        .await;
    assert_eq!(status, 200, "{logs}");
    logs.as_array().cloned().unwrap_or_default()
}

async fn poll_pipedrive(app: &TestApp) {
    let (status, body) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202, "{body}");
    app.settle(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_dead_inbound_change_marks_the_link_and_is_logged() {
    let app = TestApp::spawn().await;
    // The CRM's own webhook for our create is held: arriving after the
    // fault is set, it would be a second failing change of the same record.
    let (status, _) = app.sim_send(Method::PUT, "/webhooks/pause", None).await;
    assert_eq!(status, 200);
    let cid = app.create_ok("erin@example.com").await;
    let link = app
        .wait_link(&cid, "hubspot", "synced", Duration::from_secs(10))
        .await;
    let ext = link["externalId"].as_str().unwrap().to_owned();
    app.settle(Duration::from_secs(30)).await;
    // HubSpot announces a change, but reading that record keeps failing
    app.set_faults(json!({ "failRecords": [ext] })).await;
    let (status, _) = app
        .hubspot_webhook(&json!([common::hs_event(
            77,
            "contact.propertyChange",
            &ext,
            "CRM_UI"
        )]))
        .await;
    assert_eq!(status, 200);
    let link = app
        .wait_link(&cid, "hubspot", "error", Duration::from_secs(15))
        .await;
    assert!(
        link["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("502") || e.contains("500")),
        "{link}"
    );
    // the hook marks the link, then logs; the job is parked after both
    eventually(
        Duration::from_secs(5),
        "an inbound failure logged",
        || async {
            let logs = sync_logs(&app, &format!("contactId={cid}&outcome=failed")).await;
            logs.iter()
                .any(|l| l["direction"] == "inbound" && l["externalId"] == ext.as_str())
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the job in the dead set",
        || async {
            let (_, dead) = app
                .call(
                    Method::GET,
                    "/api/queues/inbound-change/jobs?state=dead",
                    None,
                )
                .await;
            (dead.as_array().map(Vec::len) == Some(1)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_poll_logs_and_skips_a_record_it_cannot_apply_and_goes_on() {
    let app = TestApp::spawn().await;
    let person = |first: &str, email: &str| json!({ "first_name": first, "emails": [{ "value": email, "primary": true, "label": "work" }] });
    let (_, one) = app
        .sim_send(
            Method::POST,
            "/pipedrive/records",
            Some(person("Carol", "carol@example.com")),
        )
        .await;
    poll_pipedrive(&app).await;
    let carol = eventually(Duration::from_secs(10), "Carol imported", || async {
        app.contact_by_email("carol@example.com").await
    })
    .await;
    let cid = carol["id"].as_str().unwrap().to_owned();
    // a second person with Carol's email, then a new person after it
    let (_, two) = app
        .sim_send(
            Method::POST,
            "/pipedrive/records",
            Some(person("Caroline", "carol@example.com")),
        )
        .await;
    app.sim_send(
        Method::POST,
        "/pipedrive/records",
        Some(person("Dave", "dave@example.com")),
    )
    .await;
    poll_pipedrive(&app).await;

    eventually(
        Duration::from_secs(10),
        "Dave imported past the duplicate",
        || async { app.contact_by_email("dave@example.com").await },
    )
    .await;
    let (_, c) = app.contact(&cid).await;
    assert_eq!(
        c["firstName"], "Carol",
        "the duplicate was not merged in: {c}"
    );
    let link = app.link(&cid, "pipedrive").await.unwrap();
    assert_eq!(
        link["externalId"],
        one["id"].to_string().as_str(),
        "Carol stays linked to her own record: {link}"
    );
    let logs = sync_logs(&app, "provider=pipedrive&outcome=failed").await;
    let dup = two["id"].to_string();
    assert!(
        logs.iter().any(|l| l["externalId"] == dup.as_str()
            && l["error"].as_str().is_some_and(|e| e.contains("linked to"))),
        "the skipped duplicate is logged: {logs:?}"
    );
    let (_, dead) = app
        .call(
            Method::GET,
            "/api/queues/provider-poll/jobs?state=dead",
            None,
        )
        .await;
    assert_eq!(
        dead.as_array().map(Vec::len),
        Some(0),
        "the poll did not die: {dead}"
    );
}

#[tokio::test]
async fn a_dead_poll_is_logged() {
    let app = TestApp::spawn().await;
    app.set_faults(json!({ "errorRate": 1.0 })).await;
    let (status, _) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202);
    let logs = eventually(Duration::from_secs(15), "the dead poll logged", || async {
        let logs = sync_logs(&app, "provider=pipedrive&outcome=failed").await;
        (!logs.is_empty()).then_some(logs)
    })
    .await;
    assert!(
        logs[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("poll failed")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_job_that_takes_its_worker_down_every_time_ends_dead_not_in_a_loop() {
    // HubSpot alone, so the push is the one job its worker runs: a worker
    // that dies running several names none of them (they run again one by
    // one, see the workers crate), and this test is about the one named.
    let mut app = TestApp::with(common::Options::default().env("PROVIDERS", "hubspot")).await;
    // HubSpot never answers: each worker that runs the push is killed
    // while it waits, as a job that crashes or hangs its worker would be.
    app.set_faults(json!({ "respondLateMs": 120_000 })).await;
    let (status, body) = app.create(json!({ "email": "poison@example.com" })).await;
    assert_eq!(status, 202, "{body}");
    let cid = body["contact"]["id"].as_str().unwrap().to_owned();
    let job = common::job_id(&body, "hubspot");
    for death in 0..3 {
        eventually(
            Duration::from_secs(20),
            &format!("the push running (stalls {death})"),
            || async {
                let j = job_view(&app, &job).await;
                (j["state"] == "running" && j["stalls"] == death).then_some(())
            },
        )
        .await;
        let last = app.workers.len() - 1;
        app.kill_worker(last);
        app.add_worker();
    }
    let link = app
        .wait_link(&cid, "hubspot", "error", Duration::from_secs(30))
        .await;
    assert!(
        link["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("worker died while running it")),
        "{link}"
    );
    // the hook runs first, then the job is parked
    let j = eventually(Duration::from_secs(10), "the job parked dead", || async {
        let j = job_view(&app, &job).await;
        (j["state"] == "dead").then_some(j)
    })
    .await;
    assert_eq!(j["stalls"], 3, "{j}");
    let logs = {
        let (_, l) = app
            .call(
                Method::GET,
                &format!("/api/sync-logs?contactId={cid}&outcome=failed"),
                None,
            )
            .await;
        l
    };
    assert!(logs.as_array().is_some_and(|l| !l.is_empty()), "{logs}");

    // the operator fixes the cause and retries it
    app.set_faults(json!({})).await;
    let (status, body) = app
        .call(Method::POST, &format!("/api/jobs/{job}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    app.wait_link(&cid, "hubspot", "synced", Duration::from_secs(30))
        .await;
}

async fn job_view(app: &TestApp, id: &str) -> Value {
    app.call(Method::GET, &format!("/api/jobs/{id}"), None)
        .await
        .1
}

#[tokio::test]
async fn a_worker_whose_clock_runs_behind_keeps_its_jobs() {
    let mut app = TestApp::with(common::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    // one worker's wall clock is 30 s behind, its peer's is right
    app.add_worker_with_clock_skew(-30);
    app.add_worker();
    // pushes take a while, so the skewed worker holds jobs for seconds
    app.set_faults(json!({ "respondLateMs": 2_500 })).await;
    let mut jobs = Vec::new();
    let mut ids = Vec::new();
    for i in 0..8 {
        let (status, body) = app
            .create(json!({ "email": format!("skew{i}@example.com") }))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["contact"]["id"].as_str().unwrap().to_owned());
        for j in body["jobs"].as_array().unwrap() {
            jobs.push(j["jobId"].as_str().unwrap().to_owned());
        }
    }
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.wait_links(&all, "synced", Duration::from_secs(60))
        .await;
    let mut workers = std::collections::BTreeSet::new();
    for job in &jobs {
        let j = job_view(&app, job).await;
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!(
            (j["attempts"].as_u64(), j["stalls"].as_u64()),
            (Some(1), Some(0)),
            "run once, never taken from a live worker: {j}"
        );
        workers.insert(j["worker"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(workers.len(), 2, "both workers ran jobs: {workers:?}");
}

#[tokio::test]
async fn the_stores_have_the_bounds_an_operator_sets() {
    let app = TestApp::with(
        common::Options::default()
            .env("SYNC_LOG_RETENTION_DAYS", "0.5")
            .env("DEAD_KEEP", "2")
            .env("RETRY_ATTEMPTS", "1"),
    )
    .await;
    // sync logs expire by a TTL index with the configured age
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .unwrap();
    let logs = client
        .database(&app.db)
        .collection::<bson::Document>("sync_logs");
    let mut cursor = logs.list_indexes().await.unwrap();
    let mut ttl = None;
    while cursor.advance().await.unwrap() {
        let ix = cursor.deserialize_current().unwrap();
        if ix.keys == bson::doc! { "at": 1 } {
            ttl = ix.options.and_then(|o| o.expire_after);
        }
    }
    assert_eq!(ttl, Some(Duration::from_secs(43_200)), "half a day");

    // at most DEAD_KEEP dead jobs per queue, the oldest dropped first
    app.set_faults(json!({ "rejectRecords": ["d0@example.com", "d1@example.com", "d2@example.com", "d3@example.com"] }))
        .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.create_ok(&format!("d{i}@example.com")).await);
        app.wait_links(&[ids[i].as_str()], "error", Duration::from_secs(10))
            .await;
    }
    let dead = eventually(Duration::from_secs(10), "dead set trimmed", || async {
        let (_, dead) = app
            .call(
                Method::GET,
                "/api/queues/outbound-upsert/jobs?state=dead",
                None,
            )
            .await;
        // the newest are kept (the last contact's two pushes are parked
        // just after its links turn error)
        let kept: Vec<String> = dead
            .as_array()?
            .iter()
            .filter_map(|j| {
                j["payload"]["contactId"]["$oid"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        (kept == [ids[3].clone(), ids[3].clone()]).then_some(dead)
    })
    .await;
    assert_eq!(dead.as_array().map(Vec::len), Some(2), "{dead}");
}

#[tokio::test]
async fn a_crm_call_nobody_answers_fails_after_the_call_timeout_not_the_job_s() {
    let app = TestApp::with(
        common::Options::default()
            .env("CRM_CALL_TIMEOUT_SECS", 1)
            .env("JOB_TIMEOUT_SECS", 30),
    )
    .await;
    // every CRM call now takes 4 s to be answered
    app.set_faults(json!({ "latencyMs": 4000 })).await;
    let (status, body) = app.create(json!({ "email": "slow@example.com" })).await;
    assert_eq!(status, 202, "{body}");
    let cid = body["contact"]["id"].as_str().unwrap().to_owned();
    let job = common::job_id(&body, "hubspot");
    let failed = eventually(Duration::from_secs(10), "a failed attempt", || async {
        let (_, j) = app
            .call(Method::GET, &format!("/api/jobs/{job}"), None)
            .await;
        j["failedAttempts"]
            .as_array()
            .and_then(|a| a.first().cloned())
    })
    .await;
    let took = failed["durationMs"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (900..3_000).contains(&took),
        "the attempt gave up after the 1 s call timeout, not 4 s or 30 s: {failed}"
    );
    // the CRM answers again: the retry pushes it
    app.set_faults(json!({})).await;
    app.wait_link(&cid, "hubspot", "synced", Duration::from_secs(20))
        .await;
}

/// A contact deleted while the push that created its CRM records had
/// landed but not been recorded (its worker was killed while the CRMs'
/// answers were on their way): the deletion finds those records by email,
/// knows them as its own by the push intent, and deletes them; nothing is
/// left for a later event or poll to bring back.
#[tokio::test]
async fn a_deletion_after_an_unrecorded_create_deletes_the_crm_records() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    // the CRMs carry the create out, but answer late
    app.set_faults(json!({ "respondLateMs": 3000 })).await;
    let w = app.add_worker();
    let id = app.create_ok("orphan@example.com").await;
    eventually(Duration::from_secs(30), "both records created", || async {
        let hs = app.records("hubspot").await;
        let pd = app.records("pipedrive").await;
        (hs.len() == 1 && pd.len() == 1).then_some(())
    })
    .await;
    // the worker dies before it hears back
    app.kill_worker(w);
    let (status, body) = app
        .call(Method::DELETE, &format!("/api/contacts/{id}"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    app.set_faults(json!({})).await;
    app.add_worker();
    app.settle(Duration::from_secs(40)).await;
    for p in ["hubspot", "pipedrive"] {
        let live = app.records(p).await;
        assert!(live.is_empty(), "{p}: the record is deleted too: {live:?}");
    }
    let (status, _) = app.contact(&id).await;
    assert_eq!(status, 404, "and the contact stays deleted");
}
