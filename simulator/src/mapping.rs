//! A field mapping between universal contact fields and one CRM's native
//! record, built from an integration's
//! `integrations/<integration>/field-mappings/contacts/spec.yaml`.

use anyhow::{ensure, Context};
use serde_json::{Map, Value};

use crate::formula::Formula;

/// `exportValue` (universal → native) and `importValue` (native → universal).
#[derive(Debug)]
pub(crate) struct FieldMapping {
    export: Formula,
    import: Formula,
    /// The native paths `exportValue` writes (nested objects are walked;
    /// arrays and formulas are leaves). An update touches only these, so
    /// native fields outside the mapping survive it.
    export_leaves: Vec<Vec<String>>,
}

impl FieldMapping {
    /// Compiles both directions.
    ///
    /// # Errors
    /// A template that does not compile, or one that is not an object.
    pub(crate) fn new(export: &Value, import: &Value) -> anyhow::Result<Self> {
        let export = Formula::compile(export).context("exportValue")?;
        let import = Formula::compile(import).context("importValue")?;
        ensure!(
            matches!(export, Formula::Object(_)),
            "exportValue must be an object"
        );
        ensure!(
            matches!(import, Formula::Object(_)),
            "importValue must be an object"
        );
        let mut export_leaves = Vec::new();
        collect_leaves(&export, &mut Vec::new(), &mut export_leaves);
        Ok(Self {
            export,
            import,
            export_leaves,
        })
    }

    /// Universal fields of a native record.
    pub(crate) fn to_universal(&self, native: &Value) -> Map<String, Value> {
        into_map(self.import.eval(native))
    }

    /// The native contact fields for universal `fields`.
    pub(crate) fn to_native(&self, fields: &Map<String, Value>) -> Map<String, Value> {
        into_map(self.export.eval(&Value::Object(fields.clone())))
    }

    /// Writes into `body` the native changes that turn universal `before`
    /// into `after`: each mapped native path whose exported value differs is
    /// set, or removed when it is now empty. Paths whose export is unchanged
    /// are left alone, so native data the mapping cannot reproduce (a name
    /// set without first/last name, a second email) is kept.
    pub(crate) fn apply_change(
        &self,
        body: &mut Map<String, Value>,
        before: &Map<String, Value>,
        after: &Map<String, Value>,
    ) {
        let old = self.to_native(before);
        let new = self.to_native(after);
        for path in &self.export_leaves {
            let (was, now) = (get_path(&old, path), get_path(&new, path));
            if was == now {
                continue;
            }
            match now {
                Some(v) => set_path(body, path, v.clone()),
                None => remove_path(body, path),
            }
        }
    }
}

fn collect_leaves(f: &Formula, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match f {
        Formula::Object(fields) => {
            for (key, sub) in fields {
                prefix.push(key.clone());
                if matches!(sub, Formula::Object(_)) {
                    collect_leaves(sub, prefix, out);
                } else {
                    out.push(prefix.clone());
                }
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn get_path<'a>(map: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = map;
    for key in parents {
        cur = cur.get(key)?.as_object()?;
    }
    cur.get(last)
}

fn set_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = map;
    for key in parents {
        let slot = cur
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("made an object above");
    }
    cur.insert(last.clone(), value);
}

fn remove_path(map: &mut Map<String, Value>, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = map;
    for key in parents {
        match cur.get_mut(key).and_then(Value::as_object_mut) {
            Some(next) => cur = next,
            None => return,
        }
    }
    cur.remove(last);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::connection::Connection;
    use serde_json::json;

    fn mapping(conn: Connection) -> std::sync::Arc<FieldMapping> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration-app");
        Config::load(&dir)
            .expect("integration-app loads")
            .mapping(conn)
    }

    fn full_contact() -> Map<String, Value> {
        json!({
            "firstName": "Ann", "lastName": "Lee", "primaryEmail": "ann@example.com",
            "primaryPhone": "+1 555 0100", "companyName": "Acme", "jobTitle": "CTO"
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn hubspot_round_trip() {
        let m = mapping(Connection::HubSpot);
        let native = m.to_native(&full_contact());
        assert_eq!(
            Value::Object(native.clone()),
            json!({"properties": {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee",
                "phone": "+1 555 0100", "company": "Acme", "jobtitle": "CTO"}})
        );
        let mut want = full_contact();
        want.insert("fullName".into(), json!("Ann Lee"));
        assert_eq!(m.to_universal(&Value::Object(native)), want);
    }

    #[test]
    fn pipedrive_round_trip() {
        let m = mapping(Connection::Pipedrive);
        let native = m.to_native(&full_contact());
        assert_eq!(
            Value::Object(native.clone()),
            json!({"name": "Ann Lee", "first_name": "Ann", "last_name": "Lee",
                "emails": [{"value": "ann@example.com", "primary": true, "label": "work"}],
                "phones": [{"value": "+1 555 0100", "primary": true, "label": "work"}],
                "org_name": "Acme", "job_title": "CTO"})
        );
        let mut want = full_contact();
        want.insert("fullName".into(), json!("Ann Lee"));
        assert_eq!(m.to_universal(&Value::Object(native)), want);
    }

    #[test]
    fn sparse_contact_omits_missing_native_fields() {
        let only_email = json!({"primaryEmail": "a@b.c"})
            .as_object()
            .cloned()
            .unwrap();
        let hs = mapping(Connection::HubSpot).to_native(&only_email);
        assert_eq!(Value::Object(hs), json!({"properties": {"email": "a@b.c"}}));
        let pd = mapping(Connection::Pipedrive).to_native(&only_email);
        assert_eq!(
            Value::Object(pd),
            json!({"emails": [{"value": "a@b.c", "primary": true, "label": "work"}]})
        );
    }

    #[test]
    fn apply_change_touches_only_changed_paths() {
        let m = mapping(Connection::Pipedrive);
        let mut body = json!({"name": "Kept As Is", "emails": [{"value": "a@b.c"}], "custom_fields": {"x": 1}})
            .as_object()
            .cloned()
            .unwrap();
        let before = m.to_universal(&Value::Object(body.clone()));
        let mut after = before.clone();
        after.insert("jobTitle".into(), json!("CEO"));
        after.remove("primaryEmail");
        m.apply_change(&mut body, &before, &after);
        assert_eq!(
            Value::Object(body),
            json!({"name": "Kept As Is", "custom_fields": {"x": 1}, "job_title": "CEO"})
        );
    }
}
