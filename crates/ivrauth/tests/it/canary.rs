#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Canary secrets sent through simulations of the real `ivrauth serve` process must appear
//! in no response body, no line of the server's log output (at `trace` level, the most it
//! says) and no byte of any file in its data directory.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use ivrauth_testkit::identity::IdentityServer;

const CANARY: &str = "Canary-Pw-7f3a9c1e";
const CANARY_NEW: &str = "Canary-New-44d0b2";
const CANARY_TOKEN: &str = "Canary-Token-91ee5c";

/// The binary at its default log level (these tests search everything it logs).
fn ivrauth(cwd: &Path) -> Command {
    let mut cmd = crate::support::ivrauth(cwd);
    cmd.env_remove("RUST_LOG");
    cmd
}

fn drain(r: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut r = r;
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_secrets_appear_in_no_response_log_or_database_byte() {
    let dir = tempfile::tempdir().unwrap();
    let idp = IdentityServer::start("canary-user", CANARY, CANARY_TOKEN)
        .await
        .unwrap();

    let out = ivrauth(dir.path())
        .args([
            "client",
            "create",
            "--name",
            "canary",
            "--scopes",
            "flow:read,flow:write,flow:simulate,identity:simulate",
            "--json",
            "--data-dir",
            "data",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, secret) = (
        creds["client_id"].as_str().unwrap().to_owned(),
        creds["client_secret"].as_str().unwrap().to_owned(),
    );

    let mut child = ivrauth(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let stdout_rest = drain(stdout);
    let stderr = drain(child.stderr.take().unwrap());
    let Some(addr) = first
        .trim()
        .strip_prefix("ivrauth listening on ")
        .map(str::to_owned)
    else {
        stop(child);
        panic!("unexpected first line {first:?}");
    };

    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{addr}/auth/v3/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();

    let mut flow: Value =
        serde_json::from_str(include_str!("../../../../examples/seed-auth-flow.json")).unwrap();
    flow["nodes"]["http_auth"]["properties"]["url"] = json!(idp.url());
    let mut masked_flow = flow;
    masked_flow["nodes"]["http_auth"]["properties"]["secureOutput"] = json!(["body.token"]);

    let mut responses: Vec<String> = Vec::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{addr}{path}"))
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let created: Value = post("/api/v2/flows", masked_flow.to_string().into_bytes())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let flow_id = created["id"].as_str().unwrap().to_owned();

    let requests: Vec<(&str, Value)> = vec![
        (
            "/api/v2/flows/simulate",
            json!({"flowId": flow_id, "input": {"username": "canary-user", "password": CANARY, "newPassword": CANARY_NEW}}),
        ),
        (
            "/api/v2/flows/simulate",
            json!({"flowId": flow_id, "input": {"username": "canary-user", "password": format!("{CANARY}-wrong")}}),
        ),
        (
            "/api/v2/flows/simulate",
            json!({"flow": masked_flow, "input": {"username": "canary-user", "password": CANARY, "newPassword": CANARY_NEW}}),
        ),
        (
            "/api/v2/flows/simulate",
            json!({"flowId": flow_id, "input": {"username": 5, "password": CANARY}}),
        ),
        (
            "/api/v2/flows/simulate",
            json!({"flowId": flow_id, "input": {"password": [CANARY]}}),
        ),
        (
            "/api/v2/flows/simulate",
            json!({"flowId": flow_id, "input": {"username": "u", "password": CANARY}, "environment": 5}),
        ),
        (
            "/api/v2/flows/simulate",
            json!({"flowId": flow_id, "input": {"username": "u", "password": CANARY}, "surprise": CANARY}),
        ),
    ];
    let mut statuses = Vec::new();
    for (path, body) in requests {
        let res = post(path, body.to_string().into_bytes()).await.unwrap();
        statuses.push(res.status().as_u16());
        responses.push(res.text().await.unwrap());
    }
    // Malformed JSON that carries the canary.
    let res = post(
        "/api/v2/flows/simulate",
        format!("{{\"input\": {{\"password\": \"{CANARY}\"").into_bytes(),
    )
    .await
    .unwrap();
    statuses.push(res.status().as_u16());
    responses.push(res.text().await.unwrap());

    assert_eq!(
        statuses,
        vec![200, 200, 200, 400, 400, 400, 400, 400],
        "{responses:#?}"
    );
    let success: Value = serde_json::from_str(&responses[0]).unwrap();
    assert_eq!(success["outcome"]["endNode"], "end_success", "{success}");
    let unsaved: Value = serde_json::from_str(&responses[2]).unwrap();
    assert_eq!(unsaved["outcome"]["endNode"], "end_success", "{unsaved}");
    assert_eq!(
        idp.requests(),
        3,
        "the canary password really was sent to the identity provider"
    );

    stop(child);
    let logs = [stdout_rest.join().unwrap(), stderr.join().unwrap()].concat();
    assert!(
        contains(&logs, "/api/v2/flows/simulate"),
        "the log output was captured"
    );

    for (i, body) in responses.iter().enumerate() {
        for canary in [
            CANARY,
            CANARY_NEW,
            CANARY_TOKEN,
            secret.as_str(),
            access.as_str(),
        ] {
            assert!(
                !body.contains(canary),
                "response {i} contains a secret: {body}"
            );
        }
    }
    for canary in [
        CANARY,
        CANARY_NEW,
        CANARY_TOKEN,
        secret.as_str(),
        access.as_str(),
    ] {
        assert!(
            !contains(&logs, canary),
            "the server's log output contains a secret"
        );
    }

    let mut scanned = 0;
    let mut saw_audit = false;
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        saw_audit |= contains(&bytes, "simulation.run");
        for canary in [
            CANARY,
            CANARY_NEW,
            CANARY_TOKEN,
            secret.as_str(),
            access.as_str(),
        ] {
            assert!(
                !contains(&bytes, canary),
                "{} contains a secret",
                path.display()
            );
        }
    }
    assert!(
        scanned > 0 && saw_audit,
        "the scan read the database (and its WAL) that holds the audit records"
    );
}

const CANARY_PIN: &str = "730519";
const CANARY_WRONG_PIN: &str = "918273";

#[tokio::test(flavor = "multi_thread")]
async fn canary_pins_appear_in_no_response_log_or_database_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ivrauth.toml"),
        "[identity]\nprovider = \"builtin\"\nmin_verify_ms = 0\nhash_m_kib = 64\nhash_t = 1\nhash_p = 1\n",
    )
    .unwrap();
    let mut add = ivrauth(d);
    add.args([
        "account",
        "add",
        "10001",
        "--name",
        "Ada Lovelace",
        "--data-dir",
        "data",
    ])
    .env("RUST_LOG", "trace");
    let added = crate::support::with_stdin(add, &format!("{CANARY_PIN}\n"));
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let out = ivrauth(d)
        .args([
            "client",
            "create",
            "--name",
            "c",
            "--scopes",
            "flow:simulate,identity:simulate",
            "--json",
            "--data-dir",
            "data",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let creds: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut child = ivrauth(d)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let stdout_rest = drain(stdout);
    let stderr = drain(child.stderr.take().unwrap());
    let Some(addr) = first
        .trim()
        .strip_prefix("ivrauth listening on ")
        .map(str::to_owned)
    else {
        stop(child);
        panic!("unexpected first line {first:?}");
    };
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{addr}/auth/v3/oauth/token"))
        .basic_auth(
            creds["client_id"].as_str().unwrap(),
            creds["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let flow = json!({
        "name": "verify", "startNode": "s",
        "inputSchema": {"type": "object", "properties": {"account": {"type": "string"}, "pin": {"type": "string", "x-secure": true}}},
        "nodes": {
            "s": {"type": "start"},
            "v": {"type": "action", "properties": {"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}"}}},
            "c": {"type": "condition", "properties": {"conditions": [{"name": "ok", "expression": "{{v.verified}} == true"}]}},
            "yes": {"type": "end", "properties": {"statusCode": 200}},
            "no": {"type": "end", "properties": {"statusCode": 401}}
        },
        "edges": [{"source": "s", "target": "v"}, {"source": "v", "target": "c"}, {"source": "c", "target": "yes", "condition": "ok"}, {"source": "c", "target": "no", "condition": "!ok"}]
    });
    let mut bodies = Vec::new();
    for (account, pin) in [
        ("10001", CANARY_PIN),
        ("10001", CANARY_WRONG_PIN),
        ("99999", CANARY_PIN),
    ] {
        let res = http
            .post(format!("{addr}/api/v2/flows/simulate"))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .json(&json!({"flow": flow, "input": {"account": account, "pin": pin}, "contact": {"ani": "+15550100777"}}))
            .send()
            .await
            .unwrap();
        bodies.push(res.text().await.unwrap());
    }
    let ends: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap()["outcome"]["endNode"].clone())
        .collect();
    assert_eq!(
        ends,
        vec![json!("yes"), json!("no"), json!("no")],
        "the PIN really was checked"
    );
    stop(child);
    let logs = [
        added.stdout,
        added.stderr,
        stdout_rest.join().unwrap(),
        stderr.join().unwrap(),
    ]
    .concat();
    assert!(contains(&logs, "identity"), "the log output was captured");
    for canary in [CANARY_PIN, CANARY_WRONG_PIN] {
        for b in &bodies {
            assert!(!b.contains(canary), "a response contains a PIN: {b}");
        }
        assert!(!contains(&logs, canary), "the log output contains a PIN");
        for entry in std::fs::read_dir(d.join("data")).unwrap() {
            let path = entry.unwrap().path();
            assert!(
                !contains(&std::fs::read(&path).unwrap(), canary),
                "{} contains a PIN",
                path.display()
            );
        }
    }
}
