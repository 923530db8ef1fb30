//! Calls through the real server's Twilio front-end (`POST /voice/twilio/demo-pin`):
//!
//! 1. TwiML turns per second and latency (p50, p99) at 64 concurrent keep-alive connections,
//!    for an ordinary turn (the caller keys an account number and gets the PIN prompt back:
//!    signature check, sealed session opened, engine step, state sealed again, TwiML
//!    rendered; nothing durable), beside a bare axum handler that answers a fixed TwiML body
//!    of the same size, hit by the same load generator in the same run. Between them, two
//!    probe routes mounted on the real server: its router and layers answering the same
//!    fixed body, and the same after one `get_flow` store read (what an ordinary turn reads).
//!    CPU per request is measured for each (the whole process: server and load generator),
//!    and separately for sqlx's SQLite worker threads.
//! 2. Bytes stored per idle call: the `call_sessions` row a durable turn (the PIN turn)
//!    leaves, and zero rows and zero bytes written by ordinary turns.
//! 3. No per-call memory between turns: the process's RSS before and after 10,000 calls
//!    are started (first turns with distinct CallSids, no further turns).
//!
//! Then the pieces of an ordinary turn timed in-process (one at a time, and whole turns and
//! store reads 64 at a time), to say where the time goes.
//!
//! `cargo bench -p ivrauth-server --bench twiml` (optionally `-- SECONDS CONCURRENCY`,
//! defaults 10 and 64; a 2 s warm-up precedes each measurement). Bounded, all on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;

use ivrauth_core::call::CallKey;
use ivrauth_core::engine::{self, Event};
use ivrauth_core::identity::{HashParams, LockoutPolicy};
use ivrauth_core::ivr::Input;
use ivrauth_core::ports::{CallStore as _, FlowStore as _};
use ivrauth_core::secret::Secret;
use ivrauth_server::app::identity::IdentityService;
use ivrauth_server::app::turn::{self as session, Platform, TurnRequest};
use ivrauth_server::calls::twilio::{self as twiml, signature};
use ivrauth_server::calls::NextTurn;
use ivrauth_store::{BuiltinDirectory, HashPool};
use ivrauth_testkit::TestServer;

const TOKEN: &str = "twilio-auth-token-for-the-bench";
const FLOW: &str = "demo-pin";
const ACCOUNT: &str = "10001";
const PIN: &str = "2468";
const ACCOUNT_PROMPT: &str = "Please enter your account number";
const PIN_PROMPT: &str = "Please enter your PIN";
const WELCOME: &str = "Welcome, ";
const FORM: &str = "application/x-www-form-urlencoded";
const WARM_UP: Duration = Duration::from_secs(2);
/// Calls started for the memory measurement (after as many again to warm up).
const RSS_CALLS: usize = 10_000;
/// Calls taken through the durable PIN turn for the storage measurement.
const DURABLE_CALLS: usize = 200;
const CHEAP: HashParams = HashParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

/// One signed Twilio webhook, ready to send again and again.
#[derive(Clone)]
struct Webhook {
    url: String,
    signature: String,
    body: String,
    /// What a right answer contains.
    expect: &'static str,
}

fn params(call_sid: &str, from: &str, digits: Option<&str>) -> Vec<(String, String)> {
    let mut p = vec![
        ("AccountSid".to_owned(), "AC0123456789".to_owned()),
        ("CallSid".to_owned(), call_sid.to_owned()),
        ("From".to_owned(), from.to_owned()),
        ("To".to_owned(), "+15550100000".to_owned()),
    ];
    if let Some(d) = digits {
        p.push(("Digits".to_owned(), d.to_owned()));
    }
    p
}

fn webhook(url: &str, params: &[(String, String)], expect: &'static str) -> Webhook {
    Webhook {
        url: url.to_owned(),
        signature: signature::twilio_signature(TOKEN.as_bytes(), url, params),
        body: serde_urlencoded::to_string(params).unwrap(),
        expect,
    }
}

