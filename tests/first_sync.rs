//! A connection's first sync (`POST /api/customers/{id}/connections/{p}/
//! initial-sync`): the CRM's records are listed and imported, then the
//! app's contacts the CRM lacks are created there, HubSpot 100 a call.

mod common;

use std::time::Duration;

use common::{eventually, Options, TestApp};
use contact_sync::domain::{CustomerId, Email};
use contact_sync::store::{NewContact, Store};
use reqwest::Method;
use serde_json::json;

/// `n` contacts of the default customer, stored as they were before the
/// customer connected a CRM: no link, nothing owed.
async fn app_contacts(app: &TestApp, n: usize) {
    let store = Store::connect(&common::mongodb_uri(), &app.db)
        .await
        .expect("store");
    for i in 0..n {
        store
            .insert_contact(NewContact {
                customer_id: CustomerId::default_customer(),
                first_name: Some(format!("First{i}")),
                last_name: Some("Sync".into()),
                email: Email::parse(&format!("f{i}@example.com")).expect("an email"),
                phone: None,
                company_name: None,
                job_title: None,
                outbox: None,
            })
            .await
            .expect("stored");
    }
}

/// The default customer's HubSpot connection's `firstSync`, once done.
async fn first_sync_of(app: &TestApp) -> serde_json::Value {
    first_sync_at(app, "hubspot", "done").await
}

/// Starts the default customer's HubSpot first sync; its job id.
async fn initial_sync(app: &TestApp) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            "/api/customers/contact-sync/connections/hubspot/initial-sync",
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["jobId"].as_str().expect("a job id").to_owned()
}

/// Waits until every contact of the app has its HubSpot link synced and
/// no job is left.
async fn all_synced(app: &TestApp, want: usize) {
    all_synced_in(app, want, 1).await;
}

