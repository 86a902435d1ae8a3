//! The two connections and what is specific to each CRM apart from the field
//! mapping: id format, system fields, time format, patch rules and the
//! bodies of the CRM's own error responses; and a stored record rendered in
//! either shape, the CRM's own and (through the mapping) the universal one.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::mapping::FieldMapping;
use crate::record::Record;

/// A connection the simulator serves, named by its integration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Connection {
    HubSpot,
    Pipedrive,
}

impl Connection {
    pub(crate) const ALL: [Connection; 2] = [Connection::HubSpot, Connection::Pipedrive];

    /// `hubspot` or `pipedrive`.
    pub(crate) fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.key() == key)
    }

    /// The integration key, as in URLs and `integration-app/integrations/`.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::HubSpot => "hubspot",
            Self::Pipedrive => "pipedrive",
        }
    }

    /// The collection the integration's `contacts` data source points at
    /// (`integrations/<key>/data-sources/contacts/spec.yaml`).
    pub(crate) fn collection_key(self) -> &'static str {
        match self {
            Self::HubSpot => "contacts",
            Self::Pipedrive => "persons",
        }
    }

    /// Where the CRM's API lives (the `servers` of its published OpenAPI
    /// documents in `shared/specs/`, without a version).
    pub(crate) fn api_base(self) -> &'static str {
        match self {
            Self::HubSpot => "https://api.hubapi.com",
            Self::Pipedrive => "https://api.pipedrive.com",
        }
    }

    /// The first id handed out. The ranges differ so that an id used on the
    /// wrong connection is found out rather than hitting another record.
    pub(crate) fn first_id(self) -> u64 {
        match self {
            Self::HubSpot => 100_001,
            Self::Pipedrive => 1,
        }
    }

    /// Top-level keys (and, for HubSpot, keys inside `properties`) the store
    /// owns; they are ignored in admin input and set on output.
    fn system_keys(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::HubSpot => (
                &["id", "createdAt", "updatedAt", "archived", "archivedAt"],
                &["hs_object_id", "createdate", "lastmodifieddate"],
            ),
            Self::Pipedrive => (&["id", "add_time", "update_time", "is_deleted"], &[]),
        }
    }

    /// The native record: the stored body plus the system fields.
    pub(crate) fn render(self, rec: &Record) -> Value {
        let mut out = rec.body.clone();
        match self {
            Self::HubSpot => {
                let id = rec.id.to_string();
                let props = out
                    .entry("properties")
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("properties is kept an object");
                props.insert("hs_object_id".into(), json!(id));
                props.insert("createdate".into(), json!(time_ms(rec.created_ms)));
                props.insert("lastmodifieddate".into(), json!(time_ms(rec.updated_ms)));
                out.insert("id".into(), json!(id));
                out.insert("createdAt".into(), json!(time_ms(rec.created_ms)));
                out.insert("updatedAt".into(), json!(time_ms(rec.updated_ms)));
                out.insert("archived".into(), json!(rec.deleted_ms.is_some()));
                if let Some(at) = rec.deleted_ms {
                    out.insert("archivedAt".into(), json!(time_ms(at)));
                }
            }
            Self::Pipedrive => {
                out.insert("id".into(), json!(rec.id));
                out.insert("add_time".into(), json!(time_secs(rec.created_ms)));
                out.insert("update_time".into(), json!(time_secs(rec.updated_ms)));
                out.insert("is_deleted".into(), json!(rec.deleted_ms.is_some()));
            }
        }
        Value::Object(out)
    }

    /// Turns admin input into a storable body: drops system fields and
    /// checks the shape.
    ///
    /// # Errors
    /// A message for the client when the shape is wrong.
    pub(crate) fn body_from_input(self, input: Value) -> Result<Map<String, Value>, String> {
        let Value::Object(mut body) = input else {
            return Err("a record must be a JSON object".into());
        };
        if self == Self::HubSpot {
            match body
                .entry("properties")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(_) => {}
                _ => return Err("properties must be an object".into()),
            }
        }
        let (top, nested) = self.system_keys();
        top.iter().for_each(|k| drop(body.remove(*k)));
        if let Some(Value::Object(props)) = body.get_mut("properties") {
            nested.iter().for_each(|k| drop(props.remove(*k)));
        }
        Ok(body)
    }

    /// Applies an admin PATCH: top-level keys are replaced (null removes);
    /// for HubSpot, `properties` is merged key by key the same way.
    ///
    /// # Errors
    /// A message for the client when the patch has the wrong shape.
    pub(crate) fn merge_patch(
        self,
        body: &mut Map<String, Value>,
        patch: Value,
    ) -> Result<(), String> {
        let patch = self.body_from_input(patch)?;
        for (key, value) in patch {
            match (key.as_str(), value) {
                ("properties", Value::Object(props)) if self == Self::HubSpot => {
                    let target = body
                        .entry("properties")
                        .or_insert_with(|| Value::Object(Map::new()))
                        .as_object_mut()
                        .expect("properties is kept an object");
                    merge_shallow(target, props);
                }
                (_, Value::Null) => drop(body.remove(&key)),
                (_, value) => drop(body.insert(key, value)),
            }
        }
        Ok(())
    }

    /// The CRM's own 429 response: headers and body. `limit` is the
    /// configured rate limit, when the refusal comes from one.
    pub(crate) fn rate_limit_response(
        self,
        retry_after_secs: u64,
        limit: Option<(u32, i64)>,
    ) -> (Value, Value) {
        let retry = retry_after_secs.to_string();
        let (mut headers, body) = match self {
            Self::HubSpot => (
                json!({
                    "retry-after": retry,
                    "x-hubspot-ratelimit-remaining": "0",
                    "x-hubspot-ratelimit-interval-milliseconds": "10000",
                }),
                json!({
                    "status": "error",
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": correlation_id(),
                    "policyName": "TEN_SECONDLY_ROLLING",
                    "groupName": "publicapi",
                }),
            ),
            Self::Pipedrive => (
                json!({
                    "retry-after": retry,
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": retry,
                }),
                json!({
                    "success": false,
                    "error": "Request over limit",
                    "errorCode": 429,
                    "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.",
                }),
            ),
        };
        if let Some((calls, window_ms)) = limit {
            let name = match self {
                Self::HubSpot => "x-hubspot-ratelimit-max",
                Self::Pipedrive => "x-ratelimit-limit",
            };
            headers[name] = json!(calls.to_string());
            if self == Self::HubSpot {
                headers["x-hubspot-ratelimit-interval-milliseconds"] = json!(window_ms.to_string());
            }
        }
        (headers, body)
    }

    /// The CRM's own 404 body for a record it does not have (HubSpot's
    /// error object with category `OBJECT_NOT_FOUND`, as its CRM API
    /// answers a missing object; Pipedrive's `{success: false, error}`).
    pub(crate) fn not_found_body(self) -> Value {
        match self {
            Self::HubSpot => json!({
                "status": "error",
                "message": "resource not found",
                "category": "OBJECT_NOT_FOUND",
                "correlationId": correlation_id(),
            }),
            Self::Pipedrive => json!({
                "success": false,
                "error": "Person not found",
                "errorCode": 404,
            }),
        }
    }

    /// The CRM's own 409 body for a record that exists already (HubSpot's
    /// error object with category `CONFLICT`).
    pub(crate) fn conflict_body(self, message: &str) -> Value {
        match self {
            Self::HubSpot => json!({
                "status": "error",
                "message": message,
                "category": "CONFLICT",
                "correlationId": correlation_id(),
            }),
            Self::Pipedrive => json!({
                "success": false,
                "error": message,
                "errorCode": 409,
            }),
        }
    }

    /// The CRM's own 400 validation response body.
    pub(crate) fn validation_error_body(self) -> Value {
        match self {
            Self::HubSpot => json!({
                "status": "error",
                "message": "Property values were not valid",
                "category": "VALIDATION_ERROR",
                "correlationId": correlation_id(),
            }),
            Self::Pipedrive => json!({
                "success": false,
                "error": "Validation failed",
                "errorCode": 400,
            }),
        }
    }

    /// The CRM's own 500 response body.
    pub(crate) fn server_error_body(self) -> Value {
        match self {
            Self::HubSpot => json!({
                "status": "error",
                "message": "internal error",
                "category": "INTERNAL_ERROR",
                "correlationId": correlation_id(),
            }),
            Self::Pipedrive => json!({
                "success": false,
                "error": "Internal server error",
                "errorCode": 500,
            }),
        }
    }
}

