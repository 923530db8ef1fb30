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

/// What happened, before the store gives it a place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Unique id chosen by the caller (the core draws no randomness).
    pub id: String,
    /// Dotted event name, such as `token.issued` or `flow.created`.
    pub event: String,
    /// `success`, `failure`, `refused`...
    pub outcome: String,
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

/// The hash of a record given its fields and its predecessor's hash. Fields are encoded as a
/// JSON array, which is unambiguous (no field can run into the next).
pub fn record_hash(seq: i64, event: &AuditEvent, time: UnixMillis, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        seq,
        event.id,
        time.0,
        event.event,
        event.outcome,
        event.actor,
        event.subject,
        event.trace_id,
        event.detail,
        prev_hash,
    ]);
    let mut h = Sha256::new();
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
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
            event: event.event.clone(),
            outcome: event.outcome.clone(),
            actor: event.actor.clone(),
            subject: event.subject.clone(),
            trace_id: event.trace_id.clone(),
            detail: event.detail.clone(),
            prev_hash,
            hash,
        }
    }

    fn as_event(&self) -> AuditEvent {
        AuditEvent {
            id: self.id.clone(),
            event: self.event.clone(),
            outcome: self.outcome.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            trace_id: self.trace_id.clone(),
            detail: self.detail.clone(),
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
        if record_hash(r.seq, &r.as_event(), r.time, &r.prev_hash) != r.hash {
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
            event: "flow.created".into(),
            outcome: "success".into(),
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
