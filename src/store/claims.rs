//! Unique keys kept as documents of their own, in `claims`: a key is
//! claimed by inserting `{_id: key, owner, at}` and freed by deleting that
//! document, never by updating one.
//!
//! Why not a unique index on the documents that hold the keys (a contact's
//! email, a customer's CRM account): those keys change in place, and
//! secantusd-rs (0.5.3-beta.196, the MongoDB-compatible server the scripts
//! start when there is no `mongod`) keeps the old key in a unique index
//! when an update changes it; only a delete removes it. A freed email could
//! then never be used again. The `_id` of documents that are only inserted
//! and deleted behaves the same on every server.
//!
//! A claim is written before the document that holds its key, and freed
//! after that document let the key go. A process that dies in between
//! leaves a claim its owner does not hold: once older than [`GRACE`] (no
//! write in flight takes that long) it is stale, and the next claimant
//! takes it over.

use std::time::Duration;

use anyhow::Context;
use bson::{doc, DateTime, Document};

use super::grouped::GroupError;
use super::{is_duplicate_key, Store, StoreError};
use crate::domain::{CustomerId, Provider};

/// How long a claim whose owner does not hold its key yet is taken to be a
/// write in flight rather than one a crash abandoned.
const GRACE: Duration = Duration::from_secs(60);

/// A unique key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key<'a> {
    /// A live contact's email, unique within its customer (the contact's
    /// id owns it).
    Email {
        /// The customer.
        customer: &'a CustomerId,
        /// The email, as the contact stores it.
        email: &'a str,
    },
    /// A CRM account, connected to one customer at most (the customer's id
    /// owns it).
    Account {
        /// The CRM.
        provider: Provider,
        /// HubSpot's portal id, Pipedrive's company id.
        account: &'a str,
    },
}

/// The conflict of a contact email another live contact holds.
pub(crate) fn email_taken(email: &str) -> StoreError {
    StoreError::Conflict(format!("a contact with email {email} already exists"))
}

impl Key<'_> {
    /// The conflict of claiming a key another owner holds.
    pub(crate) fn taken(&self) -> StoreError {
        match self {
            Self::Email { email, .. } => email_taken(email),
            Self::Account { provider, account } => StoreError::Conflict(format!(
                "{provider} account {account} is connected to another customer"
            )),
        }
    }

    fn id(&self) -> String {
        match self {
            Self::Email { customer, email } => format!("email:{customer}:{email}"),
            Self::Account { provider, account } => format!("account:{provider}:{account}"),
        }
    }

    /// Whether `owner`'s document holds the key now.
    async fn held_by(&self, store: &Store, owner: &str) -> anyhow::Result<bool> {
        let n = match self {
            Self::Email { customer, email } => {
                let Ok(oid) = bson::oid::ObjectId::parse_str(owner) else {
                    return Ok(false);
                };
                store
                    .contacts
                    .count_documents(doc! {
                        "_id": oid,
                        "customerId": customer.as_str(),
                        "activeEmail": *email,
                        "deletedAt": { "$exists": false },
                    })
                    .limit(1)
                    .await
            }
            Self::Account { provider, account } => {
                store
                    .customers
                    .count_documents(doc! {
                        "_id": owner,
                        format!("connections.{provider}.accountId"): *account,
                    })
                    .limit(1)
                    .await
            }
        };
        Ok(n.context("checking who holds a unique key")? > 0)
    }
}

/// The outcome of [`Store::claim`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// The key is the owner's (now, or already).
    Ours,
    /// Another owner holds it.
    Taken,
}

impl Store {
    fn claims(&self) -> mongodb::Collection<Document> {
        self.db.collection("claims")
    }

