//! `CallStore`: one `call_sessions` row per call in progress.
//!
//! Every method is a single SQL statement, so each is atomic across processes sharing the
//! file without an explicit transaction: `save_call` is an upsert whose update applies only
//! when the turn does not go backwards (no row changed means a higher turn is stored, which
//! is `Conflict`); `end_call` and `take_expired_calls` are `DELETE … RETURNING` (SQLite 3.35
//! or later; the bundled library is 3.46), so each row is handed to exactly one caller.
//! `RETURNING` statements are always run to completion (`fetch_all`), so the implicit
//! transaction commits before the rows are returned.

use async_trait::async_trait;
use ivrauth_core::ports::{CallRecord, CallStore, StoreError};
use ivrauth_core::time::UnixMillis;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::backend;
use crate::SqliteStore;

/// Every column, in [`decode`]'s order.
const COLUMNS: &str = "call_id, flow_id, flow_version, turn, state, last_answer, failures, \
                       pending_secret_account, ani, created_at, updated_at, expires_at, ended";

/// The B-trees that hold call sessions: the table, its primary-key index, the expiry index.
const CALL_BTREES: &str =
    "'call_sessions', 'sqlite_autoindex_call_sessions_1', 'call_sessions_expires_at'";

fn to_u32(what: &str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Backend(format!("stored {what} {n} is out of range")))
}

fn decode(row: &SqliteRow) -> Result<CallRecord, StoreError> {
    Ok(CallRecord {
        call_id: row.try_get("call_id").map_err(backend)?,
        flow_id: row.try_get("flow_id").map_err(backend)?,
        flow_version: row.try_get("flow_version").map_err(backend)?,
        turn: to_u32("turn", row.try_get("turn").map_err(backend)?)?,
        state: row.try_get("state").map_err(backend)?,
        last_answer: row.try_get("last_answer").map_err(backend)?,
        failures: to_u32("failures", row.try_get("failures").map_err(backend)?)?,
        pending_secret_account: row.try_get("pending_secret_account").map_err(backend)?,
        ani: row.try_get("ani").map_err(backend)?,
        created_at: UnixMillis(row.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(row.try_get("updated_at").map_err(backend)?),
        expires_at: UnixMillis(row.try_get("expires_at").map_err(backend)?),
        ended: row.try_get::<i64, _>("ended").map_err(backend)? != 0,
    })
}

fn decode_all(rows: &[SqliteRow]) -> Result<Vec<CallRecord>, StoreError> {
    rows.iter().map(decode).collect()
}

#[async_trait]
impl CallStore for SqliteStore {
    async fn load_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM call_sessions WHERE call_id = ?1"
        ))
        .bind(call_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(decode).transpose()
    }

    /// One upsert: the update's `WHERE` refuses a lower turn, and then no row changes.
    async fn save_call(&self, record: &CallRecord) -> Result<(), StoreError> {
        self.upsert_call(record, ">=").await
    }

    async fn claim_call(&self, record: &CallRecord) -> Result<(), StoreError> {
        self.upsert_call(record, ">").await
    }

    async fn end_call(
        &self,
        call_id: &str,
        now: UnixMillis,
    ) -> Result<Option<CallRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE call_sessions SET ended = 1, updated_at = ?2 \
             WHERE call_id = ?1 AND ended = 0 RETURNING {COLUMNS}"
        ))
        .bind(call_id)
        .bind(now.0)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(decode_all(&rows)?.into_iter().next())
    }

    /// The sessions that expired first go first; the result is ordered by expiry, then id.
    async fn take_expired_calls(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<CallRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "DELETE FROM call_sessions WHERE call_id IN \
             (SELECT call_id FROM call_sessions WHERE expires_at <= ?1 \
              ORDER BY expires_at LIMIT ?2) \
             RETURNING {COLUMNS}"
        ))
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut calls = decode_all(&rows)?;
        calls.sort_by(|a, b| (a.expires_at, &a.call_id).cmp(&(b.expires_at, &b.call_id)));
        Ok(calls)
    }
}

impl SqliteStore {
    /// Insert, or update where the new turn compares to the stored one as `cmp` says (`>=`:
    /// same turn or later; `>`: strictly later) and the call has not ended.
    async fn upsert_call(&self, record: &CallRecord, cmp: &str) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO call_sessions ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0) \
             ON CONFLICT (call_id) DO UPDATE SET flow_id = excluded.flow_id, \
             flow_version = excluded.flow_version, turn = excluded.turn, \
             state = excluded.state, last_answer = excluded.last_answer, \
             failures = MAX(call_sessions.failures, excluded.failures), \
             pending_secret_account = excluded.pending_secret_account, ani = excluded.ani, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, \
             expires_at = excluded.expires_at \
             WHERE excluded.turn {cmp} call_sessions.turn AND call_sessions.ended = 0"
        ))
        .bind(&record.call_id)
        .bind(&record.flow_id)
        .bind(record.flow_version)
        .bind(i64::from(record.turn))
        .bind(record.state.as_slice())
        .bind(record.last_answer.as_deref())
        .bind(i64::from(record.failures))
        .bind(record.pending_secret_account.as_deref())
        .bind(&record.ani)
        .bind(record.created_at.0)
        .bind(record.updated_at.0)
        .bind(record.expires_at.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }
}

impl SqliteStore {
    /// Bytes of database pages holding call sessions (the table and both its indexes, whole
    /// pages including their free space) per stored session; 0 when there are none. Reads
    /// every page of those B-trees (SQLite's `dbstat`), so it is for benchmarks and
    /// diagnostics, not for a request path.
    pub async fn call_storage_bytes_per_row(&self) -> Result<f64, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT (SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN ({CALL_BTREES})) \
             AS bytes, (SELECT COUNT(*) FROM call_sessions) AS calls"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let bytes: i64 = row.try_get("bytes").map_err(backend)?;
        let calls: i64 = row.try_get("calls").map_err(backend)?;
        if calls == 0 {
            return Ok(0.0);
        }
        // Page counts and row counts stay far below 2^53, so the conversions are exact.
        Ok(bytes as f64 / calls as f64)
    }
}
