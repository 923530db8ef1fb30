//! The flow compiler: turns a [`FlowDocument`] into a validated, indexed [`Flow`] that the
//! engine runs, or reports every problem in one pass.
//!
//! Each problem carries a JSON pointer into the document, the node it concerns, a stable code
//! and a message quoting the offending (non-secret) name. The static taint analysis here is
//! what keeps secrets out of logs and off plain-http URLs before a flow is ever deployed; the
//! engine applies the same rules again at run time to mask traces.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use serde_json::Value;

use ivrauth_proto::api::Diagnostic;
use ivrauth_proto::flow::{
    Assignment, FlowDocument, NodeProperties, PropertiesError, Unknown, CURRENT_FORMAT_VERSION,
    DOCUMENT_FIELDS, EDGE_FIELDS, NODE_FIELDS, NODE_TYPES,
};

use crate::actions::{ActionSpec, InputSpec};
use crate::expr::{Condition, ConditionError, Template, UrlSlot, VarPath};
use crate::http::{secure_transport, DEFAULT_TIMEOUT_MS};
use crate::inputs::InputSchema;

/// Outputs every http node exposes as `<node>.<field>`.
pub const HTTP_OUTPUT_FIELDS: &[&str] = &["statusCode", "body", "headers", "error"];
/// Run variables the host defines under `flow.`.
pub const FLOW_VARS: &[&str] = &["traceId", "id"];
/// Largest number of nodes a document may have.
pub const MAX_NODES: usize = 10_000;
/// At most this many errors are reported; a document with more is mostly noise, and the cap
/// bounds the work a hostile document can cause.
pub const MAX_ERRORS: usize = 500;
/// "Did you mean" hints are computed only against candidate lists up to this size.
const MAX_HINT_CANDIDATES: usize = 2_000;
const MAX_TIMEOUT_MS: u64 = 120_000;
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The result of validating a document.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
    fn error(
        &mut self,
        path: impl Into<String>,
        node: Option<&str>,
        code: &str,
        message: impl Into<String>,
    ) {
        match self.errors.len() {
            n if n < MAX_ERRORS => self.errors.push(diag(path, node, code, message)),
            n if n == MAX_ERRORS => self.errors.push(diag(
                "",
                None,
                "too_many_problems",
                format!("more than {MAX_ERRORS} problems; fix these and validate again"),
            )),
            _ => {}
        }
    }

    fn full(&self) -> bool {
        self.errors.len() > MAX_ERRORS
    }
    fn warn(
        &mut self,
        path: impl Into<String>,
        node: Option<&str>,
        code: &str,
        message: impl Into<String>,
    ) {
        self.warnings.push(diag(path, node, code, message));
    }
}

fn diag(
    path: impl Into<String>,
    node: Option<&str>,
    code: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        path: path.into(),
        node_id: node.map(str::to_owned),
        code: code.to_owned(),
        message: message.into(),
    }
}

/// A validated flow, ready to run. Construct with [`compile`].
#[derive(Debug)]
pub struct Flow {
    pub name: String,
    pub(crate) nodes: Vec<Node>,
    pub(crate) start: usize,
    pub(crate) inputs: InputSchema,
    /// Node key or id → node index.
    pub(crate) names: HashMap<String, usize>,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub key: String,
    pub id: String,
    pub type_name: &'static str,
    pub kind: Kind,
    pub next: Next,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Start,
    End {
        status_code: Option<u16>,
    },
    Http(HttpNode),
    Condition(Vec<(String, Condition)>),
    SetProperties(Vec<Assign>),
    Log {
        level: String,
        message: Template,
    },
    Action(ActionNode),
    Say(SayNode),
    Collect(CollectNode),
    Menu(MenuNode),
    Transfer {
        queue: Option<String>,
        target: Option<String>,
        reason: Option<String>,
    },
    Hangup,
    SecureEnter,
    SecureExit,
    Wait {
        seconds: u32,
        hold_audio: Option<String>,
    },
}

#[derive(Debug)]
pub(crate) struct SayNode {
    pub text: Template,
    pub language: Option<String>,
    pub voice: Option<String>,
}

#[derive(Debug)]
pub(crate) struct CollectNode {
    pub prompt: SayNode,
    pub variable: VarPath,
    pub min_digits: u32,
    pub max_digits: u32,
    pub finish_on_key: String,
    pub timeout_seconds: u32,
    pub attempts: u32,
    pub no_input: Option<Template>,
    pub no_match: Option<Template>,
    /// Declared `secure`, or inside a secure segment on some path.
    pub secure: bool,
    pub pattern: Option<regex::Regex>,
}

#[derive(Debug)]
pub(crate) struct MenuNode {
    pub prompt: SayNode,
    pub choices: Vec<String>,
    pub timeout_seconds: u32,
    pub attempts: u32,
    pub invalid: Option<Template>,
    pub no_input: Option<Template>,
}

/// Defaults and bounds of the IVR nodes.
pub const DEFAULT_ATTEMPTS: u32 = 3;
pub const MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_INPUT_TIMEOUT_S: u32 = 5;
pub const MAX_INPUT_TIMEOUT_S: u32 = 60;
pub const MAX_DIGITS: u32 = 64;
pub const MAX_WAIT_S: u32 = 600;
/// The edge condition a collect or menu node takes when its attempts run out.
pub const FAILED_EDGE: &str = "failed";
/// Keys a phone keypad sends.
const KEYS: &str = "0123456789*#";