/// Waits until the app holds `want` contacts, each with `crms` links
/// synced, and no job is left.
async fn all_synced_in(app: &TestApp, want: usize, crms: usize) {
    eventually(Duration::from_secs(60), "every link synced", || async {
        let contacts = app.contacts_all().await;
        let synced = contacts
            .iter()
            .filter(|c| {
                c["links"].as_array().is_some_and(|l| {
                    l.iter().filter(|l| l["syncStatus"] == "synced").count() == crms
                })
            })
            .count();
        (contacts.len() == want && synced == want).then_some(())
    })
    .await;
    app.settle(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_first_sync_creates_what_hubspot_lacks_100_a_call_and_imports_what_it_has() {
    // no webhooks for the records HubSpot held before the connection: the
    // listing is what finds them (one delivered first would be linked
    // already, and counted as matched)
    let app = TestApp::with(
        Options::default()
            .env("PROVIDERS", "hubspot")
            .env("SIMULATOR_WEBHOOK_URL", ""),
    )
    .await;
    // the contacts the app held before the CRM was connected
    app_contacts(&app, 150).await;
    // HubSpot has one of them (with a job title the app lacks) and one
    // person of its own
    for props in [
        json!({ "email": "f0@example.com", "firstname": "First0", "jobtitle": "Buyer" }),
        json!({ "email": "crm-only@example.com", "firstname": "Crm" }),
    ] {
        let (status, body) = app
            .sim_send(
                Method::POST,
                "/hubspot/records",
                Some(json!({ "properties": props })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    app.sim_send(Method::DELETE, "/calls", None).await;

    initial_sync(&app).await;
    all_synced(&app, 151).await;

    let records = app.records("hubspot").await;
    assert_eq!(records.len(), 151, "each person once");
    let batches = app.calls("hubspot", "batch-create-contacts").await;
    assert_eq!(batches.len(), 2, "149 creates in two calls: {batches:?}");
    assert!(app.calls("hubspot", "create-contact").await.is_empty());
    assert!(
        app.calls("hubspot", "find-contact").await.is_empty(),
        "matched from the listing, not looked up one by one"
    );
    // the shared person: linked, the CRM's job title taken into the app
    let shared = app.contact_by_email("f0@example.com").await.expect("f0");
    assert_eq!(shared["jobTitle"], "Buyer", "{shared}");
    let created = records
        .iter()
        .find(|r| r["properties"]["email"] == "f149@example.com")
        .expect("f149 created");
    assert_eq!(created["properties"]["firstname"], "First149");
    assert_eq!(created["properties"]["lastname"], "Sync");
    let f149 = app
        .contact_by_email("f149@example.com")
        .await
        .expect("f149");
    let path = format!("/api/sync-logs?contactId={}", f149["id"].as_str().unwrap());
    let (_, logs) = app.call(Method::GET, &path, None).await;
    let log = &logs[0];
    assert_eq!(
        (&log["outcome"], &log["provider"], &log["externalId"]),
        (&json!("created"), &json!("hubspot"), &created["id"]),
        "a sync log as a single push's create writes: {logs}"
    );

    // the connection shows what its first sync did
    // the shared person's last name, which HubSpot lacked, went in a
    // batch update after a batch read, not in a single update
    let f0 = records
        .iter()
        .find(|r| r["properties"]["email"] == "f0@example.com")
        .expect("f0 kept");
    assert_eq!(f0["properties"]["lastname"], "Sync", "{f0}");
    assert_eq!(app.calls("hubspot", "batch-update-contacts").await.len(), 1);
    assert!(app.calls("hubspot", "update-contact").await.is_empty());
    let first = first_sync_of(&app).await;
    assert_eq!(
        (
            &first["batchCreated"],
            &first["batchUpdated"],
            &first["batchCalls"],
            &first["pushed"]
        ),
        (&json!(149), &json!(1), &json!(4), &json!(0)),
        "2 creates, a read and an update: {first}"
    );
    assert_eq!(
        (&first["listed"], &first["matched"], &first["toWrite"]),
        (&json!(2), &json!(1), &json!(150)),
        "{first}"
    );
    assert_eq!(first["phase"], "done", "{first}");
    assert!(first["finishedAt"].is_string(), "{first}");

    // run again: nothing is created twice, no batch is sent
    app.sim_send(Method::DELETE, "/calls", None).await;
    initial_sync(&app).await;
    eventually(Duration::from_secs(30), "the second run listed", || async {
        (!app.calls("hubspot", "list-contacts").await.is_empty()).then_some(())
    })
    .await;
    app.settle(Duration::from_secs(30)).await;
    assert_eq!(app.records("hubspot").await.len(), 151);
    assert!(app
        .calls("hubspot", "batch-create-contacts")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_worker_killed_after_a_batch_landed_unrecorded_resumes_without_duplicates() {
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("PROVIDERS", "hubspot"),
    )
    .await;
    app_contacts(&app, 150).await;
    // HubSpot carries each call out, but answers 3 s late
    app.set_faults(json!({ "respondLateMs": 3000 })).await;
    let w = app.add_worker();
    initial_sync(&app).await;
    // the first batch has landed; its answer is on its way: kill -9
    eventually(
        Duration::from_secs(30),
        "the first batch landed",
        || async { (app.records("hubspot").await.len() >= 100).then_some(()) },
    )
    .await;
    app.kill_worker(w);
    let landed = app.records("hubspot").await.len();
    assert_eq!(landed, 100, "one batch of 100, unrecorded");
    assert!(
        app.contacts_all().await.iter().all(|c| c["links"]
            .as_array()
            .is_none_or(|l| l.iter().all(|l| l["externalId"].is_null()))),
        "nothing recorded yet"
    );

    // another worker takes the job over: the listing finds the 100 as the
    // app's own (their push intents), the other 50 are created
    app.set_faults(json!({})).await;
    app.add_worker();
    all_synced(&app, 150).await;
    let records = app.records("hubspot").await;
    assert_eq!(records.len(), 150, "each person once");
    let mut emails: Vec<String> = records
        .iter()
        .filter_map(|r| r["properties"]["email"].as_str().map(str::to_owned))
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 150);
}

/// A first sync of 100 contacts, one of which HubSpot refuses as invalid:
/// it fails alone (its link `error`, a failed sync log), the 99 sync.
async fn one_bad_input_of_100(faults: serde_json::Value) -> (usize, usize) {
    let app = TestApp::with(Options::default().env("PROVIDERS", "hubspot")).await;
    app_contacts(&app, 100).await;
    app.set_faults(faults).await;
    initial_sync(&app).await;
    eventually(Duration::from_secs(60), "99 synced, 1 in error", || async {
        let contacts = app.contacts_all().await;
        let status = |s: &str| {
            contacts
                .iter()
                .filter(|c| {
                    c["links"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|l| l["syncStatus"] == s))
                })
                .count()
        };
        (status("synced") == 99 && status("error") == 1).then_some(())
    })
    .await;
    let bad = app.contact_by_email("f42@example.com").await.expect("f42");
    assert_eq!(bad["links"][0]["syncStatus"], "error", "{bad}");
    let path = format!(
        "/api/sync-logs?contactId={}&outcome=failed",
        bad["id"].as_str().unwrap()
    );
    let (_, logs) = app.call(Method::GET, &path, None).await;
    assert!(logs.as_array().is_some_and(|l| !l.is_empty()), "{logs}");
    assert_eq!(app.records("hubspot").await.len(), 99);
    let first = first_sync_of(&app).await;
    let refused_alone = first["batchCreated"] == 99 && first["pushed"] == 1;
    let refused_whole = first["batchCreated"] == 0 && first["pushed"] == 100;
    assert!(refused_alone || refused_whole, "{first}");
    (
        app.calls("hubspot", "batch-create-contacts").await.len(),
        app.calls("hubspot", "create-contact").await.len(),
    )
}

#[tokio::test]
async fn one_bad_input_in_a_batch_of_100_fails_alone_and_the_99_sync() {
    let (batches, singles) =
        one_bad_input_of_100(json!({ "rejectRecords": ["f42@example.com"] })).await;
    assert_eq!(
        (batches, singles),
        (1, 1),
        "the bad one alone is pushed singly"
    );
}

#[tokio::test]
async fn a_batch_refused_whole_is_pushed_singly_and_the_99_sync() {
    let faults = json!({ "rejectRecords": ["f42@example.com"], "batchRefusedWhole": true });
    let (batches, singles) = one_bad_input_of_100(faults).await;
    assert_eq!(batches, 1);
    assert!(
        singles >= 100,
        "every contact of the batch singly: {singles}"
    );
}

#[tokio::test]
async fn an_initial_sync_of_no_such_customer_or_connection_is_refused_and_queues_nothing() {
    let app = TestApp::with(Options::default().env("PROVIDERS", "hubspot")).await;
    for (path, status) in [
        (
            "/api/customers/nobody/connections/hubspot/initial-sync",
            404,
        ),
        (
            "/api/customers/contact-sync/connections/salesforce/initial-sync",
            404,
        ),
        (
            "/api/customers/contact-sync/connections/pipedrive/initial-sync",
            404,
        ),
        ("/api/customers/a%20b/connections/hubspot/initial-sync", 400),
    ] {
        let (got, body) = app.call(Method::POST, path, None).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: a JSON error: {body}");
    }
    let q = app.queue().await;
    assert_eq!(
        q.counts("provider-poll")
            .await
            .expect("counts")
            .outstanding(),
        0
    );
}

#[tokio::test]
async fn a_poll_or_backfill_for_an_invalid_customer_id_is_a_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/providers/hubspot/poll?customerId=a%20b",
        "/api/providers/hubspot/backfill?customerId=a%20b",
    ] {
        let (status, body) = app.call(Method::POST, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_customer", "{path}: {body}");
    }
}

/// A customer's connection's `firstSync` once its phase is `phase`.
async fn first_sync_at(app: &TestApp, provider: &str, phase: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(60),
        &format!("the {provider} first sync {phase}"),
        || async {
            let (_, customer) = app
                .call(Method::GET, "/api/customers/contact-sync", None)
                .await;
            customer["connections"]
                .as_array()?
                .iter()
                .find(|c| c["provider"] == provider)
                .map(|c| c["firstSync"].clone())
                .filter(|f| f["phase"] == phase)
        },
    )
    .await
}

async fn initial_sync_of(app: &TestApp, provider: &str) {
    let path = format!("/api/customers/contact-sync/connections/{provider}/initial-sync");
    let (status, body) = app.call(Method::POST, &path, None).await;
    assert_eq!(status, 202, "{body}");
}

/// Seeds a CRM with records in its own shape: `(email, first name)`.
async fn crm_people(app: &TestApp, provider: &str, people: &[(String, String)]) {
    let records: Vec<serde_json::Value> = people
        .iter()
        .map(|(email, first)| match provider {
            "hubspot" => json!({ "properties": { "email": email, "firstname": first } }),
            _ => json!({ "name": first, "first_name": first,
                "emails": [{ "value": email, "primary": true, "label": "work" }] }),
        })
        .collect();
    let (status, body) = app
        .sim_send(
            Method::POST,
            &format!("/{provider}/records"),
            Some(json!(records)),
        )
        .await;
    assert!(status < 300, "{body}");
}

/// `(email, first name, last name)` of each record of a CRM.
async fn crm_names(app: &TestApp, provider: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    app.records(provider)
        .await
        .iter()
        .map(|r| match provider {
            "hubspot" => (
                r["properties"]["email"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                text(&r["properties"]["firstname"]),
                text(&r["properties"]["lastname"]),
            ),
            _ => (
                r["emails"][0]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                text(&r["first_name"]),
                text(&r["last_name"]),
            ),
        })
        .collect()
}

#[tokio::test]
async fn a_first_sync_of_two_crms_creates_what_each_lacks_in_batches_and_the_sides_agree() {
    // no webhooks or flow events: records that were there before the
    // connection was made send none
    let app = TestApp::with(
        Options::default()
            .env("SIMULATOR_WEBHOOK_URL", "")
            .env("SIMULATOR_EVENTS_URL", ""),
    )
    .await;
    // the app: f0..f29; HubSpot: f0..f9 and ten of its own; Pipedrive:
    // f10..f19 and ten of its own
    app_contacts(&app, 30).await;
    let people = |range: std::ops::Range<usize>, who: &str| -> Vec<(String, String)> {
        range
            .map(|i| (format!("{who}{i}@example.com"), format!("{who}-{i}")))
            .collect()
    };
    let mut hubspot = people(0..10, "f");
    hubspot
        .iter_mut()
        .for_each(|(_, first)| *first = first.replace("f-", "First"));
    hubspot.extend(people(0..10, "hs"));
    let mut pipedrive = people(10..20, "f");
    pipedrive
        .iter_mut()
        .for_each(|(_, first)| *first = first.replace("f-", "First"));
    pipedrive.extend(people(0..10, "pd"));
    crm_people(&app, "hubspot", &hubspot).await;
    crm_people(&app, "pipedrive", &pipedrive).await;
    app.sim_send(Method::DELETE, "/calls", None).await;

    initial_sync_of(&app, "hubspot").await;
    initial_sync_of(&app, "pipedrive").await;
    // a second request while one is underway is refused
    let (status, body) = app
        .call(
            Method::POST,
            "/api/customers/contact-sync/connections/hubspot/initial-sync",
            None,
        )
        .await;
    if status != 202 {
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"], "conflict", "{body}");
    }
    let hs = first_sync_at(&app, "hubspot", "done").await;
    let pd = first_sync_at(&app, "pipedrive", "done").await;
    all_synced_in(&app, 50, 2).await;

    // 50 people, each once in each CRM, with the app's names
    let app_people = app.contacts().await;
    assert_eq!(app_people.len(), 50);
    for provider in ["hubspot", "pipedrive"] {
        let names = crm_names(&app, provider).await;
        assert_eq!(names.len(), 50, "{provider}: {names:?}");
        for (email, first, last) in &names {
            let c = app_people
                .iter()
                .find(|c| c["email"] == email.as_str())
                .unwrap_or_else(|| panic!("{email} in the app"));
            assert_eq!(
                first.as_deref(),
                c["firstName"].as_str(),
                "{provider} {email}"
            );
            assert_eq!(
                last.as_deref(),
                c["lastName"].as_str(),
                "{provider} {email}"
            );
        }
    }
    // Pipedrive's own ten reached HubSpot in the same batch as the app's
    // twenty: one batch create; HubSpot's shared ten got the app's last
    // name in one batch read and one batch update; nothing looked up one
    // by one
    assert_eq!(app.calls("hubspot", "batch-create-contacts").await.len(), 1);
    assert_eq!(app.calls("hubspot", "batch-update-contacts").await.len(), 1);
    for provider in ["hubspot", "pipedrive"] {
        for action in ["find-contact", "get-contact"] {
            let calls = app.calls(provider, action).await;
            assert!(calls.is_empty(), "{provider} {action}: {calls:?}");
        }
    }
    assert!(app.calls("hubspot", "create-contact").await.is_empty());
    // Pipedrive: one create a person it lacked, one batch read and one
    // update a shared person
    assert_eq!(app.calls("pipedrive", "create-contact").await.len(), 30);
    assert_eq!(app.calls("pipedrive", "batch-read-contacts").await.len(), 1);
    assert_eq!(app.calls("pipedrive", "update-contact").await.len(), 10);
    assert_eq!(
        (
            &hs["listed"],
            &hs["matched"],
            &hs["batchCreated"],
            &hs["batchUpdated"]
        ),
        (&json!(20), &json!(10), &json!(30), &json!(10)),
        "{hs}"
    );
    assert_eq!(
        (
            &pd["listed"],
            &pd["matched"],
            &pd["created"],
            &pd["updated"]
        ),
        (&json!(20), &json!(10), &json!(30), &json!(10)),
        "{pd}"
    );
    assert_eq!(
        (&pd["toWrite"], &pd["written"], &pd["secondsLeft"]),
        (&json!(40), &json!(40), &json!(0.0))
    );
}

#[tokio::test]
async fn a_record_changed_in_the_crm_during_the_first_sync_is_not_overwritten() {
    let app = TestApp::with(
        Options::default()
            .env("SIMULATOR_WEBHOOK_URL", "")
            .env("SIMULATOR_EVENTS_URL", ""),
    )
    .await;
    app_contacts(&app, 1).await;
    crm_people(
        &app,
        "hubspot",
        &[("f0@example.com".into(), "First0".into())],
    )
    .await;
    // Pipedrive lists slowly (150 people: two pages, one call per 3 s), so
    // HubSpot's write step waits for it
    let pd: Vec<(String, String)> = (0..150)
        .map(|i| (format!("pd{i}@example.com"), format!("Pd{i}")))
        .collect();
    crm_people(&app, "pipedrive", &pd).await;
    app.set_faults(json!({ "rateLimits": { "pipedrive": { "calls": 1, "windowMs": 3000 } } }))
        .await;
    initial_sync_of(&app, "hubspot").await;
    initial_sync_of(&app, "pipedrive").await;
    let waiting = first_sync_at(&app, "hubspot", "waiting").await;
    assert_eq!(
        (&waiting["listed"], &waiting["matched"]),
        (&json!(1), &json!(1)),
        "{waiting}"
    );
    assert!(
        waiting["secondsLeft"].is_null(),
        "unknown until it writes: {waiting}"
    );
    // /metrics shows the first syncs underway
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("first_sync_listed{customer=\"contact-sync\",provider=\"hubspot\"} 1"),
        "{metrics}"
    );
    // meanwhile someone gives f0 a last name in HubSpot: the app's last
    // name, which HubSpot lacked when it was listed, is not written over it
    let id = app
        .records("hubspot")
        .await
        .iter()
        .find(|r| r["properties"]["email"] == "f0@example.com")
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .expect("f0 in HubSpot");
    let (status, body) = app
        .sim_send(
            Method::PATCH,
            &format!("/hubspot/records/{id}"),
            Some(json!({ "properties": { "lastname": "Changed" } })),
        )
        .await;
    assert!(status < 300, "{body}");
    app.set_faults(json!({})).await;
    first_sync_at(&app, "hubspot", "done").await;
    let f0 = app.contact_by_email("f0@example.com").await.expect("f0");
    eventually(
        Duration::from_secs(30),
        "the app takes the CRM's change",
        || async {
            let f0 = app.contact_by_email("f0@example.com").await?;
            (f0["lastName"] == "Changed").then_some(())
        },
    )
    .await;
    app.settle(Duration::from_secs(30)).await;
    let names = crm_names(&app, "hubspot").await;
    let hs = names.iter().find(|n| n.0 == "f0@example.com").expect("f0");
    assert_eq!(
        hs.2.as_deref(),
        Some("Changed"),
        "HubSpot kept its change: {names:?}"
    );
    assert!(
        app.calls("hubspot", "batch-update-contacts")
            .await
            .is_empty(),
        "{f0}"
    );
}

#[tokio::test]
async fn connecting_a_crm_starts_its_first_sync() {
    let app = TestApp::with(
        Options::default()
            .env("FIRST_SYNC_ON_CONNECT", "true")
            .env("SIMULATOR_WEBHOOK_URL", "")
            .env("SIMULATOR_EVENTS_URL", ""),
    )
    .await;
    // a customer with contacts and no CRM yet
    let (status, body) = app
        .call(
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "acme", "name": "Acme", "connections": {} })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for i in 0..5 {
        let (status, body) = app
            .create(
                json!({ "email": format!("a{i}@example.com"), "firstName": format!("A{i}"),
                "customerId": "acme" }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // its HubSpot portal holds one person of its own
    let (status, body) = app
        .sim_send(
            Method::POST,
            "/hubspot/records?customer=acme",
            Some(json!({ "properties": { "email": "own@example.com", "firstname": "Own" } })),
        )
        .await;
    assert!(status < 300, "{body}");

    // connecting HubSpot is all it takes
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/acme/connections/hubspot",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = eventually(Duration::from_secs(60), "the first sync done", || async {
        let (_, customer) = app.call(Method::GET, "/api/customers/acme", None).await;
        customer["connections"]
            .as_array()?
            .iter()
            .find(|c| c["provider"] == "hubspot")
            .map(|c| c["firstSync"].clone())
            .filter(|f| f["phase"] == "done")
    })
    .await;
    assert_eq!(
        (&first["listed"], &first["batchCreated"]),
        (&json!(1), &json!(5)),
        "{first}"
    );
    let records = app.sim_get("/hubspot/records?customer=acme").await;
    assert_eq!(records.as_array().map(Vec::len), Some(6), "{records}");
    let (_, listed) = app
        .call(Method::GET, "/api/contacts?customerId=acme", None)
        .await;
    assert!(listed.to_string().contains("own@example.com"), "{listed}");
}

#[tokio::test]
async fn a_worker_killed_while_pipedrive_creates_land_unanswered_resumes_without_duplicates() {
    // Pipedrive takes no batch: its first sync creates one person a call,
    // with no look-up first; a create whose answer never came back must
    // not be made twice
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("PROVIDERS", "pipedrive"),
    )
    .await;
    app_contacts(&app, 20).await;
    app.set_faults(json!({ "respondLateMs": 3000 })).await;
    let w = app.add_worker();
    initial_sync_of(&app, "pipedrive").await;
    eventually(Duration::from_secs(30), "a create landed", || async {
        (!app.records("pipedrive").await.is_empty()).then_some(())
    })
    .await;
    app.kill_worker(w);
    let landed = app.records("pipedrive").await.len();
    assert!(landed < 20, "killed mid-way: {landed} landed");

    app.set_faults(json!({})).await;
    app.add_worker();
    first_sync_at(&app, "pipedrive", "done").await;
    all_synced_in(&app, 20, 1).await;
    let names = crm_names(&app, "pipedrive").await;
    let mut emails: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
    emails.sort_unstable();
    emails.dedup();
    assert_eq!(
        (names.len(), emails.len()),
        (20, 20),
        "each person once: {names:?}"
    );
    // the unanswered creates were found by the listing again, and the
    // ones still on their way at the kill looked their email up first:
    // no person was created twice
    assert_eq!(app.calls("pipedrive", "create-contact").await.len(), 20);
}

#[tokio::test]
async fn a_long_write_step_runs_in_slices_each_a_job_and_creates_each_person_once() {
    // a slice as short as it gets: one chunk of 100 writes a job
    let app = TestApp::with(
        Options::default()
            .env("PROVIDERS", "pipedrive")
            .env("FIRST_SYNC_SLICE_SECS", "0"),
    )
    .await;
    app_contacts(&app, 250).await;
    initial_sync_of(&app, "pipedrive").await;
    let done = first_sync_at(&app, "pipedrive", "done").await;
    all_synced_in(&app, 250, 1).await;
    assert_eq!(
        (&done["toWrite"], &done["created"], &done["written"]),
        (&json!(250), &json!(250), &json!(250)),
        "the plan's total stays whole across slices: {done}"
    );
    let names = crm_names(&app, "pipedrive").await;
    let mut emails: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
    emails.sort_unstable();
    emails.dedup();
    assert_eq!((names.len(), emails.len()), (250, 250), "each person once");
    // the listing's job and two more slices, each its own job
    let (_, stats) = app
        .call(Method::GET, "/api/queues/provider-poll/stats", None)
        .await;
    assert!(
        stats["completedTotal"].as_u64() >= Some(3),
        "three slices: {stats}"
    );
    assert!(app.calls("pipedrive", "find-contact").await.is_empty());
}

/// The sync logs of the contact with `email`, oldest first, as
/// `(direction, outcome, conflict note)`.
async fn log_lines(app: &TestApp, email: &str) -> Vec<(String, String, Option<String>)> {
    let c = app.contact_by_email(email).await.expect("the contact");
    let path = format!(
        "/api/sync-logs?contactId={}",
        c["id"].as_str().expect("an id")
    );
    let (_, logs) = app.call(Method::GET, &path, None).await;
    let mut lines: Vec<(String, String, Option<String>)> = logs
        .as_array()
        .expect("logs")
        .iter()
        .rev()
        .map(|l| {
            (
                l["direction"].as_str().unwrap_or_default().to_owned(),
                l["outcome"].as_str().unwrap_or_default().to_owned(),
                l["conflict"].as_str().map(str::to_owned),
            )
        })
        .collect();
    lines.dedup();
    lines
}

#[tokio::test]
async fn batch_writes_log_the_outcomes_and_merge_notes_a_single_push_logs() {
    // the same start twice: f0 conflicts on its first name (the app's
    // value wins by policy), f1 only lacks the app's last name in HubSpot
    let mut runs = Vec::new();
    for first_sync in [true, false] {
        let app = TestApp::with(
            Options::default()
                .env("PROVIDERS", "hubspot")
                .env("CONFLICT_POLICY", "app-wins")
                .env("SIMULATOR_WEBHOOK_URL", ""),
        )
        .await;
        app_contacts(&app, 2).await;
        crm_people(
            &app,
            "hubspot",
            &[
                ("f0@example.com".into(), "Crm0".into()),
                ("f1@example.com".into(), "First1".into()),
            ],
        )
        .await;
        match first_sync {
            // batch read and batch update after the listing
            true => initial_sync_of(&app, "hubspot").await,
            // the per-contact way: a full listing, then a push each
            false => {
                let (status, body) = app
                    .call(
                        Method::POST,
                        "/api/providers/hubspot/backfill?customerId=contact-sync",
                        None,
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
            }
        }
        all_synced_in(&app, 2, 1).await;
        let batches = app.calls("hubspot", "batch-update-contacts").await.len();
        assert_eq!(batches, usize::from(first_sync), "first sync: {first_sync}");
        let names = crm_names(&app, "hubspot").await;
        assert!(
            names.iter().all(|n| n.2.as_deref() == Some("Sync")),
            "{names:?}"
        );
        runs.push((
            log_lines(&app, "f0@example.com").await,
            log_lines(&app, "f1@example.com").await,
        ));
    }
    let (f0, f1) = &runs[0];
    assert!(
        f0.iter().any(|l| l.2.is_some()),
        "the first name's conflict is noted: {f0:?}"
    );
    assert!(
        f0.iter().any(|l| l.0 == "outbound" && l.1 == "updated"),
        "{f0:?}"
    );
    assert!(
        f1.iter().any(|l| l.0 == "outbound" && l.1 == "updated"),
        "{f1:?}"
    );
    assert_eq!(
        runs[0], runs[1],
        "the batch writes log what single pushes log"
    );
}

#[tokio::test]
async fn a_first_sync_whose_job_was_discarded_is_queued_again_once_it_stands_still() {
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("PROVIDERS", "hubspot"),
    )
    .await;
    app_contacts(&app, 5).await;
    let job = initial_sync(&app).await;
    // the job is gone before any worker ran it (an operator discarded it,
    // or Redis lost it): the connection is left listing, its pushes held
    let (status, body) = app
        .call(Method::DELETE, &format!("/api/jobs/{job}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    first_sync_at(&app, "hubspot", "listing").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/customers/contact-sync/connections/hubspot/initial-sync",
            None,
        )
        .await;
    assert_eq!(status, 409, "still underway: {body}");

    // the scheduler finds it standing still and queues it again
    app.add_worker();
    let log = std::env::temp_dir().join(format!("contact-sync-stall-{}.log", app.db));
    app.add_scheduler(
        &[
            ("FIRST_SYNC_STALL_SECS", "2"),
            ("POLL_PROVIDERS", "hubspot"),
            ("POLL_INTERVAL_SECS", "3600"),
        ],
        &log,
    );
    let done = first_sync_at(&app, "hubspot", "done").await;
    assert_eq!(done["batchCreated"], 5, "{done}");
    all_synced(&app, 5).await;
    assert_eq!(app.records("hubspot").await.len(), 5, "each person once");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("stood still"), "{text}");
}

/// Queues a poll of the default customer's Pipedrive connection and waits
/// until its job has run.
async fn poll_now(app: &TestApp) {
    let (status, body) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202, "{body}");
    let job = body["jobId"].as_str().expect("a job id").to_owned();
    eventually(Duration::from_secs(30), "the poll ran", || async {
        let (_, j) = app
            .call(Method::GET, &format!("/api/jobs/{job}"), None)
            .await;
        (j["state"] == "done").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_poll_during_a_first_sync_is_left_to_the_first_poll_after_it() {
    let app = TestApp::with(Options::default().env("PROVIDERS", "pipedrive")).await;
    app_contacts(&app, 5).await;
    // one call every 2 s: the write step takes a while
    app.set_faults(json!({ "rateLimits": { "pipedrive": { "calls": 1, "windowMs": 2000 } } }))
        .await;
    initial_sync_of(&app, "pipedrive").await;
    first_sync_at(&app, "pipedrive", "writing").await;
    // a poll now would list the first sync's own creates and hold the
    // lease its write step needs: it lists nothing
    poll_now(&app).await;
    assert!(
        app.calls("pipedrive", "list-changed-contacts")
            .await
            .is_empty(),
        "no poll during the first sync"
    );
    app.set_faults(json!({})).await;
    first_sync_at(&app, "pipedrive", "done").await;
    // after it, polls list the changes again, from the first sync's start
    poll_now(&app).await;
    assert!(!app
        .calls("pipedrive", "list-changed-contacts")
        .await
        .is_empty());
    assert_eq!(app.records("pipedrive").await.len(), 5);
}

#[tokio::test]
async fn a_worker_killed_before_the_last_pass_leaves_it_to_the_retry() {
    // a Pipedrive call a second: its write step (a create a person)
    // takes a while
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("RATE_LIMIT_PIPEDRIVE", "1"),
    )
    .await;
    app_contacts(&app, 10).await;
    let w = app.add_worker();
    initial_sync_of(&app, "pipedrive").await;
    first_sync_at(&app, "pipedrive", "writing").await;
    eventually(Duration::from_secs(30), "the first create", || async {
        (!app.records("pipedrive").await.is_empty()).then_some(())
    })
    .await;
    // a person added in HubSpot once the write step has planned: imported,
    // and its push to Pipedrive held
    crm_people(
        &app,
        "hubspot",
        &[("late@example.com".into(), "Late".into())],
    )
    .await;
    eventually(Duration::from_secs(30), "the app imports it", || async {
        app.contact_by_email("late@example.com").await
    })
    .await;
    first_sync_at(&app, "pipedrive", "writing").await;
    // done: the last pass waits a few seconds (a cached hold lapses)
    // before it pushes the held change; kill -9 in between
    first_sync_at(&app, "pipedrive", "done").await;
    app.kill_worker(w);
    assert_eq!(
        people_named(&app, "pipedrive", "late@example.com").await,
        0,
        "killed before the last pass"
    );

    // the retried job runs the last pass
    app.add_worker();
    eventually(
        Duration::from_secs(60),
        "the held change is pushed",
        || async {
            let late = app.contact_by_email("late@example.com").await?;
            late["links"]
                .as_array()?
                .iter()
                .any(|l| l["provider"] == "pipedrive" && l["syncStatus"] == "synced")
                .then_some(())
        },
    )
    .await;
    app.settle(Duration::from_secs(30)).await;
    assert_eq!(
        people_named(&app, "pipedrive", "late@example.com").await,
        1,
        "once"
    );
    assert_eq!(app.records("pipedrive").await.len(), 11, "each person once");
}

/// How many records of a CRM have `email`.
async fn people_named(app: &TestApp, provider: &str, email: &str) -> usize {
    crm_names(app, provider)
        .await
        .iter()
        .filter(|n| n.0 == email)
        .count()
}

#[tokio::test]
async fn a_bulk_import_in_the_app_goes_to_hubspot_in_batches() {
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("PROVIDERS", "hubspot")
        .env("SIMULATOR_WEBHOOK_URL", ""),
    )
    .await;
    // one of the people is in HubSpot already, unknown to the app
    crm_people(
        &app,
        "hubspot",
        &[("bulk7@example.com".into(), "InHubSpot".into())],
    )
    .await;
    // the app imports 150 contacts while no worker runs: 150 pushes wait
    for i in 0..150 {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/contacts",
                Some(json!({ "email": format!("bulk{i}@example.com"),
                    "firstName": format!("Bulk{i}"), "lastName": "Import" })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    app.add_worker();
    all_synced(&app, 150).await;
    // the first push found the backlog and gathered it: two batch creates,
    // no single create; the person HubSpot had is refused in its batch as
    // a duplicate and linked by a single push
    let creates = app.calls("hubspot", "batch-create-contacts").await;
    assert_eq!(creates.len(), 2, "150 in two batches");
    assert!(
        app.calls("hubspot", "create-contact").await.is_empty(),
        "no single create"
    );
    let records = app.records("hubspot").await;
    assert_eq!(records.len(), 150, "each person once");
    let gather = first_sync_of(&app).await;
    assert_eq!(gather["gathered"], true, "{gather}");
    assert_eq!(gather["batchCreated"], 149, "{gather}");
    assert_eq!(gather["pushed"], 1, "{gather}");
    assert_eq!(gather["listed"], 0, "nothing listed: {gather}");
    let names = crm_names(&app, "hubspot").await;
    let b7 = names
        .iter()
        .find(|n| n.0 == "bulk7@example.com")
        .expect("bulk7");
    assert_eq!(b7.2.as_deref(), Some("Import"), "filled in: {names:?}");
}

#[tokio::test]
async fn a_gather_given_up_on_lets_the_pushes_it_held_go_singly() {
    let mut app = TestApp::with(
        Options {
            workers: 0,
            ..Options::default()
        }
        .env("PROVIDERS", "hubspot")
        .env("SIMULATOR_WEBHOOK_URL", ""),
    )
    .await;
    for i in 0..60 {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/contacts",
                Some(json!({ "email": format!("down{i}@example.com"), "firstName": "Down" })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // HubSpot answers nothing but 503: the gather's batch create runs out
    // of attempts, and its job dies
    app.set_faults(json!({ "outage": true })).await;
    app.add_worker();
    let failed = first_sync_at(&app, "hubspot", "failed").await;
    assert_eq!(failed["gathered"], true, "{failed}");
    assert!(app.records("hubspot").await.is_empty());
    // the pushes that waited for it go on singly, and sync once HubSpot is
    // back
    app.set_faults(json!({})).await;
    all_synced(&app, 60).await;
    assert_eq!(app.records("hubspot").await.len(), 60, "each person once");
}

#[tokio::test]
async fn a_bulk_import_while_workers_run_creates_each_person_once() {
    // the worker runs while the app imports: the first pushes go singly,
    // the backlog that builds up behind them is gathered
    let app = TestApp::with(
        Options::default()
            .env("PROVIDERS", "hubspot")
            .env("SIMULATOR_WEBHOOK_URL", "")
            .env("GATHER_BACKLOG", "20"),
    )
    .await;
    let calls = (0..200).map(|i| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/contacts",
                Some(json!({ "email": format!("busy{i}@example.com"), "lastName": "Busy" })),
            )
            .await
        }
    });
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 202, "{body}");
    }
    all_synced(&app, 200).await;
    let records = app.records("hubspot").await;
    let mut emails: Vec<&str> = records
        .iter()
        .filter_map(|r| r["properties"]["email"].as_str())
        .collect();
    emails.sort_unstable();
    emails.dedup();
    assert_eq!(
        (records.len(), emails.len()),
        (200, 200),
        "each person once"
    );
    let batched = app.calls("hubspot", "batch-create-contacts").await.len();
    let singles = app.calls("hubspot", "create-contact").await.len();
    assert!(
        batched >= 1,
        "a backlog was gathered ({singles} single creates)"
    );
    assert!(singles < 200, "{singles} single creates");
}
