//! The step engine: `(flow, state, event, now) -> (state, command)`.
//!
//! The engine executes pure nodes (start, condition, setProperties, end) itself and stops
//! whenever the host must act: perform an HTTP request or an action, write a log line, ask
//! the caller for keys, or end the run. The host performs the command and feeds the result
//! back as the next [`Event`]. The engine never does I/O, reads no clock (`now` is an
//! argument) and draws no randomness, so simulations, call turns on every telephony
//! front-end, the terminal call simulator and the test suite are all just hosts (the
//! server's simulations and call turns share one, `ivrauth_server::app::host`).
//!
//! Taint is tracked at run time: every value that comes from a secure input, a secure
//! property, an http node's `secureOutput`, or is computed from one, is secure, and appears
//! in the trace only as `********`. An http response that contains the text of a secure
//! value its request sent (as sent, or JSON-escaped) makes the node's whole output secure:
//! an echo of a secret is a secret. A `log` message or a prompt that would use a secure value
//! gets `********` in its place, and the trace entry says so (the validator refuses the
//! flows it can see doing that; this catches the ones only the run can).
//!
//! Every run is bounded: at most [`RunContext::max_steps`] nodes, over the whole run or (for
//! calls, whose every turn waits for a caller) per turn, see [`StepBudget`]; at most
//! [`RunContext::max_trace_entries`] trace entries held. A host ends a run for its own
//! limits (no-input answers, wall time, turns of a call) with [`RunState::abort`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use ivrauth_proto::api::{
    Diagnostic, Outcome, RunFailure, TraceAction, TraceEntry, TraceRequest, TransferOutcome, MASK,
};

use crate::expr::{binding_name, json_to_cel, Condition, Part, Template, VarPath};
use crate::flow::{Flow, HttpNode, Kind, Next, SayNode, ValueTemplate};
use crate::http::{HttpFailure, HttpFailureKind, HttpRequest, HttpResult};
use crate::ivr::{Input, Prompt, PromptKind, Verb};
use crate::secret::Secret;
use crate::time::UnixMillis;

/// Default bound on executed nodes per run (or per turn), which stops flows that loop
/// forever.
pub const DEFAULT_MAX_STEPS: u32 = 1_000;

/// Default bound on the trace entries a run holds. Every entry costs a step, so with the
/// default step budget over a whole run this bound is not reached first.
pub const DEFAULT_MAX_TRACE_ENTRIES: u32 = 1_000;

/// What [`RunContext::max_steps`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepBudget {
    /// The whole run: input cannot reset it. For hosts that answer prompts themselves
    /// (simulations), where a flow that re-asks forever would otherwise never end.
    PerRun,
    /// Each turn: every [`Event::Input`] starts a fresh budget. For calls, where each turn
    /// waits for a real caller and the host caps the turns of a call.
    PerTurn,
}

/// Snapshots sealed before the budget was recorded came from calls.
fn snapshot_budget() -> StepBudget {
    StepBudget::PerTurn
}

fn default_max_trace() -> u32 {
    DEFAULT_MAX_TRACE_ENTRIES
}

/// What the host tells the engine about the run it starts.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub trace_id: String,
    pub flow_id: Option<String>,
    /// Host variables visible as `contact.*`.
    pub contact: Map<String, Value>,
    pub max_steps: u32,
    /// Whether `max_steps` covers the whole run (the default) or each turn.
    pub budget: StepBudget,
    /// Trace entries the run may hold; one more ends it with `trace_limit_exceeded`.
    pub max_trace_entries: u32,
}

