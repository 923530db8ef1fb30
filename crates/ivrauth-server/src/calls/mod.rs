//! Calls: the telephony front-ends. Each platform is one file holding its webhook
//! handlers, request parsing, request authentication, settings and renderer:
//! [`twilio`] (TwiML), [`jambonz`] (jambonz verbs), [`vxml`] (VoiceXML 2.1) and
//! [`decision_api`] (a flat JSON decision per turn). They parse the platform's request,
//! run the turn through the application service (`crate::app::turn`) and render its
//! platform-neutral [`TurnAnswer`].
//!
//! Shared here: the routes, the query every callback URL carries, callback URLs, refusal
//! counting, the mapping of a failed turn to the platform's answer (through
//! [`ApiError::Platform`]), the signature error of the signing platforms, and rendering
//! helpers two platforms share.

pub mod decision_api;
pub mod jambonz;
pub mod twilio;
pub mod vxml;
mod xml;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use ivrauth_core::audit::EventName;
use ivrauth_core::call::CallKey;
use ivrauth_core::ivr::{CallEnd, Prompt, PromptKind, Verb};

pub use ivrauth_core::call::{Platform, TransferAttributes, TurnAnswer};

use crate::app::turn::{self, CallError, TurnResponse};
use crate::http::error::{ApiError, PlatformBody};
use crate::AppState;

/// Where the platform sends the caller's next answer. Absolute URLs that already carry the
/// call id, the next turn number and the sealed session; renderers only escape them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextTurn {
    /// Where keys go (TwiML `Gather action`, jambonz `actionHook`, VoiceXML `submit next`).
    pub action: String,
    /// Where a silent turn goes (TwiML `<Redirect>` after the Gather, VoiceXML `noinput`).
    pub no_input: String,
    /// VoiceXML only: where the `nomatch` and hang-up catches submit.
    pub no_match: String,
    pub hangup: String,
}

/// Settings of the telephony platforms.
#[derive(Default)]
pub struct PlatformConfig {
    /// The URL platforms reach this server at (`https://ivr.example.com`), used to build
    /// callback URLs and, for Twilio, the URL that was signed. Rebuilt from the request's
    /// `Host` header when absent.
    pub public_url: Option<String>,
    pub twilio: twilio::TwilioConfig,
    pub jambonz: jambonz::JambonzConfig,
    pub voicexml: vxml::VoiceXmlConfig,
}

/// Every platform's routes, each with its OpenAPI operation:
///
/// - `POST /voice/twilio/{flowId}` and `/voice/twilio/{flowId}/status` (TwiML)
/// - `POST /voice/jambonz/{flowId}` and `/voice/jambonz/{flowId}/status` (jambonz verbs)
/// - `GET|POST /voice/vxml/{flowId}` (VoiceXML 2.1)
/// - `POST /api/v2/calls/{callId}/turns` and `/api/v2/calls/{callId}/hangup` (decision API)
///
/// A later turn comes back to the same path, with the [`TurnQuery`] parameters.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(twilio::webhook))
        .routes(routes!(twilio::status))
        .routes(routes!(jambonz::webhook))
        .routes(routes!(jambonz::status))
        .routes(routes!(vxml::webhook, vxml::webhook_get))
        .routes(routes!(decision_api::api_turn))
        .routes(routes!(decision_api::api_hangup))
}

/// The form Twilio posts to a voice webhook (the fields ivrauth reads; Twilio sends more,
/// all of them signed). For the OpenAPI document: the handler reads the form itself.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = TwilioVoiceRequest, rename_all = "PascalCase")]
struct TwilioVoiceForm {
    /// The call; 400 when absent or empty.
    #[schema(min_length = 1, max_length = 128)]
    call_sid: String,
    #[schema(max_length = 128)]
    from: Option<String>,
    #[schema(max_length = 128)]
    to: Option<String>,
    /// The keys the caller pressed (a `<Gather>`'s action).
    #[schema(max_length = 128)]
    digits: Option<String>,
    /// Checked against `[twilio] account_sids` when that is set.
    account_sid: Option<String>,
}

