//! Store operations of inbound sync: finding the local side of a CRM record,
//! applying CRM values, idempotency of webhook events, and poll cursors.

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::first_sync::FirstSyncRecord;
use super::grouped::{GroupError, Lookup};
use super::ids::cursor_id;
use super::{Contact, Link, Store, StoreError};
use crate::domain::UniversalContact;
use crate::domain::{ContactId, CustomerId, Email, Provider};

/// The key of an unrecorded create: customer, CRM and email.
fn unrecorded_id(customer: &CustomerId, provider: Provider, email: &Email) -> String {
    format!("{customer}:{provider}:{}", email.as_str())
}

/// Where a provider's poll stands: records changed at or after `since_ms`
/// are listed next; `boundary_ids` were already applied at exactly
/// `since_ms` (the listing bound is inclusive).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollCursor {
    /// Last modified time reached, ms since the epoch.
    pub since_ms: i64,
    /// Records applied at exactly `since_ms`.
    pub boundary_ids: Vec<String>,
    /// When the cursor last moved.
    #[serde(default)]
    pub updated_at: Option<DateTime>,
    /// When the last poll finished.
    #[serde(default)]
    pub last_poll_at: Option<DateTime>,
    /// A full scan under way: where it started and the listing's cursor
    /// after its last applied page, so a scan cut short resumes there.
    #[serde(default)]
    pub scan: Option<ScanProgress>,
    /// The connection's last first sync (`initial-sync`), once one ran.
    #[serde(default)]
    pub first_sync: Option<FirstSyncRecord>,
}

/// Where a full scan of a CRM stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanProgress {
    /// When it started, ms on the shared (Redis) clock.
    pub started_ms: i64,
    /// The full listing's cursor for the next page.
    pub cursor: String,
}

/// One grouped lookup (see [`super::grouped::Lookup`]), decoded.
async fn look_up<T: serde::de::DeserializeOwned>(
    lookups: &super::batch::Batcher<Lookup, Result<Option<bson::Document>, GroupError>>,
    lookup: Lookup,
    what: &str,
) -> anyhow::Result<Option<T>> {
    let found = lookups
        .call(lookup)
        .await
        .unwrap_or(Err(GroupError::Gone))
        .map_err(|e| e.into_anyhow(&format!("reading {what}")))?;
    found
        .map(bson::from_document)
        .transpose()
        .with_context(|| format!("decoding {what}"))
}

