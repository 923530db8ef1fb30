//! Templates (`"Bearer {{session.authToken}}"`) and CEL conditions with `{{path}}` placeholders.
//!
//! A placeholder names a flow variable by a dotted path. In a condition, each placeholder is
//! rewritten to a generated CEL variable (`__p0`, `__p1`, ...) that the engine binds before
//! evaluating, so paths that are not CEL identifiers (`end-success.statusCode`) still work,
//! and an absent path is bound to `null` instead of raising CEL's no-such-key error.
//! This module parses; resolving paths against run state is the engine's job.

use std::fmt;

/// A dotted reference to a flow variable, such as `http_auth_provider.body.token`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarPath {
    pub segments: Vec<String>,
}

impl VarPath {
    pub fn parse(text: &str) -> Option<VarPath> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut segments = Vec::new();
        for seg in text.split('.') {
            let valid = !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$');
            if !valid {
                return None;
            }
            segments.push(seg.to_owned());
        }
        Some(VarPath { segments })
    }

    pub fn root(&self) -> &str {
        self.segments
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn rest(&self) -> &[String] {
        self.segments.get(1..).unwrap_or_default()
    }
}

impl fmt::Display for VarPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Ref(VarPath),
}

/// A string with `{{path}}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed placeholder: `{{{{` without a matching `}}}}`")]
    Unclosed,
    #[error("placeholder `{{{{{0}}}}}` is not a dotted variable name (letters, digits, `_`, `-`, separated by `.`)")]
    BadPath(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let (lit, after) = rest.split_at(open);
            if !lit.is_empty() {
                parts.push(Part::Lit(lit.to_owned()));
            }
            let after = &after[2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let inner = &after[..close];
            let path = VarPath::parse(inner)
                .ok_or_else(|| TemplateError::BadPath(inner.trim().to_owned()))?;
            parts.push(Part::Ref(path));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The path when the template is exactly one placeholder (keeps its JSON type).
    pub fn single_ref(&self) -> Option<&VarPath> {
        match self.parts.as_slice() {
            [Part::Ref(p)] => Some(p),
            _ => None,
        }
    }

    pub fn refs(&self) -> impl Iterator<Item = &VarPath> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Lit(_) => None,
        })
    }

    /// The literal text before the first placeholder.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Lit(s)) => s,
            _ => "",
        }
    }
}

/// A compiled condition: CEL with placeholders replaced by generated variables.
#[derive(Debug)]
pub struct Condition {
    pub source: String,
    pub program: cel::Program,
    /// `bindings[i]` is bound to the CEL variable `__p{i}`.
    pub bindings: Vec<VarPath>,
    /// Plain CEL identifiers the expression uses (`authResult == "success"`), bound to the
    /// flow variable of the same name.
    pub bare: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("CEL syntax error: {0}")]
    Syntax(String),
}

pub fn binding_name(i: usize) -> String {
    format!("__p{i}")
}

impl Condition {
    pub fn parse(source: &str) -> Result<Condition, ConditionError> {
        let template = Template::parse(source)?;
        let mut cel_text = String::with_capacity(source.len());
        let mut bindings: Vec<VarPath> = Vec::new();
        for part in template.parts {
            match part {
                Part::Lit(s) => cel_text.push_str(&s),
                Part::Ref(p) => {
                    let i = match bindings.iter().position(|b| *b == p) {
                        Some(i) => i,
                        None => {
                            bindings.push(p);
                            bindings.len() - 1
                        }
                    };
                    cel_text.push(' ');
                    cel_text.push_str(&binding_name(i));
                    cel_text.push(' ');
                }
            }
        }
        let program =
            cel::Program::compile(&cel_text).map_err(|e| ConditionError::Syntax(e.to_string()))?;
        let mut bare: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|v| !v.starts_with("__p"))
            .map(str::to_owned)
            .collect();
        bare.sort();
        Ok(Condition {
            source: source.to_owned(),
            program,
            bindings,
            bare,
        })
    }

    /// Every flow variable the condition reads.
    pub fn var_paths(&self) -> Vec<VarPath> {
        let mut out = self.bindings.clone();
        out.extend(self.bare.iter().filter_map(|b| VarPath::parse(b)));
        out
    }
}

/// Convert JSON to a CEL value. Integers that fit `i64` become CEL `int` (so `200 == 200`
/// holds for a JSON status code); larger ones `uint`; others `double`.
pub fn json_to_cel(v: &serde_json::Value) -> cel::Value {
    use std::collections::HashMap;
    use std::sync::Arc;
    match v {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => {
            cel::Value::List(Arc::new(a.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(o) => {
            let map: HashMap<cel::objects::Key, cel::Value> = o
                .iter()
                .map(|(k, v)| {
                    (
                        cel::objects::Key::String(Arc::new(k.clone())),
                        json_to_cel(v),
                    )
                })
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parts() {
        let t = Template::parse("user={{username}} | trace={{ flow.traceId }}")
            .unwrap_or_else(|e| panic!("{e}"));
        let refs: Vec<String> = t.refs().map(|r| r.to_string()).collect();
        assert_eq!(refs, vec!["username", "flow.traceId"]);
        assert_eq!(t.literal_prefix(), "user=");
        assert!(t.single_ref().is_none());
        let single =
            Template::parse("{{http_auth_provider.body.token}}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(single.single_ref().map(|p| p.segments.len()), Some(3));
    }

    #[test]
    fn template_errors() {
        assert_eq!(Template::parse("a {{b"), Err(TemplateError::Unclosed));
        assert_eq!(
            Template::parse("{{a b}}"),
            Err(TemplateError::BadPath("a b".into()))
        );
        assert_eq!(
            Template::parse("{{}}"),
            Err(TemplateError::BadPath(String::new()))
        );
    }

    #[test]
    fn condition_rewrites_placeholders() {
        let c = Condition::parse(
            "{{http_auth_provider.statusCode}} == 200 && {{http_auth_provider.body.token}} != null",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.bindings.len(), 2);
        assert!(c.bare.is_empty());
        let c = Condition::parse("{{end-success.statusCode}} == 200 && authResult == 'x'")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.bare, vec!["authResult"]);
        assert!(matches!(
            Condition::parse("{{a}} ==="),
            Err(ConditionError::Syntax(_))
        ));
    }
}
