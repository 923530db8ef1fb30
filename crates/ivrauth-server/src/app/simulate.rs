//! The host that drives the engine: it performs the engine's commands (outbound HTTP through
//! `ivrauth-connect`, log lines to the log and the audit chain) and feeds the results back,
//! until the run ends. The simulation endpoint and the CLI's simulator use it; the telephony
//! front-ends will drive the same engine turn by turn.
//!
//! A simulation answers the flow's prompts itself (from the request's `digits`, then with
//! no input), so nothing outside bounds it: [`SimulateConfig`] does. Its step budget covers
//! the whole run, and the number of prompts answered with no input, the trace entries and
//! the wall time (by the server's clock) are capped; a run that reaches a limit ends at once
//! with the limit named in `outcome.error.code`. The loop gives the runtime its turn on
//! every iteration, so a run cannot starve other requests.
//!
//! Not here: any flow rule. If a decision could be made without I/O, it belongs in the core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use ivrauth_core::audit::AuditEvent;
use ivrauth_core::engine::{self, Command, Event, RunContext, StepBudget};
use ivrauth_core::flow::{compile, Flow};
use ivrauth_core::ivr::Input;
use ivrauth_core::ports::{RunRecord, StoredFlow};
use ivrauth_proto::api::{Diagnostic, Outcome, SimulateResponse};

use crate::error::ApiError;
use crate::identity::CallContext;
use crate::AppState;

/// Compiled flows by (id, version). Versions are immutable, so entries never go stale.
#[derive(Default)]
pub struct FlowCache {
    inner: Mutex<HashMap<(String, i64), Arc<Flow>>>,
}

/// At most this many compiled flows are kept; beyond it the cache starts over.
const CACHE_LIMIT: usize = 1_000;

impl FlowCache {
    /// The compiled flow version, if it is cached.
    pub fn get(&self, id: &str, version: i64) -> Option<Arc<Flow>> {
        let map = self.inner.lock().ok()?;
        map.get(&(id.to_owned(), version)).cloned()
    }

    /// The compiled form of a stored flow version.
    pub fn get_or_compile(&self, stored: &StoredFlow) -> Result<Arc<Flow>, ApiError> {
        let key = (stored.id.clone(), stored.version);
        if let Ok(map) = self.inner.lock() {
            if let Some(f) = map.get(&key) {
                return Ok(f.clone());
            }
        }
        let flow = Arc::new(compile_text(&stored.document)?);
        if let Ok(mut map) = self.inner.lock() {
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
            map.insert(key, flow.clone());
        }
        Ok(flow)
    }
}

/// Compile a document that was valid when it was stored.
fn compile_text(text: &str) -> Result<Flow, ApiError> {
    let doc = ivrauth_proto::flow::parse_document(text)
        .map_err(|e| ApiError::Internal(format!("stored flow no longer parses: {e}")))?;
    compile(&doc).map(|(flow, _)| flow).map_err(|r| {
        ApiError::Internal(format!(
            "stored flow no longer validates: {} errors",
            r.errors.len()
        ))
    })
}

/// Bounds of one simulation run (`[simulate]` in the config file). A run that reaches one
/// ends at once with HTTP 200 and the limit named in `outcome.error.code`; its trace holds
/// what ran until then.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateConfig {
    /// Nodes the whole run may execute (`step_limit_exceeded`); input does not reset it.
    pub max_steps: u32,
    /// Prompts answered with no input, past the request's `digits` or with an empty entry
    /// (`no_input_limit_exceeded`).
    pub max_no_input: u32,
    /// Trace entries the run may hold (`trace_limit_exceeded`).
    pub max_trace_entries: u32,
    /// Wall time of the run by the server's clock (`time_limit_exceeded`); an http node's
    /// timeout is shortened to the time left.
    pub max_duration_ms: u64,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            max_steps: engine::DEFAULT_MAX_STEPS,
            max_no_input: 20,
            max_trace_entries: engine::DEFAULT_MAX_TRACE_ENTRIES,
            max_duration_ms: 10_000,
        }
    }
}

/// What to run and for whom.
pub struct RunRequest<'a> {
    pub flow: &'a Flow,
    pub flow_id: Option<String>,
    pub version: Option<i64>,
    pub input: &'a Value,
    pub contact: Map<String, Value>,
    pub environment: String,
    /// The API client that asked (the audit's actor).
    pub actor: &'a str,
    /// Keys for the flow's prompts, in order; `""` is a silent turn, and prompts beyond the
    /// list time out.
    pub digits: Vec<ivrauth_core::secret::Secret<String>>,
}

