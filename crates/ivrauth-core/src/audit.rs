//! Audit events and the hash chain that makes the audit log tamper-evident.
//!
//! Each record carries the SHA-256 of its predecessor's hash and its own fields, so editing,
//! deleting or reordering any record breaks every hash after it. The chain is computed here
//! (pure) and used by the store when appending and by `ivrauth audit verify` when walking.
//! A record never holds a secret: `detail` is built from masked values only.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::time::UnixMillis;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Declares [`EventName`]: each event's dotted name and the detail fields it may carry.
macro_rules! event_names {
    ($($(#[$doc:meta])* $variant:ident = $name:literal [$($field:literal),* $(,)?]),+ $(,)?) => {
        /// Every audit event ivrauth writes. The name is what the record holds; the detail
        /// fields are the only keys its `detail` object may have (checked when an event is
        /// built in debug builds, so every test that writes an event checks it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventName {
            $($(#[$doc])* $variant,)+
        }

        impl EventName {
            /// Every event, in the order declared.
            pub const ALL: &'static [EventName] = &[$(EventName::$variant),+];

            /// The dotted name records carry (`token.issued`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventName::$variant => $name,)+
                }
            }

            /// The keys this event's `detail` may have.
            pub const fn detail_fields(self) -> &'static [&'static str] {
                match self {
                    $(EventName::$variant => &[$($field),*],)+
                }
            }
        }
    };
}

event_names! {
    /// An access token was issued (client credentials).
    TokenIssued = "token.issued" ["scopes", "expires_in"],
    /// Token requests were refused (aggregated: one record per key and minute).
    TokenRefused = "token.refused" ["reason", "error", "auth_method", "count", "firstAt", "lastAt", "overflow"],
    /// A flow document was deployed for the first time.
    FlowCreated = "flow.created" ["name", "version"],
    /// A new version of a flow was deployed.
    FlowUpdated = "flow.updated" ["name", "version"],
    /// A flow was deleted.
    FlowDeleted = "flow.deleted" [],
    /// A simulation's `log` node.
    FlowLog = "flow.log" ["node", "level", "message"],
    /// A simulation ran to its end (or to a limit).
    SimulationRun = "simulation.run" ["endNode", "statusCode", "error", "steps", "version", "environment"],
    /// A simulation's input did not match the flow's input schema.
    SimulationRejected = "simulation.rejected" ["reason", "problems", "version"],
    /// A call reached its end (say, transfer, hang-up or an error).
    CallEnded = "call.ended" ["end", "error", "verified", "failures", "turns"],
    /// The platform said the call is over.
    CallClosed = "call.closed" ["how", "chargedFailure"],
    /// Webhook or decision-API requests were refused (aggregated like token refusals).
    CallRefused = "call.refused" ["reason", "platform", "count", "firstAt", "lastAt", "overflow"],
    /// `identity.lookup` was performed.
    IdentityLookup = "identity.lookup" ["provider", "ani", "callId", "reason", "error"],
    /// `identity.verify` was performed (or a caller hung up at a retried secret prompt).
    IdentityVerify = "identity.verify" [
        "provider", "ani", "callId", "reason", "stage", "error", "callFailures",
        "failedAttempts", "aniFailures", "aniAccounts", "lock", "wasLocked", "refunded",
    ],
    /// `serve --demo` or `call --demo` installed the demo flows and accounts.
    DemoInstalled = "demo.installed" ["flows", "accountsCreated"],
    /// `client create`.
    ClientCreated = "client.created" ["name", "scopes"],
    /// `client revoke`.
    ClientRevoked = "client.revoked" [],
    /// `client rotate-secret`.
    ClientSecretRotated = "client.secret_rotated" ["previous_valid_until", "forced"],
    /// `account add`.
    AccountCreated = "account.created" ["pin_set"],
    /// `account set-pin`.
    AccountPinSet = "account.pin_set" [],
    /// `account unlock`.
    AccountUnlocked = "account.unlocked" ["counters_reset"],
    /// `account disable`.
    AccountDisabled = "account.disabled" [],
    /// `account enable`.
    AccountEnabled = "account.enabled" [],
    /// `account import`.
    AccountImported = "account.imported" ["imported", "rejected"],
}

