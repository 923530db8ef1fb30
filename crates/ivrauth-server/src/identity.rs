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

use serde_json::{json, Map, Value};

use ivrauth_connect::Sleeper;
use ivrauth_core::audit::AuditEvent;
use ivrauth_core::engine::{ActionCall, ActionFailure};
use ivrauth_core::identity::{
    AccountNumber, Ani, FailureEffect, IdentityError, IdentityProvider, LockoutPolicy, Profile,
    RejectReason, Verification,
};
use ivrauth_core::ports::LockoutStore;
use ivrauth_core::time::Clock;
use ivrauth_core::Secret;

/// What the runtime knows about the call an action runs in.
pub struct CallContext<'a> {
    /// The call id (the trace id of a simulation).
    pub call_id: &'a str,
    /// The caller's number as the platform gave it (`contact.ani`).
    pub ani: &'a str,
    /// Failed secrets so far in this call; updated by `verify`.
    pub failures: &'a mut u32,
}

/// The configured directory plus the protections around it.
pub struct IdentityService {
    pub provider: Arc<dyn IdentityProvider>,
    pub lockout: Arc<dyn LockoutStore>,
    pub policy: LockoutPolicy,
    /// Every verification takes at least this long, so that a slow directory round trip (or
    /// a quick refusal of a locked account) does not stand out.
    pub min_verify_duration: Duration,
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
}

