//! `RunStore`: one `runs` row per run; the outcome is stored as JSON text.

use async_trait::async_trait;
use ivrauth_core::ports::{RunRecord, RunStore, StoreError};
use ivrauth_core::time::UnixMillis;
use serde_json::Value;

use crate::error::backend;
use crate::SqliteStore;

fn json_text(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Backend(format!("cannot encode run outcome: {e}")))
}

#[async_trait]
impl RunStore for SqliteStore {
    /// `Conflict` if a run with this id exists.
    async fn start_run(&self, run: &RunRecord) -> Result<(), StoreError> {
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
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
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
}
