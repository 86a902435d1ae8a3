//! Loads the declarative config in `integration-app/`: the action specs
//! (`actions/<key>/spec.yaml`) and each integration's contacts field mapping
//! (`integrations/<integration>/field-mappings/contacts/spec.yaml`).
//!
//! Everything is checked here, at start-up, with `anyhow` context naming the
//! file; a request never meets a malformed spec.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context};
use serde::Deserialize;
use serde_json::Value;

use crate::connection::Connection;
use crate::formula::Formula;
use crate::mapping::FieldMapping;

/// The one collection the simulator models.
const COLLECTION: &str = "contacts";

/// What an action does, from its built-in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionKind {
    /// `find-or-create-data-record`, matched on `primaryEmail`.
    Upsert,
    /// `update-data-record`.
    Update,
    /// `delete-data-record`.
    Delete,
    /// `find-data-record-by-id`.
    Get,
    /// `list-data-records`, with the `updatedSince` filter added here.
    List,
    /// `match-data-record`, matched on `primaryEmail`: the live record or null.
    Match,
}

impl ActionKind {
    fn from_type(t: &str) -> anyhow::Result<Self> {
        Ok(match t {
            "find-or-create-data-record" => Self::Upsert,
            "update-data-record" => Self::Update,
            "delete-data-record" => Self::Delete,
            "find-data-record-by-id" => Self::Get,
            "list-data-records" => Self::List,
            "match-data-record" => Self::Match,
            other => bail!("unsupported action type {other:?}"),
        })
    }

    /// The keys of the resolved `config` this kind reads; each must be declared.
    fn required_config(self) -> &'static [&'static str] {
        match self {
            Self::Upsert => &["fields"],
            Self::Update => &["id", "fields"],
            Self::Delete | Self::Get => &["id"],
            Self::List => &[],
            Self::Match => &["query"],
        }
    }
}

/// One declared action.
#[derive(Debug)]
pub(crate) struct ActionSpec {
    pub(crate) kind: ActionKind,
    /// JSON schema the input must satisfy (see `schema.rs` for the subset).
    pub(crate) input_schema: Value,
    /// The `config` template, evaluated against `{"input": <input>}` to give
    /// the handler its arguments (`id`, `fields`, `filter.updatedSince`, …).
    pub(crate) config: Formula,
}

/// Everything read from `integration-app/`.
#[derive(Debug)]
pub(crate) struct Config {
    actions: HashMap<String, Arc<ActionSpec>>,
    hubspot: Arc<FieldMapping>,
    pipedrive: Arc<FieldMapping>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAction {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    input_schema: Value,
    #[serde(default)]
    config: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    key: String,
    export_value: Value,
    import_value: Value,
}

impl Config {
    /// Reads `dir` (the `integration-app/` directory).
    ///
    /// # Errors
    /// A missing or unreadable file, bad YAML, an unsupported action type or
    /// formula, or a spec that refers to something other than contacts.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let actions_dir = dir.join("actions");
        let mut actions = HashMap::new();
        let entries = std::fs::read_dir(&actions_dir)
            .with_context(|| format!("reading {}", actions_dir.display()))?;
        for entry in entries {
            let path = entry?.path().join("spec.yaml");
            if !path.is_file() {
                continue;
            }
            let (key, spec) =
                load_action(&path).with_context(|| format!("in {}", path.display()))?;
            actions.insert(key, Arc::new(spec));
        }
        ensure!(
            !actions.is_empty(),
            "no actions declared in {}",
            actions_dir.display()
        );
        let mapping = |conn: Connection| -> anyhow::Result<Arc<FieldMapping>> {
            let path = dir
                .join("integrations")
                .join(conn.key())
                .join("field-mappings")
                .join(COLLECTION)
                .join("spec.yaml");
            load_mapping(&path)
                .with_context(|| format!("in {}", path.display()))
                .map(Arc::new)
        };
        Ok(Self {
            actions,
            hubspot: mapping(Connection::HubSpot)?,
            pipedrive: mapping(Connection::Pipedrive)?,
        })
    }

    /// The action declared under `key`, if any.
    pub(crate) fn action(&self, key: &str) -> Option<Arc<ActionSpec>> {
        self.actions.get(key).cloned()
    }

    /// The contacts field mapping of `conn`.
    pub(crate) fn mapping(&self, conn: Connection) -> Arc<FieldMapping> {
        match conn {
            Connection::HubSpot => self.hubspot.clone(),
            Connection::Pipedrive => self.pipedrive.clone(),
        }
    }
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).context("reading the file")?;
    serde_yaml::from_str(&text).context("parsing the YAML")
}

fn load_action(path: &Path) -> anyhow::Result<(String, ActionSpec)> {
    let raw: RawAction = read_yaml(path)?;
    let kind = ActionKind::from_type(&raw.kind)?;
    ensure!(
        raw.input_schema.is_object(),
        "inputSchema must be an object"
    );
    let str_at = |ptr: &str| raw.config.pointer(ptr).and_then(Value::as_str);
    ensure!(
        str_at("/dataSource/collectionKey") == Some(COLLECTION),
        "config.dataSource.collectionKey must be {COLLECTION:?}"
    );
    if let Some(mapping) = raw.config.get("fieldMapping") {
        ensure!(
            mapping.get("key").and_then(Value::as_str) == Some(COLLECTION),
            "config.fieldMapping.key must be {COLLECTION:?}"
        );
    }
    if matches!(kind, ActionKind::Upsert | ActionKind::Match) {
        ensure!(
            matches!(str_at("/lookup/fieldKey"), None | Some("primaryEmail")),
            "config.lookup.fieldKey: only primaryEmail is supported"
        );
    }
    for key in kind.required_config() {
        ensure!(
            raw.config.get(*key).is_some(),
            "config.{key} is required for this type"
        );
    }
    let config = Formula::compile(&raw.config).context("config")?;
    let spec = ActionSpec {
        kind,
        input_schema: raw.input_schema,
        config,
    };
    Ok((raw.key, spec))
}

fn load_mapping(path: &Path) -> anyhow::Result<FieldMapping> {
    let raw: RawMapping = read_yaml(path)?;
    ensure!(
        raw.key == COLLECTION,
        "field mapping key must be {COLLECTION:?}"
    );
    FieldMapping::new(&raw.export_value, &raw.import_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_declares_the_six_actions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration-app");
        let cfg = Config::load(&dir).expect("integration-app loads");
        let cases = [
            ("upsert-contact", ActionKind::Upsert),
            ("update-contact", ActionKind::Update),
            ("delete-contact", ActionKind::Delete),
            ("get-contact", ActionKind::Get),
            ("list-contacts", ActionKind::List),
            ("find-contact", ActionKind::Match),
        ];
        for (key, kind) in cases {
            assert_eq!(cfg.action(key).map(|a| a.kind), Some(kind), "action {key}");
        }
        assert!(cfg.action("create-contact").is_none());
    }
}
