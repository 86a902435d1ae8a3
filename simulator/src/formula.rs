//! The subset of Integration.app's formula language that `integration-app/`
//! uses: `$var`, `$concat` (`{values, delimiter}` or a list) and literals
//! (see `integration-app/README.md`, where the two results that differ from
//! Membrane's are listed).
//!
//! Templates are compiled once at load time, so a typo in the YAML (an
//! unknown `$operator`, a path not starting with `$`) stops start-up instead
//! of silently mapping nothing.

use anyhow::{bail, ensure, Context};
use serde_json::{Map, Value};

/// A compiled template: evaluating it against a root value yields JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Formula {
    /// A plain JSON scalar (string, number, bool or null).
    Literal(Value),
    /// `{$var: "$.a.b.0"}`: the value at a path below the root.
    Var(Vec<Segment>),
    /// `{$concat: {values: [..], delimiter}}` (or `{$concat: [..]}`, no
    /// delimiter): the parts that are neither null nor empty, joined; null
    /// when that leaves nothing.
    Concat {
        values: Vec<Formula>,
        delimiter: String,
    },
    /// An object whose values are templates; null values are omitted.
    Object(Vec<(String, Formula)>),
    /// An array of templates; null elements and all-null objects are dropped.
    Array(Vec<Formula>),
}

/// One step of a `$var` path. A numeric step indexes arrays and is also tried
/// as a key on objects, so `$.a.0` works on `{"a": {"0": …}}` too.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment(String);

impl Formula {
    /// Compiles a template parsed from YAML.
    ///
    /// # Errors
    /// An unknown `$operator`, an operator mixed with other keys, a malformed
    /// path or a `$concat` whose argument is not a list.
    pub(crate) fn compile(template: &Value) -> anyhow::Result<Self> {
        match template {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Self::compile(item).with_context(|| format!("[{i}]")))
                .collect::<anyhow::Result<_>>()
                .map(Formula::Array),
            Value::Object(map) => Self::compile_object(map),
            scalar => Ok(Formula::Literal(scalar.clone())),
        }
    }

    fn compile_object(map: &Map<String, Value>) -> anyhow::Result<Self> {
        let operators: Vec<&String> = map.keys().filter(|k| k.starts_with('$')).collect();
        let Some(op) = operators.first() else {
            return map
                .iter()
                .map(|(k, v)| Ok((k.clone(), Self::compile(v).with_context(|| k.clone())?)))
                .collect::<anyhow::Result<_>>()
                .map(Formula::Object);
        };
        ensure!(
            map.len() == 1,
            "formula {op} must be the only key of its object"
        );
        let arg = &map[op.as_str()];
        match op.as_str() {
            "$var" => {
                let path = arg.as_str().context("$var takes a path string")?;
                Ok(Formula::Var(parse_path(path)?))
            }
            "$concat" => {
                let (parts, delimiter) = match arg {
                    Value::Array(parts) => (parts, ""),
                    Value::Object(options) => {
                        for key in options.keys() {
                            ensure!(
                                key == "values" || key == "delimiter",
                                "$concat takes values and delimiter, not {key}"
                            );
                        }
                        let parts = options
                            .get("values")
                            .and_then(Value::as_array)
                            .context("$concat.values must be a list")?;
                        let delimiter = match options.get("delimiter") {
                            None => "",
                            Some(d) => d.as_str().context("$concat.delimiter must be a string")?,
                        };
                        (parts, delimiter)
                    }
                    _ => bail!("$concat takes a list or {{values, delimiter}}"),
                };
                let values = parts
                    .iter()
                    .map(Self::compile)
                    .collect::<anyhow::Result<_>>()?;
                Ok(Formula::Concat {
                    values,
                    delimiter: delimiter.to_owned(),
                })
            }
            other => bail!("unsupported formula operator {other}"),
        }
    }

    /// Evaluates the template against `root`; `Value::Null` means "no value".
    pub(crate) fn eval(&self, root: &Value) -> Value {
        self.eval_tracked(root).0
    }

    /// Evaluates and also reports whether the subtree holds a formula
    /// (`$var`/`$concat`) and whether any of them produced a value, which is
    /// what decides if an object inside an array is kept.
    fn eval_tracked(&self, root: &Value) -> (Value, Presence) {
        match self {
            Formula::Literal(v) => (v.clone(), Presence::NoFormula),
            Formula::Var(path) => {
                let v = lookup(root, path).cloned().unwrap_or(Value::Null);
                let presence = Presence::formula(!v.is_null());
                (v, presence)
            }
            Formula::Concat { values, delimiter } => {
                let parts: Vec<String> = values
                    .iter()
                    .filter_map(|p| text(p.eval(root)))
                    .filter(|t| !t.is_empty())
                    .collect();
                let v = if parts.is_empty() {
                    Value::Null
                } else {
                    Value::String(parts.join(delimiter))
                };
                let presence = Presence::formula(!v.is_null());
                (v, presence)
            }
            Formula::Object(fields) => {
                let mut out = Map::new();
                let mut presence = Presence::NoFormula;
                for (key, f) in fields {
                    let (v, p) = f.eval_tracked(root);
                    presence = presence.and(p);
                    if !v.is_null() {
                        out.insert(key.clone(), v);
                    }
                }
                (Value::Object(out), presence)
            }
            Formula::Array(items) => {
                let mut out = Vec::new();
                let mut presence = Presence::NoFormula;
                for f in items {
                    let (v, p) = f.eval_tracked(root);
                    presence = presence.and(p);
                    let all_null_object = v.is_object() && p == Presence::AllNull;
                    if !v.is_null() && !all_null_object {
                        out.push(v);
                    }
                }
                let v = if out.is_empty() {
                    Value::Null
                } else {
                    Value::Array(out)
                };
                (v, presence)
            }
        }
    }
}

