//! Issue 8, items 8 and 12: caller-number limits are counted before the directory is
//! asked, and a directory error answers every account alike.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Map;

use ivrauth_core::engine::ActionCall;
use ivrauth_core::identity::{
    AccountNumber, IdentityError, IdentityProvider, LockoutPolicy, Profile, Verification,
};
use ivrauth_core::ports::{AuditStore as _, LockoutStore as _};
use ivrauth_core::Secret;
use ivrauth_server::app::identity::CallContext;
use ivrauth_testkit::{counter_key, TestServer, TEST_EPOCH};

use crate::security::support;

fn verify_call(account: &str, pin: &str) -> ActionCall {
    let mut inputs = Map::new();
    inputs.insert("account".into(), account.into());
    ActionCall {
        node_id: "v".into(),
        action: "identity.verify",
        inputs,
        secrets: vec![("secret", Secret::new(pin.to_owned()))],
    }
}

fn ctx(call: &str, ani: &str) -> CallContext {
    CallContext {
        call_id: call.to_owned(),
        ani: ani.to_owned(),
        failures: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_from_one_number_are_judged_no_more_than_its_limit() {
    let policy = LockoutPolicy::default();
    let server = support::server(policy).await;
    let service = Arc::new(support::service(server.store(), server.clock(), policy));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let service = service.clone();
        tasks.spawn(async move {
            let call = verify_call(&format!("3{i:04}"), "0000");
            service
                .perform(call, ctx(&format!("call-{i}"), "+15550100999"))
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (result, _) = done.unwrap();
        assert_eq!(result.unwrap()["verified"], false);
    }
    let records = support::verify_records(&server).await;
    assert_eq!(records.len(), 30);
    let judged = records.iter().filter(|r| r.2 != "rate_limited").count();
    assert_eq!(
        judged, policy.per_ani_accounts_per_hour as usize,
        "{records:?}"
    );
}

#[tokio::test]
async fn a_success_refunds_the_callers_attempt() {
    let policy = LockoutPolicy {
        per_ani_failures_per_hour: 2,
        ..LockoutPolicy::default()
    };
    let server = support::server(policy).await;
    let service = Arc::new(support::service(server.store(), server.clock(), policy));
    // Two successes from one number do not use up its two failures.
    for i in 0..3 {
        let (r, _) = service
            .perform(
                verify_call("10001", "2468"),
                ctx(&format!("ok-{i}"), "+15550100998"),
            )
            .await;
        assert_eq!(r.unwrap()["verified"], true);
    }
    let activity = server
        .store()
        .ani_activity("+15550100998", "x", TEST_EPOCH.plus_secs(-3600))
        .await
        .unwrap();
    assert_eq!(activity.failures, 0);
}

/// A directory that is down.
struct Down;

#[async_trait]
impl IdentityProvider for Down {
    fn kind(&self) -> &'static str {
        "down"
    }
    async fn lookup(&self, _: &AccountNumber) -> Result<Option<Profile>, IdentityError> {
        Err(IdentityError::Unavailable("connection refused".into()))
    }
    async fn verify(
        &self,
        _: &AccountNumber,
        _: &Secret<String>,
    ) -> Result<Verification, IdentityError> {
        Err(IdentityError::Unavailable("connection refused".into()))
    }
    async fn change_secret(
        &self,
        _: &AccountNumber,
        _: &Secret<String>,
    ) -> Result<(), IdentityError> {
        Err(IdentityError::Unavailable("connection refused".into()))
    }
    async fn health(&self) -> Result<(), IdentityError> {
        Err(IdentityError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn a_directory_error_answers_locked_and_open_accounts_alike() {
    let policy = LockoutPolicy::default();
    let server = TestServer::builder()
        .identity(move |store, clock| {
            let mut s = support::service(store, clock, policy);
            s.provider = Arc::new(Down);
            s
        })
        .start()
        .await
        .unwrap();
    for _ in 0..policy.max_failures {
        server
            .store()
            .record_failure(&counter_key("10003"), &policy, TEST_EPOCH)
            .await
            .unwrap();
    }
    let service = server.state().identity.clone().unwrap();
    let (locked, _) = service
        .perform(verify_call("10003", "1111"), ctx("a", "+15550100001"))
        .await;
    let (open, _) = service
        .perform(verify_call("10001", "1111"), ctx("b", "+15550100002"))
        .await;
    let (locked, open) = (locked.unwrap_err(), open.unwrap_err());
    assert_eq!(locked, open);
    assert_eq!(open.code, "unavailable");
    // The audit still knows the account was locked.
    let audit = server.store().read_audit().await.unwrap();
    let was_locked: Vec<bool> = audit
        .iter()
        .filter(|r| r.event == "identity.verify")
        .map(|r| r.detail["wasLocked"] == true)
        .collect();
    assert_eq!(was_locked, [true, false]);
}

#[tokio::test]
async fn counters_of_unknown_accounts_are_marked_for_purging() {
    let policy = LockoutPolicy::default();
    let server = support::server(policy).await;
    let service = Arc::new(support::service(server.store(), server.clock(), policy));
    for (account, call) in [("99999", "u"), ("10001", "k")] {
        let (r, _) = service
            .perform(verify_call(account, "0000"), ctx(call, "+15550100997"))
            .await;
        assert_eq!(r.unwrap()["verified"], false);
    }
    let later = TEST_EPOCH.plus_secs(1);
    assert_eq!(
        server
            .store()
            .purge_unknown_counters(later, later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        server
            .store()
            .counters(&counter_key("99999"))
            .await
            .unwrap()
            .failed_attempts,
        0
    );
    assert_eq!(
        server
            .store()
            .counters(&counter_key("10001"))
            .await
            .unwrap()
            .failed_attempts,
        1
    );
}
