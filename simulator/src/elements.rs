//! `GET /connections/{connection}` and
//! `GET /connections/{connection}/actions/{actionKey}`: what an operator's
//! self-check reads to see that a customer's connection exists and has the
//! actions the app runs. Both are in Integration.app's published OpenAPI
//! document (`ConnectionsController_getConnection`, and the connection-level
//! action's `get`); the fields returned are those of its `ConnectionDto`
//! (`id`, `name`, `integrationId`, `disconnected`, `isDefunct`) and of an
//! action (`key`, `name`, `type`) that the check reads, no more. A connection
//! the customer disconnected answers as an unknown one does (404
//! `not_found`), as action runs do.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, IntoResponse, Request, Response};
use serde_json::json;

use crate::connection::Connection;
use crate::error::{json_response, ActionError};
use crate::state::State;

/// The customer the bearer token names, or the refusal.
fn customer(req: &Request, state: &State) -> Result<Option<String>, ActionError> {
    let authorization = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = state
        .auth
        .identify(authorization)
        .map_err(ActionError::not_authenticated)?;
    let now_secs = u64::try_from(state.clock.now_ms() / 1000).unwrap_or(0);
    identity
        .check_exp(now_secs)
        .map_err(ActionError::not_authenticated)?;
    Ok(identity.customer)
}

/// The customer's connection, if it is connected.
fn connected(state: &State, customer: Option<&str>, key: &str) -> Result<Connection, ActionError> {
    let missing = || ActionError::not_found(format!("Connection with key '{key}' not found"));
    let conn = Connection::parse(key).ok_or_else(missing)?;
    if !state.account(customer, conn).owner().connected() {
        return Err(missing());
    }
    Ok(conn)
}

#[handler]
pub(crate) fn get_connection(
    req: &Request,
    Path(connection): Path<String>,
    Data(state): Data<&Arc<State>>,
) -> Response {
    let found = customer(req, state).and_then(|c| {
        let conn = connected(state, c.as_deref(), &connection)?;
        let customer = c.unwrap_or_else(|| state.accounts.default_customer().to_owned());
        Ok(json!({
            "id": format!("{}-{customer}", conn.key()),
            "name": conn.key(),
            "integrationId": conn.key(),
            "disconnected": false,
            // ConnectionDto's isDefunct (@membranehq/sdk)
            "isDefunct": state.account(Some(&customer), conn).owner().defunct(),
        }))
    });
    match found {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => e.into_response(),
    }
}

#[handler]
pub(crate) fn get_action(
    req: &Request,
    Path((connection, action)): Path<(String, String)>,
    Data(state): Data<&Arc<State>>,
) -> Response {
    let found = customer(req, state).and_then(|c| {
        let conn = connected(state, c.as_deref(), &connection)?;
        let spec = state
            .config
            .action(conn, &action)
            .ok_or_else(|| ActionError::not_found(format!("Action {action:?} not found")))?;
        Ok(json!({ "key": action, "name": action, "type": spec.kind.type_name() }))
    });
    match found {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => e.into_response(),
    }
}
