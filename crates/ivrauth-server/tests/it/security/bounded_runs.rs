//! Bounded runs: a simulation that re-asks for ever after silence ends at once with the limit
//! it reached named, holds a bounded trace and bounded memory, and does not starve the
//! other requests the server is answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use reqwest::StatusCode;
use serde_json::{json, Value};

use ivrauth_core::ports::AuditStore as _;
use ivrauth_testkit::{FakeClock, TestServer};

/// The flow of the report: a collect with one attempt whose `failed` edge says something
/// and asks again; an end is reachable, so the validator accepts it.
fn reasking_flow() -> Value {
    json!({
        "name": "re-ask for ever",
        "startNode": "start",
        "nodes": {
            "start": {"type": "start"},
            "ask": {"type": "collect", "properties": {"prompt": "Enter a digit.", "variable": "d", "minDigits": 1, "maxDigits": 1, "attempts": 1}},
            "done": {"type": "end", "properties": {"statusCode": 200}},
            "again": {"type": "say", "properties": {"text": "Again."}},
        },
        "edges": [
            {"source": "start", "target": "ask"},
            {"source": "ask", "target": "done"},
            {"source": "ask", "target": "again", "condition": "failed"},
            {"source": "again", "target": "ask"},
        ],
    })
}

/// The same loop, after an http GET of `url` (which a test server watches).
fn reasking_after_get(url: &str) -> Value {
    let mut flow = reasking_flow();
    flow["nodes"]["call"] =
        json!({"type": "http", "properties": {"method": "GET", "url": url, "timeout": 5000}});
    flow["edges"][0] = json!({"source": "start", "target": "call"});
    flow["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "call", "target": "ask"}));
    flow
}

struct Client {
    server: TestServer,
    token: String,
}

impl Client {
    async fn start(
        limits: impl FnOnce(&mut ivrauth_server::app::simulate::SimulateConfig),
    ) -> Client {
        let server = TestServer::start_with(|c| {
            limits(&mut c.simulate);
            // Many simulations at once are what these tests are about.
            c.rate_limit_burst = 1_000;
        })
        .await
        .unwrap();
        let (id, secret) = server
            .create_client("sim", &["flow:simulate"])
            .await
            .unwrap();
        let token = server.token(&id, &secret, None).await.unwrap();
        Client { server, token }
    }

    fn simulate(&self, flow: &Value) -> impl std::future::Future<Output = (StatusCode, Value)> {
        let req = self
            .server
            .http()
            .post(self.server.url("/api/v2/flows/simulate"))
            .bearer_auth(&self.token)
            .json(&json!({"flow": flow, "input": {}, "digits": []}));
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            (status, res.json().await.unwrap())
        }
    }
}

