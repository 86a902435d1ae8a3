//! The `/_sim` admin surface: no auth, JSON in and out, errors as
//! `{"error": message}`. Tests and benchmarks use it to act as a CRM user
//! (records in the CRM's own shape), to manage the customers' accounts, to
//! inject faults and to read the call log.
//!
//! `?customer=` names the customer a route acts for; without it, the
//! default customer (`SimulatorConfig::default_customer`), except where a
//! route says otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{get, handler, post, put, Response, Route};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::connection::Connection;
use crate::error::{admin_error, json_response};
use crate::state::State;

mod accounts;
mod faults;
mod records;
mod webhooks;

/// The routes below `/_sim`.
pub(crate) fn routes() -> Route {
    Route::new()
        .at("/health", get(health))
        .at(
            "/faults",
            get(faults::get_faults)
                .put(faults::put_faults)
                .delete(faults::delete_faults),
        )
        .at("/calls", get(list_calls).delete(clear_calls))
        .at("/reset", post(reset))
        .at("/accounts", get(accounts::list))
        .at("/accounts/:customer/:connection", put(accounts::put))
        .nest("/webhooks", webhooks::routes())
        .at(
            "/:connection/records",
            get(records::list).post(records::create),
        )
        .at(
            "/:connection/records/:id",
            get(records::get)
                .patch(records::patch)
                .delete(records::delete),
        )
        .at("/:connection/records/:id/merge", post(records::merge))
        .at("/:connection/records/:id/restore", post(records::restore))
}

/// Errors are full responses (`{"error": …}` with their status).
type AdminResult = poem::Result<Response>;

/// The query string, as every route reads it.
type Params = Query<HashMap<String, String>>;

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

/// A customer id from the URL: not blank.
fn customer_id(id: &str) -> poem::Result<&str> {
    if id.trim().is_empty() {
        return Err(fail(StatusCode::BAD_REQUEST, "customer must not be empty"));
    }
    Ok(id)
}

/// `?customer=`, when given.
fn customer(query: &HashMap<String, String>) -> poem::Result<Option<&str>> {
    query.get("customer").map(|c| customer_id(c)).transpose()
}

#[handler]
fn health() -> Response {
    json_response(StatusCode::OK, &json!({"ok": true}))
}

/// `?customer=` filters here: without it, every call, refused ones (which
/// have no customer) included.
#[handler]
fn list_calls(Data(state): Data<&Arc<State>>, Query(query): Params) -> AdminResult {
    let calls = state.calls.list(
        customer(&query)?,
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
