//! Backend-independent conformance suite for `ivrauth_core::ports::Store`.
//!
//! Every function takes `&dyn Store` (plus, where raw access is needed, a [`Tamper`]), so a
//! future PostgreSQL store runs the same suite unchanged: `#[path]`-include this module and
//! call each function with a fresh, empty store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use ivrauth_core::audit::{verify_chain, AuditEvent, ChainError, GENESIS_HASH};
use ivrauth_core::identity::{
    AccountCounters, AccountNumber, AniActivity, FailureEffect, LockoutPolicy,
};
use ivrauth_core::ports::{
    AccountRecord, CallRecord, ClientRecord, RunRecord, Store, StoreError, TokenRecord, PIN_HISTORY,
};
use ivrauth_core::time::UnixMillis;
use serde_json::json;

/// Raw access to the backend, as an attacker with write access to the database would have.
#[async_trait]
pub trait Tamper: Sync {
    /// Overwrite the stored `detail` of the audit record `seq` with `detail_json`.
    async fn set_audit_detail(&self, seq: i64, detail_json: &str);
    /// Delete the audit record `seq`.
    async fn delete_audit(&self, seq: i64);
}

const T0: UnixMillis = UnixMillis(1_700_000_000_000);

fn doc(n: u32) -> String {
    json!({"start": "s", "nodes": {"s": {"type": "end", "n": n}}}).to_string()
}

pub fn event(id: &str, n: u64) -> AuditEvent {
    AuditEvent {
        id: id.to_owned(),
        event: ivrauth_core::audit::EventName::FlowCreated,
        outcome: ivrauth_core::audit::Outcome::Success,
        actor: "client-a".into(),
        subject: format!("flow-{n}"),
        trace_id: (n % 2 == 0).then(|| format!("trace-{n}")),
        detail: json!({"n": n, "masked": "****1234", "nested": {"z": 1, "a": [true, null]}}),
    }
}

fn client(id: &str, scopes: &[&str]) -> ClientRecord {
    ClientRecord {
        id: id.to_owned(),
        name: format!("client {id}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        secret_hash: format!("{id}-hash-1"),
        previous_secret_hash: None,
        previous_valid_until: None,
        created_at: T0,
        revoked_at: None,
    }
}

fn token(hash: &str, client_id: &str, expires_at: UnixMillis) -> TokenRecord {
    TokenRecord {
        token_hash: hash.to_owned(),
        client_id: client_id.to_owned(),
        scopes: vec!["flows:read".into(), "flows:write".into()],
        issued_at: T0,
        expires_at,
    }
}

/// Create, update (versions kept), get latest and old versions, list, delete.
pub async fn flows_lifecycle(store: &dyn Store) {
    assert!(store.list_flows().await.unwrap().is_empty());
    assert_eq!(store.get_flow("f1", None).await.unwrap(), None);

    let v1 = store
        .create_flow("f1", "First", &doc(1), "alice", T0)
        .await
        .unwrap();
    assert_eq!((v1.id.as_str(), v1.version, v1.deleted), ("f1", 1, false));
    assert_eq!((v1.created_at, v1.updated_at), (T0, T0));
    assert_eq!(v1.created_by, "alice");
    assert_eq!(store.get_flow("f1", None).await.unwrap(), Some(v1.clone()));

    assert!(matches!(
        store.create_flow("f1", "Again", &doc(9), "bob", T0).await,
        Err(StoreError::Conflict)
    ));

    let t1 = T0.plus_secs(60);
    let v2 = store
        .update_flow("f1", "First, renamed", &doc(2), "bob", t1)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.name, "First, renamed");
    assert_eq!(v2.document, doc(2));
    assert_eq!((v2.created_at, v2.updated_at), (T0, t1));
    assert_eq!(store.get_flow("f1", None).await.unwrap(), Some(v2.clone()));
    assert_eq!(
        store.get_flow("f1", Some(2)).await.unwrap(),
        Some(v2.clone())
    );
    let old = store.get_flow("f1", Some(1)).await.unwrap().unwrap();
    assert_eq!((old.version, old.name.as_str()), (1, "First"));
    assert_eq!(old.document, doc(1));
    assert_eq!(store.get_flow("f1", Some(3)).await.unwrap(), None);
    assert_eq!(store.get_flow("f1", Some(0)).await.unwrap(), None);

    assert!(matches!(
        store.update_flow("nope", "x", &doc(0), "bob", t1).await,
        Err(StoreError::NotFound)
    ));

    store
        .create_flow("f0", "Zero", &doc(0), "carol", t1)
        .await
        .unwrap();
    store
        .create_flow("f2", "Two", &doc(20), "carol", t1)
        .await
        .unwrap();
    let v3 = store
        .update_flow("f2", "Two", &doc(21), "carol", t1.plus_secs(1))
        .await
        .unwrap();
    let listed = store.list_flows().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|f| (f.id.as_str(), f.version)).collect();
    assert_eq!(ids, [("f0", 1), ("f1", 2), ("f2", 2)]);
    assert_eq!(listed[2], v3);

    let t2 = t1.plus_secs(60);
    assert!(store.delete_flow("f1", t2).await.unwrap());
    assert!(
        !store.delete_flow("f1", t2).await.unwrap(),
        "already deleted"
    );
    assert!(!store.delete_flow("nope", t2).await.unwrap(), "absent");
    assert_eq!(store.get_flow("f1", None).await.unwrap(), None);
    assert_eq!(store.get_flow("f1", Some(1)).await.unwrap(), None);
    let ids: Vec<_> = store
        .list_flows()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, ["f0", "f2"]);
    assert!(matches!(
        store.update_flow("f1", "x", &doc(3), "bob", t2).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create_flow("f1", "Reborn", &doc(4), "bob", t2).await,
        Err(StoreError::Conflict)
    ));
}