/// The form of Twilio's status callback (the fields ivrauth reads).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = TwilioStatusCallback, rename_all = "PascalCase")]
struct TwilioStatusForm {
    /// The call; 400 when absent.
    call_sid: String,
    /// `completed`, `busy`, `failed`, `no-answer` or `canceled` close the call's session;
    /// anything else is acknowledged (204) and changes nothing.
    call_status: Option<String>,
    account_sid: Option<String>,
}

/// The JSON jambonz posts to a call webhook or an `actionHook` (the fields ivrauth reads).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct JambonzWebhook {
    /// The call; 400 when absent or empty.
    #[schema(min_length = 1, max_length = 128)]
    call_sid: String,
    #[schema(max_length = 128)]
    from: Option<String>,
    #[schema(max_length = 128)]
    to: Option<String>,
    /// A gather's keys.
    #[schema(max_length = 128)]
    digits: Option<String>,
}

/// The JSON of jambonz's call status hook (the fields ivrauth reads).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct JambonzCallStatus {
    /// The call; 400 when absent.
    call_sid: String,
    /// `completed`, `failed`, `busy` or `no-answer` close the call's session; anything
    /// else is acknowledged (204) and changes nothing.
    call_status: Option<String>,
}

/// The form a VoiceXML platform submits (start request: `ani`, `dnis`; a `<field>`'s
/// `<filled>`: `digits`). Every field is optional.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
struct VoiceXmlSubmit {
    #[schema(max_length = 128)]
    ani: Option<String>,
    #[schema(max_length = 128)]
    dnis: Option<String>,
    #[schema(max_length = 128)]
    digits: Option<String>,
    /// The caller's URI, when `ani` is absent.
    #[schema(rename = "session.connection.remote.uri")]
    remote_uri: Option<String>,
}

