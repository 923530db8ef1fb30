//! The step engine: `(flow, state, event, now) -> (state, command)`.
//!
//! The engine executes pure nodes (start, condition, setProperties, end) itself and stops
//! whenever the host must act: perform an HTTP request, write a log line, or end the run.
//! The host performs the command and feeds the result back as the next [`Event`]. The engine
//! never does I/O, reads no clock (`now` is an argument) and draws no randomness, so the
//! simulator, the test suite and (later) the telephony front-ends are all just hosts.
//!
//! Taint is tracked at run time: every value that comes from a secure input, a secure
//! property, an http node's `secureOutput`, or is computed from one, is secure, and appears
//! in the trace only as `********`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use ivrauth_proto::api::{
    Diagnostic, Outcome, RunFailure, TraceAction, TraceEntry, TraceRequest, MASK,
};

use crate::expr::{binding_name, json_to_cel, Condition, Part, Template, VarPath};
use crate::flow::{Flow, Kind, Next, ValueTemplate};
use crate::http::{HttpRequest, HttpResult};
use crate::secret::Secret;
use crate::time::UnixMillis;

/// Default bound on executed nodes per run, which stops flows that loop forever.
pub const DEFAULT_MAX_STEPS: u32 = 1_000;

/// What the host tells the engine about the run it starts.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub trace_id: String,
    pub flow_id: Option<String>,
    /// Host variables visible as `contact.*`.
    pub contact: Map<String, Value>,
    pub max_steps: u32,
}

impl RunContext {
    pub fn new(trace_id: impl Into<String>) -> Self {
        RunContext {
            trace_id: trace_id.into(),
            flow_id: None,
            contact: Map::new(),
            max_steps: DEFAULT_MAX_STEPS,
        }
    }
}

/// What the host reports back after performing a command.
#[derive(Debug, Clone)]
pub enum Event {
    HttpCompleted(HttpResult),
    LogWritten,
    /// The action's outputs (by the names its spec declares), or why it could not be done.
    ActionCompleted(Result<Map<String, Value>, ActionFailure>),
}

/// The host could not perform an action (a directory down, hashing saturated).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionFailure {
    pub code: String,
    /// Safe to show: never a secret.
    pub message: String,
}

/// A built-in action the host must perform.
#[derive(Debug)]
pub struct ActionCall {
    pub node_id: String,
    pub action: &'static str,
    /// Inputs that are not secure.
    pub inputs: Map<String, Value>,
    /// Inputs the action declares secret, or whose value is secure, as text.
    pub secrets: Vec<(&'static str, Secret<String>)>,
}

impl ActionCall {
    /// An input as text, whether it is a secret or not (`None` when absent or null).
    pub fn text(&self, name: &str) -> Option<Secret<String>> {
        if let Some((_, s)) = self.secrets.iter().find(|(n, _)| *n == name) {
            return Some(s.clone());
        }
        match self.inputs.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Secret::new(s.clone())),
            Some(other) => Some(Secret::new(other.to_string())),
        }
    }
}

/// What the engine asks the host to do next.
#[derive(Debug)]
pub enum Command {
    Http(HttpRequest),
    Log(LogLine),
    Action(ActionCall),
    Finish(Outcome),
}

/// A line a `log` node emits. Any secure value in it has already been masked.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub node_id: String,
    pub level: String,
    pub message: String,
}

#[derive(Debug)]
struct Binding {
    value: Value,
    /// Paths (relative to this binding) holding secrets; an empty path means all of it.
    secure: Vec<Vec<String>>,
}

impl Binding {
    fn plain(value: Value) -> Self {
        Binding {
            value,
            secure: Vec::new(),
        }
    }
    fn lookup(&self, rest: &[String]) -> (Option<&Value>, bool) {
        let secure = self
            .secure
            .iter()
            .any(|s| s.iter().zip(rest.iter()).all(|(a, b)| a == b));
        let mut v = &self.value;
        for seg in rest {
            let next = match v {
                Value::Object(o) => o.get(seg.as_str()),
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => return (None, secure),
            }
        }
        (Some(v), secure)
    }
}

/// Where the run is. Opaque to hosts; advanced only by [`step`].
#[derive(Debug)]
pub struct RunState {
    roots: HashMap<String, Binding>,
    outputs: Vec<Option<Binding>>,
    current: usize,
    steps: u32,
    max_steps: u32,
    trace: Vec<TraceEntry>,
    pending: Option<Pending>,
    finished: bool,
}

