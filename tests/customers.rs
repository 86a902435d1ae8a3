//! Many customers: each with its own CRM connections. Operators manage them
//! through `/api/customers`; a contact syncs only with its customer's
//! enabled connections.

mod common;

use std::time::Duration;

use common::{eventually, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn customer(app: &TestApp, body: Value) -> Value {
    let (status, created) = app
        .call(Method::POST, "/api/customers", Some(body.clone()))
        .await;
    assert_eq!(status, 201, "create customer {body}: {created}");
    created
}

fn connection<'a>(c: &'a Value, provider: &str) -> Option<&'a Value> {
    c["connections"]
        .as_array()?
        .iter()
        .find(|x| x["provider"] == provider)
}

#[tokio::test]
async fn customers_are_managed_and_their_contacts_sync_only_with_their_connections() {
    let app = TestApp::spawn().await;

    // The default customer exists from the start, connected to both CRMs.
    let (status, list) = app.call(Method::GET, "/api/customers", None).await;
    assert_eq!(status, 200, "{list}");
    let default = &list.as_array().expect("a list")[0];
    assert_eq!(default["id"], "contact-sync", "{list}");
    assert_eq!(default["default"], true);
    for p in ["hubspot", "pipedrive"] {
        assert_eq!(connection(default, p).expect(p)["enabled"], true, "{list}");
    }

    let b = customer(
        &app,
        json!({ "id": "cust-b", "name": "B Ltd", "connections": { "hubspot": { "accountId": "70002" } } }),
    )
    .await;
    assert_eq!(connection(&b, "hubspot").unwrap()["accountId"], "70002");
    assert!(connection(&b, "pipedrive").is_none(), "{b}");

    // Bad input is refused with a JSON error naming the problem.
    let bad: Vec<(Method, &str, Option<Value>, u16, &str)> = vec![
        (
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "cust-b", "name": "again" })),
            409,
            "duplicate id",
        ),
        (
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "no spaces", "name": "x" })),
            400,
            "invalid id",
        ),
        (
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "", "name": "x" })),
            400,
            "empty id",
        ),
        (
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "c9", "name": "  " })),
            400,
            "blank name",
        ),
        (
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "c9", "name": "x", "connections": { "salesforce": {} } })),
            400,
            "unknown provider",
        ),
        (
            Method::POST,
            "/api/customers",
            Some(
                json!({ "id": "c9", "name": "x", "connections": { "hubspot": { "accountId": "70002" } } }),
            ),
            409,
            "portal of another customer",
        ),
        (
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "c9", "name": "x", "extra": 1 })),
            400,
            "unknown field",
        ),
        (
            Method::GET,
            "/api/customers/nobody",
            None,
            404,
            "unknown customer",
        ),
        (
            Method::PUT,
            "/api/customers/nobody/connections/hubspot",
            Some(json!({ "enabled": true })),
            404,
            "connection of an unknown customer",
        ),
        (
            Method::PUT,
            "/api/customers/cust-b/connections/salesforce",
            Some(json!({ "enabled": true })),
            404,
            "unknown provider",
        ),
        (
            Method::PUT,
            "/api/customers/cust-b/connections/hubspot",
            Some(json!({ "accountId": "a b" })),
            400,
            "malformed account",
        ),
        (
            Method::POST,
            "/api/contacts",
            Some(json!({ "email": "x@example.com", "customerId": "nobody" })),
            400,
            "contact of an unknown customer",
        ),
        (
            Method::POST,
            "/api/contacts",
            Some(json!({ "email": "x@example.com", "customerId": "a b" })),
            400,
            "malformed customer",
        ),
        (
            Method::GET,
            "/api/contacts?customerId=a%20b",
            None,
            400,
            "malformed customer filter",
        ),
    ];
    for (method, path, body, want, why) in bad {
        let (status, json) = app.call(method.clone(), path, body).await;
        assert_eq!(status, want, "{why}: {method} {path} → {json}");
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{why}: JSON error body: {json}"
        );
    }

    // B has HubSpot only: its contact gets one job and one link.
    let (status, body) = app
        .create(json!({ "email": "same@example.com", "firstName": "Bea", "customerId": "cust-b" }))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["contact"]["customerId"], "cust-b");
    let jobs: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["provider"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["hubspot"], "{body}");
    let b_contact = body["contact"]["id"].as_str().unwrap().to_owned();

    // The same email is a different contact of the default customer.
    let (status, body) = app
        .create(json!({ "email": "same@example.com", "firstName": "Dee" }))
        .await;
    assert_eq!(status, 202, "an email is unique per customer only: {body}");
    assert_eq!(body["contact"]["customerId"], "contact-sync");
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2, "{body}");

    let b_link = app
        .wait_link(&b_contact, "hubspot", "synced", Duration::from_secs(20))
        .await;
    assert!(b_link["externalId"].is_string(), "{b_link}");
    let (_, b_view) = app.contact(&b_contact).await;
    assert_eq!(b_view["links"].as_array().unwrap().len(), 1, "{b_view}");
    // ... and its connection's health shows it
    let (status, b) = app.call(Method::GET, "/api/customers/cust-b", None).await;
    assert_eq!(status, 200, "{b}");
    let hub = connection(&b, "hubspot").unwrap();
    assert_eq!(
        (
            &hub["linksSynced"],
            &hub["linksPending"],
            &hub["linksError"]
        ),
        (&json!(1), &json!(0), &json!(0)),
        "{b}"
    );

    // Listing by customer shows only that customer's contacts.
    let (status, page) = app
        .call(Method::GET, "/api/contacts?customerId=cust-b", None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["firstName"], "Bea");

    // A disabled connection gets no new jobs; an update of B's contact
    // then queues nothing.
    let (status, b) = app
        .call(
            Method::PUT,
            "/api/customers/cust-b/connections/hubspot",
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let hub = connection(&b, "hubspot").unwrap();
    assert_eq!(hub["enabled"], false, "{b}");
    assert_eq!(
        hub["accountId"], "70002",
        "an absent accountId is kept: {b}"
    );
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{b_contact}"),
            Some(json!({ "lastName": "Later" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["jobs"], json!([]), "{body}");
    // ... and the outbox relay does not push it later either.
    let calls_before = app.calls("hubspot", "update-contact").await.len();
    // Absence cannot be polled for: wait past the relay's minimum age (2 s)
    // and one round (1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, c) = app.contact(&b_contact).await;
    assert_eq!(
        c["links"][0]["syncStatus"], "synced",
        "no pending link: {c}"
    );
    assert_eq!(
        app.calls("hubspot", "update-contact").await.len(),
        calls_before,
        "nothing pushed to a disabled connection"
    );
}

/// The emails of a customer's records in one of its CRM accounts, sorted.
async fn emails(app: &TestApp, customer: &str, connection: &str) -> Vec<String> {
    let records = app
        .sim_get(&format!("/{connection}/records?customer={customer}"))
        .await;
    let mut out: Vec<String> = records
        .as_array()
        .unwrap_or_else(|| panic!("records of {customer} in {connection}: {records}"))
        .iter()
        .filter_map(|r| common::record_email(connection, r))
        .collect();
    out.sort();
    out
}

/// The id of the customer's record with `email` in one of its CRM accounts.
async fn record_id(app: &TestApp, customer: &str, connection: &str, email: &str) -> String {
    let records = app
        .sim_get(&format!("/{connection}/records?customer={customer}"))
        .await;
    let r = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| common::record_email(connection, r).as_deref() == Some(email))
        .unwrap_or_else(|| panic!("{email} in {customer}'s {connection}: {records}"));
    match &r["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A customer's contact with `email`, as the api shows it.
async fn contact_of(app: &TestApp, customer: &str, email: &str) -> Value {
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/api/contacts?customerId={customer}&perPage=200"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["email"] == email)
        .cloned()
        .unwrap_or_else(|| panic!("{customer} has {email}: {page}"))
}

#[tokio::test]
async fn three_customers_each_sync_only_with_their_own_crm_accounts() {
    let app = TestApp::spawn().await;
    // Every portal is someone's: webhooks of other portals are ignored.
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/contact-sync/connections/hubspot",
            Some(json!({ "accountId": "62515" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A: HubSpot + Pipedrive, B: HubSpot only, C: Pipedrive only; each on
    // its own simulated account.
    app.customers_on_own_accounts(
        &[
            ("cust-a", "cust-a"),
            ("cust-b", "cust-b"),
            ("cust-c", "cust-c"),
        ],
        &[
            ("cust-a", "hubspot", 71001),
            ("cust-a", "pipedrive", 81001),
            ("cust-b", "hubspot", 71002),
            ("cust-c", "pipedrive", 81003),
        ],
    )
    .await;

    // Writes: the same email at every customer, and one of each's own.
    let mut ids = Vec::new();
    for (customer, name) in [("cust-a", "Ann"), ("cust-b", "Bea"), ("cust-c", "Cid")] {
        for email in [
            "shared@example.com".to_owned(),
            format!("only-{customer}@example.com"),
        ] {
            let (status, body) = app
                .create(json!({ "email": email, "firstName": name, "lastName": "Shared", "customerId": customer }))
                .await;
            assert_eq!(status, 202, "{body}");
            ids.push(body["contact"]["id"].as_str().unwrap().to_owned());
        }
    }
    eventually(Duration::from_secs(30), "every link synced", || async {
        for id in &ids {
            let (_, c) = app.contact(id).await;
            let links = c["links"].as_array()?;
            if links.is_empty() || links.iter().any(|l| l["syncStatus"] != "synced") {
                return None;
            }
        }
        Some(())
    })
    .await;
    let want = |c: &str| {
        vec![
            "only-".to_owned() + c + "@example.com",
            "shared@example.com".into(),
        ]
    };
    assert_eq!(emails(&app, "cust-a", "hubspot").await, want("cust-a"));
    assert_eq!(emails(&app, "cust-a", "pipedrive").await, want("cust-a"));
    assert_eq!(emails(&app, "cust-b", "hubspot").await, want("cust-b"));
    assert_eq!(
        emails(&app, "cust-b", "pipedrive").await,
        Vec::<String>::new()
    );
    assert_eq!(
        emails(&app, "cust-c", "hubspot").await,
        Vec::<String>::new()
    );
    assert_eq!(emails(&app, "cust-c", "pipedrive").await, want("cust-c"));
    assert_eq!(
        emails(&app, "contact-sync", "hubspot").await,
        Vec::<String>::new()
    );
    assert_eq!(
        emails(&app, "contact-sync", "pipedrive").await,
        Vec::<String>::new()
    );
    for (customer, links) in [("cust-a", 2), ("cust-b", 1), ("cust-c", 1)] {
        let c = contact_of(&app, customer, "shared@example.com").await;
        assert_eq!(c["links"].as_array().unwrap().len(), links, "{c}");
    }

    // A CRM edit in B's portal reaches B's contact by webhook, and no one else's.
    let b_rec = record_id(&app, "cust-b", "hubspot", "shared@example.com").await;
    let (status, body) = app
        .sim_send(
            Method::PATCH,
            &format!("/hubspot/records/{b_rec}?customer=cust-b"),
            Some(json!({ "properties": { "firstname": "Bea-edited" } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "B's edit applied", || async {
        (contact_of(&app, "cust-b", "shared@example.com").await["firstName"] == "Bea-edited")
            .then_some(())
    })
    .await;

    // A Pipedrive edit at C arrives as a flow event carrying C's token.
    let c_rec = record_id(&app, "cust-c", "pipedrive", "shared@example.com").await;
    let (status, body) = app
        .sim_send(
            Method::PATCH,
            &format!("/pipedrive/records/{c_rec}?customer=cust-c"),
            Some(json!({ "last_name": "Flowed" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "C's edit applied", || async {
        (contact_of(&app, "cust-c", "shared@example.com").await["lastName"] == "Flowed")
            .then_some(())
    })
    .await;

    // A poll of A's Pipedrive connection (deliveries held) finds A's edit.
    let (status, _) = app.sim_send(Method::PUT, "/webhooks/pause", None).await;
    assert_eq!(status, 200);
    let a_rec = record_id(&app, "cust-a", "pipedrive", "only-cust-a@example.com").await;
    app.sim_send(
        Method::PATCH,
        &format!("/pipedrive/records/{a_rec}?customer=cust-a"),
        Some(json!({ "last_name": "Polled" })),
    )
    .await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/providers/pipedrive/poll?customerId=cust-a",
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/providers/pipedrive/poll?customerId=cust-b",
            None,
        )
        .await;
    assert_eq!(status, 404, "B has no Pipedrive connection: {body}");
    eventually(Duration::from_secs(20), "A's edit polled", || async {
        (contact_of(&app, "cust-a", "only-cust-a@example.com").await["lastName"] == "Polled")
            .then_some(())
    })
    .await;
    // ... and then pushed to A's HubSpot, not to anyone else's.
    eventually(Duration::from_secs(20), "A's HubSpot updated", || async {
        let id = record_id(&app, "cust-a", "hubspot", "only-cust-a@example.com").await;
        let r = app
            .sim_get(&format!("/hubspot/records/{id}?customer=cust-a"))
            .await;
        (r["properties"]["lastname"] == "Polled").then_some(())
    })
    .await;

    // Nothing crossed over: the others' shared contacts are as written.
    assert_eq!(
        contact_of(&app, "cust-a", "shared@example.com").await["firstName"],
        "Ann"
    );
    assert_eq!(
        contact_of(&app, "cust-a", "shared@example.com").await["lastName"],
        "Shared"
    );
    assert_eq!(
        contact_of(&app, "cust-b", "shared@example.com").await["lastName"],
        "Shared"
    );
    assert_eq!(
        contact_of(&app, "cust-c", "shared@example.com").await["firstName"],
        "Cid"
    );
    let a_hs = record_id(&app, "cust-a", "hubspot", "shared@example.com").await;
    let r = app
        .sim_get(&format!("/hubspot/records/{a_hs}?customer=cust-a"))
        .await;
    assert_eq!(r["properties"]["firstname"], "Ann", "{r}");

    // A webhook from a portal no customer connected: 200, and ignored.
    let mut event = common::hs_event(7, "contact.propertyChange", &b_rec, "CRM_UI");
    event["portalId"] = json!(99999);
    let (status, body) = app.hubspot_webhook(&json!([event])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], 0, "{body}");
}

/// A call with another bearer token than the operator's.
async fn call_as(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.api))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("api reachable");
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn a_customer_token_sees_and_changes_only_its_own_customers_contacts() {
    let app = TestApp::with(common::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    for id in ["cust-a", "cust-b"] {
        customer(
            &app,
            json!({ "id": id, "name": id, "connections": { "hubspot": {} } }),
        )
        .await;
    }
    let (status, body) = app
        .create(json!({ "email": "b@example.com", "customerId": "cust-b" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let b_id = body["contact"]["id"].as_str().unwrap().to_owned();

    let (status, minted) = app
        .call(Method::POST, "/api/customers/cust-a/tokens", None)
        .await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["customerId"], "cust-a");
    let token = minted["token"].as_str().unwrap().to_owned();

    // Its own customer's contacts: created, read, listed, changed.
    let (status, body) = call_as(
        &app,
        &token,
        Method::POST,
        "/api/contacts",
        Some(json!({ "email": "a@example.com" })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["contact"]["customerId"], "cust-a");
    let a_id = body["contact"]["id"].as_str().unwrap().to_owned();
    let (status, page) = call_as(&app, &token, Method::GET, "/api/contacts", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1, "only its own: {page}");
    assert_eq!(page["items"][0]["email"], "a@example.com");
    let own = format!("/api/contacts/{a_id}");
    assert_eq!(call_as(&app, &token, Method::GET, &own, None).await.0, 200);
    let (status, body) = call_as(
        &app,
        &token,
        Method::PATCH,
        &own,
        Some(json!({ "lastName": "Own" })),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // Another customer's: not found, or forbidden where it names the customer.
    let other = format!("/api/contacts/{b_id}");
    let refused: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::GET,
            other.clone(),
            None,
            404,
            "read another's contact",
        ),
        (
            Method::PATCH,
            other.clone(),
            Some(json!({ "lastName": "Stolen" })),
            404,
            "change another's contact",
        ),
        (
            Method::DELETE,
            other.clone(),
            None,
            404,
            "delete another's contact",
        ),
        (
            Method::GET,
            format!("{other}/sync-logs"),
            None,
            404,
            "another's sync log",
        ),
        (
            Method::POST,
            "/api/contacts".into(),
            Some(json!({ "email": "x@example.com", "customerId": "cust-b" })),
            403,
            "create for another",
        ),
        (
            Method::GET,
            "/api/contacts?customerId=cust-b".into(),
            None,
            403,
            "list another's",
        ),
        (
            Method::GET,
            "/api/customers".into(),
            None,
            403,
            "operator reads",
        ),
        (
            Method::POST,
            "/api/customers/cust-a/tokens".into(),
            None,
            403,
            "mint tokens",
        ),
        (Method::GET, "/api/queues".into(), None, 403, "queues"),
        (
            Method::GET,
            "/api/links?status=error".into(),
            None,
            403,
            "links",
        ),
    ];
    for (method, path, body, want, why) in refused {
        let (status, json) = call_as(&app, &token, method.clone(), &path, body).await;
        assert_eq!(status, want, "{why}: {method} {path} → {json}");
        assert!(json["error"].is_string(), "{why}: JSON error: {json}");
    }
    // B's contact is as it was.
    let (status, b) = app.contact(&b_id).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["version"], 1, "{b}");
    assert!(b["lastName"].is_null(), "{b}");
    // A made-up customer token is no token at all.
    let (status, _) = call_as(&app, "cst_00", Method::GET, "/api/contacts", None).await;
    assert_eq!(status, 401);

    // Revoked: refused within the api's cache lifetime.
    let (status, _) = app
        .call(Method::DELETE, "/api/customers/cust-a/tokens", None)
        .await;
    assert_eq!(status, 204);
    eventually(
        Duration::from_secs(10),
        "the revoked token refused",
        || async {
            let (status, _) = call_as(&app, &token, Method::GET, "/api/contacts", None).await;
            (status == 401).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn data_from_before_customers_belongs_to_the_default_customer_and_keeps_syncing() {
    use bson::{doc, oid::ObjectId, DateTime};
    // What an older version left in its database: a contact and its
    // HubSpot link without a customer, a Pipedrive cursor named by the
    // provider alone, and the unique indexes of that time.
    let db_name = format!("t_upgrade_{}", uuid::Uuid::new_v4().simple());
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("mongodb");
    let db = client.database(&db_name);
    let contacts = db.collection::<bson::Document>("contacts");
    let links = db.collection::<bson::Document>("contact_links");
    let old_index = |keys, name: &str| {
        mongodb::IndexModel::builder()
            .keys(keys)
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .sparse(true)
                    .name(name.to_owned())
                    .build(),
            )
            .build()
    };
    contacts
        .create_index(old_index(doc! { "activeEmail": 1 }, "active_email_unique"))
        .await
        .unwrap();
    links
        .create_index(old_index(
            doc! { "provider": 1, "externalId": 1 },
            "provider_external_unique",
        ))
        .await
        .unwrap();
    let oid = ObjectId::new();
    let now = DateTime::now();
    contacts
        .insert_one(doc! {
            "_id": oid, "firstName": "Old", "lastName": "Timer", "email": "old@example.com",
            "activeEmail": "old@example.com", "version": 1_i64, "createdAt": now, "updatedAt": now,
        })
        .await
        .unwrap();
    // HubSpot hands out 100001 first: the record created below.
    links
        .insert_one(doc! {
            "_id": format!("{}:hubspot", oid.to_hex()), "contactId": oid, "provider": "hubspot",
            "externalId": "100001", "syncStatus": "synced", "attempts": 0_i64,
            "pendingVersion": 1_i64, "syncedVersion": 1_i64, "crmUpdatedMs": 0_i64,
            "updatedAt": now,
        })
        .await
        .unwrap();
    db.collection::<bson::Document>("sync_cursors")
        .insert_one(doc! { "_id": "pipedrive", "sinceMs": 12_345_i64, "boundaryIds": [] })
        .await
        .unwrap();

    let app = TestApp::with(common::Options::default().env("MONGODB_DB", &db_name)).await;
    let id = oid.to_hex();

    // The contact is the default customer's, and its cursor moved with it.
    let c = contact_of(&app, "contact-sync", "old@example.com").await;
    assert_eq!(c["id"], id.as_str(), "{c}");
    let (status, conns) = app.call(Method::GET, "/api/connections", None).await;
    assert_eq!(status, 200, "{conns}");
    let pd = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "pipedrive")
        .unwrap();
    assert!(
        pd["pollCursor"]
            .as_str()
            .is_some_and(|t| t.starts_with("1970-01-01T00:00:12.345")),
        "the old cursor is the default customer's: {pd}"
    );

    // A CRM edit of its linked record reaches it.
    let (status, rec) = app
        .sim_send(
            Method::POST,
            "/hubspot/records",
            Some(json!({ "properties": { "email": "old@example.com", "firstname": "Old", "lastname": "Timer" } })),
        )
        .await;
    assert!(status == 200 || status == 201, "{rec}");
    assert_eq!(rec["id"], "100001", "{rec}");
    app.sim_send(
        Method::PATCH,
        "/hubspot/records/100001",
        Some(json!({ "properties": { "firstname": "Edited in HubSpot" } })),
    )
    .await;
    eventually(Duration::from_secs(20), "the CRM edit applied", || async {
        let (_, c) = app.contact(&id).await;
        (c["firstName"] == "Edited in HubSpot").then_some(())
    })
    .await;

    // An app edit reaches both CRMs of the default customer.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{id}"),
            Some(json!({ "lastName": "Upgraded" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    for p in ["hubspot", "pipedrive"] {
        app.wait_link(&id, p, "synced", Duration::from_secs(20))
            .await;
    }
    assert_eq!(
        emails(&app, "contact-sync", "pipedrive").await,
        ["old@example.com"]
    );
    let r = app.sim_get("/hubspot/records/100001").await;
    assert_eq!(r["properties"]["lastname"], "Upgraded", "{r}");

    // Its email is still unique among the default customer's contacts.
    let (status, body) = app.create(json!({ "email": "old@example.com" })).await;
    assert_eq!(status, 409, "{body}");
    drop(app);
    let _ = db.drop().await;
}

#[tokio::test]
async fn a_customer_held_back_by_its_rate_budget_leaves_the_workers_to_others() {
    // Two job slots in the whole pool, two HubSpot calls a second per
    // connection. A's 30 new contacts need 60 calls: half a minute of A's
    // budget. Slots that slept through A's budget would keep B waiting as
    // long; deferred A jobs give them back.
    let app = TestApp::with(
        common::Options::default()
            .env("WORKER_CONCURRENCY", 2)
            .env("RATE_LIMIT_HUBSPOT", 2),
    )
    .await;
    for id in ["cust-a", "cust-b"] {
        customer(
            &app,
            json!({ "id": id, "name": id, "connections": { "hubspot": {} } }),
        )
        .await;
    }
    let mut a_ids = Vec::new();
    for i in 0..30 {
        let (status, body) = app
            .create(json!({ "email": format!("a{i}@example.com"), "customerId": "cust-a" }))
            .await;
        assert_eq!(status, 202, "{body}");
        a_ids.push(body["contact"]["id"].as_str().unwrap().to_owned());
    }
    let started = std::time::Instant::now();
    let (status, body) = app
        .create(json!({ "email": "b@example.com", "customerId": "cust-b" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let b_id = body["contact"]["id"].as_str().unwrap().to_owned();
    app.wait_link(&b_id, "hubspot", "synced", Duration::from_secs(8))
        .await;
    let took = started.elapsed();
    let mut a_synced = 0;
    for id in &a_ids {
        if app.link(id, "hubspot").await.unwrap()["syncStatus"] == "synced" {
            a_synced += 1;
        }
    }
    eprintln!("B synced in {took:?} while {a_synced} of A's 30 were");
    assert!(
        a_synced < 30,
        "A's backlog was still draining ({a_synced} of 30 synced)"
    );
    // A's deferred jobs used no attempt: none is dead, every one comes through.
    let (_, dead) = app
        .call(
            Method::GET,
            "/api/queues/outbound-upsert/jobs?state=dead",
            None,
        )
        .await;
    assert_eq!(dead, json!([]), "{dead}");
}

#[tokio::test]
async fn one_customers_backlog_does_not_hold_back_another_customers_edit() {
    // No worker while A's backlog is queued: 150 contacts, 300 pushes.
    let mut app = TestApp::with(
        common::Options {
            workers: 0,
            ..Default::default()
        }
        .env("WORKER_CONCURRENCY", 2),
    )
    .await;
    for id in ["cust-a", "cust-b"] {
        customer(
            &app,
            json!({ "id": id, "name": id, "connections": { "hubspot": {}, "pipedrive": {} } }),
        )
        .await;
    }
    let body: Vec<Value> = (0..150)
        .map(|i| json!({ "email": format!("a{i}@example.com"), "customerId": "cust-a" }))
        .collect();
    let mut a_ids = Vec::new();
    for b in body {
        let (status, r) = app.create(b).await;
        assert_eq!(status, 202, "{r}");
        a_ids.push(r["contact"]["id"].as_str().unwrap().to_owned());
    }
    let (status, r) = app
        .create(json!({ "email": "b@example.com", "customerId": "cust-b" }))
        .await;
    assert_eq!(status, 202, "{r}");
    let b_id = r["contact"]["id"].as_str().unwrap().to_owned();
    let counts = app.queue().await.counts("outbound-upsert").await.unwrap();
    assert_eq!(counts.pending, 302, "{counts:?}");

    // B's pushes were queued last, but take their turn at once.
    app.add_worker();
    for p in ["hubspot", "pipedrive"] {
        app.wait_link(&b_id, p, "synced", Duration::from_secs(20))
            .await;
    }
    let left = app.queue().await.counts("outbound-upsert").await.unwrap();
    eprintln!(
        "B synced with {} of A's 300 pushes still queued",
        left.pending
    );
    assert!(
        left.pending > 150,
        "B did not wait for A's backlog: {} of 300 still queued",
        left.pending
    );
    app.wait_links(
        &a_ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "synced",
        Duration::from_secs(120),
    )
    .await;
}

#[tokio::test]
async fn a_connection_s_own_rate_limit_overrides_the_providers_default() {
    let app = TestApp::spawn().await;
    customer(
        &app,
        json!({ "id": "slow", "name": "slow", "connections": { "hubspot": { "rateLimit": 2 } } }),
    )
    .await;
    let fast = customer(
        &app,
        json!({ "id": "fast", "name": "fast", "connections": { "hubspot": {} } }),
    )
    .await;
    assert!(connection(&fast, "hubspot").unwrap()["rateLimit"].is_null());
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/slow/connections/hubspot",
            Some(json!({ "rateLimit": 0 })),
        )
        .await;
    assert_eq!(status, 400, "a limit of 0 is refused: {body}");
    let mut ids = Vec::new();
    for c in ["slow", "fast"] {
        for i in 0..4 {
            let (status, body) = app
                .create(json!({ "email": format!("{c}{i}@example.com"), "customerId": c }))
                .await;
            assert_eq!(status, 202, "{body}");
            ids.push(body["contact"]["id"].as_str().unwrap().to_owned());
        }
    }
    for id in &ids {
        app.wait_link(id, "hubspot", "synced", Duration::from_secs(30))
            .await;
    }
    // The calls each account saw: at most 2 in any second for "slow" (its
    // own limit, as the CRM counts arrivals), all at once for "fast" (the
    // test default, 1,000/s).
    let busiest = |calls: Vec<Value>| {
        let mut at: Vec<i64> = calls.iter().filter_map(|c| c["atMs"].as_i64()).collect();
        at.sort_unstable();
        (0..at.len())
            .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1000).count())
            .max()
            .unwrap_or(0)
    };
    let slow = app.sim_get("/calls?connection=hubspot&customer=slow").await;
    let fast = app.sim_get("/calls?connection=hubspot&customer=fast").await;
    let (slow, fast) = (
        slow.as_array().cloned().unwrap_or_default(),
        fast.as_array().cloned().unwrap_or_default(),
    );
    assert_eq!(slow.len(), 8, "find + upsert per contact: {slow:?}");
    assert!(busiest(slow.clone()) <= 2, "slow's calls: {slow:?}");
    assert!(
        busiest(fast.clone()) > 2,
        "fast's calls were not held back: {fast:?}"
    );
}

#[tokio::test]
async fn a_connection_s_health_and_each_queue_s_last_hour_show_failures() {
    let app = TestApp::spawn().await;
    app.set_faults(json!({ "failRecords": ["bad@example.com"] }))
        .await;
    let good = app.create_ok("good@example.com").await;
    let bad = app.create_ok("bad@example.com").await;
    for p in ["hubspot", "pipedrive"] {
        app.wait_link(&good, p, "synced", Duration::from_secs(10))
            .await;
        app.wait_link(&bad, p, "error", Duration::from_secs(20))
            .await;
    }

    // the connection: one push synced, one failed for good
    let (status, c) = app
        .call(Method::GET, "/api/customers/contact-sync", None)
        .await;
    assert_eq!(status, 200, "{c}");
    let hubspot = connection(&c, "hubspot").expect("a HubSpot connection");
    assert_eq!(hubspot["health"], "failing", "{hubspot}");
    assert_eq!(hubspot["linksError"], 1, "{hubspot}");
    assert_eq!(hubspot["linksSynced"], 1, "{hubspot}");
    assert!(hubspot["lastSuccessAt"].is_string(), "{hubspot}");
    assert!(hubspot["syncs1h"].as_u64() >= Some(2), "{hubspot}");
    let rate = hubspot["errorRate1h"].as_f64().unwrap_or_default();
    assert!((0.5..1.0).contains(&rate), "{hubspot}");
    assert!(hubspot["rateLimitInEffect"].as_u64() > Some(0), "{hubspot}");

    // a disabled connection says so, whatever its history
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/contact-sync/connections/pipedrive",
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, c) = app
        .call(Method::GET, "/api/customers/contact-sync", None)
        .await;
    assert_eq!(connection(&c, "pipedrive").unwrap()["health"], "disabled");

    // the outbound queue's last hour, minute by minute
    let (status, history) = app.call(Method::GET, "/api/queues/history", None).await;
    assert_eq!(status, 200, "{history}");
    let outbound = history
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "outbound-upsert")
        .unwrap_or_else(|| panic!("outbound-upsert in {history}"));
    let minutes = outbound["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60, "one entry per minute: {outbound}");
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        sum("completed"),
        2,
        "the good contact's two pushes: {outbound}"
    );
    assert_eq!(
        sum("failed"),
        6,
        "three failed attempts per CRM for the bad one: {outbound}"
    );
    let (status, five) = app
        .call(Method::GET, "/api/queues/history?minutes=5", None)
        .await;
    assert_eq!(status, 200, "{five}");
    assert_eq!(five[0]["minutes"].as_array().map(Vec::len), Some(5));
    for bad_minutes in ["0", "61", "x"] {
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/api/queues/history?minutes={bad_minutes}"),
                None,
            )
            .await;
        assert_eq!(status, 400, "minutes={bad_minutes}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("minutes"),
            "the error names the parameter: {body}"
        );
    }
}

/// `GET /api/contacts?status=` pages through the customer's own contacts
/// with such a link, however many links other customers have.
#[tokio::test]
async fn a_status_filter_pages_through_one_customers_contacts_only() {
    let app = TestApp::spawn().await;
    app.customers_on_own_accounts(
        &[("mine", "Mine")],
        &[("mine", "hubspot", 8101), ("mine", "pipedrive", 8102)],
    )
    .await;
    // Another customer's links in error, more than any sample would hold,
    // written before this customer's.
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    let links = client
        .database(&app.db)
        .collection::<bson::Document>("contact_links");
    let others: Vec<bson::Document> = (0..10_050)
        .map(|i| {
            let contact = bson::oid::ObjectId::new();
            bson::doc! {
                "_id": format!("{}:hubspot", contact.to_hex()),
                "contactId": contact,
                "customerId": "someone-else",
                "provider": "hubspot",
                "syncStatus": "error",
                "externalId": format!("x{i}"),
            }
        })
        .collect();
    links.insert_many(others).await.expect("other links");

    app.set_faults(
        json!({ "rejectRecords": ["bad1@example.com", "bad2@example.com", "bad3@example.com"] }),
    )
    .await;
    let mut mine = Vec::new();
    for email in [
        "bad1@example.com",
        "bad2@example.com",
        "bad3@example.com",
        "good@example.com",
    ] {
        let (status, body) = app
            .create(json!({ "email": email, "customerId": "mine" }))
            .await;
        assert_eq!(status, 202, "{body}");
        mine.push(body["contact"]["id"].as_str().expect("id").to_owned());
    }
    for id in &mine[..3] {
        app.wait_link(id, "hubspot", "error", Duration::from_secs(20))
            .await;
    }
    let page = |n: u32| {
        let app = &app;
        async move {
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/api/contacts?status=error&customerId=mine&perPage=2&page={n}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let first = page(1).await;
    assert_eq!(first["total"], 3, "{first}");
    let second = page(2).await;
    let mut seen: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|p| p["items"].as_array().cloned().unwrap_or_default())
        .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    seen.sort();
    let mut want = mine[..3].to_vec();
    want.sort();
    assert_eq!(seen, want, "each of the three once, over two pages");
}