async fn send(client: &reqwest::Client, w: &Webhook) -> (reqwest::StatusCode, String) {
    let res = client
        .post(&w.url)
        .header("X-Twilio-Signature", &w.signature)
        .header(CONTENT_TYPE, FORM)
        .body(w.body.clone())
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.text().await.unwrap())
}

/// Send `w` once and insist on a right answer.
async fn send_ok(client: &reqwest::Client, w: &Webhook) -> String {
    let (status, body) = send(client, w).await;
    assert!(
        status == reqwest::StatusCode::OK && body.contains(w.expect),
        "{} answered {status}, expected {:?}:\n{body}",
        w.url,
        w.expect
    );
    body
}

/// The Gather's action URL in a TwiML answer (unescaped).
fn action(xml: &str) -> String {
    let needle = "action=\"";
    let start = xml.find(needle).expect("no action") + needle.len();
    let end = xml[start..].find('"').unwrap() + start;
    xml[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
}

fn clients(n: usize) -> Vec<reqwest::Client> {
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap()
        })
        .collect()
}

struct Stats {
    /// Answered within the measured window.
    requests: usize,
    /// Answered, warm-up included.
    all_requests: usize,
    secs: f64,
    /// Latencies in µs, sorted.
    latencies: Vec<u32>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        f64::from(self.latencies[i]) / 1000.0
    }
}

