//! The decision API: for platforms that keep the dialogue themselves (Genesys Cloud data
//! actions, Amazon Connect), one flat JSON decision per turn. `POST
//! /api/v2/calls/{callId}/turns` answers a turn, `POST /api/v2/calls/{callId}/hangup`
//! closes the call. Requests carry a bearer token with scope `call:turn`; a call belongs
//! to the client that started it. The call's state is kept in its row in the store (there
//! is no callback URL to carry it).

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use ivrauth_core::call::CallKey;
use ivrauth_core::ivr::{CallEnd, Input, PromptKind, Verb};
use ivrauth_core::secret::Secret;
use ivrauth_proto::calls::{ApiHangupResponse, ApiTurnRequest, ApiTurnResponse, TurnAction};

use super::{note_refusal, too_long, Platform, TurnAnswer};
use crate::app::turn::{self, CallError, TurnRequest, TurnResponse};
use crate::http::auth::{CallTurn, Scoped};
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::AppState;

fn flat(r: &TurnResponse) -> ApiTurnResponse {
    let (verbs, prompt) = match &r.answer {
        TurnAnswer::Ask { verbs, prompt } => (verbs, Some(prompt)),
        TurnAnswer::End { verbs, .. } => (verbs, None),
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut recording = String::new();
    for v in verbs
        .iter()
        .chain(prompt.map(|p| p.say.iter()).into_iter().flatten())
    {
        match v {
            Verb::Say { text, .. } => texts.push(text),
            Verb::RecordingPause => recording = "pause".to_owned(),
            Verb::RecordingResume => recording = "resume".to_owned(),
            _ => {}
        }
    }
    let mut out = ApiTurnResponse {
        call_id: r.call_id.clone(),
        turn: r.next_turn,
        action: TurnAction::Collect,
        prompt: texts.join(" "),
        min_digits: 0,
        max_digits: 0,
        finish_on_key: String::new(),
        timeout_seconds: 0,
        secure: false,
        choices: String::new(),
        recording,
        queue: String::new(),
        target: String::new(),
        reason: String::new(),
        end_node: String::new(),
        status_code: 0,
        account: String::new(),
        verified: false,
        factors: String::new(),
        failure_reason: String::new(),
        attributes: Value::Null,
    };
    match &r.answer {
        TurnAnswer::Ask { prompt, .. } => {
            out.min_digits = prompt.min_digits;
            out.max_digits = prompt.max_digits;
            out.finish_on_key = prompt.finish_on_key.clone();
            out.timeout_seconds = prompt.timeout_seconds;
            out.secure = prompt.secure;
            if prompt.kind == PromptKind::Menu {
                out.choices = prompt.choices.join(",");
            }
        }
        TurnAnswer::End {
            end, attributes, ..
        } => {
            out.action = match end {
                CallEnd::End { .. } => TurnAction::Say,
                CallEnd::Transfer { .. } => TurnAction::Transfer,
                CallEnd::Hangup { .. } => TurnAction::Hangup,
            };
            match end {
                CallEnd::End {
                    end_node,
                    status_code,
                } => {
                    out.end_node = end_node.clone();
                    out.status_code = status_code.unwrap_or(0);
                }
                CallEnd::Transfer { node_id, .. } | CallEnd::Hangup { node_id } => {
                    out.end_node = node_id.clone();
                }
            }
            if let CallEnd::Transfer {
                queue,
                target,
                reason,
                ..
            } = end
            {
                out.queue = queue.clone().unwrap_or_default();
                out.target = target.clone().unwrap_or_default();
                out.reason = reason.clone().unwrap_or_default();
            }
            out.verified = attributes.verified;
            out.account = attributes.account.clone().unwrap_or_default();
            out.factors = attributes.factors.join(",");
            out.failure_reason = attributes.failure_reason.clone().unwrap_or_default();
            out.attributes = serde_json::to_value(attributes).unwrap_or(Value::Null);
        }
    }
    out
}

fn api_error(e: CallError) -> ApiError {
    match e {
        CallError::UnknownFlow => ApiError::NotFound("no such flow".to_owned()),
        CallError::StaleTurn => {
            ApiError::Conflict("that turn was already answered; send the latest `turn`".to_owned())
        }
        CallError::Expired => ApiError::Conflict("the call session has expired".to_owned()),
        CallError::BadSession => {
            ApiError::Conflict("there is no valid session for this call and turn".to_owned())
        }
        CallError::TurnRequired => ApiError::Conflict(
            "the call has a session: send the `turn` of the last answer".to_owned(),
        ),
        CallError::FlowNotCallable(m) => ApiError::BadRequest {
            code: "flow_not_callable".to_owned(),
            message: m,
            errors: Vec::new(),
        },
        CallError::Store(e) => ApiError::from(e),
        other => ApiError::Internal(other.to_string()),
    }
}

fn check_lengths(fields: &[(&str, &str)]) -> Result<(), ApiError> {
    match too_long(fields) {
        None => Ok(()),
        Some(message) => Err(ApiError::BadRequest {
            code: "too_long".to_owned(),
            message,
            errors: Vec::new(),
        }),
    }
}

/// The session key of a decision-API call: the client's id and the platform's call id.
fn owned_call(client: &str, call_id: &str) -> String {
    format!("{client}/{call_id}")
}

/// One turn of a call whose dialogue the platform keeps (Genesys Cloud data actions,
/// Amazon Connect): ivrauth says what to do next.
#[utoipa::path(post, path = "/api/v2/calls/{callId}/turns", tag = "calls", security(("bearer" = ["call:turn"])),
    params(("callId" = String, Path, max_length = 128, description = "The platform's call id (at most 128 characters)")),
    request_body = ApiTurnRequest,
    responses((status = 200, description = "What to do next", body = ApiTurnResponse),
              (status = 400, description = "`too_long` (a field over 128 characters), `flow_not_callable`, or a body that does not parse (`malformed_json`, `invalid_body`)", body = ivrauth_proto::api::ErrorBody),
              (status = 404, description = "`not_found`: no such flow", body = ivrauth_proto::api::ErrorBody),
              (status = 409, description = "`conflict`: a stale turn, an expired session, or a `turn` the call has no session for", body = ivrauth_proto::api::ErrorBody)))]
