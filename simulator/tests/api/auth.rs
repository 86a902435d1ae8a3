use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{now_secs, token, TestApp, KEY, SECRET};

#[tokio::test]
async fn bad_tokens_are_refused_with_not_authenticated() {
    let app = TestApp::spawn().await;
    let now = now_secs();
    let valid = json!({"iss": KEY, "exp": now + 600});
    let cases = [
        (
            Some(format!(
                "Bearer {}",
                token(Algorithm::HS512, "wrong", valid.clone())
            )),
            "wrong secret",
        ),
        (
            Some(format!(
                "Bearer {}",
                token(
                    Algorithm::HS512,
                    SECRET,
                    json!({"iss": "other", "exp": now + 600})
                )
            )),
            "wrong iss",
        ),
        (
            Some(format!(
                "Bearer {}",
                token(
                    Algorithm::HS512,
                    SECRET,
                    json!({"iss": KEY, "exp": now - 10})
                )
            )),
            "expired",
        ),
        (
            Some(format!(
                "Bearer {}",
                token(Algorithm::HS512, SECRET, json!({"iss": KEY}))
            )),
            "no exp",
        ),
        (
            Some(token(Algorithm::HS512, SECRET, valid)),
            "no Bearer scheme",
        ),
        (Some("Bearer not-a-jwt".to_owned()), "garbage"),
        (None, "no header"),
    ];
    let input = json!({"fields": {"primaryEmail": "a@example.com"}});
    for (header, why) in cases {
        let r = app
            .run_as(header.as_deref(), "hubspot", "upsert-contact", &input)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(r.body["type"], "bad_request", "{why}");
        assert_eq!(r.body["key"], "not_authenticated", "{why}");
        assert!(r.body["message"].is_string(), "{why}");
    }
    assert!(
        app.records("hubspot", true).await.is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn hs256_hs384_and_hs512_tokens_are_accepted() {
    let app = TestApp::spawn().await;
    let claims = json!({"iss": KEY, "exp": now_secs() + 600});
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let header = format!("Bearer {}", token(alg, SECRET, claims.clone()));
        let input = json!({"fields": {"primaryEmail": "a@example.com"}});
        let r = app
            .run_as(Some(&header), "pipedrive", "upsert-contact", &input)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{alg:?}: {}", r.body);
    }
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let app = TestApp::spawn().await;
    app.stop().await.expect("serve ends cleanly");
}
