//! The conformance suite against `SqliteStore` on real files, plus SQLite-specific checks
//! (file layout and pragmas, two processes on one file, restart, append-only triggers, the
//! stored size of a call session).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::conformance;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use ivrauth_core::audit::verify_chain;
use ivrauth_core::ports::{AuditStore, Store};
use ivrauth_store::{database_path, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::Row;
use tempfile::TempDir;

use conformance::Tamper;

async fn fresh() -> (TempDir, SqliteStore) {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (dir, store)
}

/// A raw connection to the store's file, bypassing the store (as an attacker would).
async fn raw(data_dir: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(database_path(data_dir));
    SqlitePool::connect_with(options).await.unwrap()
}

struct RawSqlite(SqlitePool);

impl RawSqlite {
    /// An attacker with write access to the file drops the append-only triggers first.
    async fn new(data_dir: &Path) -> Self {
        let pool = raw(data_dir).await;
        for trigger in ["audit_no_update", "audit_no_delete"] {
            sqlx::query(&format!("DROP TRIGGER {trigger}"))
                .execute(&pool)
                .await
                .unwrap();
        }
        RawSqlite(pool)
    }
}

#[async_trait]
impl Tamper for RawSqlite {
    async fn set_audit_detail(&self, seq: i64, detail_json: &str) {
        let done = sqlx::query("UPDATE audit SET detail = ?1 WHERE seq = ?2")
            .bind(detail_json)
            .bind(seq)
            .execute(&self.0)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }

    async fn delete_audit(&self, seq: i64) {
        let done = sqlx::query("DELETE FROM audit WHERE seq = ?1")
            .bind(seq)
            .execute(&self.0)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
}

#[tokio::test]
async fn flows_lifecycle() {
    let (_dir, store) = fresh().await;
    conformance::flows_lifecycle(&store).await;
}

#[tokio::test]
async fn clients_lifecycle() {
    let (_dir, store) = fresh().await;
    conformance::clients_lifecycle(&store).await;
}

#[tokio::test]
async fn tokens_lifecycle() {
    let (_dir, store) = fresh().await;
    conformance::tokens_lifecycle(&store).await;
}

#[tokio::test]
async fn runs_lifecycle() {
    let (dir, store) = fresh().await;
    conformance::runs_lifecycle(&store).await;
    let row = sqlx::query("SELECT finished_at, outcome FROM runs WHERE id = 'r1'")
        .fetch_one(&raw(dir.path()).await)
        .await
        .unwrap();
    assert!(row.get::<Option<i64>, _>("finished_at").is_some());
    let outcome: String = row.get("outcome");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&outcome).unwrap(),
        serde_json::json!({"endNode": "done", "statusCode": 200})
    );
}

#[tokio::test]
async fn record_run_is_one_commit() {
    let (_dir, store) = fresh().await;
    conformance::record_run_is_one_commit(&store).await;
}

#[tokio::test]
async fn audit_chain() {
    let (_dir, store) = fresh().await;
    conformance::audit_chain(&store).await;
}

#[tokio::test]
async fn audit_detects_edit() {
    let (dir, store) = fresh().await;
    conformance::audit_detects_edit(&store, &RawSqlite::new(dir.path()).await).await;
}

#[tokio::test]
async fn audit_detects_delete() {
    let (dir, store) = fresh().await;
    conformance::audit_detects_delete(&store, &RawSqlite::new(dir.path()).await).await;
}

#[tokio::test]
async fn audit_table_is_append_only() {
    let (dir, store) = fresh().await;
    store
        .append_audit(&conformance::event("ev-1", 1), ivrauth_core::UnixMillis(1))
        .await
        .unwrap();
    let pool = raw(dir.path()).await;
    for sql in ["UPDATE audit SET detail = '{}'", "DELETE FROM audit"] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(verify_chain(&store.read_audit().await.unwrap()), Ok(1));
}

/// Two independent `open`s of one directory stand in for two server processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_two_processes_concurrent_appends() {
    let dir = TempDir::new().unwrap();
    let (a, b) = tokio::join!(SqliteStore::open(dir.path()), SqliteStore::open(dir.path()));
    let a: Arc<dyn Store> = Arc::new(a.unwrap());
    let b: Arc<dyn Store> = Arc::new(b.unwrap());
    conformance::audit_concurrent_appends(a, b, 25).await;
}

#[tokio::test]
async fn data_persists_across_restart() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::write_sample(&store).await;
    store.close().await;
    drop(store);
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    conformance::check_sample(&reopened).await;
    drop(reopened); // without close(): the next open must still see everything
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(verify_chain(&again.read_audit().await.unwrap()), Ok(3));
}