fn merge_shallow(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            target.insert(key, value);
        }
    }
}

/// The universal record `{id, fields, createdTime, updatedTime, deletedTime?}`.
pub(crate) fn universal_record(conn: Connection, mapping: &FieldMapping, rec: &Record) -> Value {
    let mut out = json!({
        "id": rec.id.to_string(),
        "fields": mapping.to_universal(&conn.render(rec)),
        "createdTime": time_ms(rec.created_ms),
        "updatedTime": time_ms(rec.updated_ms),
    });
    if let Some(at) = rec.deleted_ms {
        out["deletedTime"] = json!(time_ms(at));
    }
    out
}

fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds (`2021-01-01T00:00:00.000Z`), the form
/// of HubSpot's times and of universal record times.
pub(crate) fn time_ms(ms: i64) -> String {
    datetime(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 in UTC to the second (`2021-01-01T00:00:00Z`), Pipedrive's form.
fn time_secs(ms: i64) -> String {
    datetime(ms).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_patch_merges_properties_and_ignores_system_fields() {
        let mut body = json!({"properties": {"email": "a@b.c", "firstname": "A"}})
            .as_object()
            .cloned()
            .unwrap();
        let patch = json!({"id": "9", "archived": true,
            "properties": {"firstname": null, "lastname": "B", "hs_object_id": "9"}});
        Connection::HubSpot.merge_patch(&mut body, patch).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"properties": {"email": "a@b.c", "lastname": "B"}})
        );
    }

    #[test]
    fn admin_input_must_be_an_object_of_the_right_shape() {
        let cases = [
            (Connection::HubSpot, json!([1]), false),
            (Connection::HubSpot, json!({"properties": "x"}), false),
            (Connection::HubSpot, json!({}), true),
            (Connection::Pipedrive, json!("x"), false),
            (
                Connection::Pipedrive,
                json!({"name": "A", "is_deleted": true}),
                true,
            ),
        ];
        for (conn, input, ok) in cases {
            assert_eq!(
                conn.body_from_input(input.clone()).is_ok(),
                ok,
                "{conn:?} {input}"
            );
        }
    }

    #[test]
    fn time_forms() {
        assert_eq!(time_ms(1_609_459_200_123), "2021-01-01T00:00:00.123Z");
        assert_eq!(time_secs(1_609_459_200_123), "2021-01-01T00:00:00Z");
    }
}
