use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Every page of `list-contacts` from `input` on, following the cursor.
async fn all_pages(app: &TestApp, conn: &str, mut input: Value) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
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

#[tokio::test]
async fn list_is_inclusive_of_updated_since_and_pages_by_cursor() {
    let app = TestApp::spawn().await;
    for conn in ["hubspot", "pipedrive"] {
        let mut created = Vec::new();
        for i in 0..5 {
            let out = app
                .upsert(conn, json!({"primaryEmail": format!("p{i}@example.com")}))
                .await;
            created.push(out["id"].as_str().unwrap().to_owned());
        }
        let third = app.get_contact(conn, &created[2]).await.body["output"].clone();
        let since = third["updatedTime"].as_str().unwrap().to_owned();

        let pages = all_pages(&app, conn, json!({"updatedSince": since, "limit": 2})).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 1],
            "{conn}"
        );
        let listed: Vec<Value> = pages.concat();
        assert_eq!(
            ids(&listed),
            created[2..].to_vec(),
            "{conn}: inclusive, in update order"
        );
        let times: Vec<&str> = listed
            .iter()
            .map(|r| r["updatedTime"].as_str().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{conn}: strictly increasing times {times:?}"
        );

        let everything = all_pages(&app, conn, json!({})).await.concat();
        assert_eq!(ids(&everything), created, "{conn}: no filter lists all");

        app.ok(conn, "delete-contact", json!({"id": created[0]}))
            .await;
        let after = all_pages(&app, conn, json!({"updatedSince": since}))
            .await
            .concat();
        let last = after.last().unwrap();
        assert_eq!(
            last["id"],
            created[0].as_str(),
            "{conn}: the deletion moves to the end"
        );
        assert!(last["deletedTime"].is_string(), "{conn}: with deletedTime");
    }
}

#[tokio::test]
async fn a_crm_side_edit_shows_up_in_the_next_poll() {
    let app = TestApp::spawn().await;
    let id = app
        .upsert("hubspot", json!({"primaryEmail": "e@example.com"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.get_contact("hubspot", &id).await.body["output"]["updatedTime"].clone();

    let patch = json!({"properties": {"firstname": "Eve", "jobtitle": "Ops"}}).to_string();
    let r = app
        .admin(
            Method::PATCH,
            &format!("/_sim/hubspot/records/{id}"),
            Some(&patch),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["properties"]["email"], "e@example.com",
        "PATCH merges properties"
    );

    let out = app
        .ok("hubspot", "list-contacts", json!({"updatedSince": before}))
        .await;
    let recs = out["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0]["updatedTime"].as_str().unwrap() > before.as_str().unwrap());
    assert_eq!(recs[0]["fields"]["firstName"], "Eve");
    assert_eq!(recs[0]["fields"]["jobTitle"], "Ops");
    assert_eq!(out["cursor"], Value::Null);
}

#[tokio::test]
async fn list_rejects_bad_arguments() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"updatedSince": "yesterday"}), "not a date-time"),
        (json!({"cursor": "not-a-cursor"}), "garbage cursor"),
        (json!({"cursor": 5}), "cursor not a string"),
        (json!({"limit": 0}), "limit below 1"),
        (json!({"limit": 501}), "limit above 500"),
        (json!({"limit": "10"}), "limit not an integer"),
    ];
    for (input, why) in cases {
        let r = app.run("pipedrive", "list-contacts", input).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.body);
        assert_eq!(r.body["type"], "bad_request", "{why}");
    }
}

#[tokio::test]
async fn list_defaults_to_pages_of_100() {
    let app = TestApp::spawn().await;
    for i in 0..101 {
        let body = json!({"name": format!("P{i}")}).to_string();
        let r = app
            .admin(Method::POST, "/_sim/pipedrive/records", Some(&body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let pages = all_pages(&app, "pipedrive", json!({})).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 1]);
    assert_eq!(pages[1][0]["fields"]["fullName"], "P100");
}
