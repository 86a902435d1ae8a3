//! The credentials outbound calls carry: HubSpot's v1 and v3 webhook
//! signatures and Integration.app's `x-integration-app-token`.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// v1: hex(SHA-256(client secret + body)).
pub(super) fn hubspot_v1(client_secret: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(client_secret.as_bytes());
    hash.update(body);
    hex::encode(hash.finalize())
}

/// v3: base64(HMAC-SHA256(client secret, method + URI + body + timestamp)),
/// the timestamp being the `X-HubSpot-Request-Timestamp` header value.
pub(super) fn hubspot_v3(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: &str,
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Serialize)]
struct FlowClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    fields: serde_json::Value,
}

/// The token of a flow call, as Membrane's docs ("Membrane Token") give
/// it: a JWT signed with the workspace secret, with `iss` = workspace key,
/// `sub` = the customer whose connection ran the flow, and `fields` (the
/// customer's fields; none here). No expiry is documented, so none is set.
/// It is sent in `x-membrane-token` and, with the same value,
/// `x-integration-app-token`.
///
/// # Errors
/// The token cannot be encoded (not expected with an HMAC key).
pub(super) fn flow_token(
    workspace_key: &str,
    workspace_secret: &str,
    customer_id: &str,
) -> jsonwebtoken::errors::Result<String> {
    let claims = FlowClaims {
        iss: workspace_key,
        sub: customer_id,
        fields: serde_json::json!({}),
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(workspace_secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";

    #[test]
    fn v1_matches_hubspots_published_example() {
        let body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            hubspot_v1(SECRET, body.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
    }

    #[test]
    fn v3_is_an_hmac_over_method_uri_body_and_timestamp() {
        let sig = hubspot_v3(SECRET, "POST", "http://h/x", b"[]", "1700000000000");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"POSThttp://h/x[]1700000000000");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        assert!(mac.verify_slice(&raw).is_ok());
        assert_ne!(
            sig,
            hubspot_v3(SECRET, "POST", "http://h/x", b"[]", "1700000000001"),
            "the timestamp is signed"
        );
    }
}
