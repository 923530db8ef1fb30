//! jambonz: the jambonz front-end, in one file: settings ([`JambonzConfig`]), the
//! webhooks (`POST /voice/jambonz/{flowId}` answers each turn with jambonz verbs, `POST
//! /voice/jambonz/{flowId}/status` closes the call's session when jambonz reports the call
//! over), request authentication (`Jambonz-Signature`, HMAC-SHA256 over `t.body`,
//! [`signature`]) and the renderer ([`render`]).
//!
//! # Rendering
//!
//! jambonz renderer: a platform-neutral [`TurnAnswer`] becomes the array of verbs a jambonz
//! webhook answers with, in the shapes of `@jambonz/verb-specifications`.
//!
//! * `Say` → `{"verb":"say","text":..}`, with `"synthesizer":{"vendor":"default",
//!   "language":..,"voice":..}` when the verb names a language or a voice (the
//!   specification requires a synthesizer's `vendor`; jambonz reads `"default"` as the
//!   application's own vendor).
//! * `Pause` → `{"verb":"pause","length":n}`; `Play` → `{"verb":"play","url":..}`.
//! * `RecordingPause` / `RecordingResume` → `{"verb":"config","record":{"action":
//!   "pauseCallRecording"}}` / `"resumeCallRecording"` (jambonz's SIPREC recording).
//! * A prompt → `{"verb":"gather","input":["digits"],"actionHook":..,..}`. A gather plays one
//!   nested `say` or `play`, so the trailing run of `Say`s (the answer's verbs, then the
//!   prompt's, as long as they share a language and a voice) is joined with spaces into the
//!   nested `say`; everything before that run stays as separate verbs ahead of the gather, in
//!   order. When the last verb is a `Play`, it becomes the nested `play` instead. jambonz
//!   posts a gather that timed out to the same `actionHook` (`reason: "timeout"`), so
//!   [`NextTurn::no_input`] has no place here.
//! * Transfers: to a queue, `{"verb":"tag","data":{attributes}}` then
//!   `{"verb":"enqueue","name":queue}`, so the verification travels with the call; to a
//!   target, `{"verb":"dial","target":[{"type":"phone","number":..}]` (or
//!   `{"type":"sip","sipUri":..}` for a `sip:`/`sips:` URI) `,"headers":{"X-Ivrauth-*":..}}`.
//!   A transfer naming both goes to the queue.
//! * A hang-up or an end → `{"verb":"hangup"}`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use ivrauth_core::call::CallKey;
use ivrauth_core::ivr::{CallEnd, Input, Prompt, PromptKind, Verb};
use ivrauth_core::secret::Secret;

use super::{
    apology_answer, base_url, call_over, enc, finish_key, is_sip_uri, next_urls, too_long,
    transfer_headers, turn_failed, NextTurn, Platform, TransferAttributes, TurnAnswer, TurnQuery,
};
use crate::app::turn::{self, TurnRequest};
use crate::http::error::{ApiError, PlatformBody};
use crate::AppState;

/// Settings of the jambonz front-end (`[jambonz]`).
#[derive(Default)]
pub struct JambonzConfig {
    /// Webhook secrets: the current one, and the previous one during a rotation.
    pub secrets: Vec<Secret<String>>,
    pub skip_signature_check: bool,
}

fn authentic(state: &AppState, headers: &HeaderMap, body: &[u8]) -> bool {
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

/// A signed JSON payload, or the bare status the platform gets instead.
fn payload(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if !authentic(state, headers, body) {
        return Err(ApiError::platform_status(StatusCode::FORBIDDEN));
    }
    serde_json::from_slice::<Value>(body)
        .map_err(|_| ApiError::platform_status(StatusCode::BAD_REQUEST))
}

/// One turn: jambonz verbs for the call.
#[utoipa::path(post, path = "/voice/jambonz/{flowId}", tag = "telephony",
    security(("jambonz_signature" = [])),
    params(("flowId" = String, Path, description = "The flow the call runs"), TurnQuery),
    request_body = super::JambonzWebhook,
    responses(
        (status = 200, description = "The jambonz verbs of the turn (an apology and `hangup` when the turn cannot be answered)", body = [Object]),
        (status = 400, description = "The body is not JSON, has no `call_sid`, or a field is longer than 128 characters; or a query string that does not parse"),
        (status = 403, description = "Missing, stale or wrong `Jambonz-Signature`"),
        (status = 404, description = "No such flow: apology verbs", body = [Object]),
    ))]
