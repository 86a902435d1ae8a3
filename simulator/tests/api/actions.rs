use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

#[tokio::test]
async fn upsert_twice_with_one_email_creates_then_updates() {
    let app = TestApp::spawn().await;
    for conn in ["hubspot", "pipedrive"] {
        let first = app
            .upsert(
                conn,
                json!({"primaryEmail": "ann@example.com", "firstName": "Ann", "jobTitle": "CTO"}),
            )
            .await;
        assert_eq!(first["created"], true, "{conn}");
        let id = first["id"].as_str().expect("id is a string").to_owned();
        let second = app
            .upsert(
                conn,
                json!({"primaryEmail": "ANN@Example.com", "lastName": "Lee", "jobTitle": null}),
            )
            .await;
        assert_eq!(second, json!({"id": id, "created": false}), "{conn}");

        assert_eq!(app.records(conn, true).await.len(), 1, "{conn}: one record");
        let got = app.get_contact(conn, &id).await;
        let fields = &got.body["output"]["fields"];
        assert_eq!(fields["firstName"], "Ann", "{conn}: kept");
        assert_eq!(fields["lastName"], "Lee", "{conn}: added");
        assert_eq!(fields["fullName"], "Ann Lee", "{conn}: derived");
        assert_eq!(
            fields["primaryEmail"], "ANN@Example.com",
            "{conn}: as last written"
        );
        assert!(fields.get("jobTitle").is_none(), "{conn}: null cleared it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_of_one_email_make_one_record() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.upsert(
                    "hubspot",
                    json!({"primaryEmail": "race@example.com", "firstName": format!("N{i}")}),
                )
                .await
            })
        })
        .collect();
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap());
    }
    let created = outputs.iter().filter(|o| o["created"] == true).count();
    assert_eq!(created, 1, "exactly one upsert created: {outputs:?}");
    let ids: std::collections::HashSet<&Value> = outputs.iter().map(|o| &o["id"]).collect();
    assert_eq!(ids.len(), 1, "all upserts resolved to one id");
    assert_eq!(app.records("hubspot", true).await.len(), 1);
}

#[tokio::test]
async fn upsert_without_a_usable_email_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), "no fields"),
        (json!({"fields": {"firstName": "A"}}), "no email"),
        (json!({"fields": {"primaryEmail": ""}}), "empty email"),
        (json!({"fields": {"primaryEmail": "   "}}), "blank email"),
        (
            json!({"fields": {"primaryEmail": 42}}),
            "email not a string",
        ),
        (json!({"fields": "x"}), "fields not an object"),
    ];
    for (input, why) in cases {
        let r = app.run("pipedrive", "upsert-contact", input).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.body);
        assert_eq!(r.body["type"], "bad_request", "{why}");
        assert!(r.body["message"].is_string(), "{why}");
    }
    assert!(app.records("pipedrive", true).await.is_empty());
}

