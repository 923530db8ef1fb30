#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `identity.*` actions through the real server, with the built-in directory on the real
//! SQLite store: anti-enumeration, lockout, per-call limits, timing padding, canaries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use ivrauth_connect::RecordingSleeper;
use ivrauth_core::identity::{AccountNumber, HashParams, LockoutPolicy};
use ivrauth_core::ports::{AccountRecord, AccountStore as _, AuditStore as _, LockoutStore as _};
use ivrauth_core::Secret;
use ivrauth_server::app::identity::IdentityService;
use ivrauth_store::directory::hash_pin;
use ivrauth_testkit::{TestServer, TEST_EPOCH};

const CHEAP: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const CANARY_PIN: &str = "730519";

fn flow(attempts: usize) -> Value {
    let mut nodes = json!({
        "start": {"type": "start"},
        "ok": {"type": "end", "properties": {"statusCode": 200}},
        "no": {"type": "end", "properties": {"statusCode": 401}}
    });
    let mut edges = vec![json!({"source": "start", "target": "v1"})];
    for i in 1..=attempts {
        nodes[format!("v{i}")] = json!({"type": "action", "properties": {"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}"}}});
        nodes[format!("c{i}")] = json!({"type": "condition", "properties": {"conditions": [{"name": "ok", "expression": format!("{{{{v{i}.verified}}}} == true")}]}});
        edges.push(json!({"source": format!("v{i}"), "target": format!("c{i}")}));
        edges.push(json!({"source": format!("c{i}"), "target": "ok", "condition": "ok"}));
        let next = if i == attempts {
            "no".to_owned()
        } else {
            format!("v{}", i + 1)
        };
        edges.push(json!({"source": format!("c{i}"), "target": next, "condition": "!ok"}));
    }
    json!({
        "name": "verify", "startNode": "start",
        "inputSchema": {"type": "object", "properties": {"account": {"type": "string"}, "pin": {"type": "string", "x-secure": true}}, "required": ["account", "pin"]},
        "nodes": nodes, "edges": edges
    })
}

struct Setup {
    server: TestServer,
    token: String,
    sleeper: Arc<RecordingSleeper>,
}

