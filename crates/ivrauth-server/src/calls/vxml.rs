//! VoiceXML: the VoiceXML 2.1 front-end, in one file: settings ([`VoiceXmlConfig`]), the
//! webhook (`GET|POST /voice/vxml/{flowId}`: one document per turn, and the hang-up
//! catch's submit), request admission (HTTP Basic on the start URL and source addresses,
//! [`access`]; later URLs carry a per-call secret checked against the sealed session) and
//! the renderer ([`render`]).
//!
//! VoiceXML has no call id or request signing of its own: the start request is admitted
//! by [`refusal`] (Basic credentials, source address), then mints a call id and a
//! per-call secret, and every submit URL carries both (plus the sealed session).
//!
//! # Rendering
//!
//! VoiceXML renderer: a platform-neutral [`TurnAnswer`] becomes one complete VoiceXML 2.1
//! document per turn, valid against the W3C VoiceXML 2.1 schema.
//!
//! Every document is one `<form id="turn">` under
//! `<vxml version="2.1" xmlns="http://www.w3.org/2001/vxml" xsi:schemaLocation=..>`.
//!
//! * A turn that asks for keys is one DTMF-only `<field name="digits">`: the answer's verbs
//!   then the prompt's `say` as its `<prompt>`s (keys barge in on all of them), a DTMF
//!   grammar, and handlers that all go back to ivrauth: `<filled>` submits the keys to
//!   [`NextTurn::action`] (`namelist="digits"`, POST, so the keys travel in the body and
//!   never in a URL), `<noinput>` submits to [`NextTurn::no_input`], `<nomatch>` to
//!   [`NextTurn::no_match`], and a hang-up (`connection.disconnect.hangup`) to
//!   [`NextTurn::hangup`]. The server counts the attempts, so the platform never re-prompts
//!   on its own.
//! * A turn that ends the dialogue plays its verbs in a `<block>`, then either transfers
//!   (a blind `<transfer>` form item carrying the verification in `aai`) or disconnects.
//!
//! The renderer is pure: it writes nothing that is not in the answer or the [`NextTurn`]
//! URLs. Text is escaped, characters XML 1.0 does not allow are dropped, URIs are
//! percent-encoded where they hold characters a URI may not (so they stay valid
//! `xsd:anyURI`s), and language tags that are not valid `xml:lang` values are left out, so
//! hostile or sloppy text cannot break the document or its validity.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use ivrauth_core::call::CallKey;
use ivrauth_core::ivr::{CallEnd, Input, Prompt, PromptKind, Verb};
use ivrauth_core::secret::Secret;

use self::access::Cidr;
use super::xml::{xml_chars, Xml};
use super::{
    base_url, enc, field, form, next_urls, note_refusal, too_long, turn_failed, xml, NextTurn,
    Platform, TransferAttributes, TurnAnswer, TurnQuery,
};
use crate::app::turn::{self, TurnRequest};
use crate::http::error::{ApiError, PlatformBody};
use crate::AppState;

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

/// The TCP peer of the connection, as `serve` records it (`ConnectInfo<SocketAddr>`).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// A VoiceXML document saying `message`, with `status`.
fn refused(status: StatusCode, message: &str) -> ApiError {
    ApiError::platform(status, PlatformBody::Xml(error_document(message)))
}

/// One turn fetched with GET (a start URL; later turns submit with POST).
#[utoipa::path(get, path = "/voice/vxml/{flowId}", tag = "telephony",
    security(("voicexml_basic" = []), ()),
    params(("flowId" = String, Path, description = "The flow the call runs"), TurnQuery),
    responses(
        (status = 200, description = "A VoiceXML 2.1 document for the turn (or, for `ev=hangup`, one that says goodbye)", content_type = "text/xml"),
        (status = 400, description = "A field longer than 128 characters (VoiceXML apology), or a query string that does not parse"),
        (status = 401, description = "A start request without the configured `[voicexml]` Basic credentials (VoiceXML apology; `WWW-Authenticate: Basic`)", content_type = "text/xml",
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"ivrauth VoiceXML\", charset=\"UTF-8\"`"))),
        (status = 403, description = "VoiceXML not configured, a source address not allowed, or a wrong call secret (VoiceXML apology)", content_type = "text/xml"),
        (status = 404, description = "No such flow (VoiceXML apology)", content_type = "text/xml"),
    ))]
pub(super) async fn webhook_get(
    state: State<AppState>,
    path: Path<String>,
    q: Query<TurnQuery>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    webhook(state, path, q, peer, headers, Bytes::new()).await
}

/// The refusal of a VoiceXML request that `[voicexml]` does not admit (`None`: admitted).
/// 403 when no credential is configured at all, or the source address is not allowed
/// (every request); 401 with a Basic challenge when a start request lacks the configured
/// Basic credentials (later requests carry the per-call secret instead).
fn refusal(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    start: bool,
) -> Option<ApiError> {
    let cfg = &state.calls.platforms.voicexml;
    let actor = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
    if !cfg.accepts_requests() {
        note_refusal(state, Platform::Vxml, &actor, "not_configured");
        return Some(refused(StatusCode::FORBIDDEN, DEFAULT_APOLOGY));
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
            return Some(refused(StatusCode::FORBIDDEN, DEFAULT_APOLOGY));
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
                return Some(ApiError::Platform {
                    status: StatusCode::UNAUTHORIZED,
                    body: PlatformBody::Xml(error_document(DEFAULT_APOLOGY)),
                    challenge: Some("Basic realm=\"ivrauth VoiceXML\", charset=\"UTF-8\""),
                });
            }
        }
    }
    None
}

/// One turn (or the hang-up catch's submit): a VoiceXML document.
#[utoipa::path(post, path = "/voice/vxml/{flowId}", tag = "telephony",
    security(("voicexml_basic" = []), ()),
    params(("flowId" = String, Path, description = "The flow the call runs"), TurnQuery),
    request_body(content = super::VoiceXmlSubmit, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A VoiceXML 2.1 document for the turn (or, for `ev=hangup`, one that says goodbye)", content_type = "text/xml"),
        (status = 400, description = "A field longer than 128 characters (VoiceXML apology), or a query string that does not parse"),
        (status = 401, description = "A start request without the configured `[voicexml]` Basic credentials (VoiceXML apology; `WWW-Authenticate: Basic`)", content_type = "text/xml",
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"ivrauth VoiceXML\", charset=\"UTF-8\"`"))),
        (status = 403, description = "VoiceXML not configured, a source address not allowed, or a wrong call secret (VoiceXML apology)", content_type = "text/xml"),
        (status = 404, description = "No such flow (VoiceXML apology)", content_type = "text/xml"),
    ))]
