#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The telephony checkers really run the third-party code, and really can say no.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;

use ivrauth_testkit::telephony::{
    jambonz_sign, jambonz_verify_with_node_client, jambonz_verify_with_node_client_detailed,
    twilio_signature, twilio_validate, validate_jambonz_verbs, validate_vxml,
    JAMBONZ_NODE_CLIENT_TOLERANCE_SECS,
};

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Twilio's scheme, written out independently: base64(HMAC-SHA1(token, url + sorted name+value)).
fn twilio_by_hand(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = params.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut data = url.to_owned();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Change one character of `s` (at `at`), staying in the same alphabet.
fn one_char_changed(s: &str, at: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// --- Twilio -------------------------------------------------------------------------------

const DOCS_URL: &str = "https://example.com/myapp.php?foo=1&bar=2";

fn docs_params() -> Vec<(String, String)> {
    pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ])
}

#[test]
fn twilio_library_signs_the_documented_example_as_the_scheme_says() {
    let params = docs_params();
    let sig = twilio_signature("12345", DOCS_URL, &params).unwrap();
    assert_eq!(sig, twilio_by_hand("12345", DOCS_URL, &params));
    assert_eq!(sig, "vNe7KK2kJwCsxc9K3OLkkKB3qqI=");
}

#[test]
fn twilio_library_matches_its_own_published_vectors() {
    // The vector of twilio-php's validation guide and twilio-python's own unit tests.
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        twilio_signature("12345", url, &params).unwrap(),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    // A repeated name signs every value, sorted (twilio-python's multi-dict vector).
    let repeated = pairs(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
    ]);
    let sig = twilio_signature("12345", url, &repeated).unwrap();
    assert_eq!(sig, "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    assert_eq!(sig, twilio_by_hand("12345", url, &repeated));
}

#[test]
fn twilio_validate_accepts_the_right_signature_and_refuses_a_one_char_change() {
    let params = docs_params();
    let sig = twilio_signature("12345", DOCS_URL, &params).unwrap();
    assert!(twilio_validate("12345", DOCS_URL, &params, &sig).unwrap());
    // The library also tries the URL with its default port.
    let with_port = "https://example.com:443/myapp.php?foo=1&bar=2";
    assert!(twilio_validate("12345", with_port, &params, &sig).unwrap());

    for at in [0, 10, sig.len() - 2] {
        let bad = one_char_changed(&sig, at);
        assert!(
            !twilio_validate("12345", DOCS_URL, &params, &bad).unwrap(),
            "{bad}"
        );
    }
    let mut tampered = params.clone();
    tampered[2].1 = "1235".into();
    assert!(!twilio_validate("12345", DOCS_URL, &tampered, &sig).unwrap());
    assert!(!twilio_validate("12346", DOCS_URL, &params, &sig).unwrap());
    let other_url = "https://example.com/myapp.php?foo=1&bar=3";
    assert!(!twilio_validate("12345", other_url, &params, &sig).unwrap());
}

// --- jambonz signature --------------------------------------------------------------------

const SECRET: &str = "wh_secret_cJqgaDDmVC4FT9hU1w2BaW";
const BODY: &[u8] = br#"{"call_sid":"b6f48929-8e86-4d62-ae3b-64fb574d91f6","direction":"inbound","from":"+15083084809","to":"+15083728299","digits":"1234","reason":"dtmfDetected"}"#;

