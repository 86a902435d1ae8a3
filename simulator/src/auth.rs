//! Bearer-JWT check of the action-run endpoint: signed with the workspace
//! secret (HS256/384/512), `iss` = workspace key, `exp` in the future.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Verifies tokens minted for one workspace.
pub(crate) struct Auth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
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

    /// Checks an `Authorization` header value.
    ///
    /// # Errors
    /// Why the token was refused, for the 401 message.
    pub(crate) fn check(&self, authorization: Option<&str>, now_secs: u64) -> Result<(), String> {
        let header = authorization.ok_or("missing Authorization header")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("Authorization must be a Bearer token")?
            .trim();
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        if data.claims.exp <= now_secs {
            return Err("invalid token: ExpiredSignature".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 2_000_000_000;

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
            assert_eq!(auth.check(header.as_deref(), NOW).is_ok(), ok, "{why}");
        }
    }
}
