//! The CRMs' own API endpoints an `api-request-to-external-app` action
//! reaches through a connection: the request the action's
//! `config.request` resolves to (`method`, `path`, `query`, `data`) is
//! answered here as the CRM answers it, and the action's output is the
//! CRM's response body. A path the simulator does not serve gets the CRM's
//! own 404, as an endpoint the CRM lacks would.
//!
//! Served:
//! - Pipedrive `GET /api/v2/persons` (Pipedrive's API v2 reference,
//!   "Get all persons", `shared/specs/pipedrive-openapi-v2.yaml`):
//!   `updated_since` (inclusive, RFC 3339) and `updated_until` (exclusive),
//!   `sort_by` `id` | `update_time` | `add_time`, `sort_direction`
//!   `asc` | `desc`, `limit` (100 by default, at most 500) and an opaque
//!   `cursor`; `{success, data, additional_data: {next_cursor}}`. Deleted
//!   persons are not listed (the reference describes the list as the
//!   persons; `is_deleted` is a field of a person read by id). `ids`, a
//!   comma-separated list of up to 100 person ids, lists only those
//!   (ones that do not exist are left out, as the reference says; more
//!   than 100 is refused with a 400 here, which the reference's "up to
//!   100" suggests but a live account would have to confirm).
//! - HubSpot `POST /crm/v3/objects/contacts/search` (HubSpot's CRM search
//!   guide and `shared/specs/hubspot-crm-contacts-v3.json`): `filterGroups`
//!   (groups OR-ed, filters AND-ed; `EQ`, `NEQ`, `LT`, `LTE`, `GT`, `GTE`,
//!   `HAS_PROPERTY`, `NOT_HAS_PROPERTY`, `IN`), `sorts` (one property,
//!   `ASCENDING` | `DESCENDING`), `properties`, `limit` (10 by default, at
//!   most 200) and `after`; `{total, results, paging.next.after}`. A query
//!   yields at most 10,000 results: paging past them is a 400, as HubSpot's
//!   guide says. Archived contacts are not searched.
//!
//! The full URL of the CRM's API (`https://api.pipedrive.com/api/v2/...`)
//! is taken as well as the path: which base a connector joins a relative
//! path to cannot be confirmed without a live workspace.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use crate::connection::Connection;
use crate::error::{refused, ActionError};
use crate::store::{LiveRecord, Store};

/// Pipedrive's largest and default page.
const PIPEDRIVE_MAX_LIMIT: u64 = 500;
const PIPEDRIVE_DEFAULT_LIMIT: u64 = 100;
/// HubSpot search's largest and default page, and its result window.
const HUBSPOT_MAX_LIMIT: u64 = 200;
const HUBSPOT_DEFAULT_LIMIT: u64 = 10;
const HUBSPOT_WINDOW: u64 = 10_000;
/// Properties a HubSpot search returns when it names none.
const HUBSPOT_DEFAULT_PROPERTIES: &[&str] = &[
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
];

/// Answers the request an `api-request-to-external-app` action resolved to.
///
/// # Errors
/// The CRM's own refusal (400, 404) under the action run.
pub(crate) fn request(
    conn: Connection,
    store: &Store,
    request: &Value,
) -> Result<Value, ActionError> {
    let method = request["method"].as_str().unwrap_or_default();
    let path = request["path"].as_str().unwrap_or_default();
    let path = path
        .strip_prefix(conn.api_base())
        .unwrap_or(path)
        .trim_end_matches('/');
    let empty = Map::new();
    let query = request["query"].as_object().unwrap_or(&empty);
    match (conn, method, path) {
        (Connection::Pipedrive, "GET", "/api/v2/persons") => pipedrive_persons(store, query),
        (Connection::HubSpot, "POST", "/crm/v3/objects/contacts/search") => {
            hubspot_search(store, request.get("data").unwrap_or(&Value::Null))
        }
        (Connection::HubSpot, "POST", "/crm/v3/objects/contacts/batch/read") => {
            crate::batch::read(store, request.get("data").unwrap_or(&Value::Null))
        }
        (Connection::HubSpot, "POST", "/crm/v3/objects/contacts/batch/create") => {
            crate::batch::create(store, request.get("data").unwrap_or(&Value::Null))
        }
        (Connection::HubSpot, "POST", "/crm/v3/objects/contacts/batch/update") => {
            crate::batch::update(store, request.get("data").unwrap_or(&Value::Null))
        }
        _ => Err(ActionError::crm_answer(
            404,
            conn.not_found_body(),
            format!("{method} {path}: no such endpoint"),
        )),
    }
}

