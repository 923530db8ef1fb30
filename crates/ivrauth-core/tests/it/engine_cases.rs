//! Engine cases as data: each `tests/cases/*.json` holds a flow (inline or `flowFile`), the
//! run's input, the host's replies in order, and the expected transcript (outcome, trace,
//! and every command the engine issued). Optional keys: `contact`, `maxSteps`,
//! `maxTraceEntries`, and `stepBudget` (`perRun`, the default, or `perTurn` as calls run).
//! `UPDATE_EXPECT=1 cargo test -p ivrauth-core` rewrites the expectations; review the diff
//! before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use ivrauth_core::engine::{self, ActionFailure, Command, Event, RunContext, StepBudget};
use ivrauth_core::flow::compile;
use ivrauth_core::http::{HttpFailure, HttpFailureKind, HttpResponse, HttpResult};
use ivrauth_core::ivr::Input;
use ivrauth_core::secret::Secret;
use ivrauth_core::UnixMillis;

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

fn reply(ev: &Value) -> Event {
    if ev == "log" {
        return Event::LogWritten;
    }
    if let Some(h) = ev.get("http") {
        let headers = h
            .get("headers")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.to_ascii_lowercase(),
                            v.as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = match h.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            Some(v) => serde_json::to_vec(v).unwrap(),
        };
        let status = h["status"].as_u64().unwrap() as u16;
        return Event::HttpCompleted(HttpResult::Response(HttpResponse {
            status,
            headers,
            body,
        }));
    }
    if let Some(outputs) = ev.get("action") {
        return Event::ActionCompleted(Ok(outputs.as_object().unwrap().clone()));
    }
    if let Some(f) = ev.get("actionFailed") {
        return Event::ActionCompleted(Err(ActionFailure {
            code: f["code"].as_str().unwrap().to_owned(),
            message: f["message"].as_str().unwrap().to_owned(),
        }));
    }
    if ev == "noInput" {
        return Event::Input(Input::NoInput);
    }
    if ev == "noMatch" {
        return Event::Input(Input::NoMatch);
    }
    if let Some(d) = ev.get("digits").and_then(Value::as_str) {
        return Event::Input(Input::Digits(Secret::new(d.to_owned())));
    }
    if let Some(kind) = ev.get("httpFailed").and_then(Value::as_str) {
        let kind = match kind {
            "timeout" => HttpFailureKind::Timeout,
            "connect" => HttpFailureKind::Connect,
            other => panic!("unknown failure kind {other}"),
        };
        return Event::HttpCompleted(HttpResult::Failed(HttpFailure {
            kind,
            message: format!("{} failed", kind.code()),
        }));
    }
    panic!("unknown event {ev}");
}

/// Run one case and return its transcript.
fn run(case: &Value) -> Value {
    let doc_value = match case.get("flowFile").and_then(Value::as_str) {
        Some(f) => {
            serde_json::from_str(&std::fs::read_to_string(case_dir().join(f)).unwrap()).unwrap()
        }
        None => case["flow"].clone(),
    };
    let doc = ivrauth_proto::flow::document_from_value(&doc_value).unwrap();
    let (flow, _warnings) =
        compile(&doc).unwrap_or_else(|r| panic!("case flow is invalid: {:?}", r.errors));
    let mut ctx = RunContext::new("trace-1");
    ctx.flow_id = Some("flow-1".into());
    if let Some(c) = case.get("contact").and_then(Value::as_object) {
        ctx.contact = c.clone();
    }
    if let Some(m) = case.get("maxSteps").and_then(Value::as_u64) {
        ctx.max_steps = m as u32;
    }
    if let Some(m) = case.get("maxTraceEntries").and_then(Value::as_u64) {
        ctx.max_trace_entries = m as u32;
    }
    // A call's budget is per turn; a simulation's (the default) covers the whole run.
    match case.get("stepBudget").and_then(Value::as_str) {
        None | Some("perRun") => {}
        Some("perTurn") => ctx.budget = StepBudget::PerTurn,
        Some(other) => panic!("unknown stepBudget {other}"),
    }
    let mut now = UnixMillis(1_000);
    let (mut state, mut cmd) = match engine::start(&flow, &case["input"], ctx, now) {
        Ok(x) => x,
        Err(problems) => return json!({ "inputErrors": problems }),
    };
    let mut commands = Vec::new();
    // Trace entries of earlier turns: at every prompt the state goes through a snapshot
    // and is restored, as a call between turns does.
    let mut trace = Vec::new();
    let mut events = case
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter();
    loop {
        match cmd {
            Command::Finish(outcome) => {
                let verbs = state.take_verbs();
                if !verbs.is_empty() {
                    commands.push(json!({ "verbs": verbs }));
                }
                trace.extend(state.into_trace());
                return json!({ "outcome": outcome, "commands": commands, "trace": trace });
            }
            Command::Prompt(prompt) => {
                let verbs = state.take_verbs();
                commands.push(json!({ "verbs": verbs, "prompt": prompt }));
                trace.extend(state.take_trace());
                let bytes = state.snapshot();
                state = engine::RunState::restore(&flow, &bytes).unwrap();
            }
            Command::Http(req) => {
                let body: Value = req
                    .body
                    .as_ref()
                    .map(|b| serde_json::from_slice(b.expose()).unwrap())
                    .unwrap_or(Value::Null);
                let headers: serde_json::Map<String, Value> = req
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.expose().clone())))
                    .collect();
                commands.push(json!({"http": {
                    "method": req.method, "url": req.url, "headers": headers, "body": body,
                    "timeoutMs": req.timeout_ms, "carriesSecret": req.carries_secret,
                }}));
            }
            Command::Log(line) => {
                commands.push(json!({"log": {"level": line.level, "message": line.message}}))
            }
            Command::Action(call) => {
                let secrets: serde_json::Map<String, Value> = call
                    .secrets
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String(v.expose().clone())))
                    .collect();
                commands.push(json!({"action": {"name": call.action, "inputs": call.inputs, "secrets": secrets}}));
            }
        }
        let ev = events
            .next()
            .unwrap_or_else(|| panic!("the engine asked for more events than the case gives"));
        now = now.plus_millis(7);
        (state, cmd) = engine::step(&flow, state, reply(&ev), now);
    }
}

#[test]
fn engine_cases() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(case_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the engine cases, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let mut case: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let got = run(&case);
        if case.get("expect") != Some(&got) {
            if update {
                case["expect"] = got;
                std::fs::write(f, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
            } else {
                failures.push(format!(
                    "{}:\nexpected {}\n     got {}",
                    f.display(),
                    serde_json::to_string_pretty(&case.get("expect")).unwrap(),
                    serde_json::to_string_pretty(&got).unwrap()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ (UPDATE_EXPECT=1 rewrites):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
