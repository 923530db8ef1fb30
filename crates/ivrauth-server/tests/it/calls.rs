//! Calls through the real server: the demo call through every front-end, request
//! authentication, replayed webhooks, hang-ups, and secrets kept out of every answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ivrauth_core::identity::{HashParams, LockoutPolicy};
use ivrauth_core::ports::{AuditStore as _, LockoutStore as _};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::Clock as _;
use ivrauth_server::calls::twilio::signature;
use ivrauth_testkit::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";
const JAMBONZ_SECRET: &str = "jambonz-webhook-secret-for-tests";
const VXML_USER: &str = "cvp";
const VXML_PASSWORD: &str = "voicexml-basic-password-for-tests";
const PIN: &str = "2468";
const CHEAP: HashParams = HashParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

/// A server with the built-in directory, the demo flows and accounts, and Twilio, jambonz
/// and VoiceXML credentials.
pub async fn demo_server() -> TestServer {
    demo_server_with(|_| {}).await
}

async fn demo_server_with(more: impl FnOnce(&mut ivrauth_server::CallsConfig)) -> TestServer {
    let server = TestServer::builder()
        .identity(|store, clock| {
            ivrauth_testkit::builtin_identity(store, clock, CHEAP, LockoutPolicy::default())
                .unwrap()
        })
        .calls(|c| {
            c.platforms.twilio.auth_tokens = vec![Secret::new(TWILIO_TOKEN.to_owned())];
            c.platforms.jambonz.secrets = vec![Secret::new(JAMBONZ_SECRET.to_owned())];
            c.platforms.voicexml.basic_username = Some(VXML_USER.to_owned());
            c.platforms.voicexml.basic_passwords = vec![Secret::new(VXML_PASSWORD.to_owned())];
            more(c);
        })
        .start()
        .await
        .unwrap();
    ivrauth_server::http::demo::install(server.state(), server.base_url())
        .await
        .unwrap();
    server
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
}

/// The value of the first `attr="..."` in `xml`.
fn attr(xml: &str, attr: &str) -> Option<String> {
    let needle = format!("{attr}=\"");
    let start = xml.find(&needle)? + needle.len();
    let end = xml[start..].find('"')? + start;
    Some(unescape(&xml[start..end]))
}

/// The text of the first `<tag>...</tag>`.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = xml.find(&format!("<{tag}"))?;
    let start = xml[open..].find('>')? + open + 1;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(unescape(&xml[start..end]))
}

/// Every `<Say>` text, in order.
fn says(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Say") {
        let after = &rest[i..];
        let Some(gt) = after.find('>') else { break };
        let Some(end) = after.find("</Say>") else {
            break;
        };
        out.push(unescape(&after[gt + 1..end]));
        rest = &after[end..];
    }
    out
}

/// A Twilio caller: posts signed webhooks like Twilio does and follows the answers.
pub struct TwilioCall<'a> {
    pub server: &'a TestServer,
    pub call_sid: String,
    pub from: String,
    /// Where keys go next (the last Gather's action).
    pub action: Option<String>,
    /// Where a silent turn goes (the last Redirect).
    pub redirect: Option<String>,
    /// Every response body so far.
    pub bodies: Vec<String>,
}

impl<'a> TwilioCall<'a> {
    pub fn new(server: &'a TestServer, call_sid: &str) -> Self {
        TwilioCall {
            server,
            call_sid: call_sid.to_owned(),
            from: "+15550100777".to_owned(),
            action: None,
            redirect: None,
            bodies: Vec::new(),
        }
    }

    fn params(&self, digits: Option<&str>) -> Vec<(String, String)> {
        let mut p = vec![
            ("AccountSid".to_owned(), "AC0123456789".to_owned()),
            ("CallSid".to_owned(), self.call_sid.clone()),
            ("From".to_owned(), self.from.clone()),
            ("To".to_owned(), "+15550100000".to_owned()),
            ("CallStatus".to_owned(), "in-progress".to_owned()),
        ];
        if let Some(d) = digits {
            p.push(("Digits".to_owned(), d.to_owned()));
        }
        p
    }

    pub async fn post_signed(
        &self,
        url: &str,
        params: &[(String, String)],
        signature: Option<String>,
    ) -> (StatusCode, String) {
        let sig = signature
            .unwrap_or_else(|| signature::twilio_signature(TWILIO_TOKEN.as_bytes(), url, params));
        let res = self
            .server
            .http()
            .post(url)
            .header("X-Twilio-Signature", sig)
            .form(params)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.text().await.unwrap())
    }

    async fn post(&mut self, url: String, digits: Option<&str>) -> String {
        let params = self.params(digits);
        let (status, body) = self.post_signed(&url, &params, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.action = attr(&body, "action");
        self.redirect = element(&body, "Redirect");
        self.bodies.push(body.clone());
        body
    }

    /// The call arrives.
    pub async fn start(&mut self) -> String {
        let url = self.server.url("/voice/twilio/demo-pin");
        self.post(url, None).await
    }

    /// The caller keys `digits`.
    pub async fn keys(&mut self, digits: &str) -> String {
        let url = self.action.clone().expect("no Gather to answer");
        self.post(url, Some(digits)).await
    }

    /// The caller stays silent: Twilio follows the Redirect after the Gather.
    pub async fn silence(&mut self) -> String {
        let url = self.redirect.clone().expect("no Redirect to follow");
        self.post(url, None).await
    }

    /// Twilio's status callback: the call is over.
    pub async fn hang_up(&self) -> StatusCode {
        let url = self.server.url("/voice/twilio/demo-pin/status");
        let mut params = self.params(None);
        params.retain(|(k, _)| k != "CallStatus");
        params.push(("CallStatus".to_owned(), "completed".to_owned()));
        self.post_signed(&url, &params, None).await.0
    }
}

