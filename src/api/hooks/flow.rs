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

/// Checks the event's token, reads the event, and queues its change for
/// an enabled connection.
async fn handle(
    req: &Request,
    body: poem::Body,
    state: &ApiState,
    settings: &EventSettings,
) -> Response {
    let (customer, provider, external_id) = match read_event(req, body, settings).await {
        Ok(event) => event,
        Err(Refusal(status, code, message)) => return error(status, code, message),
    };
    if !connection_enabled(state, &customer, provider).await {
        return Json(json!({ "ignored": true })).into_response();
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

/// Why an event is refused: the status, the error code and the message
/// of the answer.
struct Refusal(StatusCode, &'static str, String);

/// The customer a flow event's token names: the token is the workspace's
/// (HS256/384/512 under the workspace secret, issued by its key), and its
/// subject names the customer whose connection fired the flow.
fn authenticate(req: &Request, settings: &EventSettings) -> Result<CustomerId, Refusal> {
    let (Some(key), Some(secret)) = (&settings.workspace_key, &settings.workspace_secret) else {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "the Integration.app workspace is not configured".into(),
        ));
    };
    let unauthorized = |m: String| Refusal(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let token = req
        .header("x-membrane-token")
        .or_else(|| req.header("x-integration-app-token"))
        .ok_or_else(|| {
            unauthorized("missing x-membrane-token (or x-integration-app-token) header".into())
        })?;
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    v.set_issuer(&[key]);
    v.set_required_spec_claims(&["iss", "sub"]);
    let claims = decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &v,
    )
    .map_err(|e| unauthorized(format!("invalid event token: {e}")))?
    .claims;
    // (or a number, as in the tokens minted for the customer)
    let customer = match &claims["sub"] {
        serde_json::Value::String(c) => c.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(unauthorized(
                "invalid event token: sub must name the customer".into(),
            ))
        }
    };
    CustomerId::parse(&customer).map_err(|m| Refusal(StatusCode::BAD_REQUEST, "bad_request", m))
}

/// The event's customer, CRM and record, or the answer refusing it.
async fn read_event(
    req: &Request,
    body: poem::Body,
    settings: &EventSettings,
) -> Result<(CustomerId, Provider, String), Refusal> {
    let customer = authenticate(req, settings)?;
    let bad = |m: String| Refusal(StatusCode::BAD_REQUEST, "bad_request", m);
    let bytes = body
        .into_vec()
        .await
        .map_err(|_| bad("could not read the body".into()))?;
    let ev: EventBody =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid event: {e}")))?;
    let provider = ev
        .integration_key
        .as_deref()
        .or_else(|| req.uri().query().and_then(|q| q.strip_prefix("provider=")))
        .ok_or_else(|| bad("integrationKey (or ?provider=) is required".into()))?
        .parse::<Provider>()
        .map_err(bad)?;
    let external_id = match &ev.external_record_id {
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 200 => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(bad(
                "externalRecordId must be a non-empty string or number".into()
            ))
        }
    };
    let _ = (&ev.event, &ev.data, &ev.instance_key);
    Ok((customer, provider, external_id))
}

/// Whether the customer has the connection enabled (counted and logged
/// when not). The token names the customer, so when MongoDB cannot say,
/// the event is accepted.
async fn connection_enabled(state: &ApiState, customer: &CustomerId, provider: Provider) -> bool {
    match state.customers.get(customer).await {
        Ok(Some(c)) if c.connection(provider).is_some_and(|c| c.enabled) => true,
        Ok(_) => {
            tracing::warn!(%customer, %provider, "a flow event for a connection no customer has enabled; ignored");
            state.metrics.inc(
                "webhook_events_ignored_total",
                &[
                    ("source", "integration-app"),
                    ("reason", "unknown_connection"),
                ],
            );
            false
        }
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "could not check the customer's connection; accepted");
            true
        }
    }
}
