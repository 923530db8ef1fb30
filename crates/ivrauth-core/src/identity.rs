//! Identity: account numbers and profiles, the provider port every directory implements
//! (built-in, LDAP, OAuth2/OIDC, HTTP), secret hashing rules, and the lockout state machine.
//!
//! No I/O: providers are implemented elsewhere (`ivrauth-store` for the built-in directory,
//! `ivrauth-connect` for the others). Hashing takes its salt as an argument; lockout takes
//! `now`. Nothing here decides what a caller hears: the caller-facing result of every
//! failure is the same, and only [`RejectReason`] (for the audit) tells them apart.

use std::fmt;

use async_trait::async_trait;

use crate::secret::Secret;
use crate::time::UnixMillis;

/// An account number as keyed in by a caller or an operator: 1–64 characters of
/// `[A-Za-z0-9._-]`. Anything else is refused before it reaches a directory (so no LDAP
/// filter or URL can be smuggled in through it; providers still escape it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountNumber(String);

impl AccountNumber {
    pub fn parse(s: &str) -> Result<AccountNumber, IdentityError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(AccountNumber(s.to_owned()))
        } else {
            Err(IdentityError::InvalidAccountNumber)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How account numbers are normalised, once, before anything keys on them: the directory
/// lookup, the lockout counters, the caller-number records, the audit subject and the
/// operator's `ivrauth account` commands all see the same form.
///
/// Surrounding whitespace is always trimmed. `fold_case` (default on) lowercases ASCII
/// letters, so `AB12` and `ab12` are one account everywhere (directories such as LDAP match
/// without regard to case; a case-sensitive directory then sees only the lowercase form).
/// `strip_separators` (default off) removes spaces, `-` and `.`, so `12-34 56` is `123456`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountRules {
    pub fold_case: bool,
    pub strip_separators: bool,
}

impl Default for AccountRules {
    fn default() -> Self {
        AccountRules {
            fold_case: true,
            strip_separators: false,
        }
    }
}

impl AccountRules {
    /// The account number in its one normal form, or why it is not an account number.
    pub fn normalise(&self, raw: &str) -> Result<AccountNumber, IdentityError> {
        let trimmed = raw.trim();
        let mut s: String = if self.strip_separators {
            trimmed
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '.'))
                .collect()
        } else {
            trimmed.to_owned()
        };
        if self.fold_case {
            s.make_ascii_lowercase();
        }
        AccountNumber::parse(&s)
    }
}

/// The key that lockout counters and caller-number records are kept under: a keyed hash
/// (HMAC-SHA256, 128 bits, hex, prefixed `a1:`) of the normalised account number, so the
/// counter tables never hold an account number in plain text (an account number collected
/// as a secret must not be stored). The same key is the audit subject of an account that
/// was collected as a secret. The host supplies the key bytes (derived from its key ring).
pub struct AccountKey(Secret<Vec<u8>>);

/// The counter key of anything that is not a valid account number.
pub const INVALID_ACCOUNT_KEY: &str = "(invalid)";

impl AccountKey {
    pub fn new(key: Vec<u8>) -> Self {
        AccountKey(Secret::new(key))
    }

    /// The counter key of `account` (already normalised).
    pub fn counter_key(&self, account: &AccountNumber) -> String {
        use hmac::{Mac, SimpleHmac};
        let Ok(mut mac) = SimpleHmac::<sha2::Sha256>::new_from_slice(self.0.expose()) else {
            // HMAC takes keys of any length; this branch cannot be reached.
            return INVALID_ACCOUNT_KEY.to_owned();
        };
        mac.update(account.as_str().as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("a1:{}", hex::encode(tag.get(..16).unwrap_or(&tag)))
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(********)")
    }
}

/// E.164 syntax: `+` and 8–15 digits (no carrier-range validation).
pub fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// The greeting used when a profile has none: the first word of the name.
pub fn default_greeting(name: &str) -> Option<String> {
    name.split_whitespace().next().map(str::to_owned)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Locked,
    Disabled,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Locked => "locked",
            AccountStatus::Disabled => "disabled",
        }
    }
}

/// What a directory knows about an account. Never holds a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub account: AccountNumber,
    pub name: Option<String>,
    pub greeting: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub phone_verified: bool,
    pub email_verified: bool,
    pub status: AccountStatus,
}

