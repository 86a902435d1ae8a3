//! Reading a CRM's records in bulk: the full listing (`list-contacts`, a
//! `list-data-records` action, universal records in the connector's
//! order) and the incremental one (`list-changed-contacts`, each
//! integration's own `api-request-to-external-app` action, whose output is
//! the CRM's own answer). Membrane's built-in list has no "updated since",
//! so what changed comes from the CRM's API: Pipedrive's
//! `GET /api/v2/persons?updated_since=…&sort_by=update_time` and HubSpot's
//! contact search on `lastmodifieddate`. Only the ids and the change times
//! are read from those answers; the records themselves are read through
//! the universal `get-contact`, so the field mapping stays in one place.

use serde::Deserialize;
use serde_json::{json, Value};

use super::record::{id_text, time_ms};
use super::{CrmError, IntegrationApp};
use crate::domain::{CustomerId, Provider};

/// The full listing's action.
pub const LIST: &str = "list-contacts";
/// The incremental listing's action, one per integration.
pub const LIST_CHANGED: &str = "list-changed-contacts";

/// HubSpot search yields at most this many results for one query (its
/// CRM search guide): before paging past them, a new query starts from
/// the last modification time applied.
const HUBSPOT_WINDOW: u64 = 10_000;
/// The page HubSpot's `list-changed-contacts` asks for
/// (`integration-app/integrations/hubspot/actions/list-changed-contacts`).
const HUBSPOT_PAGE: u64 = 200;

/// A page of the full listing: universal records, and where to go on.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Universal records (`{id, fields, updatedTime, …}`).
    #[serde(default)]
    pub records: Vec<Value>,
    /// The next page's cursor; `None` on the last page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A record the incremental listing shows changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The CRM's id.
    pub id: String,
    /// Its last change, ms since the epoch, as the CRM's listing gives it
    /// (Pipedrive: whole seconds).
    pub updated_ms: i64,
}

/// A page of the incremental listing.
#[derive(Debug, Default)]
pub struct ChangedPage {
    /// Records changed at or after the time asked for, oldest change first.
    pub changes: Vec<Changed>,
    /// The next page of the same query; `None` when the query is done or
    /// must not be paged further.
    pub next: Option<String>,
    /// The query reached the CRM's result window: more changes may follow,
    /// from a new query that starts at the last change applied.
    pub window_full: bool,
}

/// A 404 on a listing is no record's: the action's request reaches no
/// endpoint of the CRM. A configuration error, never a deletion.
fn listing_error(action: &str, e: CrmError) -> CrmError {
    match e {
        CrmError::NotFound(m) => CrmError::Permanent(format!(
            "{action}: the CRM has no such endpoint (check the action in integration-app/): {m}"
        )),
        e => e,
    }
}

