//! The action kinds, run against one connection's store with the action's
//! resolved `config` (its formulas evaluated on the input).

use serde_json::{json, Map, Value};

use crate::config::ActionKind;
use crate::connection::Connection;
use crate::error::ActionError;
use crate::store::{Store, StoreError};

/// The records a page of `list-data-records` holds (the connector's
/// choice; not published, and not the caller's to set).
const PAGE: usize = 100;

impl ActionError {
    /// How a failure of the connection's store reaches the caller: a
    /// missing record as the CRM's own 404 under the action run.
    fn of_store(conn: Connection, e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ActionError::record_not_found(conn, e.to_string()),
            StoreError::Invalid(_) => ActionError::bad_request(e.to_string()),
            StoreError::Exists(_) => ActionError::record_conflict(conn, e.to_string()),
        }
    }
}

/// The record id an action was given (`id`, a string or a number).
pub(crate) fn id_arg(args: &Value) -> Option<String> {
    match args.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required_id(args: &Value) -> Result<String, ActionError> {
    id_arg(args).ok_or_else(|| ActionError::bad_request("id is required"))
}

/// The universal fields to write: the field mapping's `input`.
fn fields_arg(args: &Value) -> Result<&Map<String, Value>, ActionError> {
    args.pointer("/fieldMapping/input")
        .and_then(Value::as_object)
        .ok_or_else(|| ActionError::bad_request("fields must be an object"))
}

/// The primary email among the fields an action writes, if any.
pub(crate) fn email_arg(args: &Value) -> Option<String> {
    args.pointer("/fieldMapping/input/primaryEmail")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Runs `kind` with the resolved `args` and returns the action's output.
///
/// # Errors
/// 400 for unusable arguments; for unknown records, the CRM's 404 under
/// the action run ([`ActionError::record_not_found`]).
pub(crate) fn run(
    kind: ActionKind,
    conn: Connection,
    store: &Store,
    args: &Value,
) -> Result<Value, ActionError> {
    run_on(kind, conn, store, args).map_err(|e| match e {
        Failure::Store(e) => ActionError::of_store(conn, e),
        Failure::Action(e) => e,
    })
}

/// Why [`run_on`] failed: the store, or the action's arguments.
enum Failure {
    Store(StoreError),
    Action(ActionError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<ActionError> for Failure {
    fn from(e: ActionError) -> Self {
        Self::Action(e)
    }
}

fn run_on(
    kind: ActionKind,
    conn: Connection,
    store: &Store,
    args: &Value,
) -> Result<Value, Failure> {
    match kind {
        ActionKind::Upsert => {
            let (id, created) = store.upsert(fields_arg(args)?)?;
            Ok(json!({"id": id, "created": created}))
        }
        ActionKind::Create => {
            let id = store.create_universal(fields_arg(args)?)?;
            Ok(json!({"id": id}))
        }
        ActionKind::Update => {
            let id = store.update(&required_id(args)?, fields_arg(args)?)?;
            Ok(json!({"id": id}))
        }
        ActionKind::Delete => {
            store.delete(&required_id(args)?, crate::changes::Origin::Action)?;
            Ok(json!({}))
        }
        ActionKind::Get => Ok(store.get_universal(&required_id(args)?)?),
        ActionKind::List => Ok(list(store, args)?),
        ActionKind::ApiRequest => Ok(crate::native::request(conn, store, &args["request"])?),
        ActionKind::Match => {
            let email = args
                .pointer("/query/primaryEmail")
                .and_then(Value::as_str)
                .ok_or_else(|| ActionError::bad_request("query.primaryEmail is required"))?;
            Ok(store.find_universal_by_email(email).unwrap_or(Value::Null))
        }
    }
}

/// `list-data-records`: the live records in the connector's order (by id
/// here), a page at a time, with an opaque `cursor` from the config.
/// Membrane's list takes no "updated since" and no page size (the
/// connector pages; the docs' `DataCollectionListRequest` has `cursor`,
/// `filter` and `unifiedFilter`), and lists no deleted records: a CRM's
/// changes since a time come from an integration's own action
/// (`integrations/<i>/actions/list-changed-contacts`).
fn list(store: &Store, args: &Value) -> Result<Value, ActionError> {
    let after = match args.get("cursor") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(decode_cursor)
                .ok_or_else(|| ActionError::bad_request("invalid cursor"))?,
        ),
    };
    let (records, next) = store.list_universal(after, PAGE);
    Ok(json!({"records": records, "cursor": next.map(encode_cursor)}))
}

/// Cursors are opaque to clients: the id of the last record returned.
fn encode_cursor(id: u64) -> String {
    format!("r{id:x}")
}

fn decode_cursor(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix('r')?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let id = 100_042;
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        for bad in ["", "abc", "r", "1-2", "rzz", "r-1"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }
}
