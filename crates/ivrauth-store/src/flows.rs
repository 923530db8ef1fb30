//! `FlowStore`: a `flows` row per flow, every version in `flow_versions`.

use async_trait::async_trait;
use ivrauth_core::ports::{FlowStore, StoreError, StoredFlow};
use ivrauth_core::time::UnixMillis;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::backend;
use crate::SqliteStore;

/// `created_at` / `created_by` describe the flow; `updated_at` is when the version was written.
const SELECT_FLOW: &str = "SELECT f.id, v.name, v.version, v.document, f.created_at, \
     v.created_at AS updated_at, f.created_by, f.deleted_at \
     FROM flows f JOIN flow_versions v ON v.flow_id = f.id";

fn flow_from_row(row: &SqliteRow) -> Result<StoredFlow, sqlx::Error> {
    Ok(StoredFlow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        document: row.try_get("document")?,
        created_at: UnixMillis(row.try_get("created_at")?),
        updated_at: UnixMillis(row.try_get("updated_at")?),
        created_by: row.try_get("created_by")?,
        deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
    })
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn create_flow(
        &self,
        id: &str,
        name: &str,
        document: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<StoredFlow, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        // A deleted flow keeps its row, so its id stays taken (Conflict).
        sqlx::query(
            "INSERT INTO flows (id, current_version, name, created_at, created_by) \
             VALUES (?1, 1, ?2, ?3, ?4)",
        )
        .bind(id)
        .bind(name)
        .bind(now.0)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO flow_versions (flow_id, version, name, document, created_at, created_by) \
             VALUES (?1, 1, ?2, ?3, ?4, ?5)",
        )
        .bind(id)
        .bind(name)
        .bind(document)
        .bind(now.0)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(StoredFlow {
            id: id.to_owned(),
            name: name.to_owned(),
            version: 1,
            document: document.to_owned(),
            created_at: now,
            updated_at: now,
            created_by: actor.to_owned(),
            deleted: false,
        })
    }

    async fn update_flow(
        &self,
        id: &str,
        name: &str,
        document: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<StoredFlow, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let row = sqlx::query(
            "SELECT current_version, created_at, created_by FROM flows \
             WHERE id = ?1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        let current: i64 = row.try_get("current_version").map_err(backend)?;
        let created_at: i64 = row.try_get("created_at").map_err(backend)?;
        let created_by: String = row.try_get("created_by").map_err(backend)?;
        let version = current + 1;
        sqlx::query(
            "INSERT INTO flow_versions (flow_id, version, name, document, created_at, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id)
        .bind(version)
        .bind(name)
        .bind(document)
        .bind(now.0)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("UPDATE flows SET current_version = ?2, name = ?3 WHERE id = ?1")
            .bind(id)
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(StoredFlow {
            id: id.to_owned(),
            name: name.to_owned(),
            version,
            document: document.to_owned(),
            created_at: UnixMillis(created_at),
            updated_at: now,
            created_by,
            deleted: false,
        })
    }

    async fn get_flow(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredFlow>, StoreError> {
        let sql = format!(
            "{SELECT_FLOW} AND v.version = COALESCE(?2, f.current_version) \
             WHERE f.id = ?1 AND f.deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(flow_from_row).transpose().map_err(backend)
    }

    async fn list_flows(&self) -> Result<Vec<StoredFlow>, StoreError> {
        let sql = format!(
            "{SELECT_FLOW} AND v.version = f.current_version \
             WHERE f.deleted_at IS NULL ORDER BY f.id"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(flow_from_row)
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    async fn delete_flow(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE flows SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL")
                .bind(id)
                .bind(now.0)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }
}
