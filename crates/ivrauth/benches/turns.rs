//! Ordinary TwiML turns of the real `ivrauth serve --demo` process against a bare axum
//! handler, both driven by `wrk` running in its own process.
//!
//! The measured request is what Twilio sends when the caller keys `10001#` at `demo-pin`'s
//! account-number prompt: a signed form POST to the Gather's action URL (the sealed call
//! state in its query). ivrauth answers with the PIN prompt: signature check, the sealed
//! state opened, one engine step, the next state sealed, TwiML rendered, nothing durable.
//! Replaying the same signed request recomputes the same answer, so `wrk` can send it again
//! and again. The bare handler is an axum route in this process answering a fixed body of
//! the same size to the same request (path, query, headers and body), with the same
//! connections, threads and duration. Three interleaved rounds (bare, turns) and the ratio
//! within each round: the machine's speed drifts between rounds, the ratio much less.
//!
//! CPU per request is read from `/proc`: the server process's for turns, this process's for
//! the bare handler (it does nothing else meanwhile); `wrk`'s own CPU is in neither.
//!
//! `cargo bench -p ivrauth --bench turns` (optionally `-- SECONDS CONNECTIONS`, defaults
//! 10 and 64). Needs `wrk` on the PATH: `scripts/install-bench-deps` installs it.
//! `IVRAUTH_BENCH_BIN=path` measures another `ivrauth` binary (an earlier build, for a
//! before/after comparison in the same conditions).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "twilio-auth-token-for-the-turn-bench";
const ACCOUNT_PROMPT: &str = "Please enter your account number";
const PIN_PROMPT: &str = "Please enter your PIN";
const FORM: &str = "application/x-www-form-urlencoded";
const CALL_SID: &str = "CA00000000000000000000000000bench";
const FROM: &str = "+15550100777";
const ROUNDS: usize = 3;
const WRK_THREADS: usize = 2;
/// Clock ticks per second of `/proc` CPU times (`CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The `ivrauth serve --demo` child, killed when dropped.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::env::var_os("IVRAUTH_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ivrauth").into());
    let mut child = Command::new(bin)
        .current_dir(dir.path())
        .env("IVRAUTH_TWILIO_AUTH_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", "data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .find_map(|l| {
            l.ok()?
                .strip_prefix("ivrauth listening on ")
                .map(str::to_owned)
        })
        .expect("the server did not say where it listens");
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        url,
        _dir: dir,
    }
}

/// One signed Twilio webhook.
#[derive(Clone)]
struct Webhook {
    url: String,
    signature: String,
    body: String,
}

