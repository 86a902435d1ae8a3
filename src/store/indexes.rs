//! The indexes the store relies on, created at start-up (and the ones
//! earlier builds made, dropped where they would get in the way).

use anyhow::Context;
use bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use super::Store;
use crate::domain::Provider;

/// An index named `name` on `keys`.
fn index(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).build())
        .build()
}

/// An index named `name` on `keys` over the documents that have `field`
/// (`unique` among them, or not).
fn partial(keys: Document, name: &str, field: &str, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(unique.then_some(true))
                .partial_filter_expression(doc! { field: { "$exists": true } })
                .build(),
        )
        .build()
}

/// Creates `models` on `coll`; `what` names them in an error.
async fn create<T: Send + Sync>(
    coll: &Collection<T>,
    models: Vec<IndexModel>,
    what: &str,
) -> anyhow::Result<()> {
    for m in models {
        coll.create_index(m)
            .await
            .with_context(|| format!("creating the {what} indexes"))?;
    }
    Ok(())
}

/// Drops the indexes named `names` from `coll`, where they exist.
async fn drop_old<T: Send + Sync>(coll: &Collection<T>, names: &[&str]) {
    for name in names {
        if let Err(e) = coll.drop_index(*name).await {
            tracing::debug!(index = name, error = %e, "no old index to drop");
        }
    }
}

impl Store {
    /// Every collection's indexes, then the claims of the unique keys
    /// already taken.
    pub(super) async fn ensure_indexes(&self) -> anyhow::Result<()> {
        self.contact_indexes().await?;
        self.customer_indexes().await?;
        self.link_indexes().await?;
        self.log_indexes().await?;
        self.claim_existing_keys().await
    }

    async fn contact_indexes(&self) -> anyhow::Result<()> {
        // An email belongs to one live contact of a customer: a claim
        // (`claims.rs`) keeps it unique; this index finds a contact by it.
        // `activeEmail` is unset on delete. The unique indexes it replaces
        // (on the email alone before there were customers, then with the
        // customer) are dropped: on secantusd-rs they never freed an email.
        drop_old(
            &self.contacts,
            &["active_email_unique", "customer_active_email_unique"],
        )
        .await;
        let by_email = partial(
            doc! { "customerId": 1, "activeEmail": 1 },
            "by_customer_active_email",
            "activeEmail",
            false,
        );
        // The outbox relay looks for changes whose jobs may not be queued.
        let outbox = IndexModel::builder()
            .keys(doc! { "outbox.at": 1 })
            .options(
                IndexOptions::builder()
                    .sparse(true)
                    .name("outbox_at".to_owned())
                    .build(),
            )
            .build();
        let by_customer = IndexModel::builder()
            .keys(doc! { "customerId": 1, "_id": -1 })
            .build();
        create(
            &self.contacts,
            vec![by_email, by_customer, outbox],
            "contacts",
        )
        .await
    }

    async fn customer_indexes(&self) -> anyhow::Result<()> {
        create(
            &self.customers,
            vec![index(doc! { "tokenHashes": 1 }, "token_hashes")],
            "customers token",
        )
        .await?;
        // A customer's CRM account belongs to that customer alone: a claim
        // keeps it so (see `claims.rs`); this index routes webhooks by it.
        for p in Provider::ALL {
            let field = format!("connections.{p}.accountId");
            drop_old(&self.customers, &[format!("{p}_account_unique").as_str()]).await;
            let account = partial(
                doc! { &field: 1 },
                &format!("by_{p}_account"),
                &field,
                false,
            );
            create(&self.customers, vec![account], "customers account").await?;
        }
        Ok(())
    }

    async fn link_indexes(&self) -> anyhow::Result<()> {
        let contact_provider = IndexModel::builder()
            .keys(doc! { "contactId": 1, "provider": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("contact_provider_unique".to_owned())
                    .build(),
            )
            .build();
        create(
            &self.links,
            vec![contact_provider],
            "contact_links (contactId, provider)",
        )
        .await?;
        // (customer, provider, externalId) is unique among links that have
        // an external id: two customers' CRM accounts hand out the same ids.
        drop_old(&self.links, &["provider_external_unique"]).await;
        let external = partial(
            doc! { "customerId": 1, "provider": 1, "externalId": 1 },
            "customer_provider_external_unique",
            "externalId",
            true,
        );
        create(
            &self.links,
            vec![external],
            "contact_links (customerId, provider, externalId)",
        )
        .await?;
        // Links by status (pool-wide, per provider, per customer). Named
        // `by_…` so that on secantusd-rs, which keeps every index of a
        // database in one ordered table by (collection, index name, key),
        // they sort before the unique indexes: a new link's unique key is
        // the last of its index (contact ids grow), and the server checks
        // it is free by stepping to the next entry, which would otherwise
        // be the first of a status index, behind every `pending` entry
        // removed since the last cleanup. That step cost it 60–90 µs per
        // insert (36 against 95–126 µs measured alone); with these names it
        // lands on a live entry of the next unique index. The keys differ
        // from the indexes they replace (`syncStatus_1_provider_1`,
        // `customerId_1_provider_1_syncStatus_1`, dropped below), so an
        // older build started against this database still creates its own
        // instead of failing on a name clash.
        let by_status = vec![
            index(
                doc! { "syncStatus": 1, "provider": 1, "customerId": 1 },
                "by_status_provider_customer",
            ),
            index(
                doc! { "customerId": 1, "syncStatus": 1, "provider": 1 },
                "by_customer_status_provider",
            ),
        ];
        create(&self.links, by_status, "contact_links status").await?;
        drop_old(
            &self.links,
            &[
                "syncStatus_1_provider_1",
                "customerId_1_provider_1_syncStatus_1",
            ],
        )
        .await;
        Ok(())
    }

    async fn log_indexes(&self) -> anyhow::Result<()> {
        // A contact's history; what operators filter on (`/api/sync-logs`,
        // `/api/connections`, `/metrics`): by provider, and by provider and
        // outcome, newest first; per customer: a connection's health
        // (`/api/customers/{id}`).
        let models = [
            doc! { "contactId": 1, "at": -1 },
            doc! { "provider": 1, "at": -1 },
            doc! { "provider": 1, "outcome": 1, "at": -1 },
            doc! { "customerId": 1, "provider": 1, "at": -1 },
        ]
        .into_iter()
        .map(|keys| IndexModel::builder().keys(keys).build())
        .collect();
        create(&self.logs, models, "sync_logs").await
    }
}
