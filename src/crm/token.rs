//! Customer JWTs for Integration.app: HS512, minted from the workspace key
//! and secret with the customer in the `id` claim, cached per customer and
//! renewed five minutes before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

const LIFETIME: Duration = Duration::from_secs(7200);
const RENEW_BEFORE: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    id: &'a str,
    name: &'a str,
    iat: u64,
    exp: u64,
}

/// Mints and caches the bearer tokens, one per customer.
pub struct TokenMinter {
    workspace_key: String,
    key: EncodingKey,
    cached: Mutex<HashMap<String, (String, u64)>>,
}

impl TokenMinter {
    /// A minter for the workspace.
    pub fn new(workspace_key: &str, workspace_secret: &str) -> Self {
        Self {
            workspace_key: workspace_key.to_owned(),
            key: EncodingKey::from_secret(workspace_secret.as_bytes()),
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// A valid token for `customer`, minted anew when the cached one is
    /// near expiry.
    ///
    /// # Errors
    /// When signing fails.
    pub fn token(&self, customer: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, exp)) = cached.get(customer) {
            if now + RENEW_BEFORE.as_secs() < *exp {
                return Ok(token.clone());
            }
        }
        let exp = now + LIFETIME.as_secs();
        let claims = Claims {
            iss: &self.workspace_key,
            id: customer,
            name: customer,
            iat: now,
            exp,
        };
        let token = encode(&Header::new(Algorithm::HS512), &claims, &self.key)?;
        cached.insert(customer.to_owned(), (token.clone(), exp));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn token_is_hs512_with_workspace_claims_and_cached_per_customer() {
        let m = TokenMinter::new("ws-key", "ws-secret");
        let t = m.token("cust-1").unwrap();
        assert_eq!(t, m.token("cust-1").unwrap(), "cached");
        let other = m.token("cust-2").unwrap();
        assert_ne!(t, other, "one token per customer");
        let mut v = Validation::new(Algorithm::HS512);
        v.set_issuer(&["ws-key"]);
        let data =
            decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"ws-secret"), &v).unwrap();
        assert_eq!(data.claims["id"], "cust-1");
        assert!(decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"other"), &v).is_err());
        let data = decode::<serde_json::Value>(&other, &DecodingKey::from_secret(b"ws-secret"), &v)
            .unwrap();
        assert_eq!(data.claims["id"], "cust-2");
    }
}
