//! `AccountStore`: the built-in directory's accounts. PINs arrive as argon2id PHC strings;
//! the previous ones are kept newest first (at most [`PIN_HISTORY`]) as a JSON text array.

use async_trait::async_trait;
use ivrauth_core::identity::AccountNumber;
use ivrauth_core::ports::{AccountRecord, AccountStore, StoreError, PIN_HISTORY};
use ivrauth_core::time::UnixMillis;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::backend;
use crate::SqliteStore;

const SELECT_ACCOUNT: &str = "SELECT account, name, greeting, phone, email, phone_verified, \
     email_verified, disabled, pin_hash, pin_history, created_at, updated_at FROM accounts";

const INSERT_ACCOUNT: &str = "INSERT INTO accounts (account, name, greeting, phone, email, \
     phone_verified, email_verified, disabled, pin_hash, pin_history, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

fn encode_history(history: &[String]) -> Result<String, StoreError> {
    let kept = &history[..history.len().min(PIN_HISTORY)];
    serde_json::to_string(kept)
        .map_err(|e| StoreError::Backend(format!("cannot encode the PIN history: {e}")))
}

fn decode_history(account: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Backend(format!(
            "account {account}: pin_history is not a JSON array of strings: {e}"
        ))
    })
}

fn account_from_row(row: &SqliteRow) -> Result<AccountRecord, StoreError> {
    let number: String = row.try_get("account").map_err(backend)?;
    let account = AccountNumber::parse(&number).map_err(|_| {
        StoreError::Backend(format!("stored account number {number:?} is not valid"))
    })?;
    let history: String = row.try_get("pin_history").map_err(backend)?;
    Ok(AccountRecord {
        pin_history: decode_history(&number, &history)?,
        account,
        name: row.try_get("name").map_err(backend)?,
        greeting: row.try_get("greeting").map_err(backend)?,
        phone: row.try_get("phone").map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        phone_verified: row.try_get("phone_verified").map_err(backend)?,
        email_verified: row.try_get("email_verified").map_err(backend)?,
        disabled: row.try_get("disabled").map_err(backend)?,
        pin_hash: row.try_get("pin_hash").map_err(backend)?,
        created_at: UnixMillis(row.try_get("created_at").map_err(backend)?),
        updated_at: UnixMillis(row.try_get("updated_at").map_err(backend)?),
    })
}

/// Insert one account on `conn` (a pool or a transaction's connection).
async fn insert_account<'c, E>(conn: E, account: &AccountRecord) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let history = encode_history(&account.pin_history)?;
    sqlx::query(INSERT_ACCOUNT)
        .bind(account.account.as_str())
        .bind(&account.name)
        .bind(&account.greeting)
        .bind(&account.phone)
        .bind(&account.email)
        .bind(account.phone_verified)
        .bind(account.email_verified)
        .bind(account.disabled)
        .bind(&account.pin_hash)
        .bind(history)
        .bind(account.created_at.0)
        .bind(account.updated_at.0)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

impl SqliteStore {
    /// Bulk import: insert every account that does not exist yet, all in one `BEGIN
    /// IMMEDIATE` transaction (one disk flush for the batch). Returns, per account, whether
    /// it was inserted (`false`: the number was already taken, the existing row is kept).
    pub async fn import_accounts(
        &self,
        accounts: &[AccountRecord],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let mut inserted = Vec::with_capacity(accounts.len());
        for account in accounts {
            match insert_account(&mut *tx, account).await {
                Ok(()) => inserted.push(true),
                Err(StoreError::Conflict) => inserted.push(false),
                Err(e) => return Err(e), // dropping `tx` rolls the batch back
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(inserted)
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    /// The history is stored trimmed to [`PIN_HISTORY`]. `Conflict` if the number is taken.
    async fn create_account(&self, account: &AccountRecord) -> Result<(), StoreError> {
        insert_account(&self.pool, account).await
    }

    async fn get_account(&self, account: &str) -> Result<Option<AccountRecord>, StoreError> {
        let sql = format!("{SELECT_ACCOUNT} WHERE account = ?1");
        let row = sqlx::query(&sql)
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let sql =
            format!("{SELECT_ACCOUNT} WHERE ?1 IS NULL OR account > ?1 ORDER BY account LIMIT ?2");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(account_from_row).collect()
    }

    /// Read, shift the history and write in one `BEGIN IMMEDIATE` transaction, so that two
    /// concurrent changes each push their predecessor.
    async fn set_pin_hash(
        &self,
        account: &str,
        hash: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let row = sqlx::query("SELECT pin_hash, pin_history FROM accounts WHERE account = ?1")
            .bind(account)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        let old: Option<String> = row.try_get("pin_hash").map_err(backend)?;
        let history: String = row.try_get("pin_history").map_err(backend)?;
        let mut history = decode_history(account, &history)?;
        if let Some(old) = old {
            history.insert(0, old);
        }
        history.truncate(PIN_HISTORY);
        sqlx::query(
            "UPDATE accounts SET pin_hash = ?2, pin_history = ?3, updated_at = ?4 \
             WHERE account = ?1",
        )
        .bind(account)
        .bind(hash)
        .bind(encode_history(&history)?)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn rehash_pin(
        &self,
        account: &str,
        hash: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE accounts SET pin_hash = ?2, updated_at = ?3 WHERE account = ?1")
                .bind(account)
                .bind(hash)
                .bind(now.0)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn set_disabled(
        &self,
        account: &str,
        disabled: bool,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE accounts SET disabled = ?2, updated_at = ?3 WHERE account = ?1")
                .bind(account)
                .bind(disabled)
                .bind(now.0)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }
}