impl EventName {
    /// The event named `name`, if ivrauth writes one by that name.
    pub fn from_name(name: &str) -> Option<EventName> {
        EventName::ALL.iter().copied().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an audited event turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
    /// Something failed on ivrauth's side (a backend, the store).
    Error,
    /// The identity backend could not be reached or was busy.
    Unavailable,
    /// `identity.lookup` found the account.
    Found,
    /// `identity.lookup` did not find the account.
    NotFound,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Error => "error",
            Outcome::Unavailable => "unavailable",
            Outcome::Found => "found",
            Outcome::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, before the store gives it a place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Unique id chosen by the caller (the core draws no randomness).
    pub id: String,
    pub event: EventName,
    pub outcome: Outcome,
    /// Client id or caller.
    pub actor: String,
    /// What the event is about (flow id, client id...).
    pub subject: String,
    pub trace_id: Option<String>,
    /// Non-secret structured detail.
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    // Read back as text: records written by other versions may name events this one
    // does not know.
    pub id: String,
    pub time: UnixMillis,
    pub event: String,
    pub outcome: String,
    pub actor: String,
    pub subject: String,
    pub trace_id: Option<String>,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields a record's hash covers, borrowed from an event about to be appended or from a
/// record read back.
struct Hashed<'a> {
    id: &'a str,
    event: &'a str,
    outcome: &'a str,
    actor: &'a str,
    subject: &'a str,
    trace_id: Option<&'a str>,
    detail: &'a Value,
}

impl<'a> From<&'a AuditEvent> for Hashed<'a> {
    fn from(e: &'a AuditEvent) -> Self {
        Hashed {
            id: &e.id,
            event: e.event.as_str(),
            outcome: e.outcome.as_str(),
            actor: &e.actor,
            subject: &e.subject,
            trace_id: e.trace_id.as_deref(),
            detail: &e.detail,
        }
    }
}

impl<'a> From<&'a AuditRecord> for Hashed<'a> {
    fn from(r: &'a AuditRecord) -> Self {
        Hashed {
            id: &r.id,
            event: &r.event,
            outcome: &r.outcome,
            actor: &r.actor,
            subject: &r.subject,
            trace_id: r.trace_id.as_deref(),
            detail: &r.detail,
        }
    }
}

/// The hash of a record given its fields and its predecessor's hash. Fields are encoded as a
/// JSON array, which is unambiguous (no field can run into the next).
pub fn record_hash(seq: i64, event: &AuditEvent, time: UnixMillis, prev_hash: &str) -> String {
    hash_of(seq, &Hashed::from(event), time, prev_hash)
}

fn hash_of(seq: i64, f: &Hashed<'_>, time: UnixMillis, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        seq, f.id, time.0, f.event, f.outcome, f.actor, f.subject, f.trace_id, f.detail, prev_hash,
    ]);
    let mut h = Sha256::new();
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

impl AuditEvent {
    /// An event with the id the caller drew (the core draws no randomness). In debug builds,
    /// panics when `detail` has a key `event` does not declare, so that every test writing
    /// an event holds it to [`EventName::detail_fields`].
    pub fn new(
        id: String,
        event: EventName,
        outcome: Outcome,
        actor: impl Into<String>,
        subject: impl Into<String>,
        trace_id: Option<String>,
        detail: Value,
    ) -> AuditEvent {
        #[allow(clippy::panic)]
        if cfg!(debug_assertions) {
            if let Some(field) = undeclared_field(event, &detail) {
                panic!("audit event {event} carries the undeclared detail field {field:?}");
            }
        }
        AuditEvent {
            id,
            event,
            outcome,
            actor: actor.into(),
            subject: subject.into(),
            trace_id,
            detail,
        }
    }
}

/// The first key of `detail` that `event` does not declare, if any (`detail` must be an
/// object, or null for none).
pub fn undeclared_field(event: EventName, detail: &Value) -> Option<String> {
    match detail {
        Value::Null => None,
        Value::Object(o) => o
            .keys()
            .find(|k| !event.detail_fields().contains(&k.as_str()))
            .cloned(),
        _ => Some("(detail is not an object)".to_owned()),
    }
}

