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

use ivrauth_core::ivr::{CallEnd, Prompt, PromptKind, Verb};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::jambonz::{finish_key, is_sip_uri, transfer_headers};
use super::xml::Xml;
use super::{NextTurn, TransferAttributes, TurnAnswer};

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
