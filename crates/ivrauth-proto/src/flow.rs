//! The flow document: JSON that describes a call flow as nodes, edges and an input schema.
//!
//! Parsing is deliberately permissive: unknown fields are captured (not rejected) so that the
//! validator in `ivrauth-core` can report every one of them in a single pass, with a
//! "did you mean" hint. Node `properties` stay raw JSON here and are parsed per node type by
//! [`NodeProperties::parse`], so adding a node type is adding a variant and a struct.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The format version written when a document omits `formatVersion`.
pub const CURRENT_FORMAT_VERSION: u32 = 1;

/// Fields that a document may not carry are collected here instead of failing the parse.
pub type Unknown = BTreeMap<String, Value>;

/// A flow document exactly as a client sent it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlowDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub flow_type: Option<String>,
    /// JSON Schema draft 7 for the run's inputs; properties marked `x-genesys-secure` or
    /// `x-secure` are secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default)]
    pub nodes: Nodes,
    #[serde(default)]
    pub edges: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Nodes, in document order, each with the key it was given: the object key when `nodes` is
/// an object, the node's `id` (or its position) when `nodes` is an array.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nodes {
    pub entries: Vec<NodeEntry>,
    /// True when the document gave `nodes` as an array.
    pub as_array: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeEntry {
    pub key: String,
    pub node: RawNode,
}