impl AuditRecord {
    /// Build the record that follows `prev` (None for the first).
    pub fn next(prev: Option<&AuditRecord>, event: &AuditEvent, time: UnixMillis) -> AuditRecord {
        let (seq, prev_hash) = match prev {
            Some(p) => (p.seq + 1, p.hash.clone()),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = record_hash(seq, event, time, &prev_hash);
        AuditRecord {
            seq,
            id: event.id.clone(),
            time,
            event: event.event.as_str().to_owned(),
            outcome: event.outcome.as_str().to_owned(),
            actor: event.actor.clone(),
            subject: event.subject.clone(),
            trace_id: event.trace_id.clone(),
            detail: event.detail.clone(),
            prev_hash,
            hash,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("record {seq} (id {id}): its hash does not match its contents")]
    HashMismatch { seq: i64, id: String },
    #[error("record {seq} (id {id}): it does not follow the record before it (a record was deleted, inserted or reordered)")]
    BrokenLink { seq: i64, id: String },
}

/// Walk the chain; `Ok(count)` when intact, otherwise the first broken record.
pub fn verify_chain(records: &[AuditRecord]) -> Result<usize, ChainError> {
    let mut prev: Option<&AuditRecord> = None;
    for r in records {
        let (want_seq, want_prev) = match prev {
            Some(p) => (p.seq + 1, p.hash.as_str()),
            None => (1, GENESIS_HASH),
        };
        if r.seq != want_seq || r.prev_hash != want_prev {
            return Err(ChainError::BrokenLink {
                seq: r.seq,
                id: r.id.clone(),
            });
        }
        if hash_of(r.seq, &Hashed::from(r), r.time, &r.prev_hash) != r.hash {
            return Err(ChainError::HashMismatch {
                seq: r.seq,
                id: r.id.clone(),
            });
        }
        prev = Some(r);
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u32) -> AuditEvent {
        AuditEvent {
            id: format!("id-{i}"),
            event: EventName::FlowCreated,
            outcome: Outcome::Success,
            actor: "client-a".into(),
            subject: format!("flow-{i}"),
            trace_id: None,
            detail: serde_json::json!({"n": i}),
        }
    }

    fn chain(n: u32) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let r = AuditRecord::next(out.last(), &ev(i), UnixMillis(1_000 + i64::from(i)));
            out.push(r);
        }
        out
    }

    #[test]
    fn event_names_are_distinct_dotted_and_found_by_name() {
        let mut seen = std::collections::HashSet::new();
        for e in EventName::ALL {
            assert!(seen.insert(e.as_str()), "{e} declared twice");
            assert!(e.as_str().contains('.'), "{e} is not dotted");
            assert_eq!(EventName::from_name(e.as_str()), Some(*e));
        }
        assert_eq!(EventName::from_name("token.nope"), None);
    }

    #[test]
    fn undeclared_detail_fields_are_found() {
        let ok = serde_json::json!({"name": "x", "version": 1});
        assert_eq!(undeclared_field(EventName::FlowCreated, &ok), None);
        let bad = serde_json::json!({"name": "x", "pin": "1234"});
        assert_eq!(
            undeclared_field(EventName::FlowCreated, &bad).as_deref(),
            Some("pin")
        );
        assert!(undeclared_field(EventName::FlowDeleted, &serde_json::json!([1])).is_some());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "undeclared detail field")]
    fn building_an_event_with_an_undeclared_field_panics_in_debug_builds() {
        AuditEvent::new(
            "id".into(),
            EventName::ClientRevoked,
            Outcome::Success,
            "cli",
            "cli_x",
            None,
            serde_json::json!({"secret": "s"}),
        );
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
        assert_eq!(verify_chain(&[]), Ok(0));
    }

    #[test]
    fn edited_record_is_named() {
        let mut c = chain(5);
        c[2].detail = serde_json::json!({"n": 99});
        assert_eq!(
            verify_chain(&c),
            Err(ChainError::HashMismatch {
                seq: 3,
                id: "id-2".into()
            })
        );
    }

    #[test]
    fn deleted_record_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify_chain(&c),
            Err(ChainError::BrokenLink {
                seq: 3,
                id: "id-2".into()
            })
        );
    }
}
