//! A response that echoes a secret is a secret: a flow posts a secure input to a loopback
//! server that echoes it, then logs and speaks the echo. The canary reaches the server, and
//! appears in no response, log line (at `trace`), audit record or database byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use reqwest::StatusCode;
use serde_json::{json, Value};

use ivrauth_core::ports::AuditStore as _;
use ivrauth_testkit::TestServer;

const CANARY: &str = "Canary-Echo-5d21e8";

/// Everything the server logs on this thread, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A loopback server answering `POST /echo` with the request body as it came, and keeping
/// what it received.
async fn echo_server() -> (String, Arc<Mutex<Vec<u8>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let app = Router::new().route(
        "/echo",
        post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().extend_from_slice(&body);
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn echo_flow(url: &str) -> Value {
    json!({
        "name": "echo",
        "startNode": "start",
        "inputSchema": {
            "type": "object",
            "properties": {"pin": {"type": "string", "x-secure": true}},
            "required": ["pin"],
        },
        "nodes": {
            "start": {"type": "start"},
            "echo": {"type": "http", "properties": {"method": "POST", "url": url, "timeout": 5000, "body": {"pin": "{{pin}}"}}},
            "note": {"type": "log", "properties": {"logLevel": "INFO", "message": "echo said {{echo.body}}"}},
            "tell": {"type": "say", "properties": {"text": "You keyed {{echo.body.pin}}."}},
            "copy": {"type": "setProperties", "properties": {"properties": [{"name": "copied", "value": "{{echo.body.pin}}"}]}},
            "done": {"type": "end", "properties": {"statusCode": 200}},
        },
        "edges": [
            {"source": "start", "target": "echo"},
            {"source": "echo", "target": "note"},
            {"source": "note", "target": "tell"},
            {"source": "tell", "target": "copy"},
            {"source": "copy", "target": "done"},
        ],
    })
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// One thread: the server's tasks log through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_secret_echoed_by_a_server_appears_in_no_response_log_audit_or_database_byte() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (url, received) = echo_server().await;
    let server = TestServer::start().await.unwrap();
    let (id, secret) = server
        .create_client("echo", &["flow:simulate", "flow:write"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    let flow = echo_flow(&url);

    let mut responses = Vec::new();
    let created = server
        .http()
        .post(server.url("/api/v2/flows"))
        .bearer_auth(&token)
        .json(&flow)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let flow_id = created["id"].as_str().unwrap().to_owned();
    for body in [
        json!({"flow": flow, "input": {"pin": CANARY}}),
        json!({"flowId": flow_id, "input": {"pin": CANARY}}),
    ] {
        let res = server
            .http()
            .post(server.url("/api/v2/flows/simulate"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        responses.push(res.text().await.unwrap());
    }

    // The secret really went out, and came back.
    assert!(
        contains(&received.lock().unwrap(), CANARY),
        "the echo server never saw the canary"
    );
    let sim: Value = serde_json::from_str(&responses[0]).unwrap();
    assert_eq!(sim["outcome"]["endNode"], "done", "{sim}");
    let entry = |id: &str| {
        sim["trace"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["nodeId"] == id)
            .cloned()
            .unwrap()
    };
    let echo = entry("echo");
    assert_eq!(echo["output"]["body"], "********", "{echo}");
    assert_eq!(echo["output"]["statusCode"], "********", "{echo}");
    assert!(echo["errors"][0]
        .as_str()
        .unwrap()
        .contains("contains a secure value"));
    let note = entry("note");
    assert_eq!(note["message"], "echo said ********", "{note}");
    assert!(note["errors"][0].as_str().unwrap().contains("echo.body"));
    let tell = entry("tell");
    assert_eq!(tell["message"], "You keyed ********.", "{tell}");
    assert_eq!(entry("copy")["properties"]["copied"], "********");

    // The log line was written (so the capture works), masked.
    let log_text = logs.text();
    assert!(log_text.contains("echo said ********"), "{log_text}");

    for (i, r) in responses.iter().enumerate() {
        assert!(!r.contains(CANARY), "response #{i} holds the canary: {r}");
    }
    assert!(!log_text.contains(CANARY), "the log holds the canary");
    let audit = server.store().read_audit().await.unwrap();
    assert!(audit.iter().any(|r| r.event == "flow.log"));
    for r in &audit {
        let text = format!("{} {} {} {}", r.event, r.subject, r.actor, r.detail);
        assert!(
            !text.contains(CANARY),
            "an audit record holds the canary: {text}"
        );
    }
    let mut files = Vec::new();
    files_under(server.data_dir(), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, CANARY),
            "{} holds the canary",
            f.display()
        );
    }
}
