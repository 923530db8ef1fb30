#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `ivrauth account ...` end to end, against temporary data directories (the store is also
//! opened by the test itself while the commands run, as a running server would hold it).

use std::path::Path;
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use ivrauth_core::audit::verify_chain;
use ivrauth_core::identity::{verify_secret, LockoutPolicy};
use ivrauth_core::ports::{AccountStore as _, AuditStore as _, LockoutStore as _};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::UnixMillis;
use ivrauth_store::SqliteStore;
use serde_json::Value;

/// Appears only in rejected rows: it must not be echoed anywhere.
const CANARY_PIN: &str = "864209";

use crate::support::ivrauth;

fn run(cwd: &Path, args: &[&str]) -> Output {
    ivrauth(cwd).args(args).output().unwrap()
}

/// Run with `input` on standard input (a pipe, not a terminal).
fn run_with_stdin(cwd: &Path, args: &[&str], input: &str) -> Output {
    let mut cmd = ivrauth(cwd);
    cmd.args(args);
    crate::support::with_stdin(cmd, input)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

use crate::support::stderr;

fn show(cwd: &Path, account: &str) -> Value {
    let out = run(
        cwd,
        &["account", "show", account, "--json", "--data-dir", "data"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    serde_json::from_str(text.trim()).unwrap()
}

fn now() -> UnixMillis {
    UnixMillis(
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
}

/// Every byte of every file under `dir`, lossily as text.
fn all_bytes(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&all_bytes(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

async fn stored_hash(dir: &Path, account: &str) -> Option<String> {
    let store = SqliteStore::open(&dir.join("data")).await.unwrap();
    let hash = store.get_account(account).await.unwrap().unwrap().pin_hash;
    store.close().await;
    hash
}

#[tokio::test]
async fn import_reports_rejected_rows_without_echoing_pins() {
    let dir = tempfile::tempdir().unwrap();
    let csv = format!(
        "account_number,name,phone,email,pin\n\
         1001,Ada Lovelace,+15550100123,ada@example.com,4321\n\
         *)(uid=*,Mallory,+15550100124,,{CANARY_PIN}\n\
         1003,Bob,555,,2468\n\
         1004,Carol,+15550100125,,12\n\
         1001,Someone Else,+15550100126,,{CANARY_PIN}\n\
         1006,,+15550100127,,1357\n\
         1007,Grace Hopper,,grace@example.com,\n\
         1008,Too,Many,Fields,{CANARY_PIN},extra\n\
         \"1009\",\"Quoted, Name\",\"+4930123456\",,\"97531\"\n"
    );
    std::fs::write(dir.path().join("accounts.csv"), &csv).unwrap();

    let out = run(
        dir.path(),
        &["account", "import", "accounts.csv", "--data-dir", "data"],
    );
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
    assert!(text.contains("imported 3, rejected 6"), "{text}");
    for expected in [
        "line 3: invalid account number",
        "line 4: phone not E.164",
        "line 5: PIN not 4-12 digits",
        "line 6: duplicate account number (first on line 2)",
        "line 7: empty name",
        "line 9: malformed CSV row: expected 5 fields, found 6",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    for line in ["line 2:", "line 8:", "line 10:"] {
        assert!(!text.contains(line), "{line} was imported:\n{text}");
    }
    assert!(!text.contains(CANARY_PIN) && !err.contains(CANARY_PIN));
    assert!(!text.contains("4321") && !err.contains("4321"));

    // The imported PINs verify against what was stored; rows without a PIN have none.
    let ada = stored_hash(dir.path(), "1001").await.unwrap();
    assert!(ada.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ada}");
    assert!(verify_secret(&Secret::new("4321".to_owned()), &ada));
    let quoted = stored_hash(dir.path(), "1009").await.unwrap();
    assert!(verify_secret(&Secret::new("97531".to_owned()), &quoted));
    assert_eq!(stored_hash(dir.path(), "1007").await, None);
    let ada = show(dir.path(), "1001");
    assert_eq!(ada["name"], "Ada Lovelace");
    assert_eq!(ada["status"], "active");
    assert_eq!(ada["pin_set"], true);
    assert_eq!(show(dir.path(), "1009")["name"], "Quoted, Name");

    let out = run(
        dir.path(),
        &["account", "list", "--json", "--data-dir", "data"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let numbers: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["1001", "1007", "1009"]);

    // Importing again: every good row is now a duplicate of a stored account.
    let out = run(
        dir.path(),
        &["account", "import", "accounts.csv", "--data-dir", "data"],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("imported 0, rejected 9"), "{text}");
    assert!(
        text.contains("line 2: duplicate: the account already exists"),
        "{text}"
    );

    // One audit record per import, with counts only; the chain is intact.
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    let audit = store.read_audit().await.unwrap();
    assert_eq!(verify_chain(&audit), Ok(2));
    assert_eq!(audit[0].event, "account.imported");
    assert_eq!(audit[0].detail["imported"], 3);
    assert_eq!(audit[0].detail["rejected"], 6);
    store.close().await;

    // No PIN in plain text in any byte of the data directory.
    let bytes = all_bytes(&dir.path().join("data"));
    // (Only the six-digit canary: shorter PINs may occur by chance in hex ids and hashes.)
    assert!(
        !bytes.contains(CANARY_PIN),
        "the canary PIN is in the database files"
    );
}

#[test]
fn import_refuses_a_wrong_header() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "account,name,phone,email,pin\n1001,Ada,,,4321\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["account", "import", "a.csv", "--data-dir", "data"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("account_number,name,phone,email,pin"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn set_pin_from_stdin_then_show_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "account",
            "add",
            "2001",
            "--name",
            "Ada Lovelace",
            "--phone",
            "+15550100123",
            "--no-pin",
            "--data-dir",
            "data",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = show(dir.path(), "2001");
    assert_eq!(v["pin_set"], false);

    let set = |pin: &str| {
        run_with_stdin(
            dir.path(),
            &["account", "set-pin", "2001", "--data-dir", "data"],
            &format!("{pin}\n"),
        )
    };
    let out = set("135790");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("135790") && !stderr(&out).contains("135790"));
    let v = show(dir.path(), "2001");
    assert_eq!(v["account_number"], "2001");
    assert_eq!(v["status"], "active");
    assert_eq!(v["failed_attempts"], 0);
    assert_eq!(v["locked_until"], Value::Null);
    assert_eq!(v["pin_set"], true);
    assert_eq!(v["greeting"], Value::Null);
    let text = v.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("135790"),
        "{text}"
    );
    let hash = stored_hash(dir.path(), "2001").await.unwrap();
    assert!(verify_secret(&Secret::new("135790".to_owned()), &hash));

    // The same PIN again, and a malformed one, are refused without being echoed.
    for bad in ["135790", "99", "98ab"] {
        let out = set(bad);
        assert!(!out.status.success(), "{bad}");
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(e.contains("PIN"), "{e}");
        assert!(!o.contains(bad) && !e.contains(bad), "{bad} echoed: {o}{e}");
    }
    // CRLF from a Windows pipe is fine.
    let out = set("24680\r");
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stored_hash(dir.path(), "2001").await.unwrap();
    assert!(verify_secret(&Secret::new("24680".to_owned()), &hash));

    let out = run_with_stdin(
        dir.path(),
        &["account", "set-pin", "9999", "--data-dir", "data"],
        "1234\n",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no account 9999"), "{}", stderr(&out));
}

#[tokio::test]
async fn unlock_resets_failed_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_stdin(
        dir.path(),
        &[
            "account",
            "add",
            "3001",
            "--name",
            "Grace Hopper",
            "--data-dir",
            "data",
        ],
        "4321\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stored_hash(dir.path(), "3001").await.is_some());

    // The "server" holds the store open and records failures while the CLI works on it.
    let store = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    let policy = LockoutPolicy::default();
    let key = ivrauth_testkit::data_dir_counter_key(&dir.path().join("data"), "3001").unwrap();
    for _ in 0..policy.max_failures {
        store.record_failure(&key, &policy, now()).await.unwrap();
    }
    let v = show(dir.path(), "3001");
    assert_eq!(v["status"], "locked");
    assert_eq!(v["failed_attempts"], policy.max_failures);
    let until = v["locked_until"].as_str().unwrap();
    assert!(
        until.ends_with('Z') && until.contains('T'),
        "RFC 3339: {until}"
    );

    let out = run(
        dir.path(),
        &["account", "unlock", "3001", "--data-dir", "data"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = show(dir.path(), "3001");
    assert_eq!(v["status"], "active");
    assert_eq!(v["failed_attempts"], 0);
    assert_eq!(v["locked_until"], Value::Null);
    assert_eq!(store.counters(&key).await.unwrap().failed_attempts, 0);

    for (cmd, status) in [("disable", "disabled"), ("enable", "active")] {
        let out = run(dir.path(), &["account", cmd, "3001", "--data-dir", "data"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(show(dir.path(), "3001")["status"], status);
    }
    let out = run(
        dir.path(),
        &["account", "disable", "9999", "--data-dir", "data"],
    );
    assert!(!out.status.success());

    let events: Vec<String> = store
        .read_audit()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        [
            "account.created",
            "account.unlocked",
            "account.disabled",
            "account.enabled"
        ]
    );
    let audit_text = serde_json::to_string(
        &store
            .read_audit()
            .await
            .unwrap()
            .iter()
            .map(|r| r.detail.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!audit_text.contains("4321") && !audit_text.contains("argon2"));
    store.close().await;
}

#[test]
fn account_commands_validate_their_input() {
    let dir = tempfile::tempdir().unwrap();
    // No database: refused, and none is created.
    let out = run(dir.path(), &["account", "list", "--data-dir", "nowhere"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no ivrauth database"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("nowhere").join("ivrauth.db").exists());

    for (args, needle) in [
        (
            vec!["account", "add", "*)(uid=*", "--name", "M", "--no-pin"],
            "invalid account number",
        ),
        (
            vec!["account", "add", "1", "--name", " ", "--no-pin"],
            "empty name",
        ),
        (
            vec![
                "account", "add", "1", "--name", "A", "--phone", "555", "--no-pin",
            ],
            "E.164",
        ),
    ] {
        let mut args = args;
        args.extend(["--data-dir", "data"]);
        let out = run(dir.path(), &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }

    // A PIN is never accepted as an argument.
    let out = run(
        dir.path(),
        &["account", "set-pin", "1", "1234", "--data-dir", "data"],
    );
    assert!(!out.status.success());
}
