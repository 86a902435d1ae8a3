//! The OpenAPI document as served. poem-openapi documents what each
//! operation returns; the errors poem raises before an operation runs (a
//! missing token, a body that is not JSON or is too large, a malformed
//! parameter) come from the security schemes, extractors and middleware,
//! so they are added here, to every operation they can happen on, with the
//! same `ErrorBody` schema they are answered with.

use serde_json::{json, Value};

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json; charset=utf-8": { "schema": { "$ref": ERROR_BODY } } }
    })
}

/// Optional properties are answered as `null` when absent (and accepted as
/// `null`), which poem-openapi does not say; OpenAPI 3.0 says it with
/// `nullable` (beside a `$ref` only through `allOf`).
fn mark_optional_nullable(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for schema in schemas.values_mut() {
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (name, prop) in props.iter_mut() {
            if required.contains(name) {
                continue;
            }
            if let Some(r) = prop.get("$ref").cloned() {
                let mut wrapped = json!({ "allOf": [{ "$ref": r }], "nullable": true });
                if let Some(d) = prop.get("description") {
                    wrapped["description"] = d.clone();
                }
                *prop = wrapped;
            } else if let Some(o) = prop.as_object_mut() {
                o.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
}

/// Unsigned integers (`format: uint*`) are refused below zero, which
/// poem-openapi does not say; add `minimum: 0` wherever such a schema is.
fn mark_unsigned(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let unsigned = o
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"));
            if unsigned && o.get("type").and_then(Value::as_str) == Some("integer") {
                o.entry("minimum").or_insert(json!(0));
            }
            o.values_mut().for_each(mark_unsigned);
        }
        Value::Array(a) => a.iter_mut().for_each(mark_unsigned),
        _ => {}
    }
}

/// `spec` (the generated document) with the common error responses,
/// nullable optional properties and non-negative unsigned integers.
pub fn with_common_errors(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    mark_optional_nullable(&mut doc);
    mark_unsigned(&mut doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return spec.to_owned();
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let operator_only = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|r| r.get("ApiAuth").is_some()));
            let has_params = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty());
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status)
                    .or_insert_with(|| error_response(description));
            };
            if secured {
                add("401", "Missing or invalid bearer token.");
            }
            if operator_only {
                add("403", "The token may read but not change (a viewer token).");
            }
            if has_params || has_body {
                add(
                    "400",
                    "A malformed parameter or body; the message names it.",
                );
            }
            if has_body {
                add("413", "The body is larger than the api accepts.");
                add("415", "The body is not JSON.");
            }
        }
    }
    serde_json::to_string(&doc).unwrap_or_else(|_| spec.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_what_is_missing() {
        let spec = json!({ "paths": { "/x/{id}": {
            "post": {
                "security": [{ "ApiAuth": [] }],
                "parameters": [{ "name": "id" }],
                "requestBody": {},
                "responses": { "200": {}, "400": { "description": "own" } }
            },
            "get": { "security": [{ "ViewerAuth": [] }], "responses": { "200": {} } }
        }}});
        let out: Value = serde_json::from_str(&with_common_errors(&spec.to_string())).unwrap();
        let post = &out["paths"]["/x/{id}"]["post"]["responses"];
        for s in ["200", "401", "403", "413", "415"] {
            assert!(post.get(s).is_some(), "{s}");
        }
        assert_eq!(post["400"]["description"], "own");
        let get = &out["paths"]["/x/{id}"]["get"]["responses"];
        assert!(get.get("401").is_some());
        assert!(get.get("403").is_none() && get.get("400").is_none());
    }

    #[test]
    fn optional_properties_are_nullable() {
        let spec = json!({ "paths": {}, "components": { "schemas": { "A": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": { "type": "string" },
                "note": { "type": "string" },
                "inner": { "$ref": "#/components/schemas/B", "description": "d" }
            }
        }}}});
        let out: Value = serde_json::from_str(&with_common_errors(&spec.to_string())).unwrap();
        let props = &out["components"]["schemas"]["A"]["properties"];
        assert!(props["id"].get("nullable").is_none());
        assert_eq!(props["note"]["nullable"], true);
        assert_eq!(props["inner"]["allOf"][0]["$ref"], "#/components/schemas/B");
        assert_eq!(props["inner"]["nullable"], true);
        assert_eq!(props["inner"]["description"], "d");
    }

    #[test]
    fn unsigned_integers_have_a_minimum() {
        let spec = json!({ "paths": { "/x": { "get": { "parameters": [
            { "name": "offset", "schema": { "type": "integer", "format": "uint64" } },
            { "name": "delta", "schema": { "type": "integer", "format": "int64" } }
        ], "responses": {} } } } });
        let out: Value = serde_json::from_str(&with_common_errors(&spec.to_string())).unwrap();
        let params = &out["paths"]["/x"]["get"]["parameters"];
        assert_eq!(params[0]["schema"]["minimum"], 0);
        assert!(params[1]["schema"].get("minimum").is_none());
    }
}
