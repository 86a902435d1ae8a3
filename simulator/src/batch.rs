//! HubSpot's batch endpoints for contacts, as `api-request-to-external-app`
//! actions reach them: `POST /crm/v3/objects/contacts/batch/{read,create,
//! update}`. Source: HubSpot's CRM contacts v3 reference
//! (`shared/specs/hubspot-crm-contacts-v3.json`): at most 100 inputs a
//! call; the answer is `BatchResponseSimplePublicObject` (`status`,
//! `results`, `startedAt`, `completedAt`), or with errors
//! `BatchResponseSimplePublicObjectWithErrors` (HTTP 207: `numErrors` and
//! `errors`, each a `StandardError` with `status`, `category`, `message`,
//! `context`, `errors`, `links`): one bad input fails alone.
//!
//! Not confirmed without a live portal: whether a create whose input fails
//! validation is refused alone (207, as the reference documents) or fails
//! the whole call with a 400; the simulator follows the reference, and a
//! client must handle both.

use serde_json::{json, Map, Value};

use crate::clock::wall_ms;
use crate::connection::time_ms;
use crate::connection::Connection;
use crate::error::ActionError;
use crate::faults::FaultSet;
use crate::store::{Store, StoreError};

/// Inputs a batch call takes at most.
const MAX_INPUTS: usize = 100;

/// One input's failure, as HubSpot's `StandardError`.
fn input_error(category: &str, message: String, context: Value) -> Value {
    json!({
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    })
}

/// A `BatchResponse…`: the results, and the errors when there are any.
fn answer(results: Vec<Value>, errors: Vec<Value>, started_ms: i64) -> Value {
    let now = time_ms(wall_ms());
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": time_ms(started_ms),
        "completedAt": now,
    });
    if !errors.is_empty() {
        out["numErrors"] = json!(errors.len());
        out["errors"] = Value::Array(errors);
    }
    out
}

/// The inputs of a batch body, at most [`MAX_INPUTS`].
fn inputs(body: &Value) -> Result<&Vec<Value>, ActionError> {
    let inputs = body["inputs"]
        .as_array()
        .ok_or_else(|| crate::error::refused(Connection::HubSpot, "inputs must be an array"))?;
    if inputs.len() > MAX_INPUTS {
        return Err(crate::error::refused(
            Connection::HubSpot,
            format!(
                "Batch input limit exceeded: {} inputs given, {MAX_INPUTS} at most",
                inputs.len()
            ),
        ));
    }
    Ok(inputs)
}

