//! Domain types, parsed once at the edge: a value of these types is valid.

use std::fmt;
use std::str::FromStr;

use bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

mod secret;
mod universal;

pub use secret::Secret;
pub use universal::UniversalContact;

/// A CRM the contacts are synced with, reached through Integration.app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// HubSpot.
    Hubspot,
    /// Pipedrive.
    Pipedrive,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 2] = [Provider::Hubspot, Provider::Pipedrive];

    /// The integration key, also the connection selector in Integration.app.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hubspot => "hubspot",
            Self::Pipedrive => "pipedrive",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "hubspot" => Ok(Self::Hubspot),
            "pipedrive" => Ok(Self::Pipedrive),
            other => Err(format!(
                "unknown provider {other:?} (expected hubspot or pipedrive)"
            )),
        }
    }
}

/// The id of a contact in the app's store (a MongoDB ObjectId, 24 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactId(ObjectId);

impl ContactId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(ObjectId::new())
    }

    /// The id of a stored ObjectId.
    pub fn from_oid(oid: ObjectId) -> Self {
        Self(oid)
    }

    /// The ObjectId inside.
    pub fn oid(self) -> ObjectId {
        self.0
    }

    /// Parses 24 hex digits.
    ///
    /// # Errors
    /// When `s` is not an ObjectId.
    pub fn parse(s: &str) -> Result<Self, String> {
        ObjectId::parse_str(s.trim())
            .map(Self)
            .map_err(|_| format!("malformed contact id {s:?}: expected 24 hex digits"))
    }
}

impl Default for ContactId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

/// The id of one of the app's customers: the `id` claim of the tokens
/// minted for it at Integration.app, chosen by the app (`42`, `acme-eu`).
/// 1–64 characters out of letters, digits and `-_.:@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

/// The customer that data without one belongs to (set once at start-up
/// from `INTEGRATION_APP_CUSTOMER_ID`).
static DEFAULT_CUSTOMER: std::sync::OnceLock<CustomerId> = std::sync::OnceLock::new();

/// What `INTEGRATION_APP_CUSTOMER_ID` defaults to.
pub const DEFAULT_CUSTOMER_ID: &str = "contact-sync";

impl CustomerId {
    /// Parses an id.
    ///
    /// # Errors
    /// When `s` is empty, longer than 64 characters or holds other
    /// characters.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.:@".contains(c);
        if s.is_empty() || s.len() > 64 || !s.chars().all(ok) {
            return Err(format!(
                "invalid customer id {s:?}: 1-64 letters, digits or -_.:@"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The default customer: what was written before there were customers
    /// belongs to it, and single-customer deployments only ever use it.
    pub fn default_customer() -> Self {
        DEFAULT_CUSTOMER
            .get_or_init(|| Self(DEFAULT_CUSTOMER_ID.to_owned()))
            .clone()
    }

    /// Sets the default customer for this process (the first call wins).
    pub fn set_default(id: Self) {
        let _ = DEFAULT_CUSTOMER.set(id);
    }
}

impl Default for CustomerId {
    fn default() -> Self {
        Self::default_customer()
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CustomerId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CustomerId> for String {
    fn from(c: CustomerId) -> Self {
        c.0
    }
}

/// An email address, trimmed and lower-cased (CRMs match on it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@`, a non-empty local part, a dotted domain,
    /// no spaces or control characters, at most 254 characters.
    ///
    /// # Errors
    /// When the address is not of that form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_lowercase();
        let bad = || format!("invalid email address {s:?}");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(bad());
        }
        Ok(Self(s))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

/// Where a contact stands with one CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    /// A change waits to be pushed.
    Pending,
    /// The CRM holds the latest version.
    Synced,
    /// Pushing failed for good; an operator must look.
    Error,
}

impl SyncStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Synced => "synced",
            Self::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_parsing() {
        let cases = [
            ("Ada@Example.com", Some("ada@example.com"), "lower-cased"),
            (" a@b.io ", Some("a@b.io"), "trimmed"),
            ("no-at.example.com", None, "no @"),
            ("a@b", None, "no dot in domain"),
            ("a@@b.com", None, "two @"),
            ("a b@c.com", None, "space"),
            ("@b.com", None, "empty local part"),
        ];
        for (input, want, why) in cases {
            assert_eq!(
                Email::parse(input).ok().map(|e| e.0),
                want.map(String::from),
                "{why}"
            );
        }
    }

    #[test]
    fn ids_and_providers() {
        assert!(ContactId::parse("not-an-id").is_err());
        let id = ContactId::new();
        assert_eq!(ContactId::parse(&id.to_string()), Ok(id));
        assert_eq!("pipedrive".parse::<Provider>(), Ok(Provider::Pipedrive));
        assert!("salesforce".parse::<Provider>().is_err());
    }
}
