//! Issue 8, item 7: one account key everywhere. The server's verifications and the
//! operator's `ivrauth account show|unlock` agree on which counters belong to `AB12`.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use serde_json::{Map, Value};

use ivrauth_core::engine::ActionCall;
use ivrauth_core::identity::{HashParams, LockoutPolicy};
use ivrauth_core::Secret;
use ivrauth_server::app::identity::{CallContext, IdentityService};
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};

use crate::support::ivrauth;

fn run(cwd: &Path, args: &[&str]) -> Output {
    let out = ivrauth(cwd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn show(cwd: &Path, account: &str) -> Value {
    let out = run(
        cwd,
        &["account", "show", account, "--json", "--data-dir", "data"],
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The server's identity service on `data`, keyed as `serve` keys it.
async fn service(data: &Path) -> IdentityService {
    let store = Arc::new(SqliteStore::open(data).await.unwrap());
    let clock: Arc<dyn ivrauth_core::time::Clock> = Arc::new(ivrauth_connect::SystemClock);
    let cheap = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let directory =
        BuiltinDirectory::new(store.clone(), cheap, HashPool::new(1), clock.clone()).unwrap();
    let text = std::fs::read_to_string(data.join("call-session.key")).unwrap();
    let keys = ivrauth_server::app::seal::SessionKeys::from_base64(&[text.trim()]).unwrap();
    IdentityService {
        provider: Arc::new(directory),
        store,
        policy: LockoutPolicy::default(),
        min_verify_duration: std::time::Duration::ZERO,
        clock,
        sleeper: Arc::new(ivrauth_connect::TokioSleeper),
        account_rules: Default::default(),
        account_key: keys.account_key(),
        lookup_limiter: ivrauth_server::app::identity::lookup_limiter(60),
    }
}

async fn wrong_pin(service: &Arc<IdentityService>, account: &str, call: u32) -> bool {
    let mut inputs = Map::new();
    inputs.insert("account".into(), account.into());
    let action = ActionCall {
        node_id: "v".into(),
        action: "identity.verify",
        inputs,
        secrets: vec![("secret", Secret::new("0000".to_owned()))],
    };
    let ctx = CallContext {
        call_id: format!("call-{call}"),
        ani: "+15550100123".into(),
        failures: 0,
    };
    let (result, _) = service.perform(action, ctx).await;
    result.unwrap()["verified"] == true
}

#[tokio::test]
async fn five_failures_for_ab12_are_shown_and_lifted_under_any_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut add = ivrauth(d);
    add.args([
        "account",
        "add",
        "AB12",
        "--name",
        "Alan Turing",
        "--data-dir",
        "data",
    ]);
    assert!(crate::support::with_stdin(add, "975310\n").status.success());
    // The account is stored in its one form; the key file exists once a command needs it.
    assert_eq!(show(d, "AB12")["account_number"], "ab12");

    let service = Arc::new(service(&d.join("data")).await);
    // Failures under both spellings count against one account.
    for (i, spelling) in ["AB12", "ab12", "AB12", " Ab12 ", "AB12"]
        .iter()
        .enumerate()
    {
        assert!(!wrong_pin(&service, spelling, i as u32).await);
    }
    for spelling in ["AB12", "ab12"] {
        let v = show(d, spelling);
        assert_eq!(v["status"], "locked", "{spelling}: {v}");
        assert_eq!(v["failed_attempts"], 5, "{spelling}: {v}");
    }
    run(d, &["account", "unlock", "AB12", "--data-dir", "data"]);
    for spelling in ["AB12", "ab12"] {
        let v = show(d, spelling);
        assert_eq!(v["status"], "active", "{spelling}: {v}");
        assert_eq!(v["failed_attempts"], 0, "{spelling}: {v}");
    }
    // The audit subject is the one form too.
    let audit = ivrauth_core::ports::AuditStore::read_audit(service.store.as_ref())
        .await
        .unwrap();
    let subjects: Vec<&str> = audit
        .iter()
        .filter(|r| r.event == "identity.verify")
        .map(|r| r.subject.as_str())
        .collect();
    assert_eq!(subjects, ["ab12"; 5]);
}

#[tokio::test]
async fn with_case_folding_off_ab12_and_lowercase_are_two_accounts_with_two_counters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ivrauth.toml"),
        "[identity]\naccount_fold_case = false\n",
    )
    .unwrap();
    for (account, pin) in [("AB12", "975310\n"), ("ab12", "135790\n")] {
        let mut add = ivrauth(d);
        add.args([
            "account",
            "add",
            account,
            "--name",
            "Someone",
            "--data-dir",
            "data",
        ]);
        let out = crate::support::with_stdin(add, pin);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(show(d, "AB12")["account_number"], "AB12");
    assert_eq!(show(d, "ab12")["account_number"], "ab12");
    let mut service = service(&d.join("data")).await;
    service.account_rules.fold_case = false;
    let service = Arc::new(service);
    for i in 0..2 {
        assert!(!wrong_pin(&service, "AB12", i).await);
    }
    assert_eq!(show(d, "AB12")["failed_attempts"], 2);
    assert_eq!(show(d, "ab12")["failed_attempts"], 0);
}