pub(super) async fn webhook(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<TurnQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let payload = payload(&state, &headers, &body)?;
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
        return Err(ApiError::platform_status(StatusCode::BAD_REQUEST));
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
    let r = turn::turn(&state, req).await.map_err(|e| {
        let apology = render(&apology_answer(), &NextTurn::default());
        turn_failed(&state, Platform::Jambonz, &e, PlatformBody::Json(apology))
    })?;
    let base = base_url(&state, &headers);
    let path = format!("/voice/jambonz/{}", enc(&flow_id));
    Ok(Json(render(&r.answer, &next_urls(&base, &path, &r, false))).into_response())
}

/// jambonz's call status hook: a call that is over closes its session.
#[utoipa::path(post, path = "/voice/jambonz/{flowId}/status", tag = "telephony",
    security(("jambonz_signature" = [])),
    params(("flowId" = String, Path, description = "The flow the call ran")),
    request_body = super::JambonzCallStatus,
    responses(
        (status = 204, description = "Acknowledged (the session is closed when the call is over)"),
        (status = 400, description = "The body is not JSON or has no `call_sid`"),
        (status = 403, description = "Missing, stale or wrong `Jambonz-Signature`"),
        (status = 500, description = "The session could not be closed; jambonz retries"),
    ))]
pub(super) async fn status(
    State(state): State<AppState>,
    Path(_flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let payload = payload(&state, &headers, &body)?;
    let Some(call_sid) = payload.get("call_sid").and_then(Value::as_str) else {
        return Err(ApiError::platform_status(StatusCode::BAD_REQUEST));
    };
    let over = matches!(
        payload.get("call_status").and_then(Value::as_str),
        Some("completed" | "failed" | "busy" | "no-answer")
    );
    if !over {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    call_over(&state, &CallKey::new(Platform::Jambonz, call_sid)).await
}

/// Renders one turn as the jambonz verb array to answer the webhook with.
pub fn render(answer: &TurnAnswer, next: &NextTurn) -> Value {
    let mut out = Vec::new();
    match answer {
        TurnAnswer::Ask { verbs, prompt } => {
            let all: Vec<&Verb> = verbs.iter().chain(&prompt.say).collect();
            let (before, nested) = split_nested(&all);
            for verb in before {
                out.push(verb_json(verb));
            }
            out.push(gather(prompt, next, nested));
        }
        TurnAnswer::End {
            verbs,
            end,
            attributes,
        } => {
            for verb in verbs {
                out.push(verb_json(verb));
            }
            end_json(&mut out, end, attributes);
        }
    }
    Value::Array(out)
}

/// What a gather plays while it listens.
enum Nested<'a> {
    Nothing,
    Say {
        texts: Vec<&'a str>,
        language: &'a Option<String>,
        voice: &'a Option<String>,
    },
    Play(&'a str),
}

/// Splits the verbs into those played before the gather and the gather's nested prompt.
fn split_nested<'a>(all: &[&'a Verb]) -> (Vec<&'a Verb>, Nested<'a>) {
    let Some((last, rest)) = all.split_last() else {
        return (Vec::new(), Nested::Nothing);
    };
    match last {
        Verb::Play { url } => (rest.to_vec(), Nested::Play(url)),
        Verb::Say {
            language, voice, ..
        } => {
            let run = all
                .iter()
                .rev()
                .take_while(|v| matches!(v, Verb::Say { language: l, voice: s, .. } if l == language && s == voice))
                .count();
            let (before, run) = all.split_at(all.len() - run);
            let texts = run
                .iter()
                .filter_map(|v| match v {
                    Verb::Say { text, .. } if !text.trim().is_empty() => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if texts.is_empty() {
                return (before.to_vec(), Nested::Nothing);
            }
            (
                before.to_vec(),
                Nested::Say {
                    texts,
                    language,
                    voice,
                },
            )
        }
        _ => (all.to_vec(), Nested::Nothing),
    }
}

fn gather(prompt: &Prompt, next: &NextTurn, nested: Nested<'_>) -> Value {
    let mut g = Map::new();
    g.insert("verb".to_owned(), json!("gather"));
    g.insert("input".to_owned(), json!(["digits"]));
    g.insert("actionHook".to_owned(), json!(next.action));
    let finish = finish_key(prompt);
    if !finish.is_empty() {
        g.insert("finishOnKey".to_owned(), json!(finish));
    }
    match prompt.kind {
        PromptKind::Menu => {
            g.insert("numDigits".to_owned(), json!(1));
        }
        PromptKind::Collect => {
            if prompt.min_digits > 0 {
                g.insert("minDigits".to_owned(), json!(prompt.min_digits));
            }
            g.insert("maxDigits".to_owned(), json!(prompt.max_digits.max(1)));
        }
    }
    g.insert("timeout".to_owned(), json!(prompt.timeout_seconds));
    match nested {
        Nested::Nothing => {}
        Nested::Say {
            texts,
            language,
            voice,
        } => {
            g.insert(
                "say".to_owned(),
                say_json(None, &texts.join(" "), language, voice),
            );
        }
        Nested::Play(url) => {
            g.insert("play".to_owned(), json!({ "url": url }));
        }
    }
    Value::Object(g)
}

/// A `say` verb (`verb` set) or a gather's nested `say` (`verb` none).
fn say_json(
    verb: Option<&str>,
    text: &str,
    language: &Option<String>,
    voice: &Option<String>,
) -> Value {
    let mut s = Map::new();
    if let Some(verb) = verb {
        s.insert("verb".to_owned(), json!(verb));
    }
    s.insert("text".to_owned(), json!(text));
    if language.is_some() || voice.is_some() {
        let mut synth = Map::new();
        synth.insert("vendor".to_owned(), json!("default"));
        if let Some(language) = language {
            synth.insert("language".to_owned(), json!(language));
        }
        if let Some(voice) = voice {
            synth.insert("voice".to_owned(), json!(voice));
        }
        s.insert("synthesizer".to_owned(), Value::Object(synth));
    }
    Value::Object(s)
}

fn verb_json(verb: &Verb) -> Value {
    match verb {
        Verb::Say {
            text,
            language,
            voice,
        } => say_json(Some("say"), text, language, voice),
        Verb::Pause { seconds } => json!({ "verb": "pause", "length": seconds }),
        Verb::Play { url } => json!({ "verb": "play", "url": url }),
        Verb::RecordingPause => {
            json!({ "verb": "config", "record": { "action": "pauseCallRecording" } })
        }
        Verb::RecordingResume => {
            json!({ "verb": "config", "record": { "action": "resumeCallRecording" } })
        }
    }
}

fn end_json(out: &mut Vec<Value>, end: &CallEnd, attributes: &TransferAttributes) {
    match end {
        CallEnd::Transfer {
            queue: Some(queue), ..
        } => {
            let data = match serde_json::to_value(attributes) {
                Ok(data @ Value::Object(_)) => data,
                _ => json!({}),
            };
            out.push(json!({ "verb": "tag", "data": data }));
            out.push(json!({ "verb": "enqueue", "name": queue }));
        }
        CallEnd::Transfer {
            target: Some(target),
            ..
        } => {
            let target = if is_sip_uri(target) {
                json!({ "type": "sip", "sipUri": target })
            } else {
                json!({ "type": "phone", "number": target })
            };
            let headers: Map<String, Value> = transfer_headers(attributes)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect();
            out.push(json!({ "verb": "dial", "target": [target], "headers": headers }));
        }
        // A transfer with nowhere to go (the flow validator rejects it) ends the call.
        CallEnd::Transfer { .. } | CallEnd::Hangup { .. } | CallEnd::End { .. } => {
            out.push(json!({ "verb": "hangup" }))
        }
    }
}

pub mod signature {
    //! Authenticating jambonz's requests: `Jambonz-Signature`. Pure functions: the clock is an argument, nothing is logged here.
    //!
    //! Every comparison of a computed MAC with a received one is constant-time (`subtle`), and
    //! every configured secret is tried without stopping at the first match, so the time taken
    //! does not say which secret matched or how much of a signature was right. Empty secrets are
    //! skipped: a blank token in the configuration must never let anyone sign.
    //!
    //! # jambonz
    //!
    //! As jambonz's feature server sends it (`lib/utils/base-requestor.js`) and its Node SDK
    //! checks it (`WebhookResponse.verifyJambonzSignature`): a header
    //! `Jambonz-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` where
    //! `<body>` is the JSON body exactly as sent. Several `v1=` entries are accepted (any may
    //! match); unknown schemes are ignored. Only POST hooks can be checked: for a GET hook
    //! jambonz signs a JSON payload it does not send.

    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use subtle::{Choice, ConstantTimeEq};

    use crate::calls::{SignatureError, MAX_SIGNATURE_HEADER_LEN as MAX_HEADER_LEN};

    /// Name of jambonz's signature header.
    pub const JAMBONZ_SIGNATURE_HEADER: &str = "Jambonz-Signature";
    /// How far (either way) a jambonz timestamp may be from our clock, as jambonz's SDK allows.
    pub const JAMBONZ_DEFAULT_TOLERANCE_SECS: i64 = 300;
    /// Most `v1=` entries looked at in one jambonz header.
    const MAX_JAMBONZ_SIGNATURES: usize = 16;

    type HmacSha256 = Hmac<Sha256>;

    /// The `Jambonz-Signature` header value jambonz would send with `body` at time `t` (unix
    /// seconds): `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    pub fn jambonz_sign(secret: &[u8], body: &[u8], t: i64) -> String {
        format!("t={t},v1={}", hex::encode(jambonz_mac(secret, t, body)))
    }

    /// Checks a `Jambonz-Signature` header against the raw request body under any of `secrets`
    /// (current and previous webhook secret), then that its timestamp is within
    /// `tolerance_secs` of `now_unix_secs` either way ([`JAMBONZ_DEFAULT_TOLERANCE_SECS`] is
    /// jambonz's own default). The signature is checked first, so `Stale` means an authentic but
    /// old (or early) request: a replay or a skewed clock.
    pub fn jambonz_verify(
        secrets: &[&[u8]],
        header: &str,
        body: &[u8],
        now_unix_secs: i64,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        let parsed = parse_jambonz_header(header)?;
        let mut matched = Choice::from(0);
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            let expected = jambonz_mac(secret, parsed.t, body);
            for candidate in &parsed.signatures {
                matched |= expected.ct_eq(candidate);
            }
        }
        if !bool::from(matched) {
            return Err(SignatureError::Mismatch);
        }
        let age = i128::from(now_unix_secs) - i128::from(parsed.t);
        if age.abs() > i128::from(tolerance_secs.max(0)) {
            return Err(SignatureError::Stale);
        }
        Ok(())
    }

    fn jambonz_mac(secret: &[u8], t: i64, body: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => return [0; 32],
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    struct JambonzHeader {
        t: i64,
        signatures: Vec<[u8; 32]>,
    }

    fn parse_jambonz_header(header: &str) -> Result<JambonzHeader, SignatureError> {
        let header = header.trim();
        if header.is_empty() {
            return Err(SignatureError::Missing);
        }
        if header.len() > MAX_HEADER_LEN {
            return Err(SignatureError::Malformed);
        }
        let mut t = None;
        let mut signatures = Vec::new();
        for item in header.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match key.trim() {
                "t" => {
                    let value = value.trim();
                    if t.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(SignatureError::Malformed);
                    }
                    t = Some(
                        value
                            .parse::<i64>()
                            .map_err(|_| SignatureError::Malformed)?,
                    );
                }
                "v1" => {
                    if signatures.len() == MAX_JAMBONZ_SIGNATURES {
                        return Err(SignatureError::Malformed);
                    }
                    let mut sig = [0u8; 32];
                    hex::decode_to_slice(value.trim(), &mut sig)
                        .map_err(|_| SignatureError::Malformed)?;
                    signatures.push(sig);
                }
                // Other schemes (a future v2, say) are not ours to judge.
                _ => {}
            }
        }
        match t {
            Some(t) if !signatures.is_empty() => Ok(JambonzHeader { t, signatures }),
            _ => Err(SignatureError::Malformed),
        }
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
        use super::*;

        const SECRET: &[u8] = b"wh_secret_abc123";
        const BODY: &[u8] = br#"{"call_sid":"b6b6","direction":"inbound","from":"15083084809"}"#;
        const T: i64 = 1_700_000_000;

        #[test]
        fn jambonz_signature_format() {
            let header = jambonz_sign(SECRET, BODY, T);
            let (t, v1) = header.split_once(',').unwrap();
            assert_eq!(t, "t=1700000000");
            let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
            mac.update(b"1700000000.");
            mac.update(BODY);
            assert_eq!(
                v1,
                format!("v1={}", hex::encode(mac.finalize().into_bytes()))
            );
        }

        #[test]
        fn jambonz_round_trip_and_tolerance_edges() {
            let header = jambonz_sign(SECRET, BODY, T);
            let tol = JAMBONZ_DEFAULT_TOLERANCE_SECS;
            let at = |now: i64| jambonz_verify(&[SECRET], &header, BODY, now, tol);
            assert_eq!(at(T), Ok(()));
            assert_eq!(at(T + tol), Ok(()));
            assert_eq!(at(T - tol), Ok(()));
            assert_eq!(at(T + tol + 1), Err(SignatureError::Stale));
            assert_eq!(at(T - tol - 1), Err(SignatureError::Stale));
            assert_eq!(at(i64::MAX), Err(SignatureError::Stale));
            assert_eq!(at(i64::MIN), Err(SignatureError::Stale));
            // A zero (or negative) tolerance means the very second only.
            assert_eq!(jambonz_verify(&[SECRET], &header, BODY, T, 0), Ok(()));
            assert_eq!(
                jambonz_verify(&[SECRET], &header, BODY, T + 1, -5),
                Err(SignatureError::Stale)
            );
        }

        #[test]
        fn jambonz_tampering_is_refused() {
            let header = jambonz_sign(SECRET, BODY, T);
            let verify = |h: &str, body: &[u8]| {
                jambonz_verify(&[SECRET], h, body, T, JAMBONZ_DEFAULT_TOLERANCE_SECS)
            };
            // Body: every single-byte change.
            for i in 0..BODY.len() {
                let mut body = BODY.to_vec();
                body[i] ^= 0x01;
                assert_eq!(
                    verify(&header, &body),
                    Err(SignatureError::Mismatch),
                    "byte {i}"
                );
            }
            assert_eq!(verify(&header, b""), Err(SignatureError::Mismatch));
            // Timestamp moved (still within tolerance): the MAC covers it.
            let moved = header.replacen("t=1700000000", "t=1700000001", 1);
            assert_eq!(verify(&moved, BODY), Err(SignatureError::Mismatch));
            // Signature: every hex digit changed.
            let sig_start = header.find("v1=").unwrap() + 3;
            for i in sig_start..header.len() {
                let mut h = header.clone().into_bytes();
                h[i] = if h[i] == b'0' { b'1' } else { b'0' };
                let h = String::from_utf8(h).unwrap();
                assert_eq!(verify(&h, BODY), Err(SignatureError::Mismatch), "char {i}");
            }
            // Wrong secret.
            assert_eq!(
                jambonz_verify(&[b"other"], &header, BODY, T, 300),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(
                jambonz_verify(&[], &header, BODY, T, 300),
                Err(SignatureError::Mismatch)
            );
            let empty = jambonz_sign(b"", BODY, T);
            assert_eq!(
                jambonz_verify(&[b""], &empty, BODY, T, 300),
                Err(SignatureError::Mismatch)
            );
        }

        #[test]
        fn jambonz_rotation_and_several_signatures() {
            let old = jambonz_sign(b"old-secret", BODY, T);
            assert_eq!(
                jambonz_verify(&[SECRET, b"old-secret"], &old, BODY, T, 300),
                Ok(())
            );
            assert_eq!(
                jambonz_verify(&[SECRET], &old, BODY, T, 300),
                Err(SignatureError::Mismatch)
            );
            // A header carrying one v1 per secret (as a sender mid-rotation may): any may match.
            let new = jambonz_sign(SECRET, BODY, T);
            let new_v1 = new.split_once(',').map(|(_, v)| v).unwrap_or_default();
            let both = format!("{old},{new_v1}");
            assert_eq!(jambonz_verify(&[SECRET], &both, BODY, T, 300), Ok(()));
            assert_eq!(
                jambonz_verify(&[b"old-secret"], &both, BODY, T, 300),
                Ok(())
            );
            // Unknown schemes and spaces are tolerated; order does not matter.
            let sig = new_v1.trim_start_matches("v1=");
            let reordered = format!("v0=abc, {new_v1} , t={T}");
            assert_eq!(jambonz_verify(&[SECRET], &reordered, BODY, T, 300), Ok(()));
            let upper = format!("t={T},v1={}", sig.to_ascii_uppercase());
            assert_eq!(jambonz_verify(&[SECRET], &upper, BODY, T, 300), Ok(()));
        }

        #[test]
        fn jambonz_missing_and_malformed_headers() {
            let good = jambonz_sign(SECRET, BODY, T);
            let sig = good.split_once(",v1=").map(|(_, s)| s).unwrap_or_default();
            let verify = |h: &str| jambonz_verify(&[SECRET], h, BODY, T, 300);
            assert_eq!(verify(""), Err(SignatureError::Missing));
            assert_eq!(verify("  "), Err(SignatureError::Missing));
            for bad in [
                "garbage".to_owned(),
                format!("v1={sig}"),
                format!("t={T}"),
                format!("t={T},v1="),
                format!("t={T},v1=zz{}", &sig[2..]),
                format!("t={T},v1={}", &sig[1..]),
                format!("t=-{T},v1={sig}"),
                format!("t=+{T},v1={sig}"),
                format!("t=,v1={sig}"),
                format!("t=1e9,v1={sig}"),
                format!("t=99999999999999999999,v1={sig}"),
                format!("t={T},t={T},v1={sig}"),
                format!("t={T},v1={sig},"),
                format!("t={T},v1={sig},junk"),
                format!("t={T}{}", format!(",v1={sig}").repeat(17)),
                format!("t={T},v1={sig},x={}", "a".repeat(5000)),
            ] {
                assert_eq!(verify(&bad), Err(SignatureError::Malformed), "{bad}");
            }
            let sixteen = format!("t={T}{}", format!(",v1={sig}").repeat(16));
            assert_eq!(verify(&sixteen), Ok(()));
        }

        #[test]
        fn errors_say_why_without_detail() {
            assert_eq!(
                SignatureError::Stale.to_string(),
                "signature timestamp outside the allowed window"
            );
            assert_eq!(
                SignatureError::Mismatch.to_string(),
                "signature does not match"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn next() -> NextTurn {
        NextTurn {
            action: "https://ivr.example.com/calls/jambonz/c1/turn?n=2&s=abc".to_owned(),
            no_input: "https://ivr.example.com/calls/jambonz/c1/turn?n=2&s=abc&noInput=1"
                .to_owned(),
            no_match: "https://ivr.example.com/calls/jambonz/c1/nomatch".to_owned(),
            hangup: "https://ivr.example.com/calls/jambonz/c1/hangup".to_owned(),
        }
    }

    fn say(text: &str) -> Verb {
        Verb::Say {
            text: text.to_owned(),
            language: None,
            voice: None,
        }
    }

    fn collect(say: Vec<Verb>, secure: bool) -> Prompt {
        Prompt {
            node_id: "ask".to_owned(),
            kind: PromptKind::Collect,
            say,
            min_digits: 4,
            max_digits: 6,
            finish_on_key: "#".to_owned(),
            timeout_seconds: 7,
            secure,
            choices: Vec::new(),
            attempt: 1,
            attempts: 3,
        }
    }

    fn menu(say: Vec<Verb>) -> Prompt {
        Prompt {
            kind: PromptKind::Menu,
            min_digits: 1,
            max_digits: 1,
            choices: vec!["1".to_owned(), "2".to_owned()],
            ..collect(say, false)
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

    fn transfer(queue: Option<&str>, target: Option<&str>) -> CallEnd {
        CallEnd::Transfer {
            node_id: "to_agent".to_owned(),
            queue: queue.map(str::to_owned),
            target: target.map(str::to_owned),
            reason: Some("Account Recovery".to_owned()),
        }
    }

    /// Sample answers, one of each form, shared with the validation printout below.
    fn samples() -> Vec<(&'static str, TurnAnswer)> {
        vec![
            (
                "ask",
                TurnAnswer::Ask {
                    verbs: vec![say("Welcome to Example Bank.")],
                    prompt: collect(
                        vec![say("Please enter your account number, then press pound.")],
                        false,
                    ),
                },
            ),
            (
                "secure_ask",
                TurnAnswer::Ask {
                    verbs: vec![
                        say("Thank you."),
                        Verb::Pause { seconds: 1 },
                        Verb::RecordingPause,
                    ],
                    prompt: collect(
                        vec![
                            Verb::Say {
                                text: "Sorry, that did not match.".to_owned(),
                                language: Some("en-US".to_owned()),
                                voice: Some("en-US-Standard-C".to_owned()),
                            },
                            Verb::Say {
                                text: "Enter your PIN.".to_owned(),
                                language: Some("en-US".to_owned()),
                                voice: Some("en-US-Standard-C".to_owned()),
                            },
                        ],
                        true,
                    ),
                },
            ),
            (
                "menu",
                TurnAnswer::Ask {
                    verbs: vec![Verb::RecordingResume],
                    prompt: menu(vec![
                        say("Press 1 for balances."),
                        say("Press 2 to speak to an agent."),
                    ]),
                },
            ),
            (
                "ask_nested_play",
                TurnAnswer::Ask {
                    verbs: vec![
                        Verb::Say {
                            text: "Bienvenue.".to_owned(),
                            language: Some("fr-FR".to_owned()),
                            voice: None,
                        },
                        Verb::Pause { seconds: 2 },
                    ],
                    prompt: collect(
                        vec![Verb::Play {
                            url: "https://cdn.example.com/menu.wav?a=1&b=2".to_owned(),
                        }],
                        false,
                    ),
                },
            ),
            (
                "transfer_queue",
                TurnAnswer::End {
                    verbs: vec![say("Transferring you now.")],
                    end: transfer(Some("billing"), None),
                    attributes: attributes(),
                },
            ),
            (
                "transfer_dial_phone",
                TurnAnswer::End {
                    verbs: vec![say("Connecting you.")],
                    end: transfer(None, Some("+15550100")),
                    attributes: attributes(),
                },
            ),
            (
                "transfer_dial_sip",
                TurnAnswer::End {
                    verbs: Vec::new(),
                    end: transfer(None, Some("sip:agents@pbx.example.com")),
                    attributes: TransferAttributes {
                        verified: false,
                        factors: Vec::new(),
                        failure_reason: Some("max_attempts".to_owned()),
                        account: Some("12345678".to_owned()),
                        reason: Some("Account Recovery".to_owned()),
                        call_id: "call-2".to_owned(),
                    },
                },
            ),
            (
                "hangup",
                TurnAnswer::End {
                    verbs: vec![
                        say("Goodbye."),
                        Verb::Play {
                            url: "https://cdn.example.com/bye.wav".to_owned(),
                        },
                    ],
                    end: CallEnd::Hangup {
                        node_id: "bye".to_owned(),
                    },
                    attributes: attributes(),
                },
            ),
            (
                "end",
                TurnAnswer::End {
                    verbs: Vec::new(),
                    end: CallEnd::End {
                        end_node: "done".to_owned(),
                        status_code: Some(200),
                    },
                    attributes: attributes(),
                },
            ),
        ]
    }

    fn sample(name: &str) -> Value {
        let (_, answer) = samples().into_iter().find(|(n, _)| *n == name).unwrap();
        render(&answer, &next())
    }

    #[test]
    fn an_ask_nests_every_say_in_the_gather() {
        assert_eq!(
            sample("ask"),
            json!([{
                "verb": "gather",
                "input": ["digits"],
                "actionHook": "https://ivr.example.com/calls/jambonz/c1/turn?n=2&s=abc",
                "finishOnKey": "#",
                "minDigits": 4,
                "maxDigits": 6,
                "timeout": 7,
                "say": { "text": "Welcome to Example Bank. Please enter your account number, then press pound." },
            }])
        );
    }

    #[test]
    fn a_secure_ask_pauses_recording_before_the_gather() {
        assert_eq!(
            sample("secure_ask"),
            json!([
                { "verb": "say", "text": "Thank you." },
                { "verb": "pause", "length": 1 },
                { "verb": "config", "record": { "action": "pauseCallRecording" } },
                {
                    "verb": "gather",
                    "input": ["digits"],
                    "actionHook": "https://ivr.example.com/calls/jambonz/c1/turn?n=2&s=abc",
                    "finishOnKey": "#",
                    "minDigits": 4,
                    "maxDigits": 6,
                    "timeout": 7,
                    "say": {
                        "text": "Sorry, that did not match. Enter your PIN.",
                        "synthesizer": { "vendor": "default", "language": "en-US", "voice": "en-US-Standard-C" },
                    },
                },
            ])
        );
    }

    #[test]
    fn a_menu_takes_one_digit() {
        assert_eq!(
            sample("menu"),
            json!([
                { "verb": "config", "record": { "action": "resumeCallRecording" } },
                {
                    "verb": "gather",
                    "input": ["digits"],
                    "actionHook": "https://ivr.example.com/calls/jambonz/c1/turn?n=2&s=abc",
                    "finishOnKey": "#",
                    "numDigits": 1,
                    "timeout": 7,
                    "say": { "text": "Press 1 for balances. Press 2 to speak to an agent." },
                },
            ])
        );
    }

    #[test]
    fn a_menu_whose_choice_is_the_finish_key_has_no_finish_key() {
        let mut p = menu(vec![say("Press pound to repeat.")]);
        p.choices.push("#".to_owned());
        let out = render(
            &TurnAnswer::Ask {
                verbs: Vec::new(),
                prompt: p,
            },
            &next(),
        );
        assert!(out[0].get("finishOnKey").is_none(), "{out}");
        let mut p = collect(Vec::new(), false);
        p.finish_on_key = String::new();
        let out = render(
            &TurnAnswer::Ask {
                verbs: Vec::new(),
                prompt: p,
            },
            &next(),
        );
        assert!(out[0].get("finishOnKey").is_none(), "{out}");
        assert!(out[0].get("say").is_none(), "{out}");
    }

    #[test]
    fn only_the_trailing_run_of_alike_says_is_nested() {
        let answer = TurnAnswer::Ask {
            verbs: vec![
                say("One."),
                Verb::Pause { seconds: 2 },
                Verb::Say {
                    text: "Dos.".to_owned(),
                    language: Some("es-ES".to_owned()),
                    voice: None,
                },
            ],
            prompt: collect(vec![say("Three."), say(""), say("Four.")], false),
        };
        let out = render(&answer, &next());
        assert_eq!(
            out.as_array().unwrap()[..3],
            [
                json!({ "verb": "say", "text": "One." }),
                json!({ "verb": "pause", "length": 2 }),
                json!({ "verb": "say", "text": "Dos.", "synthesizer": { "vendor": "default", "language": "es-ES" } }),
            ]
        );
        assert_eq!(out[3]["say"], json!({ "text": "Three. Four." }));

        // A trailing Play is the gather's nested play.
        let answer = TurnAnswer::Ask {
            verbs: vec![say("Listen.")],
            prompt: collect(
                vec![Verb::Play {
                    url: "https://cdn.example.com/menu.wav?a=1&b=2".to_owned(),
                }],
                false,
            ),
        };
        let out = render(&answer, &next());
        assert_eq!(out[0], json!({ "verb": "say", "text": "Listen." }));
        assert_eq!(
            out[1]["play"],
            json!({ "url": "https://cdn.example.com/menu.wav?a=1&b=2" })
        );
        assert!(out[1].get("say").is_none());
    }

    #[test]
    fn a_queue_transfer_tags_the_call_then_enqueues() {
        assert_eq!(
            sample("transfer_queue"),
            json!([
                { "verb": "say", "text": "Transferring you now." },
                { "verb": "tag", "data": { "verified": true, "factors": ["pin"], "account": "12345678", "reason": "Account Recovery", "callId": "call-1" } },
                { "verb": "enqueue", "name": "billing" },
            ])
        );
        // A transfer naming both a queue and a target goes to the queue.
        let out = render(
            &TurnAnswer::End {
                verbs: Vec::new(),
                end: transfer(Some("billing"), Some("+15550100")),
                attributes: attributes(),
            },
            &next(),
        );
        assert_eq!(out[1]["verb"], "enqueue");
    }

    #[test]
    fn a_dial_transfer_carries_the_attributes_as_headers() {
        assert_eq!(
            sample("transfer_dial_phone"),
            json!([
                { "verb": "say", "text": "Connecting you." },
                {
                    "verb": "dial",
                    "target": [{ "type": "phone", "number": "+15550100" }],
                    "headers": {
                        "X-Ivrauth-Verified": "true",
                        "X-Ivrauth-Factors": "pin",
                        "X-Ivrauth-Account": "12345678",
                        "X-Ivrauth-Reason": "Account Recovery",
                    },
                },
            ])
        );
        assert_eq!(
            sample("transfer_dial_sip"),
            json!([{
                "verb": "dial",
                "target": [{ "type": "sip", "sipUri": "sip:agents@pbx.example.com" }],
                "headers": {
                    "X-Ivrauth-Verified": "false",
                    "X-Ivrauth-Failure-Reason": "max_attempts",
                    "X-Ivrauth-Account": "12345678",
                    "X-Ivrauth-Reason": "Account Recovery",
                },
            }])
        );
    }

    #[test]
    fn header_values_cannot_split_a_header() {
        let mut a = attributes();
        a.reason = Some("Account\r\nX-Evil: 1".to_owned());
        let headers = transfer_headers(&a);
        assert!(
            headers.contains(&("X-Ivrauth-Reason", "AccountX-Evil: 1".to_owned())),
            "{headers:?}"
        );
    }

    #[test]
    fn hangups_and_ends_hang_up() {
        assert_eq!(
            sample("hangup"),
            json!([
                { "verb": "say", "text": "Goodbye." },
                { "verb": "play", "url": "https://cdn.example.com/bye.wav" },
                { "verb": "hangup" },
            ])
        );
        assert_eq!(sample("end"), json!([{ "verb": "hangup" }]));
        let out = render(
            &TurnAnswer::End {
                verbs: Vec::new(),
                end: transfer(None, None),
                attributes: attributes(),
            },
            &next(),
        );
        assert_eq!(out, json!([{ "verb": "hangup" }]));
    }

    #[test]
    fn sip_targets_are_recognised() {
        assert!(is_sip_uri("sip:a@b"));
        assert!(is_sip_uri("SIPS:a@b"));
        assert!(!is_sip_uri("+15550100"));
        assert!(!is_sip_uri("sipper"));
    }

    /// Every sample is a verb array jambonz's own `@jambonz/verb-specifications` accepts.
    #[test]
    fn every_sample_validates_with_jambonz_own_specification() {
        for (name, answer) in samples() {
            let verbs = render(&answer, &next());
            if let Err(e) = ivrauth_testkit::telephony::validate_jambonz_verbs(&verbs).unwrap() {
                panic!("sample {name} is refused by jambonz: {e}\n{verbs}");
            }
        }
    }
}
