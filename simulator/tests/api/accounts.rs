//! Many customers, each with its own HubSpot portal and Pipedrive company.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use simulator::EventsConfig;

use crate::delivery::log_until;
use crate::flow_events::claims;
use crate::helpers::{now_secs, token, TestApp, CUSTOMER, KEY, SECRET};
use crate::receiver::{Answer, Receiver, PATIENCE};
use crate::webhooks::{spawn_hooked, PORTAL_ID};

const OTHER: &str = "acme";

fn account<'a>(accounts: &'a [Value], customer: &str, conn: &str) -> &'a Value {
    accounts
        .iter()
        .find(|a| a["customer"] == customer && a["connection"] == conn)
        .unwrap_or_else(|| panic!("no {conn} account of {customer} in {accounts:#?}"))
}

#[tokio::test]
async fn each_customer_has_its_own_records() {
    let app = TestApp::spawn().await;
    assert!(app.accounts().await.is_empty(), "made on first use");
    let fields = json!({"primaryEmail": "same@example.com", "firstName": "Sam"});
    let mine = app.upsert("hubspot", fields.clone()).await;
    let theirs = app
        .ok_for(
            OTHER,
            "hubspot",
            "upsert-contact",
            json!({ "fields": fields }),
        )
        .await;
    assert_eq!(
        theirs["created"], true,
        "one email, two customers, two records"
    );
    assert_eq!(mine["id"], theirs["id"], "ids are per account");

    let again = app
        .ok_for(
            OTHER,
            "hubspot",
            "update-contact",
            json!({"id": theirs["id"], "fields": {"lastName": "Other"}}),
        )
        .await;
    assert_eq!(again["id"], theirs["id"]);
    let listed = app.records("hubspot", false).await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0]["properties"].get("lastname").is_none(),
        "untouched: {listed:#?}"
    );
    let listed = app.records_of(OTHER, "hubspot").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["properties"]["lastname"], "Other");
    assert_eq!(app.records_of(CUSTOMER, "hubspot").await.len(), 1);

    let created = app
        .admin(
            Method::POST,
            &format!("/_sim/pipedrive/records?customer={OTHER}"),
            Some(r#"{"name": "Pat", "emails": [{"value": "pat@example.com", "primary": true}]}"#),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let found = app
        .ok_for(
            OTHER,
            "pipedrive",
            "find-contact",
            json!({"email": "pat@example.com"}),
        )
        .await;
    assert_eq!(found["id"], created.body["id"].to_string());
    let not_mine = app
        .ok(
            "pipedrive",
            "find-contact",
            json!({"email": "pat@example.com"}),
        )
        .await;
    assert_eq!(not_mine, Value::Null, "another customer's record");

    let accounts = app.accounts().await;
    let summary: Vec<(&str, &str, bool, u64)> = accounts
        .iter()
        .map(|a| {
            (
                a["customer"].as_str().unwrap(),
                a["connection"].as_str().unwrap(),
                a["connected"].as_bool().unwrap(),
                a["records"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (OTHER, "hubspot", true, 1),
            (OTHER, "pipedrive", true, 1),
            (CUSTOMER, "hubspot", true, 1),
            (CUSTOMER, "pipedrive", true, 0),
        ]
    );
    assert_eq!(
        account(&accounts, CUSTOMER, "hubspot")["accountId"],
        PORTAL_ID
    );
    assert_eq!(account(&accounts, CUSTOMER, "pipedrive")["accountId"], 7001);
    let other_portal = account(&accounts, OTHER, "hubspot")["accountId"]
        .as_u64()
        .unwrap();
    assert_ne!(other_portal, PORTAL_ID);
    assert_ne!(account(&accounts, OTHER, "pipedrive")["accountId"], 7001);

    let calls = app.calls(&format!("?customer={OTHER}")).await;
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c["customer"] == OTHER), "{calls:#?}");
    assert_eq!(app.calls(&format!("?customer={CUSTOMER}")).await.len(), 2);
}

#[tokio::test]
async fn a_token_naming_its_customer_in_sub_acts_for_it() {
    let app = TestApp::spawn().await;
    let token = token(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        json!({"iss": KEY, "sub": OTHER, "exp": now_secs() + 600}),
    );
    let r = app
        .run_as(
            Some(&format!("Bearer {token}")),
            "pipedrive",
            "upsert-contact",
            &json!({"fields": {"primaryEmail": "s@example.com"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(app.records_of(OTHER, "pipedrive").await.len(), 1);
    assert!(app.records("pipedrive", true).await.is_empty());
}

#[tokio::test]
async fn webhooks_carry_the_portal_of_the_changed_record_one_portal_a_batch() {
    let (app, receiver) = spawn_hooked().await;
    let r = app
        .put_account(OTHER, "hubspot", json!({"accountId": 777}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for n in 0..5 {
        let email = format!("p{n}@example.com");
        app.upsert("hubspot", json!({ "primaryEmail": email }))
            .await;
        let body = json!({"properties": {"email": email}}).to_string();
        let path = format!("/_sim/hubspot/records?customer={OTHER}");
        let r = app.admin(Method::POST, &path, Some(&body)).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }

    let events = receiver.wait_for_events(20).await;
    let portals = |events: &[Value]| {
        let mut p: Vec<u64> = events
            .iter()
            .map(|e| e["portalId"].as_u64().unwrap())
            .collect();
        p.dedup();
        p
    };
    for r in receiver.requests() {
        let batch = r.json.as_array().unwrap();
        assert_eq!(portals(batch).len(), 1, "a batch of one portal: {batch:#?}");
    }
    let mut all = portals(&events);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, [777, PORTAL_ID]);
    for e in &events {
        let expected_source = if e["portalId"] == 777 {
            "CRM_UI"
        } else {
            "INTEGRATION"
        };
        assert_eq!(e["changeSource"], expected_source, "{e}");
    }

    let log = log_until(&app, |l| {
        l.iter().map(|a| a["events"].as_u64().unwrap()).sum::<u64>() >= 20
    })
    .await;
    for a in &log {
        let expected = if a["portalId"] == 777 {
            OTHER
        } else {
            CUSTOMER
        };
        assert_eq!(a["customer"], expected, "{a}");
    }
    assert!(log.iter().any(|a| a["portalId"] == PORTAL_ID), "{log:#?}");
}

#[tokio::test]
async fn a_disconnected_account_refuses_action_runs_until_reconnected() {
    let app = TestApp::spawn().await;
    let id = app
        .ok_for(
            OTHER,
            "pipedrive",
            "upsert-contact",
            json!({"fields": {"primaryEmail": "d@example.com"}}),
        )
        .await["id"]
        .clone();
    let r = app
        .put_account(OTHER, "pipedrive", json!({"connected": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["connected"], false);
    assert_eq!(r.body["records"], 1, "records are kept");

    let r = app
        .run_for(OTHER, "pipedrive", "get-contact", json!({ "id": id }))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.body["type"], "bad_request");
    assert_eq!(
        r.body["key"], "not_found",
        "as for any connection Integration.app does not know"
    );
    assert!(r.body["message"].is_string());
    app.ok_for(OTHER, "hubspot", "list-contacts", json!({}))
        .await;
    app.ok("pipedrive", "list-contacts", json!({})).await;
    assert_eq!(app.records_of(OTHER, "pipedrive").await.len(), 1);

    let r = app
        .put_account(OTHER, "pipedrive", json!({"connected": true}))
        .await;
    assert_eq!(r.body["connected"], true);
    let got = app
        .ok_for(OTHER, "pipedrive", "get-contact", json!({ "id": id }))
        .await;
    assert_eq!(got["fields"]["primaryEmail"], "d@example.com");
}

#[tokio::test]
async fn rate_limits_and_throttles_count_per_account() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"throttle": {"hubspot": {"remaining": 1}}}))
        .await;
    for customer in [CUSTOMER, OTHER] {
        let r = app
            .run_for(customer, "hubspot", "list-contacts", json!({}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{customer}'s first"
        );
        app.ok_for(customer, "hubspot", "list-contacts", json!({}))
            .await;
    }

    const LIMIT: usize = 2;
    app.put_faults(json!({"rateLimits": {"pipedrive": LIMIT}}))
        .await;
    let mut refused = false;
    for _ in 0..10 {
        let r = app.run("pipedrive", "list-contacts", json!({})).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "the default customer reached its limit");
    for _ in 0..LIMIT {
        app.run_for(OTHER, "pipedrive", "list-contacts", json!({}))
            .await;
    }

    let accepted = |calls: Vec<Value>| -> Vec<i64> {
        calls
            .iter()
            .filter(|c| c["status"] == 201)
            .map(|c| c["atMs"].as_i64().unwrap())
            .collect()
    };
    let mine = accepted(
        app.calls(&format!("?customer={CUSTOMER}&connection=pipedrive"))
            .await,
    );
    let theirs = accepted(
        app.calls(&format!("?customer={OTHER}&connection=pipedrive"))
            .await,
    );
    let in_window =
        |times: &[i64], t: i64| times.iter().filter(|u| **u <= t && t - **u < 1000).count();
    for t in mine.iter().chain(&theirs) {
        assert!(in_window(&mine, *t) <= LIMIT, "{mine:?}");
        assert!(in_window(&theirs, *t) <= LIMIT, "{theirs:?}");
    }
    let last = *theirs
        .last()
        .expect("the other customer's calls were accepted");
    assert_eq!(
        theirs.len(),
        LIMIT,
        "none of the other customer's calls refused"
    );
    assert!(
        in_window(&mine, last) + in_window(&theirs, last) > LIMIT,
        "both accounts used their whole limit in one second: {mine:?} {theirs:?}"
    );
}

#[tokio::test]
async fn a_customers_own_faults_replace_the_workspace_wide_ones() {
    let app = TestApp::spawn().await;
    app.put_faults(json!({"outage": true})).await;
    let path = format!("/_sim/faults?customer={OTHER}");
    let r = app
        .admin(
            Method::PUT,
            &path,
            Some(r#"{"throttle": {"pipedrive": {"remaining": 2}}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["outage"], false);

    let r = app.run("hubspot", "list-contacts", json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "workspace-wide outage"
    );
    app.ok_for(OTHER, "hubspot", "list-contacts", json!({}))
        .await;
    let r = app
        .run_for(OTHER, "pipedrive", "list-contacts", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    let own = app.admin(Method::GET, &path, None).await.body;
    assert_eq!(own["throttle"]["pipedrive"]["remaining"], 1, "{own}");
    assert_eq!(own["outage"], false);
    let workspace = app.admin(Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(workspace["outage"], true);
    assert_eq!(workspace["throttle"], json!({}));

    let r = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .run_for(OTHER, "hubspot", "list-contacts", json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "workspace-wide again"
    );
    assert_eq!(
        app.admin(Method::GET, &path, None).await.body["outage"],
        true
    );
    let r = app.admin(Method::DELETE, "/_sim/faults", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "DELETE names a customer");
    assert!(r.body["error"].is_string());
}

#[tokio::test]
async fn flow_tokens_name_the_customer_of_the_changed_record() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(None, Some(EventsConfig::new(&receiver.url))).await;
    app.ok_for(
        OTHER,
        "pipedrive",
        "upsert-contact",
        json!({"fields": {"primaryEmail": "f@example.com"}}),
    )
    .await;
    let event = receiver.wait_for(1).await.remove(0);
    let c = claims(&event);
    assert_eq!(c["sub"], json!(OTHER));
    assert_eq!(event.json["event"], "data-record-created");

    app.upsert("pipedrive", json!({"primaryEmail": "g@example.com"}))
        .await;
    let requests = receiver.wait_for(2).await;
    assert_eq!(claims(&requests[1])["sub"], CUSTOMER);
    let log = log_until(&app, |l| l.len() == 2).await;
    let mut customers: Vec<&str> = log
        .iter()
        .map(|a| a["customer"].as_str().unwrap())
        .collect();
    customers.sort_unstable();
    assert_eq!(customers, [OTHER, CUSTOMER]);
}

#[tokio::test]
async fn accounts_are_made_and_changed_by_put() {
    let app = TestApp::spawn().await;
    let r = app
        .put_account(OTHER, "hubspot", json!({"accountId": 900}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"customer": OTHER, "connection": "hubspot", "accountId": 900, "connected": true, "defunct": false, "records": 0})
    );
    let r = app
        .put_account("beta", "hubspot", json!({"accountId": 900}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body["error"].is_string());
    let r = app
        .put_account("beta", "pipedrive", json!({"accountId": 900}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "ids are unique per connection");
    let r = app
        .put_account(OTHER, "hubspot", json!({"accountId": 900}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "its own id again");
    let r = app
        .put_account(OTHER, "hubspot", json!({"accountId": 901}))
        .await;
    assert_eq!(r.body["accountId"], 901);
    let r = app
        .put_account("beta", "hubspot", json!({"accountId": 900}))
        .await;
    assert_eq!(
        (r.status, &r.body["accountId"]),
        (StatusCode::OK, &json!(900)),
        "freed"
    );

    let cases = [
        ("{not json", "malformed JSON"),
        (r#"{"accountId": "x"}"#, "a string id"),
        (r#"{"accountId": -1}"#, "a negative id"),
        (r#"{"accountId": 0}"#, "a zero id"),
        (r#"{"connected": "yes"}"#, "not a bool"),
        (r#"{"portalId": 1}"#, "unknown field"),
    ];
    for (body, why) in cases {
        let r = app
            .admin(
                Method::PUT,
                &format!("/_sim/accounts/{OTHER}/hubspot"),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert!(r.body["error"].is_string(), "{why}");
    }
    let r = app
        .admin(Method::PUT, "/_sim/accounts/%20/hubspot", Some("{}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a blank customer");
    let r = app.put_account(OTHER, "salesforce", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .admin(Method::GET, "/_sim/hubspot/records?customer=", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "an empty ?customer=");

    let r = app.put_account(CUSTOMER, "hubspot", json!({})).await;
    assert_eq!(
        r.body["accountId"], PORTAL_ID,
        "the default customer's home id"
    );
}

#[tokio::test]
async fn reset_forgets_every_account_and_gives_the_home_ids_back() {
    let app = TestApp::spawn().await;
    app.put_account(CUSTOMER, "hubspot", json!({"accountId": 5}))
        .await;
    let first = app
        .upsert("hubspot", json!({"primaryEmail": "r@example.com"}))
        .await;
    app.ok_for(OTHER, "hubspot", "list-contacts", json!({}))
        .await;
    let path = format!("/_sim/faults?customer={OTHER}");
    app.admin(Method::PUT, &path, Some(r#"{"outage": true}"#))
        .await;

    let r = app.admin(Method::POST, "/_sim/reset", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(app.accounts().await.is_empty());
    assert_eq!(
        app.admin(Method::GET, &path, None).await.body["outage"],
        false
    );

    let again = app
        .upsert("hubspot", json!({"primaryEmail": "r@example.com"}))
        .await;
    assert_eq!(again["created"], true);
    assert_ne!(again["id"], first["id"], "ids are not reused after a reset");
    app.ok_for(OTHER, "hubspot", "list-contacts", json!({}))
        .await;
    let accounts = app.accounts().await;
    assert_eq!(
        account(&accounts, CUSTOMER, "hubspot")["accountId"],
        PORTAL_ID
    );
    assert_eq!(
        account(&accounts, OTHER, "hubspot")["accountId"],
        PORTAL_ID + 1
    );
}

#[tokio::test]
async fn one_portal_s_slow_deliveries_do_not_hold_back_another_portal_s() {
    let (app, receiver) = spawn_hooked().await;
    let r = app
        .put_account(OTHER, "hubspot", json!({"accountId": 777}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // eleven batches of the default portal, held until all are made
    app.admin(Method::PUT, "/_sim/webhooks/pause", None).await;
    for n in 1..=11 {
        let body = json!({"properties": {"email": format!("slow{n}@example.com")}}).to_string();
        let r = app
            .admin(Method::POST, "/_sim/hubspot/records", Some(&body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while app
            .admin(Method::GET, "/_sim/webhooks/pause", None)
            .await
            .body["held"]
            != n
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "batch {n} never held"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    // the app answers the first ten slowly: they fill the portal's slots
    receiver.script((0..10).map(|_| Answer {
        status: 200,
        delay: std::time::Duration::from_secs(3),
    }));
    app.admin(Method::PUT, "/_sim/webhooks/resume", None).await;
    receiver.wait_for(10).await;

    let started = tokio::time::Instant::now();
    let body = json!({"properties": {"email": "quick@example.com"}}).to_string();
    let path = format!("/_sim/hubspot/records?customer={OTHER}");
    let r = app.admin(Method::POST, &path, Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    receiver
        .wait_until("the other portal's delivery", |rs| {
            rs.iter().any(|r| r.json[0]["portalId"] == 777)
        })
        .await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(2),
        "the other portal waited {waited:?} for a slot"
    );
    assert_eq!(
        receiver.requests().len(),
        11,
        "the eleventh slow batch still waits for its portal's slot"
    );
}
