//! `BuiltinDirectory`: the `IdentityProvider` (kind `builtin`) over this crate's account
//! store, with PINs hashed by argon2id on a bounded [`HashPool`].
//!
//! Timing does not tell an unknown account from a known one: an unknown account (or one with
//! no PIN) spends one verification against a dummy hash made at construction with the same
//! parameters, and a disabled account is verified like any other before being refused.
//! Lockout is not applied here (the caller consults `LockoutStore` for every provider).
//!
//! Also the PIN rules shared with the CLI: [`check_pin_format`] and [`hash_pin`] (fresh
//! random salt), so imports and changes hash the same way.

use std::sync::Arc;

use async_trait::async_trait;
use ivrauth_core::identity::{
    default_greeting, hash_secret, needs_rehash, verify_secret_in, AccountNumber, AccountStatus,
    HashParams, IdentityError, IdentityProvider, Profile, RejectReason, Verification,
};
use ivrauth_core::ports::{AccountRecord, Store, StoreError, PIN_HISTORY};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::Clock;
use rand::RngCore as _;

use crate::hashpool::HashPool;

/// Fewest digits in a PIN.
pub const PIN_MIN_DIGITS: usize = 4;
/// Most digits in a PIN.
pub const PIN_MAX_DIGITS: usize = 12;

/// Bytes of random salt per hash.
const SALT_BYTES: usize = 16;

/// `Ok` if `pin` is 4–12 ASCII digits. The error never contains the PIN.
pub fn check_pin_format(pin: &str) -> Result<(), IdentityError> {
    let ok = (PIN_MIN_DIGITS..=PIN_MAX_DIGITS).contains(&pin.len())
        && pin.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidSecret(format!(
            "a PIN must be {PIN_MIN_DIGITS} to {PIN_MAX_DIGITS} digits"
        )))
    }
}

/// Hash `pin` with `params` and 16 fresh random bytes of salt (blocking: run it on a
/// [`HashPool`] or another blocking thread).
pub fn hash_pin(pin: &Secret<String>, params: HashParams) -> Result<String, IdentityError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| IdentityError::Unavailable(format!("no random salt available: {e}")))?;
    hash_secret(pin, &salt, params)
}

fn store_error(e: StoreError) -> IdentityError {
    IdentityError::Unavailable(format!("account store: {e}"))
}

/// The built-in directory. Cheap to share behind an `Arc`.
pub struct BuiltinDirectory {
    store: Arc<dyn Store>,
    params: HashParams,
    pool: HashPool,
    clock: Arc<dyn Clock>,
    /// Verified against when there is no real hash, so that timing matches.
    dummy_hash: String,
}

