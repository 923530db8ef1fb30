//! The call protocol as data: each `tests/call_cases/*.json` holds cases of one of the
//! pure decisions in `ivrauth_core::call` (`fn`: `callKey`, `admit`, `admitEffect`,
//! `durable`, `hangupCharge`, `transferAttributes`, `callEnd`), each with what it is
//! `given` and what it must `expect`. Adding a case is adding data.
//! `UPDATE_EXPECT=1 cargo test -p ivrauth-core --test call_cases` rewrites the
//! expectations; review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use ivrauth_core::call::{
    self, Admission, CallKey, CallProgress, HangupCharge, Platform, Refusal, StoredTurn,
    TurnEffects,
};
use ivrauth_core::ivr::{CallEnd, Prompt, PromptKind};
use ivrauth_proto::api::Outcome;

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/call_cases")
}

fn platform(given: &Value) -> Platform {
    given["platform"].as_str().unwrap().parse().unwrap()
}

fn stored(given: &Value) -> Option<StoredTurn<'_>> {
    let row = given.get("stored").filter(|v| !v.is_null())?;
    Some(StoredTurn {
        turn: row["turn"].as_u64().unwrap() as u32,
        ended: row.get("ended").and_then(Value::as_bool).unwrap_or(false),
        last_answer: row.get("lastAnswer").and_then(Value::as_str),
    })
}

fn turn(given: &Value) -> Option<u32> {
    given.get("turn").and_then(Value::as_u64).map(|t| t as u32)
}

fn admission(a: Result<Admission, Refusal>) -> Value {
    match a {
        Ok(Admission::Start) => json!("start"),
        Ok(Admission::Continue) => json!("continue"),
        Ok(Admission::Replay(answer)) => json!({ "replay": answer }),
        Ok(Admission::Stale) => json!("stale"),
        Err(Refusal::BadSession) => json!({ "refused": "badSession" }),
        Err(Refusal::TurnRequired) => json!({ "refused": "turnRequired" }),
    }
}

fn progress(given: &Value) -> CallProgress {
    serde_json::from_value(given["progress"].clone()).unwrap()
}

fn prompt(secure: bool) -> Prompt {
    Prompt {
        node_id: "ask".to_owned(),
        kind: PromptKind::Collect,
        say: Vec::new(),
        min_digits: 1,
        max_digits: 8,
        finish_on_key: "#".to_owned(),
        timeout_seconds: 5,
        secure,
        choices: Vec::new(),
        attempt: 1,
        attempts: 3,
    }
}

/// What the decision named by `fn` answers for `given`.
fn decide(function: &str, given: &Value) -> Value {
    match function {
        "callKey" => match given["text"].as_str().unwrap().parse::<CallKey>() {
            Ok(key) => json!({
                "platform": key.platform.as_str(),
                "callId": key.call_id,
                "display": key.to_string(),
                "carrier": format!("{:?}", key.platform.carrier()).to_lowercase(),
            }),
            Err(e) => json!({ "error": e.to_string() }),
        },
        "admit" => admission(call::admit(
            platform(given).carrier(),
            stored(given),
            turn(given),
            given["carried"].as_bool().unwrap(),
        )),
        "admitEffect" => admission(call::admit_effect(stored(given), turn(given).unwrap())),
        "durable" => json!(call::durable(
            platform(given).carrier(),
            TurnEffects {
                performed_action: given["performedAction"].as_bool().unwrap(),
                ended: given["ended"].as_bool().unwrap(),
                charge_changed: given["chargeChanged"].as_bool().unwrap(),
            },
        )),
        "hangupCharge" => {
            let progress = progress(given);
            let charge =
                call::hangup_charge(&progress, &prompt(given["secure"].as_bool().unwrap()));
            let row = charge.as_ref().map(HangupCharge::to_row);
            // What is written in the row reads back as the same charge.
            if let (Some(c), Some(r)) = (&charge, &row) {
                assert_eq!(&HangupCharge::from_row(r), c);
            }
            json!({
                "row": row,
                "changed": call::charge_changed(charge.as_ref(), &progress),
            })
        }
        "transferAttributes" => {
            let end: CallEnd = serde_json::from_value(given["end"].clone()).unwrap();
            let limit = given
                .get("perCallFailures")
                .and_then(Value::as_u64)
                .map(|l| l as u32);
            serde_json::to_value(call::transfer_attributes(
                &progress(given),
                limit,
                &end,
                given["callId"].as_str().unwrap(),
            ))
            .unwrap()
        }
        "callEnd" => {
            let outcome: Outcome = serde_json::from_value(given["outcome"].clone()).unwrap();
            serde_json::to_value(call::call_end(&outcome)).unwrap()
        }
        other => panic!("unknown fn {other}"),
    }
}

#[test]
fn call_protocol_cases() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(case_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut seen = std::collections::BTreeSet::new();
    let mut count = 0;
    let mut failures = Vec::new();
    for f in &files {
        let mut file: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let function = file["fn"].as_str().unwrap().to_owned();
        seen.insert(function.clone());
        for case in file["cases"].as_array_mut().unwrap() {
            count += 1;
            let got = decide(&function, &case["given"]);
            if case.get("expect") == Some(&got) {
                continue;
            }
            if update {
                case["expect"] = got;
            } else {
                failures.push(format!(
                    "{} / {}:\nexpected {}\n     got {}",
                    f.display(),
                    case["name"],
                    case.get("expect").unwrap_or(&Value::Null),
                    got
                ));
            }
        }
        if update {
            std::fs::write(f, serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
        }
    }
    // The walk found every decision, and cases for each.
    for function in [
        "callKey",
        "admit",
        "admitEffect",
        "durable",
        "hangupCharge",
        "transferAttributes",
        "callEnd",
    ] {
        assert!(seen.contains(function), "no case file for `{function}`");
    }
    assert!(count >= 30, "expected the call cases, found {count}");
    assert!(
        failures.is_empty(),
        "{} case(s) differ (UPDATE_EXPECT=1 rewrites):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
