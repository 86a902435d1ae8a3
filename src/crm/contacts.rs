//! The contact actions the app runs, typed: what each sends, what its
//! answer means. Only here is a CRM's "no such record" read (the
//! connector's own 404 under the action run, [`CrmError::NotFound`]); the
//! callers get `None`, [`Updated::Gone`] or a deletion that is already done.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{CrmError, CrmRecord, IntegrationApp};
use crate::domain::{CustomerId, Provider};

/// What an update found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// The record holds the fields now.
    Done,
    /// The CRM no longer has the record.
    Gone,
}

/// `create-contact`'s output (the SDK's `DataCollectionCreateResponse`).
#[derive(Deserialize)]
struct Created {
    id: String,
}

/// A universal record read from the CRM.
fn record(v: &Value) -> Result<CrmRecord, CrmError> {
    CrmRecord::parse(v).map_err(CrmError::Permanent)
}

impl IntegrationApp {
    /// The record `id` (`get-contact`); `None` when the CRM has no such
    /// record. A record the CRM deleted but still returns comes back with
    /// `deleted` set.
    ///
    /// # Errors
    /// A classified [`CrmError`]; `Permanent` for an answer that is not a
    /// universal record.
    pub async fn get_contact(
        &self,
        customer: &CustomerId,
        provider: Provider,
        id: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        match self
            .run::<_, Value>(customer, provider, "get-contact", &json!({ "id": id }))
            .await
        {
            Ok(v) => record(&v).map(Some),
            Err(CrmError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The live record with primary email `email` (`find-contact`), if any.
    ///
    /// # Errors
    /// A classified [`CrmError`].
    pub async fn find_contact(
        &self,
        customer: &CustomerId,
        provider: Provider,
        email: &str,
    ) -> Result<Option<CrmRecord>, CrmError> {
        let found: Value = self
            .run(
                customer,
                provider,
                "find-contact",
                &json!({ "email": email }),
            )
            .await?;
        if found.is_null() {
            return Ok(None);
        }
        record(&found).map(Some)
    }

    /// Creates a record with the universal `fields` (`create-contact`);
    /// returns its id.
    ///
    /// # Errors
    /// A classified [`CrmError`].
    pub async fn create_contact(
        &self,
        customer: &CustomerId,
        provider: Provider,
        fields: &Value,
    ) -> Result<String, CrmError> {
        let out: Created = self
            .run(
                customer,
                provider,
                "create-contact",
                &json!({ "fields": fields }),
            )
            .await?;
        Ok(out.id)
    }

    /// Writes the universal `fields` to the record `id` (`update-contact`).
    ///
    /// # Errors
    /// A classified [`CrmError`].
    pub async fn update_contact(
        &self,
        customer: &CustomerId,
        provider: Provider,
        id: &str,
        fields: &Value,
    ) -> Result<Updated, CrmError> {
        let input = json!({ "id": id, "fields": fields });
        match self
            .run::<_, serde::de::IgnoredAny>(customer, provider, "update-contact", &input)
            .await
        {
            Ok(_) => Ok(Updated::Done),
            Err(CrmError::NotFound(_)) => Ok(Updated::Gone),
            Err(e) => Err(e),
        }
    }

    /// Deletes the record `id` (`delete-contact`); a record the CRM no
    /// longer has is deleted already.
    ///
    /// # Errors
    /// A classified [`CrmError`].
    pub async fn delete_contact(
        &self,
        customer: &CustomerId,
        provider: Provider,
        id: &str,
    ) -> Result<(), CrmError> {
        match self
            .run::<_, serde::de::IgnoredAny>(
                customer,
                provider,
                "delete-contact",
                &json!({ "id": id }),
            )
            .await
        {
            Ok(_) | Err(CrmError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
