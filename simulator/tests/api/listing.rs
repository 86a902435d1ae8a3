use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Every page of `list-contacts` (the built-in list: live records, a cursor).
async fn all_pages(app: &TestApp, conn: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut input = json!({});
    loop {
        let out = app.ok(conn, "list-contacts", input.clone()).await;
        pages.push(out["records"].as_array().unwrap().clone());
        match &out["cursor"] {
            Value::Null => return pages,
            Value::String(c) => input["cursor"] = json!(c),
            other => panic!("cursor must be a string or null, got {other}"),
        }
    }
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Makes `n` Pipedrive persons at once (the admin route takes an array).
async fn make_persons(app: &TestApp, from: usize, n: usize) -> Vec<Value> {
    let people: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({"name": format!("P{i}"), "first_name": format!("P{i}"),
            "emails": [{"value": format!("p{i}@example.com"), "primary": true}]})
        })
        .collect();
    let r = app
        .admin(
            Method::POST,
            "/_sim/pipedrive/records",
            Some(&Value::Array(people).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body.as_array().unwrap().clone()
}

/// Waits (with a deadline) for the wall clock, which the simulator's
/// follows, to pass `ms`.
async fn clock_past(ms: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while chrono::Utc::now().timestamp_millis() <= ms {
        assert!(Instant::now() < deadline, "the clock did not pass {ms}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms_of(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn the_built_in_list_pages_live_records_by_cursor_only() {
    let app = TestApp::spawn().await;
    for conn in ["hubspot", "pipedrive"] {
        let mut created = Vec::new();
        for i in 0..5 {
            let out = app
                .upsert(conn, json!({"primaryEmail": format!("p{i}@example.com")}))
                .await;
            created.push(out["id"].as_str().unwrap().to_owned());
        }
        // an edit does not move a record: the connector's order is by id
        app.ok(
            conn,
            "update-contact",
            json!({"id": created[0], "fields": {"firstName": "Moved"}}),
        )
        .await;
        app.ok(conn, "delete-contact", json!({"id": created[1]}))
            .await;
        let listed = all_pages(&app, conn).await.concat();
        let mut live = created.clone();
        live.remove(1);
        assert_eq!(ids(&listed), live, "{conn}: live records by id");
        assert!(listed.iter().all(|r| r["deletedTime"].is_null()));
        assert_eq!(listed[0]["fields"]["firstName"], "Moved");
    }
}

#[tokio::test]
async fn the_built_in_list_takes_no_updated_since_and_refuses_a_bad_cursor() {
    let app = TestApp::spawn().await;
    // Membrane's list-data-records has no such argument: the input schema
    // of list-contacts does not name it, and nothing is filtered by it.
    app.upsert("pipedrive", json!({"primaryEmail": "old@example.com"}))
        .await;
    let out = app
        .ok(
            "pipedrive",
            "list-contacts",
            json!({"updatedSince": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(out["records"].as_array().unwrap().len(), 1);
    for (input, why) in [
        (json!({"cursor": "not-a-cursor"}), "garbage cursor"),
        (json!({"cursor": 5}), "cursor not a string"),
    ] {
        let r = app.run("pipedrive", "list-contacts", input).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.body);
        assert_eq!(r.body["type"], "bad_request", "{why}");
    }
}

#[tokio::test]
async fn list_pages_are_of_100() {
    let app = TestApp::spawn().await;
    make_persons(&app, 0, 101).await;
    let pages = all_pages(&app, "pipedrive").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 1]);
    assert_eq!(pages[1][0]["fields"]["firstName"], "P100");
}

/// The must-show of the incremental poll, at the CRM's end: of 10,000
/// persons, the 3 changed since a time come back in one page of one call.
#[tokio::test]
async fn pipedrive_lists_the_3_persons_changed_of_10_000_in_one_call() {
    let app = TestApp::spawn().await;
    let mut made = Vec::new();
    for from in (0..10_000).step_by(2_000) {
        made.extend(make_persons(&app, from, 2_000).await);
    }
    assert_eq!(made.len(), 10_000);
    // Pipedrive's times are whole seconds: the changes come in the next one.
    let last = ms_of(&made.last().unwrap()["update_time"]);
    let since_ms = last - last.rem_euclid(1000) + 1000;
    clock_past(since_ms).await;
    let changed = [
        made[17]["id"].clone(),
        made[5_000]["id"].clone(),
        made[9_998]["id"].clone(),
    ];
    for id in &changed {
        let r = app
            .admin(
                Method::PATCH,
                &format!("/_sim/pipedrive/records/{id}"),
                Some(&json!({"last_name": "Changed"}).to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    app.admin(Method::DELETE, "/_sim/calls", None).await;
    let since = chrono::DateTime::from_timestamp_millis(since_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = app
        .ok(
            "pipedrive",
            "list-changed-contacts",
            json!({"updatedSince": since}),
        )
        .await;
    assert_eq!(out["success"], true);
    let listed: Vec<Value> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(listed, changed, "the 3 changed, oldest change first");
    assert_eq!(
        out["additional_data"]["next_cursor"],
        Value::Null,
        "one page"
    );
    let calls = app.calls("?connection=pipedrive").await;
    assert_eq!(calls.len(), 1, "one call: {calls:?}");
    assert_eq!(calls[0]["action"], "list-changed-contacts");
}

#[tokio::test]
async fn pipedrive_persons_page_by_cursor_and_leave_out_the_deleted() {
    let app = TestApp::spawn().await;
    let made = make_persons(&app, 0, 5).await;
    let first = ms_of(&made[0]["update_time"]);
    // every person, 2 a page, by a cursor on the native endpoint itself
    let r = app
        .admin(
            Method::DELETE,
            &format!("/_sim/pipedrive/records/{}", made[1]["id"]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let since = chrono::DateTime::from_timestamp_millis(first - 1000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut input = json!({"updatedSince": since});
        if let Some(c) = &cursor {
            input["cursor"] = json!(c);
        }
        let out = app.ok("pipedrive", "list-changed-contacts", input).await;
        for p in out["data"].as_array().unwrap() {
            assert_eq!(p["is_deleted"], false);
            seen.push(p["id"].clone());
        }
        match &out["additional_data"]["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            _ => break,
        }
    }
    let mut want: Vec<Value> = made.iter().map(|p| p["id"].clone()).collect();
    want.remove(1);
    assert_eq!(
        seen, want,
        "live persons in change order, the deleted one left out"
    );
    let bad = app
        .run(
            "pipedrive",
            "list-changed-contacts",
            json!({"updatedSince": since, "cursor": "zz"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(
        bad.body["causedByError"]["data"]["response"]["status"], 400,
        "Pipedrive's own 400: {}",
        bad.body
    );
}

#[tokio::test]
async fn hubspot_search_lists_changes_by_modification_time_within_its_window() {
    let app = TestApp::spawn().await;
    let mut ids_made = Vec::new();
    for i in 0..3 {
        let out = app
            .upsert(
                "hubspot",
                json!({"primaryEmail": format!("h{i}@example.com")}),
            )
            .await;
        ids_made.push(out["id"].clone());
    }
    let second = app
        .get_contact("hubspot", ids_made[1].as_str().unwrap())
        .await
        .body["output"]["updatedTime"]
        .clone();
    // the first one changes last
    app.ok(
        "hubspot",
        "update-contact",
        json!({"id": ids_made[0], "fields": {"firstName": "Late"}}),
    )
    .await;
    let out = app
        .ok(
            "hubspot",
            "list-changed-contacts",
            json!({"updatedSince": second}),
        )
        .await;
    let listed: Vec<Value> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(
        listed,
        vec![
            ids_made[1].clone(),
            ids_made[2].clone(),
            ids_made[0].clone()
        ],
        "inclusive, by lastmodifieddate: {out}"
    );
    assert_eq!(out["total"], 3);
    assert!(out["results"][0]["properties"]["lastmodifieddate"].is_string());
    assert!(out["paging"].is_null(), "one page");
    // paging past the 10,000th result is HubSpot's 400
    let r = app
        .run(
            "hubspot",
            "list-changed-contacts",
            json!({"updatedSince": second, "cursor": "9900"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.body["causedByError"]["data"]["response"]["data"]["category"],
        "VALIDATION_ERROR"
    );
}

#[tokio::test]
async fn an_integrations_own_action_is_not_on_the_other_integration() {
    let app = TestApp::spawn().await;
    // both have one of that key; a key neither has is Integration.app's 404
    let r = app.run("pipedrive", "list-changed-deals", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.body["key"], "not_found");
}
