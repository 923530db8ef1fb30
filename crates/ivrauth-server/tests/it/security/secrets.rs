//! Issue 8, item 11: secrets leave when they are done. An account number keyed as a secret
//! keys the counters and the audit by a keyed hash, never in plain text.

use serde_json::json;

use ivrauth_core::identity::LockoutPolicy;

use crate::security::support::{self, simulate, verify_flow};

/// Every byte of every file under `dir`, lossily as text.
fn all_bytes(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

#[tokio::test]
async fn an_account_number_keyed_as_a_secret_is_stored_only_as_a_keyed_hash() {
    const CANARY_ACCOUNT: &str = "58203917";
    const CANARY_PIN: &str = "61937";
    let server = support::server(LockoutPolicy::default()).await;
    let token = support::token(&server, "c", &["flow:simulate", "identity:simulate"]).await;
    for _ in 0..2 {
        let body = json!({"flow": verify_flow(true), "input": {"account": CANARY_ACCOUNT, "pin": CANARY_PIN}});
        let (status, sim) = simulate(&server, &token, &body).await;
        assert_eq!(status, 200, "{sim}");
        assert_eq!(sim["outcome"]["endNode"], "no");
        assert!(!sim.to_string().contains(CANARY_ACCOUNT), "{sim}");
    }
    // The attempts were counted, under the keyed hash.
    let key = ivrauth_testkit::counter_key(CANARY_ACCOUNT);
    let counters = ivrauth_core::ports::LockoutStore::counters(server.store().as_ref(), &key)
        .await
        .unwrap();
    assert_eq!(counters.failed_attempts, 2);
    let records = support::verify_records(&server).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.0 == key), "{records:?}");

    let bytes = all_bytes(server.data_dir());
    assert!(bytes.contains(&key), "the counters are in the files read");
    assert!(
        !bytes.contains(CANARY_ACCOUNT),
        "account number in the database"
    );
    assert!(!bytes.contains(CANARY_PIN), "PIN in the database");
}
