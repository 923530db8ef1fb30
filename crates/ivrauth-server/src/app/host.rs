//! The one engine host: [`EngineHost::perform`] performs a command of the engine (an
//! outbound HTTP request through `ivrauth-connect`, an action such as `identity.verify`, a
//! log line) and hands back the event to feed the engine. Simulations
//! ([`super::simulate`]) and call turns ([`super::turn`]) both drive the engine through it,
//! so a command or an action added here works in both.
//!
//! What differs between the two is data given when the host is made: which identity
//! service actions reach, the caller key they count under, whether log lines are also
//! audit records (simulations) or go to the log only (calls: an audit record per line
//! would make every turn durable), and the deadline an http request must finish by.
//!
//! Not here: answering prompts (a simulation answers them from its `digits`, a call waits
//! for the caller) or anything that could be decided without I/O (the core).

use std::sync::Arc;

use serde_json::json;

use ivrauth_core::audit::{AuditEvent, EventName, Outcome as AuditOutcome};
use ivrauth_core::engine::{ActionFailure, Command, Event};
use ivrauth_core::ivr::Prompt;
use ivrauth_proto::api::Outcome;

use super::audit::audit_event;
use super::identity::{CallContext, IdentityService};
use crate::AppState;

/// What became of a command.
#[derive(Debug)]
pub enum Performed {
    /// The command was performed: feed this event back to the engine.
    Done(Event),
    /// The engine waits for the caller's keys; the driver answers (or the turn ends).
    Prompt(Prompt),
    /// The run ended.
    Finish(Outcome),
}

/// Where the flow's `log` lines go.
enum LogSink<'a> {
    /// The log, and an audit record each (collected; the driver writes them).
    LogAndAudit {
        actor: &'a str,
        subject: &'a str,
        events: Vec<AuditEvent>,
    },
    /// The log only.
    Log,
}

/// Performs one run's commands. Cheap to make; one per simulation or call turn.
pub struct EngineHost<'a> {
    state: &'a AppState,
    identity: Option<&'a Arc<IdentityService>>,
    /// The run's id: a simulation's trace id, a call's key.
    run_id: String,
    /// The caller key identity actions count under.
    ani: String,
    /// Failed secrets so far in this call (identity actions update it).
    pub failures: u32,
    log: LogSink<'a>,
    /// Wall time (server clock, ms) an http request must finish by.
    deadline: Option<i64>,
}

impl<'a> EngineHost<'a> {
    /// The host of a simulation: actions reach `identity` (the simulation's), log lines are
    /// audited as `actor`'s on `subject`, http requests end by `deadline`.
    pub fn simulation(
        state: &'a AppState,
        identity: Option<&'a Arc<IdentityService>>,
        trace_id: &str,
        ani: String,
        actor: &'a str,
        subject: &'a str,
        deadline: i64,
    ) -> Self {
        EngineHost {
            state,
            identity,
            run_id: trace_id.to_owned(),
            ani,
            failures: 0,
            log: LogSink::LogAndAudit {
                actor,
                subject,
                events: Vec::new(),
            },
            deadline: Some(deadline),
        }
    }

    /// The host of a call turn: actions reach the configured identity service and count
    /// under the caller's number, starting from `failures`.
    pub fn call(state: &'a AppState, key: String, ani: String, failures: u32) -> Self {
        EngineHost {
            state,
            identity: state.identity.as_ref(),
            run_id: key,
            ani,
            failures,
            log: LogSink::Log,
            deadline: None,
        }
    }

    /// Perform `cmd`, or hand back what only the driver can do.
    pub async fn perform(&mut self, cmd: Command) -> Performed {
        let event = match cmd {
            Command::Prompt(prompt) => return Performed::Prompt(prompt),
            Command::Finish(outcome) => return Performed::Finish(outcome),
            Command::Http(mut request) => {
                if let Some(deadline) = self.deadline {
                    let left = deadline.saturating_sub(self.state.clock.now().0);
                    let left = u64::try_from(left).unwrap_or(0);
                    request.timeout_ms = request.timeout_ms.min(left.max(1));
                }
                Event::HttpCompleted(self.state.http.execute(&request).await)
            }
            Command::Action(call) => match self.identity {
                Some(service) => {
                    let ctx = CallContext {
                        call_id: self.run_id.clone(),
                        ani: self.ani.clone(),
                        failures: self.failures,
                    };
                    let (result, failures) = service.perform(call, ctx).await;
                    self.failures = failures;
                    Event::ActionCompleted(result)
                }
                None => Event::ActionCompleted(Err(ActionFailure {
                    code: "unavailable".to_owned(),
                    message: format!("action `{}` is not configured on this server", call.action),
                })),
            },
            Command::Log(line) => {
                match &mut self.log {
                    LogSink::LogAndAudit {
                        actor,
                        subject,
                        events,
                    } => {
                        tracing::info!(target: "ivrauth::flow_log", trace_id = %self.run_id, node = %line.node_id, level = %line.level, "{}", line.message);
                        events.push(audit_event(
                            EventName::FlowLog,
                            AuditOutcome::Success,
                            actor,
                            subject,
                            Some(&self.run_id),
                            json!({
                                "node": line.node_id,
                                "level": line.level,
                                "message": line.message,
                            }),
                        ));
                    }
                    LogSink::Log => {
                        tracing::info!(target: "ivrauth::flow_log", call = %self.run_id, node = %line.node_id, level = %line.level, "{}", line.message);
                    }
                }
                Event::LogWritten
            }
        };
        Performed::Done(event)
    }

    /// The audit records the run's log lines made, to be written with the run.
    pub fn take_audit(&mut self) -> Vec<AuditEvent> {
        match &mut self.log {
            LogSink::LogAndAudit { events, .. } => std::mem::take(events),
            LogSink::Log => Vec::new(),
        }
    }
}
