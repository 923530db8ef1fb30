//! `AuditStore`: the hash-chained audit log. The chain itself is computed by
//! `ivrauth_core::audit`; this module gives each record its place, one writer at a time.

use async_trait::async_trait;
use ivrauth_core::audit::{AuditEvent, AuditRecord};
use ivrauth_core::ports::{AuditStore, StoreError};
use ivrauth_core::time::UnixMillis;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::backend;
use crate::SqliteStore;

const SELECT_AUDIT: &str = "SELECT seq, id, time, event, outcome, actor, subject, trace_id, \
     detail, prev_hash, hash FROM audit";

fn record_from_row(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let seq: i64 = row.try_get("seq").map_err(backend)?;
    let detail: String = row.try_get("detail").map_err(backend)?;
    let detail = serde_json::from_str(&detail).map_err(|e| {
        StoreError::Backend(format!("audit record {seq}: detail is not valid JSON: {e}"))
    })?;
    Ok(AuditRecord {
        seq,
        id: row.try_get("id").map_err(backend)?,
        time: UnixMillis(row.try_get("time").map_err(backend)?),
        event: row.try_get("event").map_err(backend)?,
        outcome: row.try_get("outcome").map_err(backend)?,
        actor: row.try_get("actor").map_err(backend)?,
        subject: row.try_get("subject").map_err(backend)?,
        trace_id: row.try_get("trace_id").map_err(backend)?,
        detail,
        prev_hash: row.try_get("prev_hash").map_err(backend)?,
        hash: row.try_get("hash").map_err(backend)?,
    })
}

/// The newest record, read inside the caller's write transaction.
pub(crate) async fn last_record(
    tx: &mut sqlx::SqliteConnection,
) -> Result<Option<AuditRecord>, StoreError> {
    let sql = format!("{SELECT_AUDIT} ORDER BY seq DESC LIMIT 1");
    sqlx::query(&sql)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .as_ref()
        .map(record_from_row)
        .transpose()
}

/// Append `event` after `last` inside the caller's write transaction (which must have been
/// started with `BEGIN IMMEDIATE`, so that `last` is still the newest record).
pub(crate) async fn insert_next(
    tx: &mut sqlx::SqliteConnection,
    last: Option<&AuditRecord>,
    event: &AuditEvent,
    now: UnixMillis,
) -> Result<AuditRecord, StoreError> {
    let detail = serde_json::to_string(&event.detail)
        .map_err(|e| StoreError::Backend(format!("cannot encode audit detail: {e}")))?;
    let record = AuditRecord::next(last, event, now);
    sqlx::query(
        "INSERT INTO audit (seq, id, time, event, outcome, actor, subject, trace_id, \
         detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .bind(record.seq)
    .bind(&record.id)
    .bind(record.time.0)
    .bind(&record.event)
    .bind(&record.outcome)
    .bind(&record.actor)
    .bind(&record.subject)
    .bind(&record.trace_id)
    .bind(detail)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    Ok(record)
}

#[async_trait]
impl AuditStore for SqliteStore {
    /// `BEGIN IMMEDIATE` takes the database's write lock before the last record is read, so
    /// no other connection or process can append in between; with `synchronous=FULL` the
    /// record is on disk when this returns. `Conflict` if the event id was already used.
    async fn append_audit(
        &self,
        event: &AuditEvent,
        now: UnixMillis,
    ) -> Result<AuditRecord, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let last = last_record(&mut tx).await?;
        let record = insert_next(&mut tx, last.as_ref(), event, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    async fn read_audit(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!("{SELECT_AUDIT} ORDER BY seq");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(record_from_row).collect()
    }
}