/// Run a flow to its end, performing its commands, and return the masked trace.
pub async fn simulate(state: &AppState, req: RunRequest<'_>) -> Result<SimulateResponse, ApiError> {
    let limits = &state.config.simulate;
    let trace_id = uuid::Uuid::new_v4().to_string();
    let mut ctx = RunContext::new(trace_id.clone());
    ctx.flow_id = req.flow_id.clone();
    ctx.max_steps = limits.max_steps;
    ctx.budget = StepBudget::PerRun;
    ctx.max_trace_entries = limits.max_trace_entries;
    // Identity actions count a simulation's attempts as one caller's: the client's. Whatever
    // `contact.ani` says, a client cannot buy fresh per-caller-number limits with it.
    let ani = format!("client:{}", req.actor);
    let mut call_failures = 0u32;
    ctx.contact = req.contact;
    let subject = req.flow_id.clone().unwrap_or_else(|| "(inline)".to_owned());

    let mut now = state.clock.now();
    let (mut run, mut cmd) = match engine::start(req.flow, req.input, ctx, now) {
        Ok(x) => x,
        Err(problems) => {
            audit(state, "simulation.rejected", "failure", req.actor, &subject, Some(&trace_id), json!({
                "reason": "invalid_input",
                "problems": problems.iter().map(|p| json!({"path": p.path, "keyword": p.code})).collect::<Vec<_>>(),
            }))
            .await?;
            return Err(invalid_input(problems));
        }
    };
    let started_at = now;
    let deadline = started_at
        .0
        .saturating_add(i64::try_from(limits.max_duration_ms).unwrap_or(i64::MAX));
    let mut no_inputs = 0u32;
    let mut digits = req.digits.into_iter();
    // The run's audit records are collected and written with the run in one commit before
    // the response goes out: durable before anyone is told, one disk flush per simulation.
    let mut events: Vec<AuditEvent> = Vec::new();
    let outcome: Outcome = loop {
        let event = match cmd {
            Command::Finish(outcome) => break outcome,
            Command::Prompt(prompt) => {
                run.take_verbs();
                match digits.next() {
                    Some(d) if !d.expose().is_empty() => Event::Input(Input::Digits(d)),
                    _ if no_inputs >= limits.max_no_input => {
                        let message = format!(
                            "{no_inputs} prompts were answered with no input (stopped at `{}`); give the run's `digits`, or raise [simulate] max_no_input",
                            prompt.node_id
                        );
                        break run.abort("no_input_limit_exceeded", message, now);
                    }
                    _ => {
                        no_inputs += 1;
                        Event::Input(Input::NoInput)
                    }
                }
            }
            Command::Http(mut request) => {
                let left = u64::try_from(deadline.saturating_sub(now.0)).unwrap_or(0);
                request.timeout_ms = request.timeout_ms.min(left.max(1));
                Event::HttpCompleted(state.http.execute(&request).await)
            }
            Command::Action(call) => match state.simulation_identity() {
                Some(service) => {
                    let ctx = CallContext {
                        call_id: trace_id.clone(),
                        ani: ani.clone(),
                        failures: call_failures,
                    };
                    let (result, failures) = service.perform(call, ctx).await;
                    call_failures = failures;
                    Event::ActionCompleted(result)
                }
                None => Event::ActionCompleted(Err(ivrauth_core::engine::ActionFailure {
                    code: "unavailable".to_owned(),
                    message: format!("action `{}` is not configured on this server", call.action),
                })),
            },
            Command::Log(line) => {
                tracing::info!(target: "ivrauth::flow_log", trace_id = %trace_id, node = %line.node_id, level = %line.level, "{}", line.message);
                events.push(audit_event(
                    "flow.log",
                    "success",
                    req.actor,
                    &subject,
                    Some(&trace_id),
                    json!({
                        "node": line.node_id,
                        "level": line.level,
                        "message": line.message,
                    }),
                ));
                Event::LogWritten
            }
        };
        // A run of pure nodes and answered prompts never waits: let other tasks run.
        tokio::task::coop::consume_budget().await;
        now = state.clock.now();
        if now.0 >= deadline {
            let message = format!(
                "the run took {} ms or more; raise [simulate] max_duration_secs if the flow's requests are slow",
                limits.max_duration_ms
            );
            break run.abort("time_limit_exceeded", message, now);
        }
        (run, cmd) = engine::step(req.flow, run, event, now);
    };

    let summary = json!({
        "endNode": outcome.end_node,
        "statusCode": outcome.status_code,
        "error": outcome.error.as_ref().map(|e| e.code.clone()),
        "steps": run.trace().len(),
    });
    let mut detail = summary.clone();
    if let Value::Object(o) = &mut detail {
        o.insert("version".into(), json!(req.version));
        o.insert("environment".into(), json!(req.environment));
    }
    let result = if outcome.error.is_some() {
        "failure"
    } else {
        "success"
    };
    events.push(audit_event(
        "simulation.run",
        result,
        req.actor,
        &subject,
        Some(&trace_id),
        detail,
    ));
    let finished_at = state.clock.now();
    let record = RunRecord {
        id: trace_id.clone(),
        flow_id: req.flow_id.clone(),
        flow_version: req.version,
        kind: "simulation".to_owned(),
        started_at,
        finished_at: Some(finished_at),
        outcome: Some(summary),
    };
    state
        .store
        .record_run(&record, &events, finished_at)
        .await?;

    Ok(SimulateResponse {
        flow_id: req.flow_id,
        version: req.version,
        trace_id,
        environment: req.environment,
        outcome,
        trace: run.into_trace(),
    })
}

fn invalid_input(problems: Vec<Diagnostic>) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_input".to_owned(),
        message: format!(
            "the input does not match the flow's inputSchema ({} problem(s))",
            problems.len()
        ),
        errors: problems,
    }
}

/// An audit event with a fresh id.
fn audit_event(
    event: &str,
    outcome: &str,
    actor: &str,
    subject: &str,
    trace_id: Option<&str>,
    detail: Value,
) -> AuditEvent {
    AuditEvent {
        id: uuid::Uuid::new_v4().to_string(),
        event: event.to_owned(),
        outcome: outcome.to_owned(),
        actor: actor.to_owned(),
        subject: subject.to_owned(),
        trace_id: trace_id.map(str::to_owned),
        detail,
    }
}

/// Append an audit record now; an audit failure fails the request (nothing goes unrecorded).
pub async fn audit(
    state: &AppState,
    event: &str,
    outcome: &str,
    actor: &str,
    subject: &str,
    trace_id: Option<&str>,
    detail: Value,
) -> Result<(), ApiError> {
    let ev = audit_event(event, outcome, actor, subject, trace_id, detail);
    state.store.append_audit(&ev, state.clock.now()).await?;
    Ok(())
}
