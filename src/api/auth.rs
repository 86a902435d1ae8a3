//! Bearer-token auth for /api/*, with three roles. Operators (`API_TOKEN`
//! and `OPERATOR_TOKENS`) may read and change; viewers (`VIEWER_TOKENS`) may
//! only read. Customer tokens (minted with `POST /api/customers/{id}/tokens`,
//! kept as digests in MongoDB) read and change one customer's contacts and
//! nothing else. Tokens are compared in constant time (or looked up by
//! digest) and never logged.

use poem::http::StatusCode;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The tokens the api accepts (request data set by the api).
#[derive(Clone, Default)]
pub struct Tokens {
    operators: Vec<[u8; 32]>,
    viewers: Vec<[u8; 32]>,
}

/// Tokens are kept and compared as SHA-256 digests: equal length, so the
/// comparison is constant-time whatever the token lengths.
fn digest(t: &str) -> [u8; 32] {
    Sha256::digest(t.trim().as_bytes()).into()
}

impl Tokens {
    /// Operators and viewers; blank tokens are ignored.
    pub fn new<'a>(
        operators: impl IntoIterator<Item = &'a str>,
        viewers: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let keep = |it: &mut dyn Iterator<Item = &'a str>| -> Vec<[u8; 32]> {
            it.filter(|t| !t.trim().is_empty()).map(digest).collect()
        };
        Self {
            operators: keep(&mut operators.into_iter()),
            viewers: keep(&mut viewers.into_iter()),
        }
    }

    /// Whether `token` may read (any viewer or operator token).
    pub fn can_read(&self, token: &str) -> bool {
        self.role(token).is_some()
    }

    fn role(&self, token: &str) -> Option<Role> {
        let d = digest(token);
        // check every entry, so the time does not depend on which matched
        let mut found = None;
        for t in &self.viewers {
            if bool::from(t.ct_eq(&d)) {
                found = Some(Role::Viewer);
            }
        }
        for t in &self.operators {
            if bool::from(t.ct_eq(&d)) {
                found = Some(Role::Operator);
            }
        }
        found
    }
}

/// What customer tokens start with, so the endpoints they may not use can
/// say so (403) without a lookup.
pub const CUSTOMER_TOKEN_PREFIX: &str = "cst_";

/// A fresh customer token and the digest to store.
pub fn mint_customer_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("{CUSTOMER_TOKEN_PREFIX}{}", hex::encode(bytes));
    let digest = hex::encode(digest(&token));
    (token, digest)
}

/// Whose contacts a request may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every customer's (an operator or a viewer token).
    All {
        /// Whether it may change them (operators).
        write: bool,
    },
    /// One customer's only (a customer token).
    Customer(crate::domain::CustomerId),
}

impl Scope {
    /// The customer a customer token is limited to.
    pub fn customer(&self) -> Option<&crate::domain::CustomerId> {
        match self {
            Self::Customer(c) => Some(c),
            Self::All { .. } => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Viewer,
    Operator,
}

/// An operator token: may read and change (`API_TOKEN`, `OPERATOR_TOKENS`).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_operator")]
pub struct ApiAuth(());

/// Any valid token: may read (`VIEWER_TOKENS` and operators).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_viewer")]
pub struct ViewerAuth(());

/// A token with access to the contacts endpoints: operators and viewers
/// (every customer's contacts), customer tokens (their customer's only).
/// A write endpoint checks [`Scope::All`]`{ write }` itself.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_contacts")]
pub struct ContactsAuth(pub Scope);

fn unauthorized() -> poem::Error {
    poem::Error::from_status(StatusCode::UNAUTHORIZED)
}

fn customer_token_refused(token: &str) -> Option<poem::Error> {
    token.trim().starts_with(CUSTOMER_TOKEN_PREFIX).then(|| {
        poem::Error::from_string(
            "a customer token may only use /api/contacts",
            StatusCode::FORBIDDEN,
        )
    })
}

async fn check_operator(req: &Request, bearer: Bearer) -> poem::Result<()> {
    match req.data::<Tokens>().and_then(|t| t.role(&bearer.token)) {
        Some(Role::Operator) => Ok(()),
        Some(Role::Viewer) => Err(poem::Error::from_string(
            "a viewer token may only read; this needs an operator token",
            StatusCode::FORBIDDEN,
        )),
        None => Err(customer_token_refused(&bearer.token).unwrap_or_else(unauthorized)),
    }
}

async fn check_viewer(req: &Request, bearer: Bearer) -> poem::Result<()> {
    match req.data::<Tokens>().and_then(|t| t.role(&bearer.token)) {
        Some(_) => Ok(()),
        None => Err(customer_token_refused(&bearer.token).unwrap_or_else(unauthorized)),
    }
}

async fn check_contacts(req: &Request, bearer: Bearer) -> poem::Result<Scope> {
    match req.data::<Tokens>().and_then(|t| t.role(&bearer.token)) {
        Some(Role::Operator) => return Ok(Scope::All { write: true }),
        Some(Role::Viewer) => return Ok(Scope::All { write: false }),
        None => {}
    }
    let token = bearer.token.trim();
    if !token.starts_with(CUSTOMER_TOKEN_PREFIX) {
        return Err(unauthorized());
    }
    let Some(state) = req.data::<super::ApiState>() else {
        return Err(unauthorized());
    };
    match state.customers.by_token(&hex::encode(digest(token))).await {
        Ok(Some(c)) => Ok(Scope::Customer(c)),
        Ok(None) => Err(unauthorized()),
        Err(e) => Err(poem::Error::from_string(
            format!("cannot check the token: {e:#}"),
            StatusCode::SERVICE_UNAVAILABLE,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        let t = Tokens::new(["op", "op2"], ["view", " "]);
        assert!(t.role("op") == Some(Role::Operator));
        assert!(t.role("op2") == Some(Role::Operator));
        assert!(t.role("view") == Some(Role::Viewer));
        assert!(t.role("").is_none());
        assert!(t.role("nope").is_none());
    }
}
