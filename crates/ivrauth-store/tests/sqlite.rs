//! The conformance suite against `SqliteStore` on real files, plus SQLite-specific checks
//! (file layout and pragmas, two processes on one file, restart, append-only triggers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;

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
