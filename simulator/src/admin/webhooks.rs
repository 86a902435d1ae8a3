//! `/_sim/webhooks`: the outbound delivery log and the switches tests use
//! to provoke late, out-of-order and duplicate deliveries.

use std::collections::HashMap;
use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{get, handler, post, put, Response, Route};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{fail, ok, parse_json, AdminResult};
use crate::state::State;
use crate::webhooks::{Kind, OutboxError};

/// The routes below `/_sim/webhooks`.
pub(super) fn routes() -> Route {
    Route::new()
        .at("/", get(list).delete(clear))
        .at("/pause", get(get_pause).put(pause))
        .at("/resume", put(resume))
        .at("/redeliver", post(redeliver))
        .at("/send", post(send))
}

fn outbox_error(e: OutboxError) -> poem::Error {
    match e {
        OutboxError::NotConfigured => fail(StatusCode::CONFLICT, e.to_string()),
        OutboxError::UnknownBatch(_) => fail(StatusCode::NOT_FOUND, e.to_string()),
    }
}

#[handler]
fn list(
    Data(state): Data<&Arc<State>>,
    Query(query): Query<HashMap<String, String>>,
) -> AdminResult {
    let kind = match query.get("kind") {
        None => None,
        Some(k) => Some(
            Kind::parse(k)
                .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "kind must be hubspot or events"))?,
        ),
    };
    ok(StatusCode::OK, &state.outbox.attempts(kind))
}

#[handler]
fn clear(Data(state): Data<&Arc<State>>) -> Response {
    state.outbox.clear_attempts();
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}

/// `{paused, held}`: held = deliveries waiting for a resume.
fn pause_state(state: &State) -> AdminResult {
    let (paused, held) = state.outbox.pause_state();
    ok(StatusCode::OK, &json!({"paused": paused, "held": held}))
}

#[handler]
fn get_pause(Data(state): Data<&Arc<State>>) -> AdminResult {
    pause_state(state)
}

#[handler]
fn pause(Data(state): Data<&Arc<State>>) -> AdminResult {
    state.outbox.set_paused(true);
    pause_state(state)
}

#[handler]
fn resume(Data(state): Data<&Arc<State>>) -> AdminResult {
    state.outbox.set_paused(false);
    pause_state(state)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Redeliver {
    batch_id: u64,
}

#[handler]
fn redeliver(Data(state): Data<&Arc<State>>, body: Vec<u8>) -> AdminResult {
    let Redeliver { batch_id } = parse_json(&body)?;
    state.outbox.redeliver(batch_id).map_err(outbox_error)?;
    ok(StatusCode::ACCEPTED, &json!({"batchId": batch_id}))
}

#[derive(Deserialize)]
struct Send {
    events: Vec<Value>,
}

#[handler]
async fn send(Data(state): Data<&Arc<State>>, body: Vec<u8>) -> AdminResult {
    let Send { events } = parse_json(&body)?;
    let attempt = state.outbox.send_now(events).await.map_err(outbox_error)?;
    let mut out = json!({"batchId": attempt.batch_id, "status": attempt.status});
    if let Some(error) = attempt.error {
        out["error"] = json!(error);
    }
    ok(StatusCode::OK, &out)
}
