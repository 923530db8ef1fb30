//! `LockoutStore`: per-account failure counters and per-caller-number failures.
//!
//! The state machine is `ivrauth_core::identity::AccountCounters`; this module only makes
//! each update atomic: `record_failure` reads, applies and writes in one `BEGIN IMMEDIATE`
//! transaction, so concurrent failures (from any number of processes sharing the file) are
//! all counted. No row means default counters. The end of a verification is one commit
//! too: `settle_verified` (counters reset, caller-number claim refunded, audit record
//! appended) or `refund_unjudged` (an attempt the directory was too busy to judge).

use async_trait::async_trait;
use ivrauth_core::audit::{AuditEvent, AuditRecord};
use ivrauth_core::identity::{
    refuse_before_verify, AccountCounters, AniActivity, AniAttempt, AniClaim, FailureEffect,
    LockoutPolicy,
};
use ivrauth_core::ports::{LockoutStore, StoreError};
use ivrauth_core::time::UnixMillis;
use sqlx::Row;

use crate::audit::{insert_next, last_record};
use crate::error::backend;
use crate::SqliteStore;

fn to_u32(what: &str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Backend(format!("stored {what} {n} is out of range")))
}

async fn read_counters(
    conn: &mut sqlx::SqliteConnection,
    account: &str,
) -> Result<AccountCounters, StoreError> {
    let row = sqlx::query(
        "SELECT failed_attempts, locks, locked_until, locked_permanently \
         FROM lockout_counters WHERE account = ?1",
    )
    .bind(account)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    let Some(row) = row else {
        return Ok(AccountCounters::default());
    };
    Ok(AccountCounters {
        failed_attempts: to_u32(
            "failed_attempts",
            row.try_get("failed_attempts").map_err(backend)?,
        )?,
        locks: to_u32("locks", row.try_get("locks").map_err(backend)?)?,
        locked_until: row
            .try_get::<Option<i64>, _>("locked_until")
            .map_err(backend)?
            .map(UnixMillis),
        locked_permanently: row.try_get("locked_permanently").map_err(backend)?,
    })
}

