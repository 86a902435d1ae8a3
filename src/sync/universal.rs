//! The universal (Integration.app UDM) shape of a contact.

use serde::{Deserialize, Serialize};

use crate::store::Contact;

/// Universal contact fields the actions take and return. A field sent as
/// `null` clears it in the CRM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UniversalContact {
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// Primary email.
    pub primary_email: Option<String>,
    /// Primary phone.
    pub primary_phone: Option<String>,
    /// Employer.
    pub company_name: Option<String>,
    /// Role.
    pub job_title: Option<String>,
}

impl From<&Contact> for UniversalContact {
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
