//! `/_sim/{connection}/records…`: a customer's records in the CRM's own
//! shape, standing in for a user editing the CRM. `?customer=` picks the
//! account (the default customer's without it), made on first use.

use std::collections::HashMap;
use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{handler, Response};
use serde_json::Value;

use super::{connection, customer, fail, ok, parse_json, AdminResult, Params};
use crate::accounts::Account;
use crate::changes::Origin;
use crate::state::State;
use crate::store::StoreError;

fn store_error(e: StoreError) -> poem::Error {
    match e {
        StoreError::NotFound(_) => fail(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::Invalid(_) => fail(StatusCode::BAD_REQUEST, e.to_string()),
        StoreError::Exists(_) => fail(StatusCode::CONFLICT, e.to_string()),
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// The account the route acts on.
fn account(
    state: &State,
    conn: &str,
    query: &HashMap<String, String>,
) -> poem::Result<Arc<Account>> {
    let conn = connection(conn)?;
    Ok(state.account(customer(query)?, conn))
}

#[handler]
pub(super) fn list(
    Data(state): Data<&Arc<State>>,
    Path(conn): Path<String>,
    Query(query): Params,
) -> AdminResult {
    let account = account(state, &conn, &query)?;
    ok(
        StatusCode::OK,
        &account.store.list_native(flag(&query, "includeDeleted")),
    )
}

#[handler]
pub(super) fn create(
    Data(state): Data<&Arc<State>>,
    Path(conn): Path<String>,
    Query(query): Params,
    body: Vec<u8>,
) -> AdminResult {
    let account = account(state, &conn, &query)?;
    let input: Value = parse_json(&body)?;
    // An array makes one record per element, as a CRM user's import would.
    let record = match input {
        Value::Array(inputs) => Value::Array(
            inputs
                .into_iter()
                .map(|i| account.store.create_native(i))
                .collect::<Result<_, _>>()
                .map_err(store_error)?,
        ),
        input => account.store.create_native(input).map_err(store_error)?,
    };
    ok(StatusCode::CREATED, &record)
}

#[handler]
pub(super) fn get(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    Query(query): Params,
) -> AdminResult {
    let account = account(state, &conn, &query)?;
    let record = account
        .store
        .get_native(&id)
        .ok_or_else(|| store_error(StoreError::NotFound(id)))?;
    ok(StatusCode::OK, &record)
}

#[handler]
pub(super) fn patch(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    Query(query): Params,
    body: Vec<u8>,
) -> AdminResult {
    let account = account(state, &conn, &query)?;
    let patch: Value = parse_json(&body)?;
    let record = account
        .store
        .patch_native(&id, patch)
        .map_err(store_error)?;
    ok(StatusCode::OK, &record)
}

#[handler]
pub(super) fn delete(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    Query(query): Params,
) -> AdminResult {
    set_deleted(state, &conn, &id, &query, true)
}

/// Brings a deleted record back, as a user restoring it from HubSpot's
/// recycle bin.
#[handler]
pub(super) fn restore(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    Query(query): Params,
) -> AdminResult {
    set_deleted(state, &conn, &id, &query, false)
}

fn set_deleted(
    state: &State,
    conn: &str,
    id: &str,
    query: &HashMap<String, String>,
    deleted: bool,
) -> AdminResult {
    let store = &account(state, conn, query)?.store;
    let done = if deleted {
        store.delete(id, Origin::Admin)
    } else {
        store.restore(id, Origin::Admin)
    };
    done.map_err(store_error)?;
    Ok(Response::builder().status(StatusCode::NO_CONTENT).finish())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Merge {
    merge_into: Value,
}

#[handler]
pub(super) fn merge(
    Data(state): Data<&Arc<State>>,
    Path((conn, id)): Path<(String, String)>,
    Query(query): Params,
    body: Vec<u8>,
) -> AdminResult {
    let account = account(state, &conn, &query)?;
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
    let kept = account.store.merge(&id, &into).map_err(store_error)?;
    ok(StatusCode::OK, &kept)
}