/// `concurrency` workers, each with its own client (one keep-alive connection), send `w`
/// back to back for the warm-up and then for `measure`; the requests started inside the
/// measured window count. Panics if any answer was not a 200 holding `w.expect`.
async fn load(w: &Webhook, concurrency: usize, measure: Duration) -> Stats {
    let w = Arc::new(w.clone());
    let start = Instant::now();
    let (from, until) = (start + WARM_UP, start + WARM_UP + measure);
    let tasks: Vec<_> = clients(concurrency)
        .into_iter()
        .map(|client| {
            let w = w.clone();
            tokio::spawn(async move {
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut bad: Vec<String> = Vec::new();
                let mut all = 0usize;
                loop {
                    let t0 = Instant::now();
                    if t0 >= until {
                        break;
                    }
                    let (status, body) = send(&client, &w).await;
                    let took = t0.elapsed();
                    all += 1;
                    if status != reqwest::StatusCode::OK || !body.contains(w.expect) {
                        bad.push(format!("{status}: {body}"));
                    }
                    if t0 >= from {
                        lat.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    }
                }
                (lat, bad, all)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut bad = Vec::new();
    let mut all_requests = 0;
    for t in tasks {
        let (l, b, a) = t.await.unwrap();
        latencies.extend(l);
        bad.extend(b);
        all_requests += a;
    }
    assert!(
        bad.is_empty(),
        "{} wrong answers from {} (expected 200 holding {:?}); the first:\n{}",
        bad.len(),
        w.url,
        w.expect,
        bad[0]
    );
    latencies.sort_unstable();
    Stats {
        requests: latencies.len(),
        all_requests,
        secs: measure.as_secs_f64(),
        latencies,
    }
}

/// Send `make(i)` for `i` in `range` with `clients.len()` workers.
async fn each(
    clients: &[reqwest::Client],
    range: std::ops::Range<usize>,
    make: Arc<dyn Fn(usize) -> Webhook + Send + Sync>,
) {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, next, make) = (client.clone(), next.clone(), make.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    send_ok(&client, &make(i)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Resident set of this process (server, bare server and load generator), KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time (user + system, clock ticks) of this process's live threads, by thread name
/// with its trailing number dropped (`tokio-runtime-worker`, `sqlx-sqlite-worker`, ...).
fn thread_cpu() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        *out.entry(name).or_default() += ticks;
    }
    out
}

/// CPU time of the whole process (all threads, also those that ended), clock ticks.
fn process_cpu() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let close = stat.rfind(')').unwrap();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second of `/proc` CPU times (`CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU used while `f` ran, per request: the whole process, and its SQLite worker threads.
struct Cpu {
    total_us: f64,
    sqlite_us: f64,
}

async fn with_cpu(f: impl std::future::Future<Output = Stats>) -> (Stats, Cpu) {
    let (p0, t0) = (process_cpu(), thread_cpu());
    let stats = f.await;
    let (p1, t1) = (process_cpu(), thread_cpu());
    let sqlite = |m: &std::collections::BTreeMap<String, u64>| -> u64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("sqlx"))
            .map(|(_, v)| v)
            .sum()
    };
    // The warm-up ran too: scale by the requests of the whole run.
    let all = stats.all_requests as f64;
    let us = |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1e6 / all;
    let cpu = Cpu {
        total_us: us(p1 - p0),
        sqlite_us: us(sqlite(&t1).saturating_sub(sqlite(&t0))),
    };
    (stats, cpu)
}

/// Bytes of every file in the server's data directory (database, WAL, shared memory).
fn data_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum()
}

/// µs per call of `f`, over `n` calls.
fn time_us(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// CPU time of this process's live threads (scheduler statistics), ns.
fn threads_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Wall µs and CPU µs (every thread: the tokio workers and sqlx's SQLite threads) per
/// call of `f`, over `n` calls one at a time.
async fn time_us_async<F: std::future::Future<Output = ()>>(
    n: u32,
    mut f: impl FnMut() -> F,
) -> (f64, f64) {
    for _ in 0..n / 10 {
        f().await;
    }
    let cpu = threads_cpu_ns();
    let start = Instant::now();
    for _ in 0..n {
        f().await;
    }
    let wall = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let cpu = (threads_cpu_ns() - cpu) as f64 / 1e3 / f64::from(n);
    (wall, cpu)
}

/// Run `f` from `concurrency` tasks for 2 s: completions per second and CPU µs (every
/// thread) per completion.
async fn concurrent<F, Fut>(concurrency: usize, f: F) -> (f64, f64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicUsize::new(0));
    let secs = 2.0;
    let cpu = threads_cpu_ns();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (f, done) = (f.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    f().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed) as f64;
    let cpu_us = (threads_cpu_ns() - cpu) as f64 / 1e3 / n;
    (n / secs, cpu_us)
}

/// A server with the built-in directory, the demo flows and accounts, a Twilio auth token,
/// and a probe route that answers `probe`'s body (once set) through the real router and
/// layers.
async fn demo_server(probe: Arc<std::sync::OnceLock<axum::body::Bytes>>) -> TestServer {
    let read_probe = probe.clone();
    let probe_route = axum::Router::new()
        .route(
            "/bench/probe/{flow_id}",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let body = probe.get().cloned().unwrap_or_default();
                async move { ([(CONTENT_TYPE, "text/xml; charset=utf-8")], body) }
            }),
        )
        .route(
            "/bench/probe-read/{flow_id}",
            axum::routing::post(
                move |axum::extract::State(state): axum::extract::State<
                    ivrauth_server::AppState,
                >,
                      _body: axum::body::Bytes| {
                    let body = read_probe.get().cloned().unwrap_or_default();
                    async move {
                        let flow = state.store.get_flow(FLOW, None).await.unwrap();
                        assert!(flow.is_some());
                        ([(CONTENT_TYPE, "text/xml; charset=utf-8")], body)
                    }
                },
            ),
        );
    let server = TestServer::builder()
        .routes(probe_route)
        .config(|c| {
            c.rate_limit_per_sec = u32::MAX;
            c.rate_limit_burst = u32::MAX;
        })
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
                min_verify_duration: Duration::ZERO,
                clock: Arc::new(clock.clone()),
                sleeper: Arc::new(ivrauth_connect::TokioSleeper),
                account_rules: Default::default(),
                account_key: ivrauth_core::identity::AccountKey::new(
                    ivrauth_testkit::TEST_ACCOUNT_KEY.to_vec(),
                ),
                lookup_limiter: ivrauth_server::app::identity::lookup_limiter(
                    ivrauth_server::app::identity::DEFAULT_LOOKUPS_PER_HOUR,
                ),
            }
        })
        .calls(|c| c.platforms.twilio.auth_tokens = vec![Secret::new(TOKEN.to_owned())])
        .start()
        .await
        .unwrap();
    ivrauth_server::http::demo::install(server.state(), server.base_url())
        .await
        .unwrap();
    server
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let measure = Duration::from_secs(args.first().copied().unwrap_or(10));
    let concurrency = usize::try_from(args.get(1).copied().unwrap_or(64)).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(measure, concurrency, cores));
}

async fn run(measure: Duration, concurrency: usize, cores: usize) {
    let probe = Arc::new(std::sync::OnceLock::new());
    let server = demo_server(probe.clone()).await;
    let store = server.store().clone();
    let state = server.state().clone();
    let setup = reqwest::Client::new();

    // ------------------------------------------------------------ 1. ordinary turns
    let call_sid = "CA00000000000000000000000000bench";
    let from = "+15550100777";
    let first = webhook(
        &server.url("/voice/twilio/demo-pin"),
        &params(call_sid, from, None),
        ACCOUNT_PROMPT,
    );
    let first_answer = send_ok(&setup, &first).await;
    let turn_url = action(&first_answer);
    let turn_params = params(call_sid, from, Some("10001#"));
    let ordinary = webhook(&turn_url, &turn_params, PIN_PROMPT);
    let answer = send_ok(&setup, &ordinary).await;
    // Replaying it gives the same prompt again (the sealed state is that of the first turn).
    let again = send_ok(&setup, &ordinary).await;
    assert_eq!(answer.len(), again.len());

    // The bare handler: the same route, a fixed answer of the same size, the body read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = listener.local_addr().unwrap();
    let fixed = axum::body::Bytes::from(answer.clone());
    probe.set(fixed.clone()).unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/voice/twilio/{flow_id}",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let fixed = fixed.clone();
                async move { ([(CONTENT_TYPE, "text/xml; charset=utf-8")], fixed) }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let path_and_query = &turn_url[server.base_url().len()..];
    let bare = Webhook {
        url: format!("http://{bare_addr}{path_and_query}"),
        ..ordinary.clone()
    };

    let probe_hook = Webhook {
        url: server.url(&path_and_query.replacen("/voice/twilio/", "/bench/probe/", 1)),
        ..ordinary.clone()
    };

    let rows_before = store.call_storage_bytes_per_row().await.unwrap();
    let files_before = data_bytes(server.data_dir());
    let (bare_stats, bare_cpu) = with_cpu(load(&bare, concurrency, measure)).await;
    let (probe_stats, probe_cpu) = with_cpu(load(&probe_hook, concurrency, measure)).await;
    let read_hook = Webhook {
        url: server.url(&path_and_query.replacen("/voice/twilio/", "/bench/probe-read/", 1)),
        ..ordinary.clone()
    };
    let (read_stats, read_cpu) = with_cpu(load(&read_hook, concurrency, measure)).await;
    let (turn_stats, turn_cpu) = with_cpu(load(&ordinary, concurrency, measure)).await;
    let rows_after = store.call_storage_bytes_per_row().await.unwrap();
    let files_after = data_bytes(server.data_dir());
    assert_eq!(
        rows_before, 0.0,
        "call_sessions is not empty before the load"
    );
    assert_eq!(rows_after, 0.0, "ordinary turns wrote call_sessions rows");
    assert!(store
        .load_call(&CallKey::new(Platform::Twilio, call_sid).to_string())
        .await
        .unwrap()
        .is_none());

    // ------------------------------------------------------------ 3. memory per call
    let pool = clients(concurrency);
    let start_url = server.url("/voice/twilio/demo-pin");
    let make: Arc<dyn Fn(usize) -> Webhook + Send + Sync> = Arc::new(move |i| {
        webhook(
            &start_url,
            &params(&format!("CA{i:032x}"), &format!("+1555{i:07}"), None),
            ACCOUNT_PROMPT,
        )
    });
    each(&pool, 0..RSS_CALLS, make.clone()).await; // warm-up: allocator, connections
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib();
    let t0 = Instant::now();
    each(&pool, RSS_CALLS..2 * RSS_CALLS, make).await;
    let started_rate = RSS_CALLS as f64 / t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = rss_kib();
    assert_eq!(
        store.call_storage_bytes_per_row().await.unwrap(),
        0.0,
        "first turns wrote call_sessions rows"
    );
    drop(pool);

    // ------------------------------------------------------------ 2. storage per idle call
    // Sequential: in-flight verifications of one account count towards its lockout.
    let mut last = None;
    for i in 0..DURABLE_CALLS {
        let sid = format!("CAd{i:031x}");
        let from = format!("+1666{i:07}");
        let a = send_ok(
            &setup,
            &webhook(
                &server.url("/voice/twilio/demo-pin"),
                &params(&sid, &from, None),
                ACCOUNT_PROMPT,
            ),
        )
        .await;
        let p = send_ok(
            &setup,
            &webhook(
                &action(&a),
                &params(&sid, &from, Some(&format!("{ACCOUNT}#"))),
                PIN_PROMPT,
            ),
        )
        .await;
        send_ok(
            &setup,
            &webhook(
                &action(&p),
                &params(&sid, &from, Some(&format!("{PIN}#"))),
                WELCOME,
            ),
        )
        .await;
        last = Some(sid);
    }
    let per_row = store.call_storage_bytes_per_row().await.unwrap();
    let row = store
        .load_call(&CallKey::new(Platform::Twilio, last.unwrap()).to_string())
        .await
        .unwrap()
        .expect("the PIN turn wrote no session row");
    let last_answer = row.last_answer.as_deref().map_or(0, str::len);
    let columns = row.call_id.len()
        + row.flow_id.len()
        + row.state.len()
        + last_answer
        + row.pending_secret_account.as_deref().map_or(0, str::len)
        + row.ani.len()
        + 6 * 8;
    let state_text = String::from_utf8(row.state.clone()).unwrap();
    let repeats_state = row
        .last_answer
        .as_deref()
        .is_some_and(|a| !state_text.is_empty() && a.contains(&state_text));

    // ------------------------------------------------------------ where the time goes
    let token = turn_url
        .split_once("s=")
        .map(|(_, s)| s.split('&').next().unwrap().to_owned())
        .unwrap();
    let aad = format!("ivrauth-call\0twilio\0{FLOW}\0{call_sid}").into_bytes();
    let keys = &state.calls.keys;
    let plain = keys
        .open(&token, &aad)
        .expect("the session token does not open");
    let cont: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let version = cont["version"].as_i64().unwrap();
    let snapshot = serde_json::to_vec(&cont["engine"]).unwrap();
    let stored = store.get_flow(FLOW, Some(version)).await.unwrap().unwrap();
    let flow = state.flow_cache.get_or_compile(&stored).unwrap();
    let now = state.clock.now();
    let tokens: [&[u8]; 1] = [TOKEN.as_bytes()];

    let t_hmac = time_us(20_000, || {
        assert!(signature::twilio_verify(
            &tokens,
            black_box(&turn_url),
            &turn_params,
            &ordinary.signature
        ));
    });
    let t_form = time_us(20_000, || {
        black_box(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(ordinary.body.as_bytes())
                .unwrap(),
        );
    });
    let t_open = time_us(20_000, || {
        black_box(keys.open(black_box(&token), &aad).unwrap());
    });
    let t_seal = time_us(20_000, || {
        black_box(keys.seal(black_box(&plain), &aad).unwrap());
    });
    let t_json = time_us(20_000, || {
        let v: serde_json::Value = serde_json::from_slice(black_box(&plain)).unwrap();
        black_box(serde_json::to_vec(&v).unwrap());
    });
    let t_engine = time_us(20_000, || {
        let run = engine::RunState::restore(&flow, &snapshot).unwrap();
        let input = Input::Digits(Secret::new("10001#".to_owned()));
        let (run, cmd) = engine::step(&flow, run, Event::Input(input), now);
        black_box(cmd);
        black_box(run.snapshot());
    });
    let t_cache = time_us(200_000, || {
        black_box(state.flow_cache.get_or_compile(black_box(&stored)).unwrap());
    });
    let t_flow_read = time_us_async(10_000, || {
        let store = store.clone();
        async move {
            black_box(store.get_flow(FLOW, Some(version)).await.unwrap());
        }
    })
    .await;
    let turn_request = || TurnRequest {
        platform: Platform::Twilio,
        flow_id: FLOW.to_owned(),
        call_id: call_sid.to_owned(),
        ani: from.to_owned(),
        dnis: "+15550100000".to_owned(),
        turn: turn_url
            .split_once("t=")
            .and_then(|(_, t)| t.split('&').next())
            .and_then(|t| t.parse().ok()),
        token: Some(token.clone()),
        input: Some(Input::Digits(Secret::new("10001#".to_owned()))),
        call_secret: None,
    };
    let response = session::turn(&state, turn_request()).await.unwrap();
    let t_turn = time_us_async(5_000, || {
        let state = &state;
        let req = turn_request();
        async move {
            black_box(session::turn(state, req).await.unwrap());
        }
    })
    .await;
    let next = NextTurn {
        action: turn_url.clone(),
        no_input: format!("{turn_url}&ev=none"),
        no_match: format!("{turn_url}&ev=nomatch"),
        hangup: format!("{turn_url}&ev=hangup"),
    };
    let opts = twiml::TwimlOptions::default();
    assert!(twiml::render(&response.answer, &next, &opts).contains(PIN_PROMPT));
    let t_render = time_us(20_000, || {
        black_box(twiml::render(black_box(&response.answer), &next, &opts));
    });
    // `concurrency` at a time, in-process: the store read alone, and whole turns.
    let (flow_reads_per_sec, flow_read_cpu) = concurrent(concurrency, {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move {
                black_box(store.get_flow(FLOW, Some(version)).await.unwrap());
            }
        }
    })
    .await;
    let (turns_per_sec, turn_cpu_inproc) = concurrent(concurrency, {
        let state = state.clone();
        let (token, call_sid, from) = (token.clone(), call_sid.to_owned(), from.to_owned());
        let t = turn_request().turn;
        move || {
            let state = state.clone();
            let req = TurnRequest {
                platform: Platform::Twilio,
                flow_id: FLOW.to_owned(),
                call_id: call_sid.clone(),
                ani: from.clone(),
                dnis: "+15550100000".to_owned(),
                turn: t,
                token: Some(token.clone()),
                input: Some(Input::Digits(Secret::new("10001#".to_owned()))),
                call_secret: None,
            };
            async move {
                let r = session::turn(&state, req).await.unwrap();
                assert!(r.token.is_some());
            }
        }
    })
    .await;

    // ------------------------------------------------------------ summary
    let ratio = 100.0 * turn_stats.rate() / bare_stats.rate();
    let growth_kib = rss_after as i64 - rss_before as i64;
    let per_call = growth_kib as f64 * 1024.0 / RSS_CALLS as f64;
    println!();
    println!(
        "cores: {cores}, concurrency: {concurrency} keep-alive connections, {} s measured after a {} s warm-up, one process (server + load generator)",
        measure.as_secs(),
        WARM_UP.as_secs()
    );
    println!(
        "answer: {} bytes of TwiML (sealed session in the URLs: {} characters)",
        answer.len(),
        token.len()
    );
    println!();
    println!("| measurement | requests/s | p50 | p99 | max | CPU per request (of which SQLite threads) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, s, c) in [
        (
            "bare axum handler, fixed TwiML body",
            &bare_stats,
            &bare_cpu,
        ),
        (
            "the server's router and layers, fixed TwiML body (probe route)",
            &probe_stats,
            &probe_cpu,
        ),
        (
            "the same probe after one `get_flow` store read",
            &read_stats,
            &read_cpu,
        ),
        (
            "ordinary TwiML turn (account number -> PIN prompt)",
            &turn_stats,
            &turn_cpu,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} µs ({:.0} µs) |",
            s.rate(),
            s.pct(0.50),
            s.pct(0.99),
            s.pct(1.0),
            c.total_us,
            c.sqlite_us
        );
    }
    println!("| ordinary turns / bare | {ratio:.1} % (target: at least 50 %) | | | | |");
    println!();
    println!("| storage and memory | result | target |");
    println!("| --- | --- | --- |");
    println!(
        "| call_sessions per idle call after the PIN turn (dbstat: table + indexes, whole pages, {DURABLE_CALLS} calls) | {per_row:.0} bytes | at most 4096 |"
    );
    println!(
        "| of which column data of one row (sealed state {} + last answer {last_answer} + keys and integers) | {columns} bytes | |",
        row.state.len()
    );
    println!(
        "| the last answer holds the sealed state again (its `token`) | {} | |",
        if repeats_state { "yes" } else { "no" }
    );
    println!(
        "| written by ordinary turns ({} turns): call_sessions rows / data-directory growth | 0 rows / {} bytes | 0 |",
        turn_stats.requests,
        files_after as i64 - files_before as i64
    );
    println!(
        "| RSS before / after starting {RSS_CALLS} more calls ({started_rate:.0} calls/s, no rows written) | {rss_before} KiB / {rss_after} KiB | |"
    );
    println!("| RSS growth per started call | {per_call:.1} bytes | ~0 |");
    println!();
    println!("| piece of an ordinary turn (in-process, one at a time) | wall µs | CPU µs |");
    println!("| --- | --- | --- |");
    for (name, (wall, cpu)) in [
        (
            "whole `app::turn::turn` (store read, open, JSON, engine, seal)",
            t_turn,
        ),
        (
            "  flow row read from SQLite (`get_flow`, through sqlx's thread)",
            t_flow_read,
        ),
        (
            "  compiled-flow cache lookup (mutex, key clone)",
            (t_cache, t_cache),
        ),
        (
            "  open the sealed session (base64 + XChaCha20-Poly1305)",
            (t_open, t_open),
        ),
        (
            "  continuation JSON parse + serialise (as a `Value`)",
            (t_json, t_json),
        ),
        (
            "  engine: restore snapshot, step, snapshot",
            (t_engine, t_engine),
        ),
        ("  seal the next state", (t_seal, t_seal)),
        (
            "Twilio signature check (HMAC-SHA1, both URL variants)",
            (t_hmac, t_hmac),
        ),
        ("form body parse", (t_form, t_form)),
        ("TwiML render", (t_render, t_render)),
    ] {
        println!("| {name} | {wall:.1} | {cpu:.1} |");
    }
    println!();
    println!("| in-process, {concurrency} at a time | per second | CPU µs each |");
    println!("| --- | --- | --- |");
    println!(
        "| `app::turn::turn` (the ordinary turn, no HTTP) | {turns_per_sec:.0} | {turn_cpu_inproc:.1} |"
    );
    println!("| `get_flow` alone | {flow_reads_per_sec:.0} | {flow_read_cpu:.1} |");
}