/// Why a verification was refused: for the audit and the agent only, never the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    UnknownAccount,
    WrongSecret,
    Locked,
    Disabled,
    /// An empty secret is refused before any directory sees it (an empty-password LDAP bind
    /// is an anonymous bind that "succeeds").
    EmptySecret,
    /// Too many failures in this call, from this caller number, or across accounts.
    RateLimited,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownAccount => "unknown_account",
            RejectReason::WrongSecret => "wrong_secret",
            RejectReason::Locked => "locked",
            RejectReason::Disabled => "disabled",
            RejectReason::EmptySecret => "empty_secret",
            RejectReason::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Verified,
    Rejected(RejectReason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the account number is not 1–64 characters of letters, digits, `.`, `_` or `-`")]
    InvalidAccountNumber,
    /// The directory could not be reached or answered nonsense; the text is for operators.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// Hashing capacity is saturated: try again later (never queued without bound).
    #[error("busy: try again later")]
    Busy,
    #[error("not supported by this identity provider: {0}")]
    Unsupported(&'static str),
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
}

/// A directory of accounts. Implementations must not log or store the secret in plain
/// text, must refuse an empty secret before contacting anything, and must not reveal through
/// an error which of unknown account and wrong secret happened (that is the `Verification`).
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// `builtin`, `ldap`, `oauth2`, `http`: recorded in the audit.
    fn kind(&self) -> &'static str;
    async fn lookup(&self, account: &AccountNumber) -> Result<Option<Profile>, IdentityError>;
    async fn verify(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
    ) -> Result<Verification, IdentityError>;
    async fn change_secret(
        &self,
        account: &AccountNumber,
        new_secret: &Secret<String>,
    ) -> Result<(), IdentityError>;
    /// Checked at start-up: a misconfigured directory stops the server early.
    async fn health(&self) -> Result<(), IdentityError>;

    /// [`IdentityProvider::verify`] for a caller that answers no sooner than `padding` from
    /// now anyway (its timing padding), and, when verified, the profile (for the greeting;
    /// `None` if it cannot be read). A provider that queues for local capacity may wait
    /// that long for it instead of answering `Busy`; one that reads the account to verify
    /// it can return the profile from that read. By default: `verify`, then `lookup`.
    async fn verify_with_profile(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
        padding: std::time::Duration,
    ) -> Result<(Verification, Option<Profile>), IdentityError> {
        let _ = padding;
        let verification = self.verify(account, secret).await?;
        let profile = match verification {
            Verification::Verified => self.lookup(account).await.ok().flatten(),
            Verification::Rejected(_) => None,
        };
        Ok((verification, profile))
    }
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id recommendation: m=19456 KiB, t=2, p=1.
    fn default() -> Self {
        HashParams {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

fn argon2(params: HashParams) -> Result<argon2::Argon2<'static>, IdentityError> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, None)
        .map_err(|e| IdentityError::Unavailable(format!("invalid argon2 parameters: {e}")))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        p,
    ))
}

/// Hash a secret into a PHC string (`$argon2id$v=19$m=...`), which carries its parameters.
/// `salt` must be fresh random bytes from the host (16 recommended).
pub fn hash_secret(
    secret: &Secret<String>,
    salt: &[u8],
    params: HashParams,
) -> Result<String, IdentityError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(salt)
        .map_err(|e| IdentityError::Unavailable(format!("invalid salt: {e}")))?;
    argon2(params)?
        .hash_password(secret.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Unavailable(format!("hashing failed: {e}")))
}

/// Check a secret against a PHC string, with the parameters the string carries.
pub fn verify_secret(secret: &Secret<String>, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(secret.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The working memory of one argon2 run (`m_kib` KiB of blocks), kept between runs so that
/// a hashing thread does not allocate and fault in ~19 MiB for every verification. Its
/// contents after a run are the run's internal state (derived from the secret, as freed
/// memory would be after [`verify_secret`]); it holds no secret itself.
#[derive(Default)]
pub struct HashMemory(Vec<argon2::Block>);

impl HashMemory {
    /// Empty: grows to the size a hash needs on first use.
    pub fn new() -> Self {
        HashMemory(Vec::new())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.len() * argon2::Block::SIZE
    }
}

impl fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashMemory({} bytes)", self.bytes())
    }
}

/// [`verify_secret`] working in `memory` instead of a fresh allocation: the same answer
/// for every input (the algorithm, version and parameters the PHC string carries; a
/// constant-time comparison of the output).
pub fn verify_secret_in(secret: &Secret<String>, phc: &str, memory: &mut HashMemory) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, argon2::Block::default());
    }
    let hasher = argon2::Argon2::new(algorithm, version, params);
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let Some(work) = memory.0.get_mut(..blocks) else {
        return false;
    };
    if hasher
        .hash_password_into_with_memory(secret.expose().as_bytes(), salt, out, work)
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(out).is_ok_and(|computed| computed == expected)
}

