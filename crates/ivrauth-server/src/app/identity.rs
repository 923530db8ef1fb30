//! The identity actions (`identity.lookup`, `identity.verify`) as the runtime performs them:
//! whichever directory is configured, wrapped in lockout, per-call and per-caller-number
//! limits, timing padding and the audit.
//!
//! Anti-enumeration lives here: an unknown account, a wrong secret, a locked and a disabled
//! account all produce the same outputs (`verified: false`, the same `attemptsLeft`), take
//! at least the same configured time, and differ only in the audit record. Not here: the
//! directories themselves (store and connect crates) or any flow rule (core).

use std::sync::Arc;
use std::time::Duration;

use ivrauth_core::ports::StoreError;

use serde_json::{json, Map, Value};

use ivrauth_connect::Sleeper;
use ivrauth_core::audit::{AuditEvent, EventName, Outcome};
use ivrauth_core::engine::{ActionCall, ActionFailure};
use ivrauth_core::identity::{
    AccountKey, AccountNumber, AccountRules, Ani, AniAttempt, AniClaim, FailureEffect,
    IdentityError, IdentityProvider, LockoutPolicy, Profile, RejectReason, Verification,
    INVALID_ACCOUNT_KEY,
};
use ivrauth_core::ports::Store;
use ivrauth_core::time::Clock;
use ivrauth_core::Secret;

/// What the runtime knows about the call an action runs in.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call id (the trace id of a simulation).
    pub call_id: String,
    /// The caller key the per-caller-number limits count under: the caller's number as the
    /// platform gave it (`contact.ani`) in calls, `client:<id>` in simulations (whatever
    /// the request's `contact.ani` says).
    pub ani: String,
    /// Failed secrets so far in this call.
    pub failures: u32,
}

/// The configured directory plus the protections around it.
pub struct IdentityService {
    pub provider: Arc<dyn IdentityProvider>,
    /// Lockout counters, caller-number activity and the audit log.
    pub store: Arc<dyn Store>,
    pub policy: LockoutPolicy,
    /// Every verification takes at least this long, so that a slow directory round trip (or
    /// a quick refusal) does not stand out. Set it above the directory's usual latency.
    pub min_verify_duration: Duration,
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
    /// How account numbers are normalised before anything keys on them.
    pub account_rules: AccountRules,
    /// Keys the counters (and the audit subject of an account keyed as a secret).
    pub account_key: AccountKey,
    /// `identity.lookup` per caller key (calls) or client (simulations).
    pub lookup_limiter: crate::app::ratelimit::RateLimiter,
}

/// Default `identity.lookup` allowance per caller key and hour.
pub const DEFAULT_LOOKUPS_PER_HOUR: u32 = 60;

/// A limiter of `per_hour` lookups per caller key, the whole hour's worth available at once.
pub fn lookup_limiter(per_hour: u32) -> crate::app::ratelimit::RateLimiter {
    crate::app::ratelimit::RateLimiter::with_rate(
        f64::from(per_hour.max(1)) / 3600.0,
        f64::from(per_hour.max(1)),
    )
}

/// An action's outputs, or why it could not be performed.
pub type ActionResult = Result<Map<String, Value>, ActionFailure>;

const HOUR_MS: i64 = 60 * 60 * 1000;

