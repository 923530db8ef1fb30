#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `ivrauth` binary end to end, against temporary data directories.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The binary with a clean environment: no `IVRAUTH_*` variables, run in `cwd` (so no stray
/// `ivrauth.toml` is picked up), quiet logs.
use crate::support::ivrauth;

fn run(cwd: &Path, args: &[&str]) -> Output {
    ivrauth(cwd).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

use crate::support::stderr;

/// `client create --json` in `dir/data`; returns (id, secret).
fn create_client(dir: &Path, scopes: &str) -> (String, String) {
    let out = run(
        dir,
        &[
            "client",
            "create",
            "--name",
            "ops app",
            "--scopes",
            scopes,
            "--json",
            "--data-dir",
            "data",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn client_create_json_prints_exactly_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "app",
            "--scopes",
            "flow:read,flow:write",
            "--json",
            "--data-dir",
            "data",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.ends_with('\n'));
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2);
    let id = obj["client_id"].as_str().unwrap();
    let secret = obj["client_secret"].as_str().unwrap();
    assert!(id.starts_with("cli_") && id.len() == 20, "{id}");
    assert_eq!(secret.len(), 43);
    assert!(ivrauth_core::clients::is_valid_credential_text(id));
    assert!(ivrauth_core::clients::is_valid_credential_text(secret));
    assert!(stderr(&out).contains("not shown again"));
}

#[test]
fn client_create_rejects_unknown_scope_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "app",
            "--scopes",
            "flow:read,flow:admin",
            "--data-dir",
            "data",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("flow:admin"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn client_list_revoke_and_rotate_never_show_old_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(
        d,
        &[
            "client",
            "create",
            "--name",
            "human",
            "--scopes",
            "flow:read",
            "--data-dir",
            "data",
        ],
    );
    assert!(out.status.success());
    let human = stdout(&out);
    let secret = human
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .unwrap()
        .trim()
        .to_owned();
    let id = human
        .lines()
        .find_map(|l| l.strip_prefix("client_id:"))
        .unwrap()
        .trim()
        .to_owned();

    for args in [
        &["client", "list", "--data-dir", "data"][..],
        &["client", "list", "--json", "--data-dir", "data"][..],
    ] {
        let out = run(d, args);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&id) && text.contains("human") && text.contains("flow:read"),
            "{text}"
        );
        assert!(!text.contains(&secret), "secret in {text}");
        assert!(!stderr(&out).contains(&secret));
    }

    let out = run(
        d,
        &[
            "client",
            "rotate-secret",
            &id,
            "--json",
            "--data-dir",
            "data",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let new_secret = v["client_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert!(!stdout(&out).contains(&secret));

    let out = run(d, &["client", "revoke", &id, "--data-dir", "data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(d, &["client", "list", "--json", "--data-dir", "data"]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(v[0]["revoked_at"].is_string());
    assert!(!stdout(&out).contains(new_secret));

    let out = run(
        d,
        &[
            "client",
            "revoke",
            "cli_nosuchclient00",
            "--data-dir",
            "data",
        ],
    );
    assert!(!out.status.success());
    // A data directory without a database is an error, not a new empty store.
    let out = run(d, &["client", "list", "--data-dir", "elsewhere"]);
    assert!(!out.status.success());
    assert!(!d.join("elsewhere").exists());
}

#[tokio::test]
async fn audit_verify_intact_then_names_the_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (id, _) = create_client(d, "flow:read");
    assert!(
        run(d, &["client", "rotate-secret", &id, "--data-dir", "data"])
            .status
            .success()
    );
    assert!(run(d, &["client", "revoke", &id, "--data-dir", "data"])
        .status
        .success());

    let out = run(d, &["audit", "verify", "--data-dir", "data"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).trim(), "audit chain intact: 3 records");

    // Tamper with the second record, as someone with write access to the file could.
    let db = d.join("data").join("ivrauth.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rw", db.display()))
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER IF EXISTS audit_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit SET detail = '{\"previous_valid_until\":\"2099-01-01T00:00:00.000Z\"}' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let out = run(d, &["audit", "verify", "--data-dir", "data"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // How much of the chain still holds goes to stdout, the broken record to stderr.
    let text = stdout(&out);
    assert_eq!(text.trim(), "audit chain: 1 record intact before the break");
    let err = stderr(&out);
    assert!(err.contains("BROKEN at record 2"), "{err}");
    assert!(!err.contains("intact"), "{err}");
}

#[test]
fn client_commands_leave_their_writes_in_the_database_file() {
    // A copy of ivrauth.db alone (no -wal file next to it) has everything the commands wrote.
    // Without a close, whether the WAL is checkpointed at exit is a race, hence several rounds.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let copy = d.join("copy");
    std::fs::create_dir(&copy).unwrap();
    let mut ids = Vec::new();
    for round in 1..=5 {
        let (id, _) = create_client(d, "flow:read");
        ids.push(id);
        std::fs::copy(d.join("data").join("ivrauth.db"), copy.join("ivrauth.db")).unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(copy.join(format!("ivrauth.db{suffix}")));
        }
        let out = run(d, &["client", "list", "--json", "--data-dir", "copy"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        for id in &ids {
            assert!(
                text.contains(id.as_str()),
                "round {round}: {id} missing from {text}"
            );
        }
        let out = run(d, &["audit", "verify", "--data-dir", "copy"]);
        assert_eq!(
            stdout(&out).trim(),
            format!("audit chain intact: {round} records")
        );
    }
}

#[test]
fn rotate_secret_during_an_overlap_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (id, _) = create_client(d, "flow:read");
    let rotate = |extra: &[&str]| {
        let mut args = vec!["client", "rotate-secret", id.as_str(), "--data-dir", "data"];
        args.extend_from_slice(extra);
        run(d, &args)
    };

    let out = rotate(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let until = v["previous_valid_until"].as_str().unwrap().to_owned();

    // The secret replaced just now must keep working until `until`: a second rotation would
    // end that at once, so it is refused, naming when the overlap ends.
    let out = rotate(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&until) && err.contains("--force"), "{err}");

    let out = rotate(&["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("the previous secret stops working at ")),
        "{text}"
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));

    // Without an overlap (0 s), rotations follow each other freely.
    std::fs::write(
        d.join("ivrauth.toml"),
        "[auth]\nsecret_rotation_overlap_secs = 0\n",
    )
    .unwrap();
    let (id2, _) = create_client(d, "flow:read");
    for _ in 0..2 {
        let out = run(d, &["client", "rotate-secret", &id2, "--data-dir", "data"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("the previous secret no longer works"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn flow_commands_refuse_plain_http_to_a_remote_server() {
    let dir = tempfile::tempdir().unwrap();
    // 192.0.2.0/24 is reserved for documentation: nothing is ever reached there.
    let out = ivrauth(dir.path())
        .args([
            "flow",
            "simulate",
            "--flow-id",
            "f",
            "--server",
            "http://192.0.2.1:8080",
        ])
        .env("IVRAUTH_CLIENT_ID", "cli_x")
        .env("IVRAUTH_CLIENT_SECRET", "canary-secret-1234")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("plain http") && err.contains("--insecure") && err.contains("https://"),
        "{err}"
    );
    assert!(!err.contains("canary-secret-1234"));
}

#[test]
fn flow_commands_refuse_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("flow.json"), "{}").unwrap();
    let out = run(
        d,
        &["flow", "validate", "flow.json", "--config", "ivrauth.toml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--config") && err.contains("IVRAUTH_SERVER"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    let out = run(d, &["flow", "simulate", "--help"]);
    assert!(stdout(&out).contains("refuse --config"), "{}", stdout(&out));
}

#[test]
fn flow_command_variables_are_not_warned_about_by_other_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create_client(d, "flow:read");
    let out = ivrauth(d)
        .args(["client", "list", "--data-dir", "data"])
        .env("IVRAUTH_SERVER", "https://ivrauth.example.com")
        .env("IVRAUTH_CLIENT_ID", "cli_x")
        .env("IVRAUTH_CLIENT_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("ignoring"), "{}", stderr(&out));
}

#[test]
fn serve_prints_the_listening_line_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ivrauth(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("ivrauth listening on http://")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected first line {line:?}")
        });
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    // The server answers.
    let health = std::net::TcpStream::connect(addr).map(|mut s| {
        use std::io::{Read as _, Write as _};
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    });
    let health = health.unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"ok\""),
        "{health}"
    );

    // SIGTERM stops it gracefully.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if term.map(|s| s.success()).unwrap_or(false) {
        // Wait for the exit on another thread, so the test waits for the event, not for time.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(status) => {
                let status = status.unwrap();
                assert!(status.success(), "{status}");
            }
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("server did not stop on SIGTERM");
            }
        }
    } else {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn bad_config_reports_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.toml"),
        "[server]\nlisten = \"not an address\"\nport = 8080\n\n[auth]\ntoken_ttl_secs = 0\nrate_limit_burst = \"lots\"\n",
    )
    .unwrap();
    let out = ivrauth(d)
        .args(["serve", "--config", "bad.toml", "--data-dir", "data"])
        .env("IVRAUTH_RATE_LIMIT_PER_SEC", "-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("5 problems"), "{err}");
    for needle in [
        "listen",
        "unknown key `port`",
        "token_ttl_secs",
        "rate_limit_burst",
        "IVRAUTH_RATE_LIMIT_PER_SEC",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
    assert!(
        !d.join("data").exists(),
        "nothing is opened with a bad config"
    );

    // `ivrauth.toml` in the working directory is read too, and a named file must exist.
    std::fs::write(d.join("ivrauth.toml"), "[nope]\n").unwrap();
    let out = run(d, &["client", "list", "--data-dir", "data"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("[nope]"), "{}", stderr(&out));
    let out = run(d, &["client", "list", "--config", "missing.toml"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.toml"));
}

/// Issue 9: `client create --scopes flow:manage` is accepted, and that client deploys and
/// simulates through the real server with the `flow` commands (whose token asks for no
/// scope); the trace table names nodes by their key (`http_auth`), not their inner id.
#[tokio::test(flavor = "multi_thread")]
async fn a_flow_manage_client_deploys_and_simulates_and_the_table_shows_node_keys_issue_9() {
    let idp = ivrauth_testkit::identity::IdentityServer::start("testuser", "pw", "tok")
        .await
        .unwrap();
    let server = ivrauth_testkit::TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = server.data_dir().to_str().unwrap().to_owned();
    let out = run(
        d,
        &[
            "client",
            "create",
            "--name",
            "manager",
            "--scopes",
            "flow:manage",
            "--json",
            "--data-dir",
            &data,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let (id, secret) = (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    );
    let out = run(d, &["client", "list", "--json", "--data-dir", &data]);
    let listed: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(listed[0]["scopes"], serde_json::json!(["flow:manage"]));

    let mut flow: Value =
        serde_json::from_str(include_str!("../../../../examples/seed-auth-flow.json")).unwrap();
    flow["nodes"]["http_auth"]["properties"]["url"] = serde_json::json!(idp.url());
    std::fs::write(d.join("seed.json"), flow.to_string()).unwrap();
    let flow_cmd = |args: &[&str]| {
        ivrauth(d)
            .args(args)
            .args(["--server", server.base_url()])
            .env("IVRAUTH_CLIENT_ID", &id)
            .env("IVRAUTH_CLIENT_SECRET", &secret)
            .output()
            .unwrap()
    };
    let out = flow_cmd(&["flow", "deploy", "seed.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deployed = stdout(&out);
    let flow_id = deployed
        .strip_prefix("deployed flow ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("{deployed}"))
        .to_owned();

    let input = r#"{"username":"testuser","password":"pw"}"#;
    let out = flow_cmd(&["flow", "simulate", "--flow-id", &flow_id, "--input", input]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let node_column: Vec<&str> = table
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("outcome:"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        node_column,
        [
            "start",
            "http_auth",
            "check_auth",
            "bind_session",
            "handle_reset",
            "audit_log",
            "end_success"
        ],
        "{table}"
    );
    assert!(!table.contains("http_auth_provider"), "{table}");
    assert!(
        table.contains("outcome: end_success (status 200)"),
        "{table}"
    );
}