#[derive(Debug)]
pub(crate) struct ActionNode {
    pub spec: &'static ActionSpec,
    /// Inputs in the spec's order; absent optional inputs are left out.
    pub inputs: Vec<(&'static InputSpec, ValueTemplate)>,
}

#[derive(Debug)]
pub(crate) struct HttpNode {
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, ValueTemplate)>,
    pub body: Option<ValueTemplate>,
    pub timeout_ms: u64,
    /// Output paths (relative to the node's output) that hold secrets.
    pub secure_output: Vec<Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct Assign {
    pub name: VarPath,
    pub value: ValueTemplate,
    pub secure: bool,
}

/// A JSON value whose strings are templates.
#[derive(Debug)]
pub(crate) enum ValueTemplate {
    Literal(Value),
    Str(Template),
    Array(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
}

impl ValueTemplate {
    fn parse(v: &Value) -> Result<ValueTemplate, crate::expr::TemplateError> {
        Ok(match v {
            Value::String(s) => {
                let t = Template::parse(s)?;
                if t.refs().next().is_none() {
                    ValueTemplate::Literal(v.clone())
                } else {
                    ValueTemplate::Str(t)
                }
            }
            Value::Array(a) => ValueTemplate::Array(
                a.iter()
                    .map(ValueTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => ValueTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), ValueTemplate::parse(v)?)))
                    .collect::<Result<_, _>>()?,
            ),
            other => ValueTemplate::Literal(other.clone()),
        })
    }

    pub(crate) fn refs(&self, out: &mut Vec<VarPath>) {
        match self {
            ValueTemplate::Literal(_) => {}
            ValueTemplate::Str(t) => out.extend(t.refs().cloned()),
            ValueTemplate::Array(a) => a.iter().for_each(|v| v.refs(out)),
            ValueTemplate::Object(o) => o.iter().for_each(|(_, v)| v.refs(out)),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Next {
    End,
    One(usize),
    /// Condition edges in document order; `None` guard is the fallback edge.
    Branch(Vec<(Option<Guard>, usize)>),
    /// A collect or menu node: `default` on a valid entry (collect), `keys` per menu
    /// choice, `failed` when the attempts run out.
    Input {
        default: Option<usize>,
        keys: Vec<(String, usize)>,
        failed: Option<usize>,
    },
}

impl Next {
    pub(crate) fn targets(&self) -> Vec<usize> {
        match self {
            Next::End => Vec::new(),
            Next::One(d) => vec![*d],
            Next::Branch(b) => b.iter().map(|(_, d)| *d).collect(),
            Next::Input {
                default,
                keys,
                failed,
            } => default
                .iter()
                .copied()
                .chain(keys.iter().map(|(_, d)| *d))
                .chain(failed.iter().copied())
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub condition: usize,
    pub negated: bool,
}

impl Flow {
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether any `action` node calls an action that reaches an account
    /// ([`ActionSpec::reaches_account`]): a simulation of such a flow needs the scope
    /// `identity:simulate`.
    pub fn reaches_accounts(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(&n.kind, Kind::Action(a) if a.spec.reaches_account))
    }
}

/// Validate a document, returning the compiled flow and its warnings, or every problem.
pub fn compile(doc: &FlowDocument) -> Result<(Flow, Vec<Diagnostic>), Report> {
    let mut report = Report::default();
    let flow = Compiler::new(doc, &mut report).run();
    match flow {
        Some(flow) if report.is_valid() => Ok((flow, report.warnings)),
        _ => Err(report),
    }
}

/// Validate without keeping the compiled flow.
pub fn validate(doc: &FlowDocument) -> Report {
    match compile(doc) {
        Ok((_, warnings)) => Report {
            errors: Vec::new(),
            warnings,
        },
        Err(report) => report,
    }
}

/// The closest candidate to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn hint(word: &str, candidates: &[&str]) -> String {
    if candidates.len() > MAX_HINT_CANDIDATES {
        return String::new();
    }
    match did_you_mean(word, candidates.iter().copied()) {
        Some(c) => format!(", did you mean `{c}`?"),
        None => String::new(),
    }
}

/// Escape a key for a JSON pointer (RFC 6901).
fn ptr(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

struct Compiler<'d, 'r> {
    doc: &'d FlowDocument,
    report: &'r mut Report,
    /// key or id → node index
    names: HashMap<&'d str, usize>,
    node_paths: Vec<String>,
}

/// A node's output fields (`None` when it has no outputs) and its secure output paths.
type NodeOutputs = (Option<&'static [&'static str]>, Vec<Vec<String>>);

/// What the static analysis knows about variables.
struct Scope {
    inputs: BTreeSet<String>,
    secure_inputs: BTreeSet<String>,
    /// node key/id → (has outputs, secure output paths)
    /// node key/id → its outputs
    nodes: HashMap<String, NodeOutputs>,
    /// property name segments → secure
    properties: BTreeMap<Vec<String>, bool>,
    /// Every defined name, for "did you mean" hints (empty when too many to search).
    candidates: Vec<String>,
}

impl Scope {
    fn overlaps(a: &[String], b: &[String]) -> bool {
        a.iter().zip(b.iter()).all(|(x, y)| x == y)
    }

    /// Property names that overlap `segs`: a prefix of it, or extending it. Ordered maps
    /// keep names that extend `segs` together, so this is a few lookups, not a scan.
    fn overlapping<'a>(
        props: &'a BTreeMap<Vec<String>, bool>,
        segs: &'a [String],
    ) -> impl Iterator<Item = (&'a Vec<String>, bool)> {
        let prefixes = (1..segs.len()).filter_map(move |i| props.get_key_value(&segs[..i]));
        let extending = props
            .range::<[String], _>((Bound::Included(segs), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(segs));
        prefixes.chain(extending).map(|(k, v)| (k, *v))
    }

    /// Secure through an input or an http node's `secureOutput` (not through properties).
    fn is_secure_source(&self, p: &VarPath) -> bool {
        if self.secure_inputs.contains(p.root()) {
            return true;
        }
        match self.nodes.get(p.root()) {
            Some((_, secure)) => secure.iter().any(|s| Self::overlaps(s, p.rest())),
            None => false,
        }
    }

    fn is_secure(&self, p: &VarPath) -> bool {
        self.is_secure_source(p)
            || Self::overlapping(&self.properties, &p.segments).any(|(_, secure)| secure)
    }

    /// None when the path is defined; otherwise a message.
    fn unknown(&self, p: &VarPath) -> Option<String> {
        let root = p.root();
        if self.inputs.contains(root) {
            return None;
        }
        if root == "contact" {
            return None;
        }
        if root == "flow" {
            return match p.rest().first() {
                Some(f) if FLOW_VARS.contains(&f.as_str()) && p.rest().len() == 1 => None,
                Some(f) => Some(format!("unknown variable `flow.{f}`{}", hint(f, FLOW_VARS))),
                None => None,
            };
        }
        if let Some((outputs, _)) = self.nodes.get(root) {
            let Some(outputs) = outputs else {
                return Some(format!(
                    "node `{root}` has no outputs to reference in `{p}`"
                ));
            };
            return match p.rest().first() {
                None => None,
                Some(f) if outputs.contains(&f.as_str()) => None,
                Some(f) => Some(format!(
                    "node `{root}` has no output `{f}` (it has {}){}",
                    outputs.join(", "),
                    hint(f, outputs)
                )),
            };
        }
        if Self::overlapping(&self.properties, &p.segments)
            .next()
            .is_some()
        {
            return None;
        }
        let candidates = &self.candidates;
        let whole = p.to_string();
        let best = did_you_mean(&whole, candidates.iter().map(String::as_str))
            .or_else(|| did_you_mean(root, candidates.iter().map(String::as_str)));
        Some(match best {
            Some(c) => format!("unknown variable `{whole}`, did you mean `{c}`?"),
            None => format!(
                "unknown variable `{whole}`: no input, node, property or host variable defines `{root}`"
            ),
        })
    }
}

impl<'d, 'r> Compiler<'d, 'r> {
    fn new(doc: &'d FlowDocument, report: &'r mut Report) -> Self {
        Compiler {
            doc,
            report,
            names: HashMap::new(),
            node_paths: Vec::new(),
        }
    }

    fn unknown_fields(
        &mut self,
        base: &str,
        node: Option<&str>,
        unknown: &Unknown,
        known: &[&str],
    ) {
        for k in unknown.keys() {
            self.report.error(
                format!("{base}/{}", ptr(k)),
                node,
                "unknown_field",
                format!("unknown field `{k}`{}", hint(k, known)),
            );
        }
    }

    fn run(mut self) -> Option<Flow> {
        let doc = self.doc;
        self.unknown_fields("", None, &doc.unknown, DOCUMENT_FIELDS);
        if let Some(v) = doc.format_version {
            if v == 0 || v > CURRENT_FORMAT_VERSION {
                self.report.error(
                    "/formatVersion",
                    None,
                    "unsupported_format_version",
                    format!("format version {v} is not supported; this server reads version {CURRENT_FORMAT_VERSION}"),
                );
            }
        }
        let name = match doc.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                self.report.error(
                    "/name",
                    None,
                    "missing_field",
                    "the flow needs a non-empty `name`",
                );
                String::new()
            }
        };
        if doc.nodes.entries.len() > MAX_NODES {
            self.report.error(
                "/nodes",
                None,
                "too_many_nodes",
                format!(
                    "the flow has {} nodes; at most {MAX_NODES} are allowed",
                    doc.nodes.entries.len()
                ),
            );
            return None;
        }
        if doc.nodes.entries.is_empty() {
            self.report
                .error("/nodes", None, "missing_field", "the flow has no nodes");
        }

        // Inputs.
        let inputs = match InputSchema::compile(doc.input_schema.as_ref()) {
            Ok(s) => s,
            Err(msg) => {
                self.report
                    .error("/inputSchema", None, "invalid_input_schema", msg);
                InputSchema::empty()
            }
        };

        // Names.
        for (i, e) in doc.nodes.entries.iter().enumerate() {
            let path = if doc.nodes.as_array {
                format!("/nodes/{i}")
            } else {
                format!("/nodes/{}", ptr(&e.key))
            };
            self.node_paths.push(path);
        }
        for (i, e) in doc.nodes.entries.iter().enumerate() {
            let id = e.node.id_or(&e.key);
            let path = self.node_paths[i].clone();
            let mut names = vec![e.key.as_str()];
            if id != e.key {
                names.push(id);
                self.report.warn(
                    format!("{path}/id"),
                    Some(id),
                    "node_key_differs_from_id",
                    format!(
                        "node key `{}` differs from its id `{id}`; both refer to it",
                        e.key
                    ),
                );
            }
            for n in names {
                if let Some(&other) = self.names.get(n) {
                    if other != i {
                        self.report.error(
                            format!("{path}/id"),
                            Some(id),
                            "duplicate_node_id",
                            format!("`{n}` names more than one node"),
                        );
                        continue;
                    }
                }
                self.names.insert(n, i);
            }
            self.unknown_fields(&path, Some(id), &e.node.unknown, NODE_FIELDS);
        }

        // Node properties.
        let mut parsed: Vec<Option<NodeProperties>> = Vec::with_capacity(doc.nodes.entries.len());
        for (i, e) in doc.nodes.entries.iter().enumerate() {
            let id = e.node.id_or(&e.key);
            let path = self.node_paths[i].clone();
            match NodeProperties::parse(&e.node.node_type, &e.node.properties) {
                Ok(p) => {
                    for (field, known) in p.unknown_fields() {
                        let leaf = field.rsplit('/').next().unwrap_or(&field).to_owned();
                        self.report.error(
                            format!("{path}/properties/{field}"),
                            Some(id),
                            "unknown_field",
                            format!(
                                "unknown property `{leaf}` for a `{}` node{}",
                                e.node.node_type,
                                hint(&leaf, &known)
                            ),
                        );
                    }
                    parsed.push(Some(p));
                }
                Err(PropertiesError::UnknownType) => {
                    self.report.error(
                        format!("{path}/type"),
                        Some(id),
                        "unknown_node_type",
                        format!(
                            "unknown node type `{}`{}",
                            e.node.node_type,
                            hint(&e.node.node_type, NODE_TYPES)
                        ),
                    );
                    parsed.push(None);
                }
                Err(PropertiesError::Invalid { path: p, message }) => {
                    let at = if p.is_empty() {
                        String::new()
                    } else {
                        format!("/{p}")
                    };
                    self.report.error(
                        format!("{path}/properties{at}"),
                        Some(id),
                        "invalid_properties",
                        format!(
                            "invalid properties for `{}` node `{id}`: {message}",
                            e.node.node_type
                        ),
                    );
                    parsed.push(None);
                }
            }
        }

        // Static scope: inputs, node outputs, properties (taint to a fixpoint).
        let mut scope = Scope {
            inputs: inputs.names().map(str::to_owned).collect(),
            secure_inputs: inputs.secure_names().map(str::to_owned).collect(),
            nodes: HashMap::new(),
            properties: BTreeMap::new(),
            candidates: Vec::new(),
        };
        for (i, e) in doc.nodes.entries.iter().enumerate() {
            let (has_outputs, secure) = match &parsed[i] {
                Some(NodeProperties::Http(h)) => (
                    Some(HTTP_OUTPUT_FIELDS),
                    h.secure_output
                        .iter()
                        .map(|s| secure_output_path(s))
                        .collect(),
                ),
                Some(NodeProperties::Action(a)) => (
                    crate::actions::find(&a.action).map(|s| s.outputs),
                    Vec::new(),
                ),
                _ => (None, Vec::new()),
            };
            scope
                .nodes
                .insert(e.key.clone(), (has_outputs, secure.clone()));
            scope
                .nodes
                .insert(e.node.id_or(&e.key).to_owned(), (has_outputs, secure));
        }

        // Compile node bodies.
        let mut kinds: Vec<Option<Kind>> = Vec::with_capacity(parsed.len());
        let mut assigns_for_taint: Vec<(VarPath, bool, Vec<VarPath>)> = Vec::new();
        for (i, p) in parsed.iter().enumerate() {
            let e = &doc.nodes.entries[i];
            let id = e.node.id_or(&e.key).to_owned();
            let path = self.node_paths[i].clone();
            let kind = p
                .as_ref()
                .and_then(|p| self.compile_kind(p, &path, &id, &scope));
            if let Some(Kind::SetProperties(assigns)) = &kind {
                for a in assigns {
                    let mut refs = Vec::new();
                    a.value.refs(&mut refs);
                    assigns_for_taint.push((a.name.clone(), a.secure, refs));
                }
            }
            kinds.push(kind);
        }
        // Every collect inside a secure segment (on any path) is secure.
        let in_segment = self.secure_segments(&kinds);
        for (i, kind) in kinds.iter_mut().enumerate() {
            if let Some(Kind::Collect(c)) = kind {
                c.secure |= in_segment[i];
                assigns_for_taint.push((c.variable.clone(), c.secure, Vec::new()));
            }
        }
        for (name, _, _) in &assigns_for_taint {
            scope
                .properties
                .entry(name.segments.clone())
                .or_insert(false);
        }
        // Taint propagation as a worklist: when a property becomes secure, every assignment
        // that reads it makes its own target secure. Linear in the flow's size.
        let mut dependents: HashMap<&[String], Vec<usize>> = HashMap::new();
        let mut queue: Vec<Vec<String>> = Vec::new();
        for (ai, (name, secure, refs)) in assigns_for_taint.iter().enumerate() {
            for r in refs {
                for (k, _) in Scope::overlapping(&scope.properties, &r.segments) {
                    dependents.entry(k.as_slice()).or_default().push(ai);
                }
            }
            if *secure || refs.iter().any(|r| scope.is_secure_source(r)) {
                queue.push(name.segments.clone());
            }
        }
        let mut secure_props: BTreeSet<Vec<String>> = BTreeSet::new();
        while let Some(name) = queue.pop() {
            if !secure_props.insert(name.clone()) {
                continue;
            }
            // A secure name also taints the names it overlaps (`session` and `session.token`).
            for (k, _) in Scope::overlapping(&scope.properties, &name) {
                for &ai in dependents.get(k.as_slice()).into_iter().flatten() {
                    queue.push(assigns_for_taint[ai].0.segments.clone());
                }
            }
        }
        for name in secure_props {
            scope.properties.insert(name, true);
        }
        self.check_property_names(&parsed, &scope);
        let count = scope.inputs.len() + scope.nodes.len() + scope.properties.len();
        if count <= MAX_HINT_CANDIDATES {
            let mut candidates: Vec<String> = scope.inputs.iter().cloned().collect();
            candidates.extend(scope.nodes.keys().cloned());
            candidates.extend(scope.properties.keys().map(|k| k.join(".")));
            candidates.extend([
                "flow.traceId".to_owned(),
                "flow.id".to_owned(),
                "contact".to_owned(),
            ]);
            scope.candidates = candidates;
        }

        // Variables and taint rules, now that every name is known.
        for (i, kind) in kinds.iter().enumerate() {
            if self.report.full() {
                return None;
            }
            if let Some(kind) = kind {
                self.check_vars(i, kind, &parsed[i], &scope);
            }
        }

        // Graph.
        let (next, edges_ok) = self.edges(&kinds);
        let start = self.start_node();
        if let Some(start) = start {
            self.reachability(start, &next, &kinds, edges_ok);
        }

        if !self.report.is_valid() {
            return None;
        }
        let start = start?;
        let mut nodes = Vec::with_capacity(kinds.len());
        for ((e, kind), next) in doc.nodes.entries.iter().zip(kinds).zip(next) {
            let kind = kind?;
            nodes.push(Node {
                key: e.key.clone(),
                id: e.node.id_or(&e.key).to_owned(),
                type_name: type_name(&kind),
                kind,
                next,
            });
        }
        let names = self
            .names
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        Some(Flow {
            name,
            nodes,
            start,
            inputs,
            names,
        })
    }

    fn compile_kind(
        &mut self,
        p: &NodeProperties,
        path: &str,
        id: &str,
        _scope: &Scope,
    ) -> Option<Kind> {
        let template = |report: &mut Report, at: String, text: &str| match Template::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                report.error(at, Some(id), "invalid_template", e.to_string());
                None
            }
        };
        match p {
            NodeProperties::Start(_) => Some(Kind::Start),
            NodeProperties::End(e) => Some(Kind::End {
                status_code: e.status_code,
            }),
            NodeProperties::Log(l) => {
                let message = template(
                    self.report,
                    format!("{path}/properties/message"),
                    &l.message,
                )?;
                Some(Kind::Log {
                    level: l.log_level.clone().unwrap_or_else(|| "INFO".to_owned()),
                    message,
                })
            }
            NodeProperties::Http(h) => {
                let method = h.method.to_ascii_uppercase();
                if !METHODS.contains(&method.as_str()) {
                    self.report.error(
                        format!("{path}/properties/method"),
                        Some(id),
                        "invalid_method",
                        format!(
                            "unsupported HTTP method `{}`{}",
                            h.method,
                            hint(&method, METHODS)
                        ),
                    );
                }
                let url = template(self.report, format!("{path}/properties/url"), &h.url);
                for (p, slot) in url.iter().flat_map(Template::url_slots) {
                    if slot == UrlSlot::Authority {
                        self.report.error(
                            format!("{path}/properties/url"),
                            Some(id),
                            "url_placeholder_position",
                            format!("placeholder `{{{{{p}}}}}` is in the url's scheme, host or port; write those literally (a flow names the hosts it calls) and put values in the path or the query, where they are percent-encoded"),
                        );
                    }
                }
                let mut headers = Vec::new();
                for (k, v) in &h.headers {
                    match ValueTemplate::parse(v) {
                        Ok(t) => headers.push((k.clone(), t)),
                        Err(e) => self.report.error(
                            format!("{path}/properties/headers/{}", ptr(k)),
                            Some(id),
                            "invalid_template",
                            e.to_string(),
                        ),
                    }
                }
                let body = match h.body.as_ref().map(ValueTemplate::parse) {
                    None => None,
                    Some(Ok(b)) => Some(b),
                    Some(Err(e)) => {
                        self.report.error(
                            format!("{path}/properties/body"),
                            Some(id),
                            "invalid_template",
                            e.to_string(),
                        );
                        None
                    }
                };
                match h.timeout {
                    None => self.report.warn(
                        format!("{path}/properties"),
                        Some(id),
                        "http_without_timeout",
                        format!("http node `{id}` has no `timeout`; the default of {DEFAULT_TIMEOUT_MS} ms applies"),
                    ),
                    Some(t) if t == 0 || t > MAX_TIMEOUT_MS => self.report.error(
                        format!("{path}/properties/timeout"),
                        Some(id),
                        "invalid_timeout",
                        format!("`timeout` is in milliseconds and must be between 1 and {MAX_TIMEOUT_MS}; got {t}"),
                    ),
                    Some(_) => {}
                }
                for (i, s) in h.secure_output.iter().enumerate() {
                    let first = s.split('.').next().unwrap_or_default();
                    if VarPath::parse(s).is_none() || !HTTP_OUTPUT_FIELDS.contains(&first) {
                        self.report.error(
                            format!("{path}/properties/secureOutput/{i}"),
                            Some(id),
                            "invalid_secure_output",
                            format!(
                                "`{s}` is not an output path (it must start with one of {})",
                                HTTP_OUTPUT_FIELDS.join(", ")
                            ),
                        );
                    }
                }
                Some(Kind::Http(HttpNode {
                    method,
                    url: url?,
                    headers,
                    body,
                    timeout_ms: h.timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
                    secure_output: h
                        .secure_output
                        .iter()
                        .map(|s| secure_output_path(s))
                        .collect(),
                }))
            }
            NodeProperties::Condition(c) => {
                let mut out = Vec::new();
                let mut seen = BTreeSet::new();
                if c.conditions.is_empty() {
                    self.report.error(
                        format!("{path}/properties/conditions"),
                        Some(id),
                        "missing_field",
                        format!("condition node `{id}` has no conditions"),
                    );
                }
                for (i, nc) in c.conditions.iter().enumerate() {
                    if !seen.insert(nc.name.as_str()) {
                        self.report.error(
                            format!("{path}/properties/conditions/{i}/name"),
                            Some(id),
                            "duplicate_condition",
                            format!("condition `{}` is defined twice", nc.name),
                        );
                    }
                    match Condition::parse(&nc.expression) {
                        Ok(cond) => out.push((nc.name.clone(), cond)),
                        Err(ConditionError::Syntax(m)) => self.report.error(
                            format!("{path}/properties/conditions/{i}/expression"),
                            Some(id),
                            "cel_syntax",
                            format!("condition `{}`: {m}", nc.name),
                        ),
                        Err(ConditionError::Template(e)) => self.report.error(
                            format!("{path}/properties/conditions/{i}/expression"),
                            Some(id),
                            "invalid_template",
                            format!("condition `{}`: {e}", nc.name),
                        ),
                        Err(ConditionError::TooComplex(m)) => self.report.error(
                            format!("{path}/properties/conditions/{i}/expression"),
                            Some(id),
                            "condition_too_complex",
                            format!("condition `{}`: {m}", nc.name),
                        ),
                    }
                }
                Some(Kind::Condition(out))
            }
            NodeProperties::SetProperties(s) => {
                let mut out = Vec::new();
                for (i, a) in s.properties.iter().enumerate() {
                    if let Some(assign) =
                        self.assignment(a, &format!("{path}/properties/properties/{i}"), id)
                    {
                        out.push(assign);
                    }
                }
                Some(Kind::SetProperties(out))
            }
            NodeProperties::Action(a) => self.action(a, path, id),
            NodeProperties::Say(p) => Some(Kind::Say(SayNode {
                text: template(self.report, format!("{path}/properties/text"), &p.text)?,
                language: p.language.clone(),
                voice: p.voice.clone(),
            })),
            NodeProperties::Collect(c) => self.collect(c, path, id),
            NodeProperties::Menu(m) => self.menu(m, path, id),
            NodeProperties::Transfer(t) => {
                let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
                if blank(&t.queue) && blank(&t.target) {
                    self.report.error(
                        format!("{path}/properties"),
                        Some(id),
                        "missing_field",
                        format!("transfer node `{id}` needs a `queue` or a `target`"),
                    );
                }
                Some(Kind::Transfer {
                    queue: t.queue.clone().filter(|s| !s.trim().is_empty()),
                    target: t.target.clone().filter(|s| !s.trim().is_empty()),
                    reason: t.reason.clone(),
                })
            }
            NodeProperties::Hangup(_) => Some(Kind::Hangup),
            NodeProperties::SecureEnter(_) => Some(Kind::SecureEnter),
            NodeProperties::SecureExit(_) => Some(Kind::SecureExit),
            NodeProperties::Wait(w) => {
                if w.seconds == 0 || w.seconds > MAX_WAIT_S {
                    self.report.error(
                        format!("{path}/properties/seconds"),
                        Some(id),
                        "invalid_seconds",
                        format!(
                            "`seconds` must be between 1 and {MAX_WAIT_S}; got {}",
                            w.seconds
                        ),
                    );
                }
                Some(Kind::Wait {
                    seconds: w.seconds,
                    hold_audio: w.hold_audio.clone(),
                })
            }
        }
    }

    fn optional_template(&mut self, at: String, id: &str, text: Option<&str>) -> Option<Template> {
        match Template::parse(text?) {
            Ok(t) => Some(t),
            Err(e) => {
                self.report
                    .error(at, Some(id), "invalid_template", e.to_string());
                None
            }
        }
    }

    fn bounded(
        &mut self,
        at: String,
        id: &str,
        field: &str,
        v: Option<u32>,
        default: u32,
        max: u32,
    ) -> u32 {
        match v {
            None => default,
            Some(n) if n >= 1 && n <= max => n,
            Some(n) => {
                self.report.error(
                    at,
                    Some(id),
                    "out_of_range",
                    format!("`{field}` must be between 1 and {max}; got {n}"),
                );
                default
            }
        }
    }

    fn say_node(
        &mut self,
        at: String,
        id: &str,
        text: &str,
        language: &Option<String>,
        voice: &Option<String>,
    ) -> Option<SayNode> {
        match Template::parse(text) {
            Ok(t) => Some(SayNode {
                text: t,
                language: language.clone(),
                voice: voice.clone(),
            }),
            Err(e) => {
                self.report
                    .error(at, Some(id), "invalid_template", e.to_string());
                None
            }
        }
    }

    fn collect(
        &mut self,
        c: &ivrauth_proto::flow::CollectProps,
        path: &str,
        id: &str,
    ) -> Option<Kind> {
        let prompt = self.say_node(
            format!("{path}/properties/prompt"),
            id,
            &c.prompt,
            &c.language,
            &c.voice,
        );
        let no_input = self.optional_template(
            format!("{path}/properties/noInputPrompt"),
            id,
            c.no_input_prompt.as_deref(),
        );
        let no_match = self.optional_template(
            format!("{path}/properties/noMatchPrompt"),
            id,
            c.no_match_prompt.as_deref(),
        );
        let min_digits = self.bounded(
            format!("{path}/properties/minDigits"),
            id,
            "minDigits",
            c.min_digits,
            1,
            MAX_DIGITS,
        );
        let max_digits = self.bounded(
            format!("{path}/properties/maxDigits"),
            id,
            "maxDigits",
            c.max_digits,
            MAX_DIGITS.min(min_digits.max(20)),
            MAX_DIGITS,
        );
        if min_digits > max_digits {
            self.report.error(
                format!("{path}/properties/minDigits"),
                Some(id),
                "out_of_range",
                format!("`minDigits` ({min_digits}) is more than `maxDigits` ({max_digits})"),
            );
        }
        let attempts = self.bounded(
            format!("{path}/properties/attempts"),
            id,
            "attempts",
            c.attempts,
            DEFAULT_ATTEMPTS,
            MAX_ATTEMPTS,
        );
        let timeout_seconds = self.bounded(
            format!("{path}/properties/timeoutSeconds"),
            id,
            "timeoutSeconds",
            c.timeout_seconds,
            DEFAULT_INPUT_TIMEOUT_S,
            MAX_INPUT_TIMEOUT_S,
        );
        let finish_on_key = c.finish_on_key.clone().unwrap_or_else(|| "#".to_owned());
        if finish_on_key.chars().count() > 1 || !finish_on_key.chars().all(|k| KEYS.contains(k)) {
            self.report.error(
                format!("{path}/properties/finishOnKey"),
                Some(id),
                "invalid_key",
                format!("`finishOnKey` must be one key of {KEYS}, or empty for none"),
            );
        }
        let pattern = match c.pattern.as_deref() {
            None => None,
            Some(p) => match regex::RegexBuilder::new(&format!("^(?:{p})$"))
                .size_limit(1 << 16)
                .build()
            {
                Ok(r) => Some(r),
                Err(e) => {
                    self.report.error(
                        format!("{path}/properties/pattern"),
                        Some(id),
                        "invalid_pattern",
                        format!("`pattern` is not a valid regular expression: {e}"),
                    );
                    None
                }
            },
        };
        let Some(variable) = VarPath::parse(&c.variable) else {
            self.report.error(
                format!("{path}/properties/variable"),
                Some(id),
                "invalid_property_name",
                format!("`{}` is not a dotted variable name (letters, digits, `_`, `-`, separated by `.`)", c.variable),
            );
            return None;
        };
        Some(Kind::Collect(CollectNode {
            prompt: prompt?,
            variable,
            min_digits,
            max_digits,
            finish_on_key,
            timeout_seconds,
            attempts,
            no_input,
            no_match,
            secure: c.secure,
            pattern,
        }))
    }

    fn menu(&mut self, m: &ivrauth_proto::flow::MenuProps, path: &str, id: &str) -> Option<Kind> {
        let prompt = self.say_node(
            format!("{path}/properties/prompt"),
            id,
            &m.prompt,
            &m.language,
            &m.voice,
        );
        let invalid = self.optional_template(
            format!("{path}/properties/invalidChoicePrompt"),
            id,
            m.invalid_choice_prompt.as_deref(),
        );
        let no_input = self.optional_template(
            format!("{path}/properties/noInputPrompt"),
            id,
            m.no_input_prompt.as_deref(),
        );
        let attempts = self.bounded(
            format!("{path}/properties/attempts"),
            id,
            "attempts",
            m.attempts,
            DEFAULT_ATTEMPTS,
            MAX_ATTEMPTS,
        );
        let timeout_seconds = self.bounded(
            format!("{path}/properties/timeoutSeconds"),
            id,
            "timeoutSeconds",
            m.timeout_seconds,
            DEFAULT_INPUT_TIMEOUT_S,
            MAX_INPUT_TIMEOUT_S,
        );
        if m.choices.is_empty() {
            self.report.error(
                format!("{path}/properties/choices"),
                Some(id),
                "missing_field",
                format!("menu node `{id}` has no choices"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, c) in m.choices.iter().enumerate() {
            if c.chars().count() != 1 || !c.chars().all(|k| KEYS.contains(k)) {
                self.report.error(
                    format!("{path}/properties/choices/{i}"),
                    Some(id),
                    "invalid_key",
                    format!("choice `{c}` is not one key of {KEYS}"),
                );
            } else if !seen.insert(c.as_str()) {
                self.report.error(
                    format!("{path}/properties/choices/{i}"),
                    Some(id),
                    "duplicate_choice",
                    format!("choice `{c}` is listed twice"),
                );
            }
        }
        Some(Kind::Menu(MenuNode {
            prompt: prompt?,
            choices: m.choices.clone(),
            timeout_seconds,
            attempts,
            invalid,
            no_input,
        }))
    }

    fn action(
        &mut self,
        a: &ivrauth_proto::flow::ActionProps,
        path: &str,
        id: &str,
    ) -> Option<Kind> {
        let Some(spec) = crate::actions::find(&a.action) else {
            let names: Vec<&str> = crate::actions::names().collect();
            self.report.error(
                format!("{path}/properties/action"),
                Some(id),
                "unknown_action",
                format!("unknown action `{}`{}", a.action, hint(&a.action, &names)),
            );
            return None;
        };
        let known: Vec<&str> = spec.inputs.iter().map(|i| i.name).collect();
        for name in a.inputs.keys() {
            if !known.contains(&name.as_str()) {
                self.report.error(
                    format!("{path}/properties/inputs/{}", ptr(name)),
                    Some(id),
                    "unknown_field",
                    format!(
                        "action `{}` has no input `{name}`{}",
                        spec.name,
                        hint(name, &known)
                    ),
                );
            }
        }
        let mut inputs = Vec::new();
        for input in spec.inputs {
            match a.inputs.get(input.name) {
                None if input.required => self.report.error(
                    format!("{path}/properties/inputs"),
                    Some(id),
                    "missing_field",
                    format!(
                        "action `{}` needs the input `{}` ({})",
                        spec.name, input.name, input.description
                    ),
                ),
                None => {}
                Some(v) => match ValueTemplate::parse(v) {
                    Ok(t) => inputs.push((input, t)),
                    Err(e) => self.report.error(
                        format!("{path}/properties/inputs/{}", ptr(input.name)),
                        Some(id),
                        "invalid_template",
                        e.to_string(),
                    ),
                },
            }
        }
        Some(Kind::Action(ActionNode { spec, inputs }))
    }

    fn assignment(&mut self, a: &Assignment, at: &str, id: &str) -> Option<Assign> {
        let Some(name) = VarPath::parse(&a.name) else {
            self.report.error(
                format!("{at}/name"),
                Some(id),
                "invalid_property_name",
                format!("`{}` is not a dotted property name (letters, digits, `_`, `-`, separated by `.`)", a.name),
            );
            return None;
        };
        match ValueTemplate::parse(&a.value) {
            Ok(value)
                if a.secure && {
                    let mut refs = Vec::new();
                    value.refs(&mut refs);
                    refs.is_empty()
                } =>
            {
                self.report.error(
                    format!("{at}/value"),
                    Some(id),
                    "secure_literal",
                    format!(
                        "secure property `{}` has a literal value; secrets do not belong in flow documents (they are stored and returned as written): take it from a secure input or a template",
                        a.name
                    ),
                );
                None
            }
            Ok(value) => Some(Assign {
                name,
                value,
                secure: a.secure,
            }),
            Err(e) => {
                self.report.error(
                    format!("{at}/value"),
                    Some(id),
                    "invalid_template",
                    e.to_string(),
                );
                None
            }
        }
    }

    /// Nodes reachable from a `secureEnter` without passing a `secureExit`.
    fn secure_segments(&self, kinds: &[Option<Kind>]) -> Vec<bool> {
        let n = kinds.len();
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        for e in &self.doc.edges {
            if let (Some(s), Some(d)) = (self.lookup(&e.source), self.lookup(&e.target)) {
                succ[s].push(d);
            }
        }
        let mut inside = vec![false; n];
        let mut queue: VecDeque<usize> = (0..n)
            .filter(|&i| matches!(kinds[i], Some(Kind::SecureEnter)))
            .collect();
        while let Some(i) = queue.pop_front() {
            for &d in &succ[i] {
                if !inside[d] && !matches!(kinds[d], Some(Kind::SecureExit)) {
                    inside[d] = true;
                    queue.push_back(d);
                }
            }
        }
        inside
    }

    fn check_property_names(&mut self, parsed: &[Option<NodeProperties>], scope: &Scope) {
        for (i, p) in parsed.iter().enumerate() {
            let names: Vec<(String, &str)> = match p {
                Some(NodeProperties::SetProperties(s)) => s
                    .properties
                    .iter()
                    .enumerate()
                    .map(|(j, a)| (format!("properties/{j}/name"), a.name.as_str()))
                    .collect(),
                Some(NodeProperties::Collect(c)) => {
                    vec![("variable".to_owned(), c.variable.as_str())]
                }
                _ => continue,
            };
            let id = self.doc.nodes.entries[i]
                .node
                .id_or(&self.doc.nodes.entries[i].key)
                .to_owned();
            for (field, a_name) in names {
                let Some(name) = VarPath::parse(a_name) else {
                    continue;
                };
                let at = format!("{}/properties/{field}", self.node_paths[i]);
                let root = name.root();
                if root == "flow" {
                    self.report.error(
                        at,
                        Some(&id),
                        "reserved_name",
                        format!("`{}`: `flow.` variables are set by the host", a_name),
                    );
                } else if scope.inputs.contains(root) {
                    self.report.error(
                        at,
                        Some(&id),
                        "name_conflict",
                        format!("property `{}` would overwrite the input `{root}`", a_name),
                    );
                } else if scope.nodes.contains_key(root) {
                    self.report.error(
                        at,
                        Some(&id),
                        "name_conflict",
                        format!("property `{}` would shadow the node `{root}`", a_name),
                    );
                }
            }
        }
    }

    fn check_vars(&mut self, i: usize, kind: &Kind, props: &Option<NodeProperties>, scope: &Scope) {
        let id = self.doc.nodes.entries[i]
            .node
            .id_or(&self.doc.nodes.entries[i].key)
            .to_owned();
        let path = self.node_paths[i].clone();
        let check = |report: &mut Report, at: String, refs: &[VarPath]| {
            for r in refs {
                if let Some(msg) = scope.unknown(r) {
                    report.error(at.clone(), Some(&id), "unknown_variable", msg);
                }
            }
        };
        let spoken = |report: &mut Report, at: String, t: &Template| {
            let refs: Vec<VarPath> = t.refs().cloned().collect();
            check(report, at.clone(), &refs);
            for r in refs.iter().filter(|r| scope.is_secure(r)) {
                report.error(
                    at.clone(),
                    Some(&id),
                    "secure_value_spoken",
                    format!("the prompt speaks `{r}`, which is or derives from a secure value; secrets are never read out (speech is logged and recorded by the platform)"),
                );
            }
        };
        match kind {
            Kind::Start
            | Kind::End { .. }
            | Kind::Transfer { .. }
            | Kind::Hangup
            | Kind::SecureEnter
            | Kind::SecureExit
            | Kind::Wait { .. } => {}
            Kind::Say(sn) => spoken(self.report, format!("{path}/properties/text"), &sn.text),
            Kind::Collect(c) => {
                spoken(
                    self.report,
                    format!("{path}/properties/prompt"),
                    &c.prompt.text,
                );
                if let Some(t) = &c.no_input {
                    spoken(self.report, format!("{path}/properties/noInputPrompt"), t);
                }
                if let Some(t) = &c.no_match {
                    spoken(self.report, format!("{path}/properties/noMatchPrompt"), t);
                }
            }
            Kind::Menu(m) => {
                spoken(
                    self.report,
                    format!("{path}/properties/prompt"),
                    &m.prompt.text,
                );
                if let Some(t) = &m.invalid {
                    spoken(
                        self.report,
                        format!("{path}/properties/invalidChoicePrompt"),
                        t,
                    );
                }
                if let Some(t) = &m.no_input {
                    spoken(self.report, format!("{path}/properties/noInputPrompt"), t);
                }
            }
            Kind::Log { message, .. } => {
                let refs: Vec<VarPath> = message.refs().cloned().collect();
                check(self.report, format!("{path}/properties/message"), &refs);
                for r in refs.iter().filter(|r| scope.is_secure(r)) {
                    self.report.error(
                        format!("{path}/properties/message"),
                        Some(&id),
                        "secure_value_logged",
                        format!("log message uses `{r}`, which is or derives from a secure value; secrets never reach a log"),
                    );
                }
            }
            Kind::Condition(conds) => {
                for (j, (_, c)) in conds.iter().enumerate() {
                    check(
                        self.report,
                        format!("{path}/properties/conditions/{j}/expression"),
                        &c.var_paths(),
                    );
                }
            }
            Kind::SetProperties(assigns) => {
                for (j, a) in assigns.iter().enumerate() {
                    let mut refs = Vec::new();
                    a.value.refs(&mut refs);
                    check(
                        self.report,
                        format!("{path}/properties/properties/{j}/value"),
                        &refs,
                    );
                }
            }
            Kind::Action(a) => {
                for (input, t) in &a.inputs {
                    let mut refs = Vec::new();
                    t.refs(&mut refs);
                    let at = format!("{path}/properties/inputs/{}", ptr(input.name));
                    check(self.report, at.clone(), &refs);
                    if input.secret && !refs.iter().any(|r| scope.is_secure(r)) {
                        self.report.error(
                            at,
                            Some(&id),
                            "insecure_secret_input",
                            format!(
                                "input `{}` of `{}` must come from a secure value (an input marked `x-secure`, or a secure property), so that it is masked everywhere",
                                input.name, a.spec.name
                            ),
                        );
                    }
                }
            }
            Kind::Http(h) => {
                let url_refs: Vec<VarPath> = h.url.refs().cloned().collect();
                check(self.report, format!("{path}/properties/url"), &url_refs);
                let mut other = Vec::new();
                for (_, v) in &h.headers {
                    v.refs(&mut other);
                }
                check(self.report, format!("{path}/properties/headers"), &other);
                let mut body_refs = Vec::new();
                if let Some(b) = &h.body {
                    b.refs(&mut body_refs);
                }
                check(self.report, format!("{path}/properties/body"), &body_refs);
                other.extend(body_refs);

                let url_secret = url_refs.iter().find(|r| scope.is_secure(r));
                let carried = url_secret.or_else(|| other.iter().find(|r| scope.is_secure(r)));
                if let Some(r) = url_secret {
                    self.report.error(
                        format!("{path}/properties/url"),
                        Some(&id),
                        "secure_value_in_url",
                        format!("the url uses `{r}`, a secure value; URLs end up in logs, so send it in the body or a header"),
                    );
                }
                let follow = matches!(props, Some(NodeProperties::Http(p)) if p.follow_redirects == Some(true));
                if let Some(r) = carried {
                    if let Some(problem) = insecure_url(&h.url) {
                        self.report.error(
                            format!("{path}/properties/url"),
                            Some(&id),
                            "secure_value_insecure_url",
                            format!("node sends `{r}`, a secure value, but {problem}; use https (plain http only to loopback hosts)"),
                        );
                    }
                    if follow {
                        self.report.error(
                            format!("{path}/properties/followRedirects"),
                            Some(&id),
                            "secure_value_follow_redirects",
                            format!("node sends `{r}`, a secure value, with `followRedirects: true`; a redirect could carry it to another host"),
                        );
                    }
                } else if follow {
                    self.report.warn(
                        format!("{path}/properties/followRedirects"),
                        Some(&id),
                        "redirects_not_followed",
                        "ivrauth never follows redirects; a 3xx is the node's result",
                    );
                }
            }
        }
    }

    /// A "did you mean" hint among node names (none for very large flows).
    fn name_hint(&self, word: &str) -> String {
        if self.names.len() > MAX_HINT_CANDIDATES {
            return String::new();
        }
        let names: Vec<&str> = self.names.keys().copied().collect();
        hint(word, &names)
    }

    fn lookup(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    fn edges(&mut self, kinds: &[Option<Kind>]) -> (Vec<Next>, bool) {
        let doc = self.doc;
        let n = doc.nodes.entries.len();
        let mut outgoing: Vec<Vec<(usize, Option<&str>, usize)>> = vec![Vec::new(); n];
        let mut ok = true;
        for (ei, edge) in doc.edges.iter().enumerate() {
            let at = format!("/edges/{ei}");
            self.unknown_fields(&at, None, &edge.unknown, EDGE_FIELDS);
            let src = self.lookup(&edge.source);
            let dst = self.lookup(&edge.target);
            if src.is_none() {
                self.report.error(
                    format!("{at}/source"),
                    None,
                    "unknown_edge_source",
                    format!(
                        "edge source `{}` matches no node{}",
                        edge.source,
                        self.name_hint(&edge.source)
                    ),
                );
            }
            if dst.is_none() {
                self.report.error(
                    format!("{at}/target"),
                    src.map(|s| doc.nodes.entries[s].node.id_or(&doc.nodes.entries[s].key)),
                    "unknown_edge_target",
                    format!(
                        "edge target `{}` matches no node{}",
                        edge.target,
                        self.name_hint(&edge.target)
                    ),
                );
            }
            match (src, dst) {
                (Some(s), Some(d)) => outgoing[s].push((ei, edge.condition.as_deref(), d)),
                _ => ok = false,
            }
        }
        let mut nexts = Vec::with_capacity(n);
        for (i, out) in outgoing.iter().enumerate() {
            let e = &doc.nodes.entries[i];
            let id = e.node.id_or(&e.key);
            let next = match &kinds[i] {
                Some(Kind::End { .. } | Kind::Transfer { .. } | Kind::Hangup) => {
                    if let Some((ei, _, _)) = out.first() {
                        self.report.error(
                            format!("/edges/{ei}"),
                            Some(id),
                            "edge_from_end_node",
                            format!("`{id}` ends the flow (an end, transfer or hangup node); no edge may leave it"),
                        );
                    }
                    Next::End
                }
                Some(Kind::Collect(_)) | Some(Kind::Menu(_)) => {
                    let choices: &[String] = match &kinds[i] {
                        Some(Kind::Menu(m)) => &m.choices,
                        _ => &[],
                    };
                    let is_menu = matches!(kinds[i], Some(Kind::Menu(_)));
                    let mut default = None;
                    let mut keys: Vec<(String, usize)> = Vec::new();
                    let mut failed = None;
                    for (ei, cond, d) in out {
                        let dup = |report: &mut Report, what: &str| {
                            report.error(
                                format!("/edges/{ei}"),
                                Some(id),
                                "ambiguous_edges",
                                format!("node `{id}` has more than one {what} edge"),
                            )
                        };
                        match cond.map(str::trim) {
                            Some(FAILED_EDGE) => {
                                if failed.replace(*d).is_some() {
                                    dup(self.report, "`failed`");
                                }
                            }
                            None if !is_menu => {
                                if default.replace(*d).is_some() {
                                    dup(self.report, "unconditional");
                                }
                            }
                            None => self.report.error(
                                format!("/edges/{ei}"),
                                Some(id),
                                "unknown_condition",
                                format!("every edge out of menu `{id}` needs a `condition`: one of its choices ({}) or `{FAILED_EDGE}`", choices.join(", ")),
                            ),
                            Some(c) if is_menu && choices.iter().any(|k| k == c) => {
                                if keys.iter().any(|(k, _)| k == c) {
                                    dup(self.report, &format!("`{c}`"));
                                } else {
                                    keys.push((c.to_owned(), *d));
                                }
                            }
                            Some(c) => self.report.error(
                                format!("/edges/{ei}/condition"),
                                Some(id),
                                "unknown_condition",
                                if is_menu {
                                    format!("edge condition `{c}` is not a choice of menu `{id}` ({}) nor `{FAILED_EDGE}`", choices.join(", "))
                                } else {
                                    format!("edge condition `{c}`: a collect node's edges are unconditional (a valid entry) or `{FAILED_EDGE}` (attempts ran out)")
                                },
                            ),
                        }
                    }
                    if is_menu {
                        for c in choices {
                            if !keys.iter().any(|(k, _)| k == c) {
                                self.report.error(
                                    self.node_paths[i].clone(),
                                    Some(id),
                                    "menu_choice_without_edge",
                                    format!(
                                        "menu `{id}` offers `{c}` but no edge has condition `{c}`"
                                    ),
                                );
                            }
                        }
                    } else if default.is_none() {
                        self.report.error(
                            self.node_paths[i].clone(),
                            Some(id),
                            "missing_edge",
                            format!("collect node `{id}` needs an edge without a condition, taken on a valid entry"),
                        );
                    }
                    if failed.is_none() {
                        self.report.error(
                            self.node_paths[i].clone(),
                            Some(id),
                            "missing_failed_edge",
                            format!("node `{id}` needs an edge with condition `{FAILED_EDGE}`, taken when its attempts run out"),
                        );
                    }
                    Next::Input {
                        default,
                        keys,
                        failed,
                    }
                }
                Some(Kind::Condition(conds)) => {
                    let mut branches = Vec::new();
                    for (ei, cond, d) in out {
                        match cond {
                            None => branches.push((None, *d)),
                            Some(c) => {
                                let (negated, name) = match c.strip_prefix('!') {
                                    Some(rest) => (true, rest.trim()),
                                    None => (false, c.trim()),
                                };
                                match conds.iter().position(|(n, _)| n == name) {
                                    Some(ci) => branches.push((
                                        Some(Guard {
                                            condition: ci,
                                            negated,
                                        }),
                                        *d,
                                    )),
                                    None => {
                                        let names: Vec<&str> =
                                            conds.iter().map(|(n, _)| n.as_str()).collect();
                                        self.report.error(
                                            format!("/edges/{ei}/condition"),
                                            Some(id),
                                            "unknown_condition",
                                            format!("edge condition `{c}` names no condition of `{id}`{}", hint(name, &names)),
                                        );
                                    }
                                }
                            }
                        }
                    }
                    // The fallback edge is tried last, whatever its place in the document.
                    branches.sort_by_key(|(g, _)| g.is_none());
                    if branches.iter().filter(|(g, _)| g.is_none()).count() > 1 {
                        self.report.error(
                            self.node_paths[i].clone(),
                            Some(id),
                            "ambiguous_edges",
                            format!(
                                "condition node `{id}` has more than one edge without a condition"
                            ),
                        );
                    }
                    Next::Branch(branches)
                }
                _ => {
                    for (ei, cond, _) in out {
                        if let Some(c) = cond {
                            self.report.error(
                                format!("/edges/{ei}/condition"),
                                Some(id),
                                "unknown_condition",
                                format!("edge condition `{c}` names no condition: `{id}` is not a condition node"),
                            );
                        }
                    }
                    if out.len() > 1 {
                        self.report.error(
                            format!("/edges/{}", out[1].0),
                            Some(id),
                            "ambiguous_edges",
                            format!("node `{id}` has {} outgoing edges; only condition nodes may branch", out.len()),
                        );
                    }
                    match out.first() {
                        Some((_, _, d)) => Next::One(*d),
                        None => Next::End,
                    }
                }
            };
            nexts.push(next);
        }
        for (i, name) in doc.end_nodes.iter().enumerate() {
            match self.lookup(name) {
                None => self.report.error(
                    format!("/endNodes/{i}"),
                    None,
                    "unknown_end_node",
                    format!("end node `{name}` matches no node"),
                ),
                Some(n) if !matches!(kinds[n], Some(Kind::End { .. }) | None) => self.report.error(
                    format!("/endNodes/{i}"),
                    Some(name),
                    "end_node_not_end",
                    format!("`{name}` is listed in endNodes but is not of type `end`"),
                ),
                Some(_) => {}
            }
        }
        (nexts, ok)
    }

    fn start_node(&mut self) -> Option<usize> {
        match self.doc.start_node.as_deref() {
            None => {
                self.report.error(
                    "/startNode",
                    None,
                    "missing_start_node",
                    "the flow has no `startNode`",
                );
                None
            }
            Some(s) => match self.lookup(s) {
                Some(i) => Some(i),
                None => {
                    self.report.error(
                        "/startNode",
                        None,
                        "unknown_start_node",
                        format!("start node `{s}` matches no node{}", self.name_hint(s)),
                    );
                    None
                }
            },
        }
    }

    /// Unreachable nodes are always reported; "no path to an end" only when every edge
    /// resolved (a mistyped edge target would otherwise blame every node before it).
    fn reachability(
        &mut self,
        start: usize,
        next: &[Next],
        kinds: &[Option<Kind>],
        edges_ok: bool,
    ) {
        let n = next.len();
        let succ = |i: usize| -> Vec<usize> { next[i].targets() };
        let mut reached = vec![false; n];
        let mut queue = VecDeque::from([start]);
        reached[start] = true;
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for i in 0..n {
            for d in succ(i) {
                preds[d].push(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            for d in succ(i) {
                if !reached[d] {
                    reached[d] = true;
                    queue.push_back(d);
                }
            }
        }
        let mut ends = vec![false; n];
        let mut queue: VecDeque<usize> = (0..n)
            .filter(|&i| {
                matches!(
                    kinds[i],
                    Some(Kind::End { .. } | Kind::Transfer { .. } | Kind::Hangup)
                )
            })
            .collect();
        for &i in &queue {
            ends[i] = true;
        }
        while let Some(i) = queue.pop_front() {
            for &p in &preds[i] {
                if !ends[p] {
                    ends[p] = true;
                    queue.push_back(p);
                }
            }
        }
        for i in 0..n {
            let e = &self.doc.nodes.entries[i];
            let id = e.node.id_or(&e.key);
            if !reached[i] {
                self.report.error(
                    self.node_paths[i].clone(),
                    Some(id),
                    "unreachable_node",
                    format!("node `{id}` cannot be reached from the start node"),
                );
            } else if edges_ok && !ends[i] && kinds[i].is_some() {
                self.report.error(
                    self.node_paths[i].clone(),
                    Some(id),
                    "no_path_to_end",
                    format!("no path leads from node `{id}` to an end node"),
                );
            }
        }
    }
}

fn type_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Start => "start",
        Kind::End { .. } => "end",
        Kind::Http(_) => "http",
        Kind::Condition(_) => "condition",
        Kind::SetProperties(_) => "setProperties",
        Kind::Log { .. } => "log",
        Kind::Action(_) => "action",
        Kind::Say(_) => "say",
        Kind::Collect(_) => "collect",
        Kind::Menu(_) => "menu",
        Kind::Transfer { .. } => "transfer",
        Kind::Hangup => "hangup",
        Kind::SecureEnter => "secureEnter",
        Kind::SecureExit => "secureExit",
        Kind::Wait { .. } => "wait",
    }
}

/// An http node's `secureOutput` entry as path segments. Response header names are
/// lower-cased by the host, so a `headers.<name>` entry is too.
fn secure_output_path(s: &str) -> Vec<String> {
    let mut segs: Vec<String> = s.split('.').map(str::to_owned).collect();
    if segs.first().is_some_and(|f| f == "headers") {
        if let Some(name) = segs.get_mut(1) {
            *name = name.to_ascii_lowercase();
        }
    }
    segs
}

/// Why a URL template may not carry a secret, if it may not. Decided with the same URL
/// parser the host uses, on the literal part of the template.
fn insecure_url(url: &Template) -> Option<String> {
    let prefix = url.literal_prefix();
    let whole_literal = url.parts.len() == 1 && url.single_ref().is_none();
    let lower = prefix.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return None;
    }
    if !lower.starts_with("http://") {
        return Some(if prefix.is_empty() {
            "the url does not start with a literal `https://`".to_owned()
        } else {
            "the url is not https".to_owned()
        });
    }
    // Plain http is allowed to a loopback host only, and the host must be literal to know.
    let rest = &prefix["http://".len()..];
    let candidate = match rest.find(['/', '?', '#', '\\']) {
        Some(end) => &prefix[.."http://".len() + end],
        None if whole_literal => prefix,
        None => {
            return Some(
                "the url's host is not literal, so plain http cannot be allowed".to_owned(),
            )
        }
    };
    if secure_transport(&format!("{candidate}/")) {
        None
    } else {
        Some(format!(
            "`{candidate}` is plain http to a host that is not loopback"
        ))
    }
}
