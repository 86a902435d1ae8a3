//! A customer's connection that Integration.app no longer knows (the
//! customer disconnected it) is a configuration problem, not a deletion:
//! its 404 never reads as "the record is gone", nothing cascades to the
//! other CRM, its jobs wait without using attempts, the connection reads
//! `needs_reconnect`, and everything converges once it is reconnected.

mod common;

use std::time::Duration;

use common::{eventually, Options, TestApp, WS_KEY, WS_SECRET};
use reqwest::Method;
use serde_json::{json, Value};

const CUSTOMER: &str = "contact-sync";

fn token(claims: &Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// A flow event as Integration.app's `api-request-to-your-app` node sends
/// it, with its token (Membrane's documented claims: `iss`, `sub`,
/// `fields`).
async fn flow_event(app: &TestApp, record: &str) -> (u16, Value) {
    let token = token(
        &json!({ "iss": WS_KEY, "sub": CUSTOMER, "fields": {} }),
        WS_SECRET,
        jsonwebtoken::Algorithm::HS256,
    );
    send_event(app, record, &[("x-membrane-token", &token)]).await
}

async fn send_event(app: &TestApp, record: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = app.http.post(format!("{}/api/integration/events", app.api));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .json(&json!({
            "externalRecordId": record,
            "integrationKey": "pipedrive",
            "event": "data-record-updated",
        }))
        .send()
        .await
        .expect("api reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn connection(app: &TestApp, provider: &str) -> Value {
    let (status, body) = app
        .call(Method::GET, &format!("/api/customers/{CUSTOMER}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["provider"] == provider))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn set_connected(app: &TestApp, connected: bool) {
    let (status, body) = app
        .sim_send(
            Method::PUT,
            &format!("/accounts/{CUSTOMER}/pipedrive"),
            Some(json!({ "connected": connected })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn first_name(connection: &str, r: &Value) -> Option<String> {
    let name = match connection {
        "hubspot" => &r["properties"]["firstname"],
        _ => &r["first_name"],
    };
    name.as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_disconnected_connection_deletes_nothing_and_converges_once_reconnected() {
    let app = TestApp::with(Options::default().env("RECONNECT_PROBE_SECS", 1)).await;
    let id = app.create_ok("ada@example.com").await;
    app.wait_links(&[&id], "synced", Duration::from_secs(20))
        .await;
    let pd_record = app.link(&id, "pipedrive").await.expect("link")["externalId"]
        .as_str()
        .expect("pipedrive id")
        .to_owned();

    // The customer disconnects Pipedrive; then a flow event, a poll and an
    // edit in the app arrive.
    set_connected(&app, false).await;
    let (status, body) = flow_event(&app, &pd_record).await;
    assert!(status < 300, "flow event accepted: {status} {body}");
    let (status, body) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{id}"),
            Some(json!({ "firstName": "Ada-edited" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // The connection reads `needs_reconnect`; the edit reached HubSpot.
    let conn = eventually(
        Duration::from_secs(20),
        "pipedrive needs reconnect",
        || async {
            Some(connection(&app, "pipedrive").await).filter(|c| c["health"] == "needs_reconnect")
        },
    )
    .await;
    assert!(
        conn["needsReconnect"]["error"].as_str().is_some(),
        "the reason is shown: {conn}"
    );
    eventually(Duration::from_secs(20), "the edit in HubSpot", || async {
        app.records("hubspot")
            .await
            .iter()
            .any(|r| first_name("hubspot", r).as_deref() == Some("Ada-edited"))
            .then_some(())
    })
    .await;
    // Every job has had its turn against the disconnected connection.
    let calls = eventually(
        Duration::from_secs(20),
        "the jobs tried pipedrive",
        || async {
            let calls = app.calls("pipedrive", "get-contact").await;
            (calls.iter().filter(|c| c["status"] == 404).count() >= 1).then_some(calls)
        },
    )
    .await;
    assert!(!calls.is_empty());

    // Nothing was deleted anywhere; the Pipedrive link is not synced.
    let (status, contact) = app.contact(&id).await;
    assert_eq!(status, 200, "the contact still exists: {contact}");
    assert!(contact["deletedAt"].is_null(), "not deleted: {contact}");
    assert_eq!(app.records("hubspot").await.len(), 1, "HubSpot keeps it");
    let (status, pd) = app
        .sim_send(
            Method::GET,
            &format!("/pipedrive/records/{pd_record}?customer={CUSTOMER}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "Pipedrive keeps it: {pd}");
    assert!(
        pd["is_deleted"] != true,
        "the Pipedrive person is not deleted: {pd}"
    );
    let link = app.link(&id, "pipedrive").await.expect("link");
    assert_ne!(link["syncStatus"], "synced", "{link}");
    assert_ne!(link["syncStatus"], "error", "no attempts burned: {link}");
    let q = app.queue().await;
    for queue in ["outbound-upsert", "inbound-change", "provider-poll"] {
        assert_eq!(q.counts(queue).await.expect("counts").dead, 0, "{queue}");
    }

    // Reconnected: all three converge, and the connection is well again.
    set_connected(&app, true).await;
    app.wait_link(&id, "pipedrive", "synced", Duration::from_secs(30))
        .await;
    eventually(Duration::from_secs(30), "the edit in Pipedrive", || async {
        let (_, pd) = app
            .sim_send(
                Method::GET,
                &format!("/pipedrive/records/{pd_record}?customer={CUSTOMER}"),
                None,
            )
            .await;
        (first_name("pipedrive", &pd).as_deref() == Some("Ada-edited")).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the connection well again",
        || async {
            Some(connection(&app, "pipedrive").await)
                .filter(|c| c["needsReconnect"].is_null() && c["health"] != "needs_reconnect")
        },
    )
    .await;
    app.settle(Duration::from_secs(30)).await;
    let (_, contact) = app.contact(&id).await;
    assert_eq!(contact["firstName"], "Ada-edited", "{contact}");
    assert!(contact["deletedAt"].is_null(), "{contact}");
}

/// A defunct connection (it exists, but its credentials no longer work:
/// Integration.app's `connection_is_defunct`) is a configuration error
/// like a missing one: the push waits without using attempts, the
/// connection reads `needs_reconnect`, the check names it; once the
/// customer connects again, the edit lands.
#[tokio::test]
async fn a_defunct_connection_waits_for_a_reconnect() {
    let app = TestApp::with(Options::default().env("RECONNECT_PROBE_SECS", 1)).await;
    let id = app.create_ok("dee.funct@example.com").await;
    app.wait_links(&[&id], "synced", Duration::from_secs(20))
        .await;
    let set_defunct = |defunct: bool| {
        let app = &app;
        async move {
            let (status, body) = app
                .sim_send(
                    Method::PUT,
                    &format!("/accounts/{CUSTOMER}/pipedrive"),
                    Some(json!({ "defunct": defunct })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["defunct"], defunct, "{body}");
        }
    };
    set_defunct(true).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{id}"),
            Some(json!({ "firstName": "Dee-edited" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(
        Duration::from_secs(20),
        "pipedrive needs reconnect",
        || async {
            Some(connection(&app, "pipedrive").await).filter(|c| c["health"] == "needs_reconnect")
        },
    )
    .await;
    app.wait_link(&id, "hubspot", "synced", Duration::from_secs(20))
        .await;
    let link = app.link(&id, "pipedrive").await.expect("link");
    assert_eq!(
        link["syncStatus"], "pending",
        "waits, no attempt burned: {link}"
    );
    let (_, report) = app.call(Method::GET, "/api/check", None).await;
    let problem = report["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["provider"] == "pipedrive"))
        .and_then(|c| c["problem"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(problem.contains("defunct"), "{report}");

    set_defunct(false).await;
    app.wait_link(&id, "pipedrive", "synced", Duration::from_secs(30))
        .await;
    let people = app.records("pipedrive").await;
    assert_eq!(people.len(), 1, "{people:?}");
    assert_eq!(
        first_name("pipedrive", &people[0]).as_deref(),
        Some("Dee-edited")
    );
    let q = app.queue().await;
    assert_eq!(q.counts("outbound-upsert").await.expect("counts").dead, 0);
}

#[tokio::test]
async fn a_disabled_connection_applies_nothing_and_is_not_resynced() {
    let app = TestApp::spawn().await;
    app.customers_on_own_accounts(
        &[("cust-d", "D")],
        &[("cust-d", "hubspot", 7001), ("cust-d", "pipedrive", 7002)],
    )
    .await;
    let (status, body) = app
        .create(json!({ "email": "dee@example.com", "firstName": "Dee", "customerId": "cust-d" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["contact"]["id"].as_str().expect("id").to_owned();
    app.wait_links(&[&id], "synced", Duration::from_secs(20))
        .await;
    let hs_record = app.link(&id, "hubspot").await.expect("link")["externalId"]
        .as_str()
        .expect("hubspot id")
        .to_owned();

    // HubSpot is switched off for this customer; then the record is deleted
    // there, and HubSpot's webhook arrives for the portal.
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/cust-d/connections/hubspot",
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Every process reads its customers through a cache of 2 s (the
    // README: a connection switched on or off takes effect within 2 s);
    // there is nothing to poll for that.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.sim_send(Method::DELETE, "/webhooks", None).await;
    let (status, body) = app
        .sim_send(
            Method::DELETE,
            &format!("/hubspot/records/{hs_record}?customer=cust-d"),
            None,
        )
        .await;
    assert!(status < 300, "{status} {body}");
    eventually(
        Duration::from_secs(20),
        "the deletion delivered",
        || async {
            let log = app.sim_get("/webhooks?kind=hubspot").await;
            log.as_array()?
                .iter()
                .any(|d| d["status"] == 200)
                .then_some(())
        },
    )
    .await;
    app.settle(Duration::from_secs(20)).await;

    // Nothing applied: the contact lives, and Pipedrive keeps its person.
    let (status, contact) = app.contact(&id).await;
    assert_eq!(status, 200, "{contact}");
    assert!(contact["deletedAt"].is_null(), "not deleted: {contact}");
    let pd = app
        .sim_get("/pipedrive/records?customer=cust-d")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pd.len(), 1, "{pd:?}");
    assert!(pd[0]["is_deleted"] != true, "{pd:?}");

    // An operator's resync pushes to the enabled CRM only.
    let (status, body) = app
        .call(Method::POST, &format!("/api/contacts/{id}/resync"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "pipedrive only: {body}");
    app.settle(Duration::from_secs(20)).await;
    let hs = app.link(&id, "hubspot").await.expect("link");
    assert_eq!(hs["syncStatus"], "synced", "left as it was: {hs}");
}

/// headers, expected status, why
type Case = (Vec<(&'static str, String)>, u16, &'static str);

#[tokio::test]
async fn flow_events_take_membrane_s_token_and_no_other() {
    use jsonwebtoken::Algorithm::{HS256, HS512};
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let event = json!({ "iss": WS_KEY, "sub": CUSTOMER, "fields": {} });
    let ours = token(
        &json!({ "iss": WS_KEY, "id": CUSTOMER, "name": "C", "iat": now, "exp": now + 600 }),
        WS_SECRET,
        HS512,
    );
    let cases: Vec<Case> = vec![
        (vec![], 401, "no token"),
        (
            vec![("x-membrane-token", token(&event, WS_SECRET, HS256))],
            200,
            "Membrane's token, no expiry",
        ),
        (
            vec![("x-integration-app-token", token(&event, WS_SECRET, HS512))],
            200,
            "the older header alone",
        ),
        (
            vec![("x-membrane-token", ours.clone())],
            401,
            "a customer token the app mints for Integration.app",
        ),
        (
            vec![("x-integration-app-token", ours)],
            401,
            "the same under the older header",
        ),
        (
            vec![("x-membrane-token", token(&event, "another secret", HS256))],
            401,
            "another secret",
        ),
        (
            vec![(
                "x-membrane-token",
                token(
                    &json!({ "iss": "elsewhere", "sub": CUSTOMER }),
                    WS_SECRET,
                    HS256,
                ),
            )],
            401,
            "another workspace",
        ),
        (
            vec![(
                "x-membrane-token",
                token(
                    &json!({ "iss": WS_KEY, "sub": CUSTOMER, "exp": now - 600 }),
                    WS_SECRET,
                    HS256,
                ),
            )],
            401,
            "expired",
        ),
        (
            vec![("x-membrane-token", "not a jwt".to_owned())],
            401,
            "garbage",
        ),
    ];
    for (headers, want, why) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = send_event(&app, "1", &headers).await;
        assert_eq!(status, want, "{why}: {body}");
        if want == 401 {
            assert!(body["message"].is_string(), "{why}: a reason: {body}");
        }
    }
}

/// `contact-sync check` asks Integration.app about every enabled
/// connection: connected and with every action, or what needs fixing.
#[tokio::test]
async fn the_self_check_names_a_connection_that_needs_reconnecting() {
    let app = TestApp::spawn().await;
    let env = [
        ("MONGODB_URI", common::mongodb_uri()),
        ("MONGODB_DB", app.db.clone()),
        ("INTEGRATION_APP_URL", app.sim.clone()),
        ("INTEGRATION_APP_WORKSPACE_KEY", WS_KEY.to_owned()),
        ("INTEGRATION_APP_WORKSPACE_SECRET", WS_SECRET.to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = app.cli_env(&["check"], &env).await;
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    for p in ["hubspot", "pipedrive"] {
        assert!(
            run.stdout.contains(&format!(
                "ok    {CUSTOMER} {p}: connected, every action there"
            )),
            "{p}: {}",
            run.stdout
        );
    }

    // the console's panel asks the api, which runs the same check
    let (status, report) = app.call(Method::GET, "/api/check", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["workspaceOk"], true, "{report}");
    assert_eq!(report["problems"], 0, "{report}");
    assert_eq!(
        report["connections"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );

    set_connected(&app, false).await;
    let (status, report) = app
        .call(
            Method::GET,
            &format!("/api/check?customerId={CUSTOMER}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["problems"], 1, "{report}");
    let pipedrive = report["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["provider"] == "pipedrive"))
        .expect("pipedrive checked");
    assert_eq!(pipedrive["ok"], false, "{report}");
    assert!(
        pipedrive["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("needs reconnecting")),
        "{report}"
    );
    let (status, body) = app
        .call(Method::GET, "/api/check?customerId=no%20such", None)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .call(Method::GET, "/api/check?customerId=nobody", None)
        .await;
    assert_eq!(status, 404, "{body}");

    let run = app.cli_env(&["check"], &env).await;
    assert!(!run.success, "a problem fails the check: {}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("FAIL  {CUSTOMER} pipedrive: needs reconnecting")),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 of 2 connections need fixing"),
        "{}",
        run.stderr
    );

    let wrong: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| match *k {
            "INTEGRATION_APP_WORKSPACE_SECRET" => (*k, "not the secret"),
            _ => (*k, *v),
        })
        .collect();
    let run = app.cli_env(&["check"], &wrong).await;
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr.contains("asking Integration.app"),
        "{}",
        run.stderr
    );
}
