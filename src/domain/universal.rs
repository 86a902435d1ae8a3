//! The universal (Integration.app UDM) shape of a contact.

use serde::{Deserialize, Serialize};

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

fn norm(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl UniversalContact {
    /// Whether two records hold the same contact values (blank equals
    /// absent, emails compare case-insensitively, `fullName` is derived and
    /// ignored).
    pub fn same_values(&self, other: &Self) -> bool {
        let email = |v: &Option<String>| norm(v).map(str::to_lowercase);
        norm(&self.first_name) == norm(&other.first_name)
            && norm(&self.last_name) == norm(&other.last_name)
            && norm(&self.primary_phone) == norm(&other.primary_phone)
            && norm(&self.company_name) == norm(&other.company_name)
            && norm(&self.job_title) == norm(&other.job_title)
            && email(&self.primary_email) == email(&other.primary_email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_ignores_blanks_case_and_full_name() {
        let a = UniversalContact {
            first_name: Some("Ada".into()),
            primary_email: Some("Ada@Example.com".into()),
            job_title: Some(" ".into()),
            ..Default::default()
        };
        let b = UniversalContact {
            first_name: Some("Ada".into()),
            full_name: Some("Ada".into()),
            primary_email: Some("ada@example.com".into()),
            ..Default::default()
        };
        assert!(a.same_values(&b));
        let c = UniversalContact {
            last_name: Some("L".into()),
            ..b.clone()
        };
        assert!(!a.same_values(&c));
    }
}
