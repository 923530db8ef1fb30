//! Twilio: the TwiML front-end, in one file: settings ([`TwilioConfig`]), the webhooks
//! (`POST /voice/twilio/{flowId}` answers each turn with TwiML, `POST
//! /voice/twilio/{flowId}/status` closes the call's session when Twilio reports the call
//! over), request authentication (`X-Twilio-Signature` over the public URL and the form
//! fields, [`signature`]) and the renderer ([`render`]). In secure segments the call's
//! recording is paused through Twilio's REST API ([`TwilioRest`], in `ivrauth-connect`),
//! as TwiML has no verb for it.
//!
//! # Rendering
//!
//! TwiML renderer: a platform-neutral [`TurnAnswer`] becomes the `text/xml` body Twilio
//! runs for one turn of a call.
//!
//! A turn that asks for keys answers with one `<Gather>` that holds everything to play
//! (Twilio allows `<Say>`, `<Play>` and `<Pause>` inside it, and DTMF barges in on all of
//! them), followed by a `<Redirect>` to the no-input URL: Twilio falls through to it when
//! the Gather times out without a key (`actionOnEmptyResult="false"`).
//!
//! A turn that ends the dialogue plays its verbs, then enqueues, dials or hangs up.
//!
//! The renderer is pure: it writes nothing that is not in the answer, the [`NextTurn`]
//! URLs or the [`TwimlOptions`]. Every text and URL is escaped, and characters that XML 1.0
//! does not allow (most control characters, U+FFFE, U+FFFF) are dropped, so hostile text
//! cannot break the document.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use ivrauth_connect::Recording;
use ivrauth_core::call::CallKey;
use ivrauth_core::ivr::{CallEnd, Input, Prompt, PromptKind, Verb};
use ivrauth_core::secret::Secret;

pub use ivrauth_connect::TwilioRest;

use super::xml::Xml;
use super::{
    apology_answer, base_url, call_over, enc, field, finish_key, form, is_sip_uri, next_urls,
    too_long, transfer_headers, turn_failed, xml, NextTurn, Platform, TransferAttributes,
    TurnAnswer, TurnQuery,
};
use crate::app::turn::{self, TurnRequest};
use crate::http::error::{ApiError, PlatformBody};
use crate::AppState;

/// Settings of the Twilio front-end (`[twilio]`).
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

/// Twilio's request validation: the signed URL is the public URL of this request.
fn authentic(
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

/// The form fields of a request Twilio signed, or the bare 403 it gets instead.
fn signed_form(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let params = form(body);
    if authentic(state, headers, uri, &params) {
        Ok(params)
    } else {
        Err(ApiError::platform_status(StatusCode::FORBIDDEN))
    }
}

/// One turn: TwiML for the call.
#[utoipa::path(post, path = "/voice/twilio/{flowId}", tag = "telephony",
    security(("twilio_signature" = [])),
    params(("flowId" = String, Path, description = "The flow the call runs"), TurnQuery),
    request_body(content = super::TwilioVoiceForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "TwiML for the turn (an apology and `<Hangup/>` when the turn cannot be answered)", content_type = "text/xml"),
        (status = 400, description = "No `CallSid`, a field longer than 128 characters, or a query string that does not parse"),
        (status = 403, description = "Missing or wrong `X-Twilio-Signature`, or an `AccountSid` not in `[twilio] account_sids`"),
        (status = 404, description = "No such flow: TwiML apology", content_type = "text/xml"),
    ))]
pub(super) async fn webhook(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<TurnQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = signed_form(&state, &headers, &uri, &body)?;
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
        return Err(ApiError::platform_status(StatusCode::BAD_REQUEST));
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
    let opts = TwimlOptions {
        workflow_sid: state.calls.platforms.twilio.workflow_sid.clone(),
    };
    let apology = || render(&apology_answer(), &NextTurn::default(), &opts);
    let r = turn::turn(&state, req)
        .await
        .map_err(|e| turn_failed(&state, Platform::Twilio, &e, PlatformBody::Xml(apology())))?;
    let account_sid = field(&params, "AccountSid").unwrap_or_default();
    if !recording(&state, account_sid, &call_sid, &r.answer).await {
        // Fail closed: never ask for a secret while the call may be recorded.
        tracing::error!(call = %call_sid, "recording could not be paused; ending the call rather than collect a secret on the recording");
        return Ok(xml(StatusCode::OK, apology()));
    }
    let base = base_url(&state, &headers);
    let path = format!("/voice/twilio/{}", enc(&flow_id));
    let next = next_urls(&base, &path, &r, false);
    Ok(xml(StatusCode::OK, render(&r.answer, &next, &opts)))
}

/// TwiML cannot pause a recording: in a secure segment, ask Twilio's REST API to (when it
/// is configured; otherwise recording must be off for the number, see the docs). False
/// when a pause was needed and Twilio did not confirm it.
async fn recording(
    state: &AppState,
    account_sid: &str,
    call_sid: &str,
    answer: &TurnAnswer,
) -> bool {
    let Some(rest) = &state.calls.platforms.twilio.rest else {
        return true;
    };
    let mut ok = true;
    for v in answer.verbs() {
        let what = match v {
            Verb::RecordingPause => Recording::Pause,
            Verb::RecordingResume => Recording::Resume,
            _ => continue,
        };
        match rest.set_recording(account_sid, call_sid, what).await {
            Ok(()) => {
                tracing::info!(call = %call_sid, status = what.status(), "call recording updated");
            }
            Err(e) => {
                tracing::warn!(call = %call_sid, error = %e, "Twilio did not change the call recording");
                ok &= what != Recording::Pause;
            }
        }
    }
    ok
}