/// One node; `properties` are parsed per `type` by [`NodeProperties::parse`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub node_type: String,
    #[serde(default = "empty_object")]
    pub properties: Value,
    #[serde(flatten)]
    pub unknown: Unknown,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl RawNode {
    /// The id a node is known by: its `id`, or its key when it has none.
    pub fn id_or<'a>(&'a self, key: &'a str) -> &'a str {
        self.id.as_deref().unwrap_or(key)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Edge {
    pub source: String,
    pub target: String,
    /// The name of one of the source condition node's conditions, or `!name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The node types this version of the format knows, by their `type` string.
pub const NODE_TYPES: &[&str] = &[
    "start",
    "end",
    "http",
    "condition",
    "setProperties",
    "log",
    "action",
    "say",
    "collect",
    "menu",
    "transfer",
    "hangup",
    "secureEnter",
    "secureExit",
    "wait",
];

/// A node's properties, typed by the node's `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeProperties {
    Start(StartProps),
    End(EndProps),
    Http(HttpProps),
    Condition(ConditionProps),
    SetProperties(SetPropertiesProps),
    Log(LogProps),
    Action(ActionProps),
    Say(SayProps),
    Collect(CollectProps),
    Menu(MenuProps),
    Transfer(TransferProps),
    Hangup(HangupProps),
    SecureEnter(StartProps),
    SecureExit(StartProps),
    Wait(WaitProps),
}

/// Why a node's properties could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertiesError {
    UnknownType,
    /// A shape error at a JSON path relative to `properties` ("" for the object itself).
    Invalid {
        path: String,
        message: String,
    },
}

impl NodeProperties {
    pub fn parse(node_type: &str, properties: &Value) -> Result<Self, PropertiesError> {
        fn typed<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T, PropertiesError> {
            serde_path_to_error_lite(v)
        }
        Ok(match node_type {
            "start" => NodeProperties::Start(typed(properties)?),
            "end" => NodeProperties::End(typed(properties)?),
            "http" => NodeProperties::Http(typed(properties)?),
            "condition" => NodeProperties::Condition(typed(properties)?),
            "setProperties" => NodeProperties::SetProperties(typed(properties)?),
            "log" => NodeProperties::Log(typed(properties)?),
            "action" => NodeProperties::Action(typed(properties)?),
            "say" => NodeProperties::Say(typed(properties)?),
            "collect" => NodeProperties::Collect(typed(properties)?),
            "menu" => NodeProperties::Menu(typed(properties)?),
            "transfer" => NodeProperties::Transfer(typed(properties)?),
            "hangup" => NodeProperties::Hangup(typed(properties)?),
            "secureEnter" => NodeProperties::SecureEnter(typed(properties)?),
            "secureExit" => NodeProperties::SecureExit(typed(properties)?),
            "wait" => NodeProperties::Wait(typed(properties)?),
            _ => return Err(PropertiesError::UnknownType),
        })
    }

    /// Fields of the properties object that the type does not know, with their JSON path
    /// relative to `properties`.
    pub fn unknown_fields(&self) -> Vec<(String, Vec<&'static str>)> {
        let mut out = Vec::new();
        let mut push = |prefix: String, unknown: &Unknown, known: &[&'static str]| {
            for k in unknown.keys() {
                out.push((format!("{prefix}{k}"), known.to_vec()));
            }
        };
        match self {
            NodeProperties::Start(p) => push(String::new(), &p.unknown, &[]),
            NodeProperties::End(p) => push(String::new(), &p.unknown, EndProps::FIELDS),
            NodeProperties::Http(p) => push(String::new(), &p.unknown, HttpProps::FIELDS),
            NodeProperties::Condition(p) => {
                push(String::new(), &p.unknown, ConditionProps::FIELDS);
                for (i, c) in p.conditions.iter().enumerate() {
                    push(
                        format!("conditions/{i}/"),
                        &c.unknown,
                        NamedCondition::FIELDS,
                    );
                }
            }
            NodeProperties::SetProperties(p) => {
                push(String::new(), &p.unknown, SetPropertiesProps::FIELDS);
                for (i, a) in p.properties.iter().enumerate() {
                    push(format!("properties/{i}/"), &a.unknown, Assignment::FIELDS);
                }
            }
            NodeProperties::Log(p) => push(String::new(), &p.unknown, LogProps::FIELDS),
            NodeProperties::Action(p) => push(String::new(), &p.unknown, ActionProps::FIELDS),
            NodeProperties::Say(p) => push(String::new(), &p.unknown, SayProps::FIELDS),
            NodeProperties::Collect(p) => push(String::new(), &p.unknown, CollectProps::FIELDS),
            NodeProperties::Menu(p) => push(String::new(), &p.unknown, MenuProps::FIELDS),
            NodeProperties::Transfer(p) => push(String::new(), &p.unknown, TransferProps::FIELDS),
            NodeProperties::Hangup(p) => push(String::new(), &p.unknown, HangupProps::FIELDS),
            NodeProperties::SecureEnter(p) | NodeProperties::SecureExit(p) => {
                push(String::new(), &p.unknown, &[])
            }
            NodeProperties::Wait(p) => push(String::new(), &p.unknown, WaitProps::FIELDS),
        }
        out
    }
}

fn serde_path_to_error_lite<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T, PropertiesError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            String::new()
        } else {
            path.replace('.', "/")
        };
        PropertiesError::Invalid {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StartProps {
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl EndProps {
    pub const FIELDS: &'static [&'static str] = &["statusCode"];
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpProps {
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    /// Header values are templates; any JSON value is accepted and stringified.
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// Output paths (such as `body.token`) whose values are secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_output: Vec<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl HttpProps {
    pub const FIELDS: &'static [&'static str] = &[
        "method",
        "url",
        "headers",
        "body",
        "timeout",
        "followRedirects",
        "secureOutput",
    ];
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConditionProps {
    #[serde(default)]
    pub conditions: Vec<NamedCondition>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl ConditionProps {
    pub const FIELDS: &'static [&'static str] = &["conditions"];
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedCondition {
    pub name: String,
    /// CEL, with `{{path}}` placeholders bound to flow variables.
    pub expression: String,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl NamedCondition {
    pub const FIELDS: &'static [&'static str] = &["name", "expression"];
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SetPropertiesProps {
    #[serde(default)]
    pub properties: Vec<Assignment>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl SetPropertiesProps {
    pub const FIELDS: &'static [&'static str] = &["properties"];
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Assignment {
    /// A dotted name such as `session.authToken`.
    pub name: String,
    /// A JSON value; strings are templates.
    pub value: Value,
    #[serde(default)]
    pub secure: bool,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl Assignment {
    pub const FIELDS: &'static [&'static str] = &["name", "value", "secure"];
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    pub message: String,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl LogProps {
    pub const FIELDS: &'static [&'static str] = &["logLevel", "message"];
}

/// A built-in action (`identity.verify`, ...): the host performs it; its outputs are visible
/// as `<node>.<output>`. Which backend serves an action is configuration, not flow content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionProps {
    /// The action's registered name.
    pub action: String,
    /// Input name → JSON value; strings are templates.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl ActionProps {
    pub const FIELDS: &'static [&'static str] = &["action", "inputs"];
}

/// `say`: speak text (a template; it may not use a secure value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SayProps {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl SayProps {
    pub const FIELDS: &'static [&'static str] = &["text", "language", "voice"];
}

/// `collect`: ask for digits into `variable`. Its unconditional edge is taken on a valid
/// entry; the edge with condition `failed` when the attempts run out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollectProps {
    pub prompt: String,
    /// The flow variable the digits go into (a dotted name, like a property).
    pub variable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_digits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_digits: Option<u32>,
    /// Default `#`; an empty string for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_on_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_input_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_match_prompt: Option<String>,
    /// PINs and codes: the digits are a secret.
    #[serde(default)]
    pub secure: bool,
    /// A regular expression the whole entry must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl CollectProps {
    pub const FIELDS: &'static [&'static str] = &[
        "prompt",
        "variable",
        "minDigits",
        "maxDigits",
        "finishOnKey",
        "timeoutSeconds",
        "attempts",
        "noInputPrompt",
        "noMatchPrompt",
        "secure",
        "pattern",
        "language",
        "voice",
    ];
}

