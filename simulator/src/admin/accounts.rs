//! `/_sim/accounts`: every customer's CRM accounts, and making, renumbering,
//! disconnecting or reconnecting one.

use std::sync::Arc;

use poem::handler;
use poem::http::StatusCode;
use poem::web::{Data, Path};
use serde::Deserialize;

use super::{connection, customer_id, fail, ok, parse_json, AdminResult};
use crate::accounts::{AccountChange, AccountError, AccountView};
use crate::state::State;

/// The body of a PUT; an absent field is left as it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Put {
    #[serde(default)]
    account_id: Option<u64>,
    #[serde(default)]
    connected: Option<bool>,
    #[serde(default)]
    defunct: Option<bool>,
}

#[handler]
pub(super) fn list(Data(state): Data<&Arc<State>>) -> AdminResult {
    let all: Vec<AccountView> = state.accounts.list().iter().map(|a| a.view()).collect();
    ok(StatusCode::OK, &all)
}

#[handler]
pub(super) fn put(
    Data(state): Data<&Arc<State>>,
    Path((customer, conn)): Path<(String, String)>,
    body: Vec<u8>,
) -> AdminResult {
    let customer = customer_id(&customer)?;
    let conn = connection(&conn)?;
    let Put {
        account_id,
        connected,
        defunct,
    } = if body.iter().all(u8::is_ascii_whitespace) {
        Put {
            account_id: None,
            connected: None,
            defunct: None,
        }
    } else {
        parse_json(&body)?
    };
    if account_id == Some(0) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "accountId must be a positive integer",
        ));
    }
    let change = AccountChange {
        account_id,
        connected,
        defunct,
    };
    let account = state
        .accounts
        .put(customer, conn, change)
        .map_err(|e| match e {
            AccountError::IdTaken { .. } => fail(StatusCode::CONFLICT, e.to_string()),
        })?;
    ok(StatusCode::OK, &account.view())
}
