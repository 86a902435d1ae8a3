//! The `contact_links` collection: one document per (contact, provider),
//! saying which CRM record mirrors the contact and whether it is up to date.

use anyhow::Context;
use bson::{doc, DateTime};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::grouped::GroupError;
use super::ids::link_id;
use super::marks::SyncedMark;
use super::{Store, StoreError};
use crate::domain::{ContactId, CustomerId, Provider, SyncStatus};

/// A contact's link to one CRM record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// `{contactId}:{provider}`, so an upsert cannot create a second link.
    #[serde(rename = "_id")]
    pub id: String,
    /// The contact.
    pub contact_id: ContactId,
    /// The contact's customer, whose CRM account the record is in.
    #[serde(default)]
    pub customer_id: CustomerId,
    /// The CRM.
    pub provider: Provider,
    /// The CRM record's id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Where the link stands.
    pub sync_status: SyncStatus,
    /// Why the last push failed for good.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Attempts the last failed job used.
    #[serde(default)]
    pub attempts: i64,
    /// The contact version the newest queued push carries.
    #[serde(default)]
    pub pending_version: i64,
    /// The newest contact version the CRM is known to hold.
    #[serde(default)]
    pub synced_version: i64,
    /// The CRM's `updatedTime` (ms) of the newest state applied or pushed;
    /// older inbound changes are ignored.
    #[serde(default)]
    pub crm_updated_ms: i64,
    /// The contact values both sides held at the last sync: a CRM record
    /// that differs from them was changed in the CRM since.
    #[serde(default)]
    pub synced_fields: Option<crate::domain::UniversalContact>,
    /// What a push in progress is about to write to the CRM, recorded
    /// before the write: if the worker dies after the CRM accepted it but
    /// before this link recorded it, a CRM record holding these values is
    /// recognised as the app's own push, not as a change made in the CRM.
    #[serde(default)]
    pub push_intent: Option<crate::domain::UniversalContact>,
    /// The job that last touched the link.
    #[serde(default)]
    pub last_job_id: Option<String>,
    /// The job queued to bring the link up to date.
    #[serde(default)]
    pub pending_job_id: Option<String>,
    /// When the link last synced, either way.
    #[serde(default)]
    pub last_synced_at: Option<DateTime>,
    /// When the CRM last accepted a push from the app (Redis clock, the one
    /// every process shares).
    #[serde(default)]
    pub last_pushed_at: Option<DateTime>,
    /// Last change of this document.
    pub updated_at: DateTime,
}

impl Link {
    /// The push intent, if the CRM record holds exactly its values: then
    /// the record is the app's own unrecorded push, not a CRM-side change.
    pub fn intent_matching(
        &self,
        crm: &crate::domain::UniversalContact,
    ) -> Option<&crate::domain::UniversalContact> {
        self.push_intent.as_ref().filter(|i| i.same_values(crm))
    }

    /// What both sides held when they last agreed, to merge `crm` against:
    /// the matching push intent, else the snapshot of the last sync.
    pub fn merge_base(
        &self,
        crm: &crate::domain::UniversalContact,
    ) -> Option<&crate::domain::UniversalContact> {
        self.intent_matching(crm).or(self.synced_fields.as_ref())
    }
}

impl Link {
    /// What [`Store::mark_pending`] makes of a link that did not exist: the
    /// links of a contact just created, known without reading them back.
    pub fn new_pending(
        contact: ContactId,
        customer: &CustomerId,
        provider: Provider,
        job_id: &str,
        version: i64,
    ) -> Self {
        Self {
            id: link_id(contact, provider),
            contact_id: contact,
            customer_id: customer.clone(),
            provider,
            external_id: None,
            sync_status: SyncStatus::Pending,
            last_error: None,
            attempts: 0,
            pending_version: version,
            synced_version: 0,
            crm_updated_ms: 0,
            synced_fields: None,
            push_intent: None,
            last_job_id: None,
            pending_job_id: Some(job_id.to_owned()),
            last_synced_at: None,
            last_pushed_at: None,
            updated_at: DateTime::now(),
        }
    }
}

