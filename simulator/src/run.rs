//! `POST /connections/{connection}/actions/{actionKey}/run`, the endpoint
//! the app's Integration.app client calls.
//!
//! The bearer JWT names the customer (see `auth.rs`); the call acts on that
//! customer's account on the connection, made on first use, under the
//! faults that apply to the customer. A call goes through, in order:
//! injected latency, the bearer JWT, the connection lookup (the customer's
//! account must be connected), the action lookup, an injected outage,
//! input validation against the action's `inputSchema`, the CRM-side
//! faults (throttle, rate limit, random errors, failing records) and then
//! the action itself. Every call, whatever its outcome, lands in the call
//! log.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, IntoResponse, Request, Response};
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::calls::Call;
use crate::connection::Connection;
use crate::error::{json_response, ActionError};
use crate::faults::FaultSet;
use crate::state::State;
use crate::{ops, schema};

#[handler]
pub(crate) async fn run_action(
    req: &Request,
    Path((connection, action)): Path<(String, String)>,
    body: Vec<u8>,
    Data(state): Data<&Arc<State>>,
) -> Response {
    let authorization = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    handle(state, connection, action, authorization, &body).await
}

#[tracing::instrument(skip_all, fields(connection = %connection, action = %action, customer, status))]
async fn handle(
    state: &State,
    connection: String,
    action: String,
    authorization: Option<&str>,
    body: &[u8],
) -> Response {
    // The token is read first, for the customer whose faults apply; a
    // refused one is answered after the latency like any other call.
    let identity = state.auth.identify(authorization);
    let customer = match &identity {
        Ok(id) => id.customer.as_deref(),
        Err(_) => None,
    }
    .unwrap_or(state.accounts.default_customer())
    .to_owned();
    let faults = state.faults.for_customer(&customer);
    let latency = faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut call = Call {
        customer: identity.is_ok().then_some(customer),
        connection,
        action,
        status: 0,
        at_ms: state.clock.now_ms(),
        email: None,
        record_id: None,
    };
    let resp = match execute(state, identity, &faults, body, &mut call) {
        Ok(output) => {
            let late = faults.respond_late();
            if !late.is_zero() {
                tokio::time::sleep(late).await;
            }
            json_response(StatusCode::CREATED, &json!({ "output": output }))
        }
        Err(e) => e.into_response(),
    };
    call.status = resp.status().as_u16();
    let span = tracing::Span::current();
    span.record("status", call.status);
    if let Some(customer) = &call.customer {
        span.record("customer", customer.as_str());
    }
    state.calls.record(call);
    resp
}

fn execute(
    state: &State,
    identity: Result<Identity, String>,
    faults: &FaultSet,
    body: &[u8],
    call: &mut Call,
) -> Result<Value, ActionError> {
    let now_secs = u64::try_from(call.at_ms / 1000).unwrap_or(0);
    identity
        .and_then(|id| id.check_exp(now_secs))
        .map_err(ActionError::not_authenticated)?;
    let conn = Connection::parse(&call.connection).ok_or_else(|| {
        ActionError::not_found(format!("Connection {:?} not found", call.connection))
    })?;
    let account = state.account(call.customer.as_deref(), conn);
    if !account.owner().connected() {
        // disconnected: the connection is gone, as an unknown one is
        return Err(ActionError::not_found(format!(
            "Connection with key '{}' not found",
            conn.key()
        )));
    }
    if account.owner().defunct() {
        return Err(ActionError::defunct(format!(
            "Connection '{}' is defunct: its credentials no longer work; connect again",
            conn.key()
        )));
    }
    let spec = state
        .config
        .action(conn, &call.action)
        .ok_or_else(|| ActionError::not_found(format!("Action {:?} not found", call.action)))?;
    if faults.outage() {
        return Err(ActionError::outage());
    }
    let mut input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ActionError::bad_request(format!("request body is not valid JSON: {e}")))?
    };
    schema::validate(&spec.input_schema, &mut input).map_err(ActionError::bad_request)?;
    let args = spec.config.eval(&json!({ "input": input }));
    call.email = ops::email_arg(&args);
    call.record_id = ops::id_arg(&args);
    faults.check_crm(
        conn,
        &account.counters,
        call.at_ms,
        call.email.as_deref(),
        call.record_id.as_deref(),
    )?;
    let (args, refused) = crate::batch::screen(faults, conn, args)?;
    let mut output = ops::run(spec.kind, conn, &account.store, &args)?;
    crate::batch::add_refused(&mut output, refused);
    if call.record_id.is_none() {
        call.record_id = output.get("id").and_then(Value::as_str).map(str::to_owned);
    }
    Ok(output)
}
