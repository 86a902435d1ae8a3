//! The ids of the documents whose id is made of others': a link's, a
//! connection's poll cursor's.

use crate::domain::{ContactId, CustomerId, Provider};

/// The id of a contact's link with a CRM: `{contact}:{provider}`.
pub(crate) fn link_id(contact: ContactId, provider: Provider) -> String {
    format!("{contact}:{provider}")
}

/// The id of a connection's cursor: `{customer}:{provider}`.
pub(crate) fn cursor_id(customer: &CustomerId, provider: Provider) -> String {
    format!("{customer}:{provider}")
}
