//! Writing the audit: one constructor of records with a fresh id, and the append that
//! fails the request when the record cannot be written (nothing goes unrecorded).

use serde_json::Value;

use ivrauth_core::audit::{AuditEvent, EventName, Outcome};
use ivrauth_core::ports::StoreError;

use crate::AppState;

/// An audit event with a fresh id.
pub fn audit_event(
    event: EventName,
    outcome: Outcome,
    actor: &str,
    subject: &str,
    trace_id: Option<&str>,
    detail: Value,
) -> AuditEvent {
    AuditEvent::new(
        uuid::Uuid::new_v4().to_string(),
        event,
        outcome,
        actor,
        subject,
        trace_id.map(str::to_owned),
        detail,
    )
}

/// Append an audit record now; an audit failure fails the request.
pub async fn audit(
    state: &AppState,
    event: EventName,
    outcome: Outcome,
    actor: &str,
    subject: &str,
    trace_id: Option<&str>,
    detail: Value,
) -> Result<(), StoreError> {
    let ev = audit_event(event, outcome, actor, subject, trace_id, detail);
    state.store.append_audit(&ev, state.clock.now()).await?;
    Ok(())
}
