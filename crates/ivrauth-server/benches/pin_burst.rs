//! Bursts of honest PIN verifications against the hashing pool's queue, with ordinary call
//! turns going on beside them.
//!
//! A real server (testkit `TestServer`: the demo flows, a Twilio auth token, the built-in
//! directory with the production argon2id parameters m=19456 KiB, t=2, p=1, one hashing
//! permit per core, the pool's default queue, and the default 300 ms verification padding).
//!
//! 1. **Capacity**, measured first in the same run: `identity.verify` through the whole path
//!    (counted first, account read, argon2id on the pool, settled and audited) in a closed
//!    loop, four tasks per core, no padding.
//! 2. For each chosen fraction of that capacity: PIN verifications arrive as a Poisson
//!    process at that rate for the measured time, each one `identity.verify` as the runtime
//!    performs it (the right PIN of one of 600 accounts, each with its own caller number),
//!    padded to 300 ms; meanwhile ordinary TwiML turns of `demo-pin` (a signed webhook: the
//!    caller keys the account number and gets the PIN prompt) arrive at 100 per second over
//!    HTTP. Reported: arrivals, verified, refused (`busy`: a caller sent to an agent), other
//!    failures, answer times, the pool's queue (deepest, queued, refusals by kind) and the
//!    ordinary turns' latency.
//!
//! `cargo bench -p ivrauth-server --bench pin_burst` (optionally `-- SECONDS FRACTION...`,
//! defaults 10 and 0.5 0.9 1.5 3). The load generator shares the process and its cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

use ivrauth_connect::{SystemClock, TokioSleeper};
use ivrauth_core::engine::ActionCall;
use ivrauth_core::identity::{AccountKey, AccountNumber, HashParams, LockoutPolicy};
use ivrauth_core::ports::{AccountRecord, AccountStore as _};
use ivrauth_core::time::Clock as _;
use ivrauth_core::Secret;
use ivrauth_server::app::identity::{lookup_limiter, CallContext, IdentityService};
use ivrauth_store::directory::hash_pin;
use ivrauth_store::{BuiltinDirectory, HashPool};
use ivrauth_testkit::TestServer;

const TOKEN: &str = "twilio-auth-token-for-the-bench";
const PIN: &str = "246813";
const ACCOUNTS: usize = 600;
const PADDING: Duration = Duration::from_millis(300);
const ORDINARY_PER_SEC: u64 = 100;
const CAPACITY_TIME: Duration = Duration::from_secs(5);
const PIN_PROMPT: &str = "Please enter your PIN";

fn account(i: usize) -> String {
    format!("{}", 200_001 + i % ACCOUNTS)
}

fn verify_call(i: usize) -> (ActionCall, CallContext) {
    let call = ActionCall {
        node_id: "verify".into(),
        action: "identity.verify",
        inputs: json!({"account": account(i)}).as_object().cloned().unwrap(),
        secrets: vec![("secret", Secret::new(PIN.to_owned()))],
    };
    let ctx = CallContext {
        call_id: format!("CAburst{i}"),
        ani: format!("+1555{:07}", i % ACCOUNTS),
        failures: 0,
    };
    (call, ctx)
}

