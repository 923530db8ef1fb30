//! Refusals counted in memory and written to the audit as one record per key and interval.
//!
//! A refused token request (or a refused platform request) is cheap to send and costs the
//! server a durable write when each is audited on its own: a flood of them would grow the
//! audit log, and every write waits for the disk. Here each refusal only bumps a counter
//! under its key (event, actor, subject and the refusal's detail); `flush` writes one record
//! per key with `count`, `firstAt` and `lastAt`, in the order the keys were first seen.
//! `serve` flushes every [`FLUSH_INTERVAL`] and once more at shutdown; a crash loses at
//! most one interval's counts (the refused requests themselves changed nothing).
//!
//! Not here: deciding what is refused, or the rate limits that answer 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use ivrauth_core::audit::{AuditEvent, EventName, Outcome};
use ivrauth_core::ports::{AuditStore, StoreError};
use ivrauth_core::time::UnixMillis;

/// How often `serve` writes the counted refusals.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Distinct keys kept between flushes; beyond it, refusals count under one overflow key.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    event: EventName,
    actor: String,
    subject: String,
    /// The detail as JSON text (a refusal's detail is small and never holds a secret).
    detail: String,
}

#[derive(Debug)]
struct Tally {
    detail: Value,
    count: u64,
    first: UnixMillis,
    last: UnixMillis,
}

#[derive(Debug, Default)]
struct Pending {
    order: Vec<Key>,
    tallies: HashMap<Key, Tally>,
}

/// Refusals waiting to be written.
#[derive(Debug, Default)]
pub struct RefusalLog {
    pending: Mutex<Pending>,
}

impl RefusalLog {
    /// Count one refusal. `detail` must hold no secret (it is written as is).
    pub fn note(
        &self,
        event: EventName,
        actor: &str,
        subject: &str,
        detail: Value,
        now: UnixMillis,
    ) {
        let mut pending = match self.pending.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut key = Key {
            event,
            actor: actor.to_owned(),
            subject: subject.to_owned(),
            detail: detail.to_string(),
        };
        let mut detail = detail;
        if !pending.tallies.contains_key(&key) && pending.tallies.len() >= MAX_KEYS {
            key = Key {
                event,
                actor: "(many)".to_owned(),
                subject: "(many)".to_owned(),
                detail: "{\"overflow\":true}".to_owned(),
            };
            detail = json!({"overflow": true});
        }
        if let Some(t) = pending.tallies.get_mut(&key) {
            t.count += 1;
            t.last = now;
            return;
        }
        pending.order.push(key.clone());
        pending.tallies.insert(
            key,
            Tally {
                detail,
                count: 1,
                first: now,
                last: now,
            },
        );
    }

    /// Write one audit record per key counted since the last flush; returns how many. On a
    /// store error the unwritten tallies are kept for the next flush.
    pub async fn flush(
        &self,
        store: &dyn AuditStore,
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let taken = {
            let mut pending = match self.pending.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut *pending)
        };
        let Pending { order, mut tallies } = taken;
        let mut written = 0;
        for (i, key) in order.iter().enumerate() {
            let Some(tally) = tallies.remove(key) else {
                continue;
            };
            let mut detail = tally.detail.clone();
            if let Value::Object(o) = &mut detail {
                o.insert("count".into(), json!(tally.count));
                o.insert("firstAt".into(), json!(tally.first.to_rfc3339()));
                o.insert("lastAt".into(), json!(tally.last.to_rfc3339()));
            }
            let event = AuditEvent::new(
                uuid::Uuid::new_v4().to_string(),
                key.event,
                Outcome::Failure,
                key.actor.clone(),
                key.subject.clone(),
                None,
                detail,
            );
            if let Err(e) = store.append_audit(&event, now).await {
                // Put back what was not written (this one included), counts intact.
                tallies.insert(key.clone(), tally);
                self.restore(&order[i..], tallies);
                return Err(e);
            }
            written += 1;
        }
        Ok(written)
    }

    fn restore(&self, keys: &[Key], mut tallies: HashMap<Key, Tally>) {
        let mut pending = match self.pending.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for key in keys {
            let Some(old) = tallies.remove(key) else {
                continue;
            };
            match pending.tallies.get_mut(key) {
                Some(newer) => {
                    newer.count += old.count;
                    newer.first = old.first;
                }
                None => {
                    pending.order.push(key.clone());
                    pending.tallies.insert(key.clone(), old);
                }
            }
        }
    }

    /// Keys counted and not yet written.
    pub fn pending(&self) -> usize {
        match self.pending.lock() {
            Ok(g) => g.tallies.len(),
            Err(poisoned) => poisoned.into_inner().tallies.len(),
        }
    }
}
