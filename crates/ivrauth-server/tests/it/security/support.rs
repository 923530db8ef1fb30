//! A server with the built-in directory holding three accounts, and helpers to simulate
//! identity flows against it.

use std::sync::Arc;

use serde_json::{json, Value};

use ivrauth_core::identity::{AccountNumber, HashParams, LockoutPolicy};
use ivrauth_core::ports::{AccountRecord, AccountStore as _, AuditStore as _};
use ivrauth_core::Secret;
use ivrauth_server::app::identity::IdentityService;
use ivrauth_store::directory::hash_pin;
use ivrauth_testkit::{TestServer, TEST_EPOCH};

pub const CHEAP: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// Account, name, PIN.
pub const ACCOUNTS: &[(&str, &str, &str)] = &[
    ("10001", "Ada Lovelace", "2468"),
    ("10002", "Grace Hopper", "1357"),
    ("ab12", "Alan Turing", "9753"),
];

/// The identity service tests use: the built-in directory on the server's store.
pub fn service(
    store: &Arc<ivrauth_store::SqliteStore>,
    clock: &ivrauth_testkit::FakeClock,
    policy: LockoutPolicy,
) -> IdentityService {
    ivrauth_testkit::builtin_identity(store, clock, CHEAP, policy).unwrap()
}

pub async fn add_accounts(store: &ivrauth_store::SqliteStore) {
    for (account, name, pin) in ACCOUNTS {
        let record = AccountRecord {
            account: AccountNumber::parse(account).unwrap(),
            name: (*name).to_owned(),
            greeting: None,
            phone: Some("+15550100001".to_owned()),
            email: None,
            phone_verified: true,
            email_verified: false,
            disabled: false,
            pin_hash: Some(hash_pin(&Secret::new((*pin).to_owned()), CHEAP).unwrap()),
            pin_history: Vec::new(),
            created_at: TEST_EPOCH,
            updated_at: TEST_EPOCH,
        };
        store.create_account(&record).await.unwrap();
    }
}

/// A server whose identity actions use [`service`] with `policy`, its accounts added.
pub async fn server(policy: LockoutPolicy) -> TestServer {
    let server = TestServer::builder()
        .identity(move |store, clock| service(store, clock, policy))
        .start()
        .await
        .unwrap();
    add_accounts(server.store()).await;
    server
}

/// A token of a new client with `scopes`.
pub async fn token(server: &TestServer, name: &str, scopes: &[&str]) -> String {
    let (id, secret) = server.create_client(name, scopes).await.unwrap();
    server.token(&id, &secret, None).await.unwrap()
}

/// One `identity.verify` of `{{account}}` with `{{pin}}` (secure): ends at `ok` or `no`.
pub fn verify_flow(account_secure: bool) -> Value {
    json!({
        "name": "verify", "startNode": "start",
        "inputSchema": {"type": "object", "properties": {
            "account": {"type": "string", "x-secure": account_secure},
            "pin": {"type": "string", "x-secure": true}
        }, "required": ["account", "pin"]},
        "nodes": {
            "start": {"type": "start"},
            "v": {"type": "action", "properties": {"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}"}}},
            "c": {"type": "condition", "properties": {"conditions": [{"name": "ok", "expression": "{{v.verified}} == true"}]}},
            "ok": {"type": "end", "properties": {"statusCode": 200}},
            "no": {"type": "end", "properties": {"statusCode": 401}}
        },
        "edges": [
            {"source": "start", "target": "v"},
            {"source": "v", "target": "c"},
            {"source": "c", "target": "ok", "condition": "ok"},
            {"source": "c", "target": "no", "condition": "!ok"}
        ]
    })
}

/// POST a simulation; the status and the body.
pub async fn simulate(server: &TestServer, token: &str, body: &Value) -> (u16, Value) {
    let res = server
        .http()
        .post(server.url("/api/v2/flows/simulate"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Simulate [`verify_flow`] for `account`/`pin` with `contact.ani` = `ani`; the end node.
pub async fn verify(
    server: &TestServer,
    token: &str,
    account: &str,
    pin: &str,
    ani: &str,
) -> String {
    let body = json!({"flow": verify_flow(false), "input": {"account": account, "pin": pin}, "contact": {"ani": ani}});
    let (status, sim) = simulate(server, token, &body).await;
    assert_eq!(status, 200, "{sim}");
    sim["outcome"]["endNode"].as_str().unwrap().to_owned()
}

/// `(subject, outcome, reason)` of every `identity.verify` audit record, in order.
pub async fn verify_records(server: &TestServer) -> Vec<(String, String, String)> {
    server
        .store()
        .read_audit()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "identity.verify")
        .map(|r| {
            (
                r.subject,
                r.outcome,
                r.detail["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