/// Whether a subtree's formulas produced anything.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Presence {
    NoFormula,
    AllNull,
    SomeValue,
}

impl Presence {
    fn formula(has_value: bool) -> Self {
        if has_value {
            Presence::SomeValue
        } else {
            Presence::AllNull
        }
    }

    fn and(self, other: Self) -> Self {
        use Presence::*;
        match (self, other) {
            (SomeValue, _) | (_, SomeValue) => SomeValue,
            (AllNull, _) | (_, AllNull) => AllNull,
            (NoFormula, NoFormula) => NoFormula,
        }
    }
}

/// `$` alone is the root; otherwise the path must start with `$.`.
fn parse_path(path: &str) -> anyhow::Result<Vec<Segment>> {
    if path == "$" {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix("$.")
        .with_context(|| format!("$var path {path:?} must start with \"$.\""))?;
    rest.split('.')
        .map(|s| {
            ensure!(!s.is_empty(), "$var path {path:?} has an empty segment");
            Ok(Segment(s.to_owned()))
        })
        .collect()
}

fn lookup<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, Segment(s)| match v {
        Value::Object(map) => map.get(s),
        Value::Array(items) => s.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The text a `$concat` part contributes: strings as they are, numbers and
/// booleans in their JSON form, nothing for null, objects and arrays.
fn text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(template: Value, root: Value) -> Value {
        Formula::compile(&template).expect("compiles").eval(&root)
    }

    #[test]
    fn var_walks_objects_and_array_indexes() {
        let root = json!({"a": {"b": [{"c": 1}, {"c": 2}]}});
        let cases = [
            ("$.a.b.1.c", json!(2)),
            ("$.a.b.0", json!({"c": 1})),
            ("$.a.b.5.c", Value::Null),
            ("$.a.x", Value::Null),
            ("$.a.b.c", Value::Null),
            ("$", root.clone()),
        ];
        for (path, want) in cases {
            assert_eq!(
                eval(json!({"$var": path}), root.clone()),
                want,
                "path {path}"
            );
        }
    }

    #[test]
    fn concat_joins_present_parts_with_the_delimiter() {
        let t =
            json!({"$concat": {"values": [{"$var": "$.f"}, {"$var": "$.l"}], "delimiter": " "}});
        let cases = [
            (json!({"f": "Ann", "l": "Lee"}), json!("Ann Lee")),
            (json!({"f": "Ann"}), json!("Ann")),
            (json!({"l": "Lee"}), json!("Lee")),
            (json!({"f": "", "l": "Lee"}), json!("Lee")),
            (json!({}), Value::Null),
            (json!({"f": 7, "l": true}), json!("7 true")),
        ];
        for (root, want) in cases {
            assert_eq!(eval(t.clone(), root.clone()), want, "root {root}");
        }
        // The list form has no delimiter.
        let list = json!({"$concat": [{"$var": "$.f"}, "-", {"$var": "$.l"}]});
        assert_eq!(
            eval(list.clone(), json!({"f": "a", "l": "b"})),
            json!("a-b")
        );
        assert_eq!(eval(list, json!({"f": "a"})), json!("a-"));
    }

    #[test]
    fn objects_omit_null_keys_and_keep_literals() {
        let t = json!({"a": {"$var": "$.x"}, "b": {"$var": "$.y"}, "c": "lit", "d": {"e": {"$var": "$.y"}}});
        assert_eq!(
            eval(t, json!({"x": "X"})),
            json!({"a": "X", "c": "lit", "d": {}})
        );
    }

    #[test]
    fn arrays_drop_all_null_objects_and_vanish_when_empty() {
        let t = json!({"list": [{"value": {"$var": "$.v"}, "primary": true}], "other": 1});
        assert_eq!(eval(t.clone(), json!({})), json!({"other": 1}));
        assert_eq!(
            eval(t, json!({"v": "x"})),
            json!({"list": [{"value": "x", "primary": true}], "other": 1})
        );
        let literal_only = json!([{"a": 1}, {"$var": "$.missing"}]);
        assert_eq!(eval(literal_only, json!({})), json!([{"a": 1}]));
    }

    #[test]
    fn compile_rejects_malformed_templates() {
        let cases = [
            (json!({"$if": 1}), "unknown operator"),
            (json!({"$var": "a.b"}), "path without $."),
            (json!({"$var": "$.a..b"}), "empty segment"),
            (json!({"$var": 3}), "non-string path"),
            (json!({"$concat": "x"}), "concat of a string"),
            (
                json!({"$concat": {"values": "x"}}),
                "concat values not a list",
            ),
            (
                json!({"$concat": {"values": [], "separator": " "}}),
                "concat option unknown",
            ),
            (
                json!({"$concat": {"values": [], "delimiter": 1}}),
                "concat delimiter not a string",
            ),
            (json!({"$var": "$.a", "b": 1}), "operator mixed with keys"),
            (json!({"deep": [{"$nope": []}]}), "nested unknown operator"),
        ];
        for (t, why) in cases {
            assert!(Formula::compile(&t).is_err(), "{why}: {t}");
        }
    }
}
