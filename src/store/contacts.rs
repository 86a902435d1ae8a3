//! The `contacts` collection: the app's own contact records.

use anyhow::Context;
use bson::{doc, DateTime, Document};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::claims::{Claimed, Key};
use super::grouped::GroupError;
use super::{is_duplicate_key, Outbox, Store, StoreError};
use crate::domain::{ContactId, CustomerId, Email};

/// A contact as stored. `version` grows by one with every change, so a sync
/// job can tell which state it pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// The contact id.
    #[serde(rename = "_id")]
    pub id: ContactId,
    /// The customer it belongs to (the default one for contacts written
    /// before there were customers).
    #[serde(default)]
    pub customer_id: CustomerId,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Primary email; CRMs match records on it.
    pub email: Email,
    /// Set while the contact is live; unset on delete so the address can be
    /// used again (a sparse unique index keeps live emails unique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_email: Option<String>,
    /// Primary phone.
    pub phone: Option<String>,
    /// Employer.
    pub company_name: Option<String>,
    /// Role.
    pub job_title: Option<String>,
    /// Grows by one with every change.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
    /// Set when deleted (soft delete, so the deletion can be synced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime>,
    /// The sync this change still owes, written in the same operation as
    /// the change (a transactional outbox): if queueing the jobs fails or
    /// the api dies first, the outbox relay queues them later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<Outbox>,
}

/// The fields of a new contact, already validated.
#[derive(Debug, Clone)]
pub struct NewContact {
    /// The customer it belongs to.
    pub customer_id: CustomerId,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Primary email.
    pub email: Email,
    /// Primary phone.
    pub phone: Option<String>,
    /// Employer.
    pub company_name: Option<String>,
    /// Role.
    pub job_title: Option<String>,
    /// The sync the new contact owes (see [`Contact::outbox`]).
    pub outbox: Option<Outbox>,
}

/// A partial update: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ContactPatch {
    /// Given name.
    pub first_name: Option<Option<String>>,
    /// Family name.
    pub last_name: Option<Option<String>>,
    /// Primary email (cannot be cleared).
    pub email: Option<Email>,
    /// Primary phone.
    pub phone: Option<Option<String>>,
    /// Employer.
    pub company_name: Option<Option<String>>,
    /// Role.
    pub job_title: Option<Option<String>>,
    /// The sync the change owes (see [`Contact::outbox`]).
    pub outbox: Option<Outbox>,
}

impl ContactPatch {
    fn to_update(&self) -> Document {
        let mut set = doc! { "updatedAt": DateTime::now() };
        let mut unset = Document::new();
        let mut field = |name: &str, v: &Option<Option<String>>| match v {
            Some(Some(s)) => {
                set.insert(name, s.clone());
            }
            Some(None) => {
                unset.insert(name, "");
            }
            None => {}
        };
        field("firstName", &self.first_name);
        field("lastName", &self.last_name);
        field("phone", &self.phone);
        field("companyName", &self.company_name);
        field("jobTitle", &self.job_title);
        if let Some(email) = &self.email {
            set.insert("email", email.as_str());
            set.insert("activeEmail", email.as_str());
        }
        if let Some(outbox) = &self.outbox {
            set.insert("outbox", bson::to_bson(outbox).unwrap_or(bson::Bson::Null));
        }
        let mut update = doc! { "$set": set, "$inc": { "version": 1_i64 } };
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        update
    }
}

fn email_conflict(email: &Email) -> StoreError {
    super::claims::email_taken(email.as_str())
}