impl Store {
    /// The link that points at a CRM record, read with the other links
    /// being looked up at the moment (one `find`).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn link_by_external(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
    ) -> anyhow::Result<Option<Link>> {
        let scope = doc! { "customerId": customer.as_str(), "provider": provider.as_str() };
        let lookup = (scope, "externalId", external_id.to_owned());
        look_up(&self.groups.link_lookups, lookup, "a link by external id").await
    }

    /// The customer's live contact with this email, read with the other
    /// contacts being looked up at the moment (one `find`).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn live_contact_by_email(
        &self,
        customer: &CustomerId,
        email: &Email,
    ) -> anyhow::Result<Option<Contact>> {
        let scope = doc! { "customerId": customer.as_str() };
        let lookup = (scope, "activeEmail", email.as_str().to_owned());
        look_up(&self.groups.contact_lookups, lookup, "a contact by email").await
    }

    /// Remembers, for a contact just deleted, each CRM its push may have
    /// created a record in without recording it (a link with no external
    /// id but a push intent): a record with its email that such a CRM
    /// announces later is that push's, not a new person, and the
    /// contact's deletion is on its way to remove it. Kept in
    /// `unrecorded_creates`, one document by customer, CRM and email, so the
    /// import path looks it up by `_id` (and deletions alone write it).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn remember_unrecorded_creates(
        &self,
        contact: &Contact,
        links: &[Link],
    ) -> anyhow::Result<()> {
        let marks: Vec<bson::Document> = links
            .iter()
            .filter(|l| l.external_id.is_none() && l.push_intent.is_some())
            .map(|l| {
                doc! {
                    "_id": unrecorded_id(&contact.customer_id, l.provider, &contact.email),
                    "contactId": contact.id.oid(),
                    "at": DateTime::now(),
                }
            })
            .collect();
        if marks.is_empty() {
            return Ok(());
        }
        match self.unrecorded().insert_many(marks).ordered(false).await {
            Ok(_) => Ok(()),
            // remembered already (a deletion retried)
            Err(e) if super::is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e).context("remembering unrecorded creates"),
        }
    }

    /// The deleted contact whose push may have created, unrecorded, a
    /// record with this email in this CRM (see
    /// [`Self::remember_unrecorded_creates`]), with its link.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn unrecorded_create(
        &self,
        customer: &CustomerId,
        provider: Provider,
        email: &Email,
    ) -> anyhow::Result<Option<Link>> {
        // looked up with the other imports' at the moment (one `find`)
        let lookup = (doc! {}, "_id", unrecorded_id(customer, provider, email));
        let Some(mark) = look_up::<bson::Document>(
            &self.groups.unrecorded_lookups,
            lookup,
            "an unrecorded create",
        )
        .await?
        else {
            return Ok(None);
        };
        let Ok(contact) = mark.get_object_id("contactId") else {
            return Ok(None);
        };
        self.link(ContactId::from_oid(contact), provider).await
    }

    /// Forgets an unrecorded create once the deletion dealt with it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn forget_unrecorded_create(
        &self,
        customer: &CustomerId,
        provider: Provider,
        email: &Email,
    ) -> anyhow::Result<()> {
        self.unrecorded()
            .delete_one(doc! { "_id": unrecorded_id(customer, provider, email) })
            .await
            .context("forgetting an unrecorded create")?;
        Ok(())
    }

    fn unrecorded(&self) -> mongodb::Collection<bson::Document> {
        self.db.collection("unrecorded_creates")
    }

    /// Records that the link mirrors the CRM record at `crm_updated_ms`, and
    /// that the contact's `version` came from (or is already in) the CRM.
    /// When the contact holds values the CRM lacks (`version` is older
    /// than the contact's), the link is `pending` at the contact's version
    /// instead: a push owes them, queued by the caller or (a connection
    /// being first-synced) left to its write step.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the record is linked to another contact.
    pub async fn mark_inbound(
        &self,
        contact: &Contact,
        provider: Provider,
        external_id: &str,
        version: i64,
        crm_updated_ms: i64,
        fields: &UniversalContact,
    ) -> Result<(), StoreError> {
        let behind = version < contact.version;
        let (customer, current, contact) = (&contact.customer_id, contact.version, contact.id);
        let now = DateTime::now();
        let snapshot = bson::to_bson(fields).context("encoding synced fields")?;
        let id = format!("{contact}:{provider}");
        // Two statements, in order, in the next grouped `update` of links:
        // recorded (created if need be), then `synced` unless a newer
        // change is waiting. A refused first statement skips the second.
        let res = self
            .update_links(vec![
                doc! {
                    "q": { "_id": &id },
                    "u": {
                        "$set": { "externalId": external_id, "updatedAt": now, "lastSyncedAt": now, "syncedFields": snapshot },
                        "$max": { "syncedVersion": version, "pendingVersion": version, "crmUpdatedMs": crm_updated_ms },
                        "$setOnInsert": { "contactId": contact.oid(), "customerId": customer.as_str(), "provider": provider.as_str(), "attempts": 0_i64, "syncStatus": "pending" },
                    },
                    "upsert": true,
                },
                match behind {
                    false => doc! {
                        "q": { "_id": &id, "pendingVersion": { "$lte": version } },
                        "u": { "$set": { "syncStatus": "synced", "lastError": null } },
                    },
                    true => doc! {
                        "q": { "_id": &id, "pendingVersion": { "$lte": current } },
                        // owed, by no job yet: the caller queues one, or a
                        // first sync's write step takes it
                        "u": { "$set": { "syncStatus": "pending", "pendingVersion": current, "pendingJobId": null } },
                    },
                },
            ])
            .await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.is_duplicate_key() => Err(StoreError::Conflict(format!(
                "{provider} record {external_id} is linked to another contact"
            ))),
            Err(e) => Err(e.into_anyhow("recording an inbound change").into()),
        }
    }

    /// The poll cursor of a customer's connection (zero when it never
    /// polled).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn cursor(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> anyhow::Result<PollCursor> {
        Ok(self
            .cursors
            .find_one(doc! { "_id": cursor_id(customer, provider) })
            .await
            .context("reading a poll cursor")?
            .unwrap_or_default())
    }

    /// Moves the poll cursor (after the page it covers was applied).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn save_cursor(
        &self,
        customer: &CustomerId,
        provider: Provider,
        since_ms: i64,
        boundary: &[String],
        done: bool,
    ) -> anyhow::Result<()> {
        let mut set = doc! { "sinceMs": since_ms, "boundaryIds": boundary.to_vec(), "updatedAt": DateTime::now() };
        if done {
            set.insert("lastPollAt", DateTime::now());
        }
        self.cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider) },
                doc! { "$set": set, "$unset": { "scan": "" } },
            )
            .upsert(true)
            .await
            .context("saving a poll cursor")?;
        Ok(())
    }

    /// Records how far a full scan got (after a page was applied).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn save_scan(
        &self,
        customer: &CustomerId,
        provider: Provider,
        scan: &ScanProgress,
    ) -> anyhow::Result<()> {
        self.cursors
            .update_one(
                doc! { "_id": cursor_id(customer, provider) },
                doc! { "$set": {
                    "scan": { "startedMs": scan.started_ms, "cursor": &scan.cursor },
                    "updatedAt": DateTime::now(),
                }, "$setOnInsert": { "sinceMs": 0_i64, "boundaryIds": [] } },
            )
            .upsert(true)
            .await
            .context("saving a full scan's progress")?;
        Ok(())
    }

    /// The CRM record ids a customer's links to `provider` name (the full
    /// scan reads those its listing did not show).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn linked_external_ids(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Row {
            external_id: Option<String>,
        }
        let rows: Vec<Row> = self
            .links
            .clone_with_type::<Row>()
            .find(doc! {
                "customerId": customer.as_str(),
                "provider": provider.as_str(),
                "externalId": { "$type": "string" },
            })
            .projection(doc! { "externalId": 1, "_id": 0 })
            .await
            .context("listing a connection's linked records")?
            .try_collect()
            .await
            .context("reading a connection's linked records")?;
        Ok(rows.into_iter().filter_map(|r| r.external_id).collect())
    }

    /// Contacts linked to a provider (for tests and operators).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn links_of_provider(&self, provider: Provider) -> anyhow::Result<Vec<Link>> {
        self.links
            .find(doc! { "provider": provider.as_str() })
            .await
            .context("listing links")?
            .try_collect()
            .await
            .context("reading links")
    }
}
