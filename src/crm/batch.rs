//! HubSpot's batch writes: `batch-create-contacts`, 100 contacts a call,
//! one request of the portal's rate limit (see the action's spec under
//! `integration-app/integrations/hubspot/actions`). A batch action speaks
//! HubSpot's own shape, not the universal one the field mapping turns
//! into it, so the mapping's six properties are named here too; a test
//! holds the two together.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::CrmRecord;
use super::{CrmError, IntegrationApp};
use crate::domain::{CustomerId, Provider, UniversalContact};

/// Inputs one batch call takes at most (HubSpot's limit).
pub const BATCH_MAX: usize = 100;

/// HubSpot's property for each universal field, as the field mapping
/// (`integrations/hubspot/field-mappings/contacts`) exports it.
const HUBSPOT_PROPERTIES: [(&str, &str); 6] = [
    ("primaryEmail", "email"),
    ("firstName", "firstname"),
    ("lastName", "lastname"),
    ("primaryPhone", "phone"),
    ("companyName", "company"),
    ("jobTitle", "jobtitle"),
];

/// Universal fields as HubSpot properties (an absent or null value is not
/// sent).
fn hubspot_properties(fields: &Value) -> Value {
    let mut props = Map::new();
    for (universal, native) in HUBSPOT_PROPERTIES {
        if let Some(v) = fields.get(universal).filter(|v| !v.is_null()) {
            props.insert(native.into(), v.clone());
        }
    }
    Value::Object(props)
}

/// What a batch create did, by lower-cased email.
#[derive(Debug, Default)]
pub struct BatchCreated {
    /// The records made: email → record id.
    pub created: HashMap<String, String>,
    /// The inputs the CRM refused: email → why (an invalid value, or a
    /// contact that has the email already).
    pub refused: HashMap<String, String>,
}

impl IntegrationApp {
    /// Creates up to [`BATCH_MAX`] records from universal `fields`, each
    /// with its email, in one call. An input the CRM refuses fails alone;
    /// one neither created nor refused in the answer is in neither map.
    ///
    /// # Errors
    /// A classified [`CrmError`] for the call as a whole; `Permanent` for
    /// a CRM without batch writes, or more than [`BATCH_MAX`] inputs.
    pub async fn batch_create_contacts(
        &self,
        customer: &CustomerId,
        provider: Provider,
        fields: &[Value],
    ) -> Result<BatchCreated, CrmError> {
        if provider != Provider::Hubspot || fields.len() > BATCH_MAX {
            return Err(CrmError::Permanent(format!(
                "{provider} takes no batch of {} creates",
                fields.len()
            )));
        }
        let inputs: Vec<Value> = fields
            .iter()
            .map(|f| json!({ "properties": hubspot_properties(f) }))
            .collect();
        let out: Value = self
            .run(
                customer,
                provider,
                "batch-create-contacts",
                &json!({ "inputs": inputs }),
            )
            .await?;
        Ok(parse_created(&out))
    }
}

/// What a batch update did.
#[derive(Debug, Default)]
pub struct BatchUpdated {
    /// The records updated, by id.
    pub updated: HashSet<String>,
    /// The inputs the CRM refused: record id → why (gone, an invalid value).
    pub refused: HashMap<String, String>,
}