/// A query parameter as text (a formula may give a number).
fn param(query: &Map<String, Value>, name: &str) -> Option<String> {
    match query.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn page_size(text: Option<String>, default: u64, max: u64) -> Result<usize, String> {
    let n = match text {
        None => default,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("limit must be an integer from 1 to {max}"))?,
    };
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// `GET /api/v2/persons`.
fn pipedrive_persons(store: &Store, query: &Map<String, Value>) -> Result<Value, ActionError> {
    let conn = Connection::Pipedrive;
    let time = |name: &str| -> Result<Option<i64>, ActionError> {
        param(query, name)
            .map(|t| {
                rfc3339_ms(&t)
                    .ok_or_else(|| refused(conn, format!("{name} must be an RFC 3339 date-time")))
            })
            .transpose()
    };
    let (since, until) = (time("updated_since")?, time("updated_until")?);
    let only: Option<Vec<u64>> = match param(query, "ids") {
        None => None,
        Some(text) => {
            let ids: Option<Vec<u64>> = text.split(',').map(|t| t.trim().parse().ok()).collect();
            match ids {
                Some(ids) if ids.len() <= 100 => Some(ids),
                Some(_) => return Err(refused(conn, "ids takes up to 100 ids")),
                None => return Err(refused(conn, "ids must be comma-separated person ids")),
            }
        }
    };
    let by_update = match param(query, "sort_by").as_deref() {
        None | Some("id") | Some("add_time") => false,
        Some("update_time") => true,
        Some(other) => return Err(refused(conn, format!("sort_by {other:?} is not supported"))),
    };
    let descending = match param(query, "sort_direction").as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(refused(
                conn,
                format!("sort_direction {other:?} is not supported"),
            ))
        }
    };
    let limit = page_size(
        param(query, "limit"),
        PIPEDRIVE_DEFAULT_LIMIT,
        PIPEDRIVE_MAX_LIMIT,
    )
    .map_err(|e| refused(conn, e))?;
    // The cursor is the sort key of the last person returned.
    let after = match param(query, "cursor") {
        None => None,
        Some(c) => Some(decode_key(&c).ok_or_else(|| refused(conn, "invalid cursor"))?),
    };
    // Pipedrive's times are whole seconds: a bound compares with those.
    let secs = |ms: i64| ms.div_euclid(1000) * 1000;
    let key = |r: &LiveRecord| {
        if by_update {
            (r.updated_ms, r.id)
        } else {
            (0, r.id)
        }
    };
    let mut rows: Vec<LiveRecord> = store
        .live_records()
        .into_iter()
        .filter(|r| since.is_none_or(|s| secs(r.updated_ms) >= s))
        .filter(|r| until.is_none_or(|u| secs(r.updated_ms) < u))
        .filter(|r| only.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .collect();
    rows.sort_by_key(key);
    if descending {
        rows.reverse();
    }
    let rows: Vec<LiveRecord> = rows
        .into_iter()
        .filter(|r| match after {
            None => true,
            Some(a) if descending => key(r) < a,
            Some(a) => key(r) > a,
        })
        .take(limit + 1)
        .collect();
    let more = rows.len() > limit;
    let page = &rows[..rows.len().min(limit)];
    let next = more
        .then(|| page.last().map(|r| encode_key(key(r))))
        .flatten();
    Ok(json!({
        "success": true,
        "data": page.iter().map(|r| r.native.clone()).collect::<Vec<_>>(),
        "additional_data": { "next_cursor": next },
    }))
}

