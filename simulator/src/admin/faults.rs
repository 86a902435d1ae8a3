//! `/_sim/faults`: without `?customer=`, the workspace-wide settings that
//! apply to every account; with `?customer=X`, X's own, which replace them
//! for X's accounts until deleted. Throttle counts run down per account;
//! a GET shows those of the customer's accounts (the default customer's
//! for the workspace-wide settings).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{handler, Response};

use super::{customer, fail, ok, parse_json, AdminResult, Params};
use crate::faults::FaultConfig;
use crate::state::State;

/// The settings in force for `customer` (X's own, else the workspace-wide
/// ones), or the workspace-wide ones, with the live counts.
fn view(state: &State, customer: Option<&str>) -> AdminResult {
    let (set, counting) = match customer {
        Some(c) => (state.faults.for_customer(c), c),
        None => (state.faults.workspace(), state.accounts.default_customer()),
    };
    ok(StatusCode::OK, &state.fault_view(&set, counting))
}

#[handler]
pub(super) fn get_faults(Data(state): Data<&Arc<State>>, Query(query): Params) -> AdminResult {
    view(state, customer(&query)?)
}

#[handler]
pub(super) fn put_faults(
    Data(state): Data<&Arc<State>>,
    Query(query): Params,
    body: Vec<u8>,
) -> AdminResult {
    let customer = customer(&query)?;
    let config: FaultConfig = parse_json(&body)?;
    match customer {
        Some(c) => state.faults.replace_own(c, config),
        None => state.faults.replace(config),
    }
    .map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    view(state, customer)
}

/// Drops a customer's own settings (204 whether it had any).
#[handler]
pub(super) fn delete_faults(Data(state): Data<&Arc<State>>, Query(query): Params) -> AdminResult {
    let customer = customer(&query)?.ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "DELETE drops a customer's own faults: name it with ?customer= \
             (PUT {} clears the workspace-wide ones)",
        )
    })?;
    state.faults.drop_own(customer);
    Ok(Response::builder().status(StatusCode::NO_CONTENT).finish())
}
