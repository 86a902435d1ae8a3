//! Bearer-JWT check of the action-run endpoint: signed with the workspace
//! secret (HS256/384/512), `iss` = workspace key, `exp` in the future. The
//! token names the customer the call acts for: claim `id`, else `sub`.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// Verifies tokens minted for one workspace.
pub(crate) struct Auth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
}

/// A token with a good signature and issuer.
#[derive(Debug)]
pub(crate) struct Identity {
    /// The `id` claim, else `sub` (a string, or a number as its digits);
    /// `None` when neither names one.
    pub(crate) customer: Option<String>,
    exp: u64,
}

impl Identity {
    /// # Errors
    /// The token has expired by `now_secs`.
    pub(crate) fn check_exp(&self, now_secs: u64) -> Result<(), String> {
        if self.exp <= now_secs {
            return Err("invalid token: ExpiredSignature".into());
        }
        Ok(())
    }
}

fn customer_claim(claim: Option<Value>) -> Option<String> {
    match claim? {
        Value::String(s) if !s.trim().is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Auth {
    pub(crate) fn new(workspace_key: &str, workspace_secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS512);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.set_issuer(&[workspace_key]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.leeway = 0;
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(workspace_secret.as_bytes()),
            validation,
        }
    }

    /// Checks an `Authorization` header value, all but `exp` against the
    /// simulator's clock (`Identity::check_exp`, for the caller to do when
    /// it is ready to act), and returns who it names.
    ///
    /// # Errors
    /// Why the token was refused, for the 401 message.
    pub(crate) fn identify(&self, authorization: Option<&str>) -> Result<Identity, String> {
        let header = authorization.ok_or("missing Authorization header")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("Authorization must be a Bearer token")?
            .trim();
        let claims = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        Ok(Identity {
            customer: customer_claim(claims.id).or_else(|| customer_claim(claims.sub)),
            exp: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 2_000_000_000;

    fn check(auth: &Auth, header: Option<&str>) -> Result<Identity, String> {
        let identity = auth.identify(header)?;
        identity.check_exp(NOW)?;
        Ok(identity)
    }

    fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn accepts_only_well_formed_tokens_of_the_workspace() {
        let auth = Auth::new("wk", "secret");
        let good = json!({"iss": "wk", "exp": NOW + 60, "id": "c1"});
        let cases = [
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS256, "secret", good.clone())
                )),
                true,
                "HS256",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS384, "secret", good.clone())
                )),
                true,
                "HS384",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS512, "secret", good.clone())
                )),
                true,
                "HS512",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS512, "other", good.clone())
                )),
                false,
                "wrong secret",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(
                        Algorithm::HS512,
                        "secret",
                        json!({"iss": "x", "exp": NOW + 60})
                    )
                )),
                false,
                "wrong iss",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(
                        Algorithm::HS512,
                        "secret",
                        json!({"iss": "wk", "exp": NOW - 1})
                    )
                )),
                false,
                "expired",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS512, "secret", json!({"iss": "wk", "exp": NOW}))
                )),
                false,
                "exp now",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS512, "secret", json!({"iss": "wk"}))
                )),
                false,
                "no exp",
            ),
            (
                Some(format!(
                    "Bearer {}",
                    token(Algorithm::HS512, "secret", json!({"exp": NOW + 60}))
                )),
                false,
                "no iss",
            ),
            (
                Some(token(Algorithm::HS512, "secret", good)),
                false,
                "no Bearer prefix",
            ),
            (None, false, "no header"),
        ];
        for (header, ok, why) in cases {
            assert_eq!(check(&auth, header.as_deref()).is_ok(), ok, "{why}");
        }
    }

    #[test]
    fn the_customer_is_the_id_claim_else_sub() {
        let auth = Auth::new("wk", "secret");
        let cases = [
            (json!({"id": "c1", "sub": "c2"}), Some("c1"), "id wins"),
            (json!({"sub": "c2"}), Some("c2"), "sub"),
            (json!({"id": 42}), Some("42"), "a number"),
            (json!({"id": "", "sub": "c2"}), Some("c2"), "an empty id"),
            (json!({"id": {"x": 1}}), None, "not an id"),
            (json!({}), None, "none"),
        ];
        for (extra, want, why) in cases {
            let mut claims = json!({"iss": "wk", "exp": NOW + 60});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let header = format!("Bearer {}", token(Algorithm::HS256, "secret", claims));
            let identity = check(&auth, Some(&header)).unwrap();
            assert_eq!(identity.customer.as_deref(), want, "{why}");
        }
    }
}
