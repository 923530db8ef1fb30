//! `ClientStore`: API clients and the (hashed) access tokens issued to them.

use async_trait::async_trait;
use ivrauth_core::ports::{ClientRecord, ClientStore, StoreError, TokenRecord};
use ivrauth_core::time::UnixMillis;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::{backend, join_scopes, split_scopes};
use crate::SqliteStore;

const SELECT_CLIENT: &str = "SELECT id, name, scopes, secret_hash, previous_secret_hash, \
     previous_valid_until, created_at, revoked_at FROM clients";

fn client_from_row(row: &SqliteRow) -> Result<ClientRecord, sqlx::Error> {
    Ok(ClientRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scopes: split_scopes(row.try_get("scopes")?),
        secret_hash: row.try_get("secret_hash")?,
        previous_secret_hash: row.try_get("previous_secret_hash")?,
        previous_valid_until: row
            .try_get::<Option<i64>, _>("previous_valid_until")?
            .map(UnixMillis),
        created_at: UnixMillis(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(UnixMillis),
    })
}

fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, sqlx::Error> {
    Ok(TokenRecord {
        token_hash: row.try_get("token_hash")?,
        client_id: row.try_get("client_id")?,
        scopes: split_scopes(row.try_get("scopes")?),
        issued_at: UnixMillis(row.try_get("issued_at")?),
        expires_at: UnixMillis(row.try_get("expires_at")?),
    })
}

#[async_trait]
impl ClientStore for SqliteStore {
    /// `Conflict` if the id is taken (revoked clients keep their id).
    async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let scopes = join_scopes(&client.scopes)?;
        sqlx::query(
            "INSERT INTO clients (id, name, scopes, secret_hash, previous_secret_hash, \
             previous_valid_until, created_at, revoked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(scopes)
        .bind(&client.secret_hash)
        .bind(&client.previous_secret_hash)
        .bind(client.previous_valid_until.map(|t| t.0))
        .bind(client.created_at.0)
        .bind(client.revoked_at.map(|t| t.0))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let sql = format!("{SELECT_CLIENT} WHERE id = ?1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(client_from_row)
            .transpose()
            .map_err(backend)
    }

    /// Every client, revoked ones included, by id.
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let sql = format!("{SELECT_CLIENT} ORDER BY id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(client_from_row)
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    async fn revoke_client(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let done =
            sqlx::query("UPDATE clients SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Ok(false); // dropping `tx` rolls back (nothing was written)
        }
        sqlx::query("DELETE FROM tokens WHERE client_id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    /// False if the client is absent or revoked.
    async fn rotate_client_secret(
        &self,
        id: &str,
        new_hash: &str,
        previous_valid_until: UnixMillis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE clients SET previous_secret_hash = secret_hash, \
             previous_valid_until = ?3, secret_hash = ?2 \
             WHERE id = ?1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(new_hash)
        .bind(previous_valid_until.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_client_scopes(&self, id: &str, scopes: &[String]) -> Result<bool, StoreError> {
        let joined = join_scopes(scopes)?;
        let done =
            sqlx::query("UPDATE clients SET scopes = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(id)
                .bind(joined)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    /// `NotFound` if the client is absent or revoked: the check and the insert are one
    /// statement, so a token cannot slip in after a concurrent revocation deleted the others.
    /// `Conflict` if the hash is already stored.
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let scopes = join_scopes(&token.scopes)?;
        let done = sqlx::query(
            "INSERT INTO tokens (token_hash, client_id, scopes, issued_at, expires_at) \
             SELECT ?1, id, ?3, ?4, ?5 FROM clients WHERE id = ?2 AND revoked_at IS NULL",
        )
        .bind(&token.token_hash)
        .bind(&token.client_id)
        .bind(scopes)
        .bind(token.issued_at.0)
        .bind(token.expires_at.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// The token whatever its expiry; the caller compares `expires_at` with its clock.
    async fn get_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT token_hash, client_id, scopes, issued_at, expires_at FROM tokens \
             WHERE token_hash = ?1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref()
            .map(token_from_row)
            .transpose()
            .map_err(backend)
    }

    async fn purge_expired_tokens(&self, now: UnixMillis) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM tokens WHERE expires_at < ?1")
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
