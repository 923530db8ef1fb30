//! `BuiltinDirectory` and `HashPool` against a real SQLite store: verification outcomes,
//! re-hashing on a parameter change, the PIN history rule, and `Busy` under saturation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ivrauth_core::identity::{
    verify_secret, AccountNumber, AccountStatus, HashParams, IdentityError, IdentityProvider,
    RejectReason, Verification,
};
use ivrauth_core::ports::{AccountRecord, Store};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::{Clock, UnixMillis};
use ivrauth_store::directory::{check_pin_format, hash_pin};
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};
use tempfile::TempDir;

const T0: UnixMillis = UnixMillis(1_700_000_000_000);

const CHEAP: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

struct FixedClock(UnixMillis);

impl Clock for FixedClock {
    fn now(&self) -> UnixMillis {
        self.0
    }
}

fn pin(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

fn number(s: &str) -> AccountNumber {
    AccountNumber::parse(s).unwrap()
}

async fn fresh() -> (TempDir, Arc<dyn Store>) {
    let dir = TempDir::new().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    (dir, store)
}

fn directory(store: &Arc<dyn Store>, params: HashParams) -> BuiltinDirectory {
    BuiltinDirectory::new(
        store.clone(),
        params,
        HashPool::new(2),
        Arc::new(FixedClock(T0.plus_secs(60))),
    )
    .unwrap()
}

async fn add(store: &Arc<dyn Store>, account: &str, name: &str, pin_text: Option<&str>) {
    let record = AccountRecord {
        account: number(account),
        name: name.to_owned(),
        greeting: None,
        phone: None,
        email: None,
        phone_verified: false,
        email_verified: false,
        disabled: false,
        pin_hash: pin_text.map(|p| hash_pin(&pin(p), CHEAP).unwrap()),
        pin_history: vec![],
        created_at: T0,
        updated_at: T0,
    };
    store.create_account(&record).await.unwrap();
}

#[tokio::test]
async fn verify_outcomes() {
    let (_dir, store) = fresh().await;
    add(&store, "1001", "Ada Lovelace", Some("4321")).await;
    add(&store, "1002", "Grace Hopper", Some("5555")).await;
    add(&store, "1003", "No Pin", None).await;
    store.set_disabled("1002", true, T0).await.unwrap();
    let dir = directory(&store, CHEAP);
    assert_eq!(dir.kind(), "builtin");

    let check = |account: &'static str, secret: &'static str| {
        let dir = &dir;
        async move { dir.verify(&number(account), &pin(secret)).await.unwrap() }
    };
    assert_eq!(check("1001", "4321").await, Verification::Verified);
    assert_eq!(
        check("1001", "4322").await,
        Verification::Rejected(RejectReason::WrongSecret)
    );
    assert_eq!(
        check("9999", "4321").await,
        Verification::Rejected(RejectReason::UnknownAccount)
    );
    // Disabled: refused even with the right PIN.
    assert_eq!(
        check("1002", "5555").await,
        Verification::Rejected(RejectReason::Disabled)
    );
    assert_eq!(
        check("1002", "0000").await,
        Verification::Rejected(RejectReason::Disabled)
    );
    assert_eq!(
        check("1003", "1234").await,
        Verification::Rejected(RejectReason::WrongSecret)
    );
    assert_eq!(
        check("1001", "").await,
        Verification::Rejected(RejectReason::EmptySecret)
    );
    // The empty secret is refused before any lookup or hashing: even a saturated pool
    // answers it.
    let saturated = BuiltinDirectory::new(
        store.clone(),
        CHEAP,
        HashPool::new(1).with_margin(Duration::ZERO),
        Arc::new(FixedClock(T0)),
    )
    .unwrap();
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let pool = saturated.pool().clone();
    let blocker = tokio::spawn(async move { pool.run(move || release.recv()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        saturated.verify(&number("1001"), &pin("")).await.unwrap(),
        Verification::Rejected(RejectReason::EmptySecret)
    );
    hold.send(()).unwrap();
    blocker.await.unwrap().unwrap().unwrap();

    assert_eq!(dir.health().await, Ok(()));
}

#[tokio::test]
async fn lookup_builds_the_profile() {
    let (_dir, store) = fresh().await;
    add(&store, "1001", "Ada Lovelace", Some("4321")).await;
    add(&store, "1002", "Grace Hopper", None).await;
    store.set_disabled("1002", true, T0).await.unwrap();
    let dir = directory(&store, CHEAP);

    let ada = dir.lookup(&number("1001")).await.unwrap().unwrap();
    assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(ada.greeting.as_deref(), Some("Ada"));
    assert_eq!(ada.status, AccountStatus::Active);
    let grace = dir.lookup(&number("1002")).await.unwrap().unwrap();
    assert_eq!(grace.status, AccountStatus::Disabled);
    assert_eq!(dir.lookup(&number("9999")).await.unwrap(), None);
}

#[tokio::test]
async fn verify_rehashes_when_the_parameters_change() {
    let (_dir, store) = fresh().await;
    add(&store, "1001", "Ada", Some("4321")).await;
    let before = store.get_account("1001").await.unwrap().unwrap();
    assert!(before
        .pin_hash
        .as_deref()
        .unwrap()
        .starts_with("$argon2id$v=19$m=64,t=1,p=1$"));

    // A failure changes nothing.
    let stronger = HashParams {
        m_kib: 128,
        ..CHEAP
    };
    let dir = directory(&store, stronger);
    assert_eq!(
        dir.verify(&number("1001"), &pin("0000")).await.unwrap(),
        Verification::Rejected(RejectReason::WrongSecret)
    );
    assert_eq!(store.get_account("1001").await.unwrap().unwrap(), before);

    assert_eq!(
        dir.verify(&number("1001"), &pin("4321")).await.unwrap(),
        Verification::Verified
    );
    let after = store.get_account("1001").await.unwrap().unwrap();
    let hash = after.pin_hash.unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=128,t=1,p=1$"), "{hash}");
    assert!(verify_secret(&pin("4321"), &hash));
    assert!(
        after.pin_history.is_empty(),
        "a re-hash is not a PIN change"
    );
    assert_eq!(after.updated_at, T0.plus_secs(60));
    // And the new hash still verifies, without another re-hash.
    assert_eq!(
        dir.verify(&number("1001"), &pin("4321")).await.unwrap(),
        Verification::Verified
    );
    assert_eq!(
        store.get_account("1001").await.unwrap().unwrap().pin_hash,
        Some(hash)
    );
}

#[tokio::test]
async fn change_secret_enforces_format_and_history() {
    let (_dir, store) = fresh().await;
    add(&store, "1001", "Ada", Some("1000")).await;
    let dir = directory(&store, CHEAP);
    let ada = number("1001");

    for bad in ["123", "1234567890123", "12a4", " 1234", ""] {
        let err = dir.change_secret(&ada, &pin(bad)).await.unwrap_err();
        assert!(matches!(err, IdentityError::InvalidSecret(_)), "{bad:?}");
        if !bad.trim().is_empty() {
            assert!(!err.to_string().contains(bad.trim()), "{err}");
        }
    }
    // The current PIN is refused.
    let err = dir.change_secret(&ada, &pin("1000")).await.unwrap_err();
    assert!(matches!(err, IdentityError::InvalidSecret(_)));
    assert!(!err.to_string().contains("1000"), "{err}");

    for p in ["2000", "3000", "4000", "5000", "6000", "7000"] {
        dir.change_secret(&ada, &pin(p)).await.unwrap();
    }
    assert_eq!(
        dir.verify(&ada, &pin("7000")).await.unwrap(),
        Verification::Verified
    );
    // Current 7000, history 6000..2000: all refused; 1000 has left the history.
    for p in ["7000", "6000", "4000", "2000"] {
        let err = dir.change_secret(&ada, &pin(p)).await.unwrap_err();
        assert!(matches!(err, IdentityError::InvalidSecret(_)), "{p}");
        assert!(!err.to_string().contains(p), "{err}");
    }
    dir.change_secret(&ada, &pin("1000")).await.unwrap();
    assert_eq!(
        dir.verify(&ada, &pin("1000")).await.unwrap(),
        Verification::Verified
    );
    assert_eq!(
        dir.verify(&ada, &pin("7000")).await.unwrap(),
        Verification::Rejected(RejectReason::WrongSecret)
    );

    // No account: an error, not a new row.
    assert!(matches!(
        dir.change_secret(&number("9999"), &pin("2468")).await,
        Err(IdentityError::Unavailable(_))
    ));
    assert_eq!(store.get_account("9999").await.unwrap(), None);
}

#[tokio::test]
async fn default_parameters_round_trip() {
    let (_dir, store) = fresh().await;
    add(&store, "1001", "Ada", Some("4321")).await;
    let dir = directory(&store, HashParams::default());
    dir.change_secret(&number("1001"), &pin("97531"))
        .await
        .unwrap();
    let hash = store
        .get_account("1001")
        .await
        .unwrap()
        .unwrap()
        .pin_hash
        .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains("97531"));
    assert_eq!(
        dir.verify(&number("1001"), &pin("97531")).await.unwrap(),
        Verification::Verified
    );
    assert_eq!(
        dir.verify(&number("1001"), &pin("97530")).await.unwrap(),
        Verification::Rejected(RejectReason::WrongSecret)
    );
}

#[test]
fn pin_format() {
    for ok in ["1234", "000000000000", "97531"] {
        assert_eq!(check_pin_format(ok), Ok(()), "{ok}");
    }
    for bad in ["", "123", "1234567890123", "12 34", "١٢٣٤", "abcd"] {
        assert!(check_pin_format(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_pool_saturation_is_busy_quickly() {
    let pool = HashPool::new(1);
    assert_eq!(pool.size(), 1);
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(move || {
                started_tx.send(()).unwrap();
                release.recv().unwrap();
                "held"
            })
            .await
        })
    };
    started.await.unwrap();

    let begun = Instant::now();
    assert_eq!(pool.run(|| "second").await, Err(IdentityError::Busy));
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "{:?}",
        begun.elapsed()
    );
    let zero_wait = pool.clone().with_margin(Duration::ZERO);
    assert_eq!(zero_wait.run(|| "third").await, Err(IdentityError::Busy));

    hold.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Ok("held"));
    assert_eq!(pool.run(|| "after").await, Ok("after"));
}

/// A directory whose pool is saturated answers `Busy` rather than waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_is_busy_when_the_pool_is_saturated() {
    let (_dir, store) = fresh().await;
    add(&store, "1001", "Ada", Some("4321")).await;
    let dir = BuiltinDirectory::new(
        store.clone(),
        CHEAP,
        HashPool::new(1),
        Arc::new(FixedClock(T0)),
    )
    .unwrap();
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let pool = dir.pool().clone();
    let holder = tokio::spawn(async move {
        pool.run(move || {
            started_tx.send(()).unwrap();
            release.recv().unwrap();
        })
        .await
    });
    started.await.unwrap();
    assert_eq!(
        dir.verify(&number("1001"), &pin("4321")).await,
        Err(IdentityError::Busy)
    );
    // An unknown account spends a (dummy) verification too, so it needs the pool alike.
    assert_eq!(
        dir.verify(&number("9999"), &pin("4321")).await,
        Err(IdentityError::Busy)
    );
    hold.send(()).unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(
        dir.verify(&number("1001"), &pin("4321")).await,
        Ok(Verification::Verified)
    );
}

#[test]
fn invalid_parameters_fail_at_construction() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, store) = rt.block_on(fresh());
    let err = BuiltinDirectory::new(
        store,
        HashParams {
            m_kib: 1,
            t: 0,
            p: 0,
        },
        HashPool::new(1),
        Arc::new(FixedClock(T0)),
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::Unavailable(_)), "{err}");
}
