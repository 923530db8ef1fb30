//! Flow `http` nodes cannot reach link-local or cloud metadata addresses under the default
//! allow-list (`["*"]`), while the demo's identity endpoint on loopback keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{json, Value};

use ivrauth_testkit::TestServer;

/// `start → probe (GET url) → done`.
fn probe_flow(url: &str) -> Value {
    json!({
        "name": "probe",
        "type": "conversation",
        "nodes": {
            "start": {"id": "start", "type": "start", "properties": {}},
            "http_probe": {
                "id": "probe",
                "type": "http",
                "properties": {"method": "GET", "url": url, "timeout": 2000}
            },
            "done": {"id": "done", "type": "end", "properties": {"statusCode": 200}}
        },
        "edges": [
            {"source": "start", "target": "http_probe"},
            {"source": "http_probe", "target": "done"}
        ],
        "startNode": "start",
        "endNodes": ["done"]
    })
}

fn http_output<'a>(sim: &'a Value, node_key: &str) -> &'a Value {
    let entry = sim["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["nodeKey"] == node_key)
        .unwrap();
    &entry["output"]
}

#[tokio::test]
async fn http_node_to_the_metadata_address_is_refused_with_a_clear_error() {
    let server = TestServer::start().await.unwrap();
    let (id, secret) = server
        .create_client("tests", &["flow:simulate"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    let url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
    let res = server
        .http()
        .post(server.url("/api/v2/flows/simulate"))
        .bearer_auth(&token)
        .json(&json!({"flow": probe_flow(url), "input": {}}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let sim: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["outcome"]["endNode"], "done", "{sim}");
    let output = http_output(&sim, "http_probe");
    assert_eq!(output["statusCode"], Value::Null, "{sim}");
    let error = &output["error"];
    assert_eq!(error["code"], "disallowed_host", "{sim}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("host 169.254.169.254 is a link-local address"),
        "{message}"
    );
}

#[tokio::test]
async fn demo_loopback_identity_endpoint_still_works_under_the_default_allow_list() {
    let server = TestServer::builder()
        .config(|c| c.demo = true)
        .start()
        .await
        .unwrap();
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    let info = ivrauth_server::http::demo::install(server.state(), server.base_url())
        .await
        .unwrap();
    let token = server
        .token(info.client_id, &info.client_secret, None)
        .await
        .unwrap();
    let sim: Value = server
        .http()
        .post(server.url("/api/v2/flows/simulate"))
        .bearer_auth(&token)
        .json(&json!({
            "flowId": "demo-auth",
            "input": {"username": "testuser", "password": "correctpassword"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sim["outcome"],
        json!({"endNode": "end_success", "statusCode": 200}),
        "{sim}"
    );
    assert_eq!(http_output(&sim, "http_auth")["statusCode"], 200, "{sim}");
}
