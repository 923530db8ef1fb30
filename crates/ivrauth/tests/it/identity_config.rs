#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `[identity]` configuration through the real binary: the example config serves with
//! the built-in directory, PINs set by `ivrauth account` with the configured hash
//! parameters verify through `serve`, a bad `[identity]` reports every problem at once, and
//! a provider that fails its health check stops `serve` at start-up, naming it.
//!
//! Nothing here sleeps: the tests wait for events (a line on stdout, the process's exit)
//! on channels, each with a deadline.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use ivrauth_core::ports::AccountStore as _;
use ivrauth_store::SqliteStore;

/// How long a start-up or a shutdown may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// Appears in secrets only: it must never be printed.
const CANARY: &str = "Canary-Bind-Pw-3c9d";

/// The binary, logging at info (these tests read its start-up lines).
fn ivrauth(cwd: &Path) -> Command {
    let mut cmd = crate::support::ivrauth(cwd);
    cmd.env("RUST_LOG", "info");
    cmd
}

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml")
}

/// Read all of `r` on a thread.
fn drain(r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut r = r;
        let _ = r.read_to_string(&mut text);
        text
    })
}

/// Wait for `child` to exit, at most `DEADLINE` (then kill it and fail).
fn wait_for_exit(child: Child) -> ExitStatus {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("ivrauth did not exit within {DEADLINE:?}");
        }
    }
}

/// A running `ivrauth serve`.
struct Server {
    child: Option<Child>,
    base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Start `serve` with `args` and wait for its listening line.
    fn start(cwd: &Path, args: &[&str]) -> Server {
        let mut child = ivrauth(cwd)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = drain(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = tx.send(first);
            // Keep reading, so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let first = rx.recv_timeout(DEADLINE);
        let base = first
            .as_deref()
            .ok()
            .and_then(|l| l.trim().strip_prefix("ivrauth listening on "))
            .map(str::to_owned);
        let Some(base) = base else {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "no listening line ({first:?}, {status:?}); stderr:\n{}",
                stderr.join().unwrap()
            );
        };
        Server {
            child: Some(child),
            base,
            stderr: Some(stderr),
        }
    }

    /// SIGTERM, wait for a clean exit; returns stderr.
    fn stop(mut self) -> String {
        let child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = wait_for_exit(child);
        let stderr = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "{status}; stderr:\n{stderr}");
        stderr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn healthz(base: &str) -> String {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

fn output_text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn example_config_serves_with_the_builtin_provider() {
    let dir = tempfile::tempdir().unwrap();
    let example = example_config();
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            example.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
        ],
    );
    let health = healthz(&server.base);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let stderr = server.stop();
    assert!(
        stderr.contains("identity provider ready") && stderr.contains("builtin"),
        "{stderr}"
    );
}

/// `config.example.toml` copied as it is (its `./data` is then the temporary directory's)
/// starts the server: only the port is moved, by the flag, to a free one.
#[test]
fn a_copy_of_the_example_config_starts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.toml");
    std::fs::copy(example_config(), &copy).unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            copy.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let health = healthz(&server.base);
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"ok\""),
        "{health}"
    );
    assert!(dir.path().join("data").join("ivrauth.db").is_file());
    let stderr = server.stop();
    assert!(!stderr.contains("ignoring"), "{stderr}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(example_config()).unwrap()
    );
}

/// A flow that verifies `account`/`pin` with `identity.verify`.
fn verify_flow() -> Value {
    json!({
        "name": "verify", "startNode": "start",
        "inputSchema": {"type": "object", "properties": {"account": {"type": "string"}, "pin": {"type": "string", "x-secure": true}}, "required": ["account", "pin"]},
        "nodes": {
            "start": {"type": "start"},
            "verify": {"type": "action", "properties": {"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}"}}},
            "check": {"type": "condition", "properties": {"conditions": [{"name": "ok", "expression": "{{verify.verified}} == true"}]}},
            "yes": {"type": "end", "properties": {"statusCode": 200}},
            "no": {"type": "end", "properties": {"statusCode": 401}}
        },
        "edges": [
            {"source": "start", "target": "verify"},
            {"source": "verify", "target": "check"},
            {"source": "check", "target": "yes", "condition": "ok"},
            {"source": "check", "target": "no", "condition": "!ok"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn builtin_provider_verifies_pins_hashed_with_the_configured_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ivrauth.toml"),
        "[identity]\nprovider = \"builtin\"\nmin_verify_ms = 0\nhash_m_kib = 1024\nhash_t = 1\nhash_p = 1\nhash_pool_size = 2\n\n[identity.lockout]\nper_call_failures = 4\n",
    )
    .unwrap();

    // `account add` hashes with the configured parameters.
    let mut add = ivrauth(d);
    add.args([
        "account",
        "add",
        "4242",
        "--name",
        "Grace Hopper",
        "--data-dir",
        "data",
    ]);
    let out = crate::support::with_stdin(add, "1357\n");
    assert!(out.status.success(), "{:?}", output_text(&out));
    {
        let store = SqliteStore::open(&d.join("data")).await.unwrap();
        let record = store.get_account("4242").await.unwrap().unwrap();
        let hash = record.pin_hash.unwrap();
        assert!(hash.contains("m=1024,t=1,p=1"), "{hash}");
        store.close().await;
    }

    let out = ivrauth(d)
        .args([
            "client",
            "create",
            "--name",
            "tester",
            "--scopes",
            "flow:read,flow:write,flow:simulate,identity:simulate",
            "--json",
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, secret) = (
        creds["client_id"].as_str().unwrap().to_owned(),
        creds["client_secret"].as_str().unwrap().to_owned(),
    );

    let server = Server::start(d, &["--listen", "127.0.0.1:0", "--data-dir", "data"]);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}/auth/v3/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    let simulate = |pin: &'static str| {
        http.post(format!("{base}/api/v2/flows/simulate"))
            .bearer_auth(&access)
            .json(&json!({"flow": verify_flow(), "input": {"account": "4242", "pin": pin}}))
            .send()
    };

    let res = simulate("1357").await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["outcome"]["endNode"], "yes", "{body}");

    let res = simulate("0000").await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["outcome"]["endNode"], "no", "{body}");
    // The configured per-call limit (4) is what the caller is told is left.
    assert!(body.to_string().contains("\"attemptsLeft\":3"), "{body}");

    server.stop();
}