#[tokio::test]
async fn open_creates_directory_database_and_pragmas() {
    let dir = TempDir::new().unwrap();
    let data_dir = dir.path().join("nested").join("data");
    let store = SqliteStore::open(&data_dir).await.unwrap();
    assert_eq!(database_path(&data_dir), data_dir.join("ivrauth.db"));
    assert!(database_path(&data_dir).is_file());

    let pool = raw(&data_dir).await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "accounts",
            "ani_failures",
            "audit",
            "call_sessions",
            "clients",
            "flow_versions",
            "flows",
            "lockout_counters",
            "runs",
            "tokens"
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn accounts_lifecycle() {
    let (_dir, store) = fresh().await;
    conformance::accounts_lifecycle(&store).await;
}

#[tokio::test]
async fn lockout_threshold() {
    let (_dir, store) = fresh().await;
    conformance::lockout_threshold(&store).await;
}

#[tokio::test]
async fn ani_activity_and_purge() {
    let (_dir, store) = fresh().await;
    conformance::ani_activity_and_purge(&store).await;
}

/// Counters are on disk: a restarted server still sees the lock.
#[tokio::test]
async fn lockout_counters_survive_restart() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    conformance::write_lockout_sample(&store).await;
    drop(store); // without close(), as a crash would
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    conformance::check_lockout_sample(&reopened).await;
}

/// Twenty concurrent failures on one account, from two independently opened stores (two
/// processes), are twenty failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_two_processes_concurrent_failures() {
    let dir = TempDir::new().unwrap();
    let (a, b) = tokio::join!(SqliteStore::open(dir.path()), SqliteStore::open(dir.path()));
    let a: Arc<dyn Store> = Arc::new(a.unwrap());
    let b: Arc<dyn Store> = Arc::new(b.unwrap());
    conformance::lockout_concurrent_failures(a, b, 10).await;
}

/// Bulk import inserts new accounts in one commit and reports taken numbers.
#[tokio::test]
async fn import_accounts_skips_taken_numbers() {
    use ivrauth_core::ports::AccountStore as _;
    let (_dir, store) = fresh().await;
    store
        .create_account(&conformance::account("1002", "Existing"))
        .await
        .unwrap();
    let batch = [
        conformance::account("1001", "A"),
        conformance::account("1002", "B"),
        conformance::account("1003", "C"),
    ];
    assert_eq!(
        store.import_accounts(&batch).await.unwrap(),
        [true, false, true]
    );
    let kept = store.get_account("1002").await.unwrap().unwrap();
    assert_eq!(kept.name, "Existing");
    assert_eq!(store.list_accounts(None, 10).await.unwrap().len(), 3);
}

/// No PIN column holds anything but a PHC string, and the history is a JSON array.
#[tokio::test]
async fn pin_columns_hold_hashes_only() {
    use ivrauth_core::ports::AccountStore as _;
    let (dir, store) = fresh().await;
    let mut record = conformance::account("1001", "A");
    record.pin_hash = Some("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into());
    store.create_account(&record).await.unwrap();
    store
        .set_pin_hash(
            "1001",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaDI",
            ivrauth_core::UnixMillis(5),
        )
        .await
        .unwrap();
    let row = sqlx::query("SELECT pin_hash, pin_history FROM accounts")
        .fetch_one(&raw(dir.path()).await)
        .await
        .unwrap();
    let history: String = row.get("pin_history");
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&history).unwrap(),
        ["$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA"]
    );
}

#[tokio::test]
async fn calls_round_trip() {
    let (_dir, store) = fresh().await;
    conformance::calls_round_trip(&store).await;
}

#[tokio::test]
async fn calls_monotonic() {
    let (_dir, store) = fresh().await;
    conformance::calls_monotonic(&store).await;
}

#[tokio::test]
async fn calls_end_once() {
    let (_dir, store) = fresh().await;
    conformance::calls_end_once(&store).await;
    conformance::calls_claim_once(&store).await;
}

#[tokio::test]
async fn calls_take_expired() {
    let (_dir, store) = fresh().await;
    conformance::calls_take_expired(&store).await;
}

/// Racing saves, hang-ups and expiry sweeps from two independently opened stores (two
/// processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_two_processes_concurrent() {
    let dir = TempDir::new().unwrap();
    let (a, b) = tokio::join!(SqliteStore::open(dir.path()), SqliteStore::open(dir.path()));
    let a: Arc<dyn Store> = Arc::new(a.unwrap());
    let b: Arc<dyn Store> = Arc::new(b.unwrap());
    conformance::calls_concurrent(a, b, 20).await;
}

/// A session is on disk: a restarted server (after a crash) still finds it.
#[tokio::test]
async fn call_sessions_survive_restart() {
    use ivrauth_core::ports::CallStore as _;
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let record = conformance::call("twilio:CA9", 4, ivrauth_core::UnixMillis(10));
    store.save_call(&record).await.unwrap();
    drop(store); // without close(), as a crash would
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(
        reopened.load_call("twilio:CA9").await.unwrap(),
        Some(record)
    );
}

/// `DELETE ... RETURNING` needs SQLite 3.35; the library linked in must have it.
#[tokio::test]
async fn sqlite_supports_returning() {
    let (dir, _store) = fresh().await;
    let version: String = sqlx::query("SELECT sqlite_version()")
        .fetch_one(&raw(dir.path()).await)
        .await
        .unwrap()
        .get(0);
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(parts[..2] >= [3, 35][..], "SQLite {version}");
}