/// RFC 3339, floored to the second: Pipedrive takes whole seconds, and a
/// floored bound still includes everything at or after the time.
fn since_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp(ms.div_euclid(1000), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads a CRM's answer to `list-changed-contacts`.
///
/// # Errors
/// `Permanent` when the answer is not the CRM's list shape.
fn parse_changed(provider: Provider, out: &Value) -> Result<ChangedPage, CrmError> {
    let malformed = |what: &str| {
        CrmError::Permanent(format!(
            "{LIST_CHANGED} on {provider}: the answer has no {what}"
        ))
    };
    // Pipedrive: {success, data: [person], additional_data: {next_cursor}};
    // HubSpot: {total, results: [{id, properties}], paging: {next: {after}}}.
    let (list_key, time_at, next) = match provider {
        Provider::Pipedrive => (
            "data",
            "/update_time",
            out.pointer("/additional_data/next_cursor"),
        ),
        Provider::Hubspot => (
            "results",
            "/properties/lastmodifieddate",
            out.pointer("/paging/next/after"),
        ),
    };
    let items: &[Value] = match out.get(list_key) {
        Some(Value::Array(items)) => items,
        // Pipedrive answers `data: null` for an empty page.
        Some(Value::Null) => &[],
        _ => return Err(malformed(list_key)),
    };
    let mut page = ChangedPage::default();
    for item in items {
        let id = item.get("id").and_then(id_text);
        let at = item
            .pointer(time_at)
            .and_then(time_ms)
            .or_else(|| item.get("updatedAt").and_then(time_ms));
        match (id, at) {
            (Some(id), Some(updated_ms)) => page.changes.push(Changed { id, updated_ms }),
            _ => {
                tracing::warn!(%provider, %item, "a changed record without an id or a change time; passed over")
            }
        }
    }
    page.next = next.and_then(id_text);
    if provider == Provider::Hubspot {
        if let Some(after) = page.next.as_deref().and_then(|a| a.parse::<u64>().ok()) {
            if after + HUBSPOT_PAGE > HUBSPOT_WINDOW {
                page.next = None;
                page.window_full = true;
            }
        }
    }
    Ok(page)
}

impl IntegrationApp {
    /// One page of the connection's records, in full.
    ///
    /// # Errors
    /// A classified [`CrmError`]; a 404 is a configuration error here.
    pub async fn list_page(
        &self,
        customer: &CustomerId,
        provider: Provider,
        cursor: Option<&str>,
    ) -> Result<Page, CrmError> {
        let input = match cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        self.run(customer, provider, LIST, &input)
            .await
            .map_err(|e| listing_error(LIST, e))
    }

    /// One page of the records changed at or after `since_ms`; `cursor`
    /// pages on within one query.
    ///
    /// # Errors
    /// A classified [`CrmError`]; a 404 is a configuration error here.
    pub async fn changed_since(
        &self,
        customer: &CustomerId,
        provider: Provider,
        since_ms: i64,
        cursor: Option<&str>,
    ) -> Result<ChangedPage, CrmError> {
        let mut input = json!({ "updatedSince": since_text(since_ms) });
        if let Some(c) = cursor {
            input["cursor"] = json!(c);
        }
        let out: Value = self
            .run(customer, provider, LIST_CHANGED, &input)
            .await
            .map_err(|e| listing_error(LIST_CHANGED, e))?;
        parse_changed(provider, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pipedrives_persons_page() {
        let out = json!({
            "success": true,
            "data": [
                {"id": 7, "update_time": "2026-01-01T00:00:01Z", "name": "A"},
                {"id": 8, "name": "no time"},
            ],
            "additional_data": {"next_cursor": "abc"},
        });
        let page = parse_changed(Provider::Pipedrive, &out).unwrap();
        assert_eq!(
            page.changes,
            vec![Changed {
                id: "7".into(),
                updated_ms: 1_767_225_601_000
            }]
        );
        assert_eq!(page.next.as_deref(), Some("abc"));
        let last = json!({"success": true, "data": null, "additional_data": {"next_cursor": null}});
        let page = parse_changed(Provider::Pipedrive, &last).unwrap();
        assert!(page.changes.is_empty() && page.next.is_none());
        assert!(parse_changed(Provider::Pipedrive, &json!({"error": "x"})).is_err());
        assert!(parse_changed(Provider::Pipedrive, &json!({"data": 5})).is_err());
    }

    #[test]
    fn stops_hubspots_search_before_its_window() {
        let page = |after: &str| {
            json!({
                "total": 20_000,
                "results": [{"id": "100001", "properties": {"lastmodifieddate": "2026-01-01T00:00:00.250Z"}}],
                "paging": {"next": {"after": after}},
            })
        };
        let early = parse_changed(Provider::Hubspot, &page("200")).unwrap();
        assert_eq!(early.next.as_deref(), Some("200"));
        assert!(!early.window_full);
        assert_eq!(early.changes[0].updated_ms, 1_767_225_600_250);
        let late = parse_changed(Provider::Hubspot, &page("9900")).unwrap();
        assert_eq!(late.next, None);
        assert!(late.window_full);
    }

    #[test]
    fn since_is_floored_to_the_second() {
        assert_eq!(since_text(1_767_225_601_999), "2026-01-01T00:00:01Z");
    }
}