/// Whether a stored hash was made with other parameters than `params` (re-hash it after a
/// successful verification).
pub fn needs_rehash(phc: &str, params: HashParams) -> bool {
    use argon2::password_hash::PasswordHash;
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let get = |k: &str| parsed.params.get_decimal(k);
    parsed.algorithm.as_str() != "argon2id"
        || get("m") != Some(params.m_kib)
        || get("t") != Some(params.t)
        || get("p") != Some(params.p)
}

/// Lockout settings; see [`AccountCounters`] for the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock an account.
    pub max_failures: u32,
    /// First lock period, in seconds; each further lock doubles it.
    pub base_lock_secs: i64,
    /// Longest lock period, in seconds.
    pub max_lock_secs: i64,
    /// Lock until an operator unlocks, instead of for a period.
    pub permanent: bool,
    /// Failed secrets allowed in one call.
    pub per_call_failures: u32,
    /// Failures allowed per caller number per hour.
    pub per_ani_failures_per_hour: u32,
    /// Distinct accounts a caller number may try per hour (password spraying).
    pub per_ani_accounts_per_hour: u32,
    /// The same two limits for withheld caller numbers, which share one bucket.
    pub withheld_failures_per_hour: u32,
    pub withheld_accounts_per_hour: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            base_lock_secs: 15 * 60,
            max_lock_secs: 24 * 60 * 60,
            permanent: false,
            per_call_failures: 3,
            per_ani_failures_per_hour: 20,
            per_ani_accounts_per_hour: 10,
            withheld_failures_per_hour: 10,
            withheld_accounts_per_hour: 5,
        }
    }
}

/// An account's failure counters, as stored.
///
/// State machine: each failure increments `failed_attempts`. When it reaches
/// `max_failures`, and on every failure after that, the account locks — for
/// `base_lock_secs · 2^(locks so far)`, capped at `max_lock_secs`, or until unlocked in
/// permanent mode. Attempts while locked are counted but do not extend the lock. A success
/// resets the count and the lock level; locking does not (an operator sees every attempt).
/// An operator's unlock resets everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountCounters {
    pub failed_attempts: u32,
    /// How many times the account has locked since its last success or unlock.
    pub locks: u32,
    pub locked_until: Option<UnixMillis>,
    pub locked_permanently: bool,
}

/// What a failure did to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    Counted,
    LockedUntil(UnixMillis),
    LockedPermanently,
}

impl AccountCounters {
    pub fn is_locked(&self, now: UnixMillis) -> bool {
        self.locked_permanently || self.locked_until.is_some_and(|t| now < t)
    }

    pub fn on_failure(&mut self, policy: &LockoutPolicy, now: UnixMillis) -> FailureEffect {
        let was_locked = self.is_locked(now);
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        if was_locked || self.failed_attempts < policy.max_failures.max(1) {
            return FailureEffect::Counted;
        }
        if policy.permanent {
            self.locked_permanently = true;
            self.locks = self.locks.saturating_add(1);
            return FailureEffect::LockedPermanently;
        }
        let factor = 1i64.checked_shl(self.locks.min(30)).unwrap_or(i64::MAX);
        let secs = policy
            .base_lock_secs
            .saturating_mul(factor)
            .min(policy.max_lock_secs);
        let until = now.plus_secs(secs);
        self.locks = self.locks.saturating_add(1);
        self.locked_until = Some(until);
        FailureEffect::LockedUntil(until)
    }

    /// Take back one failure that was counted but never judged (the directory was busy and
    /// never ran the check): one attempt fewer, and the lock that failure set (`effect`)
    /// lifted if it still stands. A lock set by another failure stays.
    pub fn on_refund(&mut self, effect: FailureEffect) {
        self.failed_attempts = self.failed_attempts.saturating_sub(1);
        let ours = match effect {
            FailureEffect::Counted => false,
            FailureEffect::LockedUntil(t) => {
                let ours = self.locked_until == Some(t);
                if ours {
                    self.locked_until = None;
                }
                ours
            }
            FailureEffect::LockedPermanently => {
                let ours = self.locked_permanently;
                self.locked_permanently = false;
                ours
            }
        };
        if ours {
            self.locks = self.locks.saturating_sub(1);
        }
    }

