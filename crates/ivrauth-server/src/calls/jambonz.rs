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

use ivrauth_core::ivr::{CallEnd, Prompt, PromptKind, Verb};
use serde_json::{json, Map, Value};

use super::{NextTurn, TransferAttributes, TurnAnswer};

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

/// The finish key to give the platform. A menu ends on its one key anyway; a finish key that
/// is also one of its choices would swallow that choice, so it is dropped (empty: none).
pub(crate) fn finish_key(prompt: &Prompt) -> &str {
    if prompt.kind == PromptKind::Menu && prompt.choices.contains(&prompt.finish_on_key) {
        ""
    } else {
        &prompt.finish_on_key
    }
}

/// Whether a transfer target is a SIP URI (`sip:` or `sips:`, any case) rather than a number.
pub(crate) fn is_sip_uri(target: &str) -> bool {
    let lower = target.trim_start().to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

/// The verification as SIP headers for a dialled transfer: `X-Ivrauth-Verified` always,
/// `X-Ivrauth-Factors` (comma-separated) when any succeeded, then `X-Ivrauth-Failure-Reason`,
/// `X-Ivrauth-Account` and `X-Ivrauth-Reason` when set. Control characters are dropped so a
/// value cannot split a header. The call id stays out: only what the agent needs travels.
pub(crate) fn transfer_headers(attributes: &TransferAttributes) -> Vec<(&'static str, String)> {
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
