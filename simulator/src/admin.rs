//! The `/_sim` admin surface: no auth, JSON in and out, errors as
//! `{"error": message}`. Tests and benchmarks use it to act as a CRM user
//! (records in the CRM's own shape), to inject faults and to read the call
//! log.

use std::collections::HashMap;
use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{get, handler, post, Response, Route};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::changes::Origin;
use crate::connection::Connection;
use crate::error::{admin_error, json_response};
use crate::faults::FaultConfig;
use crate::state::State;
use crate::store::StoreError;

mod webhooks;

/// The routes below `/_sim`.
pub(crate) fn routes() -> Route {
    Route::new()
        .at("/health", get(health))
        .at("/faults", get(get_faults).put(put_faults))
        .at("/calls", get(list_calls).delete(clear_calls))
        .at("/reset", post(reset))
        .nest("/webhooks", webhooks::routes())
        .at(
            "/:connection/records",
            get(list_records).post(create_record),
        )
        .at(
            "/:connection/records/:id",
            get(get_record).patch(patch_record).delete(delete_record),
        )
        .at("/:connection/records/:id/merge", post(merge_record))
}

/// Errors are full responses (`{"error": …}` with their status).
type AdminResult = poem::Result<Response>;

fn fail(status: StatusCode, message: impl Into<String>) -> poem::Error {
    poem::Error::from_response(admin_error(status, message))
}

fn ok(status: StatusCode, body: &impl serde::Serialize) -> AdminResult {
    let value = serde_json::to_value(body)
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(json_response(status, &value))
}

fn connection(key: &str) -> poem::Result<Connection> {
    Connection::parse(key)
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("unknown connection {key:?}")))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> poem::Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

fn store_error(e: StoreError) -> poem::Error {
    match e {
        StoreError::NotFound(_) => fail(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::Invalid(_) => fail(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

#[handler]
fn health() -> Response {
    json_response(StatusCode::OK, &json!({"ok": true}))
}

#[handler]
fn get_faults(Data(state): Data<&Arc<State>>) -> AdminResult {
    ok(StatusCode::OK, &state.faults.snapshot())
}

#[handler]
fn put_faults(Data(state): Data<&Arc<State>>, body: Vec<u8>) -> AdminResult {
    let config: FaultConfig = parse_json(&body)?;
    state
        .faults
        .replace(config)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    ok(StatusCode::OK, &state.faults.snapshot())
}

#[handler]
fn list_calls(
    Data(state): Data<&Arc<State>>,
    Query(query): Query<HashMap<String, String>>,
) -> AdminResult {
    let calls = state.calls.list(
        query.get("connection").map(String::as_str),
        query.get("action").map(String::as_str),
    );
    ok(StatusCode::OK, &calls)
}

#[handler]
fn clear_calls(Data(state): Data<&Arc<State>>) -> Response {
    state.calls.clear();
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}

#[handler]
fn reset(Data(state): Data<&Arc<State>>) -> Response {
    state.reset();
    json_response(StatusCode::OK, &json!({"ok": true}))
}

#[handler]
fn list_records(
    Data(state): Data<&Arc<State>>,
    Path(conn): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> AdminResult {
    let conn = connection(&conn)?;
    ok(
        StatusCode::OK,
        &state
            .store(conn)
            .list_native(flag(&query, "includeDeleted")),
    )
}

#[handler]
fn create_record(
    Data(state): Data<&Arc<State>>,
    Path(conn): Path<String>,
    body: Vec<u8>,
) -> AdminResult {
    let conn = connection(&conn)?;
    let input: Value = parse_json(&body)?;
    let record = state
        .store(conn)
        .create_native(input)
        .map_err(store_error)?;
    ok(StatusCode::CREATED, &record)
}

#[handler]
fn get_record(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
) -> AdminResult {
    let conn = connection(&conn)?;
    let record = state
        .store(conn)
        .get_native(&id)
        .ok_or_else(|| store_error(StoreError::NotFound(id)))?;
    ok(StatusCode::OK, &record)
}

#[handler]
fn patch_record(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    body: Vec<u8>,
) -> AdminResult {
    let conn = connection(&conn)?;
    let patch: Value = parse_json(&body)?;
    let record = state
        .store(conn)
        .patch_native(&id, patch)
        .map_err(store_error)?;
    ok(StatusCode::OK, &record)
}

#[handler]
fn delete_record(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
) -> AdminResult {
    let conn = connection(&conn)?;
    state
        .store(conn)
        .delete(&id, Origin::Admin)
        .map_err(store_error)?;
    Ok(Response::builder().status(StatusCode::NO_CONTENT).finish())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Merge {
    merge_into: Value,
}

#[handler]
fn merge_record(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    body: Vec<u8>,
) -> AdminResult {
    let conn = connection(&conn)?;
    let Merge { merge_into } = parse_json(&body)?;
    let into = match merge_into {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "mergeInto must be a record id",
            ))
        }
    };
    let kept = state.store(conn).merge(&id, &into).map_err(store_error)?;
    ok(StatusCode::OK, &kept)
}
