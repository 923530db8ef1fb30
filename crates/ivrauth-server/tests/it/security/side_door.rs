//! Issue 8, item 2: simulations are no side door to the directory. A simulating client is
//! one caller whatever `contact.ani` says, identity actions need `identity:simulate`, and
//! `[simulate] identity` chooses what they reach.

use std::sync::Arc;

use serde_json::json;

use ivrauth_core::identity::LockoutPolicy;
use ivrauth_server::http::demo::DemoDirectory;
use ivrauth_server::SimulateIdentity;
use ivrauth_testkit::TestServer;

use crate::security::support::{self, simulate, verify, verify_flow};

const SCOPES: &[&str] = &["flow:simulate", "identity:simulate"];

#[tokio::test]
async fn fresh_caller_numbers_do_not_buy_fresh_guesses_in_simulations() {
    let server = support::server(LockoutPolicy::default()).await;
    let token = support::token(&server, "prober", SCOPES).await;
    assert_eq!(
        verify(&server, &token, "10001", "2468", "+15550000000").await,
        "ok"
    );

    // 25 guesses at other accounts, each "from" a number never seen before.
    for i in 0..25u32 {
        let account = format!("2{i:04}");
        let ani = format!("+1555{i:07}");
        assert_eq!(verify(&server, &token, &account, "0000", &ani).await, "no");
    }
    // The same client's right PIN is no longer accepted: the client is one caller, over its
    // per-caller-number limits.
    assert_eq!(
        verify(&server, &token, "10001", "2468", "+15559999999").await,
        "no"
    );
    let records = support::verify_records(&server).await;
    let last = records.last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.2.as_str()),
        ("failure", "rate_limited")
    );
    // Every record names the client as the caller, not the number the request claimed.
    let actors: Vec<String> = ivrauth_core::ports::AuditStore::read_audit(server.store().as_ref())
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "identity.verify")
        .map(|r| r.actor)
        .collect();
    assert!(
        actors.iter().all(|a| a.starts_with("caller:client:")),
        "{actors:?}"
    );

    // Another client is another caller: it is not limited by the first one's guesses.
    let other = support::token(&server, "other", SCOPES).await;
    assert_eq!(
        verify(&server, &other, "10001", "2468", "+15559999999").await,
        "ok"
    );
}

#[tokio::test]
async fn simulating_identity_actions_needs_the_identity_simulate_scope() {
    let server = support::server(LockoutPolicy::default()).await;
    let token = support::token(&server, "plain", &["flow:simulate"]).await;
    let body = json!({"flow": verify_flow(false), "input": {"account": "10001", "pin": "2468"}});
    let (status, err) = simulate(&server, &token, &body).await;
    assert_eq!(status, 403, "{err}");
    assert!(err.to_string().contains("identity:simulate"), "{err}");
    // Nothing reached the directory.
    assert!(support::verify_records(&server).await.is_empty());

    // A flow without such actions still runs for that client.
    let plain = json!({"flow": {"name": "p", "startNode": "s", "nodes": {"s": {"type": "start"}, "e": {"type": "end"}}, "edges": [{"source": "s", "target": "e"}]}});
    let (status, sim) = simulate(&server, &token, &plain).await;
    assert_eq!(status, 200, "{sim}");
}

#[tokio::test]
async fn simulate_identity_off_refuses_like_a_missing_scope() {
    let server = TestServer::builder()
        .identity(|store, clock| support::service(store, clock, LockoutPolicy::default()))
        .map_state(|state, _, _| state.with_simulate_identity(SimulateIdentity::Off))
        .start()
        .await
        .unwrap();
    support::add_accounts(server.store()).await;
    let token = support::token(&server, "c", SCOPES).await;
    let body = json!({"flow": verify_flow(false), "input": {"account": "10001", "pin": "2468"}});
    let (status, err) = simulate(&server, &token, &body).await;
    assert_eq!(status, 403, "{err}");
    assert!(err.to_string().contains("identity:simulate"), "{err}");
    assert!(support::verify_records(&server).await.is_empty());
}