#[test]
fn bad_identity_config_reports_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.toml"),
        format!(
            "[identity]\nprovider = \"kerberos\"\nmin_verify_ms = -1\n\n[identity.lockout]\nmax_failures = 0\nsurprise = 1\n\n[identity.ldap]\nbind_dn = \"cn=svc,dc=example,dc=com\"\nbind_password = \"{CANARY}\"\nbase_dn = \"dc=example,dc=com\"\n"
        ),
    )
    .unwrap();
    let out = ivrauth(d)
        .args(["serve", "--config", "bad.toml", "--data-dir", "data"])
        .env("IVRAUTH_IDENTITY_HASH_POOL_SIZE", "none")
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("6 problems"), "{stderr}");
    for needle in [
        "unknown provider \"kerberos\"",
        "[identity] min_verify_ms",
        "[identity.lockout] max_failures",
        "[identity.lockout] unknown key `surprise`",
        "[identity.ldap] url is required",
        "IVRAUTH_IDENTITY_HASH_POOL_SIZE",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from {stderr}");
    }
    assert!(!stderr.contains(CANARY), "{stderr}");
    assert!(
        !d.join("data").exists(),
        "nothing is opened with a bad config"
    );

    // The LDAP provider selected without a URL.
    std::fs::write(
        d.join("nourl.toml"),
        format!(
            "[identity]\nprovider = \"ldap\"\n\n[identity.ldap]\nbind_dn = \"cn=svc,dc=example,dc=com\"\nbind_password = \"{CANARY}\"\nbase_dn = \"dc=example,dc=com\"\n"
        ),
    )
    .unwrap();
    let out = ivrauth(d)
        .args(["serve", "--config", "nourl.toml", "--data-dir", "data"])
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("1 problem"), "{stderr}");
    assert!(
        stderr.contains("[identity.ldap] url is required (or IVRAUTH_LDAP_URL)"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY), "{stderr}");
}

/// Run `serve` with `config` and wait (with a deadline) for it to exit on its own.
fn serve_until_exit(d: &Path, config: &str) -> (ExitStatus, String, String) {
    std::fs::write(d.join("ivrauth.toml"), config).unwrap();
    let mut child = ivrauth(d)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_for_exit(child);
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

#[test]
fn unreachable_ldap_provider_stops_serve_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let started = std::time::Instant::now();
    let (status, stdout, stderr) = serve_until_exit(
        dir.path(),
        &format!(
            "[identity]\nprovider = \"ldap\"\n\n[identity.ldap]\nurl = \"ldap://127.0.0.1:{port}\"\nbind_dn = \"cn=svc,dc=example,dc=com\"\nbind_password = \"{CANARY}\"\nbase_dn = \"dc=example,dc=com\"\ntimeout_ms = 1000\n"
        ),
    );
    assert!(!status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !stdout.contains("listening"),
        "it must not serve without its provider: {stdout}"
    );
    assert!(
        stderr
            .contains("identity provider `ldap` (LDAP directory) failed its start-up health check"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY), "{stderr}");
}

#[test]
fn unhealthy_http_provider_stops_serve_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let (status, stdout, stderr) = serve_until_exit(
        dir.path(),
        &format!(
            "[identity]\nprovider = \"http\"\n\n[identity.http]\nurl = \"http://127.0.0.1:{port}/token\"\nhealth_url = \"http://127.0.0.1:{port}/health\"\ntimeout_ms = 1000\n"
        ),
    );
    assert!(!status.success(), "{status}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains(
            "identity provider `http` (HTTP identity endpoint) failed its start-up health check"
        ),
        "{stderr}"
    );
}
