//! Inbound sync: HubSpot webhooks, Pipedrive polling, conflicts, echoes.

mod common;

use std::time::Duration;

use common::{eventually, hs_event, record_email, signed_headers, Options, TestApp, HS_SECRET};
use reqwest::Method;
use serde_json::{json, Value};

/// body, headers, expected status, why
type Case<'a> = (&'a [u8], Vec<(String, String)>, u16, &'a str);

async fn hubspot_record(app: &TestApp, email: &str, first: &str) -> String {
    let (status, rec) = app
        .sim_send(
            Method::POST,
            "/hubspot/records",
            Some(json!({ "properties": { "email": email, "firstname": first } })),
        )
        .await;
    assert_eq!(status, 201, "{rec}");
    rec["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| rec["id"].to_string())
}

async fn wait_contact(
    app: &TestApp,
    email: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(Duration::from_secs(5), what, || async {
        app.contact_by_email(email).await.filter(|c| check(c))
    })
    .await
}

#[tokio::test]
async fn signatures_are_checked_and_nothing_is_queued_for_a_bad_request() {
    let app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let url = app.webhook_url();
    let body = json!([hs_event(1, "contact.propertyChange", "901", "CRM_UI")]).to_string();
    let now = common::chrono_ms();
    let good = signed_headers(HS_SECRET, &url, body.as_bytes(), &now.to_string());
    let only = |names: &[&str], h: &[(String, String)]| -> Vec<(String, String)> {
        h.iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    let v3 = only(
        &["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"],
        &good,
    );
    let v1 = only(&["X-HubSpot-Signature-v3", "X-HubSpot-Signature"], &good)
        .into_iter()
        .filter(|(k, _)| k == "X-HubSpot-Signature")
        .collect::<Vec<_>>();
    let mut changed = body.clone().into_bytes();
    let last = changed.len() - 2;
    changed[last] = b'9';
    let old_ts = (now - 6 * 60 * 1000).to_string();
    let old = signed_headers(HS_SECRET, &url, body.as_bytes(), &old_ts);
    let wrong_secret = signed_headers("not-the-secret", &url, body.as_bytes(), &now.to_string());
    let bad_json = b"[{\"eventId\": ".to_vec();
    let bad_json_sig = signed_headers(HS_SECRET, &url, &bad_json, &now.to_string());
    let wrong_sig = vec![
        (
            "X-HubSpot-Signature-v3".to_string(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
        ),
        ("X-HubSpot-Request-Timestamp".to_string(), now.to_string()),
    ];
    let cases: Vec<Case> = vec![
        (
            changed.as_slice(),
            v3.clone(),
            401,
            "body changed by one byte (v3)",
        ),
        (
            changed.as_slice(),
            v1.clone(),
            401,
            "body changed by one byte (v1)",
        ),
        (
            body.as_bytes(),
            only(
                &["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"],
                &old,
            ),
            401,
            "timestamp 6 minutes old",
        ),
        (body.as_bytes(), vec![], 401, "no signature header"),
        (
            body.as_bytes(),
            only(&["X-HubSpot-Signature-v3"], &good),
            401,
            "v3 without timestamp",
        ),
        (
            body.as_bytes(),
            wrong_secret.clone(),
            401,
            "signed with a wrong secret",
        ),
        (body.as_bytes(), wrong_sig, 401, "wrong signature"),
        (
            bad_json.as_slice(),
            bad_json_sig,
            400,
            "malformed JSON, valid signature",
        ),
    ];
    for (b, headers, want, why) in cases {
        let (status, resp) = app.webhook_raw(b, &headers).await;
        assert_eq!(status, want, "{why}: {resp}");
        assert!(resp["error"].is_string(), "{why}: JSON error: {resp}");
    }
    let q = app.queue().await;
    assert_eq!(
        q.counts("inbound-change").await.unwrap().pending,
        0,
        "nothing queued for refused requests"
    );

    // v3 alone and v1 alone are accepted; the second delivery of the same
    // events (HubSpot retries, or a replayed v1 request) queues nothing new
    let (status, resp) = app.webhook_raw(body.as_bytes(), &v3).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(q.counts("inbound-change").await.unwrap().pending, 1);
    let (status, resp) = app.webhook_raw(body.as_bytes(), &v1).await;
    assert_eq!(status, 200, "replayed v1: {resp}");
    assert_eq!(
        q.counts("inbound-change").await.unwrap().pending,
        1,
        "no duplicate work"
    );
}

#[tokio::test]
async fn hubspot_published_v1_vector_is_accepted() {
    let app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env(
            "HUBSPOT_CLIENT_SECRET",
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
        ),
    )
    .await;
    let body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    let headers = vec![
        (
            "X-HubSpot-Signature".to_string(),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de".to_string(),
        ),
        ("X-HubSpot-Signature-Version".to_string(), "v1".to_string()),
    ];
    let (status, resp) = app.webhook_raw(body.as_bytes(), &headers).await;
    assert_eq!(status, 200, "{resp}");
    let job = app.queue().await.counts("inbound-change").await.unwrap();
    assert_eq!(job.pending, 1);
}

#[tokio::test]
async fn a_contact_created_in_hubspot_appears_locally_and_reaches_pipedrive_once() {
    let app = TestApp::spawn().await;
    let id = hubspot_record(&app, "hs.new@example.com", "Hana").await;
    let started = std::time::Instant::now();
    let (status, _) = app
        .hubspot_webhook(&json!([hs_event(10, "contact.creation", &id, "CRM_UI")]))
        .await;
    assert_eq!(status, 200);
    let c = wait_contact(&app, "hs.new@example.com", "imported contact", |c| {
        c["firstName"] == "Hana"
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within 2 s: {:?}",
        started.elapsed()
    );
    let cid = c["id"].as_str().unwrap().to_owned();
    app.wait_link(&cid, "pipedrive", "synced", Duration::from_secs(3))
        .await;
    let hs = app.link(&cid, "hubspot").await.unwrap();
    assert_eq!(hs["externalId"], id.as_str(), "{hs}");
    assert_eq!(app.records("pipedrive").await.len(), 1);
    assert_eq!(
        app.calls("pipedrive", "create-contact").await.len(),
        1,
        "pushed to the other CRM once"
    );
    let writes = app.calls("hubspot", "create-contact").await.len()
        + app.calls("hubspot", "update-contact").await.len();
    assert_eq!(writes, 0, "not pushed back to where it came from");

    // a deletion in HubSpot deletes locally, and in Pipedrive
    let (status, _) = app
        .sim_send(Method::DELETE, &format!("/hubspot/records/{id}"), None)
        .await;
    assert_eq!(status, 204);
    app.hubspot_webhook(&json!([hs_event(11, "contact.deletion", &id, "CRM_UI")]))
        .await;
    eventually(Duration::from_secs(5), "deleted locally", || async {
        app.contact_by_email("hs.new@example.com")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "deleted in pipedrive", || async {
        app.records("pipedrive").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn our_own_push_coming_back_as_a_webhook_is_not_pushed_again() {
    let app = TestApp::spawn().await;
    let cid = app.create_ok("echo@example.com").await;
    let link = app
        .wait_link(&cid, "hubspot", "synced", Duration::from_secs(3))
        .await;
    app.wait_link(&cid, "pipedrive", "synced", Duration::from_secs(3))
        .await;
    let ext = link["externalId"].as_str().unwrap().to_owned();
    let before: usize = futures_count(&app).await;
    // HubSpot reports the change our push made (changeSource INTEGRATION)
    app.hubspot_webhook(&json!([hs_event(
        20,
        "contact.creation",
        &ext,
        "INTEGRATION"
    )]))
    .await;
    let q = app.queue().await;
    q.wait_idle("inbound-change", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("applied");
    q.wait_idle("outbound-upsert", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("drained");
    assert_eq!(
        futures_count(&app).await,
        before,
        "no second outbound push to either CRM"
    );
    let (_, c) = app.contact(&cid).await;
    assert_eq!(c["version"], 1, "the echo changed nothing locally: {c}");
}

async fn futures_count(app: &TestApp) -> usize {
    let mut n = 0;
    for conn in ["hubspot", "pipedrive"] {
        for action in ["create-contact", "update-contact", "delete-contact"] {
            n += app.calls(conn, action).await.len();
        }
    }
    n
}

#[tokio::test]
async fn five_deliveries_and_out_of_order_events_leave_one_in_order_state() {
    let app = TestApp::spawn().await;
    let id = hubspot_record(&app, "dup@example.com", "First").await;
    let (status, _) = app
        .sim_send(
            Method::PATCH,
            &format!("/hubspot/records/{id}"),
            Some(json!({ "properties": { "firstname": "Second" } })),
        )
        .await;
    assert_eq!(status, 200);
    // the newer event first, then the older one, each delivered five times
    let newer = json!([hs_event(31, "contact.propertyChange", &id, "CRM_UI")]);
    let older = json!([hs_event(30, "contact.creation", &id, "CRM_UI")]);
    for _ in 0..5 {
        assert_eq!(app.hubspot_webhook(&newer).await.0, 200);
    }
    for _ in 0..5 {
        assert_eq!(app.hubspot_webhook(&older).await.0, 200);
    }
    let q = app.queue().await;
    q.wait_idle("inbound-change", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("applied");
    q.wait_idle("outbound-upsert", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("drained");
    let matches: Vec<Value> = app
        .contacts()
        .await
        .into_iter()
        .filter(|c| c["email"] == "dup@example.com")
        .collect();
    assert_eq!(matches.len(), 1, "one contact");
    assert_eq!(matches[0]["firstName"], "Second", "the newest state");
    assert_eq!(app.records("pipedrive").await.len(), 1);
    assert_eq!(
        app.calls("pipedrive", "create-contact").await.len(),
        1,
        "one push to the other CRM"
    );
}

#[tokio::test]
async fn pipedrive_changes_arrive_by_polling() {
    let app = TestApp::spawn().await;
    let (status, rec) = app
        .sim_send(
            Method::POST,
            "/pipedrive/records",
            Some(json!({ "first_name": "Piper", "last_name": "Drive", "emails": [{ "value": "piper@example.com", "primary": true, "label": "work" }] })),
        )
        .await;
    assert_eq!(status, 201, "{rec}");
    let pid = rec["id"].to_string();
    let poll = || async {
        let (status, body) = app
            .call(Method::POST, "/api/providers/pipedrive/poll", None)
            .await;
        assert_eq!(status, 202, "{body}");
        let q = app.queue().await;
        q.wait_idle("provider-poll", Duration::from_secs(10))
            .await
            .unwrap()
            .expect("polled");
    };
    poll().await;
    let c = wait_contact(&app, "piper@example.com", "imported by poll", |c| {
        c["lastName"] == "Drive"
    })
    .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    app.wait_link(&cid, "hubspot", "synced", Duration::from_secs(3))
        .await;

    app.sim_send(
        Method::PATCH,
        &format!("/pipedrive/records/{pid}"),
        Some(json!({ "last_name": "Polled" })),
    )
    .await;
    poll().await;
    wait_contact(&app, "piper@example.com", "changed by poll", |c| {
        c["lastName"] == "Polled"
    })
    .await;

    // a poll with nothing new changes nothing (the inclusive bound is de-duplicated)
    let before = futures_count(&app).await;
    poll().await;
    let (_, c) = app.contact(&cid).await;
    let version = c["version"].clone();
    poll().await;
    assert_eq!(app.contact(&cid).await.1["version"], version);
    app.queue()
        .await
        .wait_idle("outbound-upsert", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        futures_count(&app).await <= before + 1,
        "no repeated pushes"
    );

    app.sim_send(Method::DELETE, &format!("/pipedrive/records/{pid}"), None)
        .await;
    poll().await;
    eventually(Duration::from_secs(5), "deleted by poll", || async {
        app.contact_by_email("piper@example.com")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_conflict_keeps_hubspots_version_under_crm_wins() {
    let mut app = TestApp::spawn().await;
    let cid = app.create_ok("conflict@example.com").await;
    let link = app
        .wait_link(&cid, "hubspot", "synced", Duration::from_secs(3))
        .await;
    app.wait_link(&cid, "pipedrive", "synced", Duration::from_secs(3))
        .await;
    let ext = link["externalId"].as_str().unwrap().to_owned();

    // both sides change before either syncs
    app.kill_worker(0);
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{cid}"),
            Some(json!({ "jobTitle": "From the app" })),
        )
        .await;
    assert_eq!(status, 202);
    app.sim_send(
        Method::PATCH,
        &format!("/hubspot/records/{ext}"),
        Some(json!({ "properties": { "jobtitle": "From HubSpot" } })),
    )
    .await;
    app.hubspot_webhook(&json!([hs_event(
        40,
        "contact.propertyChange",
        &ext,
        "CRM_UI"
    )]))
    .await;
    app.add_worker();

    eventually(
        Duration::from_secs(10),
        "HubSpot's value locally",
        || async {
            let (_, c) = app.contact(&cid).await;
            (c["jobTitle"] == "From HubSpot").then_some(())
        },
    )
    .await;
    let q = app.queue().await;
    q.wait_idle("inbound-change", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("applied");
    q.wait_idle("outbound-upsert", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("drained");
    let rec = app.sim_get(&format!("/hubspot/records/{ext}")).await;
    assert_eq!(
        rec["properties"]["jobtitle"], "From HubSpot",
        "HubSpot keeps its value: {rec}"
    );
    let pd = app.records("pipedrive").await;
    assert_eq!(
        pd[0]["job_title"], "From HubSpot",
        "the winner reaches the other CRM: {pd:?}"
    );
    let (_, logs) = app
        .call(Method::GET, &format!("/api/contacts/{cid}/sync-logs"), None)
        .await;
    assert!(
        logs.as_array().unwrap().iter().any(|l| l["conflict"]
            .as_str()
            .is_some_and(|c| c.contains("crm-wins") && c.contains("hubspot"))),
        "the sync log says which side won: {logs}"
    );
}

#[tokio::test]
async fn hubspot_webhooks_from_the_simulator_import_and_nothing_echoes() {
    let app = TestApp::spawn().await;
    let started = std::time::Instant::now();
    hubspot_record(&app, "auto@example.com", "Auto").await;
    wait_contact(&app, "auto@example.com", "imported from the webhook", |c| {
        c["firstName"] == "Auto"
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within 2 s: {:?}",
        started.elapsed()
    );
    // the push to Pipedrive comes back as a flow event; wait for it to be delivered
    eventually(
        Duration::from_secs(5),
        "pipedrive echo delivered",
        || async {
            let log = app.sim_get("/webhooks?kind=events").await;
            log.as_array()?
                .iter()
                .any(|d| d["status"] == 200)
                .then_some(())
        },
    )
    .await;
    let q = app.queue().await;
    for queue in ["inbound-change", "outbound-upsert", "inbound-change"] {
        q.wait_idle(queue, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("idle");
    }
    let writes = |conn: &'static str| {
        let app = &app;
        async move {
            app.calls(conn, "create-contact").await.len()
                + app.calls(conn, "update-contact").await.len()
        }
    };
    assert_eq!(
        writes("pipedrive").await,
        1,
        "reached Pipedrive exactly once"
    );
    assert_eq!(writes("hubspot").await, 0, "did not come back to HubSpot");
    let matches = app
        .contacts()
        .await
        .into_iter()
        .filter(|c| c["email"] == "auto@example.com")
        .count();
    assert_eq!(matches, 1);
}

#[tokio::test]
async fn a_poll_killed_half_way_resumes_from_its_cursor() {
    let mut app = TestApp::with(
        Options {
            workers: 1,
            ..Options::default()
        }
        .env("SIMULATOR_EVENTS_URL", "")
        .env("PROVIDERS", "pipedrive")
        .env("WORKER_CONCURRENCY", 2),
    )
    .await;
    let n = 150;
    for i in 0..n {
        let (status, rec) = app
            .sim_send(
                Method::POST,
                "/pipedrive/records",
                Some(json!({ "first_name": format!("P{i}"), "emails": [{ "value": format!("p{i}@example.com"), "primary": true }] })),
            )
            .await;
        assert_eq!(status, 201, "{rec}");
    }
    // slow CRM calls so the poll is still running when the worker dies
    app.set_faults(json!({ "latencyMs": 15 })).await;
    let (status, _) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(60), "first page applied", || async {
        (app.contacts().await.len() >= 100).then_some(())
    })
    .await;
    app.kill_worker(0);
    let imported_at_kill = app.contacts_all().await.len();
    assert!(
        imported_at_kill < n,
        "killed half-way ({imported_at_kill} of {n})"
    );
    app.set_faults(json!({})).await;
    app.add_worker();
    // the interrupted job is recovered; an operator may also poll again
    let (status, _) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202);
    let q = app.queue().await;
    eventually(Duration::from_secs(60), "every record imported", || async {
        let c = q.counts("provider-poll").await.ok()?;
        (c.outstanding() == 0 && app.contacts_all().await.len() >= n).then_some(())
    })
    .await;
    let contacts = app.contacts_all().await;
    let mut emails: Vec<String> = contacts
        .iter()
        .filter_map(|c| c["email"].as_str().map(str::to_owned))
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(contacts.len(), n, "no record missed or imported twice");
    assert_eq!(emails.len(), n);
    let (status, logs) = app
        .call(
            Method::GET,
            "/api/sync-logs?provider=pipedrive&outcome=created&limit=500",
            None,
        )
        .await;
    assert_eq!(status, 200, "{logs}");
    // a record applied just before the kill may have lost its log line, but
    // none is created twice
    let created = logs.as_array().unwrap();
    let mut seen = std::collections::HashMap::new();
    for l in created {
        seen.entry(l["externalId"].to_string())
            .or_insert_with(Vec::new)
            .push(l.clone());
    }
    let twice: Vec<&Vec<serde_json::Value>> = seen.values().filter(|v| v.len() > 1).collect();
    assert!(twice.is_empty(), "no record created twice: {twice:?}");
    let (_, updated) = app
        .call(
            Method::GET,
            "/api/sync-logs?provider=pipedrive&outcome=updated&limit=500",
            None,
        )
        .await;
    assert_eq!(
        updated.as_array().unwrap().len(),
        0,
        "nothing applied twice"
    );
}

#[tokio::test]
async fn a_webhook_batch_is_one_job_that_fans_out_into_one_per_record() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    // the simulator's own deliveries are held: only the batch below arrives
    let (status, _) = app.sim_send(Method::PUT, "/webhooks/pause", None).await;
    assert_eq!(status, 200);
    let mut ids = Vec::new();
    for (i, name) in ["Ana", "Ben", "Cy"].iter().enumerate() {
        ids.push(hubspot_record(&app, &format!("fan{i}@example.com"), name).await);
    }
    let mut events: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| hs_event(700 + i as u64, "contact.creation", id, "CRM_UI"))
        .collect();
    // two events on one record are one change
    events.push(hs_event(710, "contact.propertyChange", &ids[0], "CRM_UI"));
    let batch = json!(events);
    let (status, body) = app.hubspot_webhook(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], 3, "one change per record: {body}");
    let q = app.queue().await;
    let pending = q
        .list("inbound-change", workers::JobState::Pending, 0, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "the batch is one job: {pending:?}");
    let gathered = &pending[0];
    let records: Vec<&str> = gathered.payload["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{}", gathered.payload);
    for id in &ids {
        assert!(records.contains(&id.as_str()), "{id} in {records:?}");
    }

    // HubSpot delivering it again queues nothing
    let (status, body) = app.hubspot_webhook(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], 0, "{body}");
    assert_eq!(q.counts("inbound-change").await.unwrap().pending, 1);

    // a worker fans it out; each record becomes a contact, once
    app.add_worker();
    for i in 0..3 {
        wait_contact(&app, &format!("fan{i}@example.com"), "imported", |_| true).await;
    }
    app.settle(Duration::from_secs(20)).await;
    let done = q
        .list("inbound-change", workers::JobState::Done, 0, 100)
        .await
        .unwrap();
    let mut children: Vec<&str> = done
        .iter()
        .filter_map(|j| j.id.strip_prefix(&format!("{}.", gathered.id)))
        .collect();
    children.sort_unstable();
    assert_eq!(
        children,
        ["0", "1", "2"],
        "one job per record, named after the batch"
    );
    assert!(done.iter().any(|j| j.id == gathered.id), "the batch ran");
    assert_eq!(app.contacts().await.len(), 3, "no duplicates");
    assert_eq!(
        app.records("pipedrive").await.len(),
        3,
        "each reached Pipedrive"
    );
}

/// A batch of `n` HubSpot creations of new records, queued as one job
/// while no worker runs; returns the batch job.
async fn queued_batch(app: &TestApp, n: usize, prefix: &str) -> workers::JobInfo {
    let (status, _) = app.sim_send(Method::PUT, "/webhooks/pause", None).await;
    assert_eq!(status, 200);
    let mut events = Vec::new();
    for i in 0..n {
        let id = hubspot_record(app, &format!("{prefix}{i}@example.com"), "Kay").await;
        events.push(hs_event(900 + i as u64, "contact.creation", &id, "CRM_UI"));
    }
    let (status, body) = app.hubspot_webhook(&json!(events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], n, "{body}");
    let mut pending = app
        .queue()
        .await
        .list("inbound-change", workers::JobState::Pending, 0, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "one batch job: {pending:?}");
    pending.remove(0)
}

/// Every one of the `n` records is one contact and one Pipedrive record,
/// each of the batch's children ran, and nothing waits for an operator.
async fn each_record_once(app: &TestApp, n: usize, batch_id: &str) {
    eventually(Duration::from_secs(60), "every record imported", || async {
        (app.contacts().await.len() >= n).then_some(())
    })
    .await;
    app.settle(Duration::from_secs(30)).await;
    let contacts = app.contacts().await;
    let mut emails: Vec<String> = contacts
        .iter()
        .filter_map(|c| c["email"].as_str().map(str::to_owned))
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(contacts.len(), n, "every record once");
    assert_eq!(emails.len(), n, "no duplicates");
    assert_eq!(
        app.records("pipedrive").await.len(),
        n,
        "each reached Pipedrive once"
    );
    let q = app.queue().await;
    let done = q
        .list("inbound-change", workers::JobState::Done, 0, 1000)
        .await
        .unwrap();
    let mut children: Vec<&str> = done
        .iter()
        .filter_map(|j| j.id.strip_prefix(&format!("{batch_id}.")))
        .collect();
    children.sort_unstable();
    children.dedup();
    assert_eq!(children.len(), n, "one job per record: {children:?}");
    let dead = q.dead("inbound-change", 0, 10).await.unwrap();
    assert!(dead.is_empty(), "nothing left for an operator: {dead:?}");
}

#[tokio::test]
async fn a_batch_run_again_after_its_fan_out_queues_nothing_twice() {
    use contact_sync::jobs::{InboundChange, Kind};
    let n = 12;
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let batch = queued_batch(&app, n, "again").await;
    // What a worker killed between the fan-out and the batch's
    // acknowledgement leaves once its jobs are taken back: the children
    // queued (the fan-out is one script call), the batch pending again.
    let q = app.queue().await;
    for (i, child) in batch.payload["batch"]
        .as_array()
        .expect("the batch's changes")
        .iter()
        .enumerate()
    {
        let change: InboundChange = serde_json::from_value(child.clone()).expect("a change");
        q.push(
            "inbound-change",
            child,
            workers::PushOptions {
                id: Some(format!("{}.{i}", batch.id)),
                group: change.group(),
                ..workers::PushOptions::default()
            },
        )
        .await
        .expect("child queued");
    }
    assert_eq!(
        q.counts("inbound-change").await.unwrap().pending,
        n as u64 + 1
    );

    app.add_worker();
    each_record_once(&app, n, &batch.id).await;
    let counts = q.counts("inbound-change").await.unwrap();
    assert_eq!(
        counts.completed_total,
        n as u64 + 1,
        "the batch and each child ran once; the fan-out queued nothing again"
    );
}

// A worker killed after an imported record's contact was written but
// before its push to the other CRMs was queued: the push was written with
// the contact (its outbox), and the outbox relay queues it (this test found
// that gap about 1 run in 10 before).
#[tokio::test]
async fn killing_a_worker_while_a_batch_s_children_run_loses_and_duplicates_nothing() {
    let n = 40;
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("WORKER_CONCURRENCY", 4),
    )
    .await;
    let batch = queued_batch(&app, n, "kill").await;
    // slow CRM answers keep children in flight when the worker dies
    app.set_faults(json!({ "latencyMs": 40 })).await;
    let w = app.add_worker();
    eventually(Duration::from_secs(20), "children running", || async {
        (app.calls("pipedrive", "create-contact").await.len() >= 3).then_some(())
    })
    .await;
    app.kill_worker(w);
    assert!(
        app.contacts().await.len() < n,
        "the kill came too late to test anything"
    );
    // another worker takes over the dead one's jobs
    app.add_worker();
    each_record_once(&app, n, &batch.id).await;
}

/// An app subscribed to more than contacts gets every object's events on
/// one URL: only contact changes are fetched (as contacts), the rest is
/// answered 200 and counted as ignored.
#[tokio::test]
async fn only_contact_events_are_fetched_as_contacts() {
    let app = TestApp::spawn().await;
    let ev = |id: u64, kind: &str, object: u64| hs_event(id, kind, &object.to_string(), "CRM_UI");
    let mut generic_company = ev(5, "object.creation", 1005);
    generic_company["objectTypeId"] = json!("0-2");
    let mut generic_contact = ev(6, "object.propertyChange", 1006);
    generic_contact["objectTypeId"] = json!("0-1");
    let batch = json!([
        ev(1, "company.creation", 1001),
        ev(2, "deal.propertyChange", 1002),
        ev(3, "ticket.deletion", 1003),
        ev(4, "contact.associationChange", 1004),
        generic_company,
        generic_contact,
        ev(7, "contact.creation", 1007),
        ev(8, "contact.privacyDeletion", 1008),
    ]);
    let (status, body) = app.hubspot_webhook(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 8, "{body}");
    assert_eq!(body["jobs"], 3, "the three contact changes: {body}");
    app.settle(Duration::from_secs(20)).await;
    let mut fetched: Vec<String> = app
        .calls("hubspot", "get-contact")
        .await
        .iter()
        .filter_map(|c| c["recordId"].as_str().map(str::to_owned))
        .collect();
    fetched.sort();
    fetched.dedup();
    assert_eq!(fetched, ["1006", "1007", "1008"]);
}

/// HubSpot deletes a person for privacy (`contact.privacyDeletion`, sent
/// beside `contact.deletion`): the contact is deleted everywhere, as for
/// any deletion, and what the app keeps of the person is erased.
/// Creates a contact and waits until it is synced; returns its id and its
/// HubSpot record's.
async fn synced_in_hubspot(app: &TestApp, contact: Value) -> (String, String) {
    let (status, body) = app.create(contact).await;
    assert_eq!(status, 202, "{body}");
    let id = body["contact"]["id"].as_str().expect("id").to_owned();
    app.wait_links(&[&id], "synced", Duration::from_secs(20))
        .await;
    let hs = app.link(&id, "hubspot").await.expect("link")["externalId"]
        .as_str()
        .expect("id")
        .to_owned();
    (id, hs)
}

#[tokio::test]
async fn a_privacy_deletion_erases_the_person_from_the_app() {
    let app = TestApp::spawn().await;
    let (id, hs) = synced_in_hubspot(
        &app,
        json!({ "email": "private@example.com", "firstName": "Pri", "lastName": "Vate",
        "phone": "phone-xyzzy", "jobTitle": "Secret" }),
    )
    .await;

    // HubSpot deletes the record (its contact.deletion webhook follows by
    // itself) and sends the privacy deletion.
    let (status, body) = app
        .sim_send(Method::DELETE, &format!("/hubspot/records/{hs}"), None)
        .await;
    assert!(status < 300, "{status} {body}");
    let (status, body) = app
        .hubspot_webhook(&json!([hs_event(
            4242,
            "contact.privacyDeletion",
            &hs,
            "GDPR"
        )]))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "deleted in Pipedrive", || async {
        app.records("pipedrive").await.is_empty().then_some(())
    })
    .await;
    app.settle(Duration::from_secs(20)).await;

    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    let db = client.database(&app.db);
    let oid = bson::oid::ObjectId::parse_str(&id).expect("oid");
    let contact = db
        .collection::<bson::Document>("contacts")
        .find_one(bson::doc! { "_id": oid })
        .await
        .expect("read")
        .expect("kept, erased");
    for field in ["firstName", "lastName", "phone", "jobTitle"] {
        assert!(!contact.contains_key(field), "{field} erased: {contact}");
    }
    let email = contact.get_str("email").expect("email");
    assert!(!email.contains("private"), "the email is erased: {email}");
    assert!(contact.contains_key("deletedAt") && contact.contains_key("erasedAt"));
    let text = |coll: &str| {
        let db = db.clone();
        let coll = coll.to_owned();
        async move {
            use futures::TryStreamExt;
            let docs: Vec<bson::Document> = db
                .collection::<bson::Document>(&coll)
                .find(bson::doc! { "contactId": oid })
                .await
                .expect("find")
                .try_collect()
                .await
                .expect("read");
            assert!(!docs.is_empty(), "{coll} kept");
            format!("{docs:?}")
        }
    };
    for coll in ["contact_links", "sync_logs"] {
        let all = text(coll).await;
        for value in ["private@", "Pri", "Vate", "xyzzy", "Secret"] {
            assert!(!all.contains(value), "{coll} still holds {value}: {all}");
        }
    }
}

/// HubSpot's `contact.restore` ("a contact is restored from deletion"): a
/// contact deleted in the app with its HubSpot record comes back when the
/// record is restored, and so does its Pipedrive person, which the
/// deletion had removed.
#[tokio::test]
async fn a_contact_restored_in_hubspot_comes_back_everywhere() {
    let app = TestApp::spawn().await;
    let (id, hs) = synced_in_hubspot(
        &app,
        json!({ "email": "lazarus@example.com", "firstName": "Laz", "jobTitle": "Back" }),
    )
    .await;

    // deleted in HubSpot: gone from the app and from Pipedrive
    let (status, body) = app
        .sim_send(Method::DELETE, &format!("/hubspot/records/{hs}"), None)
        .await;
    assert!(status < 300, "{status} {body}");
    eventually(Duration::from_secs(20), "deleted in Pipedrive", || async {
        app.records("pipedrive").await.is_empty().then_some(())
    })
    .await;
    app.settle(Duration::from_secs(20)).await;
    let (status, contact) = app.contact(&id).await;
    assert!(
        status == 404 || !contact["deletedAt"].is_null(),
        "deleted in the app: {status} {contact}"
    );

    // restored from HubSpot's recycle bin (its contact.restore webhook
    // follows by itself)
    let (status, body) = app
        .sim_send(
            Method::POST,
            &format!("/hubspot/records/{hs}/restore"),
            None,
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let person = eventually(Duration::from_secs(20), "back in Pipedrive", || async {
        app.records("pipedrive").await.into_iter().next()
    })
    .await;
    app.wait_links(&[&id], "synced", Duration::from_secs(20))
        .await;
    app.settle(Duration::from_secs(20)).await;

    let (status, contact) = app.contact(&id).await;
    assert_eq!(status, 200, "the contact is back: {contact}");
    assert!(contact["deletedAt"].is_null(), "not deleted: {contact}");
    assert_eq!(contact["firstName"], "Laz", "{contact}");
    assert_eq!(
        app.link(&id, "hubspot").await.expect("link")["externalId"],
        hs.as_str(),
        "linked to the restored record"
    );
    let people = app.records("pipedrive").await;
    assert_eq!(people.len(), 1, "one person in Pipedrive: {people:?}");
    assert_eq!(
        record_email("pipedrive", &person).as_deref(),
        Some("lazarus@example.com")
    );
    assert_eq!(people[0]["first_name"], "Laz", "{people:?}");
    assert_eq!(
        app.link(&id, "pipedrive").await.expect("link")["externalId"],
        people[0]["id"].to_string().as_str(),
        "linked to the new person"
    );
    assert_eq!(app.records("hubspot").await.len(), 1, "one HubSpot contact");
    // the email is the restored contact's again
    let (status, body) = app
        .create(json!({ "email": "lazarus@example.com", "firstName": "Other" }))
        .await;
    assert_eq!(status, 409, "{body}");
}