/// The lockout counter of `account`.
async fn failed_attempts(server: &TestServer, account: &str) -> u32 {
    server
        .store()
        .counters(&ivrauth_testkit::counter_key(account))
        .await
        .unwrap()
        .failed_attempts
}

async fn audit_events(server: &TestServer, event: &str) -> Vec<Value> {
    server
        .store()
        .read_audit()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event == event)
        .map(|r| {
            json!({"outcome": r.outcome, "subject": r.subject, "trace": r.trace_id, "detail": r.detail})
        })
        .collect()
}

const ACCOUNT_PROMPT: &str = "Please enter your account number, followed by the pound key.";
const PIN_PROMPT: &str = "Please enter your PIN, followed by the pound key.";
const MENU_PROMPT: &str = "Press 1 for account balance, 2 for payments, or 9 to exit.";
const SORRY: &str = "Sorry, that did not match. Please try again.";
const HOLD: &str = "Please hold while we transfer you to an agent.";

#[tokio::test]
async fn twilio_demo_call_right_pin_menu_exit() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-right");
    let first = call.start().await;
    assert_eq!(says(&first), [ACCOUNT_PROMPT]);
    assert!(first.contains("<Gather input=\"dtmf\""), "{first}");
    assert!(first.contains("numDigits=\"10\""), "{first}");
    assert!(first.contains("finishOnKey=\"#\""), "{first}");
    assert!(call.action.as_deref().unwrap().contains("t=2"), "{first}");

    let pin_prompt = call.keys("10001#").await;
    assert_eq!(says(&pin_prompt), [PIN_PROMPT]);
    assert!(pin_prompt.contains("numDigits=\"12\""), "{pin_prompt}");

    let welcome = call.keys(&format!("{PIN}#")).await;
    assert_eq!(says(&welcome), ["Welcome, Ada.", MENU_PROMPT], "{welcome}");
    let balance = call.keys("1").await;
    assert_eq!(
        says(&balance),
        [
            "This is a demo: your balance is one hundred dollars.",
            MENU_PROMPT
        ]
    );
    let bye = call.keys("9").await;
    assert_eq!(says(&bye), ["Goodbye."]);
    assert!(bye.contains("<Hangup/>"), "{bye}");
    for body in &call.bodies {
        assert!(!body.contains(PIN), "the PIN leaked into {body}");
    }
    let verified = audit_events(&server, "identity.verify").await;
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0]["outcome"], "success");
    let ended = audit_events(&server, "call.ended").await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["detail"]["end"]["type"], "hangup");
}

#[tokio::test]
async fn twilio_wrong_pin_three_times_transfers_with_attributes() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-wrong");
    call.start().await;
    call.keys("10001#").await;
    let again = call.keys("1111#").await;
    assert_eq!(says(&again), [SORRY, PIN_PROMPT]);
    let again = call.keys("2222#").await;
    assert_eq!(says(&again), [SORRY, PIN_PROMPT]);
    let transfer = call.keys("3333#").await;
    assert_eq!(says(&transfer), [HOLD], "{transfer}");
    assert!(transfer.contains("<Enqueue"), "{transfer}");
    assert!(transfer.contains("agents"), "{transfer}");
    let failures = audit_events(&server, "identity.verify").await;
    assert_eq!(failures.len(), 3);
    assert!(failures.iter().all(|f| f["outcome"] == "failure"));
}

#[tokio::test]
async fn twilio_silence_reprompts_then_transfers() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-silent");
    let first = call.start().await;
    let redirect = call.redirect.clone().unwrap();
    assert!(redirect.contains("ev=none"), "{first}");
    let second = call.silence().await;
    assert_eq!(says(&second), [ACCOUNT_PROMPT]);
    // Two silent turns in a row are two turns: the second silence carries the next number.
    assert!(
        call.redirect.as_deref().unwrap().contains("t=3"),
        "{second}"
    );
    assert_ne!(call.redirect.as_deref(), Some(redirect.as_str()));
    call.silence().await;
    let last = call.silence().await;
    assert_eq!(says(&last), [HOLD], "{last}");
    assert!(last.contains("<Enqueue"), "{last}");
}

