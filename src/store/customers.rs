//! The `customers` collection: the app's customers and the CRM connections
//! each has made through Integration.app. Contacts, links and poll cursors
//! belong to one customer.

use std::collections::BTreeMap;

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::claims::{Claimed, Key};
use super::count_field;
use super::{is_duplicate_key, Store, StoreError};
use crate::domain::{CustomerId, Provider};

/// A customer of the app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// The id (the `id` claim of its Integration.app tokens).
    #[serde(rename = "_id")]
    pub id: CustomerId,
    /// What operators call it.
    pub name: String,
    /// Its CRM connections, by provider key (`hubspot`, `pipedrive`).
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
    /// When it was created.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
    /// SHA-256 digests (hex) of its api tokens: a customer token sees and
    /// changes that customer's contacts only. The tokens themselves are
    /// shown once, when minted, and never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_hashes: Vec<String>,
}

/// One CRM connection of a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The CRM account: HubSpot's `portalId`, Pipedrive's company id. Its
    /// webhooks are routed to the customer by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Whether contacts sync with it. A disabled connection gets no jobs.
    pub enabled: bool,
    /// Calls per second this account allows, shared by the pool (absent:
    /// the provider's default, `RATE_LIMIT_HUBSPOT` / `RATE_LIMIT_PIPEDRIVE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Set when Integration.app answered that it does not know the
    /// connection (or an action the app runs on it), or that it is
    /// defunct: the customer has to reconnect. Its jobs wait (see
    /// [`crate::crm::CrmError::NeedsReconnect`]); the first call that goes
    /// through clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_reconnect: Option<NeedsReconnect>,
    /// Last change.
    pub updated_at: DateTime,
}

/// Why, and since when, a connection needs reconnecting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedsReconnect {
    /// When a call first found it unusable.
    pub since: DateTime,
    /// What Integration.app said.
    pub error: String,
}

impl Customer {
    /// A customer with `providers` connected (account ids unknown yet).
    pub fn new(id: CustomerId, name: &str, providers: &[Provider]) -> Self {
        let now = DateTime::now();
        Self {
            id,
            name: name.to_owned(),
            connections: providers
                .iter()
                .map(|p| {
                    (
                        p.as_str().to_owned(),
                        Connection {
                            account_id: None,
                            enabled: true,
                            rate_limit: None,
                            needs_reconnect: None,
                            updated_at: now,
                        },
                    )
                })
                .collect(),
            created_at: now,
            updated_at: now,
            token_hashes: Vec::new(),
        }
    }

    /// The connection with `provider`, if any.
    pub fn connection(&self, provider: Provider) -> Option<&Connection> {
        self.connections.get(provider.as_str())
    }

    /// The providers whose connection is enabled, in [`Provider::ALL`] order.
    pub fn enabled(&self) -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|p| self.connection(*p).is_some_and(|c| c.enabled))
            .collect()
    }
}

/// The field of a provider's account id, for filters and indexes.
fn account_field(provider: Provider) -> String {
    format!("connections.{provider}.accountId")
}