#[derive(Debug)]
struct Pending {
    node: usize,
    started: UnixMillis,
    entry: TraceEntry,
}

impl RunState {
    /// The trace so far; secure values are already masked.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }
    pub fn into_trace(self) -> Vec<TraceEntry> {
        self.trace
    }
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn get(&self, flow: &Flow, p: &VarPath) -> (Option<&Value>, bool) {
        let binding = match flow.names.get(p.root()) {
            Some(&i) => self.outputs.get(i).and_then(Option::as_ref),
            None => self.roots.get(p.root()),
        };
        match binding {
            Some(b) => b.lookup(p.rest()),
            None => (None, false),
        }
    }

    fn set(&mut self, name: &VarPath, value: Value, secure: bool) {
        let rest = name.rest().to_vec();
        let binding = self
            .roots
            .entry(name.root().to_owned())
            .or_insert_with(|| Binding::plain(Value::Null));
        let mut slot = &mut binding.value;
        for seg in &rest {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(o) = slot else { break };
            slot = o.entry(seg.clone()).or_insert(Value::Null);
        }
        *slot = value;
        binding
            .secure
            .retain(|s| !s.starts_with(&rest) || s.len() < rest.len());
        if secure {
            binding.secure.push(rest);
        }
    }

    fn render(&self, flow: &Flow, t: &Template, masked: bool) -> (String, bool) {
        let mut out = String::new();
        let mut secure = false;
        for part in &t.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(p) => {
                    let (v, s) = self.get(flow, p);
                    secure |= s;
                    if s && masked {
                        out.push_str(MASK);
                    } else {
                        push_text(&mut out, v);
                    }
                }
            }
        }
        (out, secure)
    }

    fn render_value(&self, flow: &Flow, t: &ValueTemplate) -> (Value, bool) {
        match t {
            ValueTemplate::Literal(v) => (v.clone(), false),
            ValueTemplate::Str(t) => match t.single_ref() {
                Some(p) => {
                    let (v, s) = self.get(flow, p);
                    (v.cloned().unwrap_or(Value::Null), s)
                }
                None => {
                    let (s, sec) = self.render(flow, t, false);
                    (Value::String(s), sec)
                }
            },
            ValueTemplate::Array(items) => {
                let mut secure = false;
                let out = items
                    .iter()
                    .map(|i| {
                        let (v, s) = self.render_value(flow, i);
                        secure |= s;
                        v
                    })
                    .collect();
                (Value::Array(out), secure)
            }
            ValueTemplate::Object(fields) => {
                let mut secure = false;
                let mut out = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    let (v, s) = self.render_value(flow, t);
                    secure |= s;
                    out.insert(k.clone(), v);
                }
                (Value::Object(out), secure)
            }
        }
    }

    fn eval(&self, flow: &Flow, c: &Condition) -> (Result<bool, String>, bool) {
        let mut ctx = cel::Context::default();
        let mut secure = false;
        for (i, p) in c.bindings.iter().enumerate() {
            let (v, s) = self.get(flow, p);
            secure |= s;
            ctx.add_variable_from_value(binding_name(i), v.map_or(cel::Value::Null, json_to_cel));
        }
        for name in &c.bare {
            if let Some(p) = VarPath::parse(name) {
                let (v, s) = self.get(flow, &p);
                secure |= s;
                ctx.add_variable_from_value(name.clone(), v.map_or(cel::Value::Null, json_to_cel));
            }
        }
        let result = match c.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "evaluated to a {:?}, not a boolean",
                other.type_of()
            )),
            // An error message could quote a secure operand; keep it only when none is secure.
            Err(e) if !secure => Err(e.to_string()),
            Err(_) => Err("evaluation failed".to_owned()),
        };
        (result, secure)
    }
}

fn push_text(out: &mut String, v: Option<&Value>) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(s),
        Some(other) => out.push_str(&other.to_string()),
    }
}

fn mask_paths(value: &mut Value, paths: &[Vec<String>]) {
    for path in paths {
        mask_path(value, path);
    }
}

