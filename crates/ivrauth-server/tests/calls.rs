//! Calls through the real server: the demo call through every front-end, request
//! authentication, replayed webhooks, hang-ups, and secrets kept out of every answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ivrauth_core::identity::{HashParams, LockoutPolicy};
use ivrauth_core::ports::{AuditStore as _, LockoutStore as _};
use ivrauth_core::secret::Secret;
use ivrauth_server::calls::signature;
use ivrauth_server::identity::IdentityService;
use ivrauth_store::{BuiltinDirectory, HashPool};
use ivrauth_testkit::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";
const JAMBONZ_SECRET: &str = "jambonz-webhook-secret-for-tests";
const PIN: &str = "2468";
const CHEAP: HashParams = HashParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

/// A server with the built-in directory, the demo flows and accounts, and Twilio and
/// jambonz credentials.
pub async fn demo_server() -> TestServer {
    let server = TestServer::builder()
        .identity(|store, clock| {
            let directory = BuiltinDirectory::new(
                store.clone(),
                CHEAP,
                HashPool::new(2),
                Arc::new(clock.clone()),
            )
            .unwrap();
            IdentityService {
                provider: Arc::new(directory),
                store: store.clone(),
                policy: LockoutPolicy::default(),
                min_verify_duration: std::time::Duration::ZERO,
                clock: Arc::new(clock.clone()),
                sleeper: Arc::new(ivrauth_connect::TokioSleeper),
            }
        })
        .calls(|c| {
            c.platforms.twilio.auth_tokens = vec![Secret::new(TWILIO_TOKEN.to_owned())];
            c.platforms.jambonz.secrets = vec![Secret::new(JAMBONZ_SECRET.to_owned())];
        })
        .start()
        .await
        .unwrap();
    ivrauth_server::demo::install(server.state(), server.base_url())
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
    let counters = server.store().counters("10001").await.unwrap();
    assert_eq!(counters.failed_attempts, 2);
    // The session is gone: a second status callback changes nothing.
    assert_eq!(call.hang_up().await, StatusCode::NO_CONTENT);
    assert_eq!(audit_events(&server, "identity.verify").await.len(), 2);

    // Hanging up before any failure charges nothing.
    let mut other = TwilioCall::new(&server, "CA-hangup-clean");
    other.start().await;
    other.keys("10002#").await;
    assert_eq!(other.hang_up().await, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .store()
            .counters("10002")
            .await
            .unwrap()
            .failed_attempts,
        0
    );
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
