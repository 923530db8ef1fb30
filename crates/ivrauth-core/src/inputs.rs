//! A flow's `inputSchema`: which inputs exist, which are secret, and validating a run's
//! inputs against the schema (JSON Schema draft 7) without ever echoing the value given.
//!
//! The `jsonschema` crate is built without its resolver features, so a schema's external
//! `$ref` is never fetched: it fails to compile and the flow is refused.

use std::collections::BTreeSet;

use serde_json::Value;

use ivrauth_proto::api::Diagnostic;

/// Schema keywords that mark an input as secret.
pub const SECURE_KEYWORDS: &[&str] = &["x-genesys-secure", "x-secure"];

#[derive(Debug)]
pub struct InputSchema {
    validator: Option<jsonschema::Validator>,
    names: BTreeSet<String>,
    secure: BTreeSet<String>,
}

impl InputSchema {
    pub fn empty() -> Self {
        InputSchema {
            validator: None,
            names: BTreeSet::new(),
            secure: BTreeSet::new(),
        }
    }

    /// Compile a schema; the error is a message for a validation report.
    pub fn compile(schema: Option<&Value>) -> Result<InputSchema, String> {
        let Some(schema) = schema else {
            return Ok(Self::empty());
        };
        if !schema.is_object() {
            return Err("`inputSchema` must be a JSON Schema object".to_owned());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(schema)
            .map_err(|e| format!("`inputSchema` is not a valid JSON Schema: {}", e.masked()))?;
        let mut names = BTreeSet::new();
        let mut secure = BTreeSet::new();
        // Names marked secure anywhere (inside `allOf`, `definitions`...): an input of the same
        // name is secure too.
        let mut marked_anywhere = BTreeSet::new();
        collect_marked_names(schema, &mut marked_anywhere, 0);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, def) in props {
                names.insert(name.clone());
                // A mark anywhere inside an input's schema (a nested field, an item, a `$ref`
                // target) makes the whole input secure: masking too much is safe, too little
                // is a leak.
                if marked_anywhere.contains(name) || contains_mark(def, schema, &mut Vec::new(), 0)
                {
                    secure.insert(name.clone());
                }
            }
        }
        Ok(InputSchema {
            validator: Some(validator),
            names,
            secure,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn secure_names(&self) -> impl Iterator<Item = &str> {
        self.secure.iter().map(String::as_str)
    }

    pub fn is_secure(&self, name: &str) -> bool {
        self.secure.contains(name)
    }

    /// Every problem with `inputs`: path (JSON pointer), keyword as `code`, and a message
    /// in which the offending value is replaced by the word `value`.
    pub fn check(&self, inputs: &Value) -> Result<(), Vec<Diagnostic>> {
        if !inputs.is_object() {
            return Err(vec![Diagnostic {
                path: "/input".to_owned(),
                node_id: None,
                code: "type".to_owned(),
                message: "`input` must be a JSON object".to_owned(),
            }]);
        }
        let Some(v) = &self.validator else {
            return Ok(());
        };
        let problems: Vec<Diagnostic> = v
            .iter_errors(inputs)
            .map(|e| {
                let keyword = e
                    .schema_path
                    .to_string()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let mut path = e.instance_path.to_string();
                if let jsonschema::error::ValidationErrorKind::Required { property } = &e.kind {
                    if let Some(p) = property.as_str() {
                        path = format!("{path}/{p}");
                    }
                }
                use jsonschema::error::ValidationErrorKind as K;
                // `masked()` replaces the value with the word "value", but some messages also
                // quote object keys, which may be secret too: those get a fixed text.
                let message = match &e.kind {
                    K::Required { .. } => "is required".to_owned(),
                    K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } => {
                        "has properties the schema does not allow".to_owned()
                    }
                    K::PropertyNames { .. } => {
                        "has a property name the schema does not allow".to_owned()
                    }
                    _ => e.masked().to_string(),
                };
                Diagnostic {
                    path: format!("/input{path}"),
                    node_id: None,
                    code: keyword,
                    message,
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Deepest schema nesting searched for secure marks (documents are parsed with serde_json's
/// own depth limit of 128, so this is never the binding limit in practice).
const MAX_SCHEMA_DEPTH: usize = 256;

fn is_marked(v: &Value) -> bool {
    SECURE_KEYWORDS
        .iter()
        .any(|k| v.get(*k).and_then(Value::as_bool) == Some(true))
}

/// Whether `v` or anything inside it, following local `$ref`s (once each), is marked secure.
fn contains_mark<'a>(v: &'a Value, root: &'a Value, seen: &mut Vec<&'a str>, depth: usize) -> bool {
    if depth > MAX_SCHEMA_DEPTH {
        return true;
    }
    match v {
        Value::Object(o) => {
            if is_marked(v) {
                return true;
            }
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                if let Some(pointer) = r.strip_prefix('#') {
                    if !seen.contains(&r) {
                        seen.push(r);
                        if let Some(target) = root.pointer(pointer) {
                            if contains_mark(target, root, seen, depth + 1) {
                                return true;
                            }
                        }
                    }
                }
            }
            o.values().any(|c| contains_mark(c, root, seen, depth + 1))
        }
        Value::Array(a) => a.iter().any(|c| contains_mark(c, root, seen, depth + 1)),
        _ => false,
    }
}

/// Every property name, anywhere in the schema, whose own schema carries a secure mark.
fn collect_marked_names(v: &Value, out: &mut BTreeSet<String>, depth: usize) {
    if depth > MAX_SCHEMA_DEPTH {
        return;
    }
    match v {
        Value::Object(o) => {
            if let Some(props) = o.get("properties").and_then(Value::as_object) {
                for (name, def) in props {
                    if is_marked(def) {
                        out.insert(name.clone());
                    }
                }
            }
            for c in o.values() {
                collect_marked_names(c, out, depth + 1);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|c| collect_marked_names(c, out, depth + 1)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> InputSchema {
        InputSchema::compile(Some(&json!({
            "type": "object",
            "properties": {
                "username": {"type": "string", "title": "Username"},
                "password": {"type": "string", "x-genesys-secure": true},
                "pin": {"type": "string", "x-secure": true, "pattern": "^[0-9]{4,8}$"}
            },
            "required": ["username", "password"],
            "additionalProperties": false
        })))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn secure_inputs_are_found() {
        let s = schema();
        assert_eq!(
            s.secure_names().collect::<Vec<_>>(),
            vec!["password", "pin"]
        );
        assert_eq!(s.names().count(), 3);
    }

    #[test]
    fn problems_list_paths_and_keywords_but_never_values() {
        let s = schema();
        let errs = s
            .check(&json!({"password": 12345, "pin": "canary-pin-value", "canary-key": 1}))
            .err()
            .unwrap_or_default();
        let summary: Vec<(String, String)> = errs
            .iter()
            .map(|d| (d.path.clone(), d.code.clone()))
            .collect();
        assert!(
            summary.contains(&("/input/username".into(), "required".into())),
            "{summary:?}"
        );
        assert!(
            summary.contains(&("/input/password".into(), "type".into())),
            "{summary:?}"
        );
        assert!(
            summary.contains(&("/input/pin".into(), "pattern".into())),
            "{summary:?}"
        );
        assert!(
            summary.contains(&("/input".into(), "additionalProperties".into())),
            "{summary:?}"
        );
        let text = serde_json::to_string(&errs).unwrap_or_default();
        assert!(
            !text.contains("12345")
                && !text.contains("canary-pin-value")
                && !text.contains("canary-key"),
            "{text}"
        );
    }

    #[test]
    fn marks_below_the_top_level_make_the_input_secure() {
        let s = InputSchema::compile(Some(&json!({
            "type": "object",
            "definitions": {"secret": {"type": "string", "x-secure": true}},
            "properties": {
                "creds": {"type": "object", "properties": {"pin": {"type": "string", "x-secure": true}}},
                "viaRef": {"$ref": "#/definitions/secret"},
                "viaAllOf": {"allOf": [{"type": "string"}, {"x-genesys-secure": true}]},
                "list": {"type": "array", "items": {"type": "string", "x-secure": true}},
                "token": {"type": "string"},
                "plain": {"type": "string"}
            },
            "allOf": [{"properties": {"token": {"x-secure": true}}}]
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.secure_names().collect::<Vec<_>>(),
            vec!["creds", "list", "token", "viaAllOf", "viaRef"]
        );
    }

    #[test]
    fn external_refs_are_not_fetched() {
        let r = InputSchema::compile(Some(&json!({"$ref": "https://example.com/schema.json"})));
        assert!(r.is_err());
    }
}