impl IntegrationApp {
    /// Reads up to [`BATCH_MAX`] records in one call
    /// (`batch-read-contacts`), each given as `(email, record id)`:
    /// HubSpot's action reads by email, Pipedrive's by id. A record
    /// neither finds (gone, or its email changed) is left out.
    ///
    /// # Errors
    /// A classified [`CrmError`] for the call as a whole; `Permanent` for
    /// more than [`BATCH_MAX`] records.
    pub async fn batch_read_contacts(
        &self,
        customer: &CustomerId,
        provider: Provider,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        if wanted.len() > BATCH_MAX {
            return Err(CrmError::Permanent(format!(
                "{provider} takes no batch of {} reads",
                wanted.len()
            )));
        }
        let input = match provider {
            Provider::Hubspot => {
                let inputs: Vec<Value> = wanted.iter().map(|(e, _)| json!({ "id": e })).collect();
                json!({ "inputs": inputs })
            }
            Provider::Pipedrive => {
                let ids: Vec<&str> = wanted.iter().map(|(_, id)| *id).collect();
                json!({ "ids": ids.join(",") })
            }
        };
        let out: Value = self
            .run(customer, provider, "batch-read-contacts", &input)
            .await?;
        let (list, parse): (&str, fn(&Value) -> Option<CrmRecord>) = match provider {
            Provider::Hubspot => ("results", native_record),
            Provider::Pipedrive => ("data", person_record),
        };
        Ok(out[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(parse)
            .collect())
    }

    /// Updates up to [`BATCH_MAX`] records, each `(id, universal fields)`,
    /// in one call (`batch-update-contacts`). An input the CRM refuses
    /// fails alone.
    ///
    /// # Errors
    /// A classified [`CrmError`] for the call as a whole; `Permanent` for
    /// a CRM without batch writes, or more than [`BATCH_MAX`] inputs.
    pub async fn batch_update_contacts(
        &self,
        customer: &CustomerId,
        provider: Provider,
        updates: &[(String, Value)],
    ) -> Result<BatchUpdated, CrmError> {
        if provider != Provider::Hubspot || updates.len() > BATCH_MAX {
            return Err(CrmError::Permanent(format!(
                "{provider} takes no batch of {} updates",
                updates.len()
            )));
        }
        let inputs: Vec<Value> = updates
            .iter()
            .map(|(id, f)| json!({ "id": id, "properties": hubspot_properties(f) }))
            .collect();
        let out: Value = self
            .run(
                customer,
                provider,
                "batch-update-contacts",
                &json!({ "inputs": inputs }),
            )
            .await?;
        let mut done = BatchUpdated::default();
        for r in out["results"].as_array().into_iter().flatten() {
            if let Some(id) = super::record::id_text(&r["id"]) {
                done.updated.insert(id);
            }
        }
        for e in out["errors"].as_array().into_iter().flatten() {
            let message = e["message"].as_str().unwrap_or("refused").to_owned();
            for id in e["context"]["ids"].as_array().into_iter().flatten() {
                if let Some(id) = super::record::id_text(id) {
                    done.refused.insert(id, message.clone());
                }
            }
        }
        Ok(done)
    }
}

/// A record in HubSpot's own shape (`{id, properties, updatedAt,
/// archived}`) in the universal one, by the field mapping's properties.
fn native_record(v: &Value) -> Option<CrmRecord> {
    let id = super::record::id_text(&v["id"])?;
    let props = &v["properties"];
    let text = |native: &str| props[native].as_str().map(str::to_owned);
    let field = |universal: &str| {
        HUBSPOT_PROPERTIES
            .iter()
            .find(|(u, _)| *u == universal)
            .and_then(|(_, n)| text(n))
            .filter(|s| !s.is_empty())
    };
    let updated_ms = super::record::time_ms(&v["updatedAt"])
        .or_else(|| super::record::time_ms(&props["lastmodifieddate"]))
        .unwrap_or(0);
    Some(CrmRecord {
        id,
        fields: UniversalContact {
            first_name: field("firstName"),
            last_name: field("lastName"),
            primary_email: field("primaryEmail"),
            primary_phone: field("primaryPhone"),
            company_name: field("companyName"),
            job_title: field("jobTitle"),
            ..UniversalContact::default()
        },
        updated_ms,
        deleted: v["archived"] == true,
        fetched_ms: 0,
    })
}

/// A Pipedrive person (API v2) in the universal shape, as the field
/// mapping's `importValue` reads it
/// (`integration-app/integrations/pipedrive/field-mappings/contacts`).
fn person_record(v: &Value) -> Option<CrmRecord> {
    let id = super::record::id_text(&v["id"])?;
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some(CrmRecord {
        id,
        fields: UniversalContact {
            first_name: text("/first_name"),
            last_name: text("/last_name"),
            full_name: text("/name"),
            primary_email: text("/emails/0/value"),
            primary_phone: text("/phones/0/value"),
            company_name: text("/org_name"),
            job_title: text("/job_title"),
        },
        updated_ms: super::record::time_ms(&v["update_time"]).unwrap_or(0),
        deleted: v["is_deleted"] == true,
        fetched_ms: 0,
    })
}

/// Reads HubSpot's batch answer: `results` carry no input index, so each
/// is known by its email; each error names its input's email in
/// `context.email`.
fn parse_created(out: &Value) -> BatchCreated {
    let mut done = BatchCreated::default();
    let email_of = |v: &Value| v.as_str().map(|e| e.trim().to_lowercase());
    for r in out["results"].as_array().into_iter().flatten() {
        let Some(id) = super::record::id_text(&r["id"]) else {
            continue;
        };
        if let Some(email) = email_of(&r["properties"]["email"]) {
            done.created.insert(email, id);
        }
    }
    for e in out["errors"].as_array().into_iter().flatten() {
        let message = e["message"].as_str().unwrap_or("refused").to_owned();
        for email in e["context"]["email"].as_array().into_iter().flatten() {
            if let Some(email) = email_of(email) {
                done.refused.insert(email, message.clone());
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_properties_are_the_field_mappings() {
        let spec = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/integration-app/integrations/hubspot/field-mappings/contacts/spec.yaml"
        ))
        .expect("the HubSpot field mapping");
        for (universal, native) in HUBSPOT_PROPERTIES {
            let line = format!("{native}: {{ $var: $.{universal} }}");
            assert!(spec.contains(&line), "the mapping exports {line}");
        }
    }

    #[test]
    fn results_are_known_by_email_and_errors_by_their_context() {
        let out = json!({
            "status": "COMPLETE",
            "results": [{"id": "101", "properties": {"email": "A@example.com"}}],
            "numErrors": 1,
            "errors": [{"status": "error", "category": "CONFLICT",
                "message": "Contact already exists. Existing ID: 7",
                "context": {"email": ["b@example.com"], "existingId": ["7"]}}],
        });
        let done = parse_created(&out);
        assert_eq!(done.created["a@example.com"], "101");
        assert!(done.refused["b@example.com"].contains("Existing ID: 7"));
        let props = hubspot_properties(&json!({"primaryEmail": "a@x.io", "lastName": null}));
        assert_eq!(props, json!({"email": "a@x.io"}));
    }
}
