//! The store's grouped link writes against the real MongoDB server: pushes
//! recorded at the same moment share one `update`, and each still lands on
//! its own link with its own values, or fails alone.

mod common;

use std::time::Duration;

use bson::doc;
use contact_sync::domain::{ContactId, CustomerId, Provider, SyncStatus, UniversalContact};
use contact_sync::store::{Store, StoreError};

/// Update statements the server has run so far (`serverStatus`).
async fn updates_so_far(client: &mongodb::Client) -> i64 {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .expect("serverStatus");
    let counters = status.get_document("opcounters").expect("opcounters");
    match counters.get("update") {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        other => panic!("opcounters.update is {other:?}"),
    }
}

fn fields(i: usize) -> UniversalContact {
    UniversalContact {
        first_name: Some(format!("First{i}")),
        primary_email: Some(format!("c{i}@example.com")),
        ..UniversalContact::default()
    }
}

/// A contact's pending HubSpot link, as the api creates it.
async fn pending_link(store: &Store, customer: &CustomerId, i: usize) -> ContactId {
    let contact = ContactId::new();
    let jobs = [(Provider::Hubspot, format!("job-{i}"))];
    store
        .insert_pending_links(contact, customer, &jobs, 1, &fields(i))
        .await
        .expect("links inserted");
    contact
}

/// Records a push of version 1 to `ext`.
async fn mark(
    store: &Store,
    customer: &CustomerId,
    contact: ContactId,
    i: usize,
    ext: String,
) -> Result<(), StoreError> {
    store
        .mark_synced(
            contact,
            customer,
            Provider::Hubspot,
            &ext,
            1,
            &format!("push-{i}"),
            Some(&fields(i)),
            Some(1_700_000_000_000 + i as i64),
        )
        .await
}