pub async fn api_turn(
    caller: Scoped<CallTurn>,
    State(state): State<AppState>,
    Path(call_id): Path<String>,
    ApiJson(body): ApiJson<ApiTurnRequest>,
) -> Result<Json<ApiTurnResponse>, ApiError> {
    check_lengths(&[
        ("callId", &call_id),
        ("flowId", &body.flow_id),
        ("ani", &body.ani),
        ("dnis", &body.dnis),
        ("input", body.input.as_deref().unwrap_or_default()),
    ])?;
    let input = match body.input.as_deref() {
        None | Some("") => Input::NoInput,
        Some(d) => Input::Digits(Secret::new(d.to_owned())),
    };
    let req = TurnRequest {
        platform: Platform::Api,
        flow_id: body.flow_id,
        // A call belongs to the client that started it.
        call_id: owned_call(caller.actor(), &call_id),
        ani: body.ani,
        dnis: body.dnis,
        turn: body.turn,
        token: None,
        input: Some(input),
        call_secret: None,
    };
    let r = match turn::turn(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(reason) = e.refusal_reason() {
                note_refusal(&state, Platform::Api, caller.actor(), reason);
            }
            return Err(api_error(e));
        }
    };
    let mut out = flat(&r);
    out.call_id = call_id;
    Ok(Json(out))
}

/// The caller hung up: close the session (a secret being asked for after a failure counts
/// as a failed attempt).
#[utoipa::path(post, path = "/api/v2/calls/{callId}/hangup", tag = "calls", security(("bearer" = ["call:turn"])),
    params(("callId" = String, Path, max_length = 128, description = "The platform's call id (at most 128 characters)")),
    responses((status = 200, description = "Closed (`closed` is false when there was no session)", body = ApiHangupResponse),
              (status = 400, description = "`too_long`: a call id over 128 characters", body = ivrauth_proto::api::ErrorBody)))]
pub async fn api_hangup(
    caller: Scoped<CallTurn>,
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Json<ApiHangupResponse>, ApiError> {
    check_lengths(&[("callId", &call_id)])?;
    let key = CallKey::new(Platform::Api, owned_call(caller.actor(), &call_id));
    let closed = turn::hangup(&state, &key).await.map_err(api_error)?;
    Ok(Json(ApiHangupResponse { closed }))
}