fn failure(code: &str, message: &str) -> ActionFailure {
    ActionFailure {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

fn from_identity_error(e: &IdentityError) -> ActionFailure {
    match e {
        IdentityError::Busy => failure("busy", "the identity service is busy; try again later"),
        IdentityError::Unsupported(what) => failure("unsupported", what),
        _ => failure("unavailable", "the identity provider is unavailable"),
    }
}

/// `********0123`: enough to confirm "the number ending 0123" without reading it out.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits.iter().skip(digits.len().saturating_sub(4)).collect();
    format!("{}{tail}", "*".repeat(digits.len().saturating_sub(4)))
}

/// `a***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

impl IdentityService {
    /// Perform an `identity.*` action. It runs to completion on its own task, so a caller
    /// hanging up (the request being dropped) cannot stop an attempt half-way: the counters
    /// and the audit record are always written. Returns the outputs and the call's failure
    /// count after the action.
    pub async fn perform(
        self: &Arc<Self>,
        call: ActionCall,
        ctx: CallContext,
    ) -> (ActionResult, u32) {
        let this = self.clone();
        let failures = ctx.failures;
        let task = tokio::spawn(async move {
            let mut ctx = ctx;
            let (result, event) = match call.action {
                "identity.lookup" => {
                    let (result, event) = this.lookup(&call, &ctx).await;
                    (result, Some(event))
                }
                "identity.verify" => this.verify(&call, &mut ctx).await,
                other => {
                    let msg = format!("action `{other}` is not available");
                    return (Err(failure("unsupported", &msg)), ctx.failures);
                }
            };
            // `None`: the record was written with the action's own commit.
            let Some(event) = event else {
                return (result, ctx.failures);
            };
            if let Err(e) = this.store.append_audit(&event, this.clock.now()).await {
                tracing::error!(error = %e, "cannot write the audit record of an identity action");
                return (
                    Err(failure(
                        "unavailable",
                        "the identity service is unavailable",
                    )),
                    ctx.failures,
                );
            }
            (result, ctx.failures)
        });
        match task.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "identity action task failed");
                (
                    Err(failure(
                        "unavailable",
                        "the identity service is unavailable",
                    )),
                    failures,
                )
            }
        }
    }

    /// The counter key of an account number as keyed (normalised first).
    pub fn counter_key(&self, raw: &str) -> String {
        self.account_rules
            .normalise(raw)
            .map_or(INVALID_ACCOUNT_KEY.to_owned(), |a| {
                self.account_key.counter_key(&a)
            })
    }

    /// The action's account: normalised (or `None`), its counter key, and the audit
    /// subject — the normalised number, or the counter key when the number was keyed as a
    /// secret (so it is never written in plain text).
    fn account_of(&self, call: &ActionCall) -> (Option<AccountNumber>, String, String) {
        let raw = call.text("account");
        let keyed_as_secret = call.secrets.iter().any(|(name, _)| *name == "account");
        let account = raw
            .as_ref()
            .and_then(|r| self.account_rules.normalise(r.expose()).ok());
        let key = account
            .as_ref()
            .map_or(INVALID_ACCOUNT_KEY.to_owned(), |a| {
                self.account_key.counter_key(a)
            });
        let subject = match &account {
            Some(a) if !keyed_as_secret => a.as_str().to_owned(),
            _ => key.clone(),
        };
        (account, key, subject)
    }

    fn event(
        &self,
        name: EventName,
        outcome: Outcome,
        ctx: &CallContext,
        account: &str,
        detail: Value,
    ) -> AuditEvent {
        let mut detail = detail;
        if let Value::Object(o) = &mut detail {
            o.insert("provider".into(), json!(self.provider.kind()));
            o.insert("ani".into(), json!(ctx.ani));
            o.insert("callId".into(), json!(ctx.call_id));
        }
        AuditEvent::new(
            uuid::Uuid::new_v4().to_string(),
            name,
            outcome,
            format!("caller:{}", Ani::parse(&ctx.ani).key()),
            account,
            Some(ctx.call_id.clone()),
            detail,
        )
    }

    async fn lookup(&self, call: &ActionCall, ctx: &CallContext) -> (ActionResult, AuditEvent) {
        let (parsed, _, subject) = self.account_of(call);
        let subject = subject.as_str();
        if self
            .lookup_limiter
            .check(Ani::parse(&ctx.ani).key(), self.clock.now())
            .is_err()
        {
            let ev = self.event(
                EventName::IdentityLookup,
                Outcome::Failure,
                ctx,
                subject,
                json!({"reason": "rate_limited"}),
            );
            return (
                Err(failure(
                    "rate_limited",
                    "too many lookups from this caller; try again later",
                )),
                ev,
            );
        }
        let profile: Result<Option<Profile>, IdentityError> = match &parsed {
            Some(account) => self.provider.lookup(account).await,
            None => Ok(None),
        };
        match profile {
            Err(e) => {
                let ev = self.event(
                    EventName::IdentityLookup,
                    Outcome::Error,
                    ctx,
                    subject,
                    json!({"error": e.to_string()}),
                );
                (Err(from_identity_error(&e)), ev)
            }
            Ok(p) => {
                let found = p.is_some();
                let p = p.as_ref();
                let mut out = Map::new();
                out.insert("found".into(), json!(found));
                out.insert("name".into(), json!(p.and_then(|p| p.name.clone())));
                out.insert("greeting".into(), json!(p.and_then(|p| p.greeting.clone())));
                out.insert(
                    "hasPhone".into(),
                    json!(p.is_some_and(|p| p.phone.is_some())),
                );
                out.insert(
                    "hasEmail".into(),
                    json!(p.is_some_and(|p| p.email.is_some())),
                );
                out.insert(
                    "phoneMasked".into(),
                    json!(p.and_then(|p| p.phone.as_deref()).map(mask_phone)),
                );
                out.insert(
                    "emailMasked".into(),
                    json!(p.and_then(|p| p.email.as_deref()).map(mask_email)),
                );
                let outcome = if found {
                    Outcome::Found
                } else {
                    Outcome::NotFound
                };
                (
                    Ok(out),
                    self.event(EventName::IdentityLookup, outcome, ctx, subject, json!({})),
                )
            }
        }
    }

    /// The caller hung up (or the call expired) while being asked for a secret after a
    /// failed attempt: that counts as one more failure of `account`, so hanging up and
    /// calling again never buys a fresh guess. Writes the counters and an audit record.
    pub async fn abandoned(&self, account: &str, ctx: &CallContext) -> Result<(), StoreError> {
        let key = self.counter_key(account);
        let now = self.clock.now();
        let (counters, _) = self.store.record_failure(&key, &self.policy, now).await?;
        let ani = Ani::parse(&ctx.ani);
        self.store.record_ani_failure(ani.key(), &key, now).await?;
        let event = self.event(
            EventName::IdentityVerify,
            Outcome::Failure,
            ctx,
            &key,
            json!({"reason": "abandoned", "callFailures": ctx.failures + 1, "failedAttempts": counters.failed_attempts}),
        );
        self.store.append_audit(&event, now).await?;
        Ok(())
    }

    async fn verify(
        &self,
        call: &ActionCall,
        ctx: &mut CallContext,
    ) -> (ActionResult, Option<AuditEvent>) {
        let started = self.clock.now();
        let (result, event) = self.verify_inner(call, ctx).await;
        // Pad to the minimum duration whatever happened, so timing tells nothing.
        let elapsed = u64::try_from(self.clock.now().0.saturating_sub(started.0)).unwrap_or(0);
        let min = u64::try_from(self.min_verify_duration.as_millis()).unwrap_or(u64::MAX);
        if elapsed < min {
            self.sleeper
                .sleep(Duration::from_millis(min - elapsed))
                .await;
        }
        let result = result.map(|(verified, greeting)| {
            if !verified {
                ctx.failures = ctx.failures.saturating_add(1);
            }
            let mut out = Map::new();
            out.insert("verified".into(), json!(verified));
            out.insert("greeting".into(), json!(greeting));
            out.insert(
                "attemptsLeft".into(),
                json!(self.policy.per_call_failures.saturating_sub(ctx.failures)),
            );
            out
        });
        (result, event)
    }

    /// `Ok((verified, greeting))` or a failure to perform, and the audit event (`None`
    /// when it is already written: a success writes it in the commit that settles the
    /// counters).
    ///
    /// The failure is counted before the directory is asked, in one atomic store update,
    /// and refunded (the counters reset) on success: concurrent guesses cannot all slip in
    /// before the first is counted. An account that was already locked is still verified
    /// (and the result ignored), so that it costs the same time and capacity as any other.
    /// If the count cannot be written, the attempt is refused (fail closed). An attempt the
    /// directory never judged because it was busy is not charged: both counts are taken
    /// back.
    async fn verify_inner(
        &self,
        call: &ActionCall,
        ctx: &CallContext,
    ) -> (
        Result<(bool, Option<String>), ActionFailure>,
        Option<AuditEvent>,
    ) {
        let (account, key, subject) = self.account_of(call);
        let secret = call
            .text("secret")
            .unwrap_or_else(|| Secret::new(String::new()));
        let ani = Ani::parse(&ctx.ani);
        let now = self.clock.now();

        let audit = |outcome: Outcome, detail: Value| {
            self.event(EventName::IdentityVerify, outcome, ctx, &subject, detail)
        };
        let unavailable = |stage: &str| {
            (
                Err(failure(
                    "unavailable",
                    "the identity service is unavailable",
                )),
                Some(audit(
                    Outcome::Error,
                    json!({"reason": "error", "stage": stage}),
                )),
            )
        };

        // Limits of this call and of this caller number come first, and the attempt is
        // counted against the caller number before the directory is asked (refunded on
        // success), so concurrent attempts from one number cannot all slip in.
        let attempt = AniAttempt {
            ani: &ani,
            account: &key,
            policy: &self.policy,
            call_failures: ctx.failures,
            since: now.plus_millis(-HOUR_MS),
            now,
        };
        let claim = match self.store.claim_ani_attempt(&attempt).await {
            Ok(AniClaim::Counted { claim, .. }) => claim,
            Ok(AniClaim::Refused(activity)) => {
                let detail = json!({"reason": RejectReason::RateLimited.as_str(), "callFailures": ctx.failures, "aniFailures": activity.failures, "aniAccounts": activity.distinct_accounts});
                return (Ok((false, None)), Some(audit(Outcome::Failure, detail)));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot count a caller-number attempt; refusing it");
                return unavailable("lockout");
            }
        };

        // Count first.
        let (counters, effect) = match self.store.record_failure(&key, &self.policy, now).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a failure; refusing the attempt");
                return unavailable("lockout");
            }
        };
        let was_locked = effect == FailureEffect::Counted && counters.is_locked(now);
        let lock = match effect {
            FailureEffect::Counted => Value::Null,
            FailureEffect::LockedUntil(t) => json!(t.to_rfc3339()),
            FailureEffect::LockedPermanently => json!("permanent"),
        };
        // The directory may wait for capacity while the answer can still come within the
        // padding that is left.
        let elapsed = u64::try_from(self.clock.now().0.saturating_sub(now.0)).unwrap_or(0);
        let padding = self
            .min_verify_duration
            .saturating_sub(Duration::from_millis(elapsed));
        let verification = match (&account, secret.expose().is_empty()) {
            (None, _) => Ok((Verification::Rejected(RejectReason::UnknownAccount), None)),
            (Some(_), true) => Ok((Verification::Rejected(RejectReason::EmptySecret), None)),
            (Some(a), false) => self.provider.verify_with_profile(a, &secret, padding).await,
        };
        // A directory error answers the same for every account, locked ones included, so
        // an outage (or a saturated hashing pool) cannot tell which accounts are locked.
        let (verification, profile) = match verification {
            Err(IdentityError::Busy) => {
                // Never judged: not charged to the account or the caller number.
                let refunded = match self.store.refund_unjudged(&key, effect, claim, now).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot take back an attempt the directory was too busy to judge");
                        false
                    }
                };
                let e = IdentityError::Busy;
                let detail = json!({"reason": "error", "stage": "verify", "error": e.to_string(), "failedAttempts": counters.failed_attempts, "wasLocked": was_locked, "refunded": refunded});
                return (
                    Err(from_identity_error(&e)),
                    Some(audit(Outcome::Error, detail)),
                );
            }
            Err(e) => {
                let detail = json!({"reason": "error", "stage": "verify", "error": e.to_string(), "failedAttempts": counters.failed_attempts, "wasLocked": was_locked});
                return (
                    Err(from_identity_error(&e)),
                    Some(audit(Outcome::Error, detail)),
                );
            }
            Ok(_) if was_locked => (Verification::Rejected(RejectReason::Locked), None),
            Ok(v) => v,
        };
        match (verification, account) {
            (Verification::Verified, Some(_)) => {
                let event = audit(Outcome::Success, json!({}));
                // The counters reset, the caller number's attempt refunded and the audit
                // record, in one commit.
                if let Err(e) = self.store.settle_verified(&key, claim, &event, now).await {
                    tracing::error!(error = %e, "cannot settle the counters after a success");
                    return unavailable("lockout");
                }
                let greeting = profile.and_then(|p| {
                    p.greeting.or(p
                        .name
                        .as_deref()
                        .and_then(ivrauth_core::identity::default_greeting))
                });
                (Ok((true, greeting)), None)
            }
            (v, _) => {
                let reason = match v {
                    Verification::Rejected(r) => r,
                    Verification::Verified => RejectReason::UnknownAccount,
                };
                if reason == RejectReason::UnknownAccount {
                    if let Err(e) = self.store.mark_unknown_account(&key).await {
                        tracing::error!(error = %e, "cannot mark an unknown account's counters");
                    }
                }
                let detail = json!({
                    "reason": reason.as_str(),
                    "callFailures": ctx.failures + 1,
                    "failedAttempts": counters.failed_attempts,
                    "lock": lock,
                });
                (Ok((false, None)), Some(audit(Outcome::Failure, detail)))
            }
        }
    }
}
