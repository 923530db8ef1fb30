//! The telephony front-ends' HTTP endpoints: parse the platform's request, authenticate it,
//! run the turn ([`session::turn`]), render the answer in the platform's language.
//!
//! - `POST /voice/twilio/{flowId}` and `/voice/twilio/{flowId}/status` (TwiML)
//! - `POST /voice/jambonz/{flowId}` and `/voice/jambonz/{flowId}/status` (jambonz verbs)
//! - `GET|POST /voice/vxml/{flowId}` (VoiceXML 2.1)
//! - `POST /api/v2/calls/{callId}/turns` and `/api/v2/calls/{callId}/hangup` (decision API)

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use ivrauth_core::ivr::{CallEnd, Input, PromptKind, Verb};
use ivrauth_core::secret::Secret;

use super::access::{self, Cidr};
use super::session::{self, CallError, Platform, TurnRequest, TurnResponse};
use super::{jambonz, signature, twiml, vxml, NextTurn, TurnAnswer};
use crate::auth::{CallTurn, Scoped};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::AppState;

/// Settings of the telephony platforms.
#[derive(Default)]
pub struct PlatformConfig {
    /// The URL platforms reach this server at (`https://ivr.example.com`), used to build
    /// callback URLs and, for Twilio, the URL that was signed. Rebuilt from the request's
    /// `Host` header when absent.
    pub public_url: Option<String>,
    pub twilio: TwilioConfig,
    pub jambonz: JambonzConfig,
    pub voicexml: VoiceXmlConfig,
}

#[derive(Default)]
pub struct TwilioConfig {
    /// Auth tokens that may sign requests: the current one, and the previous one during a
    /// rotation.
    pub auth_tokens: Vec<Secret<String>>,
    /// Off only for development (`serve` warns at start-up).
    pub skip_signature_check: bool,
    /// If not empty, only these `AccountSid`s are served.
    pub account_sids: Vec<String>,
    /// TaskRouter workflow for `<Enqueue>` with `<Task>` attributes.
    pub workflow_sid: Option<String>,
    /// Twilio's REST API, to pause call recording in secure segments.
    pub rest: Option<TwilioRest>,
}

pub struct TwilioRest {
    /// `https://api.twilio.com` (a local stand-in in tests).
    pub base_url: String,
    /// Basic-auth user: the Account SID or an API key SID.
    pub username: String,
    pub password: Secret<String>,
}

#[derive(Default)]
pub struct JambonzConfig {
    /// Webhook secrets: the current one, and the previous one during a rotation.
    pub secrets: Vec<Secret<String>>,
    pub skip_signature_check: bool,
}

/// Who may reach the VoiceXML front-end (see [`access`]). With neither Basic credentials
/// nor an allow-list, every VoiceXML request is refused (403). With both, a start request
/// must pass both.
#[derive(Default)]
pub struct VoiceXmlConfig {
    /// The HTTP Basic user name a start request must present (with one of
    /// `basic_passwords`).
    pub basic_username: Option<String>,
    /// The current password, and the previous one during a rotation.
    pub basic_passwords: Vec<Secret<String>>,
    /// Source addresses every VoiceXML request (start and later URLs) must come from;
    /// empty: any.
    pub allowed_sources: Vec<Cidr>,
    /// Proxies whose `X-Forwarded-For` is believed; empty: the header is ignored.
    pub trusted_proxies: Vec<Cidr>,
}

impl VoiceXmlConfig {
    /// Whether Basic credentials are required (and can be met) on start requests.
    fn basic(&self) -> Option<&str> {
        self.basic_username
            .as_deref()
            .filter(|_| !self.basic_passwords.is_empty())
    }