/// Query parameters ivrauth puts on every callback URL (absent on a call's first request).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TurnQuery {
    /// The turn number.
    #[serde(default)]
    t: Option<u32>,
    /// The sealed session.
    #[serde(default)]
    s: Option<String>,
    /// `none` (a silent turn), `nomatch`, `hangup`.
    #[serde(default)]
    ev: Option<String>,
    /// VoiceXML: the call id ivrauth minted.
    #[serde(default)]
    c: Option<String>,
    /// VoiceXML: the call's secret.
    #[serde(default)]
    k: Option<String>,
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.calls.platforms.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    if let Some(u) = &state.config.public_base_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // Behind a TLS-terminating proxy; set `[calls] public_url` to not depend on it.
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded
/// (safe in a path segment and a query value).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// The callback URLs of the next turn.
fn next_urls(base: &str, path: &str, r: &TurnResponse, vxml: bool) -> NextTurn {
    let mut q = format!("t={}", r.next_turn);
    if let Some(tok) = &r.token {
        q.push_str("&s=");
        q.push_str(tok);
    }
    if vxml {
        q.push_str("&c=");
        q.push_str(&enc(&r.call_id));
        if let Some(k) = &r.call_secret {
            q.push_str("&k=");
            q.push_str(&enc(k.expose()));
        }
    }
    let url = format!("{base}{path}?{q}");
    NextTurn {
        action: url.clone(),
        no_input: format!("{url}&ev=none"),
        no_match: format!("{url}&ev=nomatch"),
        hangup: format!("{url}&ev=hangup"),
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// What a caller hears when the turn cannot be answered.
const APOLOGY: &str = "Sorry, we cannot continue this call. Goodbye.";

fn apology_answer() -> TurnAnswer {
    TurnAnswer::End {
        verbs: vec![Verb::Say {
            text: APOLOGY.to_owned(),
            language: None,
            voice: None,
        }],
        end: CallEnd::Hangup {
            node_id: String::new(),
        },
        attributes: Default::default(),
    }
}

/// Count a refused platform request for the audit: one `call.refused` record per
/// platform, actor (client id, source address or platform) and reason per interval, not a
/// durable write each (see `crate::app::refusals`).
fn note_refusal(state: &AppState, platform: Platform, actor: &str, reason: &str) {
    state.refusals.note(
        EventName::CallRefused,
        actor,
        platform.as_str(),
        json!({"platform": platform.as_str(), "reason": reason}),
        state.clock.now(),
    );
}

/// A turn that failed, as the platform is answered: logged, a refusal counted for the
/// audit, 404 for an unknown flow and otherwise 200 with `apology` (the platform plays it
/// and hangs up).
fn turn_failed(
    state: &AppState,
    platform: Platform,
    e: &CallError,
    apology: PlatformBody,
) -> ApiError {
    if let Some(reason) = e.refusal_reason() {
        note_refusal(state, platform, platform.as_str(), reason);
    }
    let status = match e {
        CallError::UnknownFlow => StatusCode::NOT_FOUND,
        CallError::BadSession
        | CallError::Expired
        | CallError::StaleTurn
        | CallError::TurnRequired => {
            tracing::warn!(error = %e, "call turn refused");
            StatusCode::OK
        }
        other => {
            tracing::error!(error = %other, "call turn failed");
            StatusCode::OK
        }
    };
    ApiError::platform(status, apology)
}

/// A status callback says the call is over: close its session (204; 500 when it cannot be
/// closed, so the platform retries).
async fn call_over(state: &AppState, key: &CallKey) -> Result<Response, ApiError> {
    if let Err(e) = turn::hangup(state, key).await {
        tracing::error!(error = %e, "cannot close a call session");
        return Err(ApiError::platform_status(StatusCode::INTERNAL_SERVER_ERROR));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Longest call id, flow id, caller number or key entry accepted (they travel sealed in
/// URLs, which must stay short).
pub const MAX_FIELD_LEN: usize = 128;

fn too_long(fields: &[(&str, &str)]) -> Option<String> {
    fields
        .iter()
        .find(|(_, v)| v.len() > MAX_FIELD_LEN)
        .map(|(name, _)| format!("`{name}` is longer than {MAX_FIELD_LEN} characters"))
}

/// Why a signed platform request (Twilio, jambonz) was refused. For logs only: the HTTP
/// answer is a bare 403 whatever the reason. Never carries the header, the body or a
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing or empty")]
    Missing,
    #[error("signature header malformed")]
    Malformed,
    #[error("signature timestamp outside the allowed window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// Longest signature header looked at; anything longer is malformed.
const MAX_SIGNATURE_HEADER_LEN: usize = 4096;

/// The finish key to give the platform. A menu ends on its one key anyway; a finish key that
/// is also one of its choices would swallow that choice, so it is dropped (empty: none).
fn finish_key(prompt: &Prompt) -> &str {
    if prompt.kind == PromptKind::Menu && prompt.choices.contains(&prompt.finish_on_key) {
        ""
    } else {
        &prompt.finish_on_key
    }
}

/// Whether a transfer target is a SIP URI (`sip:` or `sips:`, any case) rather than a number.
fn is_sip_uri(target: &str) -> bool {
    let lower = target.trim_start().to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

/// The verification as SIP headers for a dialled transfer: `X-Ivrauth-Verified` always,
/// `X-Ivrauth-Factors` (comma-separated) when any succeeded, then `X-Ivrauth-Failure-Reason`,
/// `X-Ivrauth-Account` and `X-Ivrauth-Reason` when set. Control characters are dropped so a
/// value cannot split a header. The call id stays out: only what the agent needs travels.
fn transfer_headers(attributes: &TransferAttributes) -> Vec<(&'static str, String)> {
    fn clean(s: &str) -> String {
        s.chars().filter(|c| !c.is_control()).collect()
    }
    let mut headers = vec![("X-Ivrauth-Verified", attributes.verified.to_string())];
    if !attributes.factors.is_empty() {
        headers.push(("X-Ivrauth-Factors", clean(&attributes.factors.join(","))));
    }
    let optional = [
        ("X-Ivrauth-Failure-Reason", &attributes.failure_reason),
        ("X-Ivrauth-Account", &attributes.account),
        ("X-Ivrauth-Reason", &attributes.reason),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            headers.push((name, clean(value)));
        }
    }
    headers
}