    /// Claims `key` for `owner`; taking over a claim a crash abandoned.
    ///
    /// # Errors
    /// When the database fails.
    pub(crate) async fn claim(&self, key: Key<'_>, owner: &str) -> anyhow::Result<Claimed> {
        let id = key.id();
        let claims = self.claims();
        // a stale claim is taken over once; a race for it, a few times
        for _ in 0..3 {
            let now = DateTime::now();
            // inserted together with the other claims of the moment (one
            // `insert` for a burst of new contacts)
            match self
                .groups
                .claim_inserts
                .call(doc! { "_id": &id, "owner": owner, "at": now })
                .await
                .unwrap_or(Err(GroupError::Gone))
            {
                Ok(()) => return Ok(Claimed::Ours),
                Err(e) if e.is_duplicate_key() => {}
                Err(e) => return Err(e.into_anyhow("claiming a unique key")),
            }
            let Some(held) = claims
                .find_one(doc! { "_id": &id })
                .await
                .context("reading a claim")?
            else {
                continue; // freed meanwhile
            };
            let holder = held.get_str("owner").unwrap_or_default().to_owned();
            // ours already (a retried insert whose reply was lost)
            if holder == owner {
                return Ok(Claimed::Ours);
            }
            let age = held
                .get_datetime("at")
                .map(|at| now.timestamp_millis() - at.timestamp_millis())
                .unwrap_or(0);
            if age < GRACE.as_millis() as i64 || key.held_by(self, &holder).await? {
                return Ok(Claimed::Taken);
            }
            tracing::info!(key = %id, holder, "taking over a claim nobody holds");
            claims
                .delete_one(doc! { "_id": &id, "owner": &holder })
                .await
                .context("removing a stale claim")?;
        }
        Ok(Claimed::Taken)
    }

    /// Frees `key` if `owner` claimed it and no longer holds it.
    ///
    /// # Errors
    /// When the database fails (the claim then goes stale and is taken
    /// over by the next claimant after [`GRACE`]).
    pub(crate) async fn release(&self, key: Key<'_>, owner: &str) -> anyhow::Result<()> {
        if key.held_by(self, owner).await? {
            return Ok(());
        }
        self.claims()
            .delete_one(doc! { "_id": key.id(), "owner": owner })
            .await
            .context("freeing a unique key")?;
        Ok(())
    }

    /// [`Self::release`], logging a failure instead of returning it: the
    /// write that freed the key has succeeded, and a claim left behind only
    /// goes stale.
    pub(crate) async fn release_or_log(&self, key: Key<'_>, owner: &str) {
        if let Err(e) = self.release(key, owner).await {
            tracing::warn!(error = %format!("{e:#}"), "a freed key's claim was not removed; it goes stale");
        }
    }

    /// Claims every key the contacts and customers already hold, once per
    /// database (a marker in `meta` says it ran): databases from before the
    /// claims had only the unique indexes. A contact without a customer yet
    /// is the default customer's (see [`Store::ensure_default_customer`]).
    ///
    /// # Errors
    /// When the database fails.
    pub(crate) async fn claim_existing_keys(&self) -> anyhow::Result<()> {
        use futures::TryStreamExt;
        const MARKER: &str = "claims-made";
        let meta = self.db.collection::<Document>("meta");
        if meta.find_one(doc! { "_id": MARKER }).await?.is_some() {
            return Ok(());
        }
        let mut claims = Vec::new();
        let mut live = self
            .contacts
            .clone_with_type::<Document>()
            .find(doc! { "activeEmail": { "$exists": true } })
            .projection(doc! { "customerId": 1, "activeEmail": 1 })
            .await
            .context("listing contacts to claim their emails")?;
        let default = CustomerId::default_customer();
        while let Some(c) = live.try_next().await? {
            let (Ok(id), Ok(email)) = (c.get_object_id("_id"), c.get_str("activeEmail")) else {
                continue;
            };
            let customer = c
                .get_str("customerId")
                .map(str::to_owned)
                .unwrap_or_else(|_| default.to_string());
            claims.push(doc! {
                "_id": format!("email:{customer}:{email}"),
                "owner": id.to_hex(),
                "at": DateTime::now(),
            });
        }
        let mut customers = self
            .customers
            .clone_with_type::<Document>()
            .find(doc! {})
            .await
            .context("listing customers to claim their accounts")?;
        while let Some(c) = customers.try_next().await? {
            let Ok(id) = c.get_str("_id") else { continue };
            for p in Provider::ALL {
                let account = c
                    .get_document("connections")
                    .ok()
                    .and_then(|conns| conns.get_document(p.as_str()).ok())
                    .and_then(|conn| conn.get_str("accountId").ok());
                if let Some(account) = account {
                    claims.push(doc! {
                        "_id": Key::Account { provider: p, account }.id(),
                        "owner": id,
                        "at": DateTime::now(),
                    });
                }
            }
        }
        for chunk in claims.chunks(1000) {
            match self.claims().insert_many(chunk).ordered(false).await {
                Ok(_) => {}
                // claimed already by a process that started meanwhile
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e).context("claiming existing keys"),
            }
        }
        match meta
            .insert_one(doc! { "_id": MARKER, "at": DateTime::now() })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e).context("marking the claims made"),
        }
    }
}