/// Create, get, list, rotate, revoke (which removes the client's tokens).
pub async fn clients_lifecycle(store: &dyn Store) {
    assert!(store.list_clients().await.unwrap().is_empty());
    assert_eq!(store.get_client("a").await.unwrap(), None);

    let b = client("b", &["flows:read"]);
    let a = client("a", &["flows:read", "flows:write", "audit:read"]);
    store.create_client(&b).await.unwrap();
    store.create_client(&a).await.unwrap();
    let none = client("c", &[]);
    store.create_client(&none).await.unwrap();
    assert!(matches!(
        store.create_client(&a).await,
        Err(StoreError::Conflict)
    ));

    assert_eq!(store.get_client("a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_client("c").await.unwrap(), Some(none.clone()));
    assert_eq!(
        store.list_clients().await.unwrap(),
        vec![a.clone(), b.clone(), none.clone()]
    );

    let until = T0.plus_secs(3600);
    assert!(store
        .rotate_client_secret("a", "a-hash-2", until)
        .await
        .unwrap());
    let rotated = store.get_client("a").await.unwrap().unwrap();
    assert_eq!(rotated.secret_hash, "a-hash-2");
    assert_eq!(rotated.previous_secret_hash.as_deref(), Some("a-hash-1"));
    assert_eq!(rotated.previous_valid_until, Some(until));
    assert!(store
        .rotate_client_secret("a", "a-hash-3", until.plus_secs(1))
        .await
        .unwrap());
    let rotated = store.get_client("a").await.unwrap().unwrap();
    assert_eq!(rotated.secret_hash, "a-hash-3");
    assert_eq!(rotated.previous_secret_hash.as_deref(), Some("a-hash-2"));
    assert!(!store
        .rotate_client_secret("nope", "x", until)
        .await
        .unwrap());

    let scopes = vec!["flows:read".to_owned(), "identity:simulate".to_owned()];
    assert!(store.set_client_scopes("b", &scopes).await.unwrap());
    assert_eq!(store.get_client("b").await.unwrap().unwrap().scopes, scopes);
    assert!(store.set_client_scopes("b", &b.scopes).await.unwrap());
    assert!(!store.set_client_scopes("nope", &scopes).await.unwrap());

    let later = T0.plus_secs(7200);
    store.insert_token(&token("ta1", "a", later)).await.unwrap();
    store.insert_token(&token("ta2", "a", later)).await.unwrap();
    store.insert_token(&token("tb1", "b", later)).await.unwrap();

    let t_revoke = T0.plus_secs(100);
    assert!(store.revoke_client("a", t_revoke).await.unwrap());
    assert!(
        !store.revoke_client("a", t_revoke).await.unwrap(),
        "already revoked"
    );
    assert!(
        !store.set_client_scopes("a", &[]).await.unwrap(),
        "a revoked client's scopes stay"
    );
    assert!(
        !store.revoke_client("nope", t_revoke).await.unwrap(),
        "absent"
    );
    let revoked = store.get_client("a").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t_revoke));
    assert_eq!(store.get_token("ta1").await.unwrap(), None);
    assert_eq!(store.get_token("ta2").await.unwrap(), None);
    assert!(
        store.get_token("tb1").await.unwrap().is_some(),
        "other clients keep tokens"
    );
    assert_eq!(
        store.list_clients().await.unwrap().len(),
        3,
        "revoked clients are listed"
    );

    // A revoked client gets no new tokens and no new secret; its id stays taken.
    assert!(matches!(
        store.insert_token(&token("ta3", "a", later)).await,
        Err(StoreError::NotFound)
    ));
    assert!(!store
        .rotate_client_secret("a", "a-hash-4", until)
        .await
        .unwrap());
    assert!(matches!(
        store.create_client(&a).await,
        Err(StoreError::Conflict)
    ));
}

/// Insert, get, duplicate, unknown client, purge of expired tokens.
pub async fn tokens_lifecycle(store: &dyn Store) {
    store
        .create_client(&client("a", &["flows:read"]))
        .await
        .unwrap();
    assert_eq!(store.get_token("t1").await.unwrap(), None);

    let t1 = token("t1", "a", T0.plus_secs(60));
    let t2 = token("t2", "a", T0.plus_secs(120));
    let t3 = TokenRecord {
        scopes: vec![],
        ..token("t3", "a", T0.plus_secs(180))
    };
    for t in [&t1, &t2, &t3] {
        store.insert_token(t).await.unwrap();
    }
    assert_eq!(store.get_token("t1").await.unwrap(), Some(t1.clone()));
    assert_eq!(store.get_token("t3").await.unwrap(), Some(t3.clone()));
    assert!(matches!(
        store.insert_token(&t1).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        store.insert_token(&token("tx", "ghost", T0)).await,
        Err(StoreError::NotFound)
    ));

    // Nothing has expired before its expiry; `expires_at < now` is strict.
    assert_eq!(store.purge_expired_tokens(T0).await.unwrap(), 0);
    assert_eq!(
        store.purge_expired_tokens(T0.plus_secs(60)).await.unwrap(),
        0
    );
    assert_eq!(
        store.purge_expired_tokens(T0.plus_secs(121)).await.unwrap(),
        2
    );
    assert_eq!(store.get_token("t1").await.unwrap(), None);
    assert_eq!(store.get_token("t2").await.unwrap(), None);
    assert_eq!(store.get_token("t3").await.unwrap(), Some(t3));
    assert_eq!(
        store.purge_expired_tokens(T0.plus_secs(121)).await.unwrap(),
        0
    );
}

/// Start and finish runs (the port has no read-back; errors show the state).
pub async fn runs_lifecycle(store: &dyn Store) {
    let sim = RunRecord {
        id: "r1".into(),
        flow_id: None,
        flow_version: None,
        kind: "simulation".into(),
        started_at: T0,
        finished_at: None,
        outcome: None,
    };
    store.start_run(&sim).await.unwrap();
    assert!(matches!(
        store.start_run(&sim).await,
        Err(StoreError::Conflict)
    ));
    let stored = RunRecord {
        id: "r2".into(),
        flow_id: Some("f1".into()),
        flow_version: Some(3),
        ..sim.clone()
    };
    store.start_run(&stored).await.unwrap();

    let outcome = json!({"endNode": "done", "statusCode": 200});
    store
        .finish_run("r1", &outcome, T0.plus_secs(1))
        .await
        .unwrap();
    assert!(matches!(
        store.finish_run("r1", &outcome, T0.plus_secs(2)).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        store.finish_run("nope", &outcome, T0).await,
        Err(StoreError::NotFound)
    ));
    store
        .finish_run("r2", &outcome, T0.plus_secs(3))
        .await
        .unwrap();
}

