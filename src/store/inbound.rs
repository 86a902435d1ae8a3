//! Store operations of inbound sync: finding the local side of a CRM record,
//! applying CRM values, idempotency of webhook events, and poll cursors.

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{is_duplicate_key, Contact, Link, Store, StoreError};
use crate::domain::UniversalContact;
use crate::domain::{CustomerId, Email, Provider};

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
}

/// The id of a connection's cursor: `{customer}:{provider}`.
pub(crate) fn cursor_id(customer: &CustomerId, provider: Provider) -> String {
    format!("{customer}:{provider}")
}

impl Store {
    /// The link that points at a CRM record.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn link_by_external(
        &self,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
    ) -> anyhow::Result<Option<Link>> {
        self.links
            .find_one(doc! { "customerId": customer.as_str(), "provider": provider.as_str(), "externalId": external_id })
            .await
            .context("reading a link by external id")
    }

    /// The customer's live contact with this email.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn live_contact_by_email(
        &self,
        customer: &CustomerId,
        email: &Email,
    ) -> anyhow::Result<Option<Contact>> {
        self.contacts
            .find_one(doc! { "customerId": customer.as_str(), "activeEmail": email.as_str() })
            .await
            .context("reading a contact by email")
    }

    /// Records that the link mirrors the CRM record at `crm_updated_ms`, and
    /// that the contact's `version` came from (or is already in) the CRM.
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
        let (customer, contact) = (&contact.customer_id, contact.id);
        let now = DateTime::now();
        let snapshot = bson::to_bson(fields).context("encoding synced fields")?;
        let res = self
            .links
            .update_one(
                doc! { "_id": format!("{contact}:{provider}") },
                doc! {
                    "$set": { "externalId": external_id, "updatedAt": now, "lastSyncedAt": now, "syncedFields": snapshot },
                    "$max": { "syncedVersion": version, "pendingVersion": version, "crmUpdatedMs": crm_updated_ms },
                    "$setOnInsert": { "contactId": contact.oid(), "customerId": customer.as_str(), "provider": provider.as_str(), "attempts": 0_i64, "syncStatus": "pending" },
                },
            )
            .upsert(true)
            .await;
        match res {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{provider} record {external_id} is linked to another contact"
                )))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("recording an inbound change")
                    .into())
            }
        }
        self.links
            .update_one(
                doc! { "_id": format!("{contact}:{provider}"), "pendingVersion": { "$lte": version } },
                doc! { "$set": { "syncStatus": "synced", "lastError": null } },
            )
            .await
            .context("marking a link synced")?;
        Ok(())
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
                doc! { "$set": set },
            )
            .upsert(true)
            .await
            .context("saving a poll cursor")?;
        Ok(())
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