#[tokio::test]
async fn twilio_signature_is_required_and_checked() {
    let server = demo_server().await;
    let call = TwilioCall::new(&server, "CA-sig");
    let url = server.url("/voice/twilio/demo-pin");
    let params = call.params(None);
    let good = signature::twilio_signature(TWILIO_TOKEN.as_bytes(), &url, &params);
    let (status, _) = call.post_signed(&url, &params, Some(good.clone())).await;
    assert_eq!(status, StatusCode::OK);
    // One changed character in the signature, in a parameter, or the wrong token.
    let mut bad = good.clone().into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    let (status, _) = call
        .post_signed(&url, &params, Some(String::from_utf8(bad).unwrap()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut tampered = params.clone();
    tampered[2].1.push('1');
    let (status, _) = call.post_signed(&url, &tampered, Some(good)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = signature::twilio_signature(b"another-token", &url, &params);
    let (status, _) = call.post_signed(&url, &params, Some(other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let res = server.http().post(&url).form(&params).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_replayed_webhook_gets_the_same_answer_without_a_second_attempt() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-replay");
    call.start().await;
    call.keys("10001#").await;
    let pin_url = call.action.clone().unwrap();
    let first = call.keys("1111#").await;
    assert_eq!(says(&first), [SORRY, PIN_PROMPT]);
    // Twilio retries the same request.
    let params = call.params(Some("1111#"));
    let (status, again) = call.post_signed(&pin_url, &params, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    assert_eq!(audit_events(&server, "identity.verify").await.len(), 1);
    // An ordinary turn replayed recomputes the same prompt.
    let menu_free = call.bodies[1].clone();
    let start_params = call.params(Some("10001#"));
    let account_url = attr(&call.bodies[0], "action").unwrap();
    let (_, replayed) = call.post_signed(&account_url, &start_params, None).await;
    assert_eq!(says(&replayed), says(&menu_free));
}

#[tokio::test]
async fn hanging_up_at_a_pin_prompt_after_a_failure_counts_as_a_failure() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-hangup");
    call.start().await;
    call.keys("10001#").await;
    call.keys("1111#").await;
    assert_eq!(call.hang_up().await, StatusCode::NO_CONTENT);
    let verify = audit_events(&server, "identity.verify").await;
    assert_eq!(verify.len(), 2, "{verify:?}");
    assert_eq!(verify[1]["detail"]["reason"], "abandoned");
    let counters = server
        .store()
        .counters(&ivrauth_testkit::counter_key("10001"))
        .await
        .unwrap();
    assert_eq!(counters.failed_attempts, 2);
    // The session is gone: a second status callback changes nothing.
    assert_eq!(call.hang_up().await, StatusCode::NO_CONTENT);
    assert_eq!(audit_events(&server, "identity.verify").await.len(), 2);

    // Hanging up before any failure charges nothing.
    let mut other = TwilioCall::new(&server, "CA-hangup-clean");
    other.start().await;
    other.keys("10002#").await;
    assert_eq!(other.hang_up().await, StatusCode::NO_CONTENT);
    assert_eq!(failed_attempts(&server, "10002").await, 0);
}

#[tokio::test]
async fn a_tampered_or_foreign_session_token_is_refused() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-token");
    call.start().await;
    let url = call.action.clone().unwrap();
    // Another call's CallSid with this call's session.
    let mut params = call.params(Some("10001#"));
    params[1].1 = "CA-other".to_owned();
    let (status, body) = call.post_signed(&url, &params, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<Hangup/>"), "{body}");
    assert!(!body.contains("<Gather"), "{body}");
    // A flipped character in the sealed session.
    let i = url.find("s=").unwrap() + 10;
    let mut bytes = url.clone().into_bytes();
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let (_, body) = call
        .post_signed(&tampered, &call.params(Some("10001#")), None)
        .await;
    assert!(
        body.contains("<Hangup/>") && !body.contains("<Gather"),
        "{body}"
    );
}

#[tokio::test]
async fn an_idle_session_expires() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-idle");
    call.start().await;
    server
        .clock()
        .advance(std::time::Duration::from_secs(31 * 60));
    let body = call.keys("10001#").await;
    assert!(
        body.contains("<Hangup/>") && !body.contains("<Gather"),
        "{body}"
    );
}

// ---------------------------------------------------------------- jambonz

/// A jambonz caller: signed JSON webhooks, verb arrays back (each checked with jambonz's
/// own `@jambonz/verb-specifications`).
struct JambonzCall<'a> {
    server: &'a TestServer,
    call_sid: String,
    hook: Option<String>,
    bodies: Vec<String>,
}

impl<'a> JambonzCall<'a> {
    fn new(server: &'a TestServer, call_sid: &str) -> Self {
        JambonzCall {
            server,
            call_sid: call_sid.to_owned(),
            hook: None,
            bodies: Vec::new(),
        }
    }

    async fn post_raw(
        &self,
        url: &str,
        body: &Value,
        header: Option<String>,
    ) -> (StatusCode, String) {
        let bytes = serde_json::to_vec(body).unwrap();
        let t = self.server.clock().now().0 / 1000;
        let header = header
            .unwrap_or_else(|| ivrauth_testkit::telephony::jambonz_sign(JAMBONZ_SECRET, &bytes, t));
        let res = self
            .server
            .http()
            .post(url)
            .header("Jambonz-Signature", header)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.text().await.unwrap())
    }

    async fn post(&mut self, url: String, extra: Value) -> Value {
        let mut body = json!({
            "call_sid": self.call_sid, "from": "+15550100888", "to": "+15550100000",
            "direction": "inbound", "call_status": "in-progress",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, text) = self.post_raw(&url, &body, None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let verbs: Value = serde_json::from_str(&text).unwrap();
        ivrauth_testkit::telephony::validate_jambonz_verbs(&verbs)
            .unwrap()
            .unwrap_or_else(|e| panic!("jambonz refuses {verbs}: {e}"));
        self.hook = verbs
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["verb"] == "gather")
            .map(|g| g["actionHook"].as_str().unwrap().to_owned());
        self.bodies.push(text);
        verbs
    }

    async fn start(&mut self) -> Value {
        let url = self.server.url("/voice/jambonz/demo-pin");
        self.post(url, json!({})).await
    }
    async fn keys(&mut self, digits: &str) -> Value {
        let url = self.hook.clone().unwrap();
        self.post(url, json!({"digits": digits, "reason": "dtmfDetected"}))
            .await
    }
    async fn silence(&mut self) -> Value {
        let url = self.hook.clone().unwrap();
        self.post(url, json!({"reason": "timeout"})).await
    }
}

/// All spoken text of a verb array, in order (nested gather prompts included).
fn jambonz_texts(verbs: &Value) -> String {
    let mut out = Vec::new();
    for v in verbs.as_array().unwrap() {
        if let Some(t) = v["text"].as_str() {
            out.push(t.to_owned());
        }
        if let Some(t) = v["say"]["text"].as_str() {
            out.push(t.to_owned());
        }
    }
    out.join(" | ")
}

#[tokio::test]
async fn jambonz_demo_calls() {
    let server = demo_server().await;
    // Right PIN, menu, exit; recording paused around the PIN.
    let mut call = JambonzCall::new(&server, "jb-right");
    let v = call.start().await;
    assert!(jambonz_texts(&v).contains(ACCOUNT_PROMPT), "{v}");
    let v = call.keys("10001").await;
    assert!(jambonz_texts(&v).contains(PIN_PROMPT), "{v}");
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|x| x["verb"] == "config" && x["record"]["action"] == "pauseCallRecording"),
        "{v}"
    );
    let v = call.keys(PIN).await;
    assert!(jambonz_texts(&v).contains("Welcome, Ada."), "{v}");
    assert!(jambonz_texts(&v).contains(MENU_PROMPT), "{v}");
    let v = call.keys("9").await;
    assert_eq!(
        v.as_array().unwrap().last().unwrap()["verb"],
        "hangup",
        "{v}"
    );
    assert!(call.bodies.iter().all(|b| !b.contains(PIN)));

    // Wrong PIN three times: transfer, with the verification result as a tag.
    let mut call = JambonzCall::new(&server, "jb-wrong");
    call.start().await;
    call.keys("10002").await;
    call.keys("1111").await;
    call.keys("2222").await;
    let v = call.keys("3333").await;
    let verbs = v.as_array().unwrap();
    let tag = verbs
        .iter()
        .find(|x| x["verb"] == "tag")
        .expect("a tag verb");
    assert_eq!(tag["data"]["verified"], false);
    assert_eq!(tag["data"]["failureReason"], "max_attempts");
    assert_eq!(verbs.last().unwrap()["verb"], "enqueue");
    assert_eq!(verbs.last().unwrap()["name"], "agents");

    // Silence: re-prompt, then transfer.
    let mut call = JambonzCall::new(&server, "jb-silent");
    call.start().await;
    let v = call.silence().await;
    assert!(jambonz_texts(&v).contains(ACCOUNT_PROMPT), "{v}");
    call.silence().await;
    let v = call.silence().await;
    assert!(jambonz_texts(&v).contains(HOLD), "{v}");
    assert_eq!(v.as_array().unwrap().last().unwrap()["verb"], "enqueue");
}

#[tokio::test]
async fn jambonz_signatures_from_its_own_library_rules() {
    let server = demo_server().await;
    let call = JambonzCall::new(&server, "jb-sig");
    let url = server.url("/voice/jambonz/demo-pin");
    let body = json!({"call_sid": "jb-sig", "from": "+15550100888", "to": "+1555"});
    let bytes = serde_json::to_vec(&body).unwrap();
    let t = server.clock().now().0 / 1000;
    let header = ivrauth_testkit::telephony::jambonz_sign(JAMBONZ_SECRET, &bytes, t);
    // The test's signer is the one jambonz's own node-client accepts (it checks the
    // timestamp against the real clock, so it gets one signed now), and one changed
    // character is refused by it.
    let real_t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let real = ivrauth_testkit::telephony::jambonz_sign(JAMBONZ_SECRET, &bytes, real_t);
    let node_ok = |h: &str| {
        ivrauth_testkit::telephony::jambonz_verify_with_node_client(JAMBONZ_SECRET, &bytes, h)
            .unwrap()
    };
    assert!(node_ok(&real));
    let mut changed = real.clone().into_bytes();
    let last = changed.len() - 1;
    changed[last] = if changed[last] == b'0' { b'1' } else { b'0' };
    assert!(!node_ok(&String::from_utf8(changed).unwrap()));
    let (status, _) = call.post_raw(&url, &body, Some(header.clone())).await;
    assert_eq!(status, StatusCode::OK);
    // One changed character in the signature.
    let mut bad = header.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    let (status, _) = call.post_raw(&url, &body, Some(bad)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A signature of another body, and an old timestamp.
    let other = ivrauth_testkit::telephony::jambonz_sign(JAMBONZ_SECRET, b"{}", t);
    let (status, _) = call.post_raw(&url, &body, Some(other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let old = ivrauth_testkit::telephony::jambonz_sign(JAMBONZ_SECRET, &bytes, t - 301);
    let (status, _) = call.post_raw(&url, &body, Some(old)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------- VoiceXML

/// A VoiceXML browser: follows `<submit>`s, every document checked against the W3C
/// VoiceXML 2.1 schema.
struct VxmlCall<'a> {
    server: &'a TestServer,
    doc: String,
    docs: Vec<String>,
}

/// The `next` of the `<submit>` inside `<parent>`.
fn submit_in(doc: &str, parent: &str) -> Option<String> {
    let start = doc.find(&format!("<{parent}"))?;
    let rest = &doc[start..];
    let sub = rest.find("<submit")?;
    attr(&rest[sub..], "next")
}

impl<'a> VxmlCall<'a> {
    async fn start(server: &'a TestServer) -> VxmlCall<'a> {
        let res = server
            .http()
            .get(server.url("/voice/vxml/demo-pin"))
            .basic_auth(VXML_USER, Some(VXML_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut call = VxmlCall {
            server,
            doc: String::new(),
            docs: Vec::new(),
        };
        call.accept(res.text().await.unwrap());
        call
    }

    fn accept(&mut self, doc: String) {
        ivrauth_testkit::telephony::validate_vxml(&doc)
            .unwrap()
            .unwrap_or_else(|e| panic!("invalid VoiceXML ({e}):\n{doc}"));
        self.docs.push(doc.clone());
        self.doc = doc;
    }

    async fn submit(&mut self, url: String, digits: Option<&str>) -> String {
        let mut req = self.server.http().post(url);
        if let Some(d) = digits {
            req = req.form(&[("digits", d)]);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        self.accept(res.text().await.unwrap());
        self.doc.clone()
    }

    async fn keys(&mut self, digits: &str) -> String {
        let url = submit_in(&self.doc, "filled").expect("no <filled> submit");
        self.submit(url, Some(digits)).await
    }
    async fn silence(&mut self) -> String {
        let url = submit_in(&self.doc, "noinput").expect("no <noinput> submit");
        self.submit(url, None).await
    }
}

#[tokio::test]
async fn voicexml_demo_calls() {
    let server = demo_server().await;
    let mut call = VxmlCall::start(&server).await;
    assert!(call.doc.contains(ACCOUNT_PROMPT));
    let d = call.keys("10001").await;
    assert!(d.contains(PIN_PROMPT), "{d}");
    let d = call.keys(PIN).await;
    assert!(
        d.contains("Welcome, Ada.") && d.contains(MENU_PROMPT),
        "{d}"
    );
    let d = call.keys("9").await;
    assert!(d.contains("Goodbye.") && d.contains("<disconnect"), "{d}");
    assert!(call.docs.iter().all(|d| !d.contains(PIN)));

    let mut call = VxmlCall::start(&server).await;
    call.keys("10003").await;
    call.keys("1111").await;
    call.keys("2222").await;
    let d = call.keys("3333").await;
    assert!(d.contains(HOLD) && d.contains("<transfer"), "{d}");
    let aai = attr(&d, "aai").unwrap();
    let aai = percent_encoding::percent_decode_str(&aai)
        .decode_utf8()
        .unwrap();
    let aai: Value = serde_json::from_str(&aai).unwrap();
    assert_eq!(aai["verified"], false);
    assert_eq!(aai["queue"], "agents");

    let mut call = VxmlCall::start(&server).await;
    let d = call.silence().await;
    assert!(d.contains(ACCOUNT_PROMPT), "{d}");
    call.silence().await;
    let d = call.silence().await;
    assert!(d.contains(HOLD) && d.contains("<transfer"), "{d}");
}

#[tokio::test]
async fn voicexml_urls_need_the_calls_secret() {
    let server = demo_server().await;
    let call = VxmlCall::start(&server).await;
    let url = submit_in(&call.doc, "filled").unwrap();
    assert!(url.contains("&k="), "{url}");
    let k = url.find("&k=").unwrap() + 3;
    let mut forged = url.clone().into_bytes();
    forged[k] = if forged[k] == b'A' { b'B' } else { b'A' };
    let res = server
        .http()
        .post(String::from_utf8(forged).unwrap())
        .form(&[("digits", "10001")])
        .send()
        .await
        .unwrap();
    let doc = res.text().await.unwrap();
    assert!(!doc.contains(PIN_PROMPT), "{doc}");
    assert!(doc.contains("<disconnect"), "{doc}");
}

// ---------------------------------------------------------------- decision API

async fn api_turn(
    server: &TestServer,
    token: &str,
    call_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    let res = server
        .http()
        .post(server.url(&format!("/api/v2/calls/{call_id}/turns")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn decision_api_demo_calls() {
    let server = demo_server().await;
    let (id, secret) = server
        .create_client("genesys", &["call:turn"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    let turn = |call: &'static str, input: Option<&'static str>, turn: Option<u32>| {
        let server = &server;
        let token = token.clone();
        async move {
            let mut body =
                json!({"flowId": "demo-pin", "ani": "+15550100999", "dnis": "+15550100000"});
            if let Some(i) = input {
                body["input"] = json!(i);
            }
            if let Some(t) = turn {
                body["turn"] = json!(t);
            }
            api_turn(server, &token, call, body).await
        }
    };
    let (status, r) = turn("gc-1", None, None).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["action"], "collect");
    assert_eq!(r["prompt"], ACCOUNT_PROMPT);
    assert_eq!(r["maxDigits"], 10);
    assert_eq!(r["secure"], false);
    assert_eq!(r["turn"], 2);
    let (_, r) = turn("gc-1", Some("10001#"), Some(2)).await;
    assert_eq!(r["prompt"], PIN_PROMPT);
    assert_eq!(r["secure"], true);
    assert_eq!(r["recording"], "pause");
    let (_, r) = turn("gc-1", Some("2468#"), Some(3)).await;
    assert_eq!(r["prompt"], format!("Welcome, Ada. {MENU_PROMPT}"));
    assert_eq!(r["choices"], "1,2,9");
    assert_eq!(r["recording"], "resume");
    // A retried request for turn 3 gets the same answer, without a second verification.
    let (_, again) = turn("gc-1", Some("2468#"), Some(3)).await;
    assert_eq!(again, r);
    assert_eq!(audit_events(&server, "identity.verify").await.len(), 1);
    // An older turn than the last answered one is refused.
    let (status, _) = turn("gc-1", Some("10001#"), Some(2)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, r) = turn("gc-1", Some("9"), Some(4)).await;
    assert_eq!(r["action"], "hangup");
    assert_eq!(r["prompt"], "Goodbye.");
    assert_eq!(r["verified"], true);
    assert_eq!(r["factors"], "pin");

    // Wrong PIN three times: a transfer with the reason.
    turn("gc-2", None, None).await;
    turn("gc-2", Some("10001#"), Some(2)).await;
    turn("gc-2", Some("1111#"), Some(3)).await;
    turn("gc-2", Some("2222#"), Some(4)).await;
    let (_, r) = turn("gc-2", Some("3333#"), Some(5)).await;
    assert_eq!(r["action"], "transfer", "{r}");
    assert_eq!(r["queue"], "agents");
    assert_eq!(r["verified"], false);
    assert_eq!(r["failureReason"], "max_attempts");
    assert_eq!(r["prompt"], HOLD);

    // Silence.
    turn("gc-3", None, None).await;
    let (_, r) = turn("gc-3", Some(""), Some(2)).await;
    assert_eq!(r["prompt"], ACCOUNT_PROMPT);
    turn("gc-3", None, Some(3)).await;
    let (_, r) = turn("gc-3", None, Some(4)).await;
    assert_eq!(r["action"], "transfer");

    // The scope is required.
    let (id, secret) = server.create_client("other", &["flow:read"]).await.unwrap();
    let other = server.token(&id, &secret, None).await.unwrap();
    let (status, _) = api_turn(&server, &other, "gc-4", json!({"flowId": "demo-pin"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Unknown flows are a 404.
    let (status, _) = api_turn(&server, &token, "gc-5", json!({"flowId": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn no_secret_digit_reaches_the_database_or_the_audit() {
    let server = demo_server().await;
    let canary = "97531864";
    let mut call = TwilioCall::new(&server, "CA-canary");
    call.start().await;
    call.keys("10001#").await;
    call.keys(&format!("{canary}#")).await;
    assert!(call.bodies.iter().all(|b| !b.contains(canary)));
    let audit = server.store().read_audit().await.unwrap();
    assert!(!format!("{audit:?}").contains(canary));
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "the canary PIN is in a database file"
        );
    }
}

#[tokio::test]
async fn requests_signed_by_twilios_own_library_are_accepted() {
    let server = demo_server().await;
    let call = TwilioCall::new(&server, "CA-official");
    let url = server.url("/voice/twilio/demo-pin");
    let params = call.params(None);
    let official =
        ivrauth_testkit::telephony::twilio_signature(TWILIO_TOKEN, &url, &params).unwrap();
    let (status, body) = call
        .post_signed(&url, &params, Some(official.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(ACCOUNT_PROMPT));
    // The same request with one character changed, signed the same way, is refused.
    let mut changed = params.clone();
    changed[3].1 = changed[3].1.replace('5', "6");
    let (status, _) = call.post_signed(&url, &changed, Some(official)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // And a follow-up turn (query string with the sealed session) signed by the library.
    let next = attr(&body, "action").unwrap();
    let mut keyed = params.clone();
    keyed.push(("Digits".to_owned(), "10001#".to_owned()));
    let sig = ivrauth_testkit::telephony::twilio_signature(TWILIO_TOKEN, &next, &keyed).unwrap();
    let (status, body) = call.post_signed(&next, &keyed, Some(sig)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(PIN_PROMPT), "{body}");
}

/// The demo server with Twilio's REST API configured at `app`, a local stand-in for it.
async fn demo_server_with_twilio_rest(app: axum::Router) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    demo_server_with(|c| {
        c.platforms.twilio.rest = Some(ivrauth_server::calls::twilio::TwilioRest {
            base_url: rest,
            username: "AC0123456789".to_owned(),
            password: Secret::new("rest-secret".to_owned()),
        });
    })
    .await
}

#[tokio::test]
async fn twilio_recording_is_paused_through_the_rest_api_in_secure_segments() {
    use std::sync::Mutex;
    // A local stand-in for Twilio's REST API that records what it is asked.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                log.lock()
                    .unwrap()
                    .push((uri.path().to_owned(), body, auth));
                axum::Json(json!({"sid": "RE1", "status": "paused"}))
            }
        },
    );
    let server = demo_server_with_twilio_rest(app).await;
    let mut call = TwilioCall::new(&server, "CA-rec");
    call.start().await;
    assert!(seen.lock().unwrap().is_empty());
    call.keys("10001#").await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].0,
            "/2010-04-01/Accounts/AC0123456789/Calls/CA-rec/Recordings/Twilio.CURRENT.json"
        );
        assert!(seen[0].1.contains("Status=paused"), "{:?}", seen[0]);
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "AC0123456789:rest-secret"
            )
        );
        assert_eq!(seen[0].2, expected);
    }
    call.keys(&format!("{PIN}#")).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].1.contains("Status=in-progress"), "{:?}", seen[1]);
}

#[tokio::test]
async fn no_pin_is_asked_for_when_twilio_cannot_pause_the_recording() {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "try later".to_owned(),
        )
    });
    let server = demo_server_with_twilio_rest(app).await;
    let mut call = TwilioCall::new(&server, "CA-rec-down");
    call.start().await;
    let body = call.keys("10001#").await;
    assert!(!body.contains(PIN_PROMPT), "{body}");
    assert!(body.contains("<Hangup/>"), "{body}");
}

#[tokio::test]
async fn decision_api_needs_the_turn_once_a_call_has_a_session() {
    let server = demo_server().await;
    let (id, secret) = server
        .create_client("genesys", &["call:turn"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    let body = |turn: Option<u32>| {
        let mut b = json!({"flowId": "demo-pin", "ani": "+15550100999", "input": "10001#"});
        if let Some(t) = turn {
            b["turn"] = json!(t);
        }
        b
    };
    let (status, first) = api_turn(&server, &token, "gc-t", body(Some(1))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["prompt"], ACCOUNT_PROMPT);
    // A retry of the first request (turn 1) is a replay, not an answer.
    let (_, again) = api_turn(&server, &token, "gc-t", body(Some(1))).await;
    assert_eq!(again, first);
    // Without a turn the request is ambiguous once the call has a session.
    let (status, _) = api_turn(&server, &token, "gc-t", body(None)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // After a hang-up, a late turn does not start the call again.
    let res = server
        .http()
        .post(server.url("/api/v2/calls/gc-t/hangup"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["closed"], true);
    let (status, _) = api_turn(&server, &token, "gc-t", body(Some(2))).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn concurrent_copies_of_a_pin_turn_verify_once() {
    let server = demo_server().await;
    let (id, secret) = server
        .create_client("genesys", &["call:turn"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    let body = |input: &str, turn: u32| json!({"flowId": "demo-pin", "ani": "+15550100999", "input": input, "turn": turn});
    api_turn(&server, &token, "gc-dup", body("", 1)).await;
    api_turn(&server, &token, "gc-dup", body("10001#", 2)).await;
    let (a, b) = tokio::join!(
        api_turn(&server, &token, "gc-dup", body("1111#", 3)),
        api_turn(&server, &token, "gc-dup", body("2222#", 3)),
    );
    let statuses = [a.0, b.0];
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert_eq!(audit_events(&server, "identity.verify").await.len(), 1);
    assert_eq!(failed_attempts(&server, "10001").await, 1);
}

#[tokio::test]
async fn after_a_hang_up_no_old_session_url_gets_another_attempt() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-fork");
    call.start().await;
    call.keys("10001#").await;
    let pin_url = call.action.clone().unwrap();
    call.keys("1111#").await;
    assert_eq!(call.hang_up().await, StatusCode::NO_CONTENT);
    let before = audit_events(&server, "identity.verify").await.len();
    // The PIN turn's URL again, with another guess, after the call hung up.
    let (status, body) = call
        .post_signed(&pin_url, &call.params(Some("2222#")), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !body.contains(PIN_PROMPT) && body.contains("<Hangup/>"),
        "{body}"
    );
    assert_eq!(audit_events(&server, "identity.verify").await.len(), before);
}

#[tokio::test]
async fn decision_api_calls_belong_to_their_client() {
    let server = demo_server().await;
    let (a_id, a_secret) = server.create_client("a", &["call:turn"]).await.unwrap();
    let (b_id, b_secret) = server.create_client("b", &["call:turn"]).await.unwrap();
    let a = server.token(&a_id, &a_secret, None).await.unwrap();
    let b = server.token(&b_id, &b_secret, None).await.unwrap();
    let body = json!({"flowId": "demo-pin", "ani": "+15550100999", "turn": 1});
    let (status, r) = api_turn(&server, &a, "shared-id", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["callId"], "shared-id");
    // Client B cannot hang up (or answer) client A's call.
    let res = server
        .http()
        .post(server.url("/api/v2/calls/shared-id/hangup"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["closed"], false);
    let (status, _) = api_turn(
        &server,
        &a,
        "shared-id",
        json!({"flowId": "demo-pin", "input": "10001#", "turn": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Oversized fields are a 400, not a failure to seal.
    let long = "5".repeat(9000);
    let (status, _) = api_turn(
        &server,
        &b,
        "other",
        json!({"flowId": "demo-pin", "ani": long, "turn": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_account_number_keyed_as_a_secret_is_stored_sealed_and_still_charged() {
    use ivrauth_core::ports::{CallStore as _, FlowStore as _};
    let server = demo_server().await;
    // The demo flow with the secure segment opened before the account number.
    let mut flow: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/demo-pin-flow.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for e in flow["edges"].as_array_mut().unwrap() {
        if e["source"] == "start" {
            e["target"] = json!("secure_in");
        }
        if e["source"] == "ask_account" && e.get("condition").is_none() {
            e["target"] = json!("ask_pin");
        }
        if e["source"] == "secure_in" {
            e["target"] = json!("ask_account");
        }
        if e["source"] == "ask_account" && e["condition"] == "failed" {
            e["target"] = json!("secure_out_failed");
        }
    }
    server
        .store()
        .create_flow(
            "secure-account",
            "secure account",
            &flow.to_string(),
            "test",
            ivrauth_testkit::TEST_EPOCH,
        )
        .await
        .unwrap();
    let account = "10003";
    let mut call = TwilioCall::new(&server, "CA-secure-account");
    let url = server.url("/voice/twilio/secure-account");
    let first = call.post(url, None).await;
    assert!(first.contains(ACCOUNT_PROMPT), "{first}");
    call.keys(&format!("{account}#")).await;
    let sorry = call.keys("1111#").await;
    assert!(sorry.contains(SORRY), "{sorry}");
    assert_eq!(call.hang_up().await, StatusCode::NO_CONTENT);
    // Charged against the account, which appears in no database column in plain text.
    assert_eq!(failed_attempts(&server, account).await, 2);
    let rows = server
        .store()
        .load_call("twilio:CA-secure-account")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.pending_secret_account.as_deref(), Some("(sealed)"));
    assert!(call.bodies.iter().all(|b| !b.contains(account)));
}

/// The sealed state in a callback URL, opened with the server's keys (binary, with the
/// engine's snapshot as JSON in it: read as text, invalid bytes replaced).
fn sealed_state(server: &TestServer, url: &str, platform: &str, call_id: &str) -> String {
    let url = url::Url::parse(&unescape(url)).unwrap();
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "s")
        .map(|(_, v)| v.into_owned())
        .expect("the callback URL carries the sealed state");
    let aad = format!("ivrauth-call\0{platform}\0demo-pin\0{call_id}");
    let plain = server
        .state()
        .calls
        .keys
        .open(&token, aad.as_bytes())
        .unwrap();
    String::from_utf8_lossy(&plain).into_owned()
}

/// Issue 8, item 11: once the PIN has been verified it leaves the call's state, so no
/// later callback URL carries it, not even sealed; the account number stays (a hang-up
/// may be charged to it).
#[tokio::test]
async fn a_verified_pin_is_in_no_later_callback_url_even_sealed() {
    let server = demo_server().await;
    let mut call = TwilioCall::new(&server, "CA-dropped");
    call.start().await;
    call.keys("10001#").await;
    let welcome = call.keys(&format!("{PIN}#")).await;
    assert_eq!(says(&welcome), ["Welcome, Ada.", MENU_PROMPT], "{welcome}");
    let state = sealed_state(
        &server,
        call.action.as_deref().unwrap(),
        "twilio",
        "CA-dropped",
    );
    assert!(state.contains("\"10001\""), "{state}");
    assert!(
        !state.contains(PIN),
        "the PIN is still sealed in the menu's URL: {state}"
    );
    // A wrong PIN (verified, refused) leaves too, before the caller is asked again.
    let mut wrong = TwilioCall::new(&server, "CA-dropped-2");
    wrong.start().await;
    wrong.keys("10001#").await;
    let again = wrong.keys("97315#").await;
    assert!(!says(&again).is_empty());
    let state = sealed_state(
        &server,
        wrong.action.as_deref().unwrap(),
        "twilio",
        "CA-dropped-2",
    );
    assert!(!state.contains("97315"), "{state}");
}
