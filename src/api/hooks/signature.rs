//! HubSpot webhook signatures (v1, v2, v3), checked in constant time.
//!
//! - v3 (`X-HubSpot-Signature-v3` + `X-HubSpot-Request-Timestamp`):
//!   base64(HMAC-SHA256(secret, method + uri + body + timestamp)), and the
//!   timestamp must be less than five minutes old.
//! - v2: hex(SHA-256(secret + method + uri + body)).
//! - v1: hex(SHA-256(secret + body)) — still what CRM-object webhooks carry.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Oldest v3 timestamp accepted.
pub const MAX_AGE_MS: i64 = 5 * 60 * 1000;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header at all.
    #[error("missing X-HubSpot-Signature or X-HubSpot-Signature-v3 header")]
    Missing,
    /// v3 without its timestamp, or a timestamp that is not a number.
    #[error("missing or malformed X-HubSpot-Request-Timestamp header")]
    BadTimestamp,
    /// The v3 timestamp is outside the five-minute window.
    #[error("request timestamp is outside the 5-minute window")]
    Expired,
    /// An unknown `X-HubSpot-Signature-Version`.
    #[error("unsupported signature version {0:?}")]
    UnknownVersion(String),
    /// The signature does not match.
    #[error("signature does not match")]
    Mismatch,
}