    pub fn on_success(&mut self) {
        *self = AccountCounters::default();
    }

    pub fn unlock(&mut self) {
        *self = AccountCounters::default();
    }
}

/// A caller number (ANI), with withheld numbers folded into one shared bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ani {
    Known(String),
    Withheld,
}

impl Ani {
    pub fn parse(raw: &str) -> Ani {
        let t = raw.trim();
        let withheld = t.is_empty()
            || [
                "anonymous",
                "restricted",
                "unknown",
                "private",
                "unavailable",
            ]
            .iter()
            .any(|w| t.eq_ignore_ascii_case(w));
        if withheld {
            Ani::Withheld
        } else {
            Ani::Known(t.to_owned())
        }
    }

    /// The key counters are stored under.
    pub fn key(&self) -> &str {
        match self {
            Ani::Known(s) => s,
            Ani::Withheld => "(withheld)",
        }
    }
}

/// Failures from one caller number in the last hour, as read from the store.
/// One attempt from a caller number, to be counted before the directory is asked
/// ([`crate::ports::LockoutStore::claim_ani_attempt`]).
#[derive(Debug, Clone, Copy)]
pub struct AniAttempt<'a> {
    pub ani: &'a Ani,
    /// The account's counter key.
    pub account: &'a str,
    pub policy: &'a LockoutPolicy,
    /// Failures so far in this call.
    pub call_failures: u32,
    /// The start of the window the limits count over.
    pub since: UnixMillis,
    pub now: UnixMillis,
}

/// What counting an attempt from a caller number decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AniClaim {
    /// Over a limit: the attempt is not judged and nothing was recorded.
    Refused(AniActivity),
    /// Counted as a failure (id to refund), with the activity seen before it.
    Counted { claim: i64, activity: AniActivity },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AniActivity {
    pub failures: u32,
    pub distinct_accounts: u32,
    /// Whether this account is already among `distinct_accounts`.
    pub includes_account: bool,
}