impl RunContext {
    pub fn new(trace_id: impl Into<String>) -> Self {
        RunContext {
            trace_id: trace_id.into(),
            flow_id: None,
            contact: Map::new(),
            max_steps: DEFAULT_MAX_STEPS,
            budget: StepBudget::PerRun,
            max_trace_entries: DEFAULT_MAX_TRACE_ENTRIES,
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
    /// The caller's answer to the last [`Command::Prompt`]. Starts a new turn (and, with
    /// [`StepBudget::PerTurn`], a fresh step budget).
    Input(Input),
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
    /// Ask the caller for keys; play [`RunState::take_verbs`] first. Answer with
    /// [`Event::Input`].
    Prompt(Prompt),
    /// The run is over; play [`RunState::take_verbs`] first.
    Finish(Outcome),
}

/// A line a `log` node emits. Any secure value in it has already been masked.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub node_id: String,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
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
    budget: StepBudget,
    max_trace: u32,
    trace: Vec<TraceEntry>,
    pending: Option<Pending>,
    finished: bool,
    /// Verbs produced since the host last took them.
    verbs: Vec<Verb>,
    /// Inside a secure segment: every collect is secure.
    in_secure: bool,
    /// The asking of the collect or menu node the run waits on (1 = first).
    attempt: u32,
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the snapshot is not valid: {0}")]
    Malformed(String),
    #[error("the snapshot does not fit this flow")]
    WrongFlow,
}

/// What survives between turns (no trace, no pending verbs).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    roots: HashMap<String, Binding>,
    outputs: Vec<(usize, Binding)>,
    current: usize,
    /// The node waiting for input, since when, and its trace entry so far.
    waiting: Option<(usize, i64, TraceEntry)>,
    max_steps: u32,
    /// Steps used so far (counted across turns with [`StepBudget::PerRun`]).
    #[serde(default)]
    steps: u32,
    #[serde(default = "snapshot_budget")]
    budget: StepBudget,
    #[serde(default = "default_max_trace")]
    max_trace: u32,
    in_secure: bool,
    attempt: u32,
}

#[derive(Debug)]
struct Pending {
    node: usize,
    started: UnixMillis,
    entry: TraceEntry,
    /// An http node's request: the texts of the secure values it sent, to recognise them
    /// in the response. Never in a snapshot (a request does not outlive its turn).
    sent_secrets: Vec<Secret<String>>,
}

impl Pending {
    fn new(node: usize, started: UnixMillis, entry: TraceEntry) -> Pending {
        Pending {
            node,
            started,
            entry,
            sent_secrets: Vec::new(),
        }
    }
}

impl RunState {
    /// The trace so far; secure values are already masked.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }
    pub fn into_trace(self) -> Vec<TraceEntry> {
        self.trace
    }
    /// The trace so far, leaving it empty (a host keeping a call's trace turn by turn).
    pub fn take_trace(&mut self) -> Vec<TraceEntry> {
        std::mem::take(&mut self.trace)
    }
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The verbs (speech, pauses, recording control) produced since the last call.
    pub fn take_verbs(&mut self) -> Vec<Verb> {
        std::mem::take(&mut self.verbs)
    }

    /// True inside a secure segment.
    pub fn in_secure_segment(&self) -> bool {
        self.in_secure
    }