async fn setup(policy: LockoutPolicy, min_verify: Duration) -> Setup {
    let sleeper = Arc::new(RecordingSleeper::new());
    let s2 = sleeper.clone();
    let server = TestServer::builder()
        .identity(move |store, clock| IdentityService {
            min_verify_duration: min_verify,
            sleeper: s2,
            ..ivrauth_testkit::builtin_identity(store, clock, CHEAP, policy).unwrap()
        })
        .start()
        .await
        .unwrap();
    for (account, name, pin, disabled) in [
        ("10001", "Ada Lovelace", "2468", false),
        ("10002", "Grace Hopper", "1357", true),
        ("10003", "Alan Turing", "9753", false),
    ] {
        let record = AccountRecord {
            account: AccountNumber::parse(account).unwrap(),
            name: name.to_owned(),
            greeting: None,
            phone: Some("+15550100001".to_owned()),
            email: None,
            phone_verified: true,
            email_verified: false,
            disabled,
            pin_hash: Some(hash_pin(&Secret::new(pin.to_owned()), CHEAP).unwrap()),
            pin_history: Vec::new(),
            created_at: TEST_EPOCH,
            updated_at: TEST_EPOCH,
        };
        server.store().create_account(&record).await.unwrap();
    }
    let (id, secret) = server
        .create_client("ivr", &["flow:simulate", "identity:simulate"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    Setup {
        server,
        token,
        sleeper,
    }
}

impl Setup {
    async fn simulate(&self, flow: &Value, account: &str, pin: &str, ani: &str) -> Value {
        let res = self
            .server
            .http()
            .post(self.server.url("/api/v2/flows/simulate"))
            .bearer_auth(&self.token)
            .json(&json!({"flow": flow, "input": {"account": account, "pin": pin}, "contact": {"ani": ani}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

/// The caller-facing part of a simulation: the outcome and each node's outputs, without
/// timings or ids.
fn caller_view(sim: &Value) -> Value {
    let trace: Vec<Value> = sim["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"node": t["nodeKey"], "output": t["output"], "result": t["result"], "next": t["next"]}))
        .collect();
    json!({"outcome": sim["outcome"], "trace": trace})
}

/// `(subject, reason)` of every `identity.verify` audit record, in order.
async fn verify_reasons(s: &Setup) -> Vec<(String, String)> {
    s.server
        .store()
        .read_audit()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "identity.verify")
        .map(|r| {
            (
                r.subject,
                r.detail["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `n` simulations of a wrong PIN for account 10001 at once, each from its own number;
/// every one must end at `no`.
async fn wrong_pins_at_once(s: &Arc<Setup>, n: u32, ani_prefix: &str) {
    let f = Arc::new(flow(1));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (s, f, ani) = (s.clone(), f.clone(), format!("{ani_prefix}{i:04}"));
        tasks.push(tokio::spawn(async move {
            s.simulate(&f, "10001", "0000", &ani).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap()["outcome"]["endNode"], "no");
    }
}

#[tokio::test]
async fn unknown_wrong_locked_and_disabled_look_the_same_to_the_caller() {
    let policy = LockoutPolicy::default();
    let s = setup(policy, Duration::ZERO).await;
    // Lock 10003 with five failures (the right PIN will be refused while locked).
    for _ in 0..5 {
        s.server
            .store()
            .record_failure(&ivrauth_testkit::counter_key("10003"), &policy, TEST_EPOCH)
            .await
            .unwrap();
    }
    let f = flow(1);
    let unknown = s.simulate(&f, "99999", "2468", "+15550000001").await;
    let wrong = s.simulate(&f, "10001", "1111", "+15550000002").await;
    let locked = s.simulate(&f, "10003", "9753", "+15550000003").await;
    let disabled = s.simulate(&f, "10002", "1357", "+15550000004").await;
    let view = caller_view(&unknown);
    assert_eq!(view["outcome"], json!({"endNode": "no", "statusCode": 401}));
    assert_eq!(
        view["trace"][1]["output"],
        json!({"verified": false, "greeting": null, "attemptsLeft": 2, "error": null})
    );
    for (name, other) in [
        ("wrong", &wrong),
        ("locked", &locked),
        ("disabled", &disabled),
    ] {
        assert_eq!(caller_view(other), view, "{name} differs from unknown");
    }

    // The audit alone knows why.
    let reasons = verify_reasons(&s).await;
    assert_eq!(
        reasons,
        vec![
            ("99999".to_owned(), "unknown_account".to_owned()),
            ("10001".to_owned(), "wrong_secret".to_owned()),
            ("10003".to_owned(), "locked".to_owned()),
            ("10002".to_owned(), "disabled".to_owned()),
        ]
    );

    // The right PIN of an active account verifies and greets.
    let ok = s.simulate(&f, "10001", "2468", "+15550000005").await;
    assert_eq!(ok["outcome"]["endNode"], "ok");
    assert_eq!(ok["trace"][1]["output"]["greeting"], "Ada");
}

#[tokio::test]
async fn twenty_concurrent_wrong_pins_are_all_counted() {
    let policy = LockoutPolicy {
        max_failures: 1_000,
        per_ani_failures_per_hour: 1_000,
        ..Default::default()
    };
    let s = Arc::new(setup(policy, Duration::ZERO).await);
    wrong_pins_at_once(&s, 20, "+1555010").await;
    let counters = s
        .server
        .store()
        .counters(&ivrauth_testkit::counter_key("10001"))
        .await
        .unwrap();
    assert_eq!(counters.failed_attempts, 20);
}

#[tokio::test]
async fn a_call_gets_three_attempts_and_the_account_locks_at_five() {
    let policy = LockoutPolicy::default();
    let s = setup(policy, Duration::ZERO).await;
    let sim = s.simulate(&flow(4), "10001", "0000", "+15550000009").await;
    let left: Vec<Value> = (1..=4)
        .map(|i| {
            sim["trace"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["nodeKey"] == format!("v{i}"))
                .unwrap()["output"]["attemptsLeft"]
                .clone()
        })
        .collect();
    assert_eq!(left, vec![json!(2), json!(1), json!(0), json!(0)]);
    let records = s.server.store().read_audit().await.unwrap();
    let last = records
        .iter()
        .rev()
        .find(|r| r.event == "identity.verify")
        .unwrap();
    assert_eq!(
        last.detail["reason"], "rate_limited",
        "the fourth attempt in one call is refused before the directory"
    );
    assert_eq!(
        s.server
            .store()
            .counters(&ivrauth_testkit::counter_key("10001"))
            .await
            .unwrap()
            .failed_attempts,
        3
    );

    // Two more calls from other numbers: the fifth failure locks the account; now even the
    // right PIN is refused, and the caller cannot tell.
    s.simulate(&flow(1), "10001", "0000", "+15550000010").await;
    s.simulate(&flow(1), "10001", "0000", "+15550000011").await;
    let counters = s
        .server
        .store()
        .counters(&ivrauth_testkit::counter_key("10001"))
        .await
        .unwrap();
    assert!(counters.is_locked(TEST_EPOCH), "{counters:?}");
    let refused = s.simulate(&flow(1), "10001", "2468", "+15550000012").await;
    assert_eq!(refused["outcome"]["endNode"], "no");
    // An operator unlock takes effect on the next attempt.
    s.server
        .store()
        .unlock(&ivrauth_testkit::counter_key("10001"))
        .await
        .unwrap();
    let ok = s.simulate(&flow(1), "10001", "2468", "+15550000013").await;
    assert_eq!(ok["outcome"]["endNode"], "ok");
}

#[tokio::test]
async fn verification_is_padded_to_the_minimum_duration() {
    let s = setup(LockoutPolicy::default(), Duration::from_millis(400)).await;
    s.simulate(&flow(1), "99999", "2468", "+15550000020").await;
    s.simulate(&flow(1), "10001", "2468", "+15550000021").await;
    // The fake clock does not move, so each verification asked to be padded by the whole
    // minimum, unknown account and success alike.
    assert_eq!(
        s.sleeper.recorded(),
        vec![Duration::from_millis(400), Duration::from_millis(400)]
    );
}

#[tokio::test]
async fn a_canary_pin_appears_in_no_response_audit_or_database_byte() {
    let s = setup(LockoutPolicy::default(), Duration::ZERO).await;
    let mut bodies = String::new();
    for account in ["10001", "99999", "10002"] {
        bodies.push_str(
            &s.simulate(&flow(2), account, CANARY_PIN, "+15550000030")
                .await
                .to_string(),
        );
    }
    assert!(bodies.contains("********"), "the PIN input is shown masked");
    assert!(!bodies.contains(CANARY_PIN));
    for r in s.server.store().read_audit().await.unwrap() {
        assert!(!r.detail.to_string().contains(CANARY_PIN), "{r:?}");
    }
    for entry in std::fs::read_dir(s.server.data_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes
            .windows(CANARY_PIN.len())
            .any(|w| w == CANARY_PIN.as_bytes()));
    }
}

#[tokio::test]
async fn concurrent_guesses_cannot_slip_past_the_lockout() {
    // Regression: the lock used to be checked before the directory was asked and the failure
    // counted after, so simultaneous guesses all saw an unlocked account.
    let s = Arc::new(setup(LockoutPolicy::default(), Duration::ZERO).await);
    wrong_pins_at_once(&s, 20, "+1555020").await;
    let reasons: Vec<String> = verify_reasons(&s)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(reasons.len(), 20, "every attempt is audited");
    assert_eq!(
        reasons.iter().filter(|r| *r == "wrong_secret").count(),
        5,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "locked").count(),
        15,
        "{reasons:?}"
    );
    assert_eq!(
        s.server
            .store()
            .counters(&ivrauth_testkit::counter_key("10001"))
            .await
            .unwrap()
            .failed_attempts,
        20
    );
}

#[tokio::test]
async fn account_numbers_share_counters_whatever_their_case() {
    let policy = LockoutPolicy {
        max_failures: 2,
        ..Default::default()
    };
    let s = setup(policy, Duration::ZERO).await;
    s.simulate(&flow(1), "ABC1", "0000", "+15550300001").await;
    s.simulate(&flow(1), "abc1", "0000", "+15550300002").await;
    assert_eq!(
        s.server
            .store()
            .counters(&ivrauth_testkit::counter_key("abc1"))
            .await
            .unwrap()
            .failed_attempts,
        2
    );
}

/// A server whose `identity.*` actions are served by `provider`.
async fn server_with(provider: Arc<dyn ivrauth_core::identity::IdentityProvider>) -> Setup {
    let sleeper = Arc::new(RecordingSleeper::new());
    let s2 = sleeper.clone();
    let server = TestServer::builder()
        .identity(move |store, clock| IdentityService {
            provider,
            sleeper: s2,
            ..ivrauth_testkit::builtin_identity(store, clock, CHEAP, LockoutPolicy::default())
                .unwrap()
        })
        .start()
        .await
        .unwrap();
    let (id, secret) = server
        .create_client("ivr", &["flow:simulate", "identity:simulate"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    Setup {
        server,
        token,
        sleeper,
    }
}

async fn flow_verifies_against(s: &Setup) {
    let ok = s.simulate(&flow(1), "10001", "2468", "+15550400001").await;
    assert_eq!(ok["outcome"]["endNode"], "ok", "{ok}");
    assert_eq!(ok["trace"][1]["output"]["greeting"], "Ada");
    let wrong = s.simulate(&flow(1), "10001", "1111", "+15550400002").await;
    let unknown = s.simulate(&flow(1), "99999", "2468", "+15550400003").await;
    assert_eq!(wrong["outcome"]["endNode"], "no");
    assert_eq!(
        caller_view(&wrong),
        caller_view(&unknown),
        "wrong and unknown look the same"
    );
    let records = s.server.store().read_audit().await.unwrap();
    let provider = records
        .iter()
        .find(|r| r.event == "identity.verify")
        .unwrap()
        .detail["provider"]
        .clone();
    assert!(provider.is_string());
}

#[tokio::test]
async fn a_flow_verifies_callers_against_ldap() {
    let slapd = ivrauth_testkit::slapd::Slapd::start().await.unwrap();
    let config = ivrauth_connect::ldap::LdapConfig::new(
        slapd.uri(),
        slapd.service_dn(),
        Secret::new(slapd.service_password().to_owned()),
        slapd.base_dn(),
    );
    let provider = Arc::new(ivrauth_connect::ldap::LdapDirectory::new(config).unwrap());
    flow_verifies_against(&server_with(provider).await).await;
}

#[tokio::test]
async fn a_flow_verifies_callers_against_an_oauth2_provider() {
    let idp = ivrauth_testkit::oauth2_server::OAuth2Server::start(false)
        .await
        .unwrap();
    let config = ivrauth_testkit::oauth2_server::oauth2_config(idp.base_url(), false);
    let provider = Arc::new(ivrauth_connect::oauth2::OAuth2Directory::new(config).unwrap());
    flow_verifies_against(&server_with(provider).await).await;
}

#[tokio::test]
async fn a_flow_verifies_callers_against_the_seed_http_contract() {
    let idp = ivrauth_testkit::identity::IdentityServer::start("10001", "2468", "tok")
        .await
        .unwrap();
    let provider = Arc::new(
        ivrauth_connect::HttpIdentity::new(ivrauth_connect::HttpIdentityConfig {
            url: idp.url(),
            health_url: None,
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    let s = server_with(provider).await;
    let ok = s.simulate(&flow(1), "10001", "2468", "+15550400011").await;
    assert_eq!(ok["outcome"]["endNode"], "ok", "{ok}");
    let wrong = s.simulate(&flow(1), "10001", "1111", "+15550400012").await;
    assert_eq!(wrong["outcome"]["endNode"], "no");
}

/// A verification the hashing pool refuses as busy is never judged, so it is not charged:
/// neither the account's count (here the attempt would have locked it) nor the caller
/// number's, nor the call's. The audit says so. No sleeps: the pool's only permit is held
/// by a job blocked on a channel, and its queue takes nobody.
#[tokio::test]
async fn a_busy_verification_charges_no_failure() {
    use ivrauth_core::engine::ActionCall;
    use ivrauth_server::app::identity::CallContext;
    use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let clock = ivrauth_testkit::FakeClock::new(TEST_EPOCH);
    let policy = LockoutPolicy {
        max_failures: 1,
        ..LockoutPolicy::default()
    };
    let pool = HashPool::new(1).with_max_waiting(0);
    let directory =
        BuiltinDirectory::new(store.clone(), CHEAP, pool.clone(), Arc::new(clock.clone())).unwrap();
    let service = Arc::new(IdentityService {
        provider: Arc::new(directory),
        ..ivrauth_testkit::builtin_identity(&store, &clock, CHEAP, policy).unwrap()
    });
    store
        .create_account(&AccountRecord {
            account: AccountNumber::parse("10001").unwrap(),
            name: "Ada Lovelace".to_owned(),
            greeting: None,
            phone: None,
            email: None,
            phone_verified: false,
            email_verified: false,
            disabled: false,
            pin_hash: Some(hash_pin(&Secret::new("2468".to_owned()), CHEAP).unwrap()),
            pin_history: Vec::new(),
            created_at: TEST_EPOCH,
            updated_at: TEST_EPOCH,
        })
        .await
        .unwrap();
    let verify = |pin: &str| {
        let service = service.clone();
        let call = ActionCall {
            node_id: "verify".into(),
            action: "identity.verify",
            inputs: json!({"account": "10001"}).as_object().cloned().unwrap(),
            secrets: vec![("secret", Secret::new(pin.to_owned()))],
        };
        let ctx = CallContext {
            call_id: "CA-busy".into(),
            ani: "+15550100999".into(),
            failures: 0,
        };
        async move { service.perform(call, ctx).await }
    };

    // Every permit taken.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(move || {
                started_tx.send(()).unwrap();
                held.recv().unwrap();
            })
            .await
        })
    };
    started.await.unwrap();

    let (result, failures) = verify("2468").await;
    let failure = result.unwrap_err();
    assert_eq!(failure.code, "busy");
    assert_eq!(failures, 0, "the call is not charged");
    let key = ivrauth_testkit::counter_key("10001");
    let counters = store.counters(&key).await.unwrap();
    assert_eq!(counters.failed_attempts, 0, "{counters:?}");
    assert!(!counters.is_locked(TEST_EPOCH));
    let activity = store
        .ani_activity("+15550100999", &key, TEST_EPOCH.plus_secs(-3600))
        .await
        .unwrap();
    assert_eq!(activity.failures, 0, "the caller number is not charged");
    let audit = store.read_audit().await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.outcome.as_str()),
        ("identity.verify", "error")
    );
    assert_eq!(last.detail["refunded"], json!(true));
    assert_eq!(pool.stats().refused_full, 1);

    // Capacity back: the right PIN is judged and verified (had the busy attempt counted,
    // the account would be locked and this would fail).
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    let (result, failures) = verify("2468").await;
    let out = result.unwrap();
    assert_eq!(out["verified"], json!(true));
    assert_eq!(out["greeting"], json!("Ada"));
    assert_eq!(failures, 0);
    let audit = store.read_audit().await.unwrap();
    assert_eq!(audit.last().unwrap().outcome, "success");
    assert_eq!(ivrauth_core::audit::verify_chain(&audit), Ok(audit.len()));
}