fn encode_key((ms, id): (i64, u64)) -> String {
    format!("{ms:x}.{id:x}")
}

fn decode_key(s: &str) -> Option<(i64, u64)> {
    let (ms, id) = s.split_once('.')?;
    Some((
        i64::from_str_radix(ms, 16).ok()?,
        u64::from_str_radix(id, 16).ok()?,
    ))
}

/// A HubSpot contact property's value, as search compares it: the date
/// properties as ms since the epoch, `hs_object_id` as a number, the rest
/// as (case-insensitive) text.
#[derive(Debug, PartialEq, PartialOrd)]
enum Prop {
    Number(f64),
    Text(String),
}

fn is_date(name: &str) -> bool {
    matches!(name, "createdate" | "lastmodifieddate")
}

fn prop_of(name: &str, raw: &Value) -> Option<Prop> {
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    if is_date(name) {
        // HubSpot takes a date filter's value as ms since the epoch or as
        // an ISO 8601 date-time.
        let ms = text.parse::<i64>().ok().or_else(|| rfc3339_ms(&text))?;
        return Some(Prop::Number(ms as f64));
    }
    if name == "hs_object_id" {
        return text.parse::<f64>().ok().map(Prop::Number);
    }
    Some(Prop::Text(text.to_lowercase()))
}

fn matches_filter(props: &Map<String, Value>, filter: &Value) -> Result<bool, String> {
    let name = filter["propertyName"]
        .as_str()
        .ok_or("a filter needs a propertyName")?;
    let op = filter["operator"]
        .as_str()
        .ok_or("a filter needs an operator")?;
    let have = props.get(name).and_then(|v| prop_of(name, v));
    let want = || {
        prop_of(name, &filter["value"])
            .ok_or_else(|| format!("filter on {name}: a value is required"))
    };
    Ok(match op {
        "HAS_PROPERTY" => have.is_some(),
        "NOT_HAS_PROPERTY" => have.is_none(),
        "IN" => {
            let values = filter["values"].as_array().ok_or("IN needs values")?;
            have.is_some_and(|h| values.iter().any(|v| prop_of(name, v).as_ref() == Some(&h)))
        }
        _ => {
            let want = want()?;
            let Some(have) = have else {
                return Ok(op == "NEQ");
            };
            let ord = have.partial_cmp(&want);
            match op {
                "EQ" => ord == Some(Ordering::Equal),
                "NEQ" => ord != Some(Ordering::Equal),
                "LT" => ord == Some(Ordering::Less),
                "LTE" => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                "GT" => ord == Some(Ordering::Greater),
                "GTE" => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                other => return Err(format!("operator {other:?} is not supported")),
            }
        }
    })
}

