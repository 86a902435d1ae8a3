//! `POST /api/integration/events`: Integration.app flows call this on
//! data-record-created/updated/deleted (an `api-request-to-your-app` node).
//!
//! Authenticated by the JWT Membrane sends with such a request, signed with
//! the workspace secret (docs: "Membrane Token"): in `x-membrane-token` and,
//! with the same value, `x-integration-app-token` (the older "Integration
//! App Token" sends only the latter). Its documented claims are `iss` (the
//! workspace key), `sub` (the customer) and `fields`; no expiry is
//! documented, so `exp` is checked when present and not required (the
//! official examples verify it the same way). The tokens this app mints for
//! its calls to Integration.app are signed with the same secret but name
//! the customer in `id` and carry no `sub`: they are refused here.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{handler, IntoResponse, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api::errors::error_response as error;
use crate::api::ApiState;
use crate::domain::{CustomerId, Provider};
use crate::jobs::InboundChange;

/// The workspace credentials the token is checked against.
#[derive(Clone)]
pub struct EventSettings {
    /// Expected `iss`.
    pub workspace_key: Option<String>,
    /// Signing secret.
    pub workspace_secret: Option<crate::domain::Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EventBody {
    external_record_id: serde_json::Value,
    #[serde(default)]
    integration_key: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    instance_key: Option<String>,
}

/// The events endpoint.
#[handler]
pub async fn integration_events(
    req: &Request,
    body: poem::Body,
    state: Data<&ApiState>,
    settings: Data<&EventSettings>,
) -> Response {
    let resp = handle(req, body, &state, &settings).await;
    super::hubspot::count(&state, "integration-app", resp.status());
    resp
}

async fn handle(
    req: &Request,
    body: poem::Body,
    state: &ApiState,
    settings: &EventSettings,
) -> Response {
    let (Some(key), Some(secret)) = (&settings.workspace_key, &settings.workspace_secret) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "the Integration.app workspace is not configured",
        );
    };
    let Some(token) = req
        .header("x-membrane-token")
        .or_else(|| req.header("x-integration-app-token"))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing x-membrane-token (or x-integration-app-token) header",
        );
    };
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    v.set_issuer(&[key]);
    v.set_required_spec_claims(&["iss", "sub"]);
    let claims = match decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &v,
    ) {
        Ok(data) => data.claims,
        Err(e) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid event token: {e}"),
            );
        }
    };
    // The customer whose connection fired the flow: the token's subject
    // (or `id`, as in the tokens minted for the customer).
    let customer = match &claims["sub"] {
        serde_json::Value::String(c) => c.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid event token: sub must name the customer",
            )
        }
    };
    let customer = match CustomerId::parse(&customer) {
        Ok(c) => c,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    let Ok(bytes) = body.into_vec().await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "could not read the body",
        );
    };
    let ev: EventBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid event: {e}"),
            )
        }
    };
    let provider = match ev
        .integration_key
        .as_deref()
        .or_else(|| req.uri().query().and_then(|q| q.strip_prefix("provider=")))
        .map(str::parse::<Provider>)
    {
        Some(Ok(p)) => p,
        Some(Err(m)) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "integrationKey (or ?provider=) is required",
            )
        }
    };
    let external_id = match &ev.external_record_id {
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 200 => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "externalRecordId must be a non-empty string or number",
            )
        }
    };
    let _ = (&ev.event, &ev.data, &ev.instance_key);
    match state.customers.get(&customer).await {
        Ok(Some(c)) if c.connection(provider).is_some_and(|c| c.enabled) => {}
        Ok(_) => {
            tracing::warn!(%customer, %provider, "a flow event for a connection no customer has enabled; ignored");
            state.metrics.inc(
                "webhook_events_ignored_total",
                &[
                    ("source", "integration-app"),
                    ("reason", "unknown_connection"),
                ],
            );
            return Json(json!({ "ignored": true })).into_response();
        }
        // The token names the customer: accepted without MongoDB.
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "could not check the customer's connection; accepted")
        }
    }
    let job = InboundChange {
        customer,
        provider,
        external_id,
        occurred_at: chrono::Utc::now().timestamp_millis(),
        event_ids: Vec::new(),
        account_id: None,
        batch: Vec::new(),
        purge: false,
        restore: false,
    };
    match state.enqueuer.inbound(&job).await {
        Ok(id) => Json(json!({ "jobId": id })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "queueing an Integration.app event failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not queue the event; retry",
            )
        }
    }
}
