//! Port traits: what the domain needs from storage. `ivrauth-store` implements them for
//! SQLite (and later PostgreSQL); the server holds them as `Arc<dyn Store>`.
//!
//! Every method takes the time it should record as an argument; implementations never read
//! a clock. Values here are plain records, never secrets: client secrets and access tokens
//! arrive already hashed.

use async_trait::async_trait;
use serde_json::Value;

use crate::audit::{AuditEvent, AuditRecord};
use crate::time::UnixMillis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    /// The backend failed; the text is for the operator's log only, never a response body.
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// One version of a stored flow.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFlow {
    pub id: String,
    pub name: String,
    pub version: i64,
    /// The document as JSON text, exactly as deployed.
    pub document: String,
    pub created_at: UnixMillis,
    /// When this version was written.
    pub updated_at: UnixMillis,
    pub created_by: String,
    pub deleted: bool,
}

#[async_trait]
pub trait FlowStore: Send + Sync {
    /// Store version 1 of a new flow.
    async fn create_flow(
        &self,
        id: &str,
        name: &str,
        document: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<StoredFlow, StoreError>;
    /// Store a new version of an existing, not deleted flow (`NotFound` otherwise).
    async fn update_flow(
        &self,
        id: &str,
        name: &str,
        document: &str,
        actor: &str,
        now: UnixMillis,
    ) -> Result<StoredFlow, StoreError>;
    /// The latest version (or `version`) of a flow that is not deleted.
    async fn get_flow(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredFlow>, StoreError>;
    /// The latest version of every flow that is not deleted, by id.
    async fn list_flows(&self) -> Result<Vec<StoredFlow>, StoreError>;
    /// Mark a flow deleted; its versions stay for runs already under way. False if absent.
    async fn delete_flow(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError>;
}

/// An API client (OAuth2 client-credentials).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// SHA-256 hex of the current secret.
    pub secret_hash: String,
    /// SHA-256 hex of the previous secret while a rotation overlap runs.
    pub previous_secret_hash: Option<String>,
    pub previous_valid_until: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

/// An issued access token, keyed by the SHA-256 hex of the token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub token_hash: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// Revoke a client and every token issued to it. False if absent or already revoked.
    async fn revoke_client(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError>;
    /// Replace the secret hash, keeping the old one valid until `previous_valid_until`.
    async fn rotate_client_secret(
        &self,
        id: &str,
        new_hash: &str,
        previous_valid_until: UnixMillis,
    ) -> Result<bool, StoreError>;
    /// Replace the scopes of a client that is not revoked (tokens already issued keep
    /// theirs). False if absent or revoked.
    async fn set_client_scopes(&self, id: &str, scopes: &[String]) -> Result<bool, StoreError>;
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    async fn get_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Remove tokens that expired before `now`; returns how many.
    async fn purge_expired_tokens(&self, now: UnixMillis) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Append one record to the chain, durably, before returning. Appends are serialized so
    /// that each record hashes its true predecessor, even across processes sharing the store.
    async fn append_audit(
        &self,
        event: &AuditEvent,
        now: UnixMillis,
    ) -> Result<AuditRecord, StoreError>;
    /// All records in chain order (by `seq`).
    async fn read_audit(&self) -> Result<Vec<AuditRecord>, StoreError>;
}

/// A run of a flow (a simulation now, a call later).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub flow_id: Option<String>,
    pub flow_version: Option<i64>,
    pub kind: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// Non-secret summary of the outcome (`{"endNode":..,"statusCode":..}`).
    pub outcome: Option<Value>,
}

#[async_trait]
pub trait RunStore: Send + Sync {
    async fn start_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    async fn finish_run(
        &self,
        id: &str,
        outcome: &Value,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Record a whole run (already finished) and append its audit events to the chain, in
    /// order, in one durable commit. A run that answers only when it ends (a simulation) pays
    /// for one disk flush instead of one per record, and is still recorded before it answers.
    async fn record_run(
        &self,
        run: &RunRecord,
        events: &[AuditEvent],
        now: UnixMillis,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// A call's persisted session. Never holds a secret in plain text: `state` is sealed
/// (AEAD) by the server before it gets here; `last_answer` is the platform-neutral answer
/// JSON, which never contains a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The platform-qualified call id, e.g. `twilio:CA123…`, `api:<id>`.
    pub call_id: String,
    pub flow_id: String,
    pub flow_version: i64,
    /// The next turn the platform is expected to send (turns count from 1).
    pub turn: u32,
    /// The sealed engine state waiting for turn `turn`.
    pub state: Vec<u8>,
    /// The answer given to turn `turn - 1`, replayed verbatim if the platform retries it.
    pub last_answer: Option<String>,
    /// Failed verifications in this call so far.
    pub failures: u32,
    /// Set while the call is being asked for a secret after a failed attempt: the account
    /// number it would be checked against. A hang-up (or expiry) then counts as a failure.
    pub pending_secret_account: Option<String>,
    /// The caller's number, for the per-caller-number limits when a hang-up is charged.
    pub ani: String,
    /// The call hung up: the row stays as a tombstone until it expires (nothing saves over
    /// it, and a hang-up is acted on once).
    pub ended: bool,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Call sessions that span turns (and instances). Every method is atomic across processes
/// sharing the store.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// The session of `call_id`, if any (expired ones included; the caller decides).
    async fn load_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// Insert or replace, durably, refusing to go backwards: if a stored row has a higher
    /// `turn`, nothing is written and the result is `StoreError::Conflict`. Same turn
    /// overwrites (a retried write).
    async fn save_call(&self, record: &CallRecord) -> Result<(), StoreError>;
    /// Like [`CallStore::save_call`], but only to a strictly later turn: one of several
    /// concurrent copies of a turn claims it before performing its side effects; the others
    /// get `Conflict`. Ended calls are never written (`Conflict`).
    async fn claim_call(&self, record: &CallRecord) -> Result<(), StoreError>;
    /// Mark the session ended and return it (atomically, so a hang-up that arrives twice is
    /// acted on once; `None` when there is none or it had ended). The row stays as a
    /// tombstone until [`CallStore::take_expired_calls`] removes it.
    async fn end_call(
        &self,
        call_id: &str,
        now: UnixMillis,
    ) -> Result<Option<CallRecord>, StoreError>;
    /// Delete up to `limit` sessions (tombstones included) whose `expires_at <= now` and
    /// return them.
    async fn take_expired_calls(
        &self,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<CallRecord>, StoreError>;
}

/// Everything the server needs from storage.
pub trait Store:
    FlowStore + ClientStore + AuditStore + RunStore + AccountStore + LockoutStore + CallStore
{
}
impl<
        T: FlowStore + ClientStore + AuditStore + RunStore + AccountStore + LockoutStore + CallStore,
    > Store for T
{
}

/// An account of the built-in directory, as stored. `pin_hash` and `pin_history` are PHC
/// strings (argon2id), never secrets in plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub account: crate::identity::AccountNumber,
    pub name: String,
    /// Defaults to the first word of the name.
    pub greeting: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub phone_verified: bool,
    pub email_verified: bool,
    pub disabled: bool,
    pub pin_hash: Option<String>,
    /// The last hashes replaced (newest first), at most [`PIN_HISTORY`].
    pub pin_history: Vec<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// How many previous PIN hashes are kept (a new PIN may not repeat them).
pub const PIN_HISTORY: usize = 5;

/// The built-in directory's accounts.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// `Conflict` if the account exists.
    async fn create_account(&self, account: &AccountRecord) -> Result<(), StoreError>;
    async fn get_account(&self, account: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// Accounts ordered by number, after `after`, at most `limit`.
    async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccountRecord>, StoreError>;
    /// Replace the PIN hash; the old one goes to the front of the history (trimmed to
    /// [`PIN_HISTORY`]). `NotFound` if absent.
    async fn set_pin_hash(
        &self,
        account: &str,
        hash: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Replace the PIN hash with a re-hash of the same PIN (new parameters): no history entry.
    async fn rehash_pin(
        &self,
        account: &str,
        hash: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// False if absent.
    async fn set_disabled(
        &self,
        account: &str,
        disabled: bool,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;
}

/// Lockout counters and caller-number activity, for every provider (keyed by the account's
/// counter key — `AccountKey::counter_key` of the normalised number — whether or not the
/// account exists, so unknown accounts count alike).
/// Every update is atomic across processes sharing the store.
#[async_trait]
pub trait LockoutStore: Send + Sync {
    async fn counters(&self, account: &str)
        -> Result<crate::identity::AccountCounters, StoreError>;
    /// Apply one failure with `policy` in one transaction and return the new counters and
    /// what the failure did. Twenty concurrent failures are twenty failures.
    async fn record_failure(
        &self,
        account: &str,
        policy: &crate::identity::LockoutPolicy,
        now: UnixMillis,
    ) -> Result<
        (
            crate::identity::AccountCounters,
            crate::identity::FailureEffect,
        ),
        StoreError,
    >;
    async fn record_success(&self, account: &str) -> Result<(), StoreError>;
    /// Operator unlock: resets the counters. False if there were none.
    async fn unlock(&self, account: &str) -> Result<bool, StoreError>;
    /// Failures from `ani_key` since `since`, and whether `account` is among them.
    async fn ani_activity(
        &self,
        ani_key: &str,
        account: &str,
        since: UnixMillis,
    ) -> Result<crate::identity::AniActivity, StoreError>;
    async fn record_ani_failure(
        &self,
        ani_key: &str,
        account: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Count an attempt from a caller number before the directory is asked, in one atomic
    /// update: read the number's failures since `since`, ask
    /// [`crate::identity::refuse_before_verify`], and unless it refuses, record a failure
    /// now (refund it with [`LockoutStore::refund_ani_attempt`] when the attempt succeeds).
    /// Thirty concurrent attempts from one number see each other's counts.
    async fn claim_ani_attempt(
        &self,
        request: &crate::identity::AniAttempt<'_>,
    ) -> Result<crate::identity::AniClaim, StoreError>;
    /// Take back a failure recorded by [`LockoutStore::claim_ani_attempt`].
    async fn refund_ani_attempt(&self, claim: i64) -> Result<(), StoreError>;
    /// A verification succeeded: reset `account`'s counters (as
    /// [`LockoutStore::record_success`]), take back the caller number's attempt `ani_claim`
    /// (as [`LockoutStore::refund_ani_attempt`]) and append `event` to the audit chain (as
    /// [`AuditStore::append_audit`]), all in one durable commit: all of it or none of it.
    async fn settle_verified(
        &self,
        account: &str,
        ani_claim: i64,
        event: &AuditEvent,
        now: UnixMillis,
    ) -> Result<AuditRecord, StoreError>;
    /// An attempt counted first (by [`LockoutStore::claim_ani_attempt`] and
    /// [`LockoutStore::record_failure`], which returned `effect`) was never judged (the
    /// directory was busy): take both back in one commit
    /// ([`crate::identity::AccountCounters::on_refund`]). Returns the counters after it.
    async fn refund_unjudged(
        &self,
        account: &str,
        effect: crate::identity::FailureEffect,
        ani_claim: i64,
        now: UnixMillis,
    ) -> Result<crate::identity::AccountCounters, StoreError>;
    /// Forget caller-number failures older than `before`; returns how many.
    async fn purge_ani_failures(&self, before: UnixMillis) -> Result<u64, StoreError>;
    /// The directory said this account does not exist: its counters may be purged once
    /// they no longer lock anything (see [`LockoutStore::purge_unknown_counters`]).
    async fn mark_unknown_account(&self, account: &str) -> Result<(), StoreError>;
    /// Forget the counters of accounts marked unknown whose last failure is before
    /// `before` and that are not locked at `now` (so guessing at numbers that never existed
    /// cannot grow the table without end); returns how many.
    async fn purge_unknown_counters(
        &self,
        before: UnixMillis,
        now: UnixMillis,
    ) -> Result<u64, StoreError>;
}
