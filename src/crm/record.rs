//! A CRM record as Integration.app returns it (universal shape).

use serde_json::Value;

use crate::domain::UniversalContact;

/// A contact record of a CRM.
#[derive(Debug, Clone)]
pub struct CrmRecord {
    /// The CRM's id.
    pub id: String,
    /// Universal fields.
    pub fields: UniversalContact,
    /// Last change in the CRM, ms since the epoch.
    pub updated_ms: i64,
    /// Deleted (archived) in the CRM.
    pub deleted: bool,
    /// When it was read from the CRM, ms on Redis' clock (the one clock
    /// every process shares), taken just before the read: a state read
    /// before the app's latest push to the record landed is older than that
    /// push. 0 until the reader sets it.
    pub fetched_ms: i64,
}

/// A time as CRMs and Integration.app write it: RFC 3339, or ms since the
/// epoch as a number or a string of one.
pub(super) fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
            .or_else(|| s.parse().ok()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A record id, written as a non-empty string or a number.
pub(super) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl CrmRecord {
    /// The same record, read at `ms` (Redis clock).
    pub fn read_at(mut self, ms: i64) -> Self {
        self.fetched_ms = ms;
        self
    }

    /// Parses `{id, fields|unifiedFields, updatedTime, deletedTime?}`.
    ///
    /// # Errors
    /// When the id or the fields are missing or malformed.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let id = id_text(&v["id"]).ok_or_else(|| format!("record without an id: {v}"))?;
        let raw = if v["fields"].is_object() {
            &v["fields"]
        } else {
            &v["unifiedFields"]
        };
        let fields: UniversalContact =
            serde_json::from_value(raw.clone()).map_err(|e| format!("record {id}: fields: {e}"))?;
        Ok(Self {
            updated_ms: time_ms(&v["updatedTime"]).unwrap_or(0),
            deleted: !v["deletedTime"].is_null() || v["deleted"] == Value::Bool(true),
            id,
            fields,
            fetched_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_universal_records() {
        let r = CrmRecord::parse(&serde_json::json!({
            "id": 12, "fields": { "primaryEmail": "a@b.io", "firstName": "A" },
            "updatedTime": "2026-01-01T00:00:00.250Z"
        }))
        .unwrap();
        assert_eq!(r.id, "12");
        assert_eq!(r.updated_ms, 1_767_225_600_250);
        assert!(!r.deleted);
        assert_eq!(r.fields.first_name.as_deref(), Some("A"));
        let d = CrmRecord::parse(
            &serde_json::json!({ "id": "x", "fields": {}, "deletedTime": "2026-01-01T00:00:00Z" }),
        )
        .unwrap();
        assert!(d.deleted);
        assert!(CrmRecord::parse(&serde_json::json!({ "fields": {} })).is_err());
    }
}