impl Store {
    /// Marks the links `pending` for a change at `version` (creating them),
    /// each with the id of the job that is to push it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn mark_pending(
        &self,
        contact: ContactId,
        customer: &CustomerId,
        jobs: &[(Provider, String)],
        version: i64,
    ) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // One statement per link, sent in one `update` command with the
        // other link writes of the moment.
        let now = DateTime::now();
        let updates: Vec<bson::Document> = jobs
            .iter()
            .map(|(provider, job_id)| {
                doc! {
                    "q": { "_id": link_id(contact, *provider) },
                    "u": {
                        "$set": {
                            "syncStatus": "pending",
                            "pendingJobId": job_id,
                            "updatedAt": now,
                        },
                        "$max": { "pendingVersion": version },
                        "$setOnInsert": {
                            "contactId": contact.oid(),
                            "customerId": customer.as_str(),
                            "provider": provider.as_str(),
                            "attempts": 0_i64,
                            "syncedVersion": 0_i64,
                        },
                    },
                    "upsert": true,
                }
            })
            .collect();
        self.update_links(updates)
            .await
            .map_err(|e| e.into_anyhow(&format!("marking the links of {contact} pending")))
    }

    /// Whether the customer's connection with `provider` has at least
    /// `n` links waiting for a push (a backlog worth a batch).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn pending_at_least(
        &self,
        customer: &CustomerId,
        provider: Provider,
        n: u64,
    ) -> anyhow::Result<bool> {
        let found = self
            .links
            .count_documents(
                doc! { "customerId": customer.as_str(), "syncStatus": "pending",
                "provider": provider.as_str() },
            )
            .limit(n)
            .await
            .context("counting pending links")?;
        Ok(found >= n)
    }

    /// The links of a contact just created, `pending` (what
    /// [`Self::mark_pending`] would make of no links), inserted with the
    /// other links being created at the moment: an insert costs the server
    /// far less than an upsert. `intent` is what the first push will write
    /// (see [`Link::push_intent`]), recorded here so the push need not.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn insert_pending_links(
        &self,
        contact: ContactId,
        customer: &CustomerId,
        jobs: &[(Provider, String)],
        version: i64,
        intent: &crate::domain::UniversalContact,
    ) -> anyhow::Result<()> {
        let inserts = jobs.iter().map(|(provider, job_id)| async move {
            let link = Link {
                push_intent: Some(intent.clone()),
                ..Link::new_pending(contact, customer, *provider, job_id, version)
            };
            let doc = bson::to_document(&link).context("encoding a link")?;
            match self.groups.link_inserts.call(doc).await {
                Some(Ok(())) => Ok(()),
                // there already (the driver retried the insert, or the
                // outbox relay got there first): it is pending either way
                Some(Err(e)) if e.is_duplicate_key() => Ok(()),
                Some(Err(e)) => Err(e.into_anyhow(&format!("creating the links of {contact}"))),
                None => Err(GroupError::Gone.into_anyhow("creating links")),
            }
        });
        futures::future::try_join_all(inserts).await?;
        Ok(())
    }

    /// Applies one caller's link update statements, in order, in the next
    /// grouped `update` command.
    pub(crate) async fn update_links(
        &self,
        statements: Vec<bson::Document>,
    ) -> Result<(), GroupError> {
        self.groups
            .link_updates
            .call(statements)
            .await
            .unwrap_or(Err(GroupError::Gone))
    }

    /// The link of a contact with a provider.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn link(
        &self,
        contact: ContactId,
        provider: Provider,
    ) -> anyhow::Result<Option<Link>> {
        self.links
            .find_one(doc! { "_id": link_id(contact, provider) })
            .await
            .with_context(|| format!("reading link {contact}:{provider}"))
    }

    /// Every link of the given contacts.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn links_of(&self, contacts: &[ContactId]) -> anyhow::Result<Vec<Link>> {
        let oids: Vec<_> = contacts.iter().map(|c| c.oid()).collect();
        self.links
            .find(doc! { "contactId": { "$in": oids } })
            .await
            .context("listing links")?
            .try_collect()
            .await
            .context("reading links")
    }

    /// A page of the contacts with a link in `status` (only `customer`'s
    /// when given), newest first, and how many there are in all. Read
    /// through the status indexes: a customer's page costs its own links,
    /// whatever other customers hold.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn contacts_with_status(
        &self,
        status: SyncStatus,
        customer: Option<&CustomerId>,
        skip: u64,
        limit: i64,
    ) -> anyhow::Result<(Vec<ContactId>, u64)> {
        let mut scope = doc! { "syncStatus": status.as_str() };
        if let Some(c) = customer {
            scope.insert("customerId", c.as_str());
        }
        let distinct = [
            doc! { "$match": scope },
            doc! { "$group": { "_id": "$contactId" } },
        ];
        let mut page = distinct.to_vec();
        page.extend([
            doc! { "$sort": { "_id": -1 } },
            doc! { "$skip": i64::try_from(skip).unwrap_or(i64::MAX) },
            doc! { "$limit": limit.max(1) },
        ]);
        let ids: Vec<ContactId> = self
            .links
            .clone_with_type::<bson::Document>()
            .aggregate(page)
            .await
            .context("listing contacts by link status")?
            .try_collect::<Vec<_>>()
            .await
            .context("reading contacts by link status")?
            .iter()
            .filter_map(|d| d.get_object_id("_id").ok().map(ContactId::from_oid))
            .collect();
        let mut count = distinct.to_vec();
        count.push(doc! { "$count": "n" });
        let total = self
            .links
            .clone_with_type::<bson::Document>()
            .aggregate(count)
            .await
            .context("counting contacts by link status")?
            .try_collect::<Vec<_>>()
            .await
            .context("reading the count of contacts by link status")?
            .first()
            .map_or(0, super::count_field);
        Ok((ids, total))
    }

    /// How many links are in `status`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn count_links(&self, status: SyncStatus) -> anyhow::Result<u64> {
        self.links
            .count_documents(doc! { "syncStatus": status.as_str() })
            .await
            .context("counting links")
    }

    /// Records what a push is about to write to the CRM (see
    /// [`Link::push_intent`]).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn record_push_intent(
        &self,
        contact: ContactId,
        customer: &CustomerId,
        provider: Provider,
        fields: &crate::domain::UniversalContact,
    ) -> anyhow::Result<()> {
        let intent = bson::to_bson(fields).context("encoding a push intent")?;
        self.update_links(vec![doc! {
            "q": { "_id": link_id(contact, provider) },
            "u": {
                "$set": { "pushIntent": intent, "updatedAt": DateTime::now() },
                "$setOnInsert": {
                    "contactId": contact.oid(),
                    "customerId": customer.as_str(),
                    "provider": provider.as_str(),
                    "syncStatus": "pending",
                    "pendingVersion": 0_i64,
                    "syncedVersion": 0_i64,
                    "attempts": 0_i64,
                },
            },
            "upsert": true,
        }])
        .await
        .map_err(|e| e.into_anyhow(&format!("recording a push intent on {contact}:{provider}")))
    }

    /// Takes the CRM record `old` off the contact's link before the link
    /// records another one: the link is deleted and written again without
    /// its external id, never updated from one id to the other, because
    /// secantusd-rs keeps a unique key an update changed (a delete frees
    /// it) and `old` could then never be linked again (a record restored
    /// in the CRM). Nothing happens when the link holds another id by now.
    /// A crash between the delete and the insert leaves the contact without
    /// a link with the CRM; its next push finds the record by email again.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn release_external_id(
        &self,
        contact: ContactId,
        provider: Provider,
        old: &str,
    ) -> anyhow::Result<()> {
        let links = self.links.clone_with_type::<bson::Document>();
        let filter = doc! { "_id": link_id(contact, provider), "externalId": old };
        let Some(mut link) = links
            .find_one(filter.clone())
            .await
            .context("reading a link to release its record")?
        else {
            return Ok(());
        };
        link.remove("externalId");
        let deleted = links
            .delete_one(filter)
            .await
            .context("releasing a link's record")?;
        if deleted.deleted_count == 1 {
            match links.insert_one(&link).await {
                Ok(_) => {}
                // written again meanwhile by a push or a change of its own
                Err(e) if super::is_duplicate_key(&e) => {}
                Err(e) => return Err(e).context("writing a released link back"),
            }
        }
        Ok(())
    }

    /// Records a successful push of `version`, in one grouped `update`
    /// with the other pushes recorded at the moment. The link turns
    /// `synced` only if no newer change is waiting.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another contact is linked to the same CRM
    /// record (two contacts mapped to one record).
    #[allow(clippy::too_many_arguments)] // one per recorded fact
    pub async fn mark_synced(
        &self,
        contact: ContactId,
        customer: &CustomerId,
        provider: Provider,
        external_id: &str,
        version: i64,
        job_id: &str,
        fields: Option<&crate::domain::UniversalContact>,
        pushed_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let fields = match fields {
            Some(f) => bson::to_bson(f).context("encoding synced fields")?,
            None => bson::Bson::Null,
        };
        let mark = SyncedMark {
            contact,
            customer: customer.clone(),
            provider,
            external_id: external_id.to_owned(),
            version,
            job_id: job_id.to_owned(),
            fields,
            pushed_ms,
            at: DateTime::now(),
        };
        let res = self
            .groups
            .link_syncs
            .call(mark)
            .await
            .unwrap_or(Err(GroupError::Gone));
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.is_duplicate_key() => Err(StoreError::Conflict(format!(
                "{provider} record {external_id} is already linked to another contact"
            ))),
            Err(e) => Err(e.into_anyhow("recording a sync").into()),
        }
    }

    /// Records that pushing failed for good.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn mark_error(
        &self,
        contact: ContactId,
        customer: &CustomerId,
        provider: Provider,
        error: &str,
        attempts: u32,
        job_id: &str,
    ) -> anyhow::Result<()> {
        self.update_links(vec![doc! {
            "q": { "_id": link_id(contact, provider) },
            "u": {
                "$set": {
                    "syncStatus": "error",
                    "lastError": error,
                    "attempts": i64::from(attempts),
                    "lastJobId": job_id,
                    "updatedAt": DateTime::now(),
                },
                "$setOnInsert": {
                    "contactId": contact.oid(),
                    "customerId": customer.as_str(),
                    "provider": provider.as_str(),
                    "pendingVersion": 0_i64,
                    "syncedVersion": 0_i64,
                },
            },
            "upsert": true,
        }])
        .await
        .map_err(|e| e.into_anyhow("marking a link in error"))
    }
}
