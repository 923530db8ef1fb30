//! Simulations: a flow run start to finish inside one request, its prompts answered from
//! the request's `digits` (then with no input), its other commands performed by the
//! engine host ([`super::host`]), the same host call turns use.
//!
//! Nothing outside bounds a simulation, so [`SimulateConfig`] does. Its step budget covers
//! the whole run, and the number of prompts answered with no input, the trace entries and
//! the wall time (by the server's clock) are capped; a run that reaches a limit ends at once
//! with the limit named in `outcome.error.code`. The loop gives the runtime its turn on
//! every iteration, so a run cannot starve other requests.
//!
//! Not here: any flow rule. If a decision could be made without I/O, it belongs in the core.

use serde_json::{json, Map, Value};

use ivrauth_core::audit::{EventName, Outcome as AuditOutcome};
use ivrauth_core::engine::{self, Event, RunContext, StepBudget};
use ivrauth_core::flow::Flow;
use ivrauth_core::ivr::Input;
use ivrauth_core::ports::{RunRecord, StoreError};
use ivrauth_proto::api::{Diagnostic, Outcome, SimulateResponse};

use super::audit::{audit, audit_event};
use super::host::{EngineHost, Performed};
use crate::AppState;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The input does not match the flow's `inputSchema` (audited as
    /// `simulation.rejected`).
    #[error("the input does not match the flow's inputSchema ({} problem(s))", .0.len())]
    InvalidInput(Vec<Diagnostic>),
    #[error(transparent)]
    Store(#[from] StoreError),
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
pub async fn simulate(
    state: &AppState,
    req: RunRequest<'_>,
) -> Result<SimulateResponse, SimulateError> {
    let limits = &state.config.simulate;
    let trace_id = uuid::Uuid::new_v4().to_string();
    let mut ctx = RunContext::new(trace_id.clone());
    ctx.flow_id = req.flow_id.clone();
    ctx.max_steps = limits.max_steps;
    ctx.budget = StepBudget::PerRun;
    ctx.max_trace_entries = limits.max_trace_entries;
    ctx.contact = req.contact;
    let subject = req.flow_id.clone().unwrap_or_else(|| "(inline)".to_owned());

    let mut now = state.clock.now();
    let (mut run, mut cmd) = match engine::start(req.flow, req.input, ctx, now) {
        Ok(x) => x,
        Err(problems) => {
            audit(state, EventName::SimulationRejected, AuditOutcome::Failure, req.actor, &subject, Some(&trace_id), json!({
                "reason": "invalid_input",
                "problems": problems.iter().map(|p| json!({"path": p.path, "keyword": p.code})).collect::<Vec<_>>(),
            }))
            .await?;
            return Err(SimulateError::InvalidInput(problems));
        }
    };
    let started_at = now;
    let deadline = started_at
        .0
        .saturating_add(i64::try_from(limits.max_duration_ms).unwrap_or(i64::MAX));
    // Identity actions count a simulation's attempts as one caller's: the client's. Whatever
    // `contact.ani` says, a client cannot buy fresh per-caller-number limits with it.
    let mut host = EngineHost::simulation(
        state,
        state.simulation_identity(),
        &trace_id,
        format!("client:{}", req.actor),
        req.actor,
        &subject,
        deadline,
    );
    let mut no_inputs = 0u32;
    let mut digits = req.digits.into_iter();
    let outcome: Outcome = loop {
        let event = match host.perform(cmd).await {
            Performed::Done(event) => event,
            Performed::Finish(outcome) => break outcome,
            Performed::Prompt(prompt) => {
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
    // The run's audit records are written with the run in one commit before the response
    // goes out: durable before anyone is told, one disk flush per simulation.
    let mut events = host.take_audit();

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
        AuditOutcome::Failure
    } else {
        AuditOutcome::Success
    };
    events.push(audit_event(
        EventName::SimulationRun,
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