#[tokio::test]
async fn pushes_recorded_together_land_each_on_its_own_link() {
    let db = format!("store_{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&common::mongodb_uri(), &db)
        .await
        .expect("store");
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    let customer = CustomerId::default();

    // 70 pushes finishing at once: more than one statement's share.
    let mut contacts = Vec::new();
    for i in 0..70 {
        contacts.push(pending_link(&store, &customer, i).await);
    }
    let before = updates_so_far(&client).await;
    let marks = contacts
        .iter()
        .enumerate()
        .map(|(i, c)| mark(&store, &customer, *c, i, format!("ext-{i}")));
    for (i, res) in futures::future::join_all(marks)
        .await
        .into_iter()
        .enumerate()
    {
        res.unwrap_or_else(|e| panic!("push {i} not recorded: {e:?}"));
    }
    let statements = updates_so_far(&client).await - before;
    assert!(
        statements <= 10,
        "70 pushes recorded at once took {statements} update statements, expected them grouped"
    );
    for (i, c) in contacts.iter().enumerate() {
        let link = store
            .link(*c, Provider::Hubspot)
            .await
            .expect("read")
            .expect("link");
        assert_eq!(link.sync_status, SyncStatus::Synced, "link {i}");
        assert_eq!(
            link.external_id.as_deref(),
            Some(format!("ext-{i}").as_str())
        );
        assert_eq!(
            link.last_job_id.as_deref(),
            Some(format!("push-{i}").as_str())
        );
        assert_eq!(link.synced_version, 1, "link {i}");
        assert_eq!(link.synced_fields.as_ref(), Some(&fields(i)), "link {i}");
        assert_eq!(
            link.last_pushed_at.map(|t| t.timestamp_millis()),
            Some(1_700_000_000_000 + i as i64),
            "link {i}"
        );
        assert!(link.push_intent.is_none(), "link {i} keeps its intent");
    }
    let raw = client
        .database(&db)
        .collection::<bson::Document>("contact_links")
        .find_one(doc! { "__mark": { "$exists": true } })
        .await
        .expect("read");
    assert!(raw.is_none(), "a statement left its working field: {raw:?}");

    // At the same moment: a push whose link does not exist yet, one to a
    // record another contact is linked to, one overtaken by a newer change,
    // and two plain ones.
    let no_link = ContactId::new();
    let taken = pending_link(&store, &customer, 100).await;
    let overtaken = pending_link(&store, &customer, 101).await;
    store
        .mark_pending(
            overtaken,
            &customer,
            &[(Provider::Hubspot, "job-101-v2".into())],
            2,
        )
        .await
        .expect("newer change");
    let plain = [
        pending_link(&store, &customer, 102).await,
        pending_link(&store, &customer, 103).await,
    ];
    let (a, b, c, d, e) = tokio::join!(
        mark(&store, &customer, no_link, 99, "ext-99".into()),
        mark(&store, &customer, taken, 100, "ext-0".into()),
        mark(&store, &customer, overtaken, 101, "ext-101".into()),
        mark(&store, &customer, plain[0], 102, "ext-102".into()),
        mark(&store, &customer, plain[1], 103, "ext-103".into()),
    );
    a.expect("a push without a link creates it");
    assert!(
        matches!(b, Err(StoreError::Conflict(_))),
        "a record linked twice is a conflict: {b:?}"
    );
    c.expect("the overtaken push is recorded");
    d.expect("plain push");
    e.expect("plain push");
    let link = |c: ContactId| {
        let store = store.clone();
        async move {
            store
                .link(c, Provider::Hubspot)
                .await
                .expect("read")
                .expect("link")
        }
    };
    let created = link(no_link).await;
    assert_eq!(created.sync_status, SyncStatus::Synced);
    assert_eq!(created.external_id.as_deref(), Some("ext-99"));
    assert_eq!(created.contact_id, no_link);
    let refused = link(taken).await;
    assert_eq!(refused.sync_status, SyncStatus::Pending);
    assert_eq!(refused.external_id, None);
    let waiting = link(overtaken).await;
    assert_eq!(
        waiting.sync_status,
        SyncStatus::Pending,
        "version 2 still waits"
    );
    assert_eq!(waiting.synced_version, 1);
    assert_eq!(waiting.external_id.as_deref(), Some("ext-101"));
    for (i, c) in plain.into_iter().enumerate() {
        let l = link(c).await;
        assert_eq!(l.sync_status, SyncStatus::Synced);
        assert_eq!(
            l.external_id.as_deref(),
            Some(format!("ext-{}", 102 + i).as_str())
        );
    }
    let first = link(contacts[0]).await;
    assert_eq!(
        first.external_id.as_deref(),
        Some("ext-0"),
        "the refused push changed nothing else"
    );

    let _ = tokio::time::timeout(Duration::from_secs(5), client.database(&db).drop()).await;
}

#[tokio::test]
async fn the_status_indexes_are_replaced_and_an_older_build_can_still_start() {
    let db = format!("store_{}", uuid::Uuid::new_v4().simple());
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    let links = client
        .database(&db)
        .collection::<bson::Document>("contact_links");
    // What an older build created.
    let older = || {
        [
            doc! { "syncStatus": 1, "provider": 1 },
            doc! { "customerId": 1, "provider": 1, "syncStatus": 1 },
        ]
        .map(|keys| mongodb::IndexModel::builder().keys(keys).build())
    };
    links.create_indexes(older()).await.expect("old indexes");
    let names = |links: mongodb::Collection<bson::Document>| async move {
        let mut names = links.list_index_names().await.expect("index names");
        names.sort();
        names
    };

    Store::connect(&common::mongodb_uri(), &db)
        .await
        .expect("store");
    let now = names(links.clone()).await;
    for name in ["by_customer_status_provider", "by_status_provider_customer"] {
        assert!(now.iter().any(|n| n == name), "{name} missing: {now:?}");
    }
    for name in [
        "syncStatus_1_provider_1",
        "customerId_1_provider_1_syncStatus_1",
    ] {
        assert!(!now.iter().any(|n| n == name), "{name} left: {now:?}");
    }

    // An older build started against it again creates its own indexes
    // beside the new ones rather than failing on a clash; the next start
    // of this build drops them again.
    links
        .create_indexes(older())
        .await
        .expect("an older build's indexes");
    Store::connect(&common::mongodb_uri(), &db)
        .await
        .expect("store again");
    assert_eq!(names(links.clone()).await, now);

    let _ = tokio::time::timeout(Duration::from_secs(5), client.database(&db).drop()).await;
}

/// A link that moves to another CRM record gives its old record up: the
/// old id can be linked again, by another contact (a record restored in
/// the CRM), on every server `scripts/test.sh` runs this on.
#[tokio::test]
async fn a_record_a_link_moved_away_from_can_be_linked_again() {
    let db = format!("store_{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&common::mongodb_uri(), &db)
        .await
        .expect("store");
    let customer = CustomerId::default();
    let a = pending_link(&store, &customer, 1).await;
    let b = pending_link(&store, &customer, 2).await;
    mark(&store, &customer, a, 1, "700".into())
        .await
        .expect("a linked to 700");
    // a's record is gone from the CRM; its push links it to a new one
    store
        .release_external_id(a, Provider::Hubspot, "700")
        .await
        .expect("released");
    mark(&store, &customer, a, 1, "701".into())
        .await
        .expect("a linked to 701");
    mark(&store, &customer, b, 2, "700".into())
        .await
        .expect("700 is free for b");
    assert!(
        matches!(
            mark(&store, &customer, b, 2, "701".into()).await,
            Err(StoreError::Conflict(_))
        ),
        "701 is a's"
    );
    let links = store.links_of(&[a, b]).await.expect("links");
    let ext = |c: ContactId| {
        links
            .iter()
            .find(|l| l.contact_id == c)
            .and_then(|l| l.external_id.clone())
    };
    assert_eq!(ext(a).as_deref(), Some("701"));
    assert_eq!(ext(b).as_deref(), Some("700"));
    // releasing an id the link no longer holds changes nothing
    store
        .release_external_id(a, Provider::Hubspot, "700")
        .await
        .expect("nothing to release");
    let links = store.links_of(&[a]).await.expect("links");
    assert_eq!(links[0].external_id.as_deref(), Some("701"));
    let client = mongodb::Client::with_uri_str(common::mongodb_uri())
        .await
        .expect("client");
    let _ = client.database(&db).drop().await;
}