/// Mask the value at `path`. Where the path runs into a string or number before it ends (a
/// `body.token` whose body is plain text), that whole value is masked: it may hold the secret.
fn mask_path(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        *value = Value::String(MASK.to_owned());
        return;
    };
    match value {
        Value::Object(o) => {
            if let Some(v) = o.get_mut(first.as_str()) {
                mask_path(v, rest);
            }
        }
        Value::Array(a) => {
            if let Some(v) = first.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                mask_path(v, rest);
            }
        }
        Value::Null => {}
        _ => *value = Value::String(MASK.to_owned()),
    }
}

/// Validate `inputs` against the flow's schema and run until the first command.
pub fn start(
    flow: &Flow,
    inputs: &Value,
    ctx: RunContext,
    now: UnixMillis,
) -> Result<(RunState, Command), Vec<Diagnostic>> {
    flow.inputs.check(inputs)?;
    let mut roots = HashMap::new();
    if let Value::Object(fields) = inputs {
        for name in flow.inputs.names() {
            if let Some(v) = fields.get(name) {
                let secure = if flow.inputs.is_secure(name) {
                    vec![Vec::new()]
                } else {
                    Vec::new()
                };
                roots.insert(
                    name.to_owned(),
                    Binding {
                        value: v.clone(),
                        secure,
                    },
                );
            }
        }
    }
    let mut flow_vars = Map::new();
    flow_vars.insert("traceId".into(), Value::String(ctx.trace_id));
    flow_vars.insert("id".into(), ctx.flow_id.map_or(Value::Null, Value::String));
    roots.insert("flow".to_owned(), Binding::plain(Value::Object(flow_vars)));
    roots.insert(
        "contact".to_owned(),
        Binding::plain(Value::Object(ctx.contact)),
    );
    let mut state = RunState {
        roots,
        outputs: (0..flow.nodes.len()).map(|_| None).collect(),
        current: flow.start,
        steps: 0,
        max_steps: ctx.max_steps,
        trace: Vec::new(),
        pending: None,
        finished: false,
    };
    let cmd = advance(flow, &mut state, now);
    Ok((state, cmd))
}

/// Feed the result of the last command back and run until the next one.
pub fn step(
    flow: &Flow,
    mut state: RunState,
    event: Event,
    now: UnixMillis,
) -> (RunState, Command) {
    let Some(Pending {
        node,
        started,
        mut entry,
    }) = state.pending.take()
    else {
        let cmd = fail(
            &mut state,
            "unexpected_event",
            "the run is not waiting for an event".to_owned(),
        );
        return (state, cmd);
    };
    entry.duration_ms = u64::try_from(now.0.saturating_sub(started.0)).unwrap_or(0);
    let Some(n) = flow.nodes.get(node) else {
        let cmd = fail(
            &mut state,
            "unexpected_event",
            "the run refers to a node the flow lacks".to_owned(),
        );
        return (state, cmd);
    };
    match (&n.kind, event) {
        (Kind::Http(h), Event::HttpCompleted(result)) => {
            let output = http_output(result);
            let mut shown = output.clone();
            mask_paths(&mut shown, &h.secure_output);
            if let Value::Object(o) = &mut shown {
                if o.get("error").is_some_and(Value::is_null) {
                    o.remove("error");
                }
            }
            entry.output = Some(shown);
            if let Some(slot) = state.outputs.get_mut(node) {
                *slot = Some(Binding {
                    value: output,
                    secure: h.secure_output.clone(),
                });
            }
        }
        (Kind::Log { .. }, Event::LogWritten) => {}
        (Kind::Action(a), Event::ActionCompleted(result)) => {
            let mut out = Map::new();
            match result {
                Ok(values) => {
                    for name in a.spec.outputs {
                        out.insert(
                            (*name).to_owned(),
                            values.get(*name).cloned().unwrap_or(Value::Null),
                        );
                    }
                    out.insert("error".into(), Value::Null);
                }
                Err(f) => {
                    for name in a.spec.outputs {
                        out.insert((*name).to_owned(), Value::Null);
                    }
                    let mut e = Map::new();
                    e.insert("code".into(), Value::String(f.code));
                    e.insert("message".into(), Value::String(f.message));
                    out.insert("error".into(), Value::Object(e));
                }
            }
            let value = Value::Object(out);
            entry.output = Some(value.clone());
            if let Some(slot) = state.outputs.get_mut(node) {
                *slot = Some(Binding::plain(value));
            }
        }
        _ => {
            state.trace.push(entry);
            let cmd = fail(
                &mut state,
                "unexpected_event",
                format!("node `{}` did not expect that event", n.id),
            );
            return (state, cmd);
        }
    }
    if let Err(outcome) = follow(flow, &mut state, node, &mut entry, None) {
        state.trace.push(entry);
        return (state, Command::Finish(outcome));
    }
    state.trace.push(entry);
    let cmd = advance(flow, &mut state, now);
    (state, cmd)
}