#[tokio::test]
async fn simulate_identity_demo_never_reaches_the_live_directory() {
    let server = TestServer::builder()
        .identity(|store, clock| support::service(store, clock, LockoutPolicy::default()))
        .map_state(|state, store, clock| {
            let mut demo = support::service(store, clock, LockoutPolicy::default());
            demo.provider = Arc::new(DemoDirectory);
            demo.account_key = ivrauth_core::identity::AccountKey::new(vec![0x11; 32]);
            state.with_simulate_identity(SimulateIdentity::Demo(Arc::new(demo)))
        })
        .start()
        .await
        .unwrap();
    support::add_accounts(server.store()).await;
    let token = support::token(&server, "c", SCOPES).await;
    // The demo directory's account and PIN verify ...
    let demo_pin = ivrauth_server::http::demo::DEMO_PIN;
    assert_eq!(verify(&server, &token, "10001", demo_pin, "").await, "ok");
    // ... a live account's PIN does not (10002 is Grace Hopper with 1357 in the live
    // directory, 1357 in the demo one too: use the live-only account `ab12`).
    assert_eq!(verify(&server, &token, "ab12", "9753", "").await, "no");
    let records = support::verify_records(&server).await;
    assert_eq!(records.last().unwrap().2, "unknown_account");
    // The audit names the demo directory as the provider.
    let providers: Vec<String> =
        ivrauth_core::ports::AuditStore::read_audit(server.store().as_ref())
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event == "identity.verify")
            .map(|r| r.detail["provider"].as_str().unwrap_or_default().to_owned())
            .collect();
    assert_eq!(providers, ["demo", "demo"]);
}

#[tokio::test]
async fn identity_lookup_is_rate_limited_per_caller_key() {
    let server = TestServer::builder()
        .identity(|store, clock| {
            let mut s = support::service(store, clock, LockoutPolicy::default());
            s.lookup_limiter = ivrauth_server::app::identity::lookup_limiter(3);
            s
        })
        .start()
        .await
        .unwrap();
    support::add_accounts(server.store()).await;
    let token = support::token(&server, "c", SCOPES).await;
    let flow = json!({
        "name": "lookup", "startNode": "s",
        "inputSchema": {"type": "object", "properties": {"account": {"type": "string"}}},
        "nodes": {
            "s": {"type": "start"},
            "l": {"type": "action", "properties": {"action": "identity.lookup", "inputs": {"account": "{{account}}"}}},
            "e": {"type": "end"}
        },
        "edges": [{"source": "s", "target": "l"}, {"source": "l", "target": "e"}]
    });
    let mut errors = Vec::new();
    for i in 0..5 {
        let body = json!({"flow": flow, "input": {"account": "10001"}, "contact": {"ani": format!("+1555000{i:04}")}});
        let (status, sim) = simulate(&server, &token, &body).await;
        assert_eq!(status, 200, "{sim}");
        let output = &sim["trace"][1]["output"];
        errors.push(
            output["error"]["code"]
                .as_str()
                .unwrap_or("none")
                .to_owned(),
        );
    }
    assert_eq!(
        errors,
        ["none", "none", "none", "rate_limited", "rate_limited"]
    );
}

#[tokio::test]
async fn the_demo_client_of_an_earlier_data_directory_gains_identity_simulate() {
    use ivrauth_core::ports::{ClientRecord, ClientStore as _};
    let server = TestServer::builder()
        .config(|c| c.demo = true)
        .start()
        .await
        .unwrap();
    // As an earlier version left it: the demo client without the new scope.
    server
        .store()
        .create_client(&ClientRecord {
            id: "demo".into(),
            name: "demo".into(),
            scopes: vec!["flow:read".into(), "flow:simulate".into()],
            secret_hash: "old".into(),
            previous_secret_hash: None,
            previous_valid_until: None,
            created_at: ivrauth_testkit::TEST_EPOCH,
            revoked_at: None,
        })
        .await
        .unwrap();
    ivrauth_server::http::demo::install(server.state(), server.base_url())
        .await
        .unwrap();
    let scopes = server
        .store()
        .get_client("demo")
        .await
        .unwrap()
        .unwrap()
        .scopes;
    assert!(
        scopes.iter().any(|s| s == "identity:simulate"),
        "{scopes:?}"
    );
}