impl std::fmt::Debug for BuiltinDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinDirectory")
            .field("params", &self.params)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl BuiltinDirectory {
    /// New PINs and re-hashes use `params`; hashing runs on `pool`; `clock` stamps PIN
    /// changes. Hashes the dummy once, here (blocking, one argon2 run: call it at start-up),
    /// which also checks `params`: invalid parameters are an `Unavailable` error.
    pub fn new(
        store: Arc<dyn Store>,
        params: HashParams,
        pool: HashPool,
        clock: Arc<dyn Clock>,
    ) -> Result<BuiltinDirectory, IdentityError> {
        // Not digits, so no valid PIN equals it (and a match would be refused anyway).
        let dummy = Secret::new("ivrauth: no such account".to_owned());
        let began = std::time::Instant::now();
        let dummy_hash = hash_pin(&dummy, params)?;
        // The pool's first estimate of a job's time, until it measures its own.
        pool.observe(began.elapsed());
        Ok(BuiltinDirectory {
            store,
            params,
            pool,
            clock,
            dummy_hash,
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// The pool hashing runs on.
    pub fn pool(&self) -> &HashPool {
        &self.pool
    }

    async fn account(
        &self,
        account: &AccountNumber,
    ) -> Result<Option<AccountRecord>, IdentityError> {
        self.store
            .get_account(account.as_str())
            .await
            .map_err(store_error)
    }
}

fn profile_of(r: AccountRecord) -> Profile {
    Profile {
        greeting: r.greeting.clone().or_else(|| default_greeting(&r.name)),
        status: if r.disabled {
            AccountStatus::Disabled
        } else {
            AccountStatus::Active
        },
        account: r.account,
        name: Some(r.name),
        phone: r.phone,
        email: r.email,
        phone_verified: r.phone_verified,
        email_verified: r.email_verified,
    }
}

impl BuiltinDirectory {
    /// The verification, and the account as read for it. The hash runs on the pool with
    /// the pool's working memory, waiting as long as `padding` allows.
    async fn check(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
        padding: std::time::Duration,
    ) -> Result<(Verification, Option<AccountRecord>), IdentityError> {
        if secret.expose().is_empty() {
            return Ok((Verification::Rejected(RejectReason::EmptySecret), None));
        }
        let record = self.account(account).await?;
        let stored = record.as_ref().and_then(|r| r.pin_hash.clone());
        let enabled = record.as_ref().is_some_and(|r| !r.disabled);
        let params = self.params;
        let phc = stored.clone().unwrap_or_else(|| self.dummy_hash.clone());
        let rehash = stored.is_some() && enabled && needs_rehash(&phc, params);
        let secret = secret.clone();
        let (matched, new_hash) = self
            .pool
            .hash(padding, move |memory| {
                let matched = verify_secret_in(&secret, &phc, memory);
                let new_hash = (matched && rehash).then(|| hash_pin(&secret, params));
                (matched, new_hash)
            })
            .await?;

        let Some(record) = record else {
            return Ok((Verification::Rejected(RejectReason::UnknownAccount), None));
        };
        if record.disabled {
            return Ok((Verification::Rejected(RejectReason::Disabled), None));
        }
        if stored.is_none() || !matched {
            return Ok((Verification::Rejected(RejectReason::WrongSecret), None));
        }
        // A failed re-hash does not fail the caller; the next success tries again.
        match new_hash {
            Some(Ok(hash)) => {
                if let Err(e) = self
                    .store
                    .rehash_pin(account.as_str(), &hash, self.clock.now())
                    .await
                {
                    tracing::warn!("cannot store a re-hashed PIN (the account number is not logged: it may have been keyed as a secret): {e}");
                }
            }
            Some(Err(e)) => {
                tracing::warn!("cannot re-hash a PIN (the account number is not logged): {e}");
            }
            None => {}
        }
        Ok((Verification::Verified, Some(record)))
    }
}

#[async_trait]
impl IdentityProvider for BuiltinDirectory {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    /// The profile with `status` `Disabled` or `Active` (lockout is the caller's to apply).
    async fn lookup(&self, account: &AccountNumber) -> Result<Option<Profile>, IdentityError> {
        Ok(self.account(account).await?.map(profile_of))
    }

    /// Waits for the pool at most its margin.
    async fn verify(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
    ) -> Result<Verification, IdentityError> {
        Ok(self
            .check(account, secret, std::time::Duration::ZERO)
            .await?
            .0)
    }

    /// Waits for the pool while the answer can come within `padding` plus its margin, and
    /// takes the profile from the account row the verification read (no second read).
    async fn verify_with_profile(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
        padding: std::time::Duration,
    ) -> Result<(Verification, Option<Profile>), IdentityError> {
        let (verification, record) = self.check(account, secret, padding).await?;
        Ok((verification, record.map(profile_of)))
    }

    /// Refuses (`InvalidSecret`, never echoing the PIN) a PIN that is not 4–12 digits or
    /// that matches the current one or one of the last [`PIN_HISTORY`]. An unknown account
    /// is `Unavailable` (the port has no "not found").
    async fn change_secret(
        &self,
        account: &AccountNumber,
        new_secret: &Secret<String>,
    ) -> Result<(), IdentityError> {
        check_pin_format(new_secret.expose())?;
        let Some(record) = self.account(account).await? else {
            return Err(IdentityError::Unavailable(format!(
                "no account {account} in the built-in directory"
            )));
        };
        let previous: Vec<String> = record
            .pin_hash
            .into_iter()
            .chain(record.pin_history.into_iter().take(PIN_HISTORY))
            .collect();
        let secret = new_secret.clone();
        let params = self.params;
        let hash = self
            .pool
            .hash(std::time::Duration::ZERO, move |memory| {
                if previous
                    .iter()
                    .any(|phc| verify_secret_in(&secret, phc, memory))
                {
                    return Err(IdentityError::InvalidSecret(format!(
                        "the new PIN must differ from the current PIN and the last {PIN_HISTORY}"
                    )));
                }
                hash_pin(&secret, params)
            })
            .await??;
        self.store
            .set_pin_hash(account.as_str(), &hash, self.clock.now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => IdentityError::Unavailable(format!(
                    "no account {account} in the built-in directory"
                )),
                other => store_error(other),
            })
    }

    /// One cheap read of the account table.
    async fn health(&self) -> Result<(), IdentityError> {
        self.store
            .list_accounts(None, 1)
            .await
            .map(|_| ())
            .map_err(store_error)
    }
}
