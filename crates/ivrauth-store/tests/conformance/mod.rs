//! Backend-independent conformance suite for `ivrauth_core::ports::Store`.
//!
//! Every function takes `&dyn Store` (plus, where raw access is needed, a [`Tamper`]), so a
//! future PostgreSQL store runs the same suite unchanged: `#[path]`-include this module and
//! call each function with a fresh, empty store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use ivrauth_core::audit::{verify_chain, AuditEvent, ChainError, GENESIS_HASH};
use ivrauth_core::ports::{ClientRecord, RunRecord, Store, StoreError, TokenRecord};
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
        event: "flow.created".into(),
        outcome: "success".into(),
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