impl Store {
    /// Creates a customer.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id, or one of its account ids, is
    /// taken.
    pub async fn create_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        let owner = customer.id.as_str();
        let accounts: Vec<_> = Provider::ALL
            .into_iter()
            .filter_map(|p| {
                let account = customer.connection(p)?.account_id.as_deref()?;
                Some(Key::Account {
                    provider: p,
                    account,
                })
            })
            .collect();
        let mut failed = None;
        for key in &accounts {
            if self.claim(*key, owner).await? == Claimed::Taken {
                failed = Some(key.taken());
                break;
            }
        }
        let failed = match failed {
            Some(e) => e,
            None => match self.customers.insert_one(customer).await {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => {
                    StoreError::Conflict(format!("customer {} already exists", customer.id))
                }
                Err(e) => anyhow::Error::new(e).context("creating a customer").into(),
            },
        };
        // what this customer claimed but does not hold is freed
        for key in accounts {
            self.release_or_log(key, owner).await;
        }
        Err(failed)
    }

    /// Every customer, by id (at most `limit`, after `after`).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn customers(
        &self,
        after: Option<&CustomerId>,
        limit: i64,
    ) -> anyhow::Result<Vec<Customer>> {
        let filter = match after {
            Some(a) => doc! { "_id": { "$gt": a.as_str() } },
            None => doc! {},
        };
        self.customers
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await
            .context("listing customers")?
            .try_collect()
            .await
            .context("reading customers")
    }

    /// Every customer's enabled connection with one of `providers` (the
    /// CRMs the deployment syncs with), read a page of customers at a time.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn enabled_connections(
        &self,
        providers: &[Provider],
    ) -> anyhow::Result<Vec<(CustomerId, Provider)>> {
        const PAGE: i64 = 500;
        let mut out = Vec::new();
        let mut after: Option<CustomerId> = None;
        loop {
            let page = self.customers(after.as_ref(), PAGE).await?;
            for c in &page {
                out.extend(
                    c.enabled()
                        .into_iter()
                        .filter(|p| providers.contains(p))
                        .map(|p| (c.id.clone(), p)),
                );
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some(last.id.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// One customer.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn customer(&self, id: &CustomerId) -> anyhow::Result<Option<Customer>> {
        self.customers
            .find_one(doc! { "_id": id.as_str() })
            .await
            .with_context(|| format!("reading customer {id}"))
    }

    /// The customer whose `provider` connection is the CRM account
    /// `account_id`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn customer_by_account(
        &self,
        provider: Provider,
        account_id: &str,
    ) -> anyhow::Result<Option<Customer>> {
        self.customers
            .find_one(doc! { account_field(provider): account_id })
            .await
            .context("reading a customer by CRM account")
    }

    /// Records (or replaces) a customer's connection with `provider`;
    /// `None` when there is no such customer.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the account belongs to another customer.
    pub async fn set_connection(
        &self,
        id: &CustomerId,
        provider: Provider,
        connection: &Connection,
    ) -> Result<Option<Customer>, StoreError> {
        let Some(current) = self.customer(id).await? else {
            return Ok(None);
        };
        let old = current
            .connection(provider)
            .and_then(|c| c.account_id.clone());
        let new = connection.account_id.as_deref();
        let owner = id.as_str();
        let claimed = match new.filter(|n| old.as_deref() != Some(*n)) {
            Some(account) => {
                let key = Key::Account { provider, account };
                if self.claim(key, owner).await? == Claimed::Taken {
                    return Err(key.taken());
                }
                Some(key)
            }
            None => None,
        };
        let res = self.write_connection(id, provider, connection).await;
        // the account the customer does not hold (any more) is freed
        let freed = match &res {
            Ok(Some(_)) => old
                .as_deref()
                .filter(|o| new != Some(*o))
                .map(|account| Key::Account { provider, account }),
            _ => claimed,
        };
        if let Some(key) = freed {
            self.release_or_log(key, owner).await;
        }
        res
    }

    async fn write_connection(
        &self,
        id: &CustomerId,
        provider: Provider,
        connection: &Connection,
    ) -> Result<Option<Customer>, StoreError> {
        let value = bson::to_bson(connection).context("encoding a connection")?;
        let res = self
            .customers
            .find_one_and_update(
                doc! { "_id": id.as_str() },
                doc! { "$set": {
                    format!("connections.{provider}"): value,
                    "updatedAt": DateTime::now(),
                } },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await;
        match res {
            Ok(c) => Ok(c),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::Conflict(format!(
                "{provider} account {} is connected to another customer",
                connection.account_id.as_deref().unwrap_or("?")
            ))),
            Err(e) => Err(anyhow::Error::new(e)
                .context("recording a connection")
                .into()),
        }
    }

    /// Marks the customer's connection with `provider` as needing
    /// reconnecting because of `error` (kept from the first time), or
    /// (`None`) as working. A connection the customer does not have is
    /// left alone. Whether this changed it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn mark_reconnect(
        &self,
        id: &CustomerId,
        provider: Provider,
        error: Option<&str>,
    ) -> anyhow::Result<bool> {
        let field = format!("connections.{provider}.needsReconnect");
        let (filter, update) = match error {
            Some(error) => (
                doc! {
                    "_id": id.as_str(),
                    format!("connections.{provider}"): { "$exists": true },
                    &field: { "$exists": false },
                },
                doc! { "$set": { &field: { "since": DateTime::now(), "error": error } } },
            ),
            None => (
                doc! { "_id": id.as_str(), &field: { "$exists": true } },
                doc! { "$unset": { &field: "" } },
            ),
        };
        let res = self
            .customers
            .update_one(filter, update)
            .await
            .context("recording whether a connection needs reconnecting")?;
        Ok(res.modified_count == 1)
    }

    /// How many customers' connections with `provider` need reconnecting.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn connections_needing_reconnect(&self, provider: Provider) -> anyhow::Result<u64> {
        self.customers
            .count_documents(
                doc! { format!("connections.{provider}.needsReconnect"): { "$exists": true } },
            )
            .await
            .context("counting connections that need reconnecting")
    }

    /// A customer's links by provider and status.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn customer_link_counts(
        &self,
        customer: &CustomerId,
    ) -> anyhow::Result<Vec<(Provider, crate::domain::SyncStatus, u64)>> {
        use crate::domain::SyncStatus;
        let pipeline = vec![
            doc! { "$match": { "customerId": customer.as_str() } },
            doc! { "$group": { "_id": { "p": "$provider", "s": "$syncStatus" }, "n": { "$sum": 1 } } },
        ];
        let groups: Vec<bson::Document> = self
            .links
            .aggregate(pipeline)
            .await
            .context("counting a customer's links")?
            .try_collect()
            .await
            .context("reading link counts")?;
        let mut out = Vec::new();
        for g in groups {
            let Ok(id) = g.get_document("_id") else {
                continue;
            };
            let provider = id
                .get_str("p")
                .ok()
                .and_then(|p| p.parse::<Provider>().ok());
            let status = match id.get_str("s") {
                Ok("pending") => Some(SyncStatus::Pending),
                Ok("synced") => Some(SyncStatus::Synced),
                Ok("error") => Some(SyncStatus::Error),
                _ => None,
            };
            let n = count_field(&g);
            if let (Some(p), Some(s)) = (provider, status) {
                out.push((p, s, n));
            }
        }
        Ok(out)
    }

    /// How a customer's syncs with one CRM went: the last that did not
    /// fail, and how many ran and failed over the last hour (read through
    /// the `(customerId, provider, at)` index of the sync logs).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn customer_sync_health(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> anyhow::Result<SyncHealth> {
        let scope = doc! { "customerId": customer.as_str(), "provider": provider.as_str() };
        let mut last_ok = scope.clone();
        last_ok.insert("outcome", doc! { "$ne": "failed" });
        let last_success = self
            .logs
            .find_one(last_ok)
            .sort(doc! { "at": -1 })
            .await
            .context("reading a customer's last sync")?
            .map(|l| l.at);
        let hour_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 3_600_000);
        let mut recent = scope;
        recent.insert("at", doc! { "$gte": hour_ago });
        let pipeline = vec![
            doc! { "$match": recent },
            doc! { "$group": { "_id": "$outcome", "n": { "$sum": 1 } } },
        ];
        let groups: Vec<bson::Document> = self
            .logs
            .clone_with_type::<bson::Document>()
            .aggregate(pipeline)
            .await
            .context("counting a customer's recent syncs")?
            .try_collect()
            .await
            .context("reading recent sync counts")?;
        let mut health = SyncHealth {
            last_success,
            ..SyncHealth::default()
        };
        for g in groups {
            let n = count_field(&g);
            health.recent += n;
            if g.get_str("_id") == Ok("failed") {
                health.recent_failed += n;
            }
        }
        Ok(health)
    }

    /// Adds an api token (by its digest) to a customer; `false` when there
    /// is no such customer.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn add_customer_token(&self, id: &CustomerId, hash: &str) -> anyhow::Result<bool> {
        let res = self
            .customers
            .update_one(
                doc! { "_id": id.as_str() },
                doc! { "$push": { "tokenHashes": hash }, "$set": { "updatedAt": DateTime::now() } },
            )
            .await
            .context("adding a customer token")?;
        Ok(res.matched_count == 1)
    }

    /// Revokes every api token of a customer; `false` when there is no
    /// such customer.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn revoke_customer_tokens(&self, id: &CustomerId) -> anyhow::Result<bool> {
        let res = self
            .customers
            .update_one(
                doc! { "_id": id.as_str() },
                doc! { "$set": { "tokenHashes": [], "updatedAt": DateTime::now() } },
            )
            .await
            .context("revoking customer tokens")?;
        Ok(res.matched_count == 1)
    }

    /// The customer an api token (by its digest) belongs to.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn customer_by_token(&self, hash: &str) -> anyhow::Result<Option<CustomerId>> {
        Ok(self
            .customers
            .find_one(doc! { "tokenHashes": hash })
            .await
            .context("reading a customer by token")?
            .map(|c| c.id))
    }

    /// Makes sure the default customer exists, connected to `providers`
    /// (an existing one is left as operators set it), and gives it what was
    /// written before there were customers: contacts, links and poll
    /// cursors without a customer. Runs once per database (a marker in
    /// `meta` says it ran), so a start-up does not scan the collections.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn ensure_default_customer(
        &self,
        id: &CustomerId,
        providers: &[Provider],
    ) -> anyhow::Result<()> {
        let fresh = Customer::new(id.clone(), "Default customer", providers);
        let mut on_insert = bson::to_document(&fresh).context("encoding a customer")?;
        on_insert.remove("_id");
        self.customers
            .update_one(
                doc! { "_id": id.as_str() },
                doc! { "$setOnInsert": on_insert },
            )
            .upsert(true)
            .await
            .context("creating the default customer")?;
        let meta = self.db.collection::<bson::Document>("meta");
        const MARKER: &str = "customers-adopted";
        if meta.find_one(doc! { "_id": MARKER }).await?.is_some() {
            return Ok(());
        }
        let unowned = doc! { "customerId": { "$exists": false } };
        let own = doc! { "$set": { "customerId": id.as_str() } };
        self.contacts
            .update_many(unowned.clone(), own.clone())
            .await
            .context("giving contacts to the default customer")?;
        self.links
            .update_many(unowned, own)
            .await
            .context("giving links to the default customer")?;
        // Cursors were one per provider, named by it.
        for p in Provider::ALL {
            let cursors = self.db.collection::<bson::Document>("sync_cursors");
            if let Some(mut old) = cursors.find_one(doc! { "_id": p.as_str() }).await? {
                old.insert("_id", super::ids::cursor_id(id, p));
                match cursors.insert_one(&old).await {
                    Ok(_) => {}
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(e).context("moving a poll cursor"),
                }
                cursors.delete_one(doc! { "_id": p.as_str() }).await?;
            }
        }
        match meta
            .insert_one(doc! { "_id": MARKER, "customer": id.as_str(), "at": DateTime::now() })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e).context("marking the adoption done"),
        }
    }
}

/// How one connection's syncs went (see [`Store::customer_sync_health`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncHealth {
    /// The last sync that did not fail.
    pub last_success: Option<DateTime>,
    /// Syncs logged over the last hour.
    pub recent: u64,
    /// Of those, failed ones.
    pub recent_failed: u64,
}