/// A loopback server whose `GET /ping` counts its calls and moves `clock` on by `advance`.
async fn ping_server(clock: Option<(FakeClock, Duration)>) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = Router::new().route(
        "/ping",
        get(move || {
            let seen = seen.clone();
            let clock = clock.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if let Some((clock, by)) = clock {
                    clock.advance(by);
                }
                "pong"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ping", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

/// Resident memory of this process (the server runs in it), from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn assert_ends_with(sim: &Value, code: &str, max_trace: usize) {
    assert_eq!(sim["outcome"]["error"]["code"], code, "{sim}");
    assert!(sim["outcome"]["endNode"].is_null(), "{sim}");
    let trace = sim["trace"].as_array().unwrap();
    assert!(
        !trace.is_empty() && trace.len() <= max_trace,
        "{} entries",
        trace.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_that_reasks_after_silence_ends_within_a_second_with_the_limit_named() {
    let api = Client::start(|_| {}).await;
    let started = Instant::now();
    let (status, sim) =
        tokio::time::timeout(Duration::from_secs(10), api.simulate(&reasking_flow()))
            .await
            .expect("the simulation never answered");
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_ends_with(&sim, "no_input_limit_exceeded", 1_000);
    let message = sim["outcome"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("20 prompts"), "{message}");
    assert!(message.contains("max_no_input"), "{message}");
    // The prompt left waiting is in the trace, with the reason.
    let last = sim["trace"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["nodeId"], "ask", "{last}");
    assert!(
        last["errors"][0].as_str().unwrap().contains("no input"),
        "{last}"
    );
}

#[tokio::test]
async fn each_simulation_limit_ends_the_run_with_its_name_and_a_capped_trace() {
    // The whole run's step budget: silence does not reset it.
    let api = Client::start(|l| {
        l.max_no_input = 10_000;
        l.max_steps = 101;
    })
    .await;
    let (status, sim) = api.simulate(&reasking_flow()).await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_ends_with(&sim, "step_limit_exceeded", 101);
    assert_eq!(sim["trace"].as_array().unwrap().len(), 101);

    // The trace cap, below the step budget.
    let api = Client::start(|l| {
        l.max_no_input = 10_000;
        l.max_trace_entries = 37;
    })
    .await;
    let (status, sim) = api.simulate(&reasking_flow()).await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_ends_with(&sim, "trace_limit_exceeded", 37);
    assert_eq!(sim["trace"].as_array().unwrap().len(), 37);

    // No input at all allowed: the first prompt ends the run.
    let api = Client::start(|l| l.max_no_input = 0).await;
    let (_, sim) = api.simulate(&reasking_flow()).await;
    assert_ends_with(&sim, "no_input_limit_exceeded", 2);

    // Wall time, by the server's clock: the flow's request takes 11 s of it.
    let api = Client::start(|l| l.max_no_input = 10_000).await;
    let (url, pings) =
        ping_server(Some((api.server.clock().clone(), Duration::from_secs(11)))).await;
    let (status, sim) = api.simulate(&reasking_after_get(&url)).await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(pings.load(Ordering::SeqCst), 1);
    assert_ends_with(&sim, "time_limit_exceeded", 2);
    let last = sim["trace"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["nodeId"], "call", "{last}");
    assert!(sim["outcome"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_duration_secs"));

    // The run's audit record names the limit too.
    let audit = api.server.store().read_audit().await.unwrap();
    let run = audit
        .iter()
        .rev()
        .find(|r| r.event == "simulation.run")
        .unwrap();
    assert_eq!(
        run.detail["error"], "time_limit_exceeded",
        "{:?}",
        run.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reasking_simulations_at_once_keep_memory_bounded_and_healthz_answering() {
    let api = Arc::new(Client::start(|_| {}).await);
    let before = rss_bytes();
    for _round in 0..5 {
        let runs: Vec<_> = (0..10)
            .map(|_| tokio::spawn(api.simulate(&reasking_flow())))
            .collect();
        let started = Instant::now();
        let health = api
            .server
            .http()
            .get(api.server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(1));
        for run in runs {
            let (status, sim) = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("a simulation never answered")
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{sim}");
            assert_ends_with(&sim, "no_input_limit_exceeded", 1_000);
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 200 * 1024 * 1024,
        "resident memory grew by {} MiB",
        grown / (1024 * 1024)
    );
}

/// Everything logged on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On a runtime with one thread, a simulation that never gave way would hold it for its
/// whole run. Each loop of these runs writes a `log` line; the answer from /healthz arrives
/// between two log lines of one run, so a run gave way in the middle of its loop.
#[tokio::test(flavor = "current_thread")]
async fn long_simulations_do_not_starve_the_other_requests() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let api = Arc::new(
        Client::start(|l| {
            l.max_steps = 3_000;
            l.max_no_input = 3_000;
            l.max_trace_entries = 3_000;
        })
        .await,
    );
    let (url, pings) = ping_server(None).await;
    let mut flow = reasking_after_get(&url);
    flow["nodes"]["again"] =
        json!({"type": "log", "properties": {"logLevel": "INFO", "message": "silence again"}});
    let runs: Vec<_> = (0..3).map(|_| tokio::spawn(api.simulate(&flow))).collect();
    // Every run has made its request and is about to loop over silent prompts.
    while pings.load(Ordering::SeqCst) < 3 {
        tokio::task::yield_now().await;
    }
    let health = api
        .server
        .http()
        .get(api.server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // The answer is in; whatever the runs log after this line, they logged after it.
    tracing::info!("healthz-answered");
    for run in runs {
        let (status, sim) = run.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{sim}");
        assert_ends_with(&sim, "step_limit_exceeded", 3_000);
    }

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let health_at = lines
        .iter()
        .position(|l| l.contains("healthz-answered"))
        .unwrap_or_else(|| panic!("the marker was not logged:\n{text}"));
    let run_of = |l: &str| {
        l.contains("ivrauth::flow_log")
            .then(|| l.split("trace_id=").nth(1))
            .flatten()
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    let before: std::collections::HashSet<String> = lines[..health_at]
        .iter()
        .filter_map(|l| run_of(l))
        .collect();
    let after: std::collections::HashSet<String> = lines[health_at..]
        .iter()
        .filter_map(|l| run_of(l))
        .collect();
    assert!(
        before.intersection(&after).next().is_some(),
        "no run logged both before and after /healthz answered: {} runs before, {} after",
        before.len(),
        after.len()
    );
}

/// A call's turns are capped: the turn after the last one allowed ends the call as an
/// engine error does (a hang-up, audited with the limit named).
#[tokio::test]
async fn a_call_ends_after_its_turn_limit_as_an_engine_error_does() {
    let server = TestServer::builder()
        .calls(|c| c.max_turns = 3)
        .start()
        .await
        .unwrap();
    let (id, secret) = server
        .create_client("ivr", &["call:turn", "flow:write"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    let created = server
        .http()
        .post(server.url("/api/v2/flows"))
        .bearer_auth(&token)
        .json(&reasking_flow())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let flow_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut answers = Vec::new();
    for turn in 1..=4u32 {
        let mut body = json!({"flowId": flow_id, "ani": "+15550100999"});
        if turn > 1 {
            body["turn"] = json!(turn);
            body["input"] = json!("");
        }
        let res = server
            .http()
            .post(server.url("/api/v2/calls/call-1/turns"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        answers.push(res.json::<Value>().await.unwrap());
    }
    // Three turns ask (the flow would ask for ever); the fourth ends the call.
    for a in &answers[..3] {
        assert_eq!(a["action"], "collect", "{a}");
    }
    assert_eq!(answers[3]["action"], "hangup", "{}", answers[3]);
    let audit = server.store().read_audit().await.unwrap();
    let ended = audit.iter().find(|r| r.event == "call.ended").unwrap();
    assert_eq!(ended.outcome, "failure");
    assert_eq!(
        ended.detail["error"], "turn_limit_exceeded",
        "{}",
        ended.detail
    );
}