fn service(
    provider: Arc<dyn ivrauth_core::identity::IdentityProvider>,
    store: Arc<dyn ivrauth_core::ports::Store>,
    padding: Duration,
) -> IdentityService {
    IdentityService {
        provider,
        store,
        policy: LockoutPolicy::default(),
        min_verify_duration: padding,
        clock: Arc::new(SystemClock),
        sleeper: Arc::new(TokioSleeper),
        account_rules: Default::default(),
        account_key: AccountKey::new(ivrauth_testkit::TEST_ACCOUNT_KEY.to_vec()),
        lookup_limiter: lookup_limiter(u32::MAX),
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// One signed Twilio webhook: the caller keys the account number at the first prompt.
struct Webhook {
    url: String,
    signature: String,
    body: String,
}

fn signed(url: &str, call_sid: &str, digits: Option<&str>) -> Webhook {
    let mut params = vec![
        ("AccountSid".to_owned(), "AC0123456789".to_owned()),
        ("CallSid".to_owned(), call_sid.to_owned()),
        ("From".to_owned(), "+15550100777".to_owned()),
        ("To".to_owned(), "+15550100000".to_owned()),
    ];
    if let Some(d) = digits {
        params.push(("Digits".to_owned(), d.to_owned()));
    }
    Webhook {
        url: url.to_owned(),
        signature: ivrauth_server::calls::twilio::signature::twilio_signature(
            TOKEN.as_bytes(),
            url,
            &params,
        ),
        body: serde_urlencoded::to_string(&params).unwrap(),
    }
}

async fn send(client: &reqwest::Client, w: &Webhook) -> (reqwest::StatusCode, String) {
    let res = client
        .post(&w.url)
        .header("X-Twilio-Signature", &w.signature)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(w.body.clone())
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.text().await.unwrap())
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

#[derive(Default)]
struct Phase {
    arrivals: usize,
    verified: Vec<Duration>,
    busy: Vec<Duration>,
    other: usize,
    turns: Vec<Duration>,
    turn_errors: usize,
    deepest: usize,
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(10.0);
    let fractions: Vec<f64> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![0.5, 0.9, 1.5, 3.0]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(Duration::from_secs_f64(secs), fractions));
}

async fn run(measure: Duration, fractions: Vec<f64>) {
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let params = HashParams::default();
    let pool = HashPool::per_core();
    let dir_pool = pool.clone();
    let server = TestServer::builder()
        .config(|c| {
            c.rate_limit_per_sec = u32::MAX;
            c.rate_limit_burst = u32::MAX;
        })
        .identity(move |store, _clock| {
            let directory =
                BuiltinDirectory::new(store.clone(), params, dir_pool, Arc::new(SystemClock))
                    .unwrap();
            service(Arc::new(directory), store.clone(), PADDING)
        })
        .calls(|c| c.platforms.twilio.auth_tokens = vec![Secret::new(TOKEN.to_owned())])
        .start()
        .await
        .unwrap();
    ivrauth_server::http::demo::install(server.state(), server.base_url())
        .await
        .unwrap();
    let hash = hash_pin(&Secret::new(PIN.to_owned()), params).unwrap();
    let now = SystemClock.now();
    for i in 0..ACCOUNTS {
        server
            .store()
            .create_account(&AccountRecord {
                account: AccountNumber::parse(&account(i)).unwrap(),
                name: "Ada Lovelace".into(),
                greeting: None,
                phone: None,
                email: None,
                phone_verified: false,
                email_verified: false,
                disabled: false,
                pin_hash: Some(hash.clone()),
                pin_history: Vec::new(),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
    }
    let padded = server.state().identity.clone().unwrap();
    let unpadded = Arc::new(service(
        padded.provider.clone(),
        padded.store.clone(),
        Duration::ZERO,
    ));

    // ------------------------------------------------------------ 1. capacity
    let next = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + CAPACITY_TIME;
    let start = Instant::now();
    let tasks: Vec<_> = (0..cores * 4)
        .map(|_| {
            let (service, next) = (unpadded.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut busy) = (0usize, 0usize);
                while Instant::now() < until {
                    let (call, ctx) = verify_call(next.fetch_add(1, Ordering::Relaxed));
                    match service.perform(call, ctx).await.0 {
                        Ok(out) if out["verified"] == json!(true) => ok += 1,
                        Ok(out) => panic!("not verified: {out:?}"),
                        Err(f) if f.code == "busy" => busy += 1,
                        Err(f) => panic!("{f:?}"),
                    }
                }
                (ok, busy)
            })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        let (o, b) = t.await.unwrap();
        ok += o;
        busy += b;
    }
    let capacity = ok as f64 / start.elapsed().as_secs_f64();
    let job = pool.stats().job_estimate;
    println!(
        "argon2id m={} KiB t={} p={}, {cores} cores, pool of {} permits, queue of at most {} waiting, margin {} ms past the {} ms padding",
        params.m_kib,
        params.t,
        params.p,
        pool.size(),
        pool.max_waiting(),
        pool.margin().as_millis(),
        PADDING.as_millis()
    );
    println!(
        "capacity (closed loop, {} tasks, no padding): {capacity:.1} verifications/s ({busy} busy); one hash ≈ {:.1} ms",
        cores * 4,
        job.as_secs_f64() * 1000.0
    );

    // The ordinary turn: the account number keyed at the first prompt, replayed.
    let setup = reqwest::Client::new();
    let first = signed(&server.url("/voice/twilio/demo-pin"), "CAordinary", None);
    let (status, answer) = send(&setup, &first).await;
    assert_eq!(status, 200, "{answer}");
    let ordinary = Arc::new(signed(&action(&answer), "CAordinary", Some("10001#")));
    let (status, answer) = send(&setup, &ordinary).await;
    assert!(status == 200 && answer.contains(PIN_PROMPT), "{answer}");

    println!(
        "\n| arrivals (× capacity) | PINs | verified | refused (busy) | other | verified answer p50 / p99 / max | refused answer p99 | deepest queue | queued | refused: full / deadline / late | ordinary turns | turn p50 / p99 / max |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut offset = ACCOUNTS / 2;
    for fraction in fractions {
        let rate = capacity * fraction;
        let before = pool.stats();
        let phase = burst(&padded, &pool, &ordinary, rate, measure, offset).await;
        offset += phase.arrivals;
        let after = pool.stats();
        let mut verified = phase.verified;
        verified.sort_unstable();
        let mut refused = phase.busy;
        refused.sort_unstable();
        let mut turns = phase.turns;
        turns.sort_unstable();
        println!(
            "| {:.0}/s ({fraction:.2}) | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} ms | {:.0} ms | {} | {} | {} / {} / {} | {} ({} errors) | {:.1} / {:.1} / {:.1} ms |",
            rate,
            phase.arrivals,
            verified.len(),
            refused.len(),
            phase.other,
            pct(&verified, 0.5),
            pct(&verified, 0.99),
            verified.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            pct(&refused, 0.99),
            phase.deepest,
            after.queued - before.queued,
            after.refused_full - before.refused_full,
            after.refused_deadline - before.refused_deadline,
            after.refused_late - before.refused_late,
            turns.len(),
            phase.turn_errors,
            pct(&turns, 0.5),
            pct(&turns, 0.99),
            turns.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        );
        // Let the queue drain before the next phase.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// PINs arriving as a Poisson process at `rate` per second for `measure`, and ordinary
/// turns at [`ORDINARY_PER_SEC`], until every answer is in.
async fn burst(
    service: &Arc<IdentityService>,
    pool: &HashPool,
    ordinary: &Arc<Webhook>,
    rate: f64,
    measure: Duration,
    offset: usize,
) -> Phase {
    let done = Arc::new(AtomicBool::new(false));
    // The queue's depth, sampled.
    let sampler = {
        let (pool, done) = (pool.clone(), done.clone());
        tokio::spawn(async move {
            let mut deepest = 0;
            while !done.load(Ordering::Relaxed) {
                deepest = deepest.max(pool.stats().waiting);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            deepest
        })
    };
    // Ordinary turns, open loop.
    let turns = {
        let (ordinary, done) = (ordinary.clone(), done.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 / ORDINARY_PER_SEC));
            let mut sent = Vec::new();
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let (client, ordinary) = (client.clone(), ordinary.clone());
                sent.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    let (status, body) = send(&client, &ordinary).await;
                    (t0.elapsed(), status == 200 && body.contains(PIN_PROMPT))
                }));
            }
            let mut out = Vec::new();
            let mut errors = 0;
            for s in sent {
                let (took, ok) = s.await.unwrap();
                if ok {
                    out.push(took);
                } else {
                    errors += 1;
                }
            }
            (out, errors)
        })
    };
    // PIN arrivals.
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let start = tokio::time::Instant::now();
    let mut at = start;
    let mut pins = Vec::new();
    let mut i = offset;
    while at < start + measure {
        tokio::time::sleep_until(at).await;
        let (call, ctx) = verify_call(i);
        i += 1;
        let service = service.clone();
        pins.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let (result, _) = service.perform(call, ctx).await;
            (t0.elapsed(), result)
        }));
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        at += Duration::from_secs_f64(-u.ln() / rate);
    }
    let mut phase = Phase {
        arrivals: pins.len(),
        ..Phase::default()
    };
    for p in pins {
        match p.await.unwrap() {
            (took, Ok(out)) if out["verified"] == json!(true) => phase.verified.push(took),
            (took, Err(f)) if f.code == "busy" => phase.busy.push(took),
            _ => phase.other += 1,
        }
    }
    done.store(true, Ordering::Relaxed);
    let (turns, errors) = turns.await.unwrap();
    phase.turns = turns;
    phase.turn_errors = errors;
    phase.deepest = sampler.await.unwrap();
    phase
}
