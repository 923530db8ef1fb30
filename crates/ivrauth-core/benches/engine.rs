//! CPU cost of one whole run of the seed's flow, with the HTTP step answered in-process:
//! start (input validation), http command, condition (CEL), two setProperties, log, end.
//! `cargo bench -p ivrauth-core --bench engine`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

use ivrauth_core::engine::{self, Command, Event, RunContext};
use ivrauth_core::flow::compile;
use ivrauth_core::http::{HttpResponse, HttpResult};
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
                };
                (state, cmd) = engine::step(&flow, state, ev, now);
            }
            state
        })
    });

    c.bench_function("seed flow: compile (validate) the document", |b| {
        b.iter(|| compile(&doc).unwrap())
    });
}

criterion_group!(benches, seed_run);
criterion_main!(benches);
