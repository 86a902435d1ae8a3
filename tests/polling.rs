//! Polling a CRM against its real listing contracts: the incremental poll
//! asks the CRM what changed (Pipedrive's persons by `updated_since`) and
//! reads only those; deletions, which no list of changes shows, are
//! noticed by the full scan.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Options, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// Persons made in the simulated Pipedrive account (without events: only
/// a poll can bring them in). The simulator's own suite lists 10,000
/// (`simulator/tests/api/listing.rs`); here the first poll imports each
/// one, which takes the app about 35 ms a person in a debug build.
const PERSONS: usize = 500;

/// The live contact with `email`, read through every page of the api.
async fn contact_by_email(app: &TestApp, email: &str) -> Option<Value> {
    app.contacts_all()
        .await
        .into_iter()
        .find(|c| c["email"] == email)
}

async fn poll(app: &TestApp, kind: &str) {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/providers/pipedrive/{kind}"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    app.queue()
        .await
        .wait_idle("provider-poll", Duration::from_secs(120))
        .await
        .unwrap()
        .expect("polled");
}

async fn make_persons(app: &TestApp, n: usize) -> Vec<Value> {
    let mut made = Vec::new();
    for from in (0..n).step_by(2_000) {
        let people: Vec<Value> = (from..(from + 2_000).min(n))
            .map(|i| {
                json!({"name": format!("P{i} Person"), "first_name": format!("P{i}"), "last_name": "Person",
                    "emails": [{"value": format!("p{i}@example.com"), "primary": true, "label": "work"}]})
            })
            .collect();
        let (status, body) = app
            .sim_send(
                Method::POST,
                "/pipedrive/records",
                Some(Value::Array(people)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        made.extend(body.as_array().unwrap().iter().cloned());
    }
    made
}

/// Changes the last name of each of `changed` in Pipedrive, then polls;
/// returns the poll's `list-changed-contacts` and `get-contact` calls.
async fn change_and_poll(app: &TestApp, changed: &[&Value]) -> (Vec<Value>, Vec<Value>) {
    for p in changed {
        let (status, body) = app
            .sim_send(
                Method::PATCH,
                &format!("/pipedrive/records/{}", p["id"]),
                Some(json!({"last_name": "Changed"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.sim_send(Method::DELETE, "/calls", None).await;
    poll(app, "poll").await;
    (
        app.calls("pipedrive", "list-changed-contacts").await,
        app.calls("pipedrive", "get-contact").await,
    )
}

fn ms_of(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Waits (with a deadline) until the wall clock, which the simulator's
/// follows, is `ms` or later.
async fn clock_reaches(ms: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::chrono_ms() < ms {
        assert!(Instant::now() < deadline, "the clock did not reach {ms}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_poll_of_500_persons_reads_the_3_changed_and_a_full_scan_notices_a_deletion() {
    let app = TestApp::with(
        Options::default()
            .env("SIMULATOR_EVENTS_URL", "")
            .env("PROVIDERS", "pipedrive"),
    )
    .await;
    let made = make_persons(&app, PERSONS).await;
    // The first poll is a full scan; its cursor is its start less the
    // settling time, so let the persons' second settle first (else the
    // next poll reads the last ones again, as it should).
    let last = made.iter().map(|p| ms_of(&p["update_time"])).max().unwrap();
    clock_reaches(last - last.rem_euclid(1000) + 3_000).await;
    poll(&app, "poll").await;
    assert_eq!(app.contacts_all().await.len(), PERSONS, "all imported");

    let changed = [&made[17], &made[250], &made[498]];
    let (listings, reads) = change_and_poll(&app, &changed).await;
    let full = app.calls("pipedrive", "list-contacts").await;
    assert_eq!(listings.len(), 1, "one page: {listings:?}");
    assert_eq!(reads.len(), 3, "the 3 changed read: {reads:?}");
    assert!(full.is_empty(), "no full listing");
    for p in changed {
        let email = p["emails"][0]["value"].as_str().unwrap();
        let c = contact_by_email(&app, email).await.expect("still there");
        assert_eq!(c["lastName"], "Changed", "{email}");
    }

    // A person deleted in Pipedrive is not in its list of changes ...
    let gone = &made[42];
    let gone_email = gone["emails"][0]["value"].as_str().unwrap();
    let (status, _) = app
        .sim_send(
            Method::DELETE,
            &format!("/pipedrive/records/{}", gone["id"]),
            None,
        )
        .await;
    assert_eq!(status, 204);
    poll(&app, "poll").await;
    assert!(contact_by_email(&app, gone_email).await.is_some());
    // ... the full scan reads what the listing no longer shows, by id.
    app.sim_send(Method::DELETE, "/calls", None).await;
    poll(&app, "backfill").await;
    eventually(
        Duration::from_secs(10),
        "deleted by the full scan",
        || async {
            contact_by_email(&app, gone_email)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let reads = app.calls("pipedrive", "get-contact").await;
    assert_eq!(reads.len(), 1, "only the missing one read by id: {reads:?}");
    assert_eq!(app.contacts_all().await.len(), PERSONS - 1);
}

/// An account synced up to now (its poll cursor is set where a poll
/// would have left it): 10,000 persons, 3 changed since; the poll reads
/// those 3 in one page of the list of changes.
#[tokio::test]
async fn a_poll_of_10_000_persons_reads_the_3_changed_in_one_page() {
    let app = TestApp::with(
        Options::default()
            .env("SIMULATOR_EVENTS_URL", "")
            .env("PROVIDERS", "pipedrive"),
    )
    .await;
    let made = make_persons(&app, 10_000).await;
    let last = made.iter().map(|p| ms_of(&p["update_time"])).max().unwrap();
    // Pipedrive's updated_since counts whole seconds: the cursor is set
    // past the persons' last second, and the changes come later still.
    let since = last - last.rem_euclid(1000) + 1_000;
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    client
        .database(&app.db)
        .collection::<bson::Document>("sync_cursors")
        .update_one(
            bson::doc! { "_id": "contact-sync:pipedrive" },
            bson::doc! { "$set": { "sinceMs": since, "boundaryIds": [], "updatedAt": bson::DateTime::now() } },
        )
        .upsert(true)
        .await
        .expect("cursor set");
    clock_reaches(since + 1_000).await;

    let changed = [&made[17], &made[5_000], &made[9_998]];
    let (listings, reads) = change_and_poll(&app, &changed).await;
    assert_eq!(listings.len(), 1, "one page: {listings:?}");
    assert_eq!(reads.len(), 3, "the 3 changed read: {reads:?}");
    assert!(app.calls("pipedrive", "list-contacts").await.is_empty());
    let contacts = app.contacts_all().await;
    assert_eq!(contacts.len(), 3, "only the changed imported: {contacts:?}");
    for c in &contacts {
        assert_eq!(c["lastName"], "Changed", "{c}");
    }
}

#[tokio::test]
async fn hubspot_changes_arrive_by_its_search_when_polled() {
    // No webhooks: only the poll (HubSpot's contact search) brings changes.
    let app = TestApp::with(
        Options::default()
            .env("SIMULATOR_WEBHOOK_URL", "")
            .env("PROVIDERS", "hubspot"),
    )
    .await;
    let hubspot_poll = || async {
        let (status, body) = app
            .call(Method::POST, "/api/providers/hubspot/poll", None)
            .await;
        assert_eq!(status, 202, "{body}");
        app.queue()
            .await
            .wait_idle("provider-poll", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("polled");
    };
    let (status, rec) = app
        .sim_send(
            Method::POST,
            "/hubspot/records",
            Some(json!({"properties": {"email": "searched@example.com", "firstname": "Sear"}})),
        )
        .await;
    assert_eq!(status, 201, "{rec}");
    hubspot_poll().await; // the first: a full scan
    let c = contact_by_email(&app, "searched@example.com")
        .await
        .expect("imported");
    assert_eq!(c["firstName"], "Sear");

    app.sim_send(
        Method::PATCH,
        &format!("/hubspot/records/{}", rec["id"].as_str().unwrap()),
        Some(json!({"properties": {"firstname": "Found"}})),
    )
    .await;
    app.sim_send(Method::DELETE, "/calls", None).await;
    hubspot_poll().await;
    let c = contact_by_email(&app, "searched@example.com")
        .await
        .unwrap();
    assert_eq!(c["firstName"], "Found", "changed by the search poll");
    assert_eq!(app.calls("hubspot", "list-changed-contacts").await.len(), 1);
    assert!(app.calls("hubspot", "list-contacts").await.is_empty());
}