/// `menu`: one key picks an edge; each edge's `condition` is a choice's key, and the edge
/// with condition `failed` is taken when the attempts run out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MenuProps {
    pub prompt: String,
    /// The keys that are choices (`"1"`, `"9"`, `"*"`).
    pub choices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_choice_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_input_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl MenuProps {
    pub const FIELDS: &'static [&'static str] = &[
        "prompt",
        "choices",
        "attempts",
        "timeoutSeconds",
        "invalidChoicePrompt",
        "noInputPrompt",
        "language",
        "voice",
    ];
}

/// `transfer`: hand the call to a queue or a number; the call leaves the flow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransferProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A phone number (E.164) or a `sip:` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why, for the agent ("Account Recovery").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl TransferProps {
    pub const FIELDS: &'static [&'static str] = &["queue", "target", "reason"];
}

/// `hangup`: end the call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HangupProps {
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl HangupProps {
    pub const FIELDS: &'static [&'static str] = &[];
}

/// `wait`: a comfort pause of `seconds`, with hold audio if given, then continue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaitProps {
    pub seconds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_audio: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
impl WaitProps {
    pub const FIELDS: &'static [&'static str] = &["seconds", "holdAudio"];
}

/// Top-level fields a document may carry.
pub const DOCUMENT_FIELDS: &[&str] = &[
    "formatVersion",
    "name",
    "description",
    "type",
    "inputSchema",
    "nodes",
    "edges",
    "startNode",
    "endNodes",
    "metadata",
];
pub const NODE_FIELDS: &[&str] = &["id", "type", "properties"];
pub const EDGE_FIELDS: &[&str] = &["source", "target", "condition"];

impl Serialize for Nodes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        if self.as_array {
            let mut seq = s.serialize_seq(Some(self.entries.len()))?;
            for e in &self.entries {
                seq.serialize_element(&e.node)?;
            }
            seq.end()
        } else {
            let mut map = s.serialize_map(Some(self.entries.len()))?;
            for e in &self.entries {
                map.serialize_entry(&e.key, &e.node)?;
            }
            map.end()
        }
    }
}

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Nodes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of nodes keyed by name, or an array of nodes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Nodes, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, node)) = m.next_entry::<String, RawNode>()? {
                    entries.push(NodeEntry { key, node });
                }
                Ok(Nodes {
                    entries,
                    as_array: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Nodes, A::Error> {
                let mut entries = Vec::new();
                while let Some(node) = s.next_element::<RawNode>()? {
                    let key = node
                        .id
                        .clone()
                        .unwrap_or_else(|| format!("#{}", entries.len()));
                    entries.push(NodeEntry { key, node });
                }
                Ok(Nodes {
                    entries,
                    as_array: true,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a document from JSON text. Shape errors (a string where an array belongs) are
/// reported with the JSON path at which they occurred.
pub fn parse_document(text: &str) -> Result<FlowDocument, DocumentParseError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        DocumentParseError {
            path: if path == "." { String::new() } else { path },
            line: inner.line(),
            column: inner.column(),
            syntax: inner.is_syntax() || inner.is_eof(),
            message: inner.to_string(),
        }
    })
}

/// Parse a document from an already-parsed JSON value.
pub fn document_from_value(value: &Value) -> Result<FlowDocument, DocumentParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        DocumentParseError {
            path: if path == "." { String::new() } else { path },
            line: 0,
            column: 0,
            syntax: false,
            message: e.into_inner().to_string(),
        }
    })
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DocumentParseError {
    /// Dotted path of the field that had the wrong shape ("" at the top).
    pub path: String,
    pub line: usize,
    pub column: usize,
    /// True for malformed JSON (as opposed to well-formed JSON of the wrong shape).
    pub syntax: bool,
    pub message: String,
}