fn webhook(url: &str, digits: Option<&str>) -> Webhook {
    let mut params = vec![
        ("AccountSid".to_owned(), "AC0123456789".to_owned()),
        ("CallSid".to_owned(), CALL_SID.to_owned()),
        ("From".to_owned(), FROM.to_owned()),
        ("To".to_owned(), "+15550100000".to_owned()),
    ];
    if let Some(d) = digits {
        params.push(("Digits".to_owned(), d.to_owned()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    Webhook {
        url: url.to_owned(),
        signature: ivrauth_server::calls::twilio::signature::twilio_signature(
            TOKEN.as_bytes(),
            url,
            &params,
        ),
        body,
    }
}

async fn send(client: &reqwest::Client, w: &Webhook, expect: &str) -> String {
    let res = client
        .post(&w.url)
        .header("X-Twilio-Signature", &w.signature)
        .header("Content-Type", FORM)
        .body(w.body.clone())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert!(
        status.is_success() && body.contains(expect),
        "{} answered {status}, expected {expect:?}:\n{body}",
        w.url
    );
    body
}

/// The Gather's action URL in a TwiML answer (unescaped).
fn action(xml: &str) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .find(|n| n.has_tag_name("Gather"))
        .and_then(|n| n.attribute("action"))
        .expect("no Gather action")
        .to_owned()
}

/// The answer with every sealed continuation (`s=` up to the next `&`) left out.
fn without_token(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find("s=") {
        out.push_str(&rest[..at + 2]);
        rest = &rest[at + 2..];
        rest = &rest[rest.find('&').unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// What one `wrk` run reported.
struct Run {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

/// Lua for `wrk`: the webhook's method, headers and body (the URL is on the command line).
fn wrk_script(w: &Webhook, dir: &std::path::Path) -> std::path::PathBuf {
    let lua = |s: &str| format!("{s:?}"); // a Rust debug string is a valid Lua string here
    let script = format!(
        "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = {}\n\
         wrk.headers[\"X-Twilio-Signature\"] = {}\n",
        lua(&w.body),
        lua(FORM),
        lua(&w.signature)
    );
    let path = dir.join("turn.lua");
    std::fs::write(&path, script).unwrap();
    path
}

fn wrk(url: &str, script: &std::path::Path, secs: u64, connections: usize) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t",
            &WRK_THREADS.to_string(),
            "-c",
            &connections.to_string(),
        ])
        .args(["-d", &format!("{secs}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("wrk could not be run ({e}); run scripts/install-bench-deps"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed:\n{text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrong answers or socket errors under load:\n{text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
            .trim()
    };
    let ms = |s: &str| -> f64 {
        let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap());
        let n: f64 = n.parse().unwrap();
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            other => panic!("unknown unit {other}"),
        }
    };
    Run {
        requests_per_sec: field("Requests/sec:").parse().unwrap(),
        p50_ms: ms(field("50%")),
        p99_ms: ms(field("99%")),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}")),
    }
}

/// CPU time (user + system) of process `pid`, clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let close = stat.rfind(')').unwrap();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `wrk` run with the CPU process `pid` used per request, µs.
fn measured(pid: u32, url: &str, script: &std::path::Path, secs: u64, c: usize) -> (Run, f64) {
    let before = cpu_ticks(pid);
    let run = wrk(url, script, secs, c);
    let ticks = cpu_ticks(pid) - before;
    let us = ticks as f64 / TICKS_PER_SEC * 1e6 / run.requests as f64;
    (run, us)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(10);
    let connections = usize::try_from(args.get(1).copied().unwrap_or(64)).unwrap();
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("turns: `wrk` is not installed; run scripts/install-bench-deps");
        std::process::exit(2);
    }

    let server = start_server();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();

    // The ordinary turn: start the call, then key the account number.
    let start = webhook(&format!("{}/voice/twilio/demo-pin", server.url), None);
    let first = rt.block_on(send(&client, &start, ACCOUNT_PROMPT));
    let turn = webhook(&action(&first), Some("10001#"));
    let answer = rt.block_on(send(&client, &turn, PIN_PROMPT));
    let again = rt.block_on(send(&client, &turn, PIN_PROMPT));
    // The same answer but for the continuation, sealed under a fresh nonce every time.
    assert_eq!(
        without_token(&answer),
        without_token(&again),
        "replaying the ordinary turn changed its answer"
    );
    assert_eq!(answer.len(), again.len());

    // The bare handler: the same request, a fixed answer of the same size.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let bare_addr = listener.local_addr().unwrap();
    let fixed = axum::body::Bytes::from(answer.clone());
    rt.spawn(async move {
        let app = axum::Router::new().route(
            "/voice/twilio/{flow_id}",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let fixed = fixed.clone();
                async move { ([("content-type", "text/xml; charset=utf-8")], fixed) }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let path_and_query = &turn.url[server.url.len()..];
    let bare_url = format!("http://{bare_addr}{path_and_query}");
    let bare_answer = rt.block_on(send(
        &client,
        &Webhook {
            url: bare_url.clone(),
            ..turn.clone()
        },
        PIN_PROMPT,
    ));
    assert_eq!(bare_answer.len(), answer.len());

    let dir = tempfile::tempdir().unwrap();
    let script = wrk_script(&turn, dir.path());
    println!(
        "ordinary TwiML turns against a bare axum handler: wrk -t{WRK_THREADS} -c{connections} \
         -d{secs}s in its own process; request {} bytes of URL and {} of body, answer {} bytes",
        turn.url.len(),
        turn.body.len(),
        answer.len()
    );
    println!(
        "| round | bare requests/s | ordinary turns/s | turn p50 / p99 | bare p50 / p99 | CPU per request: bare / turn | turns / bare |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let me = std::process::id();
    for round in 1..=ROUNDS {
        let (bare, bare_cpu) = measured(me, &bare_url, &script, secs, connections);
        let (turns, turn_cpu) = measured(server.child.id(), &turn.url, &script, secs, connections);
        println!(
            "| {round} | {:.0} | {:.0} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {bare_cpu:.0} / {turn_cpu:.0} µs | {:.1} % |",
            bare.requests_per_sec,
            turns.requests_per_sec,
            turns.p50_ms,
            turns.p99_ms,
            bare.p50_ms,
            bare.p99_ms,
            100.0 * turns.requests_per_sec / bare.requests_per_sec
        );
    }
    // The turn still answers right after the load.
    rt.block_on(send(&client, &turn, PIN_PROMPT));
}
