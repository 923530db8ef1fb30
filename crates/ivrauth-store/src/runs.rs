//! `RunStore`: one `runs` row per run; the outcome is stored as JSON text.

use async_trait::async_trait;
use ivrauth_core::audit::{AuditEvent, AuditRecord};
use ivrauth_core::ports::{RunRecord, RunStore, StoreError};
use ivrauth_core::time::UnixMillis;
use serde_json::Value;

use crate::audit::{insert_next, last_record};
use crate::error::backend;
use crate::SqliteStore;

fn json_text(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Backend(format!("cannot encode run outcome: {e}")))
}

/// Insert a run row; `Conflict` if a run with this id exists.
async fn insert_run(conn: &mut sqlx::SqliteConnection, run: &RunRecord) -> Result<(), StoreError> {
    let outcome = run.outcome.as_ref().map(json_text).transpose()?;
    sqlx::query(
        "INSERT INTO runs (id, flow_id, flow_version, kind, started_at, finished_at, outcome) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(&run.id)
    .bind(&run.flow_id)
    .bind(run.flow_version)
    .bind(&run.kind)
    .bind(run.started_at.0)
    .bind(run.finished_at.map(|t| t.0))
    .bind(outcome)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl RunStore for SqliteStore {
    /// `Conflict` if a run with this id exists.
    async fn start_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        insert_run(&mut conn, run).await
    }

    /// `NotFound` if there is no such run, `Conflict` if it already finished.
    async fn finish_run(
        &self,
        id: &str,
        outcome: &Value,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let outcome = json_text(outcome)?;
        let done = sqlx::query(
            "UPDATE runs SET finished_at = ?2, outcome = ?3 WHERE id = ?1 AND finished_at IS NULL",
        )
        .bind(id)
        .bind(now.0)
        .bind(outcome)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM runs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .is_some();
        Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        })
    }

    /// One `BEGIN IMMEDIATE` transaction: the run row, then each event after the newest
    /// audit record; nothing is written if any part fails.
    async fn record_run(
        &self,
        run: &RunRecord,
        events: &[AuditEvent],
        now: UnixMillis,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        insert_run(&mut tx, run).await?;
        let mut last = last_record(&mut tx).await?;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let record = insert_next(&mut tx, last.as_ref(), event, now).await?;
            last = Some(record.clone());
            out.push(record);
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }
}