#[tokio::test]
async fn update_get_and_delete_a_contact() {
    let app = TestApp::spawn().await;
    let id = app
        .upsert("pipedrive", json!({"primaryEmail": "bo@example.com", "firstName": "Bo", "lastName": "Ek", "companyName": "Acme"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = app
        .ok(
            "pipedrive",
            "update-contact",
            json!({"id": id, "fields": {"jobTitle": "CEO", "companyName": null}}),
        )
        .await;
    assert_eq!(out, json!({"id": id}));
    let rec = app.get_contact("pipedrive", &id).await.body["output"].clone();
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(
        rec["fields"],
        json!({"firstName": "Bo", "lastName": "Ek", "fullName": "Bo Ek", "primaryEmail": "bo@example.com", "jobTitle": "CEO"})
    );
    assert!(rec["createdTime"].as_str().unwrap() < rec["updatedTime"].as_str().unwrap());
    assert!(rec.get("deletedTime").is_none());

    let native = app
        .admin(Method::GET, &format!("/_sim/pipedrive/records/{id}"), None)
        .await
        .body;
    assert_eq!(native["name"], "Bo Ek");
    assert_eq!(native["job_title"], "CEO");
    assert!(native.get("org_name").is_none());
    assert_eq!(native["is_deleted"], false);

    assert_eq!(
        app.ok("pipedrive", "delete-contact", json!({"id": id}))
            .await,
        json!({})
    );
    let deleted = app.get_contact("pipedrive", &id).await.body["output"].clone();
    assert_eq!(deleted["deletedTime"], deleted["updatedTime"]);
    assert_eq!(deleted["fields"]["primaryEmail"], "bo@example.com");
    assert_eq!(
        app.ok("pipedrive", "delete-contact", json!({"id": id}))
            .await,
        json!({}),
        "delete again"
    );

    let cases = [
        (
            "update-contact",
            json!({"id": id, "fields": {"firstName": "X"}}),
            "update deleted",
        ),
        (
            "update-contact",
            json!({"id": "999999", "fields": {}}),
            "update unknown",
        ),
        ("delete-contact", json!({"id": "999999"}), "delete unknown"),
        ("get-contact", json!({"id": "999999"}), "get unknown"),
        ("get-contact", json!({"id": "abc"}), "get non-numeric"),
    ];
    for (action, input, why) in cases {
        // the CRM's own 404 under the action run, never Integration.app's
        // own `not_found` (which a missing connection gets)
        let r = app.run("pipedrive", action, input).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(r.body["type"], "action_run", "{why}");
        assert!(r.body.get("key").is_none(), "{why}: {}", r.body);
        let cause = &r.body["causedByError"];
        assert_eq!(cause["type"], "connection", "{why}");
        assert_eq!(cause["data"]["response"]["status"], 404, "{why}");
        assert_eq!(cause["data"]["response"]["data"]["success"], false, "{why}");
    }

    let again = app
        .upsert("pipedrive", json!({"primaryEmail": "bo@example.com"}))
        .await;
    assert_eq!(
        again["created"], true,
        "a deleted record is not matched by upsert"
    );
}

#[tokio::test]
async fn unknown_connection_or_action_is_not_found() {
    let app = TestApp::spawn().await;
    let cases = [
        ("salesforce", "upsert-contact", "unknown connection"),
        ("hubspot", "merge-contact", "undeclared action"),
    ];
    for (conn, action, why) in cases {
        let r = app
            .run(conn, action, json!({"fields": {"primaryEmail": "a@b.c"}}))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{why}");
        assert_eq!(r.body["key"], "not_found", "{why}");
    }
}

#[tokio::test]
async fn records_are_kept_in_each_crms_own_shape() {
    let app = TestApp::spawn().await;
    let fields = json!({"primaryEmail": "cy@example.com", "firstName": "Cy", "lastName": "Do",
        "primaryPhone": "+1 555 0101", "companyName": "Initech", "jobTitle": "Dev"});
    let hs_id = app.upsert("hubspot", fields.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pd_id = app.upsert("pipedrive", fields).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let hs = app
        .admin(Method::GET, &format!("/_sim/hubspot/records/{hs_id}"), None)
        .await
        .body;
    assert_eq!(hs["id"], hs_id.as_str(), "HubSpot ids are strings");
    let props = &hs["properties"];
    for (k, v) in [
        ("email", "cy@example.com"),
        ("firstname", "Cy"),
        ("lastname", "Do"),
        ("phone", "+1 555 0101"),
        ("company", "Initech"),
        ("jobtitle", "Dev"),
        ("hs_object_id", hs_id.as_str()),
    ] {
        assert_eq!(props[k], v, "properties.{k}");
    }
    assert_eq!(props["lastmodifieddate"], hs["updatedAt"]);
    assert_eq!(hs["archived"], false);

    let pd = app
        .admin(
            Method::GET,
            &format!("/_sim/pipedrive/records/{pd_id}"),
            None,
        )
        .await
        .body;
    assert_eq!(
        pd["id"],
        pd_id.parse::<u64>().unwrap(),
        "Pipedrive ids are integers"
    );
    assert_eq!(pd["name"], "Cy Do");
    assert_eq!(
        pd["emails"],
        json!([{"value": "cy@example.com", "primary": true, "label": "work"}])
    );
    assert_eq!(
        pd["phones"],
        json!([{"value": "+1 555 0101", "primary": true, "label": "work"}])
    );
    assert_eq!(pd["org_name"], "Initech");
    let update_time = pd["update_time"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(update_time).is_ok() && update_time.ends_with('Z')
    );
}

/// `create-data-record` always creates (output `{id}`); HubSpot refuses a
/// second contact with an email it has, with its own 409 under the action
/// run; Pipedrive keeps the duplicate.
#[tokio::test]
async fn create_contact_creates_and_hubspot_refuses_a_known_email() {
    let app = TestApp::spawn().await;
    let fields = json!({"fields": {"primaryEmail": "Twice@Example.com", "firstName": "A"}});
    for conn in ["hubspot", "pipedrive"] {
        let out = app.ok(conn, "create-contact", fields.clone()).await;
        assert!(out["id"].is_string(), "{conn}: {out}");
        assert!(out.get("created").is_none(), "{conn}: only the id: {out}");
    }
    let again = json!({"fields": {"primaryEmail": "twice@example.com", "firstName": "B"}});
    let r = app.run("hubspot", "create-contact", again.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["type"], "action_run");
    let cause = &r.body["causedByError"];
    assert_eq!(cause["data"]["response"]["status"], 409, "{}", r.body);
    assert_eq!(cause["data"]["response"]["data"]["category"], "CONFLICT");
    let hubspot = app
        .ok(
            "hubspot",
            "find-contact",
            json!({"email": "twice@example.com"}),
        )
        .await;
    assert_eq!(
        hubspot["fields"]["firstName"], "A",
        "the first one is untouched"
    );

    let out = app.ok("pipedrive", "create-contact", again).await;
    assert!(out["id"].is_string(), "{out}");
    let r = app.run("pipedrive", "list-contacts", json!({})).await;
    assert_eq!(
        r.body["output"]["records"].as_array().map(Vec::len),
        Some(2),
        "Pipedrive keeps both: {}",
        r.body
    );
}
