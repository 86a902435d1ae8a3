//! A unique key that is freed can be used again: an email of a deleted
//! contact, an email moved to another address, a CRM account moved to
//! another customer. `scripts/test.sh` runs this file on every MongoDB
//! server the scripts may start (secantusd-rs kept a changed key in its
//! unique indexes for ever; MongoDB and the Python server free it).

mod common;

use std::time::Duration;

use common::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn an_email_freed_by_a_deletion_or_a_move_can_be_used_again() {
    let app = TestApp::spawn().await;

    // deleted, then created again with the same email
    let first = app.create_ok("again@example.com").await;
    let (status, body) = app
        .call(Method::DELETE, &format!("/api/contacts/{first}"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app.create(json!({ "email": "again@example.com" })).await;
    assert_eq!(status, 202, "the freed email is free: {body}");
    let (status, body) = app.create(json!({ "email": "again@example.com" })).await;
    assert_eq!(status, 409, "but only once: {body}");

    // moved to another address, then given to a new contact
    let alice = app.create_ok("a@example.com").await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{alice}"),
            Some(json!({ "email": "b@example.com" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app.create(json!({ "email": "a@example.com" })).await;
    assert_eq!(status, 202, "the old address is free: {body}");
    let (status, body) = app.create(json!({ "email": "b@example.com" })).await;
    assert_eq!(status, 409, "the new one is Alice's: {body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{alice}"),
            Some(json!({ "email": "a@example.com" })),
        )
        .await;
    assert_eq!(status, 409, "Alice cannot take it back: {body}");
    // A patch naming the address she holds keeps it.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/contacts/{alice}"),
            Some(json!({ "email": "b@example.com", "firstName": "Alice" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // Everything syncs: one record per live contact in each CRM.
    app.settle(Duration::from_secs(30)).await;
    let live = app.contacts().await.len();
    assert_eq!(live, 3, "again@, a@ (new), b@ (Alice)");
}

#[tokio::test]
async fn a_crm_account_moved_to_another_customer() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "old-owner", "name": "Old",
                "connections": { "hubspot": { "accountId": "9001" } } })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let new_owner = json!({ "id": "new-owner", "name": "New",
        "connections": { "hubspot": { "accountId": "9001" } } });
    let (status, body) = app
        .call(Method::POST, "/api/customers", Some(new_owner.clone()))
        .await;
    assert_eq!(status, 409, "the portal is taken: {body}");

    // the portal moves: the old owner lets it go, the new one takes it
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/old-owner/connections/hubspot",
            Some(json!({ "accountId": "9002" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(Method::POST, "/api/customers", Some(new_owner))
        .await;
    assert_eq!(status, 201, "the freed portal is free: {body}");
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/old-owner/connections/hubspot",
            Some(json!({ "accountId": "9001" })),
        )
        .await;
    assert_eq!(status, 409, "and the new owner's now: {body}");
    // forgetting an account frees it too
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/customers/old-owner/connections/hubspot",
            Some(json!({ "accountId": null })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/customers",
            Some(json!({ "id": "third", "name": "Third",
                "connections": { "hubspot": { "accountId": "9002" } } })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_claim_left_by_a_crash_is_taken_over_once_stale() {
    use contact_sync::domain::{CustomerId, Email};
    use contact_sync::store::{NewContact, Store};
    let app = TestApp::spawn().await;
    let store = Store::connect(&common::mongodb_uri(), &app.db)
        .await
        .expect("store");
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    let claims = client
        .database(&app.db)
        .collection::<bson::Document>("claims");
    let customer = CustomerId::default_customer();
    // What a process killed between the claim and the contact leaves: a
    // claim nobody holds. While young it may be a write in flight...
    let now = bson::DateTime::now().timestamp_millis();
    claims
        .insert_one(bson::doc! {
            "_id": format!("email:{customer}:young@example.com"),
            "owner": bson::oid::ObjectId::new().to_hex(),
            "at": bson::DateTime::from_millis(now),
        })
        .await
        .expect("claim");
    claims
        .insert_one(bson::doc! {
            "_id": format!("email:{customer}:old@example.com"),
            "owner": bson::oid::ObjectId::new().to_hex(),
            "at": bson::DateTime::from_millis(now - 120_000),
        })
        .await
        .expect("claim");
    let new = |email: &str| NewContact {
        customer_id: customer.clone(),
        first_name: None,
        last_name: None,
        email: Email::parse(email).unwrap(),
        phone: None,
        company_name: None,
        job_title: None,
        outbox: None,
    };
    assert!(
        store
            .insert_contact(new("young@example.com"))
            .await
            .is_err(),
        "a young claim is respected"
    );
    // ... once old, it is taken over.
    store
        .insert_contact(new("old@example.com"))
        .await
        .expect("a stale claim is taken over");
    assert!(
        store.insert_contact(new("old@example.com")).await.is_err(),
        "and the email is unique again"
    );
}
