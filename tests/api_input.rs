//! Bad input on every endpoint gets a 4xx JSON error and writes nothing.

mod common;

use common::{TestApp, TOKEN};
use serde_json::{json, Value};

/// method, path, token, (content type, body), expected status, why
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<(&'a str, Vec<u8>)>,
    u16,
    &'a str,
);

async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.api));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some((ct, b)) = body {
        req = req.header("Content-Type", ct).body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
    (status, json)
}

#[tokio::test]
async fn bad_input_is_refused_with_a_json_error_and_nothing_is_written() {
    let app = TestApp::with(common::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    let good = TOKEN;
    let id = app.create_ok("exists@example.com").await;
    let missing = "65a1b2c3d4e5f6a7b8c9d0e1";
    let big = {
        let mut s = String::from("{\"email\":\"big@example.com\",\"firstName\":\"");
        s.push_str(&"x".repeat(2 * 1024 * 1024));
        s.push_str("\"}");
        s.into_bytes()
    };
    let j = |v: Value| Some(("application/json", v.to_string().into_bytes()));
    let contact = format!("/api/contacts/{id}");
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            Some(("application/json", b"{\"email\": ".to_vec())),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            j(json!({ "email": 42 })),
            400,
            "wrong type",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            j(json!({ "firstName": "No Email" })),
            400,
            "missing email",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            j(json!({ "email": "not-an-email" })),
            400,
            "invalid email",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            j(json!({ "email": { "$gt": "" } })),
            400,
            "operator in a value",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            j(json!({ "email": "x@example.com", "$where": "1" })),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            Some(("application/json", big)),
            413,
            "2 MB body",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            Some(("text/plain", b"hello".to_vec())),
            415,
            "not JSON",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some(good),
            j(json!({ "email": "exists@example.com" })),
            409,
            "duplicate email",
        ),
        (
            "POST",
            "/api/contacts".into(),
            None,
            j(json!({ "email": "a@example.com" })),
            401,
            "no token",
        ),
        (
            "POST",
            "/api/contacts".into(),
            Some("wrong"),
            j(json!({ "email": "a@example.com" })),
            401,
            "wrong token",
        ),
        (
            "GET",
            "/api/contacts/not-an-id".into(),
            Some(good),
            None,
            400,
            "malformed id",
        ),
        (
            "GET",
            format!("/api/contacts/{missing}"),
            Some(good),
            None,
            404,
            "unknown id",
        ),
        (
            "GET",
            "/api/contacts?perPage=0".into(),
            Some(good),
            None,
            400,
            "page size 0",
        ),
        (
            "GET",
            "/api/contacts?status=weird".into(),
            Some(good),
            None,
            400,
            "unknown status",
        ),
        (
            "GET",
            "/api/contacts?page=abc".into(),
            Some(good),
            None,
            400,
            "page not a number",
        ),
        (
            "PATCH",
            contact.clone(),
            Some(good),
            j(json!({ "email": { "$ne": null } })),
            400,
            "operator in a patch",
        ),
        (
            "PATCH",
            contact.clone(),
            Some(good),
            j(json!({ "lastName": 7 })),
            400,
            "wrong type in a patch",
        ),
        (
            "PATCH",
            format!("/api/contacts/{missing}"),
            Some(good),
            j(json!({ "lastName": "X" })),
            404,
            "patch unknown id",
        ),
        (
            "PATCH",
            "/api/contacts/zzz".into(),
            Some(good),
            j(json!({ "lastName": "X" })),
            400,
            "patch malformed id",
        ),
        (
            "DELETE",
            format!("/api/contacts/{missing}"),
            Some(good),
            None,
            404,
            "delete unknown id",
        ),
        (
            "DELETE",
            "/api/contacts/123".into(),
            Some(good),
            None,
            400,
            "delete malformed id",
        ),
        (
            "DELETE",
            contact.clone(),
            None,
            None,
            401,
            "delete without token",
        ),
        (
            "GET",
            "/api/jobs/nope".into(),
            Some(good),
            None,
            404,
            "unknown job",
        ),
        (
            "POST",
            "/api/jobs/nope/retry".into(),
            Some(good),
            None,
            404,
            "retry unknown job",
        ),
        (
            "GET",
            "/api/queues/nope/stats".into(),
            Some(good),
            None,
            404,
            "unknown queue",
        ),
        (
            "GET",
            "/api/queues/outbound-upsert/dead?limit=0".into(),
            Some(good),
            None,
            400,
            "bad limit",
        ),
        (
            "GET",
            "/api/nowhere".into(),
            Some(good),
            None,
            404,
            "unknown route",
        ),
    ];
    for (method, path, token, body, want, why) in cases {
        let (status, json) = raw(&app, method, &path, token, body).await;
        assert_eq!(status, want, "{why}: {method} {path} → {json}");
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{why}: JSON error body: {json}"
        );
    }

    // nothing was written: still one contact, unchanged, and only its jobs queued
    let (status, list) = app.call(reqwest::Method::GET, "/api/contacts", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1, "{list}");
    let c = &list["items"][0];
    assert_eq!(c["email"], "exists@example.com");
    assert_eq!(c["version"], 1);
    let counts = app.queue().await.counts("outbound-upsert").await.unwrap();
    assert_eq!(counts.pending, 2, "only the first contact's two jobs");

    // health needs no token
    let (status, _) = raw(&app, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, ready) = raw(&app, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{ready}");
    let (status, spec) = raw(&app, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        spec["paths"]["/api/contacts"].is_object() || spec["paths"]["/contacts"].is_object(),
        "spec lists contacts"
    );
    // the errors seen above are documented, with their body
    let create = &spec["paths"]["/contacts"]["post"]["responses"];
    for status in ["202", "400", "401", "403", "413", "415"] {
        assert!(
            create.get(status).is_some(),
            "POST /contacts documents {status}: {create}"
        );
    }
    assert_eq!(
        create["401"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    // one error type, and each operation documents the statuses it answers
    let job = &spec["paths"]["/jobs/{id}"]["get"]["responses"];
    for status in ["200", "404", "503"] {
        assert!(
            job.get(status).is_some(),
            "GET /jobs/{{id}} documents {status}: {job}"
        );
    }
    assert!(
        job.get("409").is_none(),
        "GET /jobs/{{id}} never answers 409: {job}"
    );
    assert_eq!(
        job["404"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
}