/// Twilio's status callback: a call that is over closes its session.
#[utoipa::path(post, path = "/voice/twilio/{flowId}/status", tag = "telephony",
    security(("twilio_signature" = [])),
    params(("flowId" = String, Path, description = "The flow the call ran")),
    request_body(content = super::TwilioStatusForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 204, description = "Acknowledged (the session is closed when the call is over)"),
        (status = 400, description = "No `CallSid`"),
        (status = 403, description = "Missing or wrong `X-Twilio-Signature`, or an `AccountSid` not in `[twilio] account_sids`"),
        (status = 500, description = "The session could not be closed; Twilio retries"),
    ))]
pub(super) async fn status(
    State(state): State<AppState>,
    Path(_flow_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = signed_form(&state, &headers, &uri, &body)?;
    let Some(call_sid) = field(&params, "CallSid") else {
        return Err(ApiError::platform_status(StatusCode::BAD_REQUEST));
    };
    let over = matches!(
        field(&params, "CallStatus"),
        Some("completed" | "busy" | "failed" | "no-answer" | "canceled")
    );
    if !over {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    call_over(&state, &CallKey::new(Platform::Twilio, call_sid)).await
}

/// Deployment settings for the TwiML front-end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwimlOptions {
    /// A TaskRouter workflow (`WW…`). With one, a transfer to a queue becomes
    /// `<Enqueue workflowSid=".."><Task>{attributes}</Task></Enqueue>` and the verification
    /// result travels with the task to the agent. Without one it is a plain
    /// `<Enqueue>queue</Enqueue>`: Twilio's classic queues carry no attributes, so the
    /// agent's side learns nothing of the verification.
    pub workflow_sid: Option<String>,
}

/// What a SIP URI's header query may leave unencoded (RFC 3986 unreserved characters).
const SIP_HEADER_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Renders one turn as a complete TwiML document.
///
/// * [`TurnAnswer::Ask`]: `<Gather input="dtmf" action=.. method="POST" numDigits=..
///   finishOnKey=.. timeout=.. actionOnEmptyResult="false">` holding `verbs` then the
///   prompt's `say`, then `<Redirect method="POST">{no_input}</Redirect>`. `numDigits` is 1
///   for a menu and `max_digits` for a collect; `finishOnKey=""` disables the finish key.
/// * [`TurnAnswer::End`]: the verbs, then for a transfer to a queue an `<Enqueue>` (see
///   [`TwimlOptions::workflow_sid`]), for a transfer to a target a `<Dial>` (`<Sip>` with
///   the verification as `X-Ivrauth-*` headers in the URI for a `sip:`/`sips:` target,
///   `<Number>` otherwise, which can carry no attributes), and `<Hangup/>` for a hang-up or
///   an end. A transfer naming both a queue and a target goes to the queue.
///
/// [`Verb::RecordingPause`] and [`Verb::RecordingResume`] render nothing: TwiML has no verb
/// for them, the host pauses and resumes a recording through Twilio's REST API.
pub fn render(answer: &TurnAnswer, next: &NextTurn, opts: &TwimlOptions) -> String {
    let mut x = Xml::default();
    x.raw(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#);
    match answer {
        TurnAnswer::Ask { verbs, prompt } => {
            let num_digits = num_digits(prompt).to_string();
            let timeout = prompt.timeout_seconds.to_string();
            x.open(
                "Gather",
                &[
                    ("input", "dtmf"),
                    ("action", &next.action),
                    ("method", "POST"),
                    ("numDigits", &num_digits),
                    ("finishOnKey", finish_key(prompt)),
                    ("timeout", &timeout),
                    ("actionOnEmptyResult", "false"),
                ],
            );
            for verb in verbs.iter().chain(&prompt.say) {
                render_verb(&mut x, verb);
            }
            x.close("Gather");
            x.text_element("Redirect", &[("method", "POST")], &next.no_input);
        }
        TurnAnswer::End {
            verbs,
            end,
            attributes,
        } => {
            for verb in verbs {
                render_verb(&mut x, verb);
            }
            render_end(&mut x, end, attributes, opts);
        }
    }
    x.raw("</Response>");
    x.out
}

/// Twilio ends a Gather after `numDigits` keys: one for a menu, the most a collect takes.
fn num_digits(prompt: &Prompt) -> u32 {
    match prompt.kind {
        PromptKind::Menu => 1,
        PromptKind::Collect => prompt.max_digits.max(1),
    }
}

fn render_verb(x: &mut Xml, verb: &Verb) {
    match verb {
        Verb::Say {
            text,
            language,
            voice,
        } => {
            let mut attrs: Vec<(&str, &str)> = Vec::new();
            if let Some(language) = language {
                attrs.push(("language", language));
            }
            if let Some(voice) = voice {
                attrs.push(("voice", voice));
            }
            x.text_element("Say", &attrs, text);
        }
        Verb::Pause { seconds } => x.empty("Pause", &[("length", &seconds.to_string())]),
        Verb::Play { url } => x.text_element("Play", &[], url),
        Verb::RecordingPause | Verb::RecordingResume => {}
    }
}

fn render_end(x: &mut Xml, end: &CallEnd, attributes: &TransferAttributes, opts: &TwimlOptions) {
    match end {
        CallEnd::Transfer {
            queue: Some(queue), ..
        } => match &opts.workflow_sid {
            Some(workflow_sid) => {
                x.open("Enqueue", &[("workflowSid", workflow_sid)]);
                x.text_element("Task", &[], &task_json(attributes, queue));
                x.close("Enqueue");
            }
            None => x.text_element("Enqueue", &[], queue),
        },
        CallEnd::Transfer {
            target: Some(target),
            ..
        } => {
            x.open("Dial", &[]);
            if is_sip_uri(target) {
                x.text_element("Sip", &[], &sip_uri_with_headers(target, attributes));
            } else {
                x.text_element("Number", &[], target);
            }
            x.close("Dial");
        }
        // A transfer with nowhere to go (the flow validator rejects it) ends the call.
        CallEnd::Transfer { .. } | CallEnd::Hangup { .. } | CallEnd::End { .. } => {
            x.empty("Hangup", &[])
        }
    }
}

/// The TaskRouter task attributes: [`TransferAttributes`] in camelCase plus `"queue"`.
fn task_json(attributes: &TransferAttributes, queue: &str) -> String {
    let mut map = match serde_json::to_value(attributes) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    map.insert("queue".to_owned(), Value::String(queue.to_owned()));
    Value::Object(map).to_string()
}

/// `target` with the verification appended as `X-Ivrauth-*` headers in the URI's query
/// (Twilio passes `X-` query parameters of a `<Sip>` URI on as SIP headers).
fn sip_uri_with_headers(target: &str, attributes: &TransferAttributes) -> String {
    let mut uri = target.to_owned();
    let mut separator = if target.contains('?') { '&' } else { '?' };
    for (name, value) in transfer_headers(attributes) {
        let _ = write!(
            uri,
            "{separator}{name}={}",
            utf8_percent_encode(&value, SIP_HEADER_VALUE)
        );
        separator = '&';
    }
    uri
}

pub mod signature {
    //! Authenticating Twilio's requests: `X-Twilio-Signature`. Pure functions: the clock is an argument, nothing is logged here.
    //!
    //! Every comparison of a computed MAC with a received one is constant-time (`subtle`), and
    //! every configured secret is tried without stopping at the first match, so the time taken
    //! does not say which secret matched or how much of a signature was right. Empty secrets are
    //! skipped: a blank token in the configuration must never let anyone sign.
    //!
    //! # Twilio
    //!
    //! As documented ("Webhooks security") and as Twilio's helper libraries implement it
    //! (twilio-python `request_validator.py`, twilio-node `webhooks.ts`, their unit tests):
    //!
    //! - the signed string is the full URL Twilio requested (with its query string), followed,
    //!   for an `application/x-www-form-urlencoded` POST, by every body parameter as `name` then
    //!   `value` with no separator, sorted by name; a name given several times contributes each
    //!   distinct value once, values sorted;
    //! - the signature is `base64(HMAC-SHA1(auth token, signed string))`;
    //! - Twilio is inconsistent about the port, so the helpers accept the signature of the URL
    //!   without any port (`https://host:8443/x` → `https://host/x`) and of the URL with its
    //!   port, adding the scheme's default when it has none (`https://host/x` →
    //!   `https://host:443/x`). [`twilio_check`] does the same.
    //! - JSON bodies: Twilio adds `bodySHA256=<hex SHA-256 of the raw body>` to the URL's query
    //!   string and signs the URL alone; see [`twilio_check_json`].
    //!
    //! The URL must be the public URL the platform called (as configured), byte for byte; it is
    //! not normalised here (twilio-node would, for instance, percent-encode a `'` in the query).

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use subtle::{Choice, ConstantTimeEq};

    use crate::calls::{SignatureError, MAX_SIGNATURE_HEADER_LEN as MAX_HEADER_LEN};
    use sha1::Sha1;

    /// Name of Twilio's signature header.
    pub const TWILIO_SIGNATURE_HEADER: &str = "X-Twilio-Signature";
    /// The query parameter Twilio adds for JSON bodies.
    const TWILIO_BODY_HASH_PARAM: &str = "bodySHA256";

    type HmacSha1 = Hmac<Sha1>;

    /// Twilio's signature of a request to `url` with the form parameters `params` (in any
    /// order; repeated names allowed), as the `X-Twilio-Signature` header carries it.
    pub fn twilio_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
        STANDARD.encode(twilio_mac(auth_token, url, params))
    }

    /// Whether `header` is a valid Twilio signature of a form POST (or a GET: pass no params) to
    /// `url` under any of `tokens` (the current auth token and, during a rotation, the previous
    /// one). False on an empty or malformed header.
    pub fn twilio_verify(
        tokens: &[&[u8]],
        url: &str,
        params: &[(String, String)],
        header: &str,
    ) -> bool {
        twilio_check(tokens, url, params, header).is_ok()
    }

    /// [`twilio_verify`] with the reason, for the log line.
    pub fn twilio_check(
        tokens: &[&[u8]],
        url: &str,
        params: &[(String, String)],
        header: &str,
    ) -> Result<(), SignatureError> {
        let received = decode_twilio_header(header)?;
        let (without_port, with_port) = twilio_url_variants(url);
        let mut matched = Choice::from(0);
        for token in tokens.iter().filter(|t| !t.is_empty()) {
            matched |= twilio_mac(token, &without_port, params).ct_eq(&received);
            matched |= twilio_mac(token, &with_port, params).ct_eq(&received);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// A Twilio request with an `application/json` body: `url` carries
    /// `bodySHA256=<hex SHA-256 of body>` in its query string and the signature covers the URL
    /// alone. Both the signature and the body hash must match.
    pub fn twilio_check_json(
        tokens: &[&[u8]],
        url: &str,
        body: &[u8],
        header: &str,
    ) -> Result<(), SignatureError> {
        decode_twilio_header(header)?;
        let claimed_hash =
            query_param(url, TWILIO_BODY_HASH_PARAM).ok_or(SignatureError::Malformed)?;
        twilio_check(tokens, url, &[], header)?;
        let actual = hex::encode(Sha256::digest(body));
        if bool::from(actual.as_bytes().ct_eq(claimed_hash.as_bytes())) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// The raw HMAC-SHA1 of Twilio's signed string.
    fn twilio_mac(auth_token: &[u8], url: &str, params: &[(String, String)]) -> [u8; 20] {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = match HmacSha1::new_from_slice(auth_token) {
            Ok(mac) => mac,
            Err(_) => return [0; 20],
        };
        mac.update(url.as_bytes());
        let mut sorted: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Sorting the pairs sorts by name, then each name's values; equal pairs are signed once.
        sorted.sort_unstable();
        sorted.dedup();
        for (name, value) in sorted {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// The received signature's 20 bytes. Twilio sends canonical padded standard base64.
    fn decode_twilio_header(header: &str) -> Result<[u8; 20], SignatureError> {
        let header = header.trim();
        if header.is_empty() {
            return Err(SignatureError::Missing);
        }
        if header.len() > MAX_HEADER_LEN {
            return Err(SignatureError::Malformed);
        }
        let bytes = STANDARD
            .decode(header)
            .map_err(|_| SignatureError::Malformed)?;
        <[u8; 20]>::try_from(bytes.as_slice()).map_err(|_| SignatureError::Malformed)
    }

    /// `url` without any port, and `url` with a port (its own, else the scheme's default), as
    /// Twilio's helpers try both. One of the two is `url` itself.
    fn twilio_url_variants(url: &str) -> (String, String) {
        let Some(scheme_end) = url.find("://") else {
            return (url.to_owned(), url.to_owned());
        };
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| authority_start + i);
        let authority = &url[authority_start..authority_end];
        // The host starts after any userinfo; an IPv6 literal's colons are inside brackets.
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        let host_port = &authority[host_start..];
        let search_from = host_port.rfind(']').map_or(0, |i| i + 1);
        let port_colon = host_port[search_from..]
            .rfind(':')
            .map(|i| search_from + i)
            .filter(|&i| {
                let port = &host_port[i + 1..];
                !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
            });
        let host_end = authority_start + host_start + port_colon.unwrap_or(host_port.len());
        let before = &url[..host_end];
        let after = &url[authority_end..];
        match port_colon {
            Some(_) => (format!("{before}{after}"), url.to_owned()),
            None => {
                let scheme = &url[..scheme_end];
                let port = if scheme.eq_ignore_ascii_case("https") {
                    443
                } else {
                    80
                };
                (url.to_owned(), format!("{before}:{port}{after}"))
            }
        }
    }

    /// The first value of query parameter `name` in `url`, percent-decoded.
    fn query_param(url: &str, name: &str) -> Option<String> {
        let without_fragment = url.split('#').next().unwrap_or(url);
        let (_, query) = without_fragment.split_once('?')?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
        use super::*;
        fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }

        // Vectors from twilio-python's tests/unit/test_request_validator.py (also used by
        // twilio-php and twilio-csharp): token 12345, this URL, these parameters.
        const TOKEN: &[u8] = b"12345";
        const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

        fn documented_params(number: &str) -> Vec<(String, String)> {
            pairs(&[
                ("CallSid", "CA1234567890ABCDE"),
                ("Digits", "1234"),
                ("From", number),
                ("To", "+18005551212"),
                ("Caller", number),
            ])
        }

        #[test]
        fn twilio_library_test_vector() {
            let params = documented_params("+14158675309");
            assert_eq!(
                twilio_signature(TOKEN, URL, &params),
                "RSOYDt4T1cUTdK1PDd93/VVr8B8="
            );
            assert!(twilio_verify(
                &[TOKEN],
                URL,
                &params,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8="
            ));
        }

        #[test]
        fn twilio_docs_example() {
            // The "Webhooks security" page's example prints this signature for +14158675310.
            let params = documented_params("+14158675310");
            assert_eq!(
                twilio_signature(TOKEN, URL, &params),
                "GvWf1cFY/Q7PnoempGyD5oXAezc="
            );
        }

        #[test]
        fn twilio_parameter_order_does_not_matter() {
            let mut params = documented_params("+14158675309");
            params.reverse();
            assert!(twilio_verify(
                &[TOKEN],
                URL,
                &params,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8="
            ));
        }

        #[test]
        fn twilio_repeated_names_sorted_and_deduplicated() {
            // twilio-python test_compute_signature_duplicate_multi_dict / twilio-php
            // testValidateWithArrayAndDuplicates.
            let params = pairs(&[
                ("Sid", "CA123"),
                ("SidAccount", "AC123"),
                ("Digits", "5678"),
                ("Digits", "1234"),
                ("Digits", "1234"),
            ]);
            assert_eq!(
                twilio_signature(TOKEN, URL, &params),
                "IK+Dwps556ElfBT0I3Rgjkr1wJU="
            );
        }

        #[test]
        fn twilio_no_params_signs_the_url_alone() {
            let mut mac = HmacSha1::new_from_slice(TOKEN).unwrap();
            mac.update(URL.as_bytes());
            let expected = STANDARD.encode(mac.finalize().into_bytes());
            assert_eq!(twilio_signature(TOKEN, URL, &[]), expected);
        }

        #[test]
        fn twilio_one_character_changes_are_refused() {
            let params = documented_params("+14158675309");
            let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
            // The header.
            assert!(!twilio_verify(
                &[TOKEN],
                URL,
                &params,
                "RSOYDt4T1cUTdK1PDd93/VVr8B9="
            ));
            assert!(!twilio_verify(
                &[TOKEN],
                URL,
                &params,
                "SSOYDt4T1cUTdK1PDd93/VVr8B8="
            ));
            // The URL.
            assert!(!twilio_verify(
                &[TOKEN],
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params,
                good
            ));
            assert!(!twilio_verify(
                &[TOKEN],
                "http://mycompany.com/myapp.php?foo=1&bar=2",
                &params,
                good
            ));
            // A value, a name, an added parameter, a removed one.
            let mut p = params.clone();
            p[1].1 = "1235".to_owned();
            assert!(!twilio_verify(&[TOKEN], URL, &p, good));
            let mut p = params.clone();
            p[1].0 = "digits".to_owned();
            assert!(!twilio_verify(&[TOKEN], URL, &p, good));
            let mut p = params.clone();
            p.push(("Extra".to_owned(), String::new()));
            assert!(!twilio_verify(&[TOKEN], URL, &p, good));
            let mut p = params.clone();
            p.pop();
            assert!(!twilio_verify(&[TOKEN], URL, &p, good));
            // The token.
            assert!(!twilio_verify(&[b"12346"], URL, &params, good));
        }

        #[test]
        fn twilio_empty_and_malformed_headers() {
            let params = documented_params("+14158675309");
            let check = |h: &str| twilio_check(&[TOKEN], URL, &params, h);
            assert_eq!(check(""), Err(SignatureError::Missing));
            assert_eq!(check("   "), Err(SignatureError::Missing));
            assert_eq!(check("not base64!"), Err(SignatureError::Malformed));
            assert_eq!(
                check("RSOYDt4T1cUTdK1PDd93/VVr8B8"),
                Err(SignatureError::Malformed)
            );
            assert_eq!(check("AAAA"), Err(SignatureError::Malformed));
            assert_eq!(check(&"A".repeat(5000)), Err(SignatureError::Malformed));
            assert_eq!(
                check("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(check(" RSOYDt4T1cUTdK1PDd93/VVr8B8= "), Ok(()));
        }

        #[test]
        fn twilio_no_usable_token_refuses() {
            let params = documented_params("+14158675309");
            let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
            assert!(!twilio_verify(&[], URL, &params, good));
            let empty_sig = twilio_signature(b"", URL, &params);
            assert!(!twilio_verify(&[b""], URL, &params, &empty_sig));
        }

        #[test]
        fn twilio_port_variants_as_the_helpers_do() {
            let params = documented_params("+14158675309");
            // twilio-python test_validation_removes_port_on_https: a signature of the URL without
            // the port is accepted for the URL with any port.
            let with_port = URL.replace(".com", ".com:1234");
            assert!(twilio_verify(
                &[TOKEN],
                &with_port,
                &params,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8="
            ));
            // test_validation_removes_port_on_http: the signature of the URL with the port.
            let http_with_port = with_port.replace("https", "http");
            assert!(twilio_verify(
                &[TOKEN],
                &http_with_port,
                &params,
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
            ));
            // test_validation_adds_port_on_https / _on_http: the default port is added.
            assert!(twilio_verify(
                &[TOKEN],
                URL,
                &params,
                "kvajT1Ptam85bY51eRf/AJRuM3w="
            ));
            assert!(twilio_verify(
                &[TOKEN],
                &URL.replace("https", "http"),
                &params,
                "0ZXoZLH/DfblKGATFgpif+LLRf4="
            ));
            // And both ways round with our own signer.
            let sig_443 = twilio_signature(
                TOKEN,
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params,
            );
            assert!(twilio_verify(&[TOKEN], URL, &params, &sig_443));
            let sig_plain = twilio_signature(TOKEN, URL, &params);
            assert!(twilio_verify(
                &[TOKEN],
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params,
                &sig_plain
            ));
            // A different port is not the default: its signature does not pass for the plain URL.
            let sig_8443 = twilio_signature(
                TOKEN,
                "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
                &params,
            );
            assert!(!twilio_verify(&[TOKEN], URL, &params, &sig_8443));
        }

        #[test]
        fn twilio_url_variants_cover_the_odd_shapes() {
            let v = |u: &str| twilio_url_variants(u);
            assert_eq!(
                v("https://h.example/p?q=1"),
                (
                    "https://h.example/p?q=1".to_owned(),
                    "https://h.example:443/p?q=1".to_owned()
                )
            );
            assert_eq!(
                v("http://h.example:8080/p"),
                (
                    "http://h.example/p".to_owned(),
                    "http://h.example:8080/p".to_owned()
                )
            );
            assert_eq!(
                v("https://h.example"),
                (
                    "https://h.example".to_owned(),
                    "https://h.example:443".to_owned()
                )
            );
            assert_eq!(
                v("https://h.example?x=a:1"),
                (
                    "https://h.example?x=a:1".to_owned(),
                    "https://h.example:443?x=a:1".to_owned()
                )
            );
            assert_eq!(
                v("https://u:pw@h.example:444/p"),
                (
                    "https://u:pw@h.example/p".to_owned(),
                    "https://u:pw@h.example:444/p".to_owned()
                )
            );
            assert_eq!(
                v("https://[::1]/p"),
                (
                    "https://[::1]/p".to_owned(),
                    "https://[::1]:443/p".to_owned()
                )
            );
            assert_eq!(
                v("https://[::1]:8443/p"),
                (
                    "https://[::1]/p".to_owned(),
                    "https://[::1]:8443/p".to_owned()
                )
            );
            assert_eq!(
                v("no-scheme"),
                ("no-scheme".to_owned(), "no-scheme".to_owned())
            );
        }

        #[test]
        fn twilio_rotation_accepts_the_previous_token() {
            let params = documented_params("+14158675309");
            let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
            assert!(twilio_verify(&[b"new-token", TOKEN], URL, &params, good));
            assert!(twilio_verify(&[TOKEN, b"new-token"], URL, &params, good));
            assert!(!twilio_verify(&[b"new-token"], URL, &params, good));
        }

        #[test]
        fn twilio_json_body_variant() {
            // twilio-python test_validation_of_body_succeeds.
            let body = br#"{"property": "value", "boolean": true}"#;
            let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
            let url = format!("{URL}&bodySHA256={hash}");
            let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
            assert_eq!(twilio_check_json(&[TOKEN], &url, body, sig), Ok(()));
            // Another body under the same URL and signature.
            assert_eq!(
                twilio_check_json(
                    &[TOKEN],
                    &url,
                    br#"{"property": "value", "boolean": false}"#,
                    sig
                ),
                Err(SignatureError::Mismatch)
            );
            // Another hash in the URL breaks the signature.
            let other = format!("{URL}&bodySHA256={}", hex::encode(Sha256::digest(b"x")));
            assert_eq!(
                twilio_check_json(&[TOKEN], &other, b"x", sig),
                Err(SignatureError::Mismatch)
            );
            // No hash in the URL.
            assert_eq!(
                twilio_check_json(&[TOKEN], URL, body, sig),
                Err(SignatureError::Malformed)
            );
            assert_eq!(
                twilio_check_json(&[TOKEN], &url, body, ""),
                Err(SignatureError::Missing)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use quick_xml::events::Event;
    use quick_xml::Reader;

    #[derive(Debug, Clone, PartialEq)]
    enum Node {
        El(El),
        Text(String),
    }

    #[derive(Debug, Clone, PartialEq)]
    struct El {
        name: String,
        attrs: Vec<(String, String)>,
        children: Vec<Node>,
    }

    impl El {
        fn attr(&self, key: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }

        fn elements(&self) -> Vec<&El> {
            self.children
                .iter()
                .filter_map(|c| match c {
                    Node::El(e) => Some(e),
                    Node::Text(_) => None,
                })
                .collect()
        }

        fn names(&self) -> Vec<&str> {
            self.elements().iter().map(|e| e.name.as_str()).collect()
        }

        fn text(&self) -> String {
            self.children
                .iter()
                .map(|c| match c {
                    Node::Text(t) => t.clone(),
                    Node::El(_) => String::new(),
                })
                .collect()
        }
    }

    fn element(e: &quick_xml::events::BytesStart<'_>) -> El {
        El {
            name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
            attrs: e
                .attributes()
                .map(|a| {
                    let a = a.unwrap();
                    (
                        String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                        a.unescape_value().unwrap().into_owned(),
                    )
                })
                .collect(),
            children: Vec::new(),
        }
    }

    /// Parses a document strictly (matching end tags, no stray text outside the root) and
    /// checks every character is one XML 1.0 allows.
    fn parse(xml: &str) -> El {
        assert!(
            xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?>"#),
            "{xml}"
        );
        for c in xml.chars() {
            assert!(
                matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}'),
                "disallowed {c:?} in {xml:?}"
            );
        }
        let mut reader = Reader::from_str(xml);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<El> = Vec::new();
        let mut root: Option<El> = None;
        loop {
            match reader.read_event().unwrap() {
                Event::Decl(_) => {}
                Event::Start(e) => stack.push(element(&e)),
                Event::Empty(e) => {
                    let el = element(&e);
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Node::El(el)),
                        None => panic!("empty element outside the root"),
                    }
                }
                Event::End(_) => {
                    let el = stack.pop().unwrap();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Node::El(el)),
                        None => {
                            assert!(root.is_none(), "two roots");
                            root = Some(el);
                        }
                    }
                }
                Event::Text(t) => {
                    let text = t.unescape().unwrap().into_owned();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Node::Text(text)),
                        None => assert!(text.trim().is_empty(), "text outside the root: {text:?}"),
                    }
                }
                Event::Eof => break,
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert!(stack.is_empty(), "unclosed elements");
        let root = root.expect("a root element");
        assert_eq!(root.name, "Response");
        root
    }

    fn next() -> NextTurn {
        NextTurn {
            action: "https://ivr.example.com/calls/twilio/CA1/turn?n=2&s=abc".to_owned(),
            no_input: "https://ivr.example.com/calls/twilio/CA1/turn?n=2&s=abc&noInput=1"
                .to_owned(),
            no_match: "https://ivr.example.com/calls/twilio/CA1/nomatch".to_owned(),
            hangup: "https://ivr.example.com/calls/twilio/CA1/hangup".to_owned(),
        }
    }

    fn say(text: &str) -> Verb {
        Verb::Say {
            text: text.to_owned(),
            language: None,
            voice: None,
        }
    }

    fn prompt(kind: PromptKind, say: Vec<Verb>) -> Prompt {
        Prompt {
            node_id: "ask_pin".to_owned(),
            kind,
            say,
            min_digits: 4,
            max_digits: 6,
            finish_on_key: "#".to_owned(),
            timeout_seconds: 7,
            secure: true,
            choices: if kind == PromptKind::Menu {
                vec!["1".to_owned(), "2".to_owned()]
            } else {
                Vec::new()
            },
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
            reason: Some("Account Recovery & Billing".to_owned()),
            call_id: "call-1".to_owned(),
        }
    }

    fn end(end: CallEnd) -> TurnAnswer {
        TurnAnswer::End {
            verbs: vec![say("Transferring you now.")],
            end,
            attributes: attributes(),
        }
    }

    fn transfer(queue: Option<&str>, target: Option<&str>) -> CallEnd {
        CallEnd::Transfer {
            node_id: "to_agent".to_owned(),
            queue: queue.map(str::to_owned),
            target: target.map(str::to_owned),
            reason: Some("Account Recovery & Billing".to_owned()),
        }
    }

    #[test]
    fn a_collect_is_one_gather_holding_every_verb_then_a_redirect() {
        let answer = TurnAnswer::Ask {
            verbs: vec![
                say("Welcome."),
                Verb::Pause { seconds: 1 },
                Verb::RecordingPause,
                Verb::Play {
                    url: "https://cdn.example.com/tone.wav?a=1&b=2".to_owned(),
                },
            ],
            prompt: prompt(
                PromptKind::Collect,
                vec![
                    say("Sorry, that did not match."),
                    Verb::Say {
                        text: "Enter your PIN.".to_owned(),
                        language: Some("en-GB".to_owned()),
                        voice: Some("Polly.Amy".to_owned()),
                    },
                ],
            ),
        };
        let xml = render(&answer, &next(), &TwimlOptions::default());
        assert!(xml.contains("turn?n=2&amp;s=abc"), "{xml}");
        let root = parse(&xml);
        assert_eq!(root.names(), ["Gather", "Redirect"]);
        let gather = root.elements()[0];
        assert_eq!(
            gather.attrs,
            [
                ("input", "dtmf"),
                (
                    "action",
                    "https://ivr.example.com/calls/twilio/CA1/turn?n=2&s=abc"
                ),
                ("method", "POST"),
                ("numDigits", "6"),
                ("finishOnKey", "#"),
                ("timeout", "7"),
                ("actionOnEmptyResult", "false"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // RecordingPause renders nothing; the rest keeps its order inside the Gather.
        assert_eq!(gather.names(), ["Say", "Pause", "Play", "Say", "Say"]);
        let inner = gather.elements();
        assert_eq!(inner[0].text(), "Welcome.");
        assert!(inner[0].attrs.is_empty());
        assert_eq!(inner[1].attr("length"), Some("1"));
        assert_eq!(inner[2].text(), "https://cdn.example.com/tone.wav?a=1&b=2");
        assert_eq!(inner[3].text(), "Sorry, that did not match.");
        assert_eq!(inner[4].text(), "Enter your PIN.");
        assert_eq!(inner[4].attr("language"), Some("en-GB"));
        assert_eq!(inner[4].attr("voice"), Some("Polly.Amy"));
        let redirect = root.elements()[1];
        assert_eq!(redirect.attr("method"), Some("POST"));
        assert_eq!(redirect.text(), next().no_input);
    }

    #[test]
    fn a_menu_takes_one_key_and_an_empty_finish_key_disables_it() {
        let mut p = prompt(
            PromptKind::Menu,
            vec![say("Press 1 for sales, 2 for support.")],
        );
        let root = parse(&render(
            &TurnAnswer::Ask {
                verbs: Vec::new(),
                prompt: p.clone(),
            },
            &next(),
            &TwimlOptions::default(),
        ));
        let gather = root.elements()[0];
        assert_eq!(gather.attr("numDigits"), Some("1"));
        assert_eq!(gather.attr("finishOnKey"), Some("#"));
        assert_eq!(gather.names(), ["Say"]);

        p.finish_on_key = String::new();
        let xml = render(
            &TurnAnswer::Ask {
                verbs: Vec::new(),
                prompt: p.clone(),
            },
            &next(),
            &TwimlOptions::default(),
        );
        assert!(xml.contains(r#"finishOnKey="""#), "{xml}");

        // A finish key that is also a choice would swallow that choice: it is disabled.
        p.finish_on_key = "#".to_owned();
        p.choices.push("#".to_owned());
        let root = parse(&render(
            &TurnAnswer::Ask {
                verbs: Vec::new(),
                prompt: p,
            },
            &next(),
            &TwimlOptions::default(),
        ));
        assert_eq!(root.elements()[0].attr("finishOnKey"), Some(""));
    }

    #[test]
    fn hostile_text_stays_well_formed_and_round_trips() {
        let hostile = "a & b < c > d ]]> \"quoted\" 'single' \u{0}\u{7}\u{1b}\u{FFFE}\u{FFFF} tab\there </Say><Hangup/>";
        let answer = TurnAnswer::Ask {
            verbs: vec![Verb::Say {
                text: hostile.to_owned(),
                language: Some("en\"-<US>".to_owned()),
                voice: Some("v&\u{1}".to_owned()),
            }],
            prompt: prompt(
                PromptKind::Collect,
                vec![Verb::Play {
                    url: "https://x.example/a.wav?x=1&y=<2>\u{0}".to_owned(),
                }],
            ),
        };
        let mut n = next();
        n.action = "https://ivr.example.com/t?a=\"1\"&b='<2>'".to_owned();
        n.no_input = "https://ivr.example.com/t?]]>&\u{2}".to_owned();
        let xml = render(&answer, &n, &TwimlOptions::default());
        assert!(!xml.contains("]]>"), "{xml}");
        let root = parse(&xml);
        assert_eq!(root.names(), ["Gather", "Redirect"]);
        let gather = root.elements()[0];
        assert_eq!(
            gather.attr("action"),
            Some("https://ivr.example.com/t?a=\"1\"&b='<2>'")
        );
        assert_eq!(gather.names(), ["Say", "Play"]);
        let said = gather.elements()[0];
        assert_eq!(
            said.text(),
            "a & b < c > d ]]> \"quoted\" 'single'  tab\there </Say><Hangup/>"
        );
        assert_eq!(said.attr("language"), Some("en\"-<US>"));
        assert_eq!(said.attr("voice"), Some("v&"));
        assert_eq!(
            gather.elements()[1].text(),
            "https://x.example/a.wav?x=1&y=<2>"
        );
        assert_eq!(root.elements()[1].text(), "https://ivr.example.com/t?]]>&");
    }

    #[test]
    fn a_queue_transfer_with_a_workflow_carries_the_attributes_as_a_task() {
        let opts = TwimlOptions {
            workflow_sid: Some("WW0123".to_owned()),
        };
        let root = parse(&render(
            &end(transfer(Some("billing"), None)),
            &next(),
            &opts,
        ));
        assert_eq!(root.names(), ["Say", "Enqueue"]);
        let enqueue = root.elements()[1];
        assert_eq!(enqueue.attr("workflowSid"), Some("WW0123"));
        assert_eq!(enqueue.names(), ["Task"]);
        let task: Value = serde_json::from_str(&enqueue.elements()[0].text()).unwrap();
        assert_eq!(
            task,
            serde_json::json!({
                "verified": true,
                "factors": ["pin"],
                "account": "12345678",
                "reason": "Account Recovery & Billing",
                "callId": "call-1",
                "queue": "billing",
            })
        );
    }

    #[test]
    fn a_queue_transfer_without_a_workflow_is_a_plain_enqueue() {
        let root = parse(&render(
            &end(transfer(Some("billing & <vip>"), Some("+15550100"))),
            &next(),
            &TwimlOptions::default(),
        ));
        assert_eq!(root.names(), ["Say", "Enqueue"]);
        let enqueue = root.elements()[1];
        assert!(enqueue.attrs.is_empty());
        assert_eq!(enqueue.text(), "billing & <vip>");
    }

    #[test]
    fn a_transfer_to_a_number_dials_it() {
        let root = parse(&render(
            &end(transfer(None, Some("+15550100"))),
            &next(),
            &TwimlOptions::default(),
        ));
        assert_eq!(root.names(), ["Say", "Dial"]);
        let dial = root.elements()[1];
        assert_eq!(dial.names(), ["Number"]);
        assert_eq!(dial.elements()[0].text(), "+15550100");
    }

    #[test]
    fn a_transfer_to_a_sip_uri_carries_the_attributes_as_headers() {
        let xml = render(
            &end(transfer(
                None,
                Some("sip:agents@pbx.example.com;transport=tls"),
            )),
            &next(),
            &TwimlOptions::default(),
        );
        assert!(
            xml.contains("?X-Ivrauth-Verified=true&amp;X-Ivrauth-Factors=pin&amp;"),
            "{xml}"
        );
        let root = parse(&xml);
        let dial = root.elements()[1];
        assert_eq!(dial.names(), ["Sip"]);
        assert_eq!(
            dial.elements()[0].text(),
            "sip:agents@pbx.example.com;transport=tls?X-Ivrauth-Verified=true&X-Ivrauth-Factors=pin\
             &X-Ivrauth-Account=12345678&X-Ivrauth-Reason=Account%20Recovery%20%26%20Billing"
        );

        // An unverified caller, a URI that already has headers, several factors.
        let answer = TurnAnswer::End {
            verbs: Vec::new(),
            end: transfer(None, Some("SIPS:desk@pbx.example.com?X-Existing=1")),
            attributes: TransferAttributes {
                verified: false,
                factors: vec!["pin".to_owned(), "otp".to_owned()],
                failure_reason: Some("max_attempts".to_owned()),
                account: None,
                reason: None,
                call_id: "call-2".to_owned(),
            },
        };
        let root = parse(&render(&answer, &next(), &TwimlOptions::default()));
        assert_eq!(
            root.elements()[0].elements()[0].text(),
            "SIPS:desk@pbx.example.com?X-Existing=1&X-Ivrauth-Verified=false&X-Ivrauth-Factors=pin%2Cotp\
             &X-Ivrauth-Failure-Reason=max_attempts"
        );
    }

    #[test]
    fn hangups_and_ends_hang_up() {
        for call_end in [
            CallEnd::Hangup {
                node_id: "bye".to_owned(),
            },
            CallEnd::End {
                end_node: "done".to_owned(),
                status_code: Some(200),
            },
            transfer(None, None),
        ] {
            let answer = TurnAnswer::End {
                verbs: vec![
                    say("Goodbye."),
                    Verb::RecordingResume,
                    Verb::Pause { seconds: 2 },
                ],
                end: call_end,
                attributes: attributes(),
            };
            let xml = render(&answer, &next(), &TwimlOptions::default());
            let root = parse(&xml);
            assert_eq!(root.names(), ["Say", "Pause", "Hangup"]);
            assert!(root.elements()[2].children.is_empty());
            // Nothing of the attributes or the URLs leaks into a hang-up.
            assert!(
                !xml.contains("call-1")
                    && !xml.contains("12345678")
                    && !xml.contains("ivr.example.com"),
                "{xml}"
            );
        }
    }

    #[test]
    fn the_document_is_exactly_as_documented() {
        let answer = TurnAnswer::Ask {
            verbs: Vec::new(),
            prompt: prompt(PromptKind::Collect, vec![say("Enter your PIN.")]),
        };
        assert_eq!(
            render(&answer, &next(), &TwimlOptions::default()),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Gather input=\"dtmf\" action=\"https://ivr.example.com/calls/twilio/CA1/turn?n=2&amp;s=abc\" method=\"POST\" \
             numDigits=\"6\" finishOnKey=\"#\" timeout=\"7\" actionOnEmptyResult=\"false\"><Say>Enter your PIN.</Say></Gather>\
             <Redirect method=\"POST\">https://ivr.example.com/calls/twilio/CA1/turn?n=2&amp;s=abc&amp;noInput=1</Redirect>\
             </Response>"
        );
    }
}
