//! CRMs already full of data: a first push merges with the record it finds
//! (nothing the app lacks is cleared), the CRM's values enrich the app, and
//! later pushes send only what changed. Checked field by field on both CRMs
//! and the app's contact.

mod common;

use std::time::Duration;

use common::{eventually, Options, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn create_in(app: &TestApp, connection: &str, body: Value) -> String {
    let (status, rec) = app
        .sim_send(Method::POST, &format!("/{connection}/records"), Some(body))
        .await;
    assert_eq!(status, 201, "{rec}");
    match &rec["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn pause_crm_notifications(app: &TestApp) {
    let (status, _) = app.sim_send(Method::PUT, "/webhooks/pause", None).await;
    assert_eq!(status, 200);
}

async fn synced_both(app: &TestApp, cid: &str) {
    app.wait_links(&[cid], "synced", Duration::from_secs(30))
        .await;
    app.settle(Duration::from_secs(30)).await;
}

async fn logs(app: &TestApp, cid: &str) -> Vec<Value> {
    let (status, logs) = app
        .call(Method::GET, &format!("/api/contacts/{cid}/sync-logs"), None)
        .await;
    assert_eq!(status, 200, "{logs}");
    logs.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_first_push_merges_with_existing_crm_records_and_enriches_the_app() {
    let app = TestApp::spawn().await;
    // Sales already keep Bob in both CRMs; their notifications are held so
    // the app meets the records only through its own first push.
    pause_crm_notifications(&app).await;
    let hs = create_in(
        &app,
        "hubspot",
        json!({ "properties": {
            "email": "bob@example.com", "firstname": "Robert", "lastname": "Smith",
            "phone": "+1 555 0100", "company": "Acme"
        } }),
    )
    .await;
    let pd = create_in(
        &app,
        "pipedrive",
        json!({
            "first_name": "Robert", "last_name": "Smith", "org_name": "Acme",
            "job_title": "Head of Sales",
            "emails": [{ "value": "bob@example.com", "primary": true, "label": "work" }]
        }),
    )
    .await;

    let (status, body) = app
        .create(json!({ "email": "bob@example.com", "firstName": "Bob" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let cid = body["contact"]["id"].as_str().unwrap().to_owned();
    synced_both(&app, &cid).await;

    // the CRMs lost nothing and were linked, not duplicated
    assert_eq!(app.records("hubspot").await.len(), 1);
    assert_eq!(app.records("pipedrive").await.len(), 1);
    let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
    let p = &h["properties"];
    assert_eq!(p["email"], "bob@example.com", "{h}");
    assert_eq!(
        p["firstname"], "Robert",
        "crm-wins keeps HubSpot's name: {h}"
    );
    assert_eq!(p["lastname"], "Smith", "{h}");
    assert_eq!(p["phone"], "+1 555 0100", "{h}");
    assert_eq!(p["company"], "Acme", "{h}");
    assert_eq!(
        p["jobtitle"], "Head of Sales",
        "Pipedrive's title reaches HubSpot: {h}"
    );
    let d = app.sim_get(&format!("/pipedrive/records/{pd}")).await;
    assert_eq!(d["first_name"], "Robert", "{d}");
    assert_eq!(d["last_name"], "Smith", "{d}");
    assert_eq!(d["org_name"], "Acme", "{d}");
    assert_eq!(d["job_title"], "Head of Sales", "{d}");
    assert_eq!(d["emails"][0]["value"], "bob@example.com", "{d}");
    assert_eq!(
        d["phones"][0]["value"], "+1 555 0100",
        "HubSpot's phone reaches Pipedrive: {d}"
    );

    // the app's contact was enriched with what the CRMs knew
    let (_, c) = app.contact(&cid).await;
    assert_eq!(c["firstName"], "Robert", "{c}");
    assert_eq!(c["lastName"], "Smith", "{c}");
    assert_eq!(c["phone"], "+1 555 0100", "{c}");
    assert_eq!(c["companyName"], "Acme", "{c}");
    assert_eq!(c["jobTitle"], "Head of Sales", "{c}");
    assert_eq!(c["email"], "bob@example.com", "{c}");
    let link = app.link(&cid, "hubspot").await.unwrap();
    assert_eq!(link["externalId"], hs.as_str(), "{link}");

    // and the sync log says so
    let logs = logs(&app, &cid).await;
    let notes: Vec<&str> = logs.iter().filter_map(|l| l["conflict"].as_str()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("enriched from hubspot") && n.contains("primaryPhone")),
        "{logs:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("crm-wins") && n.contains("firstName")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l["outcome"] == "linked" && l["provider"] == "hubspot"),
        "{logs:?}"
    );
}

#[tokio::test]
async fn later_pushes_send_only_what_the_app_changed() {
    let app = TestApp::spawn().await;
    pause_crm_notifications(&app).await;
    let cid = app.create_ok("ann@example.com").await;
    synced_both(&app, &cid).await;
    let hs = app.link(&cid, "hubspot").await.unwrap()["externalId"]
        .as_str()
        .unwrap()
        .to_owned();
    // someone sets a phone in HubSpot; the app does not hear of it
    let (status, _) = app
        .sim_send(
            Method::PATCH,
            &format!("/hubspot/records/{hs}"),
            Some(json!({ "properties": { "phone": "+44 20 7946 0000" } })),
        )
        .await;
    assert_eq!(status, 200);
    // the app changes another field
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{cid}"),
            Some(json!({ "jobTitle": "Engineer" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    synced_both(&app, &cid).await;

    let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
    assert_eq!(h["properties"]["jobtitle"], "Engineer", "{h}");
    assert_eq!(
        h["properties"]["phone"], "+44 20 7946 0000",
        "a field changed only in the CRM is not overwritten: {h}"
    );
    let (_, c) = app.contact(&cid).await;
    assert_eq!(
        c["phone"], "+44 20 7946 0000",
        "and it reaches the app: {c}"
    );
    assert_eq!(c["jobTitle"], "Engineer", "{c}");
    let pd = app.records("pipedrive").await;
    assert_eq!(pd[0]["phones"][0]["value"], "+44 20 7946 0000", "{pd:?}");
}

#[tokio::test]
async fn under_app_wins_a_push_still_leaves_fields_changed_only_in_the_crm() {
    let app = TestApp::with(Options::default().env("CONFLICT_POLICY", "app-wins")).await;
    pause_crm_notifications(&app).await;
    create_in(
        &app,
        "hubspot",
        json!({ "properties": { "email": "cy@example.com", "firstname": "Cyrus", "company": "Initech" } }),
    )
    .await;
    let (status, body) = app
        .create(json!({ "email": "cy@example.com", "firstName": "Cy", "jobTitle": "PM" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let cid = body["contact"]["id"].as_str().unwrap().to_owned();
    synced_both(&app, &cid).await;
    let hs = app.link(&cid, "hubspot").await.unwrap()["externalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
    assert_eq!(h["properties"]["firstname"], "Cy", "app-wins: {h}");
    assert_eq!(h["properties"]["company"], "Initech", "never cleared: {h}");
    assert_eq!(h["properties"]["jobtitle"], "PM", "{h}");
    let (_, c) = app.contact(&cid).await;
    assert_eq!(
        c["companyName"], "Initech",
        "a gap is filled under any policy: {c}"
    );

    // a CRM-only change survives the app's next push, which does not even read
    app.sim_send(
        Method::PATCH,
        &format!("/hubspot/records/{hs}"),
        Some(json!({ "properties": { "lastname": "Beck" } })),
    )
    .await;
    app.call(
        Method::PATCH,
        &format!("/api/contacts/{cid}"),
        Some(json!({ "jobTitle": "Director" })),
    )
    .await;
    synced_both(&app, &cid).await;
    let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
    assert_eq!(h["properties"]["jobtitle"], "Director", "{h}");
    assert_eq!(h["properties"]["lastname"], "Beck", "{h}");
    assert_eq!(h["properties"]["company"], "Initech", "{h}");
}

#[tokio::test]
async fn a_contact_arriving_from_one_crm_merges_into_the_others_record() {
    let app = TestApp::spawn().await;
    // Pipedrive already has Carol; its changes are not announced here
    let pd = create_in(
        &app,
        "pipedrive",
        json!({
            "first_name": "Carol", "org_name": "Globex", "job_title": "Buyer",
            "emails": [{ "value": "carol@example.com", "primary": true, "label": "work" }]
        }),
    )
    .await;
    // Carol is created in HubSpot; its webhook imports her into the app,
    // and the app pushes her on to Pipedrive
    let hs = create_in(
        &app,
        "hubspot",
        json!({ "properties": { "email": "carol@example.com", "firstname": "Carol", "lastname": "Jones", "phone": "+1 555 0199" } }),
    )
    .await;
    let c = eventually(Duration::from_secs(10), "Carol imported", || async {
        app.contact_by_email("carol@example.com").await
    })
    .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    synced_both(&app, &cid).await;

    assert_eq!(
        app.records("pipedrive").await.len(),
        1,
        "linked, not duplicated"
    );
    let d = app.sim_get(&format!("/pipedrive/records/{pd}")).await;
    assert_eq!(d["org_name"], "Globex", "{d}");
    assert_eq!(d["job_title"], "Buyer", "{d}");
    assert_eq!(d["last_name"], "Jones", "{d}");
    assert_eq!(d["phones"][0]["value"], "+1 555 0199", "{d}");
    let (_, c) = app.contact(&cid).await;
    assert_eq!(c["companyName"], "Globex", "{c}");
    assert_eq!(c["jobTitle"], "Buyer", "{c}");
    assert_eq!(c["lastName"], "Jones", "{c}");
    let h = app.sim_get(&format!("/hubspot/records/{hs}")).await;
    assert_eq!(h["properties"]["company"], "Globex", "{h}");
    assert_eq!(h["properties"]["phone"], "+1 555 0199", "{h}");
}

/// Alice changes her email and, at once, Bee is created with Alice's old
/// one, before Alice's push took it out of the CRMs: Bee's first push finds
/// Alice's record by that email. It is not Bee's: Bee waits for Alice's
/// push, then gets records of her own, and nothing of Alice's is merged
/// into Bee.
#[tokio::test]
async fn an_email_moved_to_a_new_contact_is_not_merged_with_the_old_owner() {
    let app = TestApp::with(
        Options::default()
            .env("RETRY_ATTEMPTS", "100")
            .env("RETRY_BASE_MS", "100"),
    )
    .await;
    let (status, body) = app
        .create(json!({ "email": "a@example.com", "firstName": "Alice" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let alice = body["contact"]["id"].as_str().expect("id").to_owned();
    app.wait_links(&[&alice], "synced", Duration::from_secs(20))
        .await;
    let mut records = Vec::new();
    for p in ["hubspot", "pipedrive"] {
        let link = app.link(&alice, p).await.expect("link");
        records.push(link["externalId"].as_str().expect("id").to_owned());
    }
    // Alice's pushes are held up in both CRMs while Bee's first push runs.
    app.set_faults(json!({ "failRecords": records })).await;
    app.sim_send(Method::DELETE, "/calls", None).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{alice}"),
            Some(json!({ "email": "b@example.com" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .create(json!({ "email": "a@example.com", "firstName": "Bee" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let bee = body["contact"]["id"].as_str().expect("id").to_owned();
    eventually(
        Duration::from_secs(20),
        "Bee looked a@ up in both CRMs",
        || async {
            let hs = app.calls("hubspot", "find-contact").await;
            let pd = app.calls("pipedrive", "find-contact").await;
            (!hs.is_empty() && !pd.is_empty()).then_some(())
        },
    )
    .await;
    app.set_faults(json!({})).await;

    app.wait_links(&[&alice, &bee], "synced", Duration::from_secs(30))
        .await;
    for p in ["hubspot", "pipedrive"] {
        let a = app.link(&alice, p).await.expect("link");
        let b = app.link(&bee, p).await.expect("link");
        assert_ne!(a["externalId"], b["externalId"], "{p}: a record each");
        let recs = app.records(p).await;
        assert_eq!(recs.len(), 2, "{p}: {recs:?}");
        for (email, name) in [("a@example.com", "Bee"), ("b@example.com", "Alice")] {
            let r = recs
                .iter()
                .find(|r| common::record_email(p, r).as_deref() == Some(email))
                .unwrap_or_else(|| panic!("{p}: a record with {email}: {recs:?}"));
            let first = match p {
                "hubspot" => &r["properties"]["firstname"],
                _ => &r["first_name"],
            };
            assert_eq!(first, name, "{p}: {email} is {name}'s: {r}");
        }
    }
    let (_, b) = app.contact(&bee).await;
    assert_eq!(b["firstName"], "Bee", "nothing of Alice's in Bee: {b}");
    assert_eq!(b["email"], "a@example.com");
}