pub(super) async fn webhook(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<TurnQuery>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let first = q.s.is_none();
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    if let Some(refusal) = refusal(&state, peer, &headers, first) {
        return Err(refusal);
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
        return Err(refused(StatusCode::BAD_REQUEST, DEFAULT_APOLOGY));
    }
    let (call_id, secret) = if first {
        (
            uuid::Uuid::new_v4().to_string(),
            Some(Secret::new(crate::http::auth::mint_token())),
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
        if turn::authentic(&state, &check).is_err() {
            let actor = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
            note_refusal(&state, Platform::Vxml, &actor, "bad_call_secret");
            return Err(refused(StatusCode::FORBIDDEN, "Goodbye."));
        }
        if let Err(e) = turn::hangup(&state, &CallKey::new(Platform::Vxml, call_id)).await {
            tracing::error!(error = %e, "cannot close a call session");
        }
        return Ok(xml(StatusCode::OK, error_document("Goodbye.")));
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
    let r = turn::turn(&state, req).await.map_err(|e| {
        let apology = PlatformBody::Xml(error_document(super::APOLOGY));
        turn_failed(&state, Platform::Vxml, &e, apology)
    })?;
    let base = base_url(&state, &headers);
    let path = format!("/voice/vxml/{}", enc(&flow_id));
    Ok(xml(
        StatusCode::OK,
        render(&r.answer, &next_urls(&base, &path, &r, true)),
    ))
}

/// What [`error_document`] says when it is given nothing to say.
pub const DEFAULT_APOLOGY: &str = "Sorry, we cannot continue this call. Goodbye.";

/// What the caller hears when the platform reports that a transfer failed.
const TRANSFER_FAILED: &str = "Sorry, we could not transfer your call. Goodbye.";

/// The field variable the keys are collected into and submitted as (`digits=..`).
const FIELD: &str = "digits";

/// The document prologue and root element, with the namespace and schema location the
/// VoiceXML 2.1 Recommendation gives for conforming documents.
const HEADER: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<vxml version="2.1" xmlns="http://www.w3.org/2001/vxml""#,
    r#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#,
    r#" xsi:schemaLocation="http://www.w3.org/2001/vxml http://www.w3.org/TR/voicexml21/vxml.xsd">"#,
);

/// What `encodeURIComponent`-style encoding leaves as it is (RFC 3986 unreserved).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Renders one turn as a complete VoiceXML 2.1 document.
///
/// ## Asking for keys ([`TurnAnswer::Ask`])
///
/// `<field name="digits">` with these properties:
/// `inputmodes=dtmf` (no speech recognition), `timeout` and `interdigittimeout` set to the
/// prompt's timeout (at least 1s, as Twilio's `timeout` is both), and `termchar` set to
/// the finish key (`value=""` when there is none, the usual way platforms take "no
/// terminating key"; a menu whose choices include the finish key gets none, or the key
/// could not be chosen). The grammar is
/// `builtin:dtmf/digits?minlength=..;maxlength=..` for a collect, and for a menu an
/// inline SRGS DTMF grammar of its choices (or `builtin:dtmf/digits?length=1` when it has
/// no usable choice), so a key outside the menu is a `nomatch` that goes back to ivrauth.
///
/// A secure prompt (`prompt.secure`) also gets `recordutterance=false`, the one standard
/// property that bears on it: the platform keeps no recording of the entry, and
/// `digits$.recording` stays unset. The keys only ever leave in the body of the POST to
/// [`NextTurn::action`]. VoiceXML has no standard way to keep the keys out of the
/// platform's own logs or its call recording; that is vendor configuration, for example
/// Nuance's `swirec.secure_context=suppress` and `swirec.mute_wcr` properties or Genesys
/// PureConnect's `com.inin.securedata`, which the schema would accept as `<property>`s
/// but which are deliberately not rendered here (unknown to other platforms, and not
/// part of the standard).
///
/// ## Ending the dialogue ([`TurnAnswer::End`])
///
/// The verbs play in a `<block>`. Then:
/// * a transfer is `<transfer name="xfer" type="blind" dest=.. aai=..>`. `type="blind"`
///   is the VoiceXML 2.1 spelling of `bridge="false"` (a document may not carry both):
///   ivrauth's part of the call is over once the agent has it. `aai` is the
///   percent-encoded JSON of [`TransferAttributes`] (camelCase) plus `"queue"` when the
///   transfer names one; platforms pass it on to the far end (commonly as SIP
///   User-to-User data, whose size some networks limit). `dest` is the target when the
///   transfer names one (`tel:`, `sip:` and `sips:` URIs as they are, `user@host` as a
///   `sip:` URI, anything else as a `tel:` number), else the queue: a queue that is
///   already such a URI as it is, otherwise `sip:{queue}` (percent-encoded).
///   VoiceXML has no queues, only addresses: a platform routes such a `sip:` URI through
///   its outbound proxy, which has to know the queue by that name; deployments that
///   can should name queues by their full URI. Unlike the TwiML and jambonz renderers, a
///   transfer naming both a queue and a target dials the target (a real address) and
///   the queue travels in `aai`. The form catches `connection.disconnect.transfer` (the
///   transfer happened) with `<exit/>`, and the failures a platform reports
///   (`error.connection.*`, `error.unsupported.transfer.*`, `error.unsupported.uri`) with
///   a fixed apology and `<disconnect/>`.
/// * a hang-up or an end (and a transfer with nowhere to go, which the flow validator
///   rejects) is `<disconnect/>` at the end of the block (queued prompts play first).
///
/// ## Verbs
///
/// `Say` → `<prompt xml:lang=..>` (the language when it is a valid language tag, `_`
/// read as `-`), holding `<voice name=..>` when a voice is named; `Pause` →
/// `<prompt><break time="Ns"/></prompt>`; `Play` → `<prompt><audio src=".."/></prompt>`.
/// [`Verb::RecordingPause`] and [`Verb::RecordingResume`] render nothing: VoiceXML has no
/// element to pause or resume a call recording (the host or the platform's own API has
/// to do it).
pub fn render(answer: &TurnAnswer, next: &NextTurn) -> String {
    let mut x = Xml::default();
    x.raw(HEADER);
    x.open("form", &[("id", "turn")]);
    match answer {
        TurnAnswer::Ask { verbs, prompt } => render_ask(&mut x, verbs, prompt, next),
        TurnAnswer::End {
            verbs,
            end,
            attributes,
        } => render_end(&mut x, verbs, end, attributes),
    }
    x.close("form");
    x.raw("</vxml>");
    x.out
}

/// A complete document that says `message` (or [`DEFAULT_APOLOGY`] when it is blank) and
/// disconnects: the answer to a request that cannot be served, or to a hang-up
/// notification. `message` is spoken to the caller, so it must not hold any detail.
pub fn error_document(message: &str) -> String {
    let text = if xml_chars(message).trim().is_empty() {
        DEFAULT_APOLOGY
    } else {
        message
    };
    let mut x = Xml::default();
    x.raw(HEADER);
    x.open("form", &[("id", "turn")]);
    x.open("block", &[]);
    x.text_element("prompt", &[], text);
    x.empty("disconnect", &[]);
    x.close("block");
    x.close("form");
    x.raw("</vxml>");
    x.out
}

fn render_ask(x: &mut Xml, verbs: &[Verb], prompt: &Prompt, next: &NextTurn) {
    x.open("catch", &[("event", "connection.disconnect.hangup")]);
    submit(x, &next.hangup, None);
    x.close("catch");

    x.open("field", &[("name", FIELD)]);
    let timeout = format!("{}s", prompt.timeout_seconds.max(1));
    property(x, "inputmodes", "dtmf");
    property(x, "timeout", &timeout);
    property(x, "interdigittimeout", &timeout);
    property(x, "termchar", termchar(prompt));
    if prompt.secure {
        property(x, "recordutterance", "false");
    }
    grammar(x, prompt);
    for verb in verbs.iter().chain(&prompt.say) {
        render_verb(x, verb);
    }
    x.open("noinput", &[]);
    submit(x, &next.no_input, None);
    x.close("noinput");
    x.open("nomatch", &[]);
    submit(x, &next.no_match, None);
    x.close("nomatch");
    x.open("filled", &[]);
    submit(x, &next.action, Some(FIELD));
    x.close("filled");
    x.close("field");
}

fn render_end(x: &mut Xml, verbs: &[Verb], end: &CallEnd, attributes: &TransferAttributes) {
    let transfer = match end {
        CallEnd::Transfer { queue, target, .. } => {
            let queue = queue.as_deref().filter(|q| !q.trim().is_empty());
            let target = target.as_deref().filter(|t| !t.trim().is_empty());
            match (target, queue) {
                (Some(target), _) => Some((target_uri(target), queue)),
                (None, Some(queue)) => Some((queue_uri(queue), Some(queue))),
                (None, None) => None,
            }
        }
        CallEnd::Hangup { .. } | CallEnd::End { .. } => None,
    };
    match transfer {
        Some((dest, queue)) => {
            x.open("catch", &[("event", "connection.disconnect.transfer")]);
            x.empty("exit", &[]);
            x.close("catch");
            x.open(
                "catch",
                &[(
                    "event",
                    "error.connection error.unsupported.transfer error.unsupported.uri",
                )],
            );
            x.text_element("prompt", &[], TRANSFER_FAILED);
            x.empty("disconnect", &[]);
            x.close("catch");
            if has_output(verbs) {
                x.open("block", &[]);
                for verb in verbs {
                    render_verb(x, verb);
                }
                x.close("block");
            }
            let aai = aai(attributes, queue);
            x.empty(
                "transfer",
                &[
                    ("name", "xfer"),
                    ("type", "blind"),
                    ("dest", &dest),
                    ("aai", &aai),
                ],
            );
        }
        None => {
            x.open("block", &[]);
            for verb in verbs {
                render_verb(x, verb);
            }
            x.empty("disconnect", &[]);
            x.close("block");
        }
    }
}

/// Whether any verb renders something (recording verbs and empty ones do not).
fn has_output(verbs: &[Verb]) -> bool {
    verbs.iter().any(|verb| {
        let mut probe = Xml::default();
        render_verb(&mut probe, verb);
        !probe.out.is_empty()
    })
}

fn property(x: &mut Xml, name: &str, value: &str) {
    x.empty("property", &[("name", name), ("value", value)]);
}

fn submit(x: &mut Xml, next: &str, namelist: Option<&str>) {
    let next = clean_uri(next);
    let mut attrs = vec![("next", next.as_str())];
    if let Some(namelist) = namelist {
        attrs.push(("namelist", namelist));
    }
    attrs.push(("method", "post"));
    x.empty("submit", &attrs);
}

/// The terminating key: one DTMF key, or none (`""`). A menu whose choices include the
/// finish key gets none, or that choice could never be made.
fn termchar(prompt: &Prompt) -> &str {
    let key = prompt.finish_on_key.trim();
    let is_key = key.len() == 1 && key.chars().all(is_dtmf_key);
    if !is_key || (prompt.kind == PromptKind::Menu && prompt.choices.iter().any(|c| c == key)) {
        ""
    } else {
        key
    }
}

fn is_dtmf_key(c: char) -> bool {
    c.is_ascii_digit() || c == '*' || c == '#'
}

fn grammar(x: &mut Xml, prompt: &Prompt) {
    match prompt.kind {
        PromptKind::Collect => {
            let min = prompt.min_digits.max(1);
            let max = prompt.max_digits.max(min);
            let src = format!("builtin:dtmf/digits?minlength={min};maxlength={max}");
            x.empty("grammar", &[("mode", "dtmf"), ("src", &src)]);
        }
        PromptKind::Menu => {
            let mut choices: Vec<String> = Vec::new();
            for choice in &prompt.choices {
                let keys: String = choice.chars().filter(|c| !c.is_whitespace()).collect();
                if !keys.is_empty() && keys.chars().all(is_dtmf_key) && !choices.contains(&keys) {
                    choices.push(keys);
                }
            }
            if choices.is_empty() {
                x.empty(
                    "grammar",
                    &[("mode", "dtmf"), ("src", "builtin:dtmf/digits?length=1")],
                );
                return;
            }
            x.open(
                "grammar",
                &[("mode", "dtmf"), ("version", "1.0"), ("root", "choice")],
            );
            x.open("rule", &[("id", "choice"), ("scope", "public")]);
            x.open("one-of", &[]);
            for keys in &choices {
                // SRGS DTMF tokens are single keys, separated by spaces.
                let tokens: Vec<String> = keys.chars().map(String::from).collect();
                x.text_element("item", &[], &tokens.join(" "));
            }
            x.close("one-of");
            x.close("rule");
            x.close("grammar");
        }
    }
}

fn render_verb(x: &mut Xml, verb: &Verb) {
    match verb {
        Verb::Say {
            text,
            language,
            voice,
        } => {
            if xml_chars(text).trim().is_empty() {
                return;
            }
            let lang = language.as_deref().and_then(language_tag);
            let mut attrs: Vec<(&str, &str)> = Vec::new();
            if let Some(lang) = &lang {
                attrs.push(("xml:lang", lang));
            }
            let voice = voice
                .as_deref()
                .map(|v| xml_chars(v).trim().to_owned())
                .filter(|v| !v.is_empty());
            match voice {
                Some(voice) => {
                    x.open("prompt", &attrs);
                    x.text_element("voice", &[("name", &voice)], text);
                    x.close("prompt");
                }
                None => x.text_element("prompt", &attrs, text),
            }
        }
        Verb::Pause { seconds: 0 } => {}
        Verb::Pause { seconds } => {
            x.open("prompt", &[]);
            x.empty("break", &[("time", &format!("{seconds}s"))]);
            x.close("prompt");
        }
        Verb::Play { url } => {
            let src = clean_uri(url);
            if src.is_empty() {
                return;
            }
            x.open("prompt", &[]);
            x.empty("audio", &[("src", &src)]);
            x.close("prompt");
        }
        Verb::RecordingPause | Verb::RecordingResume => {}
    }
}

/// A valid `xml:lang` value (`xsd:language`: `[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*`) from a
/// language setting such as `en-US` or `en_US`; `None` when it is not one.
fn language_tag(language: &str) -> Option<String> {
    let tag = language.trim().replace('_', "-");
    let mut parts = tag.split('-');
    let first = parts.next()?;
    let first_ok = (1..=8).contains(&first.len()) && first.chars().all(|c| c.is_ascii_alphabetic());
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    (first_ok && rest_ok).then_some(tag)
}

/// Whether `s` starts with one of the address schemes a transfer passes on as it is.
fn has_address_scheme(s: &str) -> bool {
    let lower = s.trim_start().to_ascii_lowercase();
    ["tel:", "sip:", "sips:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// The `dest` URI of a transfer to a target: `tel:`/`sip:`/`sips:` URIs as they are,
/// `user@host` as a `sip:` URI, anything else as a `tel:` number (spaces dropped).
fn target_uri(target: &str) -> String {
    let target = target.trim();
    if has_address_scheme(target) {
        clean_uri(target)
    } else if target.contains('@') {
        format!("sip:{}", clean_uri(target))
    } else {
        let number: String = target.chars().filter(|c| !c.is_whitespace()).collect();
        format!("tel:{}", clean_uri(&number.replace('#', "%23")))
    }
}

/// The `dest` URI of a transfer to a queue: a queue named by a `tel:`/`sip:`/`sips:` URI as
/// it is, any other name as `sip:{name}` (percent-encoded).
fn queue_uri(queue: &str) -> String {
    let queue = queue.trim();
    if has_address_scheme(queue) {
        clean_uri(queue)
    } else {
        format!("sip:{}", utf8_percent_encode(queue, COMPONENT))
    }
}

/// The `aai` value: [`TransferAttributes`] as camelCase JSON plus `"queue"`, percent-encoded
/// like `encodeURIComponent` so it survives any signalling it is put in.
fn aai(attributes: &TransferAttributes, queue: Option<&str>) -> String {
    let mut map = match serde_json::to_value(attributes) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    if let Some(queue) = queue {
        map.insert("queue".to_owned(), Value::String(queue.to_owned()));
    }
    utf8_percent_encode(&Value::Object(map).to_string(), COMPONENT).to_string()
}

/// `s` as a URI that is a valid `xsd:anyURI`: surrounding whitespace trimmed, and every
/// character a URI may not hold (spaces, controls, non-ASCII, `"<>\^`{|}[]`, a `%` that
/// starts no escape, a second `#`) percent-encoded as UTF-8. Existing escapes are kept.
fn clean_uri(s: &str) -> String {
    let s = s.trim();
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
    let mut out = String::with_capacity(s.len());
    let mut fragment = false;
    for (i, c) in s.char_indices() {
        match c {
            '%' if hex(i + 1) && hex(i + 2) => out.push('%'),
            '#' if !fragment => {
                fragment = true;
                out.push('#');
            }
            c if c.is_ascii_alphanumeric() || "-._~:/?@!$&'()*+,;=".contains(c) => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
    out
}

pub mod access {
    //! Who may reach the VoiceXML front-end: HTTP Basic credentials on the start URL and an
    //! allow-list of source addresses (CIDR ranges), the two credentials VoiceXML platforms
    //! such as Cisco CVP and Avaya Experience Portal can present. Not for the per-call secret
    //! of later URLs (that is checked against the sealed continuation in `crate::app::turn`).
    //!
    //! The source address is the TCP peer (the `ConnectInfo<SocketAddr>` extension `serve`
    //! inserts). `X-Forwarded-For` is ignored unless the peer is one of the configured trusted
    //! proxies; then the address is the right-most one in that header that is not itself a
    //! trusted proxy (the left part of the header is whatever the client wrote, so it is never
    //! read past the first untrusted hop). Without a known peer address an allow-list admits
    //! nobody. A credential is compared through its SHA-256 digest in constant time, and no
    //! refusal says more than that the request was refused.

    use std::fmt;
    use std::net::IpAddr;
    use std::str::FromStr;

    use axum::http::{header, HeaderMap};
    use base64::Engine as _;
    use sha2::{Digest as _, Sha256};
    use subtle::ConstantTimeEq as _;

    use ivrauth_core::secret::Secret;

    /// An address range such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a range of
    /// one address.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Cidr {
        network: IpAddr,
        prefix: u8,
    }

    /// Why a text is not a [`Cidr`].
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum CidrError {
        #[error(
            "`{0}` is not an IP address or CIDR range (such as `10.0.0.0/8` or `2001:db8::/32`)"
        )]
        Syntax(String),
        #[error("`{given}` has a prefix length over {max}")]
        Prefix { given: String, max: u8 },
        #[error("`{given}` has bits set past its prefix length; did you mean `{suggestion}`?")]
        HostBits { given: String, suggestion: String },
    }

    impl Cidr {
        /// The range's prefix length (0 matches every address of its family).
        pub fn prefix(&self) -> u8 {
            self.prefix
        }

        /// Whether `addr` is in the range. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`,
        /// as dual-stack sockets report IPv4 peers) is matched as the IPv4 address.
        pub fn contains(&self, addr: IpAddr) -> bool {
            match (self.network, addr.to_canonical()) {
                (IpAddr::V4(net), IpAddr::V4(a)) => {
                    mask_bits(u128::from(u32::from(a)), 32, self.prefix)
                        == u128::from(u32::from(net))
                }
                (IpAddr::V6(net), IpAddr::V6(a)) => {
                    mask_bits(u128::from(a), 128, self.prefix) == u128::from(net)
                }
                _ => false,
            }
        }
    }

    /// `value` (an address of `width` bits) with the bits past `prefix` cleared.
    fn mask_bits(value: u128, width: u8, prefix: u8) -> u128 {
        let host_bits = u32::from(width.saturating_sub(prefix));
        if host_bits >= 128 {
            0
        } else {
            (value >> host_bits) << host_bits
        }
    }

    impl FromStr for Cidr {
        type Err = CidrError;

        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let text = s.trim();
            let syntax = || CidrError::Syntax(text.to_owned());
            let (addr, prefix) = match text.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (text, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
            let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| CidrError::Prefix {
                        given: text.to_owned(),
                        max,
                    })?,
                Some(_) => return Err(syntax()),
            };
            let (bits, masked) = match addr {
                IpAddr::V4(a) => {
                    let v = u128::from(u32::from(a));
                    (v, mask_bits(v, 32, prefix))
                }
                IpAddr::V6(a) => {
                    let v = u128::from(a);
                    (v, mask_bits(v, 128, prefix))
                }
            };
            if bits != masked {
                let network = match addr {
                    IpAddr::V4(_) => {
                        IpAddr::from(std::net::Ipv4Addr::from(u32::try_from(masked).unwrap_or(0)))
                    }
                    IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(masked)),
                };
                return Err(CidrError::HostBits {
                    given: text.to_owned(),
                    suggestion: format!("{network}/{prefix}"),
                });
            }
            Ok(Cidr {
                network: addr,
                prefix,
            })
        }
    }

    impl fmt::Display for Cidr {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }

    /// The address a request came from: the TCP peer, or, when the peer is a trusted proxy,
    /// the right-most `X-Forwarded-For` address that is not a trusted proxy itself. `None` when
    /// the peer is unknown, or a trusted proxy sent a forwarded address that does not parse
    /// (then nothing can be vouched for).
    pub fn source_address(
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        trusted_proxies: &[Cidr],
    ) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        let trusted = |a: IpAddr| trusted_proxies.iter().any(|c| c.contains(a));
        if !trusted(peer) {
            return Some(peer);
        }
        // Several headers form one list, in order.
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let text = value.to_str().ok()?;
            hops.extend(text.split(',').map(str::trim));
        }
        let mut source = peer;
        for hop in hops.iter().rev() {
            let addr = forwarded_addr(hop)?;
            source = addr;
            if !trusted(addr) {
                break;
            }
        }
        Some(source)
    }

    /// One `X-Forwarded-For` entry: an address, possibly with a port (`[v6]:port`,
    /// `v4:port`).
    fn forwarded_addr(hop: &str) -> Option<IpAddr> {
        if let Ok(a) = hop.parse::<IpAddr>() {
            return Some(a.to_canonical());
        }
        hop.parse::<std::net::SocketAddr>()
            .ok()
            .map(|s| s.ip().to_canonical())
    }

    /// What a request's `Authorization: Basic` header says, if it has one that decodes
    /// (RFC 7617: base64 of `user:password`, split at the first colon).
    pub struct BasicCredentials {
        pub username: String,
        pub password: Secret<String>,
    }

    /// The request's Basic credentials; `None` when there are none or they do not decode.
    pub fn basic_credentials(headers: &HeaderMap) -> Option<BasicCredentials> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, rest) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = Secret::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?,
        );
        let text = std::str::from_utf8(decoded.expose()).ok()?;
        let (username, password) = text.split_once(':')?;
        Some(BasicCredentials {
            username: username.to_owned(),
            password: Secret::new(password.to_owned()),
        })
    }

    /// Whether `given` names `username` with one of `passwords`; every comparison runs in
    /// constant time over SHA-256 digests, so neither the length nor the content of a
    /// configured value shows in the timing.
    pub fn basic_matches(
        given: &BasicCredentials,
        username: &str,
        passwords: &[Secret<String>],
    ) -> bool {
        let user_ok = digest_eq(&given.username, username);
        let mut password_ok = subtle::Choice::from(0u8);
        for p in passwords {
            password_ok |= digest(given.password.expose()).ct_eq(&digest(p.expose()));
        }
        bool::from(user_ok & password_ok)
    }

    fn digest(s: &str) -> [u8; 32] {
        Sha256::digest(s.as_bytes()).into()
    }

    fn digest_eq(a: &str, b: &str) -> subtle::Choice {
        digest(a).ct_eq(&digest(b))
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
        use super::*;
        use axum::http::HeaderValue;

        fn cidr(s: &str) -> Cidr {
            s.parse().unwrap()
        }

        fn ip(s: &str) -> IpAddr {
            s.parse().unwrap()
        }

        #[test]
        fn ranges_contain_exactly_their_addresses() {
            let r = cidr("10.0.0.0/8");
            assert!(r.contains(ip("10.255.1.2")));
            assert!(!r.contains(ip("11.0.0.1")));
            // An IPv4 peer on a dual-stack socket.
            assert!(r.contains(ip("::ffff:10.1.2.3")));
            assert!(!r.contains(ip("2001:db8::1")));
            let one = cidr("192.0.2.7");
            assert_eq!(one.to_string(), "192.0.2.7/32");
            assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
            let v6 = cidr("2001:db8::/32");
            assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
            let any = cidr("0.0.0.0/0");
            assert!(any.contains(ip("203.0.113.9")) && any.prefix() == 0);
            assert!(cidr("::/0").contains(ip("2001:db8::1")));
        }

        #[test]
        fn bad_ranges_are_named_with_a_fix() {
            assert_eq!(
                "10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string(),
                "`10.0.0.1/8` has bits set past its prefix length; did you mean `10.0.0.0/8`?"
            );
            assert!(matches!(
                "10.0.0.0/33".parse::<Cidr>(),
                Err(CidrError::Prefix { max: 32, .. })
            ));
            for bad in [
                "",
                "10.0.0.0/",
                "10.0.0/8",
                "example.com",
                "10.0.0.0/+8",
                "::/a",
            ] {
                assert!(
                    matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
                    "{bad}"
                );
            }
        }

        #[test]
        fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
            let mut h = HeaderMap::new();
            h.insert(
                "x-forwarded-for",
                HeaderValue::from_static("10.9.9.9, 192.0.2.50"),
            );
            h.append("x-forwarded-for", HeaderValue::from_static("172.16.0.2"));
            let peer = Some(ip("127.0.0.1"));
            // Not trusted: the header is ignored.
            assert_eq!(source_address(peer, &h, &[]), peer);
            // Trusted: the right-most hop that is not a trusted proxy.
            let proxies = [cidr("127.0.0.1"), cidr("172.16.0.0/12")];
            assert_eq!(source_address(peer, &h, &proxies), Some(ip("192.0.2.50")));
            // A peer that is not a proxy is the source, whatever it forwards.
            assert_eq!(
                source_address(Some(ip("192.0.2.1")), &h, &proxies),
                Some(ip("192.0.2.1"))
            );
            // A garbled hop vouches for nothing.
            h.append("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
            assert_eq!(source_address(peer, &h, &proxies), None);
            // No peer, no source.
            assert_eq!(source_address(None, &HeaderMap::new(), &[]), None);
            // Ports are allowed in hops.
            let mut h = HeaderMap::new();
            h.insert(
                "x-forwarded-for",
                HeaderValue::from_static("[2001:db8::5]:443"),
            );
            assert_eq!(source_address(peer, &h, &proxies), Some(ip("2001:db8::5")));
        }

        #[test]
        fn basic_credentials_match_only_the_configured_pair() {
            let header = |user: &str, pw: &str| {
                let mut h = HeaderMap::new();
                let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
                );
                basic_credentials(&h).unwrap()
            };
            let passwords = [
                Secret::new("new:pw".to_owned()),
                Secret::new("old".to_owned()),
            ];
            // The password may contain a colon; the user name may not.
            assert!(basic_matches(&header("cvp", "new:pw"), "cvp", &passwords));
            assert!(basic_matches(&header("cvp", "old"), "cvp", &passwords));
            assert!(!basic_matches(&header("cvp", "new"), "cvp", &passwords));
            assert!(!basic_matches(&header("avaya", "old"), "cvp", &passwords));
            assert!(!basic_matches(&header("cvp", "old"), "cvp", &[]));
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
            assert!(basic_credentials(&h).is_none());
            h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
            assert!(basic_credentials(&h).is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;

    /// An element of a rendered document: name, attributes, direct text.
    type El = (String, Vec<(String, String)>, String);

    const SCHEMA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ivrauth-testkit/data/vxml21-schema/vxml.xsd"
    );

    /// Validates `doc` against the VoiceXML 2.1 schema with `xmllint`: `Err` holds its
    /// report when the document is not well-formed or not valid.
    fn validate(doc: &str) -> Result<(), String> {
        assert!(
            std::path::Path::new(SCHEMA).exists(),
            "the VoiceXML 2.1 schema set is missing at {SCHEMA}"
        );
        let mut child = Command::new("xmllint")
            .args(["--noout", "--nonet", "--schema", SCHEMA, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "xmllint must be installed to validate VoiceXML (apt-get install libxml2-utils)",
            );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(doc.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "xmllint rejected the document ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Panics with xmllint's report when `doc` is not a valid VoiceXML 2.1 document.
    fn assert_valid(doc: &str) {
        if let Err(report) = validate(doc) {
            panic!("{report}\n--- document ---\n{doc}");
        }
    }

    /// Every element of `doc` as (name, attributes, direct text), in document order.
    fn elements(doc: &str) -> Vec<El> {
        let mut reader = Reader::from_str(doc);
        let mut out: Vec<El> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) => {
                    out.push(element(&e));
                    stack.push(out.len() - 1);
                }
                Event::Empty(e) => out.push(element(&e)),
                Event::End(_) => {
                    stack.pop();
                }
                Event::Text(t) => {
                    if let Some(&i) = stack.last() {
                        out[i].2.push_str(&t.unescape().unwrap());
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    fn element(e: &quick_xml::events::BytesStart<'_>) -> El {
        let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
        let attrs = e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect();
        (name, attrs, String::new())
    }

    fn attr<'a>(el: &'a El, key: &str) -> Option<&'a str> {
        el.1.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn find<'a>(els: &'a [El], name: &str) -> Vec<&'a El> {
        els.iter().filter(|e| e.0 == name).collect()
    }

    fn next() -> NextTurn {
        let url = "https://ivr.example.com/voice/vxml/flow-1?t=3&s=abc.def&c=call-1&k=xyz";
        NextTurn {
            action: url.to_owned(),
            no_input: format!("{url}&ev=none"),
            no_match: format!("{url}&ev=nomatch"),
            hangup: format!("{url}&ev=hangup"),
        }
    }

    fn say(text: &str) -> Verb {
        Verb::Say {
            text: text.to_owned(),
            language: None,
            voice: None,
        }
    }

    fn collect(secure: bool) -> Prompt {
        Prompt {
            node_id: "pin".to_owned(),
            kind: PromptKind::Collect,
            say: vec![say("Enter your PIN, then press pound.")],
            min_digits: 4,
            max_digits: 8,
            finish_on_key: "#".to_owned(),
            timeout_seconds: 5,
            secure,
            choices: Vec::new(),
            attempt: 1,
            attempts: 3,
        }
    }

    fn menu(choices: &[&str], finish_on_key: &str) -> Prompt {
        Prompt {
            node_id: "menu".to_owned(),
            kind: PromptKind::Menu,
            say: vec![say("For sales press 1. For support press 2.")],
            min_digits: 1,
            max_digits: 1,
            finish_on_key: finish_on_key.to_owned(),
            timeout_seconds: 7,
            secure: false,
            choices: choices.iter().map(|c| (*c).to_owned()).collect(),
            attempt: 1,
            attempts: 3,
        }
    }

    fn attributes() -> TransferAttributes {
        TransferAttributes {
            verified: true,
            factors: vec!["pin".to_owned()],
            failure_reason: None,
            account: Some("12345678".to_owned()),
            reason: Some("Account Recovery".to_owned()),
            call_id: "call-1".to_owned(),
        }
    }

    fn transfer(queue: Option<&str>, target: Option<&str>) -> TurnAnswer {
        TurnAnswer::End {
            verbs: vec![say("Transferring you to an agent.")],
            end: CallEnd::Transfer {
                node_id: "xfer".to_owned(),
                queue: queue.map(str::to_owned),
                target: target.map(str::to_owned),
                reason: Some("Account Recovery".to_owned()),
            },
            attributes: attributes(),
        }
    }

    fn property_value<'a>(els: &'a [El], name: &str) -> Option<&'a str> {
        find(els, "property")
            .into_iter()
            .find(|p| attr(p, "name") == Some(name))
            .and_then(|p| attr(p, "value"))
    }

    fn decode_aai(aai: &str) -> Value {
        let json = percent_encoding::percent_decode_str(aai)
            .decode_utf8()
            .unwrap();
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn ask_collect() {
        let answer = TurnAnswer::Ask {
            verbs: Vec::new(),
            prompt: collect(false),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        assert!(doc.starts_with(HEADER));
        let els = elements(&doc);
        let field = find(&els, "field");
        assert_eq!(field.len(), 1);
        assert_eq!(attr(field[0], "name"), Some("digits"));
        assert_eq!(property_value(&els, "inputmodes"), Some("dtmf"));
        assert_eq!(property_value(&els, "timeout"), Some("5s"));
        assert_eq!(property_value(&els, "interdigittimeout"), Some("5s"));
        assert_eq!(property_value(&els, "termchar"), Some("#"));
        assert_eq!(property_value(&els, "recordutterance"), None);
        let grammar = find(&els, "grammar");
        assert_eq!(
            attr(grammar[0], "src"),
            Some("builtin:dtmf/digits?minlength=4;maxlength=8")
        );
        assert_eq!(attr(grammar[0], "mode"), Some("dtmf"));
        let prompts = find(&els, "prompt");
        assert_eq!(prompts.len(), 1);
        assert_eq!(prompts[0].2, "Enter your PIN, then press pound.");

        let submits = find(&els, "submit");
        let n = next();
        let targets: Vec<(Option<&str>, Option<&str>)> = submits
            .iter()
            .map(|s| (attr(s, "next"), attr(s, "namelist")))
            .collect();
        assert_eq!(
            targets,
            vec![
                (Some(n.hangup.as_str()), None),
                (Some(n.no_input.as_str()), None),
                (Some(n.no_match.as_str()), None),
                (Some(n.action.as_str()), Some("digits")),
            ]
        );
        assert!(submits.iter().all(|s| attr(s, "method") == Some("post")));
        // The hang-up catch, the no-input and no-match handlers and `filled` all submit.
        let catch = find(&els, "catch");
        assert_eq!(
            attr(catch[0], "event"),
            Some("connection.disconnect.hangup")
        );
        assert!(doc.contains("<noinput><submit next="));
        assert!(doc.contains("<nomatch><submit next="));
        assert!(doc.contains("<filled><submit next="));
        // The URL's `&` is escaped in the document.
        assert!(doc.contains("t=3&amp;s=abc.def&amp;c=call-1&amp;k=xyz&amp;ev=hangup"));
    }

    #[test]
    fn ask_secure_collect() {
        let mut prompt = collect(true);
        prompt.min_digits = 0;
        prompt.max_digits = 0;
        prompt.timeout_seconds = 0;
        let answer = TurnAnswer::Ask {
            verbs: vec![Verb::RecordingPause],
            prompt,
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        let els = elements(&doc);
        assert_eq!(property_value(&els, "recordutterance"), Some("false"));
        // Degenerate bounds and timeouts are clamped into something a platform accepts.
        assert_eq!(property_value(&els, "timeout"), Some("1s"));
        assert_eq!(
            attr(find(&els, "grammar")[0], "src"),
            Some("builtin:dtmf/digits?minlength=1;maxlength=1")
        );
        // The recording verb renders nothing.
        assert_eq!(find(&els, "prompt").len(), 1);
    }

    #[test]
    fn ask_menu() {
        let answer = TurnAnswer::Ask {
            verbs: Vec::new(),
            prompt: menu(&["1", "2", "*", "x", "1"], "#"),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        let els = elements(&doc);
        let items: Vec<&str> = find(&els, "item").iter().map(|i| i.2.as_str()).collect();
        assert_eq!(items, vec!["1", "2", "*"]);
        let grammar = find(&els, "grammar");
        assert_eq!(attr(grammar[0], "root"), Some("choice"));
        assert_eq!(attr(grammar[0], "mode"), Some("dtmf"));
        assert_eq!(property_value(&els, "termchar"), Some("#"));
        assert_eq!(property_value(&els, "timeout"), Some("7s"));
    }

    #[test]
    fn ask_menu_with_the_finish_key_as_a_choice_has_no_termchar() {
        let answer = TurnAnswer::Ask {
            verbs: Vec::new(),
            prompt: menu(&["1", "#"], "#"),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        let els = elements(&doc);
        assert_eq!(property_value(&els, "termchar"), Some(""));
        let items: Vec<&str> = find(&els, "item").iter().map(|i| i.2.as_str()).collect();
        assert_eq!(items, vec!["1", "#"]);
    }

    #[test]
    fn ask_menu_without_usable_choices_takes_any_one_key() {
        let answer = TurnAnswer::Ask {
            verbs: Vec::new(),
            prompt: menu(&["a", ""], ""),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        let els = elements(&doc);
        assert_eq!(
            attr(find(&els, "grammar")[0], "src"),
            Some("builtin:dtmf/digits?length=1")
        );
        assert_eq!(property_value(&els, "termchar"), Some(""));
    }

    #[test]
    fn say_before_ask_with_pause_and_audio() {
        let answer = TurnAnswer::Ask {
            verbs: vec![
                Verb::Say {
                    text: "Welcome.".to_owned(),
                    language: Some("en_GB".to_owned()),
                    voice: Some("Polly.Amy".to_owned()),
                },
                Verb::Pause { seconds: 2 },
                Verb::Play {
                    url: "https://cdn.example.com/hold music.mp3?a=1&b=é".to_owned(),
                },
                Verb::Pause { seconds: 0 },
                Verb::Say {
                    text: "Bienvenue.".to_owned(),
                    language: Some("fr-CA".to_owned()),
                    voice: None,
                },
                Verb::RecordingResume,
            ],
            prompt: collect(false),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        let els = elements(&doc);
        let prompts = find(&els, "prompt");
        assert_eq!(prompts.len(), 5);
        assert_eq!(attr(prompts[0], "xml:lang"), Some("en-GB"));
        let voice = find(&els, "voice");
        assert_eq!(attr(voice[0], "name"), Some("Polly.Amy"));
        assert_eq!(voice[0].2, "Welcome.");
        assert_eq!(attr(find(&els, "break")[0], "time"), Some("2s"));
        assert_eq!(
            attr(find(&els, "audio")[0], "src"),
            Some("https://cdn.example.com/hold%20music.mp3?a=1&b=%C3%A9")
        );
        assert_eq!(attr(prompts[3], "xml:lang"), Some("fr-CA"));
        assert_eq!(prompts[3].2, "Bienvenue.");
        // The answer's verbs come before the prompt's own `say`.
        assert_eq!(prompts[4].2, "Enter your PIN, then press pound.");
        // Everything plays inside the field, so keys barge in on all of it.
        let field_at = doc.find("<field").unwrap();
        assert!(doc.find("<prompt").unwrap() > field_at);
    }

    #[test]
    fn transfer_to_queue() {
        let doc = render(&transfer(Some("Account Recovery"), None), &next());
        assert_valid(&doc);
        let els = elements(&doc);
        let t = find(&els, "transfer");
        assert_eq!(t.len(), 1);
        assert_eq!(attr(t[0], "type"), Some("blind"));
        assert_eq!(attr(t[0], "bridge"), None);
        assert_eq!(attr(t[0], "dest"), Some("sip:Account%20Recovery"));
        let aai = decode_aai(attr(t[0], "aai").unwrap());
        assert_eq!(
            aai,
            serde_json::json!({
                "verified": true,
                "factors": ["pin"],
                "account": "12345678",
                "reason": "Account Recovery",
                "callId": "call-1",
                "queue": "Account Recovery",
            })
        );
        // The verbs play first, in a block.
        assert!(doc.find("<block>").unwrap() < doc.find("<transfer").unwrap());
        // The catch's apology comes first; then the block's prompts.
        assert_eq!(find(&els, "prompt")[0].2, TRANSFER_FAILED);
        assert_eq!(find(&els, "prompt")[1].2, "Transferring you to an agent.");
        let events: Vec<&str> = find(&els, "catch")
            .iter()
            .filter_map(|c| attr(c, "event"))
            .collect();
        assert_eq!(
            events,
            vec![
                "connection.disconnect.transfer",
                "error.connection error.unsupported.transfer error.unsupported.uri"
            ]
        );
        assert!(!doc.contains("<submit"));
    }

    #[test]
    fn transfer_to_a_queue_named_by_uri_keeps_it() {
        let doc = render(
            &transfer(Some("sip:recovery@acd.example.com"), None),
            &next(),
        );
        assert_valid(&doc);
        let els = elements(&doc);
        assert_eq!(
            attr(find(&els, "transfer")[0], "dest"),
            Some("sip:recovery@acd.example.com")
        );
    }

    #[test]
    fn transfer_to_number() {
        let doc = render(&transfer(None, Some("+1 555 010 0199")), &next());
        assert_valid(&doc);
        let els = elements(&doc);
        let t = find(&els, "transfer");
        assert_eq!(attr(t[0], "dest"), Some("tel:+15550100199"));
        let aai = decode_aai(attr(t[0], "aai").unwrap());
        assert_eq!(aai["verified"], Value::Bool(true));
        assert!(aai.get("queue").is_none());
    }

    #[test]
    fn transfer_to_sip_and_to_both() {
        let doc = render(&transfer(None, Some("sip:agent@pbx.example.com")), &next());
        assert_valid(&doc);
        assert!(doc.contains(r#"dest="sip:agent@pbx.example.com""#));

        let doc = render(&transfer(None, Some("agent@pbx.example.com")), &next());
        assert_valid(&doc);
        assert!(doc.contains(r#"dest="sip:agent@pbx.example.com""#));

        // Both: dial the target, the queue travels in `aai`.
        let doc = render(&transfer(Some("recovery"), Some("+15550100199")), &next());
        assert_valid(&doc);
        let els = elements(&doc);
        let t = find(&els, "transfer");
        assert_eq!(attr(t[0], "dest"), Some("tel:+15550100199"));
        let aai = decode_aai(attr(t[0], "aai").unwrap());
        assert_eq!(aai["queue"], Value::String("recovery".to_owned()));
    }

    #[test]
    fn transfer_without_verbs_or_destination() {
        let answer = TurnAnswer::End {
            verbs: vec![Verb::RecordingResume],
            end: CallEnd::Transfer {
                node_id: "xfer".to_owned(),
                queue: Some("q".to_owned()),
                target: None,
                reason: None,
            },
            attributes: TransferAttributes {
                verified: false,
                failure_reason: Some("max_attempts".to_owned()),
                call_id: "c".to_owned(),
                ..Default::default()
            },
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        assert!(!doc.contains("<block>"));

        // Nowhere to go: the call ends.
        let answer = TurnAnswer::End {
            verbs: Vec::new(),
            end: CallEnd::Transfer {
                node_id: "xfer".to_owned(),
                queue: Some(" ".to_owned()),
                target: None,
                reason: None,
            },
            attributes: attributes(),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        assert!(!doc.contains("<transfer"));
        assert!(doc.contains("<block><disconnect/></block>"));
    }

    #[test]
    fn hangup() {
        let answer = TurnAnswer::End {
            verbs: vec![say("Goodbye."), Verb::Pause { seconds: 1 }],
            end: CallEnd::Hangup {
                node_id: "bye".to_owned(),
            },
            attributes: TransferAttributes::default(),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        assert!(doc.contains(
            r#"<block><prompt>Goodbye.</prompt><prompt><break time="1s"/></prompt><disconnect/></block>"#
        ));
        assert!(!doc.contains("<submit"));
        assert!(!doc.contains("<transfer"));
    }

    #[test]
    fn end() {
        let answer = TurnAnswer::End {
            verbs: vec![say("You are verified. Goodbye.")],
            end: CallEnd::End {
                end_node: "done".to_owned(),
                status_code: Some(200),
            },
            attributes: TransferAttributes::default(),
        };
        let doc = render(&answer, &next());
        assert_valid(&doc);
        assert!(doc.contains(
            r#"<form id="turn"><block><prompt>You are verified. Goodbye.</prompt><disconnect/></block></form>"#
        ));

        let silent = TurnAnswer::End {
            verbs: Vec::new(),
            end: CallEnd::End {
                end_node: "done".to_owned(),
                status_code: None,
            },
            attributes: TransferAttributes::default(),
        };
        let doc = render(&silent, &next());
        assert_valid(&doc);
    }

    #[test]
    fn error_document_says_the_message_and_disconnects() {
        let doc = error_document("Sorry, we cannot continue this call. Goodbye.");
        assert_valid(&doc);
        assert!(doc.contains(
            "<block><prompt>Sorry, we cannot continue this call. Goodbye.</prompt><disconnect/></block>"
        ));

        let doc = error_document(" \u{1} ");
        assert_valid(&doc);
        assert!(doc.contains(&format!("<prompt>{DEFAULT_APOLOGY}</prompt>")));

        let doc = error_document("A & B <c> ]]> \"d\" 'e'");
        assert_valid(&doc);
        let els = elements(&doc);
        assert_eq!(find(&els, "prompt")[0].2, "A & B <c> ]]> \"d\" 'e'");
    }

    #[test]
    fn hostile_text_stays_well_formed_and_valid() {
        let nasty = "Tom & Jerry <b>bold</b> ]]> \"quoted\" 'single' \u{0}\u{8}\u{B}\u{FFFE}end";
        let cleaned = "Tom & Jerry <b>bold</b> ]]> \"quoted\" 'single' end";
        let answer = TurnAnswer::Ask {
            verbs: vec![
                Verb::Say {
                    text: nasty.to_owned(),
                    language: Some("en\"><x".to_owned()),
                    voice: Some("v\" a=\"b <x> ]]>".to_owned()),
                },
                Verb::Play {
                    url: "https://x.example/a b\"<>{}|\\^`[]%zz#f#g\u{1}".to_owned(),
                },
            ],
            prompt: Prompt {
                finish_on_key: "<".to_owned(),
                choices: vec!["<".to_owned(), "&".to_owned()],
                ..menu(&[], "#")
            },
        };
        let mut n = next();
        n.action = "https://ivr.example.com/v?a=1&b=\"<>\" ]]>".to_owned();
        let doc = render(&answer, &n);
        assert_valid(&doc);
        let els = elements(&doc);
        assert_eq!(find(&els, "voice")[0].2, cleaned);
        assert_eq!(
            attr(find(&els, "voice")[0], "name"),
            Some("v\" a=\"b <x> ]]>")
        );
        assert_eq!(attr(find(&els, "prompt")[0], "xml:lang"), None);
        assert_eq!(
            attr(find(&els, "audio")[0], "src"),
            Some("https://x.example/a%20b%22%3C%3E%7B%7D%7C%5C%5E%60%5B%5D%25zz#f%23g%01")
        );
        assert_eq!(property_value(&els, "termchar"), Some(""));
        let filled_submit = find(&els, "submit")[3];
        assert_eq!(
            attr(filled_submit, "next"),
            Some("https://ivr.example.com/v?a=1&b=%22%3C%3E%22%20%5D%5D%3E")
        );

        let end = TurnAnswer::End {
            verbs: vec![say(nasty)],
            end: CallEnd::Transfer {
                node_id: "x".to_owned(),
                queue: Some("q & <a> ]]> \"é\"".to_owned()),
                target: None,
                reason: Some(nasty.to_owned()),
            },
            attributes: TransferAttributes {
                reason: Some(nasty.to_owned()),
                account: Some("<&>".to_owned()),
                ..attributes()
            },
        };
        let doc = render(&end, &next());
        assert_valid(&doc);
        let els = elements(&doc);
        let t = find(&els, "transfer");
        let aai = decode_aai(attr(t[0], "aai").unwrap());
        assert_eq!(aai["reason"], Value::String(nasty.to_owned()));
        assert_eq!(aai["queue"], Value::String("q & <a> ]]> \"é\"".to_owned()));
        assert_eq!(
            attr(t[0], "dest"),
            Some("sip:q%20%26%20%3Ca%3E%20%5D%5D%3E%20%22%C3%A9%22")
        );
        assert_eq!(find(&els, "prompt")[1].2, cleaned);
    }

    #[test]
    fn language_tags() {
        assert_eq!(language_tag("en-US").as_deref(), Some("en-US"));
        assert_eq!(language_tag(" pt_BR ").as_deref(), Some("pt-BR"));
        assert_eq!(language_tag("zh-Hant-TW").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(language_tag(""), None);
        assert_eq!(language_tag("english language"), None);
        assert_eq!(language_tag("en--US"), None);
        assert_eq!(language_tag("toolongtag"), None);
    }

    #[test]
    fn the_schema_check_catches_invalid_documents() {
        // A guard on the guard: the validator must reject what the schema forbids.
        let bad = render(
            &TurnAnswer::End {
                verbs: Vec::new(),
                end: CallEnd::Hangup {
                    node_id: "h".to_owned(),
                },
                attributes: TransferAttributes::default(),
            },
            &next(),
        )
        .replace("<disconnect/>", r#"<submit method="put"/>"#);
        let report = validate(&bad).expect_err("an invalid document passed validation");
        assert!(report.contains("'put'"), "{report}");
    }
}
