//! URL templates encode what they insert: a caller number in a path template reaches the
//! server as one percent-encoded segment, a value that would be `..` is not sent, and a
//! placeholder in the host is refused before the flow runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query};
use axum::http::Uri;
use axum::routing::get;
use axum::Router;
use reqwest::StatusCode;
use serde_json::{json, Value};

use ivrauth_testkit::TestServer;

/// What the loopback server saw: (raw path and query, decoded `{ani}`, decoded `from`), or
/// the raw path of a request to any other route.
#[derive(Default)]
struct Seen {
    profiles: Vec<(String, String, Option<String>)>,
    others: Vec<String>,
}

async fn caller_server() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (a, b) = (seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/callers/{ani}/profile",
            get(
                move |uri: Uri,
                      Path(ani): Path<String>,
                      Query(q): Query<std::collections::HashMap<String, String>>| {
                    let a = a.clone();
                    async move {
                        a.lock().unwrap().profiles.push((
                            uri.to_string(),
                            ani,
                            q.get("from").cloned(),
                        ));
                        "{}"
                    }
                },
            ),
        )
        .fallback(move |uri: Uri| {
            let b = b.clone();
            async move {
                b.lock().unwrap().others.push(uri.to_string());
                (StatusCode::NOT_FOUND, "no")
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn lookup_flow(url: &str) -> Value {
    json!({
        "name": "caller profile",
        "startNode": "start",
        "nodes": {
            "start": {"type": "start"},
            "profile": {"type": "http", "properties": {"method": "GET", "url": url, "timeout": 5000}},
            "done": {"type": "end", "properties": {"statusCode": 200}},
        },
        "edges": [
            {"source": "start", "target": "profile"},
            {"source": "profile", "target": "done"},
        ],
    })
}

async fn api() -> (TestServer, String) {
    let server = TestServer::start().await.unwrap();
    let (id, secret) = server
        .create_client("urls", &["flow:simulate", "flow:read"])
        .await
        .unwrap();
    let token = server.token(&id, &secret, None).await.unwrap();
    (server, token)
}

async fn simulate(
    server: &TestServer,
    token: &str,
    flow: &Value,
    ani: &str,
) -> (StatusCode, Value) {
    let res = server
        .http()
        .post(server.url("/api/v2/flows/simulate"))
        .bearer_auth(token)
        .json(&json!({"flow": flow, "input": {}, "contact": {"ani": ani}}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn a_caller_number_in_a_path_template_reaches_the_server_as_one_encoded_segment() {
    let (base, seen) = caller_server().await;
    let (server, token) = api().await;
    let flow = lookup_flow(&format!(
        "{base}/callers/{{{{contact.ani}}}}/profile?from={{{{contact.ani}}}}"
    ));
    let (status, sim) = simulate(&server, &token, &flow, "../admin?x=").await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["outcome"]["endNode"], "done", "{sim}");

    let seen = seen.lock().unwrap();
    assert!(
        seen.others.is_empty(),
        "reached other routes: {:?}",
        seen.others
    );
    assert_eq!(
        seen.profiles,
        vec![(
            "/callers/..%2Fadmin%3Fx%3D/profile?from=..%2Fadmin%3Fx%3D".to_owned(),
            "../admin?x=".to_owned(),
            Some("../admin?x=".to_owned()),
        )]
    );
}

#[tokio::test]
async fn a_value_that_would_be_a_dot_segment_is_not_sent() {
    let (base, seen) = caller_server().await;
    let (server, token) = api().await;
    let flow = lookup_flow(&format!("{base}/callers/{{{{contact.ani}}}}/profile"));
    let (status, sim) = simulate(&server, &token, &flow, "..").await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    let profile = sim["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["nodeId"] == "profile")
        .cloned()
        .unwrap();
    assert_eq!(
        profile["output"]["error"]["code"], "invalid_request",
        "{profile}"
    );
    let seen = seen.lock().unwrap();
    assert!(seen.profiles.is_empty() && seen.others.is_empty());
}

#[tokio::test]
async fn a_placeholder_in_the_scheme_host_or_port_is_refused_by_the_validator() {
    let (server, token) = api().await;
    for url in [
        "http://{{contact.host}}/callers",
        "http://127.0.0.1:{{contact.port}}/callers",
        "{{contact.base}}/callers",
    ] {
        let flow = lookup_flow(url);
        let report: Value = server
            .http()
            .post(server.url("/api/v2/flows/validate"))
            .bearer_auth(&token)
            .json(&flow)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["valid"], false, "{url}: {report}");
        let error = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["code"] == "url_placeholder_position")
            .cloned()
            .unwrap_or_else(|| panic!("{url}: {report}"));
        assert_eq!(error["path"], "/nodes/profile/properties/url");
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("scheme, host or port"));

        let (status, body) = simulate(&server, &token, &flow, "1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
    }
}