/// An action's outputs (or failure) and the audit events it produced.
pub type ActionResult = (Result<Map<String, Value>, ActionFailure>, Vec<AuditEvent>);

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
    pub async fn perform(&self, call: &ActionCall, ctx: CallContext<'_>) -> ActionResult {
        match call.action {
            "identity.lookup" => self.lookup(call, ctx).await,
            "identity.verify" => self.verify(call, ctx).await,
            other => (
                Err(failure(
                    "unsupported",
                    &format!("action `{other}` is not available"),
                )),
                Vec::new(),
            ),
        }
    }

    fn event(
        &self,
        name: &str,
        outcome: &str,
        ctx: &CallContext<'_>,
        account: &str,
        detail: Value,
    ) -> AuditEvent {
        let mut detail = detail;
        if let Value::Object(o) = &mut detail {
            o.insert("provider".into(), json!(self.provider.kind()));
            o.insert("ani".into(), json!(ctx.ani));
            o.insert("callId".into(), json!(ctx.call_id));
        }
        AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            event: name.to_owned(),
            outcome: outcome.to_owned(),
            actor: format!("caller:{}", Ani::parse(ctx.ani).key()),
            subject: account.to_owned(),
            trace_id: Some(ctx.call_id.to_owned()),
            detail,
        }
    }

    async fn lookup(&self, call: &ActionCall, ctx: CallContext<'_>) -> ActionResult {
        let raw = call
            .text("account")
            .map(|s| s.expose().clone())
            .unwrap_or_default();
        let profile: Result<Option<Profile>, IdentityError> = match AccountNumber::parse(&raw) {
            Ok(account) => self.provider.lookup(&account).await,
            Err(_) => Ok(None),
        };
        let subject = if AccountNumber::parse(&raw).is_ok() {
            raw.as_str()
        } else {
            "(invalid)"
        };
        match profile {
            Err(e) => {
                let ev = self.event(
                    "identity.lookup",
                    "error",
                    &ctx,
                    subject,
                    json!({"error": e.to_string()}),
                );
                (Err(from_identity_error(&e)), vec![ev])
            }
            Ok(p) => {
                let found = p.is_some();
                let mut out = Map::new();
                out.insert("found".into(), json!(found));
                let p = p.as_ref();
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
                let ev = self.event(
                    "identity.lookup",
                    if found { "found" } else { "not_found" },
                    &ctx,
                    subject,
                    json!({}),
                );
                (Ok(out), vec![ev])
            }
        }
    }

    async fn verify(&self, call: &ActionCall, ctx: CallContext<'_>) -> ActionResult {
        let started = self.clock.now();
        let (result, event) = self.verify_inner(call, &ctx).await;
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
                *ctx.failures = ctx.failures.saturating_add(1);
            }
            let mut out = Map::new();
            out.insert("verified".into(), json!(verified));
            out.insert("greeting".into(), json!(greeting));
            out.insert(
                "attemptsLeft".into(),
                json!(self.policy.per_call_failures.saturating_sub(*ctx.failures)),
            );
            out
        });
        (result, vec![event])
    }

    /// `Ok((verified, greeting))` or a failure to perform, and the audit event.
    async fn verify_inner(
        &self,
        call: &ActionCall,
        ctx: &CallContext<'_>,
    ) -> (Result<(bool, Option<String>), ActionFailure>, AuditEvent) {
        let raw = call
            .text("account")
            .map(|s| s.expose().clone())
            .unwrap_or_default();
        let account = AccountNumber::parse(&raw).ok();
        let key = account
            .as_ref()
            .map_or("(invalid)", |a| a.as_str())
            .to_owned();
        let secret = call
            .text("secret")
            .unwrap_or_else(|| Secret::new(String::new()));
        let ani = Ani::parse(ctx.ani);
        let now = self.clock.now();

        let reject = |reason: RejectReason, extra: Value| {
            let mut detail = json!({"reason": reason.as_str()});
            if let (Value::Object(d), Value::Object(x)) = (&mut detail, extra) {
                d.extend(x);
            }
            (
                Ok((false, None)),
                self.event("identity.verify", "failure", ctx, &key, detail),
            )
        };
        let broken = |e: &IdentityError, stage: &str| {
            let detail = json!({"reason": "error", "stage": stage, "error": e.to_string()});
            (
                Err(from_identity_error(e)),
                self.event("identity.verify", "error", ctx, &key, detail),
            )
        };
        let store_broken = |e: ivrauth_core::ports::StoreError| {
            tracing::error!(error = %e, "lockout store failed");
            let detail = json!({"reason": "error", "stage": "lockout"});
            (
                Err(failure(
                    "unavailable",
                    "the identity service is unavailable",
                )),
                self.event("identity.verify", "error", ctx, &key, detail),
            )
        };

        // Limits of this call and of this caller number come first.
        let activity = match self
            .lockout
            .ani_activity(ani.key(), &key, now.plus_millis(-HOUR_MS))
            .await
        {
            Ok(a) => a,
            Err(e) => return store_broken(e),
        };
        if let Some(reason) = ivrauth_core::identity::refuse_before_verify(
            &self.policy,
            *ctx.failures,
            &ani,
            activity,
        ) {
            return reject(
                reason,
                json!({"callFailures": *ctx.failures, "aniFailures": activity.failures, "aniAccounts": activity.distinct_accounts}),
            );
        }
        let Some(account) = account else {
            return self
                .count_failure(&key, &ani, RejectReason::UnknownAccount, ctx)
                .await;
        };
        if secret.expose().is_empty() {
            return self
                .count_failure(&key, &ani, RejectReason::EmptySecret, ctx)
                .await;
        }
        let counters = match self.lockout.counters(&key).await {
            Ok(c) => c,
            Err(e) => return store_broken(e),
        };
        if counters.is_locked(now) {
            return self
                .count_failure(&key, &ani, RejectReason::Locked, ctx)
                .await;
        }
        match self.provider.verify(&account, &secret).await {
            Err(e) => broken(&e, "verify"),
            Ok(Verification::Rejected(reason)) => self.count_failure(&key, &ani, reason, ctx).await,
            Ok(Verification::Verified) => {
                // Clean counters need no write (most verifications are of clean accounts).
                if counters != Default::default() {
                    if let Err(e) = self.lockout.record_success(&key).await {
                        return store_broken(e);
                    }
                }
                let greeting = match self.provider.lookup(&account).await {
                    Ok(Some(p)) => p.greeting.or(p
                        .name
                        .as_deref()
                        .and_then(ivrauth_core::identity::default_greeting)),
                    _ => None,
                };
                (
                    Ok((true, greeting)),
                    self.event("identity.verify", "success", ctx, &key, json!({})),
                )
            }
        }
    }

    async fn count_failure(
        &self,
        key: &str,
        ani: &Ani,
        reason: RejectReason,
        ctx: &CallContext<'_>,
    ) -> (Result<(bool, Option<String>), ActionFailure>, AuditEvent) {
        let now = self.clock.now();
        let effect = match self.lockout.record_failure(key, &self.policy, now).await {
            Ok((counters, effect)) => json!({
                "failedAttempts": counters.failed_attempts,
                "lock": match effect {
                    FailureEffect::Counted => Value::Null,
                    FailureEffect::LockedUntil(t) => json!(t.to_rfc3339()),
                    FailureEffect::LockedPermanently => json!("permanent"),
                },
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot record a failure");
                json!({"failedAttempts": Value::Null})
            }
        };
        if let Err(e) = self.lockout.record_ani_failure(ani.key(), key, now).await {
            tracing::error!(error = %e, "cannot record a caller-number failure");
        }
        let mut detail = json!({"reason": reason.as_str(), "callFailures": *ctx.failures + 1});
        if let (Value::Object(d), Value::Object(x)) = (&mut detail, effect) {
            d.extend(x);
        }
        (
            Ok((false, None)),
            self.event("identity.verify", "failure", ctx, key, detail),
        )
    }
}
