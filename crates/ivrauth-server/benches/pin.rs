//! PIN verifications per second through the whole path — `identity.verify` as the runtime
//! performs it: the caller number's attempt and the account's failure counted first (two
//! durable writes), the account read, argon2id on the bounded hashing pool (in the pool's
//! reused working memory), then the counters reset, the attempt refunded and the audit
//! record appended in one durable commit — beside raw argon2id verifications per second
//! with the same parameters on every core, measured in the same run two ways: allocating
//! the memory per verification (`verify_secret`, what the argon2 crate does) and reusing
//! one working memory per thread (`verify_secret_in`, what the pool does).
//!
//! `cargo bench -p ivrauth-server --bench pin` (optionally `-- VERIFICATIONS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use ivrauth_connect::{SystemClock, TokioSleeper};
use ivrauth_core::engine::ActionCall;
use ivrauth_core::identity::{
    verify_secret, verify_secret_in, AccountNumber, HashMemory, HashParams, LockoutPolicy,
};
use ivrauth_core::ports::{AccountRecord, AccountStore as _, Store};
use ivrauth_core::time::Clock as _;
use ivrauth_core::Secret;
use ivrauth_server::app::identity::{CallContext, IdentityService};
use ivrauth_store::directory::hash_pin;
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400);
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let params = HashParams::default();
    let pin = Secret::new("246813".to_owned());
    let hash = hash_pin(&pin, params).unwrap();

    // Raw argon2id: one thread per core, the same hash, the same parameters; allocating
    // per verification, then reusing one working memory per thread.
    let raw_rate = |reuse: bool| {
        let start = Instant::now();
        let threads: Vec<_> = (0..cores)
            .map(|c| {
                let (pin, hash) = (pin.clone(), hash.clone());
                let share = n / cores + usize::from(c < n % cores);
                std::thread::spawn(move || {
                    let mut memory = HashMemory::new();
                    for _ in 0..share {
                        let ok = if reuse {
                            verify_secret_in(&pin, &hash, &mut memory)
                        } else {
                            verify_secret(&pin, &hash)
                        };
                        assert!(ok);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        n as f64 / start.elapsed().as_secs_f64()
    };
    let raw = raw_rate(false);
    let raw_reused = raw_rate(true);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let whole = rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let clock = Arc::new(SystemClock);
        // One account per concurrent task: in-flight attempts on one account count towards
        // its lockout, so concurrent verifications of a single account would lock it.
        let tasks_n = cores * 4;
        for t in 0..tasks_n {
            store
                .create_account(&AccountRecord {
                    account: AccountNumber::parse(&format!("{}", 10_001 + t)).unwrap(),
                    name: "Ada Lovelace".into(),
                    greeting: None,
                    phone: None,
                    email: None,
                    phone_verified: false,
                    email_verified: false,
                    disabled: false,
                    pin_hash: Some(hash.clone()),
                    pin_history: Vec::new(),
                    created_at: clock.now(),
                    updated_at: clock.now(),
                })
                .await
                .unwrap();
        }
        let dyn_store: Arc<dyn Store> = store.clone();
        let directory = BuiltinDirectory::new(
            dyn_store,
            params,
            // A closed loop: every task waits its turn (no padding here, so the margin is
            // the whole wait).
            HashPool::new(cores).with_margin(Duration::from_secs(60)),
            clock.clone(),
        )
        .unwrap();
        let service = Arc::new(IdentityService {
            provider: Arc::new(directory),
            store: store.clone(),
            policy: LockoutPolicy::default(),
            min_verify_duration: Duration::ZERO,
            clock: clock.clone(),
            sleeper: Arc::new(TokioSleeper),
            account_rules: Default::default(),
            account_key: ivrauth_core::identity::AccountKey::new(
                ivrauth_testkit::TEST_ACCOUNT_KEY.to_vec(),
            ),
            lookup_limiter: ivrauth_server::app::identity::lookup_limiter(
                ivrauth_server::app::identity::DEFAULT_LOOKUPS_PER_HOUR,
            ),
        });
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..tasks_n)
            .map(|t| {
                let (service, next, pin) = (service.clone(), next.clone(), pin.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        let call = ActionCall {
                            node_id: "verify".into(),
                            action: "identity.verify",
                            inputs: json!({"account": format!("{}", 10_001 + t)})
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                            secrets: vec![("secret", pin.clone())],
                        };
                        let ctx = CallContext {
                            call_id: "bench".into(),
                            ani: format!("+1555000{t:04}"),
                            failures: 0,
                        };
                        let (result, _) = service.perform(call, ctx).await;
                        assert_eq!(result.unwrap()["verified"], json!(true));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    });
    println!(
        "argon2id m={} KiB t={} p={}, {n} verifications, {cores} cores",
        params.m_kib, params.t, params.p
    );
    println!("raw argon2id, allocating per run:    {raw:>8.1} /s");
    println!("raw argon2id, memory reused:         {raw_reused:>8.1} /s");
    println!(
        "identity.verify, whole path:         {whole:>8.1} /s ({:.1}% of raw allocating, {:.1}% of raw reusing)",
        100.0 * whole / raw,
        100.0 * whole / raw_reused
    );
}
