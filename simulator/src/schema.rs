//! Input validation against an action's `inputSchema`: the JSON-schema
//! keywords the specs use, namely `type` (a name or a list of names),
//! `required`, `properties`, `minLength`, `minimum`, `maximum`,
//! `format: date-time` and `default` (filled in for a missing property).
//! Other keywords (`description`, …) are ignored.

use serde_json::Value;

/// Checks `value` against `schema`, filling in defaults.
///
/// # Errors
/// A message naming the offending input path.
pub(crate) fn validate(schema: &Value, value: &mut Value) -> Result<(), String> {
    check(schema, value, "input")
}

fn check(schema: &Value, value: &mut Value, path: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.iter().any(|t| has_type(value, t)) {
            return Err(format!("{path} must be of type {}", allowed.join(" or ")));
        }
    }
    match value {
        Value::Object(map) => {
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = key.as_str().unwrap_or_default();
                if !map.contains_key(key) {
                    return Err(format!("{path}.{key} is required"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (key, sub) in props.into_iter().flatten() {
                match map.get_mut(key) {
                    Some(v) => check(sub, v, &format!("{path}.{key}"))?,
                    None => {
                        if let Some(default) = sub.get("default") {
                            map.insert(key.clone(), default.clone());
                        }
                    }
                }
            }
        }
        Value::String(s) => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            if (s.chars().count() as u64) < min {
                return Err(format!("{path} must have at least {min} characters"));
            }
            let date_time = schema.get("format").and_then(Value::as_str) == Some("date-time");
            if date_time && chrono::DateTime::parse_from_rfc3339(s).is_err() {
                return Err(format!("{path} must be an RFC 3339 date-time"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    return Err(format!("{path} must be at least {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    return Err(format!("{path} must be at most {max}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["fields"],
            "properties": {
                "fields": {
                    "type": "object",
                    "required": ["primaryEmail"],
                    "properties": {
                        "primaryEmail": {"type": "string", "minLength": 1},
                        "firstName": {"type": ["string", "null"]}
                    }
                },
                "since": {"type": "string", "format": "date-time"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
            }
        })
    }

    #[test]
    fn rejects_bad_input_with_a_path() {
        let cases = [
            (json!([]), "input must be of type object"),
            (json!({}), "input.fields is required"),
            (
                json!({"fields": {}}),
                "input.fields.primaryEmail is required",
            ),
            (
                json!({"fields": {"primaryEmail": ""}}),
                "input.fields.primaryEmail must have at least 1 characters",
            ),
            (
                json!({"fields": {"primaryEmail": "a", "firstName": 3}}),
                "input.fields.firstName must be of type string or null",
            ),
            (
                json!({"fields": {"primaryEmail": "a"}, "since": "yesterday"}),
                "input.since must be an RFC 3339 date-time",
            ),
            (
                json!({"fields": {"primaryEmail": "a"}, "limit": 501}),
                "input.limit must be at most 500",
            ),
            (
                json!({"fields": {"primaryEmail": "a"}, "limit": 1.5}),
                "input.limit must be of type integer",
            ),
        ];
        for (mut input, want) in cases {
            assert_eq!(
                validate(&schema(), &mut input),
                Err(want.to_owned()),
                "input {input}"
            );
        }
    }

    #[test]
    fn accepts_good_input_and_fills_defaults() {
        let mut input = json!({"fields": {"primaryEmail": "a", "firstName": null}, "since": "2024-01-01T00:00:00Z"});
        validate(&schema(), &mut input).unwrap();
        assert_eq!(input["limit"], json!(100));
    }
}
