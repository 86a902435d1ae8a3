//! The HTTP api (poem + poem-openapi): contacts, jobs, health. It validates
//! input, writes the app's own records and only enqueues sync work.

pub mod auth;
mod check;
mod console;
mod contacts;
mod customers;
pub mod errors;
mod first_sync;
pub mod hooks;
pub(crate) mod jobs;
mod metrics;
pub(crate) mod ops;
mod spec;
mod text;
pub(crate) mod views;

use std::sync::Arc;

use futures::StreamExt;
use poem::http::StatusCode;
use poem::middleware::Tracing;
use poem::web::Json;
use poem::{handler, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::domain::Provider;
use crate::jobs::Enqueuer;
use crate::store::Store;
use auth::Tokens;
pub use check::Checker;

/// Largest request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// Oversized bodies up to this size are drained before the 413 is sent.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// The queues.
    pub enqueuer: Enqueuer,
    /// CRMs the deployment syncs with at all.
    pub providers: Vec<Provider>,
    /// The customers, and which of those CRMs each has connected.
    pub customers: crate::store::Customers,
    /// Pool-wide metrics.
    pub metrics: workers::Metrics,
    /// Pool-wide calls per second allowed per CRM (shown to operators).
    pub rate_limits: std::collections::HashMap<Provider, u32>,
    /// The self-check's client of Integration.app.
    pub checker: Checker,
    /// Start a connection's first sync when it is recorded.
    pub first_sync_on_connect: bool,
}

#[derive(Tags)]
enum Tag {
    /// The app's contacts.
    Contacts,
    /// The app's customers and their CRM connections.
    Customers,
    /// Sync jobs and queues.
    Jobs,
    /// Operators: queues, workers, links, sync logs, connections.
    Operators,
}

/// Settings of the endpoints CRMs and Integration.app call.
#[derive(Clone)]
pub struct Integration {
    /// HubSpot webhooks.
    pub webhook: hooks::hubspot::WebhookSettings,
    /// Integration.app flow events.
    pub events: hooks::flow::EventSettings,
}

/// The whole HTTP app.
/// `metrics_here`: serve `/metrics` on this app (behind a token); `false`
/// when it has a listener of its own ([`metrics_app`]).
pub fn app(
    state: ApiState,
    tokens: Tokens,
    hooks: Integration,
    metrics_here: bool,
) -> impl poem::Endpoint {
    let api = OpenApiService::new(
        (
            contacts::ContactsApi,
            customers::CustomersApi,
            jobs::JobsApi,
            ops::QueueOpsApi,
            ops::LinkOpsApi,
            ops::ConnectionsOpsApi,
            check::CheckApi,
        ),
        "contact-sync",
        env!("CARGO_PKG_VERSION"),
    )
    .server("/api");
    let spec = Arc::new(spec::with_common_errors(&api.spec()));
    let docs = api.swagger_ui();
    let health_state = state.clone();
    let mut routes = Route::new();
    if metrics_here {
        routes = routes.at("/metrics", poem::get(metrics::metrics_with_token));
    }
    routes
        .at("/healthz", healthz)
        .at("/readyz", readyz.data(health_state))
        .at(
            "/api/integration/webhook/hubspot",
            poem::post(hooks::hubspot::hubspot_webhook).data(hooks.webhook),
        )
        .at(
            "/api/integration/events",
            poem::post(hooks::flow::integration_events).data(hooks.events),
        )
        .at(
            "/api/openapi.json",
            poem::get(poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.as_str().to_owned())
            })),
        )
        .nest("/api/docs", docs)
        .nest("/api", api)
        .nest("/console", console::endpoint())
        .data(state)
        .data(tokens)
        .around(limit_body)
        .around(retry_after)
        .with(Tracing)
        .catch_all_error(errors::json_error)
}

/// `/metrics` alone, without a token, for a listener of its own
/// (`METRICS_ADDR`) on an internal network.
pub fn metrics_app(state: ApiState) -> impl poem::Endpoint {
    Route::new()
        .at("/metrics", poem::get(metrics::metrics))
        .data(state)
        .catch_all_error(errors::json_error)
}

#[handler]
fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[handler]
async fn readyz(state: poem::web::Data<&ApiState>) -> poem::Response {
    let redis = state.enqueuer.queue().ping().await;
    let mongo = state.store.ping().await;
    let ok = redis.is_ok() && mongo.is_ok();
    let describe = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "unavailable" },
        "redis": describe(redis.map_err(|e| e.to_string())),
        "mongodb": describe(mongo.map_err(|e| e.to_string())),
    });
    let status = if ok {
        poem::http::StatusCode::OK
    } else {
        poem::http::StatusCode::SERVICE_UNAVAILABLE
    };
    Json(body).with_status(status).into_response()
}

/// Every 503 (MongoDB or Redis unavailable) tells the client when to try
/// again, so clients and proxies back off instead of hammering.
async fn retry_after<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let mut resp = match next.call(req).await {
        Ok(resp) => resp.into_response(),
        // an operation's `ApiError`, already its JSON answer
        Err(e) if e.is_from_response() => e.into_response(),
        Err(e) => return Err(e),
    };
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
        && !resp.headers().contains_key(poem::http::header::RETRY_AFTER)
    {
        resp.headers_mut().insert(
            poem::http::header::RETRY_AFTER,
            poem::http::HeaderValue::from_static("1"),
        );
    }
    Ok(resp)
}

/// Refuses bodies over [`MAX_BODY`] with 413: by `Content-Length` before
/// reading, and for chunked bodies while reading. (poem's `SizeLimit` also
/// refuses requests without `Content-Length`, such as every GET.)
async fn limit_body<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let too_large = || poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE);
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(len) if len > MAX_BODY => {
            // Read and drop a moderately large body first, so the client is
            // not cut off mid-send and actually sees the 413.
            if len <= DRAIN_LIMIT {
                let mut stream = req.take_body().into_bytes_stream();
                while let Some(Ok(_)) = stream.next().await {}
            }
            return Err(too_large());
        }
        Some(_) => {}
        None if req.header(poem::http::header::TRANSFER_ENCODING).is_some() => {
            let mut stream = req.take_body().into_bytes_stream();
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| poem::Error::from_status(StatusCode::BAD_REQUEST))?;
                if buf.len() + chunk.len() > MAX_BODY {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            req.set_body(buf);
        }
        None => {}
    }
    Ok(next.call(req).await?.into_response())
}