/// The headers and request parts a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `X-HubSpot-Signature-v3`.
    pub v3: Option<&'a str>,
    /// `X-HubSpot-Request-Timestamp` (ms).
    pub timestamp: Option<&'a str>,
    /// `X-HubSpot-Signature` (v1/v2).
    pub legacy: Option<&'a str>,
    /// `X-HubSpot-Signature-Version` (`v1` when absent).
    pub version: Option<&'a str>,
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The full URL HubSpot called (scheme, host, path, query).
    pub uri: &'a str,
    /// The raw body.
    pub body: &'a [u8],
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Checks a request against the app's client secret. v3 is preferred when
/// present; otherwise v1/v2.
///
/// # Errors
/// The reason the request is not authentic.
pub fn verify(secret: &str, req: &SignedRequest<'_>, now_ms: i64) -> Result<(), SignatureError> {
    if let Some(sig) = req.v3 {
        let ts_raw = req.timestamp.ok_or(SignatureError::BadTimestamp)?;
        let ts: i64 = ts_raw
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        // a crafted timestamp far from now must not overflow
        if now_ms
            .checked_sub(ts)
            .is_none_or(|age| age.unsigned_abs() > MAX_AGE_MS.unsigned_abs())
        {
            return Err(SignatureError::Expired);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| SignatureError::Mismatch)?;
        mac.update(req.method.as_bytes());
        mac.update(v3_uri(req.uri).as_bytes());
        mac.update(req.body);
        mac.update(ts_raw.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        return if eq(want.as_bytes(), sig.trim().as_bytes()) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        };
    }
    let sig = req.legacy.ok_or(SignatureError::Missing)?;
    let mut hash = Sha256::new();
    hash.update(secret.as_bytes());
    match req.version.map(str::trim).unwrap_or("v1") {
        "v1" => {}
        "v2" => {
            hash.update(req.method.as_bytes());
            hash.update(req.uri.as_bytes());
        }
        other => return Err(SignatureError::UnknownVersion(other.to_owned())),
    }
    hash.update(req.body);
    let want = hex::encode(hash.finalize());
    if eq(want.as_bytes(), sig.trim().to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The URI as HubSpot signs it for v3: its request-validation docs decode
/// these escapes (and only these) before signing: `%3A` `%2F` `%3F` `%40`
/// `%21` `%24` `%27` `%28` `%29` `%2A` `%2C` `%3B`, in either case.
pub fn v3_uri(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3);
        match code.and_then(|c| DECODED.iter().find(|(k, _)| k.eq_ignore_ascii_case(c))) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Signs like HubSpot's v3 (used by tests and the simulator's peers).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(method.as_bytes());
    mac.update(v3_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const V1_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

    fn legacy<'a>(
        version: &'a str,
        sig: &'a str,
        method: &'a str,
        uri: &'a str,
        body: &'a [u8],
    ) -> SignedRequest<'a> {
        SignedRequest {
            v3: None,
            timestamp: None,
            legacy: Some(sig),
            version: Some(version),
            method,
            uri,
            body,
        }
    }

    #[test]
    fn hubspot_published_v1_and_v2_vectors() {
        let v1 = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
        assert_eq!(
            verify(SECRET, &legacy("v1", v1, "POST", "", V1_BODY.as_bytes()), 0),
            Ok(())
        );
        let v2 = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e";
        let req = legacy("v2", v2, "GET", "https://www.example.com/webhook_uri", b"");
        assert_eq!(verify(SECRET, &req, 0), Ok(()));
    }

    #[test]
    fn v1_refuses_a_changed_body_or_secret() {
        let v1 = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
        let changed = V1_BODY.replace("123", "124");
        assert_eq!(
            verify(SECRET, &legacy("v1", v1, "POST", "", changed.as_bytes()), 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                "other",
                &legacy("v1", v1, "POST", "", V1_BODY.as_bytes()),
                0
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(SECRET, &legacy("v9", v1, "POST", "", b""), 0),
            Err(SignatureError::UnknownVersion(_))
        ));
    }

    #[test]
    fn v3_cases() {
        let now = 1_700_000_000_000_i64;
        let uri = "https://app.example.com/api/integration/webhook/hubspot?x=1";
        let body = br#"[{"eventId":7}]"#;
        let ts = now.to_string();
        let sig = sign_v3("s3cret", "POST", uri, body, &ts);
        let req = |sig: &'static str, ts: &'static str, body: &'static [u8]| SignedRequest {
            v3: Some(sig),
            timestamp: Some(ts),
            legacy: None,
            version: None,
            method: "POST",
            uri,
            body,
        };
        let sig: &'static str = Box::leak(sig.into_boxed_str());
        let ts: &'static str = Box::leak(ts.into_boxed_str());
        assert_eq!(verify("s3cret", &req(sig, ts, body), now), Ok(()));
        assert_eq!(
            verify("wrong", &req(sig, ts, body), now),
            Err(SignatureError::Mismatch),
            "wrong secret"
        );
        assert_eq!(
            verify("s3cret", &req(sig, ts, br#"[{"eventId":8}]"#), now),
            Err(SignatureError::Mismatch),
            "body changed by one byte"
        );
        assert_eq!(
            verify("s3cret", &req(sig, ts, body), now + 6 * 60 * 1000),
            Err(SignatureError::Expired),
            "6 minutes old"
        );
        assert_eq!(
            verify("s3cret", &req("AAAA", ts, body), now),
            Err(SignatureError::Mismatch),
            "wrong signature"
        );
        let no_ts = SignedRequest {
            timestamp: None,
            ..req(sig, ts, body)
        };
        assert_eq!(
            verify("s3cret", &no_ts, now),
            Err(SignatureError::BadTimestamp)
        );
        let none = SignedRequest {
            v3: None,
            legacy: None,
            ..req(sig, ts, body)
        };
        assert_eq!(verify("s3cret", &none, now), Err(SignatureError::Missing));
    }

    #[test]
    fn v3_signs_the_uri_with_the_listed_escapes_decoded() {
        let cases = [
            (
                "https://a.example/h?x=%3A%2f%3F",
                "https://a.example/h?x=:/?",
                "decoded, either case",
            ),
            (
                "https://a.example/h?e=a%40b%2Cc%3Bd",
                "https://a.example/h?e=a@b,c;d",
                "@ , ;",
            ),
            (
                "https://a.example/h?s=%21%24%27%28%29%2A",
                "https://a.example/h?s=!$'()*",
                "the rest",
            ),
            (
                "https://a.example/h?p=%20%2B%25",
                "https://a.example/h?p=%20%2B%25",
                "others kept",
            ),
            (
                "https://a.example/h?t=%",
                "https://a.example/h?t=%",
                "a lone %",
            ),
            (
                "https://a.example/h?t=%3",
                "https://a.example/h?t=%3",
                "a cut escape",
            ),
        ];
        for (given, signed, why) in cases {
            assert_eq!(v3_uri(given), signed, "{why}");
        }
        // a request HubSpot signed over the decoded URI verifies against
        // the URI as it arrives, escaped
        let now = 1_700_000_000_000_i64;
        let ts = now.to_string();
        let body = b"[]";
        let sig = sign_v3("k", "POST", "https://a.example/h?x=:", body, &ts);
        let req = SignedRequest {
            v3: Some(&sig),
            timestamp: Some(&ts),
            legacy: None,
            version: None,
            method: "POST",
            uri: "https://a.example/h?x=%3A",
            body,
        };
        assert_eq!(verify("k", &req, now), Ok(()));
    }

    #[test]
    fn a_timestamp_far_from_now_is_refused_without_overflow() {
        let (min, max) = (i64::MIN, i64::MAX);
        let cases = [
            (min, 0),
            (max, 0),
            (min, -1),
            (max, -1),
            (min, max),
            (max, min),
        ];
        for (ts, now) in cases {
            let ts = ts.to_string();
            let req = SignedRequest {
                v3: Some("x"),
                timestamp: Some(&ts),
                legacy: None,
                version: None,
                method: "POST",
                uri: "https://a.example/h",
                body: b"[]",
            };
            assert_eq!(
                verify("k", &req, now),
                Err(SignatureError::Expired),
                "{ts} at {now}"
            );
        }
    }
}