#[test]
fn jambonz_signature_has_the_header_format() {
    let header = jambonz_sign(SECRET, BODY, 1_735_689_600);
    let (t, v1) = header.split_once(',').unwrap();
    assert_eq!(t, "t=1735689600");
    let hex = v1.strip_prefix("v1=").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[test]
fn node_client_accepts_our_jambonz_signature() {
    let header = jambonz_sign(SECRET, BODY, now());
    assert_eq!(
        jambonz_verify_with_node_client_detailed(SECRET, BODY, &header).unwrap(),
        Ok(())
    );
    assert!(jambonz_verify_with_node_client(SECRET, BODY, &header).unwrap());
}

#[test]
fn node_client_refuses_a_tampered_body_header_or_secret() {
    let header = jambonz_sign(SECRET, BODY, now());
    // One character of the body.
    let mut body = BODY.to_vec();
    let at = body.iter().position(|&b| b == b'4').unwrap();
    body[at] = b'5';
    assert_eq!(
        jambonz_verify_with_node_client_detailed(SECRET, &body, &header).unwrap(),
        Err("No matching signatures found".to_owned())
    );
    // One character of the signature.
    let last = header.len() - 1;
    let flipped = if header.ends_with('0') { '1' } else { '0' };
    let bad_header = format!("{}{flipped}", &header[..last]);
    assert!(!jambonz_verify_with_node_client(SECRET, BODY, &bad_header).unwrap());
    // Another secret.
    assert!(!jambonz_verify_with_node_client("wh_secret_other", BODY, &header).unwrap());
    // A timestamp that is not the signed one.
    let t = now();
    let signed = jambonz_sign(SECRET, BODY, t);
    let moved = signed.replacen(&format!("t={t}"), &format!("t={}", t - 1), 1);
    assert!(!jambonz_verify_with_node_client(SECRET, BODY, &moved).unwrap());
    // No header value at all.
    assert_eq!(
        jambonz_verify_with_node_client_detailed(SECRET, BODY, "").unwrap(),
        Err("Missing Jambonz-Signature in /ivrauth-testkit".to_owned())
    );
}

#[test]
fn node_client_tolerance_is_300_seconds_into_the_past_only() {
    let t = now();
    let old = t - JAMBONZ_NODE_CLIENT_TOLERANCE_SECS - 30;
    assert_eq!(
        jambonz_verify_with_node_client_detailed(SECRET, BODY, &jambonz_sign(SECRET, BODY, old))
            .unwrap(),
        Err("timestamp outside of tolerance".to_owned())
    );
    let recent = t - JAMBONZ_NODE_CLIENT_TOLERANCE_SECS + 30;
    assert!(
        jambonz_verify_with_node_client(SECRET, BODY, &jambonz_sign(SECRET, BODY, recent)).unwrap()
    );
    // node-client puts no bound on timestamps in the future.
    let future = t + 3600;
    assert!(
        jambonz_verify_with_node_client(SECRET, BODY, &jambonz_sign(SECRET, BODY, future)).unwrap()
    );
}

// --- jambonz verbs ------------------------------------------------------------------------

#[test]
fn verb_specifications_accept_an_ivr_turn() {
    let verbs = json!([
        {"verb": "tag", "data": {"ivrauthSession": "s_123", "stage": "account"}},
        {"verb": "config", "record": {"action": "pauseCallRecording", "recordingID": "r1"}},
        {
            "verb": "gather",
            "actionHook": "/calls/s_123/turn",
            "input": ["digits"],
            "minDigits": 4,
            "maxDigits": 12,
            "finishOnKey": "#",
            "timeout": 10,
            "say": {"text": "Please enter your account number, then press pound."}
        },
        {"verb": "say", "text": "Sorry, I did not get that."},
        {"verb": "pause", "length": 1},
        {"verb": "play", "url": "https://ivr.example/audio/goodbye.wav"},
        {"verb": "config", "record": {"action": "resumeCallRecording", "recordingID": "r1"}},
        {"verb": "hangup"}
    ]);
    assert_eq!(validate_jambonz_verbs(&verbs).unwrap(), Ok(()));

    let transfer = json!([
        {
            "verb": "dial",
            "actionHook": "/calls/s_123/dial-done",
            "callerId": "+15083728299",
            "answerOnBridge": true,
            "headers": {"X-Ivrauth-Session": "s_123"},
            "target": [
                {"type": "phone", "number": "+15551234567"},
                {"type": "sip", "sipUri": "sip:agents@pbx.example", "headers": {"X-Skill": "billing"}}
            ]
        }
    ]);
    assert_eq!(validate_jambonz_verbs(&transfer).unwrap(), Ok(()));
    let queue = json!([{"verb": "enqueue", "name": "support", "waitHook": "/calls/s_123/wait"}]);
    assert_eq!(validate_jambonz_verbs(&queue).unwrap(), Ok(()));
    // The keyed form is accepted too.
    let keyed = json!([{"say": {"text": "Hello"}}, {"hangup": {}}]);
    assert_eq!(validate_jambonz_verbs(&keyed).unwrap(), Ok(()));
}

#[test]
fn verb_specifications_reject_bad_arrays() {
    let cases = [
        (
            json!([{"verb": "gather", "actionHook": "/t", "digits": 4}]),
            "gather: unknown property digits",
        ),
        (
            json!([{"verb": "gather", "numDigits": "4"}]),
            "gather: property numDigits has invalid data type",
        ),
        (
            json!([{"verb": "pause"}]),
            "pause: missing value for length",
        ),
        (
            json!([{"verb": "speak", "text": "hi"}]),
            "invalid instruction: speak",
        ),
        (
            json!([{"verb": "config", "record": {"action": "pauseRecording"}}]),
            "invalid value pauseRecording",
        ),
        (
            json!([{"verb": "dial", "target": [{"type": "queue", "name": "support"}]}]),
            "invalid value queue",
        ),
        (
            json!({"verb": "say", "text": "not in an array"}),
            "malformed jambonz payload: must be array",
        ),
    ];
    for (verbs, expected) in cases {
        let refused = validate_jambonz_verbs(&verbs).unwrap().unwrap_err();
        assert!(refused.contains(expected), "{verbs}: {refused}");
    }
}

// --- VoiceXML -----------------------------------------------------------------------------

const GOOD_VXML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<vxml xmlns="http://www.w3.org/2001/vxml" version="2.1" xml:lang="en-US">
  <catch event="connection.disconnect.hangup">
    <submit next="https://ivr.example/calls/s_123/hangup" namelist="account" method="post"/>
  </catch>
  <form id="login">
    <field name="account">
      <grammar src="builtin:dtmf/digits?minlength=4;maxlength=12"/>
      <prompt>Please enter your account number, then press pound.</prompt>
      <noinput count="1"><prompt>Sorry, I did not hear anything.</prompt><reprompt/></noinput>
      <noinput count="2"><disconnect/></noinput>
      <nomatch><prompt>That is not a valid account number.</prompt><reprompt/></nomatch>
    </field>
    <field name="pin" type="digits?minlength=4;maxlength=8">
      <prompt>Now your PIN.</prompt>
      <filled>
        <submit next="https://ivr.example/calls/s_123/turn" namelist="account pin" method="post"/>
      </filled>
    </field>
  </form>
  <form id="agent">
    <transfer name="xfer" dest="tel:+15551234567" bridge="true" aai="session=s_123" connecttimeout="20s">
      <prompt>Transferring you now.</prompt>
    </transfer>
    <block><disconnect/></block>
  </form>
</vxml>
"#;

#[test]
fn xmllint_accepts_a_valid_voicexml_document() {
    assert_eq!(validate_vxml(GOOD_VXML).unwrap(), Ok(()));
}

#[test]
fn xmllint_rejects_invalid_voicexml() {
    let cases = [
        // <submit> straight in <field>, not in executable content.
        (
            GOOD_VXML.replace(
                "<prompt>Now your PIN.</prompt>",
                r#"<submit next="/x" method="post"/>"#,
            ),
            "This element is not expected",
        ),
        (
            GOOD_VXML.replace(r#"namelist="account pin" method="post""#, r#"method="put""#),
            "'put' is not an element of the set",
        ),
        (
            GOOD_VXML.replace(
                r#"<field name="account">"#,
                r#"<field name="account" bogus="1">"#,
            ),
            "The attribute 'bogus' is not allowed",
        ),
        (
            GOOD_VXML.replace("</form>\n  <form", "<form"),
            "parser error",
        ),
    ];
    for (doc, expected) in cases {
        let refused = validate_vxml(&doc).unwrap().unwrap_err();
        assert!(refused.contains(expected), "{expected}: {refused}");
    }
}