async fn write_counters(
    conn: &mut sqlx::SqliteConnection,
    account: &str,
    counters: &AccountCounters,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO lockout_counters \
         (account, failed_attempts, locks, locked_until, locked_permanently, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (account) DO UPDATE SET failed_attempts = excluded.failed_attempts, \
         locks = excluded.locks, locked_until = excluded.locked_until, \
         locked_permanently = excluded.locked_permanently, updated_at = excluded.updated_at",
    )
    .bind(account)
    .bind(i64::from(counters.failed_attempts))
    .bind(i64::from(counters.locks))
    .bind(counters.locked_until.map(|t| t.0))
    .bind(counters.locked_permanently)
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn delete_counters(
    conn: &mut sqlx::SqliteConnection,
    account: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM lockout_counters WHERE account = ?1")
        .bind(account)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

async fn delete_ani_claim(conn: &mut sqlx::SqliteConnection, claim: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ani_failures WHERE rowid = ?1")
        .bind(claim)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl LockoutStore for SqliteStore {
    async fn counters(&self, account: &str) -> Result<AccountCounters, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        read_counters(&mut conn, account).await
    }

    /// One `BEGIN IMMEDIATE` transaction: the write lock is taken before the counters are
    /// read, so no other connection or process can update them in between.
    async fn record_failure(
        &self,
        account: &str,
        policy: &LockoutPolicy,
        now: UnixMillis,
    ) -> Result<(AccountCounters, FailureEffect), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let mut counters = read_counters(&mut tx, account).await?;
        let effect = counters.on_failure(policy, now);
        write_counters(&mut tx, account, &counters, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok((counters, effect))
    }

    /// A success resets everything (see `AccountCounters::on_success`): the row goes.
    async fn record_success(&self, account: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM lockout_counters WHERE account = ?1")
            .bind(account)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn unlock(&self, account: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM lockout_counters WHERE account = ?1")
            .bind(account)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    /// Failures at or after `since`.
    async fn ani_activity(
        &self,
        ani_key: &str,
        account: &str,
        since: UnixMillis,
    ) -> Result<AniActivity, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        read_ani_activity(&mut conn, ani_key, account, since).await
    }

    /// One `BEGIN IMMEDIATE` transaction: read, decide, insert.
    async fn claim_ani_attempt(&self, req: &AniAttempt<'_>) -> Result<AniClaim, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let activity = read_ani_activity(&mut tx, req.ani.key(), req.account, req.since).await?;
        if refuse_before_verify(req.policy, req.call_failures, req.ani, activity).is_some() {
            return Ok(AniClaim::Refused(activity));
        }
        let done = sqlx::query("INSERT INTO ani_failures (ani, account, at) VALUES (?1, ?2, ?3)")
            .bind(req.ani.key())
            .bind(req.account)
            .bind(req.now.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(AniClaim::Counted {
            claim: done.last_insert_rowid(),
            activity,
        })
    }

    async fn refund_ani_attempt(&self, claim: i64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        delete_ani_claim(&mut conn, claim).await
    }

    /// One `BEGIN IMMEDIATE` transaction (the audit chain's write lock): the counters row
    /// goes, the claim goes, the record is appended after the newest one. One disk flush
    /// instead of three.
    async fn settle_verified(
        &self,
        account: &str,
        ani_claim: i64,
        event: &AuditEvent,
        now: UnixMillis,
    ) -> Result<AuditRecord, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        delete_counters(&mut tx, account).await?;
        delete_ani_claim(&mut tx, ani_claim).await?;
        let last = last_record(&mut tx).await?;
        let record = insert_next(&mut tx, last.as_ref(), event, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    /// One `BEGIN IMMEDIATE` transaction: read, refund, write (or delete the row when
    /// nothing is left), and the claim goes.
    async fn refund_unjudged(
        &self,
        account: &str,
        effect: FailureEffect,
        ani_claim: i64,
        now: UnixMillis,
    ) -> Result<AccountCounters, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let mut counters = read_counters(&mut tx, account).await?;
        counters.on_refund(effect);
        if counters == AccountCounters::default() {
            delete_counters(&mut tx, account).await?;
        } else {
            write_counters(&mut tx, account, &counters, now).await?;
        }
        delete_ani_claim(&mut tx, ani_claim).await?;
        tx.commit().await.map_err(backend)?;
        Ok(counters)
    }

    async fn record_ani_failure(
        &self,
        ani_key: &str,
        account: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO ani_failures (ani, account, at) VALUES (?1, ?2, ?3)")
            .bind(ani_key)
            .bind(account)
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Removes failures strictly before `before`.
    async fn purge_ani_failures(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM ani_failures WHERE at < ?1")
            .bind(before.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn mark_unknown_account(&self, account: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE lockout_counters SET unknown = 1 WHERE account = ?1")
            .bind(account)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn purge_unknown_counters(
        &self,
        before: UnixMillis,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM lockout_counters WHERE unknown = 1 AND COALESCE(updated_at, 0) < ?1 \
             AND (locked_until IS NULL OR locked_until <= ?2)",
        )
        .bind(before.0)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

async fn read_ani_activity(
    conn: &mut sqlx::SqliteConnection,
    ani_key: &str,
    account: &str,
    since: UnixMillis,
) -> Result<AniActivity, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS failures, COUNT(DISTINCT account) AS accounts, \
             COALESCE(MAX(account = ?2), 0) AS includes \
             FROM ani_failures WHERE ani = ?1 AND at >= ?3",
    )
    .bind(ani_key)
    .bind(account)
    .bind(since.0)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(AniActivity {
        failures: to_u32("failure count", row.try_get("failures").map_err(backend)?)?,
        distinct_accounts: to_u32("account count", row.try_get("accounts").map_err(backend)?)?,
        includes_account: row.try_get::<i64, _>("includes").map_err(backend)? != 0,
    })
}