fn http_output(result: HttpResult) -> Value {
    let mut o = Map::new();
    match result {
        HttpResult::Response(r) => {
            o.insert("statusCode".into(), Value::from(r.status));
            let mut headers = Map::new();
            for (k, v) in r.headers {
                match headers.get_mut(&k) {
                    Some(Value::String(existing)) => {
                        existing.push_str(", ");
                        existing.push_str(&v);
                    }
                    _ => {
                        headers.insert(k, Value::String(v));
                    }
                }
            }
            o.insert("headers".into(), Value::Object(headers));
            let body = if r.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&r.body).into_owned())
                })
            };
            o.insert("body".into(), body);
            o.insert("error".into(), Value::Null);
        }
        HttpResult::Failed(f) => {
            o.insert("statusCode".into(), Value::Null);
            o.insert("headers".into(), Value::Object(Map::new()));
            o.insert("body".into(), Value::Null);
            let mut e = Map::new();
            e.insert("code".into(), Value::String(f.kind.code().to_owned()));
            e.insert("message".into(), Value::String(f.message));
            o.insert("error".into(), Value::Object(e));
        }
    }
    Value::Object(o)
}

fn fail(state: &mut RunState, code: &str, message: String) -> Command {
    Command::Finish(failure(state, code, message))
}

fn failure(state: &mut RunState, code: &str, message: String) -> Outcome {
    state.finished = true;
    Outcome {
        end_node: None,
        status_code: None,
        error: Some(RunFailure {
            code: code.to_owned(),
            message,
        }),
    }
}

/// Move to the successor of `node`; `results` are a condition node's results.
fn follow(
    flow: &Flow,
    state: &mut RunState,
    node: usize,
    entry: &mut TraceEntry,
    results: Option<&[bool]>,
) -> Result<(), Outcome> {
    let Some(n) = flow.nodes.get(node) else {
        return Err(failure(
            state,
            "internal",
            "node index out of range".to_owned(),
        ));
    };
    let target = match &n.next {
        Next::One(d) => Some(*d),
        Next::End => None,
        Next::Branch(branches) => branches
            .iter()
            .find(|(guard, _)| match (guard, results) {
                (None, _) => true,
                (Some(g), Some(r)) => r.get(g.condition).is_some_and(|v| *v != g.negated),
                (Some(_), None) => false,
            })
            .map(|(_, d)| *d),
    };
    match target.and_then(|t| flow.nodes.get(t).map(|tn| (t, tn))) {
        Some((t, tn)) => {
            entry.next = Some(tn.key.clone());
            state.current = t;
            Ok(())
        }
        None => Err(failure(
            state,
            "no_matching_edge",
            format!(
                "no edge out of node `{}` matched; add an edge for the remaining case",
                n.id
            ),
        )),
    }
}

