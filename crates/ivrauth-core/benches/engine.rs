//! CPU cost of one whole run of the seed's flow, with the HTTP step answered in-process:
//! start (input validation), http command, condition (CEL), two setProperties, log, end.
//! `cargo bench -p ivrauth-core --bench engine`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

use ivrauth_core::engine::{self, Command, Event, RunContext};
use ivrauth_core::flow::compile;
use ivrauth_core::http::{HttpResponse, HttpResult};
use ivrauth_core::ivr::Input;
use ivrauth_core::secret::Secret;
use ivrauth_core::UnixMillis;

fn seed_run(c: &mut Criterion) {
    let text = include_str!("../../../examples/seed-auth-flow.json");
    let doc = ivrauth_proto::flow::parse_document(text).unwrap();
    let (flow, _) = compile(&doc).unwrap();
    let input = json!({"username": "testuser", "password": "correctpassword", "newPassword": "newSecurePass123"});
    let body =
        br#"{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.mock","expires_in":3600}"#.to_vec();
    let reply = HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    };

    c.bench_function("seed flow: one whole run", |b| {
        b.iter(|| {
            let now = UnixMillis(1_000);
            let (mut state, mut cmd) =
                engine::start(&flow, &input, RunContext::new("t"), now).unwrap();
            loop {
                let ev = match cmd {
                    Command::Finish(outcome) => {
                        assert_eq!(outcome.status_code, Some(200));
                        break;
                    }
                    Command::Http(_) => Event::HttpCompleted(HttpResult::Response(reply.clone())),
                    Command::Log(_) => Event::LogWritten,
                    Command::Action(_) => Event::ActionCompleted(Ok(Default::default())),
                    Command::Prompt(_) => unreachable!("the seed flow has no prompts"),
                };
                (state, cmd) = engine::step(&flow, state, ev, now);
            }
            state
        })
    });

    // One ordinary call turn as the telephony front-ends run it: restore the state the
    // caller's last prompt left, feed the keys, run to the next prompt, snapshot again.
    let demo_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/demo-pin-flow.json"
    ))
    .unwrap();
    let demo_doc = ivrauth_proto::flow::parse_document(&demo_text).unwrap();
    let (demo, _) = compile(&demo_doc).unwrap();
    let (mut st, cmd) = engine::start(
        &demo,
        &serde_json::json!({}),
        RunContext::new("t"),
        UnixMillis(0),
    )
    .unwrap();
    assert!(matches!(cmd, Command::Prompt(_)));
    st.take_verbs();
    let at_account_prompt = st.snapshot();
    c.bench_function(
        "call turn: restore, account number, next prompt, snapshot",
        |b| {
            b.iter(|| {
                let st = engine::RunState::restore(&demo, &at_account_prompt).unwrap();
                let keys = Input::Digits(Secret::new("10001#".to_owned()));
                let (mut st, cmd) = engine::step(&demo, st, Event::Input(keys), UnixMillis(5));
                assert!(matches!(cmd, Command::Prompt(_)));
                let verbs = st.take_verbs();
                (verbs, st.snapshot())
            })
        },
    );

    c.bench_function("seed flow: compile (validate) the document", |b| {
        b.iter(|| compile(&doc).unwrap())
    });
}

criterion_group!(benches, seed_run);
criterion_main!(benches);