/// Whether another attempt is allowed before any directory is asked: `None` to proceed,
/// or the reason to refuse (recorded in the audit; the caller hears the usual failure).
pub fn refuse_before_verify(
    policy: &LockoutPolicy,
    call_failures: u32,
    ani: &Ani,
    activity: AniActivity,
) -> Option<RejectReason> {
    let (max_failures, max_accounts) = match ani {
        Ani::Known(_) => (
            policy.per_ani_failures_per_hour,
            policy.per_ani_accounts_per_hour,
        ),
        Ani::Withheld => (
            policy.withheld_failures_per_hour,
            policy.withheld_accounts_per_hour,
        ),
    };
    let new_account = !activity.includes_account;
    if call_failures >= policy.per_call_failures
        || activity.failures >= max_failures
        || (new_account && activity.distinct_accounts >= max_accounts)
    {
        return Some(RejectReason::RateLimited);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    #[test]
    fn account_numbers_and_phones() {
        assert!(AccountNumber::parse("12345678").is_ok());
        assert!(AccountNumber::parse("ACC-1.2_3").is_ok());
        for bad in ["", "*)(uid=*", "a b", "a/b", &"9".repeat(65)] {
            assert_eq!(
                AccountNumber::parse(bad),
                Err(IdentityError::InvalidAccountNumber),
                "{bad}"
            );
        }
        assert!(is_e164("+15550100123"));
        assert!(is_e164("+4930123456"));
        assert!(!is_e164("15550100123"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1 555 0100"));
        assert_eq!(default_greeting("Ada Lovelace").as_deref(), Some("Ada"));
        assert_eq!(default_greeting("  "), None);
    }

    #[test]
    fn account_rules_give_one_form() {
        let fold = AccountRules::default();
        assert_eq!(fold.normalise(" AB12 ").unwrap().as_str(), "ab12");
        assert_eq!(
            fold.normalise("ab12").unwrap(),
            fold.normalise("AB12").unwrap()
        );
        assert!(fold.normalise("12 34").is_err());
        let exact = AccountRules {
            fold_case: false,
            strip_separators: false,
        };
        assert_eq!(exact.normalise("AB12").unwrap().as_str(), "AB12");
        assert_ne!(
            exact.normalise("ab12").unwrap(),
            exact.normalise("AB12").unwrap()
        );
        let strip = AccountRules {
            fold_case: true,
            strip_separators: true,
        };
        assert_eq!(strip.normalise("12-34 5.6").unwrap().as_str(), "123456");
        assert!(strip.normalise(" - ").is_err());
    }

    #[test]
    fn counter_keys_are_keyed_hashes() {
        let key = AccountKey::new(vec![7; 32]);
        let a = AccountNumber::parse("12345678").unwrap();
        let k = key.counter_key(&a);
        assert!(k.starts_with("a1:") && k.len() == 3 + 32, "{k}");
        assert!(!k.contains("12345678"));
        assert_eq!(k, key.counter_key(&a));
        assert_ne!(k, AccountKey::new(vec![8; 32]).counter_key(&a));
        assert_ne!(
            k,
            key.counter_key(&AccountNumber::parse("12345679").unwrap())
        );
        assert_eq!(format!("{key:?}"), "AccountKey(********)");
    }

    #[test]
    fn hashes_carry_their_parameters() {
        let fast = HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let pin = Secret::new("4321".to_owned());
        let phc = hash_secret(&pin, b"0123456789abcdef", fast).unwrap_or_default();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("4321"));
        assert!(verify_secret(&pin, &phc));
        assert!(!verify_secret(&Secret::new("4322".to_owned()), &phc));
        assert!(!verify_secret(&pin, "not a hash"));
        assert!(!needs_rehash(&phc, fast));
        assert!(needs_rehash(&phc, HashParams { m_kib: 128, ..fast }));
        assert!(needs_rehash("garbage", fast));
    }

    #[test]
    fn verifying_in_reused_memory_agrees_with_verify_secret() {
        let small = HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let large = HashParams {
            m_kib: 256,
            t: 2,
            p: 2,
        };
        let pin = Secret::new("4321".to_owned());
        let wrong = Secret::new("4322".to_owned());
        let mut memory = HashMemory::new();
        // Large first, then small in the same (larger) memory, then large again.
        for params in [large, small, large] {
            let phc = hash_secret(&pin, b"0123456789abcdef", params).unwrap_or_default();
            assert!(verify_secret_in(&pin, &phc, &mut memory), "{phc}");
            assert!(!verify_secret_in(&wrong, &phc, &mut memory), "{phc}");
            assert_eq!(
                verify_secret(&pin, &phc),
                verify_secret_in(&pin, &phc, &mut memory)
            );
        }
        assert_eq!(memory.bytes(), 256 * 1024);
        // Other variants and versions are checked with what the string carries.
        let argon2i = "$argon2i$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$";
        let phc = hash_secret(&pin, b"0123456789abcdef", small).unwrap_or_default();
        let tail = phc.rsplit('$').next().unwrap_or_default();
        assert!(!verify_secret_in(
            &pin,
            &format!("{argon2i}{tail}"),
            &mut memory
        ));
        for bad in [
            "not a hash",
            "",
            "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg",
            "$scrypt$ln=4,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$aGFzaA",
        ] {
            assert!(!verify_secret_in(&pin, bad, &mut memory), "{bad}");
            assert!(!verify_secret(&pin, bad), "{bad}");
        }
        assert!(!format!("{memory:?}").contains("4321"));
    }

    #[test]
    fn a_refund_takes_back_the_failure_and_only_its_own_lock() {
        let policy = LockoutPolicy {
            max_failures: 2,
            base_lock_secs: 60,
            ..Default::default()
        };
        let mut c = AccountCounters::default();
        let effect = c.on_failure(&policy, T0);
        c.on_refund(effect);
        assert_eq!(c, AccountCounters::default());

        // The failure that locked is refunded: unlocked, as if it never happened.
        let mut c = AccountCounters::default();
        c.on_failure(&policy, T0);
        let before = c;
        let effect = c.on_failure(&policy, T0);
        assert!(matches!(effect, FailureEffect::LockedUntil(_)));
        c.on_refund(effect);
        assert_eq!(c, before);
        assert!(!c.is_locked(T0));

        // A later lock (another failure's) stays; the count still drops by one.
        let mut c = AccountCounters::default();
        c.on_failure(&policy, T0);
        let first_lock = c.on_failure(&policy, T0);
        let later = T0.plus_secs(120);
        let second_lock = c.on_failure(&policy, later);
        assert_ne!(first_lock, second_lock);
        c.on_refund(first_lock);
        assert_eq!(c.failed_attempts, 2);
        assert_eq!(c.locks, 2);
        assert!(c.is_locked(later));

        let permanent = LockoutPolicy {
            permanent: true,
            ..policy
        };
        let mut c = AccountCounters::default();
        c.on_failure(&permanent, T0);
        let effect = c.on_failure(&permanent, T0);
        assert_eq!(effect, FailureEffect::LockedPermanently);
        c.on_refund(effect);
        assert!(!c.is_locked(T0));
        assert_eq!((c.failed_attempts, c.locks), (1, 0));
        // Nothing goes below zero.
        let mut c = AccountCounters::default();
        c.on_refund(FailureEffect::Counted);
        assert_eq!(c, AccountCounters::default());
    }

    #[test]
    fn lockout_grows_and_caps() {
        let policy = LockoutPolicy {
            base_lock_secs: 900,
            max_lock_secs: 3_600,
            ..Default::default()
        };
        let mut c = AccountCounters::default();
        for _ in 0..4 {
            assert_eq!(c.on_failure(&policy, T0), FailureEffect::Counted);
        }
        assert!(!c.is_locked(T0));
        assert_eq!(
            c.on_failure(&policy, T0),
            FailureEffect::LockedUntil(T0.plus_secs(900))
        );
        assert!(c.is_locked(T0.plus_secs(899)));
        // Attempts while locked are counted but do not extend the lock.
        assert_eq!(
            c.on_failure(&policy, T0.plus_secs(10)),
            FailureEffect::Counted
        );
        assert_eq!(c.failed_attempts, 6);
        assert_eq!(c.locked_until, Some(T0.plus_secs(900)));
        // After the lock, the next failure locks again, for twice as long; then capped.
        let t1 = T0.plus_secs(900);
        assert!(!c.is_locked(t1));
        assert_eq!(
            c.on_failure(&policy, t1),
            FailureEffect::LockedUntil(t1.plus_secs(1_800))
        );
        let t2 = t1.plus_secs(1_800);
        assert_eq!(
            c.on_failure(&policy, t2),
            FailureEffect::LockedUntil(t2.plus_secs(3_600))
        );
        let t3 = t2.plus_secs(3_600);
        assert_eq!(
            c.on_failure(&policy, t3),
            FailureEffect::LockedUntil(t3.plus_secs(3_600))
        );
        assert_eq!(c.failed_attempts, 9, "locking never resets the count");
        // A success resets everything.
        c.on_success();
        assert_eq!(c, AccountCounters::default());
    }

    #[test]
    fn permanent_lockout_needs_an_unlock() {
        let policy = LockoutPolicy {
            permanent: true,
            max_failures: 2,
            ..Default::default()
        };
        let mut c = AccountCounters::default();
        assert_eq!(c.on_failure(&policy, T0), FailureEffect::Counted);
        assert_eq!(c.on_failure(&policy, T0), FailureEffect::LockedPermanently);
        assert!(c.is_locked(T0.plus_secs(10 * 365 * 24 * 3600)));
        c.unlock();
        assert!(!c.is_locked(T0));
        assert_eq!(c.failed_attempts, 0);
    }

    #[test]
    fn call_and_caller_number_limits() {
        let p = LockoutPolicy::default();
        let ani = Ani::parse("+15550100");
        let quiet = AniActivity::default();
        assert_eq!(refuse_before_verify(&p, 0, &ani, quiet), None);
        assert_eq!(
            refuse_before_verify(&p, 3, &ani, quiet),
            Some(RejectReason::RateLimited)
        );
        let busy = AniActivity {
            failures: 20,
            ..quiet
        };
        assert_eq!(
            refuse_before_verify(&p, 0, &ani, busy),
            Some(RejectReason::RateLimited)
        );
        // Spraying: a new account beyond 10 distinct ones is refused; a known one is not.
        let spray = AniActivity {
            failures: 10,
            distinct_accounts: 10,
            includes_account: false,
        };
        assert_eq!(
            refuse_before_verify(&p, 0, &ani, spray),
            Some(RejectReason::RateLimited)
        );
        let again = AniActivity {
            includes_account: true,
            ..spray
        };
        assert_eq!(refuse_before_verify(&p, 0, &ani, again), None);
        // Withheld numbers share a stricter bucket.
        for raw in ["", "anonymous", "Restricted", "  "] {
            assert_eq!(Ani::parse(raw), Ani::Withheld, "{raw:?}");
        }
        let withheld = AniActivity {
            failures: 10,
            ..quiet
        };
        assert_eq!(
            refuse_before_verify(&p, 0, &Ani::Withheld, withheld),
            Some(RejectReason::RateLimited)
        );
        assert_eq!(refuse_before_verify(&p, 0, &ani, withheld), None);
    }
}