    /// Whether any credential is configured, so that requests can be accepted at all.
    pub fn accepts_requests(&self) -> bool {
        self.basic().is_some() || !self.allowed_sources.is_empty()
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/voice/twilio/{flow_id}", post(twilio_turn))
        .route("/voice/twilio/{flow_id}/status", post(twilio_status))
        .route("/voice/jambonz/{flow_id}", post(jambonz_turn))
        .route("/voice/jambonz/{flow_id}/status", post(jambonz_status))
        .route("/voice/vxml/{flow_id}", post(vxml_turn).get(vxml_turn_get))
        .route("/api/v2/calls/{call_id}/turns", post(api_turn))
        .route("/api/v2/calls/{call_id}/hangup", post(api_hangup))
}

/// Query parameters ivrauth puts on every callback URL.
#[derive(Debug, Default, Deserialize)]
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
    /// VoiceXML: the call id ivrauth minted, and its secret.
    #[serde(default)]
    c: Option<String>,
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

fn apology_answer() -> TurnAnswer {
    TurnAnswer::End {
        verbs: vec![Verb::Say {
            text: "Sorry, we cannot continue this call. Goodbye.".to_owned(),
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
/// durable write each (see `crate::refusals`).
fn note_refusal(state: &AppState, platform: Platform, actor: &str, reason: &str) {
    state.refusals.note(
        "call.refused",
        actor,
        platform.as_str(),
        json!({"platform": platform.as_str(), "reason": reason}),
        state.clock.now(),
    );
}

/// The refusal reason of a turn that is refused rather than failed.
fn refusal_reason(e: &CallError) -> Option<&'static str> {
    match e {
        CallError::BadSession => Some("bad_session"),
        CallError::Expired => Some("expired"),
        CallError::StaleTurn => Some("stale_turn"),
        CallError::TurnRequired => Some("turn_required"),
        _ => None,
    }
}

/// Log why a turn failed, count a refusal for the audit, and say what status the platform
/// gets.
fn failure_status(state: &AppState, platform: Platform, e: &CallError) -> StatusCode {
    if let Some(reason) = refusal_reason(e) {
        note_refusal(state, platform, platform.as_str(), reason);
    }
    match e {
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
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------- Twilio

/// Twilio's request validation: the signed URL is the public URL of this request.
fn twilio_authentic(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    params: &[(String, String)],
) -> bool {
    let cfg = &state.calls.platforms.twilio;
    if !cfg.account_sids.is_empty() {
        match field(params, "AccountSid") {
            Some(sid) if cfg.account_sids.iter().any(|a| a == sid) => {}
            _ => return false,
        }
    }
    if cfg.skip_signature_check {
        return true;
    }
    let Some(sig) = headers
        .get("x-twilio-signature")
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_and_query}", base_url(state, headers));
    let tokens: Vec<&[u8]> = cfg
        .auth_tokens
        .iter()
        .map(|t| t.expose().as_bytes())
        .collect();
    signature::twilio_verify(&tokens, &url, params, sig)
}

async fn twilio_turn(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<TurnQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if !twilio_authentic(&state, &headers, &uri, &params) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let call_sid = field(&params, "CallSid").unwrap_or_default().to_owned();
    if call_sid.is_empty()
        || too_long(&[
            ("CallSid", &call_sid),
            ("From", field(&params, "From").unwrap_or_default()),
            ("To", field(&params, "To").unwrap_or_default()),
            ("Digits", field(&params, "Digits").unwrap_or_default()),
        ])
        .is_some()
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let input = match (q.ev.as_deref(), field(&params, "Digits")) {
        (Some("none"), _) | (_, None) => Input::NoInput,
        (_, Some(d)) => Input::Digits(Secret::new(d.to_owned())),
    };
    let req = TurnRequest {
        platform: Platform::Twilio,
        flow_id: flow_id.clone(),
        call_id: call_sid.clone(),
        ani: field(&params, "From").unwrap_or_default().to_owned(),
        dnis: field(&params, "To").unwrap_or_default().to_owned(),
        turn: q.t,
        token: q.s,
        input: q.t.map(|_| input),
        call_secret: None,
    };
    let base = base_url(&state, &headers);
    let path = format!("/voice/twilio/{}", enc(&flow_id));
    let opts = twiml::TwimlOptions {
        workflow_sid: state.calls.platforms.twilio.workflow_sid.clone(),
    };
    match session::turn(&state, req).await {
        Ok(r) => {
            let account_sid = field(&params, "AccountSid").unwrap_or_default();
            if !twilio_recording(&state, account_sid, &call_sid, &r.answer).await {
                // Fail closed: never ask for a secret while the call may be recorded.
                tracing::error!(call = %call_sid, "recording could not be paused; ending the call rather than collect a secret on the recording");
                let next = NextTurn::default();
                return xml(
                    StatusCode::OK,
                    twiml::render(&apology_answer(), &next, &opts),
                );
            }
            let next = next_urls(&base, &path, &r, false);
            xml(StatusCode::OK, twiml::render(&r.answer, &next, &opts))
        }
        Err(e) => {
            let status = failure_status(&state, Platform::Twilio, &e);
            let next = NextTurn::default();
            xml(status, twiml::render(&apology_answer(), &next, &opts))
        }
    }
}

/// TwiML cannot pause a recording: in a secure segment, ask Twilio's REST API to (when it
/// is configured; otherwise recording must be off for the number, see the docs). False
/// when a pause was needed and Twilio did not confirm it.
async fn twilio_recording(
    state: &AppState,
    account_sid: &str,
    call_sid: &str,
    answer: &TurnAnswer,
) -> bool {
    let Some(rest) = &state.calls.platforms.twilio.rest else {
        return true;
    };
    let mut ok = true;
    let verbs = match answer {
        TurnAnswer::Ask { verbs, .. } | TurnAnswer::End { verbs, .. } => verbs,
    };
    for v in verbs {
        let status = match v {
            Verb::RecordingPause => "paused",
            Verb::RecordingResume => "in-progress",
            _ => continue,
        };
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}/Recordings/Twilio.CURRENT.json",
            rest.base_url.trim_end_matches('/'),
            enc(account_sid),
            enc(call_sid)
        );
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", rest.username, rest.password.expose()),
        );
        let body = if status == "paused" {
            "Status=paused&PauseBehavior=skip".to_owned()
        } else {
            "Status=in-progress".to_owned()
        };
        let request = ivrauth_core::http::HttpRequest {
            method: "POST".to_owned(),
            url,
            headers: vec![
                (
                    "authorization".to_owned(),
                    Secret::new(format!("Basic {auth}")),
                ),
                (
                    "content-type".to_owned(),
                    Secret::new("application/x-www-form-urlencoded".to_owned()),
                ),
            ],
            body: Some(Secret::new(body.into_bytes())),
            timeout_ms: 5_000,
            carries_secret: true,
        };
        match state.http.execute(&request).await {
            ivrauth_core::http::HttpResult::Response(r) if r.status < 300 => {
                tracing::info!(call = %call_sid, status, "call recording updated");
            }
            ivrauth_core::http::HttpResult::Response(r) => {
                tracing::warn!(call = %call_sid, http_status = r.status, "Twilio refused to change the call recording");
                ok &= status != "paused";
            }
            ivrauth_core::http::HttpResult::Failed(f) => {
                tracing::warn!(call = %call_sid, error = %f.message, "cannot reach Twilio to change the call recording");
                ok &= status != "paused";
            }
        }
    }
    ok
}

async fn twilio_status(
    State(state): State<AppState>,
    Path(_flow_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    if !twilio_authentic(&state, &headers, &uri, &params) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(call_sid) = field(&params, "CallSid") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let over = matches!(
        field(&params, "CallStatus"),
        Some("completed" | "busy" | "failed" | "no-answer" | "canceled")
    );
    if over {
        if let Err(e) = session::hangup(&state, Platform::Twilio, call_sid).await {
            tracing::error!(error = %e, "cannot close a call session");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------- jambonz

fn jambonz_authentic(state: &AppState, headers: &HeaderMap, body: &[u8]) -> bool {
    let cfg = &state.calls.platforms.jambonz;
    if cfg.skip_signature_check {
        return true;
    }
    let Some(sig) = headers
        .get("jambonz-signature")
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let secrets: Vec<&[u8]> = cfg.secrets.iter().map(|t| t.expose().as_bytes()).collect();
    let now = state.clock.now().0 / 1000;
    match signature::jambonz_verify(
        &secrets,
        sig,
        body,
        now,
        signature::JAMBONZ_DEFAULT_TOLERANCE_SECS,
    ) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "jambonz request refused");
            false
        }
    }
}

async fn jambonz_turn(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<TurnQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !jambonz_authentic(&state, &headers, &body) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let text = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let call_sid = text("call_sid");
    let digits = text("digits");
    if call_sid.is_empty()
        || too_long(&[
            ("call_sid", &call_sid),
            ("from", &text("from")),
            ("to", &text("to")),
            ("digits", &digits),
        ])
        .is_some()
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let input = if digits.is_empty() {
        Input::NoInput
    } else {
        Input::Digits(Secret::new(digits))
    };
    let req = TurnRequest {
        platform: Platform::Jambonz,
        flow_id: flow_id.clone(),
        call_id: call_sid,
        ani: text("from"),
        dnis: text("to"),
        turn: q.t,
        token: q.s,
        input: q.t.map(|_| input),
        call_secret: None,
    };
    let base = base_url(&state, &headers);
    let path = format!("/voice/jambonz/{}", enc(&flow_id));
    let empty = NextTurn::default();
    match session::turn(&state, req).await {
        Ok(r) => Json(jambonz::render(
            &r.answer,
            &next_urls(&base, &path, &r, false),
        ))
        .into_response(),
        Err(e) => {
            let status = failure_status(&state, Platform::Jambonz, &e);
            (status, Json(jambonz::render(&apology_answer(), &empty))).into_response()
        }
    }
}

async fn jambonz_status(
    State(state): State<AppState>,
    Path(_flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !jambonz_authentic(&state, &headers, &body) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(call_sid) = payload.get("call_sid").and_then(Value::as_str) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let over = matches!(
        payload.get("call_status").and_then(Value::as_str),
        Some("completed" | "failed" | "busy" | "no-answer")
    );
    if over {
        if let Err(e) = session::hangup(&state, Platform::Jambonz, call_sid).await {
            tracing::error!(error = %e, "cannot close a call session");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------- VoiceXML

/// The TCP peer of the connection, as `serve` records it (`ConnectInfo<SocketAddr>`).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

async fn vxml_turn_get(
    state: State<AppState>,
    path: Path<String>,
    q: Query<TurnQuery>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    vxml_turn(state, path, q, peer, headers, Bytes::new()).await
}

/// The answer to a VoiceXML request that `[voicexml]` does not admit (`None`: admitted).
/// 403 when no credential is configured at all, or the source address is not allowed
/// (every request); 401 with a Basic challenge when a start request lacks the configured
/// Basic credentials (later requests carry the per-call secret instead).
fn vxml_refusal(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    start: bool,
) -> Option<Response> {
    let cfg = &state.calls.platforms.voicexml;
    let refused = |status| xml(status, vxml::error_document(vxml::DEFAULT_APOLOGY));
    let actor = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
    if !cfg.accepts_requests() {
        note_refusal(state, Platform::Vxml, &actor, "not_configured");
        return Some(refused(StatusCode::FORBIDDEN));
    }
    if !cfg.allowed_sources.is_empty() {
        let source = access::source_address(peer.map(|p| p.ip()), headers, &cfg.trusted_proxies);
        let allowed = source.is_some_and(|a| cfg.allowed_sources.iter().any(|c| c.contains(a)));
        if !allowed {
            match (peer, source) {
                (None, _) => tracing::error!(
                    "VoiceXML request refused: the connection's peer address is unknown, so [voicexml] allowed_sources admits nothing"
                ),
                (Some(peer), None) => tracing::warn!(
                    peer = %peer.ip(),
                    "VoiceXML request refused: a trusted proxy sent an X-Forwarded-For that does not parse"
                ),
                (Some(_), Some(source)) => tracing::warn!(
                    %source,
                    "VoiceXML request refused: the source address is not in [voicexml] allowed_sources"
                ),
            }
            note_refusal(state, Platform::Vxml, &actor, "source_not_allowed");
            return Some(refused(StatusCode::FORBIDDEN));
        }
    }
    if start {
        if let Some(user) = cfg.basic() {
            let ok = access::basic_credentials(headers)
                .is_some_and(|c| access::basic_matches(&c, user, &cfg.basic_passwords));
            if !ok {
                tracing::warn!(
                    "VoiceXML start request refused: missing or wrong HTTP Basic credentials"
                );
                note_refusal(state, Platform::Vxml, &actor, "basic_credentials");
                let mut res = refused(StatusCode::UNAUTHORIZED);
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(
                        "Basic realm=\"ivrauth VoiceXML\", charset=\"UTF-8\"",
                    ),
                );
                return Some(res);
            }
        }
    }
    None
}

/// VoiceXML has no call id or request signing of its own: the start request is admitted
/// by [`vxml_refusal`] (Basic credentials, source address), then mints a call id and a
/// per-call secret, and every submit URL carries both (plus the sealed session).
async fn vxml_turn(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<TurnQuery>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let first = q.s.is_none();
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    if let Some(refusal) = vxml_refusal(&state, peer, &headers, first) {
        return refusal;
    }
    let params = form(&body);
    if too_long(&[
        ("ani", field(&params, "ani").unwrap_or_default()),
        ("dnis", field(&params, "dnis").unwrap_or_default()),
        ("digits", field(&params, "digits").unwrap_or_default()),
        ("c", q.c.as_deref().unwrap_or_default()),
    ])
    .is_some()
    {
        return xml(
            StatusCode::BAD_REQUEST,
            vxml::error_document(vxml::DEFAULT_APOLOGY),
        );
    }
    let (call_id, secret) = if first {
        (
            uuid::Uuid::new_v4().to_string(),
            Some(Secret::new(crate::auth::mint_token())),
        )
    } else {
        (
            q.c.clone().unwrap_or_default(),
            q.k.clone().map(Secret::new),
        )
    };
    if !first && q.ev.as_deref() == Some("hangup") {
        // The session's secret proves the hang-up comes from the call itself.
        let check = TurnRequest {
            platform: Platform::Vxml,
            flow_id: flow_id.clone(),
            call_id: call_id.clone(),
            ani: String::new(),
            dnis: String::new(),
            turn: q.t,
            token: q.s.clone(),
            input: None,
            call_secret: secret.clone(),
        };
        if session::authentic(&state, &check).is_err() {
            let actor = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
            note_refusal(&state, Platform::Vxml, &actor, "bad_call_secret");
            return xml(StatusCode::FORBIDDEN, vxml::error_document("Goodbye."));
        }
        if let Err(e) = session::hangup(&state, Platform::Vxml, &call_id).await {
            tracing::error!(error = %e, "cannot close a call session");
        }
        return xml(StatusCode::OK, vxml::error_document("Goodbye."));
    }
    let input = match (q.ev.as_deref(), field(&params, "digits")) {
        (Some("none"), _) => Input::NoInput,
        (Some("nomatch"), _) => Input::NoMatch,
        (_, Some(d)) if !d.is_empty() => Input::Digits(Secret::new(d.to_owned())),
        _ => Input::NoInput,
    };
    let req = TurnRequest {
        platform: Platform::Vxml,
        flow_id: flow_id.clone(),
        call_id,
        ani: field(&params, "ani")
            .or_else(|| field(&params, "session.connection.remote.uri"))
            .unwrap_or_default()
            .to_owned(),
        dnis: field(&params, "dnis").unwrap_or_default().to_owned(),
        turn: q.t,
        token: q.s,
        input: (!first).then_some(input),
        call_secret: secret,
    };
    let base = base_url(&state, &headers);
    let path = format!("/voice/vxml/{}", enc(&flow_id));
    match session::turn(&state, req).await {
        Ok(r) => xml(
            StatusCode::OK,
            vxml::render(&r.answer, &next_urls(&base, &path, &r, true)),
        ),
        Err(e) => {
            let status = failure_status(&state, Platform::Vxml, &e);
            xml(
                status,
                vxml::error_document("Sorry, we cannot continue this call. Goodbye."),
            )
        }
    }
}

// ---------------------------------------------------------------- decision API

/// A turn of the decision API.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiTurnRequest {
    pub flow_id: String,
    #[serde(default)]
    pub ani: String,
    #[serde(default)]
    pub dnis: String,
    /// The keys the caller pressed for the last prompt; `""` or absent for no input.
    #[serde(default)]
    pub input: Option<String>,
    /// The `turn` of the last response, so that a retried request gets the same answer.
    #[serde(default)]
    pub turn: Option<u32>,
}

/// The decision API's answer: flat, for platforms such as Genesys Cloud data actions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiTurnResponse {
    pub call_id: String,
    /// Send this back as `turn` with the next request.
    pub turn: u32,
    /// `collect` (play `prompt`, then collect keys), `say` (play `prompt`; the flow ended),
    /// `transfer` (play `prompt`, then transfer to `queue` or `target`), `hangup`.
    pub action: &'static str,
    /// Everything to speak this turn, in order.
    pub prompt: String,
    pub min_digits: u32,
    pub max_digits: u32,
    pub finish_on_key: String,
    pub timeout_seconds: u32,
    /// The keys are secret: mask them, suppress recording.
    pub secure: bool,
    /// Menu keys, comma-separated (`"1,2,9"`); empty for a collect.
    pub choices: String,
    /// `pause` or `resume` call recording before playing the prompt; empty for neither.
    pub recording: String,
    pub queue: String,
    pub target: String,
    pub reason: String,
    /// The node the flow ended at (`say`, `transfer`, `hangup`); empty for `collect`.
    pub end_node: String,
    /// An `end` node's status code; 0 when there is none.
    pub status_code: u16,
    /// The account number the caller keyed in, when a verification was attempted (also
    /// in `attributes`).
    pub account: String,
    pub verified: bool,
    /// Factors that succeeded, comma-separated.
    pub factors: String,
    pub failure_reason: String,
    /// The same verification result, as an object (for platforms that keep JSON).
    pub attributes: Value,
}

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
        action: "collect",
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
                CallEnd::End { .. } => "say",
                CallEnd::Transfer { .. } => "transfer",
                CallEnd::Hangup { .. } => "hangup",
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

/// Longest call id, flow id, caller number or key entry accepted (they travel sealed in
/// URLs, which must stay short).
pub const MAX_FIELD_LEN: usize = 128;

fn too_long(fields: &[(&str, &str)]) -> Option<String> {
    fields
        .iter()
        .find(|(_, v)| v.len() > MAX_FIELD_LEN)
        .map(|(name, _)| format!("`{name}` is longer than {MAX_FIELD_LEN} characters"))
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
    params(("callId" = String, Path, description = "The platform's call id")),
    request_body = ApiTurnRequest,
    responses((status = 200, description = "What to do next", body = ApiTurnResponse),
              (status = 404, description = "No such flow"),
              (status = 409, description = "A stale turn, or an expired session")))]
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
    let r = match session::turn(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(reason) = refusal_reason(&e) {
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
    params(("callId" = String, Path, description = "The platform's call id")),
    responses((status = 200, description = "Closed (`closed` is false when there was no session)")))]
pub async fn api_hangup(
    caller: Scoped<CallTurn>,
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_lengths(&[("callId", &call_id)])?;
    let closed = session::hangup(&state, Platform::Api, &owned_call(caller.actor(), &call_id))
        .await
        .map_err(api_error)?;
    Ok(Json(json!({ "closed": closed })))
}