/// `POST /crm/v3/objects/contacts/search`.
fn hubspot_search(store: &Store, body: &Value) -> Result<Value, ActionError> {
    let conn = Connection::HubSpot;
    let bad = |m: String| refused(conn, m);
    let groups = match &body["filterGroups"] {
        Value::Null => Vec::new(),
        Value::Array(g) => g.clone(),
        _ => return Err(bad("filterGroups must be an array".into())),
    };
    let limit = page_size(
        match &body["limit"] {
            Value::Null => None,
            v => Some(v.to_string().trim_matches('"').to_owned()),
        },
        HUBSPOT_DEFAULT_LIMIT,
        HUBSPOT_MAX_LIMIT,
    )
    .map_err(bad)?;
    let offset = match &body["after"] {
        Value::Null => 0,
        v => v
            .to_string()
            .trim_matches('"')
            .parse::<u64>()
            .map_err(|_| bad("after must be a paging token from a previous page".into()))?,
    };
    if offset + limit as u64 > HUBSPOT_WINDOW {
        return Err(bad(format!(
            "a search returns at most {HUBSPOT_WINDOW} results; page by a narrower filter"
        )));
    }
    let (sort_on, descending) = match body["sorts"].as_array().and_then(|s| s.first()) {
        None => ("hs_object_id".to_owned(), false),
        Some(Value::String(s)) => match s.strip_prefix('-') {
            Some(name) => (name.to_owned(), true),
            None => (s.clone(), false),
        },
        Some(s) => (
            s["propertyName"]
                .as_str()
                .ok_or_else(|| bad("a sort needs a propertyName".into()))?
                .to_owned(),
            s["direction"].as_str() == Some("DESCENDING"),
        ),
    };
    let wanted: Vec<String> = match body["properties"].as_array() {
        Some(p) if !p.is_empty() => p
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => HUBSPOT_DEFAULT_PROPERTIES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let mut hits = Vec::new();
    for rec in store.live_records() {
        let empty = Map::new();
        let props = rec.native["properties"].as_object().unwrap_or(&empty);
        let mut keep = groups.is_empty();
        for group in &groups {
            let mut all = true;
            for f in group["filters"].as_array().into_iter().flatten() {
                all &= matches_filter(props, f).map_err(bad)?;
            }
            keep |= all;
        }
        if keep {
            let sort_key = props.get(&sort_on).and_then(|v| prop_of(&sort_on, v));
            hits.push((sort_key, rec));
        }
    }
    hits.sort_by(|(a, ra), (b, rb)| {
        let by = a
            .partial_cmp(b)
            .unwrap_or(Ordering::Equal)
            .then(ra.id.cmp(&rb.id));
        if descending {
            by.reverse()
        } else {
            by
        }
    });
    let total = hits.len();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
    let end = (start + limit).min(total);
    let results: Vec<Value> = hits[start..end]
        .iter()
        .map(|(_, r)| {
            let all = r.native["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let properties: Map<String, Value> = wanted
                .iter()
                .map(|k| (k.clone(), all.get(k).cloned().unwrap_or(Value::Null)))
                .collect();
            json!({
                "id": r.id.to_string(),
                "properties": properties,
                "createdAt": r.native["createdAt"],
                "updatedAt": r.native["updatedAt"],
                "archived": false,
            })
        })
        .collect();
    let mut out = json!({ "total": total, "results": results });
    if end < total {
        out["paging"] = json!({ "next": { "after": end.to_string() } });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_garbage() {
        let key = (1_700_000_000_000, 42);
        assert_eq!(decode_key(&encode_key(key)), Some(key));
        for bad in ["", "1", "x.1", "1.", ".1"] {
            assert_eq!(decode_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn search_filters_compare_dates_numbers_and_text() {
        let props = json!({
            "email": "A@Example.com",
            "lastmodifieddate": "2026-01-01T00:00:01.000Z",
            "hs_object_id": "100002",
        });
        let props = props.as_object().unwrap();
        let cases = [
            (
                json!({"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1767225601000"}),
                true,
            ),
            (
                json!({"propertyName": "lastmodifieddate", "operator": "GT", "value": "2026-01-01T00:00:01Z"}),
                false,
            ),
            (
                json!({"propertyName": "email", "operator": "EQ", "value": "a@example.com"}),
                true,
            ),
            (
                json!({"propertyName": "hs_object_id", "operator": "LT", "value": "100010"}),
                true,
            ),
            (
                json!({"propertyName": "phone", "operator": "HAS_PROPERTY"}),
                false,
            ),
            (
                json!({"propertyName": "phone", "operator": "NEQ", "value": "1"}),
                true,
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(matches_filter(props, &filter), Ok(want), "{filter}");
        }
        let unknown = json!({"propertyName": "email", "operator": "LIKE", "value": "a"});
        assert!(matches_filter(props, &unknown).is_err());
    }
}
