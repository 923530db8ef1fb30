//! Persistent storage for ivrauth: the SQLite implementation of the port traits in
//! [`ivrauth_core::ports`] (`FlowStore`, `ClientStore`, `AuditStore`, `RunStore`,
//! `AccountStore`, `LockoutStore`), used by the server as `Arc<dyn Store>`; and the built-in
//! identity directory ([`BuiltinDirectory`]) over it, hashing on a bounded [`HashPool`].
//!
//! [`SqliteStore::open`] creates `<data_dir>/ivrauth.db` (WAL, `synchronous=FULL`, foreign
//! keys on; the directory 0700, the database and its `-wal` and `-shm` files 0600) and
//! applies the embedded, append-only migrations in `migrations/`. Audit appends, lockout
//! updates and PIN changes run in `BEGIN IMMEDIATE` transactions, so the hash chain
//! stays linear and no failure is lost even when two processes share the same database file.
//!
//! What this crate is not: it holds no domain rules (flow validation, scope checks, secret
//! verification, the lockout state machine and the audit hash all live in `ivrauth-core`),
//! it never reads a clock (every method takes `now`; the directory is handed a `Clock`), and
//! it never stores a secret: client secrets and access tokens arrive already hashed, PINs are
//! hashed with argon2id before they are written. It is not an HTTP layer and has no
//! PostgreSQL backend yet.

mod accounts;
mod audit;
mod calls;
mod clients;
pub mod directory;
mod error;
mod flows;
pub mod hashpool;
mod lockout;
mod runs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use directory::BuiltinDirectory;
pub use hashpool::HashPool;
pub use ivrauth_core::ports::StoreError;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "ivrauth.db";

/// Connections per process. SQLite allows one writer at a time anyway; readers use the rest.
const POOL_SIZE: u32 = 8;

/// How long a connection waits for another writer (this process or another) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at applying migrations; a second process migrating the same fresh file at the
/// same moment makes the loser fail once, after which it sees the migrations applied.
const MIGRATION_ATTEMPTS: u32 = 5;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where [`SqliteStore::open`] keeps its database for `data_dir`.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

/// The SQLite store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) `<data_dir>/ivrauth.db` and bring its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        create_private(data_dir).await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(database_path(data_dir))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Two processes opening a new database at once race to switch it to WAL mode; the
        // loser gets SQLITE_BUSY at once (busy_timeout does not apply to that lock upgrade),
        // so the first connection is retried like the migrations are.
        let mut attempt = 1;
        let pool = loop {
            match SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                // A local file connection does not go stale; pinging it before every use
                // only costs two more hand-offs to its worker thread per query.
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("5") && attempt < MIGRATION_ATTEMPTS =>
                {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(error::backend(e)),
            }
        };
        migrate(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Copy everything in the write-ahead log into the database file, then close every
    /// connection (waiting for those in use). Without the checkpoint, a short-lived process
    /// (a CLI command) can leave its writes only in `ivrauth.db-wal`, and a copy of
    /// `ivrauth.db` alone would miss them. A failed checkpoint is logged, not fatal: the WAL
    /// is still replayed by the next open.
    pub async fn close(&self) {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint at close failed");
        }
        self.pool.close().await;
    }
}

/// Create `data_dir` (and missing parents) readable by this user only, and an empty
/// `ivrauth.db` likewise unless it exists: SQLite takes an empty file for a new database and
/// gives its `-wal` and `-shm` files the database file's mode, so all three are 0600
/// whatever the process's umask. An existing directory or database keeps its mode.
async fn create_private(data_dir: &Path) -> std::io::Result<()> {
    let mut dir = tokio::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    dir.mode(0o700);
    dir.create(data_dir).await?;
    let mut file = tokio::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    file.mode(0o600);
    match file.open(database_path(data_dir)).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                if attempt < MIGRATION_ATTEMPTS =>
            {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "database migration failed: {e}"
                )))
            }
        }
    }
}