/// A finished run and its audit events land together, after the existing chain; a run that
/// cannot be recorded writes none of its events.
pub async fn record_run_is_one_commit(store: &dyn Store) {
    store.append_audit(&event("before", 1), T0).await.unwrap();
    let run = RunRecord {
        id: "whole".into(),
        flow_id: Some("f1".into()),
        flow_version: Some(2),
        kind: "simulation".into(),
        started_at: T0,
        finished_at: Some(T0.plus_secs(1)),
        outcome: Some(json!({"endNode": "done"})),
    };
    let events = [event("log-1", 2), event("log-2", 3), event("run", 4)];
    let written = store
        .record_run(&run, &events, T0.plus_secs(1))
        .await
        .unwrap();
    assert_eq!(
        written.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let all = store.read_audit().await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["before", "log-1", "log-2", "run"]
    );
    assert_eq!(verify_chain(&all), Ok(4));

    // Same run id again: Conflict, and the chain did not grow.
    let again = [event("orphan", 5)];
    assert!(matches!(
        store.record_run(&run, &again, T0.plus_secs(2)).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.read_audit().await.unwrap().len(), 4);
}

/// Appends form a chain that reads back identical and verifies.
pub async fn audit_chain(store: &dyn Store) {
    assert!(store.read_audit().await.unwrap().is_empty());
    let mut appended = Vec::new();
    for n in 0..10u64 {
        let mut ev = event(&format!("ev-{n}"), n);
        if n == 7 {
            // Floats and key order must survive the trip through storage unchanged.
            ev.detail = json!({
                "z": 0.1 + 0.2,
                "a": 1e-7,
                "pi": std::f64::consts::PI,
                "max": f64::MAX,
                "big": u64::MAX,
                "neg": i64::MIN,
            });
        }
        appended.push(
            store
                .append_audit(&ev, T0.plus_millis(n as i64))
                .await
                .unwrap(),
        );
    }
    assert_eq!(appended[0].seq, 1);
    assert_eq!(appended[0].prev_hash, GENESIS_HASH);
    assert_eq!(appended[1].prev_hash, appended[0].hash);
    let read = store.read_audit().await.unwrap();
    assert_eq!(read, appended);
    assert_eq!(verify_chain(&read), Ok(10));

    assert!(matches!(
        store.append_audit(&event("ev-3", 99), T0).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(verify_chain(&store.read_audit().await.unwrap()), Ok(10));
}

async fn append_five(store: &dyn Store) {
    for n in 1..=5u64 {
        store
            .append_audit(&event(&format!("ev-{n}"), n), T0.plus_millis(n as i64))
            .await
            .unwrap();
    }
    assert_eq!(verify_chain(&store.read_audit().await.unwrap()), Ok(5));
}

/// Editing a record's detail is detected and names that record.
pub async fn audit_detects_edit(store: &dyn Store, tamper: &dyn Tamper) {
    append_five(store).await;
    tamper
        .set_audit_detail(3, r#"{"n":3,"masked":"****9999"}"#)
        .await;
    assert_eq!(
        verify_chain(&store.read_audit().await.unwrap()),
        Err(ChainError::HashMismatch {
            seq: 3,
            id: "ev-3".into()
        })
    );
}

/// Deleting a middle record is detected at the record after the gap.
pub async fn audit_detects_delete(store: &dyn Store, tamper: &dyn Tamper) {
    append_five(store).await;
    tamper.delete_audit(3).await;
    assert_eq!(
        verify_chain(&store.read_audit().await.unwrap()),
        Err(ChainError::BrokenLink {
            seq: 4,
            id: "ev-4".into()
        })
    );
}

/// Two handles on the same backing store (like two processes) append concurrently:
/// `per_handle` each; the result is one intact chain.
pub async fn audit_concurrent_appends(
    a: std::sync::Arc<dyn Store>,
    b: std::sync::Arc<dyn Store>,
    per_handle: u64,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (name, store) in [("a", a.clone()), ("b", b.clone())] {
        for n in 0..per_handle {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .append_audit(&event(&format!("{name}-{n}"), n), T0.plus_millis(n as i64))
                    .await
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let total = usize::try_from(2 * per_handle).unwrap();
    for store in [a, b] {
        let records = store.read_audit().await.unwrap();
        assert_eq!(verify_chain(&records), Ok(total));
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (1..=i64::try_from(total).unwrap()).collect::<Vec<_>>()
        );
    }
}

/// Write one of everything, for a persistence check after reopening.
pub async fn write_sample(store: &dyn Store) {
    store
        .create_flow("f1", "First", &doc(1), "alice", T0)
        .await
        .unwrap();
    store
        .update_flow("f1", "First", &doc(2), "alice", T0.plus_secs(1))
        .await
        .unwrap();
    store
        .create_client(&client("a", &["flows:read"]))
        .await
        .unwrap();
    store
        .insert_token(&token("t1", "a", T0.plus_secs(60)))
        .await
        .unwrap();
    store.append_audit(&event("ev-1", 1), T0).await.unwrap();
    store.append_audit(&event("ev-2", 2), T0).await.unwrap();
}

/// Check what [`write_sample`] wrote, through a new handle.
pub async fn check_sample(store: &dyn Store) {
    let flow = store.get_flow("f1", None).await.unwrap().unwrap();
    assert_eq!((flow.version, flow.document), (2, doc(2)));
    assert_eq!(
        store
            .get_flow("f1", Some(1))
            .await
            .unwrap()
            .unwrap()
            .document,
        doc(1)
    );
    assert_eq!(
        store.get_client("a").await.unwrap(),
        Some(client("a", &["flows:read"]))
    );
    assert!(store.get_token("t1").await.unwrap().is_some());
    let audit = store.read_audit().await.unwrap();
    assert_eq!(verify_chain(&audit), Ok(2));
    // The chain continues where it left off.
    let next = store.append_audit(&event("ev-3", 3), T0).await.unwrap();
    assert_eq!(
        (next.seq, next.prev_hash.as_str()),
        (3, audit[1].hash.as_str())
    );
}

// ---------------------------------------------------------------------------------------
// Accounts (built-in directory) and lockout.

/// A stand-in PHC string: the store never interprets hashes.
fn phc(n: u32) -> String {
    format!("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ${n:022}")
}

pub fn account(number: &str, name: &str) -> AccountRecord {
    AccountRecord {
        account: AccountNumber::parse(number).unwrap(),
        name: name.to_owned(),
        greeting: None,
        phone: Some("+15550100123".into()),
        email: None,
        phone_verified: false,
        email_verified: false,
        disabled: false,
        pin_hash: None,
        pin_history: vec![],
        created_at: T0,
        updated_at: T0,
    }
}

/// Create, get, list (ordered, paged), conflict, PIN changes with the history trimmed to
/// `PIN_HISTORY`, re-hash without a history entry, disable and enable.
pub async fn accounts_lifecycle(store: &dyn Store) {
    assert_eq!(store.get_account("1001").await.unwrap(), None);
    assert!(store.list_accounts(None, 10).await.unwrap().is_empty());

    let full = AccountRecord {
        greeting: Some("Dr Lovelace".into()),
        email: Some("ada@example.com".into()),
        phone_verified: true,
        email_verified: true,
        pin_hash: Some(phc(0)),
        ..account("1002", "Ada Lovelace")
    };
    store
        .create_account(&account("1003", "Grace"))
        .await
        .unwrap();
    store.create_account(&full).await.unwrap();
    store
        .create_account(&account("1001", "Alan"))
        .await
        .unwrap();
    assert!(matches!(
        store.create_account(&account("1002", "Other")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get_account("1002").await.unwrap(), Some(full.clone()));
    let none = store.get_account("1003").await.unwrap().unwrap();
    assert_eq!(
        (none.pin_hash, none.greeting, none.email),
        (None, None, None)
    );

    let numbers = |v: Vec<AccountRecord>| {
        v.into_iter()
            .map(|a| a.account.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        numbers(store.list_accounts(None, 10).await.unwrap()),
        ["1001", "1002", "1003"]
    );
    assert_eq!(
        numbers(store.list_accounts(None, 2).await.unwrap()),
        ["1001", "1002"]
    );
    assert_eq!(
        numbers(store.list_accounts(Some("1002"), 2).await.unwrap()),
        ["1003"]
    );
    assert!(store
        .list_accounts(Some("1003"), 2)
        .await
        .unwrap()
        .is_empty());

    // Seven changes: the history keeps the newest five replaced hashes, newest first.
    for n in 1..=7u32 {
        store
            .set_pin_hash("1002", &phc(n), T0.plus_secs(i64::from(n)))
            .await
            .unwrap();
    }
    let changed = store.get_account("1002").await.unwrap().unwrap();
    assert_eq!(changed.pin_hash, Some(phc(7)));
    assert_eq!(changed.pin_history, [6, 5, 4, 3, 2].map(phc));
    assert_eq!(changed.pin_history.len(), PIN_HISTORY);
    assert_eq!(changed.updated_at, T0.plus_secs(7));
    assert_eq!(changed.created_at, T0);

    // A first PIN adds nothing to the history.
    store.set_pin_hash("1003", &phc(30), T0).await.unwrap();
    let first = store.get_account("1003").await.unwrap().unwrap();
    assert_eq!((first.pin_hash, first.pin_history), (Some(phc(30)), vec![]));

    // A re-hash replaces the hash only.
    store
        .rehash_pin("1002", &phc(70), T0.plus_secs(8))
        .await
        .unwrap();
    let rehashed = store.get_account("1002").await.unwrap().unwrap();
    assert_eq!(rehashed.pin_hash, Some(phc(70)));
    assert_eq!(rehashed.pin_history, changed.pin_history);

    assert!(matches!(
        store.set_pin_hash("nope", &phc(1), T0).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.rehash_pin("nope", &phc(1), T0).await,
        Err(StoreError::NotFound)
    ));

    assert!(store
        .set_disabled("1001", true, T0.plus_secs(9))
        .await
        .unwrap());
    let disabled = store.get_account("1001").await.unwrap().unwrap();
    assert!(disabled.disabled);
    assert_eq!(disabled.updated_at, T0.plus_secs(9));
    assert!(store.set_disabled("1001", false, T0).await.unwrap());
    assert!(!store.get_account("1001").await.unwrap().unwrap().disabled);
    assert!(!store.set_disabled("nope", true, T0).await.unwrap());

    // A history handed to create is trimmed too.
    let long = AccountRecord {
        pin_history: (0..8).map(phc).collect(),
        ..account("2000", "Long")
    };
    store.create_account(&long).await.unwrap();
    assert_eq!(
        store
            .get_account("2000")
            .await
            .unwrap()
            .unwrap()
            .pin_history
            .len(),
        PIN_HISTORY
    );
}

/// Failures count up to the threshold and lock; locked attempts count without extending;
/// success and unlock reset; unknown account numbers are counted alike.
pub async fn lockout_threshold(store: &dyn Store) {
    let policy = LockoutPolicy {
        max_failures: 3,
        base_lock_secs: 60,
        ..LockoutPolicy::default()
    };
    assert_eq!(
        store.counters("1001").await.unwrap(),
        AccountCounters::default()
    );
    for n in 1..=2u32 {
        let (c, effect) = store.record_failure("1001", &policy, T0).await.unwrap();
        assert_eq!((c.failed_attempts, effect), (n, FailureEffect::Counted));
    }
    let (c, effect) = store.record_failure("1001", &policy, T0).await.unwrap();
    assert_eq!(effect, FailureEffect::LockedUntil(T0.plus_secs(60)));
    assert_eq!(store.counters("1001").await.unwrap(), c);
    assert!(c.is_locked(T0.plus_secs(59)));
    let (c, effect) = store
        .record_failure("1001", &policy, T0.plus_secs(1))
        .await
        .unwrap();
    assert_eq!(effect, FailureEffect::Counted);
    assert_eq!(
        (c.failed_attempts, c.locks, c.locked_until),
        (4, 1, Some(T0.plus_secs(60)))
    );

    store.record_success("1001").await.unwrap();
    assert_eq!(
        store.counters("1001").await.unwrap(),
        AccountCounters::default()
    );

    // Permanent mode, on a number no directory knows.
    let permanent = LockoutPolicy {
        max_failures: 1,
        permanent: true,
        ..policy
    };
    let (c, effect) = store.record_failure("ghost", &permanent, T0).await.unwrap();
    assert_eq!(effect, FailureEffect::LockedPermanently);
    assert!(c.locked_permanently);
    assert_eq!(store.counters("ghost").await.unwrap(), c);
    assert!(store.unlock("ghost").await.unwrap());
    assert!(
        !store.unlock("ghost").await.unwrap(),
        "nothing left to reset"
    );
    assert_eq!(
        store.counters("ghost").await.unwrap(),
        AccountCounters::default()
    );
}

/// Write counters for a persistence check after reopening.
pub async fn write_lockout_sample(store: &dyn Store) {
    let policy = LockoutPolicy {
        max_failures: 2,
        ..LockoutPolicy::default()
    };
    store.record_failure("1001", &policy, T0).await.unwrap();
    store.record_failure("1001", &policy, T0).await.unwrap();
    store.record_failure("1002", &policy, T0).await.unwrap();
    store
        .record_ani_failure("+15550100", "1001", T0)
        .await
        .unwrap();
}

/// Check what [`write_lockout_sample`] wrote, through a new handle.
pub async fn check_lockout_sample(store: &dyn Store) {
    let locked = store.counters("1001").await.unwrap();
    assert_eq!(
        locked,
        AccountCounters {
            failed_attempts: 2,
            locks: 1,
            locked_until: Some(T0.plus_secs(LockoutPolicy::default().base_lock_secs)),
            locked_permanently: false,
        }
    );
    assert_eq!(store.counters("1002").await.unwrap().failed_attempts, 1);
    let activity = store.ani_activity("+15550100", "1001", T0).await.unwrap();
    assert_eq!(activity.failures, 1);
}

/// `per_handle` concurrent failures on one account from each of two handles on the same
/// backing store: every one is counted.
pub async fn lockout_concurrent_failures(
    a: std::sync::Arc<dyn Store>,
    b: std::sync::Arc<dyn Store>,
    per_handle: u32,
) {
    // A threshold beyond reach, so every failure is a plain count.
    let policy = LockoutPolicy {
        max_failures: 1_000,
        ..LockoutPolicy::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for store in [a.clone(), b.clone()] {
        for _ in 0..per_handle {
            let store = store.clone();
            tasks.spawn(async move { store.record_failure("1001", &policy, T0).await });
        }
    }
    let mut seen = Vec::new();
    while let Some(done) = tasks.join_next().await {
        seen.push(done.unwrap().unwrap().0.failed_attempts);
    }
    seen.sort_unstable();
    // Each transaction saw its predecessor's count: 1, 2, ..., n.
    assert_eq!(seen, (1..=2 * per_handle).collect::<Vec<_>>());
    for store in [a, b] {
        assert_eq!(
            store.counters("1001").await.unwrap().failed_attempts,
            2 * per_handle
        );
    }
}

/// Failures and distinct accounts per caller number since a time; purge.
pub async fn ani_activity_and_purge(store: &dyn Store) {
    let ani = "+15550100";
    let quiet = store.ani_activity(ani, "1001", T0).await.unwrap();
    assert_eq!(quiet, AniActivity::default());

    for (account, secs) in [("1001", 0), ("1001", 10), ("1002", 20), ("1003", 30)] {
        store
            .record_ani_failure(ani, account, T0.plus_secs(secs))
            .await
            .unwrap();
    }
    store
        .record_ani_failure("(withheld)", "1001", T0)
        .await
        .unwrap();

    let all = store.ani_activity(ani, "1002", T0).await.unwrap();
    assert_eq!(
        all,
        AniActivity {
            failures: 4,
            distinct_accounts: 3,
            includes_account: true
        }
    );
    let new_account = store.ani_activity(ani, "9999", T0).await.unwrap();
    assert_eq!(
        (new_account.failures, new_account.includes_account),
        (4, false)
    );
    // `since` is inclusive.
    let recent = store
        .ani_activity(ani, "1001", T0.plus_secs(20))
        .await
        .unwrap();
    assert_eq!(
        recent,
        AniActivity {
            failures: 2,
            distinct_accounts: 2,
            includes_account: false
        }
    );
    let withheld = store.ani_activity("(withheld)", "1001", T0).await.unwrap();
    assert_eq!((withheld.failures, withheld.distinct_accounts), (1, 1));

    // Purge is strictly before: the row at T0+20s stays.
    assert_eq!(store.purge_ani_failures(T0.plus_secs(20)).await.unwrap(), 3);
    let left = store.ani_activity(ani, "1003", T0).await.unwrap();
    assert_eq!(
        left,
        AniActivity {
            failures: 2,
            distinct_accounts: 2,
            includes_account: true
        }
    );
    assert_eq!(store.purge_ani_failures(T0.plus_secs(20)).await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// Call sessions.

/// A stand-in for a sealed state: `len` bytes that are not UTF-8 (the store keeps bytes).
fn sealed(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x80)
        .collect()
}

/// A session waiting for `turn`, with every optional field set.
pub fn call(call_id: &str, turn: u32, expires_at: UnixMillis) -> CallRecord {
    CallRecord {
        call_id: call_id.to_owned(),
        flow_id: "demo-pin".into(),
        flow_version: 3,
        turn,
        state: sealed(turn as u8, 64),
        last_answer: Some(format!(
            r#"{{"verbs":[{{"say":"turn {turn}"}}],"nextTurn":{turn}}}"#
        )),
        failures: 1,
        pending_secret_account: Some("1001".into()),
        ani: "+15550100123".into(),
        ended: false,
        created_at: T0,
        updated_at: T0.plus_secs(i64::from(turn)),
        expires_at,
    }
}

/// Every field survives a save and a load, both with the options set and unset, with an
/// empty state and with extreme numbers; an unknown call is `None`.
pub async fn calls_round_trip(store: &dyn Store) {
    assert_eq!(store.load_call("twilio:CA1").await.unwrap(), None);

    let full = CallRecord {
        state: vec![0x00, 0xff, 0x00, 0x80, b'\'', b'"'],
        failures: 2,
        ..call("twilio:CA1", 7, T0.plus_secs(600))
    };
    store.save_call(&full).await.unwrap();
    assert_eq!(
        store.load_call("twilio:CA1").await.unwrap(),
        Some(full.clone())
    );

    let bare = CallRecord {
        call_id: "api:42".into(),
        flow_id: "f".into(),
        flow_version: 1,
        turn: 1,
        state: vec![],
        last_answer: None,
        failures: 0,
        pending_secret_account: None,
        ani: "+15550100123".into(),
        ended: false,
        created_at: UnixMillis(0),
        updated_at: UnixMillis(0),
        expires_at: UnixMillis(0),
    };
    store.save_call(&bare).await.unwrap();
    assert_eq!(store.load_call("api:42").await.unwrap(), Some(bare));

    let extreme = CallRecord {
        flow_version: i64::MAX,
        turn: u32::MAX,
        failures: u32::MAX,
        created_at: UnixMillis(i64::MIN),
        updated_at: UnixMillis(-1),
        expires_at: UnixMillis(i64::MAX),
        state: sealed(9, 4096),
        ..call("jambonz:a-b-c", 1, T0)
    };
    store.save_call(&extreme).await.unwrap();
    assert_eq!(
        store.load_call("jambonz:a-b-c").await.unwrap(),
        Some(extreme)
    );

    // Ids are exact: no case folding, no prefix match.
    assert_eq!(store.load_call("TWILIO:CA1").await.unwrap(), None);
    assert_eq!(store.load_call("twilio:CA").await.unwrap(), None);
    assert_eq!(store.load_call("twilio:CA1").await.unwrap(), Some(full));
}

/// A lower turn is refused with `Conflict` and changes nothing; the same turn overwrites
/// (a retried write, every field replaced); a higher turn moves on.
pub async fn calls_monotonic(store: &dyn Store) {
    let five = call("twilio:CA2", 5, T0.plus_secs(300));
    store.save_call(&five).await.unwrap();

    let four = CallRecord {
        state: sealed(99, 80),
        last_answer: None,
        failures: 0,
        ..call("twilio:CA2", 4, T0.plus_secs(900))
    };
    assert!(matches!(
        store.save_call(&four).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.load_call("twilio:CA2").await.unwrap(), Some(five));
    assert!(matches!(
        store
            .save_call(&CallRecord {
                turn: 0,
                ..four.clone()
            })
            .await,
        Err(StoreError::Conflict)
    ));

    let retried = CallRecord {
        flow_version: 4,
        state: sealed(55, 70),
        last_answer: Some(r#"{"verbs":[]}"#.into()),
        failures: 2,
        pending_secret_account: None,
        ani: "+15550100123".into(),
        ended: false,
        created_at: T0.plus_secs(1),
        updated_at: T0.plus_secs(6),
        ..call("twilio:CA2", 5, T0.plus_secs(360))
    };
    store.save_call(&retried).await.unwrap();
    assert_eq!(
        store.load_call("twilio:CA2").await.unwrap(),
        Some(retried.clone())
    );

    let six = call("twilio:CA2", 6, T0.plus_secs(400));
    store.save_call(&six).await.unwrap();
    // Everything moves to turn 6 but the failure count, which never moves backwards.
    assert_eq!(
        store.load_call("twilio:CA2").await.unwrap(),
        Some(CallRecord { failures: 2, ..six })
    );

    // A refusal on one call says nothing about another.
    store.save_call(&call("twilio:CA3", 1, T0)).await.unwrap();
    assert_eq!(
        store.load_call("twilio:CA3").await.unwrap().unwrap().turn,
        1
    );
}

/// `end_call` hands the session over once, then `None`; the session stays as an ended
/// tombstone that nothing saves over, until expiry takes it.
pub async fn calls_end_once(store: &dyn Store) {
    let now = T0.plus_secs(10);
    assert_eq!(store.end_call("twilio:CA4", now).await.unwrap(), None);
    let record = call("twilio:CA4", 3, T0.plus_secs(300));
    let other = call("twilio:CA5", 2, T0.plus_secs(300));
    store.save_call(&record).await.unwrap();
    store.save_call(&other).await.unwrap();

    let mut ended = record.clone();
    ended.ended = true;
    ended.updated_at = now;
    assert_eq!(
        store.end_call("twilio:CA4", now).await.unwrap(),
        Some(ended.clone())
    );
    assert_eq!(store.end_call("twilio:CA4", now).await.unwrap(), None);
    assert_eq!(
        store.load_call("twilio:CA4").await.unwrap(),
        Some(ended.clone())
    );
    assert_eq!(store.load_call("twilio:CA5").await.unwrap(), Some(other));
    // A late turn cannot bring the call back, not even to a later turn.
    let mut late = record.clone();
    late.turn = 9;
    assert!(matches!(
        store.save_call(&late).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        store.claim_call(&late).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.load_call("twilio:CA4").await.unwrap(),
        Some(ended.clone())
    );
    let expired = store
        .take_expired_calls(UnixMillis(i64::MAX), 100)
        .await
        .unwrap();
    assert!(expired.contains(&ended));
    assert_eq!(store.load_call("twilio:CA4").await.unwrap(), None);
}

/// `claim_call` moves a call strictly forward: of two copies of a turn, one claims it.
pub async fn calls_claim_once(store: &dyn Store) {
    let first = call("api:claim", 2, T0.plus_secs(300));
    store.claim_call(&first).await.unwrap();
    let mut next = call("api:claim", 3, T0.plus_secs(300));
    store.claim_call(&next).await.unwrap();
    next.last_answer = Some("duplicate".to_owned());
    assert!(matches!(
        store.claim_call(&next).await,
        Err(StoreError::Conflict)
    ));
    // The claimant's own save of the same turn goes through.
    next.last_answer = Some("answer".to_owned());
    store.save_call(&next).await.unwrap();
    assert_eq!(store.load_call("api:claim").await.unwrap(), Some(next));
}

/// `take_expired_calls` takes only sessions with `expires_at <= now` (inclusive), at most
/// `limit` at a time, deletes exactly what it returns, and leaves the rest.
pub async fn calls_take_expired(store: &dyn Store) {
    assert!(store
        .take_expired_calls(UnixMillis(i64::MAX), 10)
        .await
        .unwrap()
        .is_empty());
    let records: Vec<CallRecord> = (1..=5)
        .map(|n| call(&format!("api:e{n}"), n, T0.plus_secs(i64::from(n))))
        .collect();
    for record in &records {
        store.save_call(record).await.unwrap();
    }
    let live = call("api:live", 1, T0.plus_secs(3_600));
    store.save_call(&live).await.unwrap();

    let now = T0.plus_secs(3);
    assert!(
        store.take_expired_calls(now, 0).await.unwrap().is_empty(),
        "limit 0 takes nothing"
    );
    assert!(store.take_expired_calls(T0, 10).await.unwrap().is_empty());

    let first = store.take_expired_calls(now, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let second = store.take_expired_calls(now, 2).await.unwrap();
    assert_eq!(second.len(), 1, "one expired session was left");
    assert!(store.take_expired_calls(now, 2).await.unwrap().is_empty());

    let mut taken: Vec<CallRecord> = first.into_iter().chain(second).collect();
    taken.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    assert_eq!(taken, records[..3], "returned whole, as saved");
    for record in &records[..3] {
        assert_eq!(store.load_call(&record.call_id).await.unwrap(), None);
    }
    for record in records[3..].iter().chain([&live]) {
        assert_eq!(
            store.load_call(&record.call_id).await.unwrap().as_ref(),
            Some(record)
        );
    }

    let rest = store
        .take_expired_calls(T0.plus_secs(3_599), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = rest.iter().map(|c| c.call_id.as_str()).collect();
    assert!(ids.len() == 2 && ids.contains(&"api:e4") && ids.contains(&"api:e5"));
    assert_eq!(store.load_call("api:live").await.unwrap(), Some(live));
}

/// Two handles on the same backing store (like two processes): concurrent saves of turns
/// `1..=turns` of one call end with the highest turn stored (each save either wins or is
/// refused with `Conflict`, and the highest is never refused); a hang-up delivered to both
/// is acted on once; concurrent expiry sweeps hand each session to one sweep only.
pub async fn calls_concurrent(
    a: std::sync::Arc<dyn Store>,
    b: std::sync::Arc<dyn Store>,
    turns: u32,
) {
    let expires = T0.plus_secs(600);
    let mut tasks = tokio::task::JoinSet::new();
    for turn in 1..=turns {
        let store = if turn % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let result = store.save_call(&call("twilio:race", turn, expires)).await;
            (turn, result)
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (_, Ok(())) => {}
            (turn, Err(StoreError::Conflict)) => assert!(turn < turns, "turn {turn} refused"),
            (turn, Err(e)) => panic!("turn {turn}: {e}"),
        }
    }
    for store in [&a, &b] {
        assert_eq!(
            store.load_call("twilio:race").await.unwrap(),
            Some(call("twilio:race", turns, expires))
        );
    }

    let (x, y) = tokio::join!(a.end_call("twilio:race", T0), b.end_call("twilio:race", T0));
    let ended: Vec<CallRecord> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    let mut tomb = call("twilio:race", turns, expires);
    tomb.ended = true;
    tomb.updated_at = T0;
    assert_eq!(ended, [tomb]);

    for n in 0..turns {
        let store = if n % 2 == 0 { &a } else { &b };
        store
            .save_call(&call(&format!("api:x{n}"), 1, T0.plus_millis(i64::from(n))))
            .await
            .unwrap();
    }
    let mut sweeps = tokio::task::JoinSet::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        sweeps.spawn(async move {
            let mut taken = Vec::new();
            loop {
                let batch = store.take_expired_calls(expires, 3).await.unwrap();
                if batch.is_empty() {
                    return taken;
                }
                taken.extend(batch.into_iter().map(|c| c.call_id));
            }
        });
    }
    let mut taken = Vec::new();
    while let Some(done) = sweeps.join_next().await {
        taken.extend(done.unwrap());
    }
    taken.sort_unstable();
    // The ended race call is a tombstone that expires with the rest.
    let mut expected: Vec<String> = (0..turns).map(|n| format!("api:x{n}")).collect();
    expected.push("twilio:race".to_owned());
    expected.sort_unstable();
    assert_eq!(taken, expected, "every session taken exactly once");
}

/// Caller-number attempts are counted before the directory is asked: `n` concurrent
/// attempts from one number at distinct accounts, from two handles, are judged at most as
/// often as the per-number account limit allows; a refund takes one back.
pub async fn ani_claims_counted_first(
    a: std::sync::Arc<dyn Store>,
    b: std::sync::Arc<dyn Store>,
    n: u32,
) {
    use ivrauth_core::identity::{Ani, AniAttempt, AniClaim};
    let policy = LockoutPolicy::default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let ani = Ani::parse("+15550100777");
            let account = format!("acct-{i}");
            store
                .claim_ani_attempt(&AniAttempt {
                    ani: &ani,
                    account: &account,
                    policy: &policy,
                    call_failures: 0,
                    since: T0,
                    now: T0,
                })
                .await
        });
    }
    let mut claims = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let AniClaim::Counted { claim, .. } = done.unwrap().unwrap() {
            claims.push(claim);
        }
    }
    let limit = policy.per_ani_accounts_per_hour;
    assert_eq!(
        claims.len(),
        limit as usize,
        "judged {} of {n}",
        claims.len()
    );
    let activity = a.ani_activity("+15550100777", "x", T0).await.unwrap();
    assert_eq!(activity.failures, limit);
    a.refund_ani_attempt(claims[0]).await.unwrap();
    let activity = b.ani_activity("+15550100777", "x", T0).await.unwrap();
    assert_eq!(activity.failures, limit - 1);
}

/// Counters of account numbers the directory does not know are purged once they lock
/// nothing and their last failure is old; known accounts' counters stay.
pub async fn unknown_counters_purged(store: &dyn Store) {
    let policy = LockoutPolicy {
        max_failures: 2,
        base_lock_secs: 60,
        ..LockoutPolicy::default()
    };
    store.record_failure("known", &policy, T0).await.unwrap();
    store.record_failure("ghost", &policy, T0).await.unwrap();
    store.record_failure("ghost", &policy, T0).await.unwrap(); // locked until T0+60
    store.record_failure("ghost2", &policy, T0).await.unwrap();
    store.mark_unknown_account("ghost").await.unwrap();
    store.mark_unknown_account("ghost2").await.unwrap();
    // Too recent: nothing goes.
    assert_eq!(store.purge_unknown_counters(T0, T0).await.unwrap(), 0);
    // Old enough, but `ghost` is still locked at T0+30.
    let later = T0.plus_secs(30);
    assert_eq!(store.purge_unknown_counters(later, later).await.unwrap(), 1);
    assert_eq!(
        store.counters("ghost2").await.unwrap(),
        AccountCounters::default()
    );
    assert_eq!(store.counters("ghost").await.unwrap().failed_attempts, 2);
    let after = T0.plus_secs(61);
    assert_eq!(store.purge_unknown_counters(after, after).await.unwrap(), 1);
    assert_eq!(
        store.counters("ghost").await.unwrap(),
        AccountCounters::default()
    );
    assert_eq!(store.counters("known").await.unwrap().failed_attempts, 1);
}

/// A call's failure count never moves backwards: a save carrying a smaller count (from a
/// stale copy of the turn) keeps the larger stored one.
pub async fn calls_failures_never_decrease(store: &dyn Store) {
    let mut record = CallRecord {
        failures: 2,
        ..call("twilio:CAF", 3, T0.plus_secs(600))
    };
    store.save_call(&record).await.unwrap();
    record.turn = 4;
    record.failures = 0;
    store.save_call(&record).await.unwrap();
    let loaded = store.load_call("twilio:CAF").await.unwrap().unwrap();
    assert_eq!(loaded.turn, 4);
    assert_eq!(loaded.failures, 2);
    record.turn = 5;
    record.failures = 3;
    store.save_call(&record).await.unwrap();
    assert_eq!(
        store
            .load_call("twilio:CAF")
            .await
            .unwrap()
            .unwrap()
            .failures,
        3
    );
}

/// Count an attempt first, as `identity.verify` does: the caller number's claim and the
/// account's failure. Returns the claim id and the failure's effect.
async fn count_first(
    store: &dyn Store,
    ani: &str,
    account: &str,
    policy: &LockoutPolicy,
) -> (i64, FailureEffect) {
    use ivrauth_core::identity::{Ani, AniAttempt, AniClaim};
    let ani = Ani::parse(ani);
    let claim = store
        .claim_ani_attempt(&AniAttempt {
            ani: &ani,
            account,
            policy,
            call_failures: 0,
            since: T0,
            now: T0,
        })
        .await
        .unwrap();
    let AniClaim::Counted { claim, .. } = claim else {
        panic!("refused: {claim:?}");
    };
    let (_, effect) = store.record_failure(account, policy, T0).await.unwrap();
    (claim, effect)
}

/// A success settles in one commit: the account's counters reset, the caller number's
/// attempt refunded and the audit record appended after the chain; if the record cannot be
/// written (its id is taken), nothing of it is.
pub async fn verified_attempt_settles_in_one_commit(store: &dyn Store) {
    let policy = LockoutPolicy::default();
    store.append_audit(&event("before", 1), T0).await.unwrap();
    store.record_failure("acct-s", &policy, T0).await.unwrap();
    let (claim, _) = count_first(store, "+15550100555", "acct-s", &policy).await;
    assert_eq!(store.counters("acct-s").await.unwrap().failed_attempts, 2);

    // The record's id is already in the chain: Conflict, and nothing changed.
    assert!(matches!(
        store
            .settle_verified("acct-s", claim, &event("before", 2), T0)
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.counters("acct-s").await.unwrap().failed_attempts, 2);
    let activity = store
        .ani_activity("+15550100555", "acct-s", T0)
        .await
        .unwrap();
    assert_eq!(activity.failures, 1);
    assert_eq!(store.read_audit().await.unwrap().len(), 1);

    let record = store
        .settle_verified("acct-s", claim, &event("verified", 2), T0.plus_secs(1))
        .await
        .unwrap();
    assert_eq!(record.seq, 2);
    assert_eq!(
        store.counters("acct-s").await.unwrap(),
        AccountCounters::default()
    );
    let activity = store
        .ani_activity("+15550100555", "acct-s", T0)
        .await
        .unwrap();
    assert_eq!(activity, AniActivity::default());
    let all = store.read_audit().await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["before", "verified"]
    );
    assert_eq!(verify_chain(&all), Ok(2));
}

/// An attempt counted first but never judged (the directory was busy) is taken back: the
/// account's count and the lock that attempt set, and the caller number's claim. Other
/// failures stay counted.
pub async fn unjudged_attempt_is_refunded(store: &dyn Store) {
    let policy = LockoutPolicy {
        max_failures: 2,
        base_lock_secs: 60,
        ..LockoutPolicy::default()
    };
    // Alone on a fresh account: as if it never happened.
    let (claim, effect) = count_first(store, "+15550100556", "acct-r", &policy).await;
    assert_eq!(effect, FailureEffect::Counted);
    let after = store
        .refund_unjudged("acct-r", effect, claim, T0)
        .await
        .unwrap();
    assert_eq!(after, AccountCounters::default());
    assert_eq!(
        store.counters("acct-r").await.unwrap(),
        AccountCounters::default()
    );
    let activity = store
        .ani_activity("+15550100556", "acct-r", T0)
        .await
        .unwrap();
    assert_eq!(activity, AniActivity::default());

    // The attempt that would have locked the account: the lock goes with it, the earlier
    // failure stays.
    store.record_failure("acct-r", &policy, T0).await.unwrap();
    let (claim, effect) = count_first(store, "+15550100556", "acct-r", &policy).await;
    assert!(
        matches!(effect, FailureEffect::LockedUntil(_)),
        "{effect:?}"
    );
    assert!(store.counters("acct-r").await.unwrap().is_locked(T0));
    store
        .refund_unjudged("acct-r", effect, claim, T0)
        .await
        .unwrap();
    let counters = store.counters("acct-r").await.unwrap();
    assert_eq!(counters.failed_attempts, 1);
    assert_eq!(counters.locks, 0);
    assert!(!counters.is_locked(T0));
    let activity = store
        .ani_activity("+15550100556", "acct-r", T0)
        .await
        .unwrap();
    assert_eq!(activity.failures, 0);
}