/// Whether a value HubSpot would take as an email (its `email` property
/// refuses one without a local part and a domain).
fn valid_email(email: &str) -> bool {
    let mut parts = email.trim().splitn(2, '@');
    matches!((parts.next(), parts.next()), (Some(l), Some(d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.'))
}

/// The properties of an input, as text (HubSpot's properties are strings).
fn properties(input: &Value) -> Map<String, Value> {
    input["properties"].as_object().cloned().unwrap_or_default()
}

/// Keeps the asked properties of a rendered record (all when none asked).
fn only(mut rec: Value, asked: &[String]) -> Value {
    if let (false, Some(props)) = (asked.is_empty(), rec["properties"].as_object_mut()) {
        props.retain(|k, _| asked.iter().any(|a| a == k) || k == "hs_object_id");
    }
    rec
}

/// `POST …/batch/read`: by id, or by a unique property (`idProperty`,
/// here `email`). A missing record is an input error (`OBJECT_NOT_FOUND`).
pub(crate) fn read(store: &Store, body: &Value) -> Result<Value, ActionError> {
    let started = wall_ms();
    let inputs = inputs(body)?;
    let asked: Vec<String> = body["properties"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let by = body["idProperty"].as_str().unwrap_or("hs_object_id");
    if by != "hs_object_id" && by != "email" {
        return Err(crate::error::refused(
            Connection::HubSpot,
            format!("{by} is not a unique property"),
        ));
    }
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for input in inputs {
        let id = input["id"].as_str().unwrap_or_default();
        let found = match by {
            "email" => store.find_native_by_email(id),
            _ => store.get_native(id).filter(|r| r["archived"] != true),
        };
        match found {
            Some(rec) => results.push(only(rec, &asked)),
            None => missing.push(id.to_owned()),
        }
    }
    let errors = match missing.is_empty() {
        true => Vec::new(),
        false => vec![input_error(
            "OBJECT_NOT_FOUND",
            "Could not get some CONTACT objects, they may be deleted or not exist.".into(),
            json!({ "ids": missing }),
        )],
    };
    Ok(answer(results, errors, started))
}

/// `POST …/batch/create`: each input `{properties}`. An input with an
/// invalid email, or the email of a live contact (HubSpot keeps one per
/// email), fails alone.
pub(crate) fn create(store: &Store, body: &Value) -> Result<Value, ActionError> {
    let started = wall_ms();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in inputs(body)? {
        let props = properties(input);
        let email = props
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !email.is_empty() && !valid_email(email) {
            errors.push(input_error(
                "VALIDATION_ERROR",
                format!("Property values were not valid: email {email:?} is invalid"),
                json!({ "email": [email] }),
            ));
            continue;
        }
        match store.create_native_by_api(json!({ "properties": props })) {
            Ok(rec) => results.push(rec),
            Err(StoreError::Exists(id)) => errors.push(input_error(
                "CONFLICT",
                format!("Contact already exists. Existing ID: {id}"),
                json!({ "email": [email], "existingId": [id] }),
            )),
            Err(e) => errors.push(input_error("VALIDATION_ERROR", e.to_string(), json!({}))),
        }
    }
    Ok(answer(results, errors, started))
}

/// `POST …/batch/update`: each input `{id, properties}`. An unknown or
/// deleted id, or an invalid email, fails alone.
pub(crate) fn update(store: &Store, body: &Value) -> Result<Value, ActionError> {
    let started = wall_ms();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in inputs(body)? {
        let id = input["id"].as_str().unwrap_or_default();
        let props = properties(input);
        if let Some(email) = props.get("email").and_then(Value::as_str) {
            if !valid_email(email) {
                errors.push(input_error(
                    "VALIDATION_ERROR",
                    format!("Property values were not valid: email {email:?} is invalid"),
                    json!({ "ids": [id] }),
                ));
                continue;
            }
        }
        match store.patch_native_by_api(id, json!({ "properties": props })) {
            Ok(rec) => results.push(rec),
            Err(e) => errors.push(input_error(
                "OBJECT_NOT_FOUND",
                e.to_string(),
                json!({ "ids": [id] }),
            )),
        }
    }
    Ok(answer(results, errors, started))
}

/// The injected per-input faults of a batch create (`rejectRecords`),
/// taken out of the call's arguments before it runs: the inputs left, and
/// an error for each one taken out. With `batchRefusedWhole`, a batch
/// holding one is refused whole instead.
///
/// # Errors
/// The whole batch's 400.
pub(crate) fn screen(
    faults: &FaultSet,
    conn: Connection,
    mut args: Value,
) -> Result<(Value, Vec<Value>), ActionError> {
    let path = args["request"]["path"].as_str().unwrap_or_default();
    if conn != Connection::HubSpot || !path.ends_with("/contacts/batch/create") {
        return Ok((args, Vec::new()));
    }
    let Some(inputs) = args["request"]["data"]["inputs"].as_array_mut() else {
        return Ok((args, Vec::new()));
    };
    let mut refused = Vec::new();
    inputs.retain(|input| {
        let email = input["properties"]["email"].as_str().unwrap_or_default();
        let rejected = !email.is_empty() && faults.rejects_email(email);
        if rejected {
            refused.push(input_error(
                "VALIDATION_ERROR",
                format!("Simulated validation error for {email}"),
                json!({ "email": [email] }),
            ));
        }
        !rejected
    });
    if !refused.is_empty() && faults.batch_refused_whole() {
        return Err(crate::error::refused(
            conn,
            format!("{} of the batch's inputs are invalid", refused.len()),
        ));
    }
    Ok((args, refused))
}

/// Adds the errors [`screen`] took out to a batch's answer.
pub(crate) fn add_refused(output: &mut Value, refused: Vec<Value>) {
    if refused.is_empty() {
        return;
    }
    let mut errors = output["errors"].as_array().cloned().unwrap_or_default();
    errors.extend(refused);
    output["numErrors"] = json!(errors.len());
    output["errors"] = Value::Array(errors);
}

#[cfg(test)]
mod tests {
    use super::valid_email;

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(valid_email("a@example.com"));
        assert!(!valid_email("not-an-email"));
        assert!(!valid_email("@example.com"));
        assert!(!valid_email("a@localhost"));
    }
}
