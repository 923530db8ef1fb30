//! Persistent storage for ivrauth: the SQLite implementation of the port traits in
//! [`ivrauth_core::ports`] (`FlowStore`, `ClientStore`, `AuditStore`, `RunStore`,
//! `AccountStore`, `LockoutStore`), used by the server as `Arc<dyn Store>`; and the built-in
//! identity directory ([`BuiltinDirectory`]) over it, hashing on a bounded [`HashPool`].
//!
//! [`SqliteStore::open`] creates `<data_dir>/ivrauth.db` (WAL, `synchronous=FULL`, foreign
//! keys on) and applies the embedded, append-only migrations in `migrations/`. Audit appends,
//! lockout updates and PIN changes run in `BEGIN IMMEDIATE` transactions, so the hash chain
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
        tokio::fs::create_dir_all(data_dir).await.map_err(|e| {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(error::backend)?;
        migrate(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Close every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
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
