//! Bearer-token auth for /api/*, with two roles. Operators (`API_TOKEN` and
//! `OPERATOR_TOKENS`) may read and change; viewers (`VIEWER_TOKENS`) may
//! only read. Tokens are compared in constant time and never logged.

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

fn unauthorized() -> poem::Error {
    poem::Error::from_status(StatusCode::UNAUTHORIZED)
}

async fn check_operator(req: &Request, bearer: Bearer) -> poem::Result<()> {
    match req.data::<Tokens>().and_then(|t| t.role(&bearer.token)) {
        Some(Role::Operator) => Ok(()),
        Some(Role::Viewer) => Err(poem::Error::from_string(
            "a viewer token may only read; this needs an operator token",
            StatusCode::FORBIDDEN,
        )),
        None => Err(unauthorized()),
    }
}

async fn check_viewer(req: &Request, bearer: Bearer) -> poem::Result<()> {
    match req.data::<Tokens>().and_then(|t| t.role(&bearer.token)) {
        Some(_) => Ok(()),
        None => Err(unauthorized()),
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