impl Store {
    /// How many contacts the store holds.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn count_contacts(&self) -> anyhow::Result<u64> {
        self.contacts
            .count_documents(doc! {})
            .await
            .context("counting contacts")
    }

    /// Inserts a contact at version 1.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a live contact has the same email.
    pub async fn insert_contact(&self, new: NewContact) -> Result<Contact, StoreError> {
        let now = DateTime::now();
        let id = ContactId::new();
        let owner = id.to_string();
        let key = Key::Email {
            customer: &new.customer_id,
            email: new.email.as_str(),
        };
        if self.claim(key, &owner).await? == Claimed::Taken {
            return Err(email_conflict(&new.email));
        }
        let contact = Contact {
            id,
            customer_id: new.customer_id,
            first_name: new.first_name,
            last_name: new.last_name,
            active_email: Some(new.email.as_str().to_owned()),
            email: new.email,
            phone: new.phone,
            company_name: new.company_name,
            job_title: new.job_title,
            version: 1,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            outbox: new.outbox,
        };
        // Inserted together with the other contacts being created at the
        // moment (one `insert` for all of them).
        let inserted = self
            .groups
            .contact_inserts
            .call(contact.clone())
            .await
            .unwrap_or(Err(GroupError::Gone));
        let key = Key::Email {
            customer: &contact.customer_id,
            email: contact.email.as_str(),
        };
        let failed = match inserted {
            Ok(()) => return Ok(contact),
            Err(e) if e.is_duplicate_key() => {
                // The driver retries a write whose reply was lost; a server
                // that does not recognise the retry reports our own first
                // insert as a duplicate. The id is ours alone, so finding it
                // means this insert landed.
                match self.contact(contact.id).await {
                    Ok(Some(_)) => return Ok(contact),
                    Ok(None) => email_conflict(&contact.email),
                    Err(e) => e.context("inserting a contact").into(),
                }
            }
            Err(e) => e.into_anyhow("inserting a contact").into(),
        };
        self.release_or_log(key, &owner).await;
        Err(failed)
    }

    /// A contact, deleted or not, with all its links, read together with
    /// the other contacts being read at the moment (two `find`s by `_id`).
    ///
    /// # Errors
    /// When the database fails or a document does not parse.
    pub async fn contact_with_links(
        &self,
        id: ContactId,
    ) -> anyhow::Result<Option<(Contact, Vec<super::Link>)>> {
        self.groups
            .contact_reads
            .call(id)
            .await
            .unwrap_or(Err(GroupError::Gone))
            .map_err(|e| e.into_anyhow(&format!("reading contact {id} with its links")))
    }

    /// A contact, deleted or not.
    ///
    /// # Errors
    /// When the database fails or the document does not parse.
    pub async fn contact(&self, id: ContactId) -> anyhow::Result<Option<Contact>> {
        self.contacts
            .find_one(doc! { "_id": id.oid() })
            .await
            .with_context(|| format!("reading contact {id}"))
    }

    /// Applies a patch to a live contact; `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the new email belongs to another contact.
    pub async fn update_contact(
        &self,
        id: ContactId,
        patch: &ContactPatch,
    ) -> Result<Option<Contact>, StoreError> {
        self.update_contact_at(id, None, patch).await
    }

    /// Applies a patch to a live contact that is still at `version` (any
    /// version when `None`); `None` when there is no such contact, so a
    /// merge computed from an older read is never written over a newer one.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the new email belongs to another contact.
    pub async fn update_contact_at(
        &self,
        id: ContactId,
        version: Option<i64>,
        patch: &ContactPatch,
    ) -> Result<Option<Contact>, StoreError> {
        // A new email is claimed first, and the old one freed after.
        let moved = match &patch.email {
            Some(email) => {
                let Some(current) = self.contact(id).await?.filter(|c| c.deleted_at.is_none())
                else {
                    return Ok(None);
                };
                if current.email == *email {
                    None
                } else {
                    let key = Key::Email {
                        customer: &current.customer_id,
                        email: email.as_str(),
                    };
                    if self.claim(key, &id.to_string()).await? == Claimed::Taken {
                        return Err(email_conflict(email));
                    }
                    Some((current.customer_id, current.email, email.clone()))
                }
            }
            None => None,
        };
        let res = self.write_patch(id, version, patch).await;
        if let Some((customer, old, new)) = &moved {
            // the email the contact does not hold (any more) is freed
            let freed = match &res {
                Ok(Some(_)) => old,
                _ => new,
            };
            let key = Key::Email {
                customer,
                email: freed.as_str(),
            };
            self.release_or_log(key, &id.to_string()).await;
        }
        res
    }

    async fn write_patch(
        &self,
        id: ContactId,
        version: Option<i64>,
        patch: &ContactPatch,
    ) -> Result<Option<Contact>, StoreError> {
        let mut filter = doc! { "_id": id.oid(), "deletedAt": { "$exists": false } };
        if let Some(v) = version {
            filter.insert("version", v);
        }
        let res = self
            .contacts
            .find_one_and_update(filter, patch.to_update())
            .return_document(ReturnDocument::After)
            .await;
        match res {
            Ok(c) => Ok(c),
            Err(e) if is_duplicate_key(&e) => Err(email_conflict(
                patch
                    .email
                    .as_ref()
                    .expect("only an email change can conflict"),
            )),
            Err(e) => Err(anyhow::Error::new(e).context("updating a contact").into()),
        }
    }

    /// Marks a live contact deleted; `None` when there is none.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn delete_contact(
        &self,
        id: ContactId,
        outbox: Option<&Outbox>,
    ) -> anyhow::Result<Option<Contact>> {
        let mut set = doc! { "deletedAt": DateTime::now(), "updatedAt": DateTime::now() };
        if let Some(outbox) = outbox {
            set.insert(
                "outbox",
                bson::to_bson(outbox).context("encoding an outbox")?,
            );
        }
        let deleted = self
            .contacts
            .find_one_and_update(
                doc! { "_id": id.oid(), "deletedAt": { "$exists": false } },
                doc! {
                    "$set": set,
                    "$unset": { "activeEmail": "" },
                    "$inc": { "version": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .with_context(|| format!("deleting contact {id}"))?;
        if let Some(c) = &deleted {
            let key = Key::Email {
                customer: &c.customer_id,
                email: c.email.as_str(),
            };
            self.release_or_log(key, &id.to_string()).await;
            let links = self.links_of(&[id]).await?;
            self.remember_unrecorded_creates(c, &links).await?;
        }
        Ok(deleted)
    }

    /// Brings a deleted contact back (its CRM record was restored), at a
    /// new version, with `outbox` (the pushes that bring the other CRMs
    /// back too). `None` when the contact is not deleted (or was erased
    /// for privacy: nothing is left to restore).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a live contact has taken its email.
    pub async fn restore_contact(
        &self,
        id: ContactId,
        outbox: Option<&Outbox>,
    ) -> Result<Option<Contact>, StoreError> {
        let Some(deleted) = self.contact(id).await?.filter(|c| c.deleted_at.is_some()) else {
            return Ok(None);
        };
        let owner = id.to_string();
        let key = Key::Email {
            customer: &deleted.customer_id,
            email: deleted.email.as_str(),
        };
        if self.claim(key, &owner).await? == Claimed::Taken {
            return Err(email_conflict(&deleted.email));
        }
        let mut set = doc! { "activeEmail": deleted.email.as_str(), "updatedAt": DateTime::now() };
        if let Some(outbox) = outbox {
            set.insert(
                "outbox",
                bson::to_bson(outbox).context("encoding an outbox")?,
            );
        }
        let restored = self
            .contacts
            .find_one_and_update(
                doc! {
                    "_id": id.oid(),
                    "deletedAt": { "$exists": true },
                    "erasedAt": { "$exists": false },
                },
                doc! { "$set": set, "$unset": { "deletedAt": "" }, "$inc": { "version": 1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .await
            .with_context(|| format!("restoring contact {id}"));
        if !matches!(restored, Ok(Some(_))) {
            let key = Key::Email {
                customer: &deleted.customer_id,
                email: deleted.email.as_str(),
            };
            self.release_or_log(key, &owner).await;
        }
        Ok(restored?)
    }

    /// Erases a deleted contact's personal data (see
    /// `InboundSync::purge`): its fields, its email (replaced by an address
    /// of its id that cannot be delivered), what its links remember of it,
    /// and the notes and errors of its sync log entries. A live contact is
    /// left as it is: only a deletion is erased.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn purge_contact(&self, id: ContactId) -> anyhow::Result<()> {
        let erased = self
            .contacts
            .update_one(
                doc! { "_id": id.oid(), "deletedAt": { "$exists": true } },
                doc! {
                    "$set": {
                        "email": format!("erased-{id}@erased.invalid"),
                        "erasedAt": DateTime::now(),
                    },
                    "$unset": {
                        "firstName": "", "lastName": "", "phone": "",
                        "companyName": "", "jobTitle": "", "outbox": "",
                    },
                },
            )
            .await
            .context("erasing a contact")?;
        if erased.matched_count == 0 {
            return Ok(());
        }
        self.links
            .update_many(
                doc! { "contactId": id.oid() },
                doc! { "$unset": { "syncedFields": "", "pushIntent": "", "lastError": "" } },
            )
            .await
            .context("erasing a contact's links")?;
        self.logs
            .update_many(
                doc! { "contactId": id.oid() },
                doc! { "$unset": { "conflict": "", "error": "" } },
            )
            .await
            .context("erasing a contact's sync log")?;
        Ok(())
    }

    /// A page of live contacts, newest first, optionally only a customer's
    /// and only those with the given ids; with the total count.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list_contacts(
        &self,
        customer: Option<&CustomerId>,
        only: Option<&[ContactId]>,
        skip: u64,
        limit: i64,
    ) -> anyhow::Result<(Vec<Contact>, u64)> {
        let mut filter = doc! { "deletedAt": { "$exists": false } };
        if let Some(c) = customer {
            filter.insert("customerId", c.as_str());
        }
        if let Some(ids) = only {
            let oids: Vec<_> = ids.iter().map(|i| i.oid()).collect();
            filter.insert("_id", doc! { "$in": oids });
        }
        let total = self
            .contacts
            .count_documents(filter.clone())
            .await
            .context("counting contacts")?;
        let page = self
            .contacts
            .find(filter)
            .sort(doc! { "_id": -1 })
            .skip(skip)
            .limit(limit)
            .await
            .context("listing contacts")?
            .try_collect()
            .await
            .context("reading contacts")?;
        Ok((page, total))
    }

    /// A page of a customer's live contacts, newest first, after `after`
    /// (from the newest when `None`): a walk over all of them pages by id,
    /// which reads each contact once (a `skip` reads every one before the
    /// page again, and a count the whole set).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn contacts_after(
        &self,
        customer: &CustomerId,
        after: Option<ContactId>,
        limit: i64,
    ) -> anyhow::Result<Vec<Contact>> {
        let mut filter =
            doc! { "deletedAt": { "$exists": false }, "customerId": customer.as_str() };
        if let Some(last) = after {
            filter.insert("_id", doc! { "$lt": last.oid() });
        }
        self.contacts
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(limit)
            .await
            .context("listing contacts")?
            .try_collect()
            .await
            .context("reading contacts")
    }

    /// The customer's live contacts among `ids`, without a count.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn contacts_among(
        &self,
        customer: &CustomerId,
        ids: &[ContactId],
    ) -> anyhow::Result<Vec<Contact>> {
        let oids: Vec<_> = ids.iter().map(|i| i.oid()).collect();
        self.contacts
            .find(
                doc! { "deletedAt": { "$exists": false }, "customerId": customer.as_str(),
                "_id": { "$in": oids } },
            )
            .await
            .context("listing contacts")?
            .try_collect()
            .await
            .context("reading contacts")
    }
}

impl From<&Contact> for crate::domain::UniversalContact {
    fn from(c: &Contact) -> Self {
        Self {
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            full_name: None,
            primary_email: Some(c.email.as_str().to_owned()),
            primary_phone: c.phone.clone(),
            company_name: c.company_name.clone(),
            job_title: c.job_title.clone(),
        }
    }
}