/// A typical idle call (a ~700-byte sealed state, a ~400-byte last answer) takes at most
/// 4 KiB of database file. Measured over 1000 sessions as the growth of the file's page
/// count (which includes the table's and both indexes' pages, and their free space), and
/// cross-checked with `dbstat` through [`SqliteStore::call_storage_bytes_per_row`].
#[tokio::test]
async fn call_session_storage_per_idle_call() {
    use ivrauth_core::ports::{CallRecord, CallStore as _};
    const CALLS: u32 = 1000;
    let (dir, store) = fresh().await;
    let pool = raw(dir.path()).await;
    let pages = |pool: SqlitePool| async move {
        let count: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        let size: i64 = sqlx::query("PRAGMA page_size")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        count * size
    };
    let before = pages(pool.clone()).await;

    // Sealed bytes look random; an LCG is close enough (SQLite does not compress anyway).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let last_answer = format!(
        r##"{{"answer":{{"verbs":[{{"say":{{"text":"Thank you. We could not verify that PIN. You have two attempts left.","voice":"en-GB-Neural2-B"}}}},{{"say":{{"text":"Please enter your four digit PIN, then press the hash key.","voice":"en-GB-Neural2-B"}}}},{{"gather":{{"input":["dtmf"],"numDigits":4,"finishOnKey":"#","timeout":10,"secure":true}}}}]}},"nextTurn":4,"callId":"CA{:032x}"}}"##,
        0x1234u32
    );
    assert!(
        (380..=420).contains(&last_answer.len()),
        "{}",
        last_answer.len()
    );
    let t0 = ivrauth_core::UnixMillis(1_700_000_000_000);
    for n in 0..CALLS {
        let state: Vec<u8> = (0..700)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (seed >> 56) as u8
            })
            .collect();
        store
            .save_call(&CallRecord {
                call_id: format!("twilio:CA{:032x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
                flow_id: "demo-pin".into(),
                flow_version: 3,
                turn: 4,
                state,
                last_answer: Some(last_answer.clone()),
                failures: 1,
                pending_secret_account: Some("1001".into()),
                ani: "+15550100123".into(),
                ended: false,
                created_at: t0,
                updated_at: t0.plus_secs(20),
                expires_at: t0.plus_secs(20 + 300),
            })
            .await
            .unwrap();
    }
    let after = pages(pool.clone()).await;
    let per_row = (after - before) as f64 / f64::from(CALLS);
    let payload: i64 = sqlx::query(
        "SELECT SUM(length(call_id) + length(flow_id) + 8 + 8 + length(state) \
         + ifnull(length(last_answer), 0) + 8 + ifnull(length(pending_secret_account), 0) \
         + 8 + 8 + 8) FROM call_sessions",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    let kinds: (String, String) = {
        let row =
            sqlx::query("SELECT typeof(state), typeof(last_answer) FROM call_sessions LIMIT 1")
                .fetch_one(&pool)
                .await
                .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(kinds, ("blob".to_owned(), "text".to_owned()));
    let dbstat = store.call_storage_bytes_per_row().await.unwrap();
    eprintln!(
        "call_sessions: {per_row:.0} bytes of file per idle call (page_count growth over \
         {CALLS}), {dbstat:.0} by dbstat (table + indexes), {:.0} bytes of column data",
        payload as f64 / f64::from(CALLS)
    );
    assert!(per_row <= 4096.0, "{per_row} bytes per idle call");
    assert!(dbstat <= 4096.0, "{dbstat} bytes per idle call");
    assert!(dbstat > 0.0);
}

/// Issue 8, item 8: thirty concurrent attempts from one caller number at distinct accounts,
/// from two processes, are judged no more often than the per-number limit allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ani_attempts_are_counted_first_across_processes() {
    let dir = TempDir::new().unwrap();
    let (a, b) = tokio::join!(SqliteStore::open(dir.path()), SqliteStore::open(dir.path()));
    let a: Arc<dyn Store> = Arc::new(a.unwrap());
    let b: Arc<dyn Store> = Arc::new(b.unwrap());
    conformance::ani_claims_counted_first(a, b, 30).await;
}

#[tokio::test]
async fn unknown_accounts_counters_are_purged() {
    let (_dir, store) = fresh().await;
    conformance::unknown_counters_purged(&store).await;
}

#[tokio::test]
async fn call_failures_never_decrease() {
    let (_dir, store) = fresh().await;
    conformance::calls_failures_never_decrease(&store).await;
}

#[tokio::test]
async fn a_verified_attempt_settles_in_one_commit() {
    let (_dir, store) = fresh().await;
    conformance::verified_attempt_settles_in_one_commit(&store).await;
}

#[tokio::test]
async fn an_unjudged_attempt_is_refunded() {
    let (_dir, store) = fresh().await;
    conformance::unjudged_attempt_is_refunded(&store).await;
}