    /// The run's state between turns, for a host to keep (sealed: secure values are in
    /// it) while the caller answers a prompt. The trace is not included.
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotRef {
            roots: &self.roots,
            outputs: self
                .outputs
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.as_ref().map(|b| (i, b)))
                .collect(),
            current: self.current,
            waiting: self
                .pending
                .as_ref()
                .map(|p| (p.node, p.started.0, &p.entry)),
            max_steps: self.max_steps,
            steps: self.steps,
            budget: self.budget,
            max_trace: self.max_trace,
            in_secure: self.in_secure,
            attempt: self.attempt,
        };
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    /// A run from [`RunState::snapshot`], for the same compiled flow.
    pub fn restore(flow: &Flow, bytes: &[u8]) -> Result<RunState, RestoreError> {
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| RestoreError::Malformed(e.to_string()))?;
        let n = flow.nodes.len();
        if snap.current >= n
            || snap.outputs.iter().any(|(i, _)| *i >= n)
            || snap.waiting.as_ref().is_some_and(|(i, _, _)| *i >= n)
        {
            return Err(RestoreError::WrongFlow);
        }
        let mut outputs: Vec<Option<Binding>> = (0..n).map(|_| None).collect();
        for (i, b) in snap.outputs {
            outputs[i] = Some(b);
        }
        let pending = snap
            .waiting
            .map(|(node, started, entry)| Pending::new(node, UnixMillis(started), entry));
        Ok(RunState {
            roots: snap.roots,
            outputs,
            current: snap.current,
            steps: snap.steps,
            max_steps: snap.max_steps,
            budget: snap.budget,
            max_trace: snap.max_trace,
            trace: Vec::new(),
            pending,
            finished: false,
            verbs: Vec::new(),
            in_secure: snap.in_secure,
            attempt: snap.attempt,
        })
    }

    fn binding(&self, flow: &Flow, root: &str) -> Option<&Binding> {
        match flow.names.get(root) {
            Some(&i) => self.outputs.get(i).and_then(Option::as_ref),
            None => self.roots.get(root),
        }
    }

    /// Clear what `p` refers to (set it to `null`), if it exists.
    fn erase(&mut self, flow: &Flow, p: &VarPath) {
        let binding = match flow.names.get(p.root()) {
            Some(&i) => self.outputs.get_mut(i).and_then(Option::as_mut),
            None => self.roots.get_mut(p.root()),
        };
        let Some(binding) = binding else {
            return;
        };
        let mut v = &mut binding.value;
        for seg in p.rest() {
            let next = match v {
                Value::Object(o) => o.get_mut(seg.as_str()),
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => return,
            }
        }
        *v = Value::Null;
    }

    fn get(&self, flow: &Flow, p: &VarPath) -> (Option<&Value>, bool) {
        match self.binding(flow, p.root()) {
            Some(b) => b.lookup(p.rest()),
            None => (None, false),
        }
    }

    /// The texts of the secure values in what `p` refers to (all of it, or the secure
    /// paths inside it), to recognise them in a response.
    fn secure_texts(&self, flow: &Flow, p: &VarPath, out: &mut Vec<Secret<String>>) {
        let Some(b) = self.binding(flow, p.root()) else {
            return;
        };
        let rest = p.rest();
        for s in &b.secure {
            let at: &[String] = if rest.starts_with(s) {
                rest
            } else if s.starts_with(rest) {
                s
            } else {
                continue;
            };
            if let (Some(v), _) = b.lookup(at) {
                leaf_texts(v, out);
            }
        }
    }

    /// `t` as people see it (a log line, speech): a secure value reads `********`, and a
    /// note for each one so replaced is added to `notes`.
    fn render_shown(&self, flow: &Flow, t: &Template, notes: &mut Vec<String>) -> String {
        let mut out = String::new();
        for part in &t.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(p) => {
                    let (v, secure) = self.get(flow, p);
                    if secure {
                        out.push_str(MASK);
                        let note = format!(
                            "`{{{{{p}}}}}` holds a secure value at run time; it was replaced by {MASK}"
                        );
                        if !notes.contains(&note) {
                            notes.push(note);
                        }
                    } else {
                        push_text(&mut out, v);
                    }
                }
            }
        }
        out
    }

    /// End the run for a limit of the host's (prompts answered with no input, wall time,
    /// turns of a call): the node the run waits on is recorded with `message`, and the
    /// outcome names the limit as `code`, as the engine's own limits do.
    pub fn abort(&mut self, code: &str, message: String, now: UnixMillis) -> Outcome {
        if let Some(Pending {
            started, mut entry, ..
        }) = self.pending.take()
        {
            entry.duration_ms = u64::try_from(now.0.saturating_sub(started.0)).unwrap_or(0);
            entry.errors.push(message.clone());
            if self.trace.len() < self.max_trace_len() {
                self.trace.push(entry);
            }
        }
        failure(self, code, message)
    }

    fn max_trace_len(&self) -> usize {
        usize::try_from(self.max_trace).unwrap_or(usize::MAX)
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

#[derive(Serialize)]
struct SnapshotRef<'a> {
    roots: &'a HashMap<String, Binding>,
    outputs: Vec<(usize, &'a Binding)>,
    current: usize,
    waiting: Option<(usize, i64, &'a TraceEntry)>,
    max_steps: u32,
    steps: u32,
    budget: StepBudget,
    max_trace: u32,
    in_secure: bool,
    attempt: u32,
}

fn new_entry(flow: &Flow, i: usize, step: u32) -> TraceEntry {
    let (id, key, ty) = flow
        .nodes
        .get(i)
        .map(|n| (n.id.clone(), n.key.clone(), n.type_name))
        .unwrap_or_default();
    TraceEntry {
        step,
        node_id: key.clone(),
        node_key: key,
        id,
        node_type: ty.to_owned(),
        duration_ms: 0,
        request: None,
        action: None,
        output: None,
        properties: None,
        message: None,
        result: None,
        errors: Vec::new(),
        next: None,
    }
}

/// The texts of the strings and numbers in `v` (booleans and nulls say nothing alone).
fn leaf_texts(v: &Value, out: &mut Vec<Secret<String>>) {
    match v {
        Value::String(s) if !s.is_empty() => out.push(Secret::new(s.clone())),
        Value::Number(n) => out.push(Secret::new(n.to_string())),
        Value::Array(a) => a.iter().for_each(|v| leaf_texts(v, out)),
        Value::Object(o) => o.values().for_each(|v| leaf_texts(v, out)),
        _ => {}
    }
}

/// Whether the response in `result` contains the text of one of `sent`, as sent or
/// JSON-escaped, in its body or a header.
fn echoes(result: &HttpResult, sent: &[Secret<String>]) -> bool {
    let HttpResult::Response(r) = result else {
        return false;
    };
    if sent.is_empty() {
        return false;
    }
    let body = String::from_utf8_lossy(&r.body);
    let found = |form: &str| {
        !form.is_empty() && (body.contains(form) || r.headers.iter().any(|(_, v)| v.contains(form)))
    };
    sent.iter().any(|s| {
        let text = s.expose();
        let quoted = Secret::new(serde_json::to_string(text).unwrap_or_default());
        let escaped = quoted
            .expose()
            .get(1..quoted.expose().len().saturating_sub(1))
            .unwrap_or_default();
        found(text) || found(escaped)
    })
}

/// Record the result of the http node `node` as its output and in its trace entry. A
/// response that echoes one of `sent` (the secure values of the request) is secure whole.
fn record_http(
    state: &mut RunState,
    node: usize,
    h: &HttpNode,
    entry: &mut TraceEntry,
    result: HttpResult,
    sent: &[Secret<String>],
) {
    let echoed = echoes(&result, sent);
    let output = http_output(result);
    let mut shown = output.clone();
    let secure = if echoed {
        entry.errors.push(
            "the response contains a secure value the request sent, so all of the node's output is secure"
                .to_owned(),
        );
        if let Value::Object(o) = &mut shown {
            for (k, v) in o.iter_mut() {
                if k != "error" {
                    *v = Value::String(MASK.to_owned());
                }
            }
        }
        vec![Vec::new()]
    } else {
        mask_paths(&mut shown, &h.secure_output);
        h.secure_output.clone()
    };
    if let Value::Object(o) = &mut shown {
        if o.get("error").is_some_and(Value::is_null) {
            o.remove("error");
        }
    }
    entry.output = Some(shown);
    if let Some(slot) = state.outputs.get_mut(node) {
        *slot = Some(Binding {
            value: output,
            secure,
        });
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
        budget: ctx.budget,
        max_trace: ctx.max_trace_entries,
        trace: Vec::new(),
        pending: None,
        finished: false,
        verbs: Vec::new(),
        in_secure: false,
        attempt: 0,
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
        sent_secrets,
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
    // The entry of the node that waited cannot be recorded: the run is over.
    if let Some(cmd) = trace_limit(flow, &mut state) {
        return (state, cmd);
    }
    match (&n.kind, event) {
        (Kind::Http(h), Event::HttpCompleted(result)) => {
            record_http(&mut state, node, h, &mut entry, result, &sent_secrets);
        }
        (Kind::Log { .. }, Event::LogWritten) => {}
        (Kind::Collect(_) | Kind::Menu(_), Event::Input(input)) => {
            if state.budget == StepBudget::PerTurn {
                state.steps = 0;
            }
            return answer(flow, state, node, entry, input, now);
        }
        (Kind::Action(a), Event::ActionCompleted(result)) => {
            let mut out = Map::new();
            if result.is_ok() {
                // A secret the action used up (a verified PIN) leaves the run's variables.
                let mut used = Vec::new();
                for (spec, t) in &a.inputs {
                    if spec.consumed {
                        t.refs(&mut used);
                    }
                }
                for p in &used {
                    state.erase(flow, p);
                }
            }
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

/// The caller answered the prompt of `node`: take its edge, or ask again.
fn answer(
    flow: &Flow,
    mut state: RunState,
    node: usize,
    mut entry: TraceEntry,
    input: Input,
    now: UnixMillis,
) -> (RunState, Command) {
    let Some(n) = flow.nodes.get(node) else {
        let cmd = fail(&mut state, "internal", "node index out of range".to_owned());
        return (state, cmd);
    };
    let Next::Input {
        default,
        keys,
        failed,
    } = &n.next
    else {
        let cmd = fail(
            &mut state,
            "internal",
            "input node without input edges".to_owned(),
        );
        return (state, cmd);
    };
    let mut result = Map::new();
    // Ok(target) on a valid entry; Err(true) for no input, Err(false) for no match.
    let chosen: Result<Option<usize>, bool> = match (&n.kind, input) {
        (_, Input::NoInput) => Err(true),
        (_, Input::NoMatch) => Err(false),
        (Kind::Collect(c), Input::Digits(d)) => {
            let mut digits = d.expose().trim().to_owned();
            if !c.finish_on_key.is_empty() && digits.ends_with(c.finish_on_key.as_str()) {
                digits.truncate(digits.len() - c.finish_on_key.len());
            }
            let len = u32::try_from(digits.chars().count()).unwrap_or(u32::MAX);
            if digits.is_empty() {
                Err(true)
            } else if !digits.chars().all(|k| k.is_ascii_digit() || k == '*')
                || len < c.min_digits
                || len > c.max_digits
                || c.pattern.as_ref().is_some_and(|p| !p.is_match(&digits))
            {
                Err(false)
            } else {
                let secure = c.secure || state.in_secure;
                let mut shown = Map::new();
                shown.insert(
                    c.variable.to_string(),
                    if secure {
                        Value::String(MASK.to_owned())
                    } else {
                        Value::String(digits.clone())
                    },
                );
                entry.properties = Some(shown);
                state.set(&c.variable, Value::String(digits), secure);
                Ok(*default)
            }
        }
        (Kind::Menu(_), Input::Digits(d)) => {
            // A platform may pass a finish key on; `#` is stripped unless it is a choice.
            let raw = d.expose().trim();
            let key = if keys.iter().any(|(k, _)| k == raw) {
                raw.to_owned()
            } else {
                raw.trim_end_matches('#').to_owned()
            };
            if key.is_empty() {
                Err(true)
            } else {
                match keys.iter().find(|(k, _)| *k == key) {
                    Some((_, t)) => {
                        result.insert("choice".into(), Value::String(key));
                        Ok(Some(*t))
                    }
                    None => Err(false),
                }
            }
        }
        _ => Err(false),
    };
    let target = match chosen {
        Ok(t) => t,
        Err(no_input) => {
            result.insert(
                "input".into(),
                Value::String(if no_input { "noInput" } else { "noMatch" }.to_owned()),
            );
            result.insert("attempt".into(), Value::from(state.attempt));
            let attempts = match &n.kind {
                Kind::Collect(c) => c.attempts,
                Kind::Menu(m) => m.attempts,
                _ => 1,
            };
            if state.attempt < attempts {
                entry.result = Some(result);
                state.trace.push(entry);
                if let Some(cmd) = step_limit(flow, &mut state) {
                    return (state, cmd);
                }
                state.attempt += 1;
                state.steps += 1;
                let entry = new_entry(flow, node, state.steps);
                let reprompt = match (&n.kind, no_input) {
                    (Kind::Collect(c), true) => c.no_input.as_ref(),
                    (Kind::Collect(c), false) => c.no_match.as_ref(),
                    (Kind::Menu(m), true) => m.no_input.as_ref(),
                    (Kind::Menu(m), false) => m.invalid.as_ref(),
                    _ => None,
                };
                let cmd = ask(flow, &mut state, node, entry, reprompt, now);
                return (state, cmd);
            }
            result.insert("attemptsExhausted".into(), Value::Bool(true));
            *failed
        }
    };
    entry.result = (!result.is_empty()).then_some(result);
    match target.and_then(|t| flow.nodes.get(t).map(|tn| (t, tn))) {
        Some((t, tn)) => {
            entry.next = Some(tn.key.clone());
            state.current = t;
            state.trace.push(entry);
            let cmd = advance(flow, &mut state, now);
            (state, cmd)
        }
        None => {
            state.trace.push(entry);
            let cmd = fail(
                &mut state,
                "no_matching_edge",
                format!("no edge out of node `{}` matched", n.id),
            );
            (state, cmd)
        }
    }
}

/// Ask for the input of the collect or menu node `node`.
fn ask(
    flow: &Flow,
    state: &mut RunState,
    node: usize,
    mut entry: TraceEntry,
    reprompt: Option<&Template>,
    now: UnixMillis,
) -> Command {
    let Some(n) = flow.nodes.get(node) else {
        return fail(state, "internal", "node index out of range".to_owned());
    };
    let (kind, sn, min, max, finish, timeout, secure, choices, attempts) = match &n.kind {
        Kind::Collect(c) => (
            PromptKind::Collect,
            &c.prompt,
            c.min_digits,
            c.max_digits,
            c.finish_on_key.clone(),
            c.timeout_seconds,
            c.secure || state.in_secure,
            Vec::new(),
            c.attempts,
        ),
        Kind::Menu(m) => (
            PromptKind::Menu,
            &m.prompt,
            1,
            1,
            String::new(),
            m.timeout_seconds,
            false,
            m.choices.clone(),
            m.attempts,
        ),
        _ => return fail(state, "internal", "not an input node".to_owned()),
    };
    let mut say = Vec::new();
    if let Some(t) = reprompt {
        say.push(spoken(state, flow, sn, t, &mut entry.errors));
    }
    say.push(spoken(state, flow, sn, &sn.text, &mut entry.errors));
    entry.message = Some(
        say.iter()
            .filter_map(|v| match v {
                Verb::Say { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
    );
    state.pending = Some(Pending::new(node, now, entry));
    Command::Prompt(Prompt {
        node_id: n.id.clone(),
        kind,
        say,
        min_digits: min,
        max_digits: max,
        finish_on_key: finish,
        timeout_seconds: timeout,
        secure,
        choices,
        attempt: state.attempt,
        attempts,
    })
}

/// A `Say` of `t` in the voice of `sn`. Secure values are masked, each with a note in
/// `notes` (the validator refuses flows that would speak one; this is the second line, for
/// values only the run finds secure).
fn spoken(
    state: &RunState,
    flow: &Flow,
    sn: &SayNode,
    t: &Template,
    notes: &mut Vec<String>,
) -> Verb {
    Verb::Say {
        text: state.render_shown(flow, t, notes),
        language: sn.language.clone(),
        voice: sn.voice.clone(),
    }
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
        transfer: None,
        hangup: false,
    }
}

#[allow(clippy::result_large_err)] // an Err ends the run; it is built once per run
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
        Next::Input { default, .. } => *default,
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

/// The id of the node the run is at, for messages.
fn current_id(flow: &Flow, state: &RunState) -> String {
    flow.nodes
        .get(state.current)
        .map(|n| n.id.clone())
        .unwrap_or_default()
}

/// The run's step budget is spent: it ends with `step_limit_exceeded`.
fn step_limit(flow: &Flow, state: &mut RunState) -> Option<Command> {
    if state.steps < state.max_steps {
        return None;
    }
    let at = current_id(flow, state);
    let over = match state.budget {
        StepBudget::PerRun => "",
        StepBudget::PerTurn => " in one turn",
    };
    let msg = format!(
        "the run executed {} steps{over} without reaching an end node (stopped at `{at}`); the flow probably loops",
        state.max_steps
    );
    Some(fail(state, "step_limit_exceeded", msg))
}

/// The run holds as many trace entries as it may: it ends with `trace_limit_exceeded`.
fn trace_limit(flow: &Flow, state: &mut RunState) -> Option<Command> {
    if state.trace.len() < state.max_trace_len() {
        return None;
    }
    let at = current_id(flow, state);
    let msg = format!(
        "the run recorded {} trace entries without reaching an end node (stopped at `{at}`)",
        state.max_trace
    );
    Some(fail(state, "trace_limit_exceeded", msg))
}

/// The request of the http node `h` to `url` (already rendered), and the texts of the
/// secure values it carries.
fn http_command(
    flow: &Flow,
    state: &RunState,
    h: &HttpNode,
    url: String,
) -> (HttpRequest, Vec<Secret<String>>) {
    let mut carries = false;
    let mut refs: Vec<VarPath> = h.url.refs().cloned().collect();
    let mut headers = Vec::with_capacity(h.headers.len() + 1);
    for (k, t) in &h.headers {
        t.refs(&mut refs);
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
            t.refs(&mut refs);
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
    let mut sent = Vec::new();
    for p in &refs {
        state.secure_texts(flow, p, &mut sent);
    }
    let request = HttpRequest {
        method: h.method.clone(),
        url,
        headers,
        body,
        timeout_ms: h.timeout_ms,
        carries_secret: carries,
    };
    (request, sent)
}

fn advance(flow: &Flow, state: &mut RunState, now: UnixMillis) -> Command {
    loop {
        if let Some(cmd) = step_limit(flow, state) {
            return cmd;
        }
        if let Some(cmd) = trace_limit(flow, state) {
            return cmd;
        }
        state.steps += 1;
        let i = state.current;
        let Some(node) = flow.nodes.get(i) else {
            return fail(state, "internal", "node index out of range".to_owned());
        };
        let mut entry = new_entry(flow, i, state.steps);
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
                    transfer: None,
                    hangup: false,
                });
            }
            Kind::Transfer {
                queue,
                target,
                reason,
            } => {
                state.trace.push(entry);
                state.finished = true;
                return Command::Finish(Outcome {
                    end_node: Some(node.id.clone()),
                    status_code: None,
                    error: None,
                    transfer: Some(TransferOutcome {
                        queue: queue.clone(),
                        target: target.clone(),
                        reason: reason.clone(),
                    }),
                    hangup: false,
                });
            }
            Kind::Hangup => {
                state.trace.push(entry);
                state.finished = true;
                return Command::Finish(Outcome {
                    end_node: Some(node.id.clone()),
                    status_code: None,
                    error: None,
                    transfer: None,
                    hangup: true,
                });
            }
            Kind::Say(sn) => {
                let verb = spoken(state, flow, sn, &sn.text, &mut entry.errors);
                if let Verb::Say { text, .. } = &verb {
                    entry.message = Some(text.clone());
                }
                state.verbs.push(verb);
            }
            Kind::Wait {
                seconds,
                hold_audio,
            } => {
                state.verbs.push(match hold_audio {
                    Some(url) => Verb::Play { url: url.clone() },
                    None => Verb::Pause { seconds: *seconds },
                });
            }
            Kind::SecureEnter => {
                if !state.in_secure {
                    state.in_secure = true;
                    state.verbs.push(Verb::RecordingPause);
                }
            }
            Kind::SecureExit => {
                if state.in_secure {
                    state.in_secure = false;
                    state.verbs.push(Verb::RecordingResume);
                }
            }
            Kind::Collect(_) | Kind::Menu(_) => {
                state.attempt = 1;
                return ask(flow, state, i, entry, None, now);
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
                let text = state.render_shown(flow, message, &mut entry.errors);
                entry.message = Some(text.clone());
                state.pending = Some(Pending::new(i, now, entry));
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
                state.pending = Some(Pending::new(i, now, entry));
                return Command::Action(ActionCall {
                    node_id: node.id.clone(),
                    action: a.spec.name,
                    inputs,
                    secrets,
                });
            }
            Kind::Http(h) => {
                let mut url_secure = false;
                let rendered = h.url.render_url(|p| {
                    let (v, secure) = state.get(flow, p);
                    url_secure |= secure;
                    let mut text = String::new();
                    push_text(&mut text, v);
                    text
                });
                let shown_url = match &rendered {
                    Ok(url) if !url_secure => url.clone(),
                    _ => state.render(flow, &h.url, true).0,
                };
                entry.request = Some(TraceRequest {
                    method: h.method.clone(),
                    url: shown_url,
                });
                let refusal = match rendered {
                    Ok(url) if !url_secure => Ok(url),
                    Ok(_) => Err(
                        "its url would carry a secure value; send it in the body or a header"
                            .to_owned(),
                    ),
                    Err(e) => Err(e.to_string()),
                };
                match refusal {
                    Ok(url) => {
                        let cmd = http_command(flow, state, h, url);
                        state.pending = Some(Pending {
                            sent_secrets: cmd.1,
                            ..Pending::new(i, now, entry)
                        });
                        return Command::Http(cmd.0);
                    }
                    // Not sent: the node fails as a request the host refused would, and
                    // the run follows its edges.
                    Err(why) => {
                        let failure = HttpResult::Failed(HttpFailure {
                            kind: HttpFailureKind::InvalidRequest,
                            message: format!("the request was not sent: {why}"),
                        });
                        record_http(state, i, h, &mut entry, failure, &[]);
                    }
                }
            }
        }
        if let Err(outcome) = follow(flow, state, i, &mut entry, results.as_deref()) {
            state.trace.push(entry);
            return Command::Finish(outcome);
        }
        state.trace.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reasking_flow() -> Flow {
        let doc = ivrauth_proto::flow::document_from_value(&json!({
            "name": "re-ask",
            "startNode": "start",
            "nodes": {
                "start": {"type": "start"},
                "ask": {"type": "collect", "properties": {"prompt": "Digit?", "variable": "d", "minDigits": 1, "maxDigits": 1, "attempts": 1}},
                "again": {"type": "say", "properties": {"text": "Again."}},
                "done": {"type": "end"},
            },
            "edges": [
                {"source": "start", "target": "ask"},
                {"source": "ask", "target": "done"},
                {"source": "ask", "target": "again", "condition": "failed"},
                {"source": "again", "target": "ask"},
            ],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        crate::flow::compile(&doc)
            .unwrap_or_else(|r| panic!("{:?}", r.errors))
            .0
    }

    /// Answers silence `n` times through a snapshot each turn; the code it ended with, if
    /// it did.
    fn silences(flow: &Flow, mut bytes: Vec<u8>, n: usize) -> Option<String> {
        for _ in 0..n {
            let run = RunState::restore(flow, &bytes).unwrap_or_else(|e| panic!("{e}"));
            match step(flow, run, Event::Input(Input::NoInput), UnixMillis(0)) {
                (_, Command::Finish(o)) => return o.error.map(|e| e.code),
                (run, _) => bytes = run.snapshot(),
            }
        }
        None
    }

    #[test]
    fn snapshots_without_a_recorded_budget_keep_the_per_turn_budget_of_calls() {
        let flow = reasking_flow();
        let mut ctx = RunContext::new("t");
        ctx.max_steps = 4;
        let (run, cmd) =
            start(&flow, &json!({}), ctx, UnixMillis(0)).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(cmd, Command::Prompt(_)));
        // As sealed now: the run's budget is spent after two silences.
        let now = run.snapshot();
        assert_eq!(
            silences(&flow, now.clone(), 10).as_deref(),
            Some("step_limit_exceeded")
        );
        // As sealed before the budget was recorded (a call): every turn starts afresh.
        let mut old: Value = serde_json::from_slice(&now).unwrap_or_else(|e| panic!("{e}"));
        for field in ["steps", "budget", "max_trace"] {
            assert!(old.as_object_mut().and_then(|o| o.remove(field)).is_some());
        }
        let old = serde_json::to_vec(&old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(silences(&flow, old, 10), None);
    }

    /// Issue 8, item 11: a PIN the caller keyed leaves the run once it has been verified,
    /// so no later snapshot (sealed into callback URLs and call rows) carries it; a PIN
    /// whose verification could not be performed stays, so the flow may retry.
    #[test]
    fn a_verified_pin_is_not_carried_into_later_snapshots() {
        let doc = ivrauth_proto::flow::document_from_value(&json!({
            "name": "pin",
            "startNode": "start",
            "nodes": {
                "start": {"type": "start"},
                "ask": {"type": "collect", "properties": {"prompt": "PIN?", "variable": "pin", "minDigits": 4, "maxDigits": 8, "secure": true}},
                "v": {"type": "action", "properties": {"action": "identity.verify", "inputs": {"account": "10001", "secret": "{{pin}}"}}},
                "menu": {"type": "collect", "properties": {"prompt": "Choice?", "variable": "choice", "minDigits": 1, "maxDigits": 1}},
                "done": {"type": "end"},
            },
            "edges": [
                {"source": "start", "target": "ask"},
                {"source": "ask", "target": "v"},
                {"source": "ask", "target": "done", "condition": "failed"},
                {"source": "v", "target": "menu"},
                {"source": "menu", "target": "done"},
                {"source": "menu", "target": "done", "condition": "failed"},
            ],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let flow = crate::flow::compile(&doc)
            .unwrap_or_else(|r| panic!("{:?}", r.errors))
            .0;
        const PIN: &str = "73051946";
        for (result, kept) in [
            (Ok(Map::new()), false),
            (
                Err(ActionFailure {
                    code: "busy".into(),
                    message: "busy".into(),
                }),
                true,
            ),
        ] {
            let (run, _) = start(&flow, &json!({}), RunContext::new("t"), UnixMillis(0))
                .unwrap_or_else(|e| panic!("{e:?}"));
            let keys = Input::Digits(Secret::new(PIN.to_owned()));
            let (run, cmd) = step(&flow, run, Event::Input(keys), UnixMillis(1));
            let Command::Action(call) = cmd else {
                panic!("expected the verification, got {cmd:?}");
            };
            assert_eq!(
                call.text("secret").map(|s| s.expose().clone()).as_deref(),
                Some(PIN)
            );
            let (run, cmd) = step(&flow, run, Event::ActionCompleted(result), UnixMillis(2));
            assert!(matches!(cmd, Command::Prompt(_)), "{cmd:?}");
            let bytes = String::from_utf8_lossy(&run.snapshot()).into_owned();
            assert_eq!(bytes.contains(PIN), kept, "{bytes}");
        }
    }
}