fn advance(flow: &Flow, state: &mut RunState, now: UnixMillis) -> Command {
    loop {
        if state.steps >= state.max_steps {
            let at = flow
                .nodes
                .get(state.current)
                .map(|n| n.id.as_str())
                .unwrap_or_default();
            let msg = format!(
                "the run executed {} steps without reaching an end node (stopped at `{at}`); the flow probably loops",
                state.max_steps
            );
            return fail(state, "step_limit_exceeded", msg);
        }
        state.steps += 1;
        let i = state.current;
        let Some(node) = flow.nodes.get(i) else {
            return fail(state, "internal", "node index out of range".to_owned());
        };
        let mut entry = TraceEntry {
            step: state.steps,
            node_id: node.id.clone(),
            node_key: node.key.clone(),
            node_type: node.type_name.to_owned(),
            duration_ms: 0,
            request: None,
            action: None,
            output: None,
            properties: None,
            message: None,
            result: None,
            errors: Vec::new(),
            next: None,
        };
        let mut results: Option<Vec<bool>> = None;
        match &node.kind {
            Kind::Start => {}
            Kind::End { status_code } => {
                state.trace.push(entry);
                state.finished = true;
                return Command::Finish(Outcome {
                    end_node: Some(node.id.clone()),
                    status_code: *status_code,
                    error: None,
                });
            }
            Kind::SetProperties(assigns) => {
                let mut shown = Map::new();
                for a in assigns {
                    let (v, derived) = state.render_value(flow, &a.value);
                    let secure = a.secure || derived;
                    shown.insert(
                        a.name.to_string(),
                        if secure {
                            Value::String(MASK.to_owned())
                        } else {
                            v.clone()
                        },
                    );
                    state.set(&a.name, v, secure);
                }
                entry.properties = Some(shown);
            }
            Kind::Condition(conds) => {
                let mut shown = Map::new();
                let mut r = Vec::with_capacity(conds.len());
                for (name, c) in conds {
                    let (res, secure) = state.eval(flow, c);
                    let b = match res {
                        Ok(b) => b,
                        Err(e) => {
                            entry.errors.push(format!(
                                "condition `{name}` failed and counts as false: {e}"
                            ));
                            false
                        }
                    };
                    shown.insert(
                        name.clone(),
                        if secure {
                            Value::String(MASK.to_owned())
                        } else {
                            Value::Bool(b)
                        },
                    );
                    r.push(b);
                }
                entry.result = Some(shown);
                results = Some(r);
            }
            Kind::Log { level, message } => {
                let (text, _) = state.render(flow, message, true);
                entry.message = Some(text.clone());
                state.pending = Some(Pending {
                    node: i,
                    started: now,
                    entry,
                });
                return Command::Log(LogLine {
                    node_id: node.id.clone(),
                    level: level.clone(),
                    message: text,
                });
            }
            Kind::Action(a) => {
                let mut inputs = Map::new();
                let mut shown = Map::new();
                let mut secrets = Vec::new();
                for (spec, t) in &a.inputs {
                    let (v, secure) = state.render_value(flow, t);
                    if spec.secret || secure {
                        let text = match v {
                            Value::String(s) => s,
                            Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        secrets.push((spec.name, Secret::new(text)));
                        shown.insert(spec.name.to_owned(), Value::String(MASK.to_owned()));
                    } else {
                        shown.insert(spec.name.to_owned(), v.clone());
                        inputs.insert(spec.name.to_owned(), v);
                    }
                }
                entry.action = Some(TraceAction {
                    name: a.spec.name.to_owned(),
                    inputs: shown,
                });
                state.pending = Some(Pending {
                    node: i,
                    started: now,
                    entry,
                });
                return Command::Action(ActionCall {
                    node_id: node.id.clone(),
                    action: a.spec.name,
                    inputs,
                    secrets,
                });
            }
            Kind::Http(h) => {
                let (url, url_secure) = state.render(flow, &h.url, false);
                let mut carries = url_secure;
                let mut headers = Vec::with_capacity(h.headers.len() + 1);
                for (k, t) in &h.headers {
                    let (v, s) = state.render_value(flow, t);
                    carries |= s;
                    let text = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    headers.push((k.clone(), Secret::new(text)));
                }
                let body = match &h.body {
                    None => None,
                    Some(t) => {
                        let (v, s) = state.render_value(flow, t);
                        carries |= s;
                        if !headers
                            .iter()
                            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                        {
                            headers.push((
                                "content-type".to_owned(),
                                Secret::new("application/json".to_owned()),
                            ));
                        }
                        Some(Secret::new(serde_json::to_vec(&v).unwrap_or_default()))
                    }
                };
                let shown_url = if url_secure {
                    state.render(flow, &h.url, true).0
                } else {
                    url.clone()
                };
                entry.request = Some(TraceRequest {
                    method: h.method.clone(),
                    url: shown_url,
                });
                state.pending = Some(Pending {
                    node: i,
                    started: now,
                    entry,
                });
                return Command::Http(HttpRequest {
                    method: h.method.clone(),
                    url,
                    headers,
                    body,
                    timeout_ms: h.timeout_ms,
                    carries_secret: carries,
                });
            }
        }
        if let Err(outcome) = follow(flow, state, i, &mut entry, results.as_deref()) {
            state.trace.push(entry);
            return Command::Finish(outcome);
        }
        state.trace.push(entry);
    }
}
