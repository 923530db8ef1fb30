#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Flow API and simulation end to end: the real router on a loopback port, a fresh
//! SQLite store, and a real HTTP identity endpoint on 127.0.0.1:0 speaking seed 000's
//! contract.

use reqwest::StatusCode;
use serde_json::{json, Value};

use ivrauth_core::ports::AuditStore as _;
use ivrauth_testkit::identity::IdentityServer;
use ivrauth_testkit::TestServer;

const ALL: &[&str] = &["flow:read", "flow:write", "flow:simulate"];

/// The seed's flow exactly as `constructFlowDefinition(url)` builds it.
fn seed_flow(url: &str) -> Value {
    let text = include_str!("../../../../examples/seed-auth-flow.json");
    let mut doc: Value = serde_json::from_str(text).unwrap();
    doc["nodes"]["http_auth"]["properties"]["url"] = json!(url);
    doc
}

struct Api {
    server: TestServer,
    token: String,
}

impl Api {
    async fn start() -> Api {
        let server = TestServer::start().await.unwrap();
        let (id, secret) = server.create_client("tests", ALL).await.unwrap();
        let token = server.token(&id, &secret, None).await.unwrap();
        Api { server, token }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .server
            .http()
            .request(method, self.server.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
        let res = self
            .server
            .http()
            .post(self.server.url(path))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }
}

fn trace_entry<'a>(sim: &'a Value, node_key: &str) -> &'a Value {
    sim["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["nodeKey"] == node_key)
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn seed_flow_deployed_and_simulated_against_a_real_identity_endpoint() {
    let idp = IdentityServer::start("testuser", "correctpassword", "eyJhbGciOiJIUzI1NiJ9.mock")
        .await
        .unwrap();
    let api = Api::start().await;

    let (status, created) = api.post("/api/v2/flows", &seed_flow(&idp.url())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["name"], "IVR Authentication Flow");
    let id = created["id"].as_str().unwrap().to_owned();

    // The right password: end_success, 200, session bound.
    let (status, sim) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flowId": id, "input": {"username": "testuser", "password": "correctpassword", "newPassword": "newSecurePass123"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(
        sim["outcome"],
        json!({"endNode": "end_success", "statusCode": 200})
    );
    assert_eq!(sim["flowId"], json!(id));
    assert_eq!(sim["environment"], "test");
    let http = trace_entry(&sim, "http_auth");
    // `nodeId` is the node's key (the name edges use); its inner id is `id`.
    assert_eq!(http["nodeId"], "http_auth");
    assert_eq!(http["id"], "http_auth_provider");
    assert_eq!(http["request"], json!({"method": "POST", "url": idp.url()}));
    assert_eq!(http["output"]["statusCode"], 200);
    assert_eq!(
        trace_entry(&sim, "bind_session")["properties"]["session.authToken"],
        "eyJhbGciOiJIUzI1NiJ9.mock"
    );
    assert_eq!(
        trace_entry(&sim, "handle_reset")["properties"]["secureNewPassword"],
        "********"
    );
    assert_eq!(
        trace_entry(&sim, "check_auth")["result"],
        json!({"auth_success": true})
    );
    let text = sim.to_string();
    assert!(
        !text.contains("correctpassword") && !text.contains("newSecurePass123"),
        "{text}"
    );

    // A wrong one: end_failure, 401.
    let (status, sim) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flowId": id, "input": {"username": "testuser", "password": "nope"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(
        sim["outcome"],
        json!({"endNode": "end_failure", "statusCode": 401})
    );
    assert_eq!(idp.requests(), 2);

    // The simulation and the log node are audited; the chain verifies.
    let records = api.server.store().read_audit().await.unwrap();
    assert!(records.iter().any(|r| r.event == "flow.log"
        && r.detail["message"]
            .as_str()
            .unwrap()
            .contains("user=testuser")));
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event == "simulation.run")
            .count(),
        2
    );
    assert!(records
        .iter()
        .any(|r| r.event == "flow.created" && r.subject == id));
    ivrauth_core::audit::verify_chain(&records).unwrap();
}

/// Issue 9: seed 000's harness looks trace entries up by the name a node is listed under
/// (`trace.find(t => t.nodeId === "http_auth")`), although that node's inner id is
/// `http_auth_provider`. `nodeId` and `nodeKey` are the key, `id` the inner id.
#[tokio::test]
async fn seed_harness_finds_trace_entries_by_node_key_issue_9() {
    let idp = IdentityServer::start("testuser", "correctpassword", "tok")
        .await
        .unwrap();
    let api = Api::start().await;
    let doc = seed_flow(&idp.url());
    let (status, sim) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flow": doc, "input": {"username": "testuser", "password": "correctpassword"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    let trace = sim["trace"].as_array().unwrap();
    let find = |key: &str| trace.iter().find(|t| t["nodeId"] == key);
    // What the seed's script does next.
    let http = find("http_auth").expect("the harness finds http_auth");
    assert_eq!(http["output"]["statusCode"], 200, "{http}");
    assert!(find("bind_session").is_some(), "{sim}");
    assert!(find("http_auth_provider").is_none(), "{sim}");
    // Every entry: key twice, the inner id once, as the document lists them.
    let nodes = doc["nodes"].as_object().unwrap();
    assert_eq!(trace.len(), 7, "{sim}");
    for t in trace {
        let key = t["nodeId"].as_str().unwrap();
        assert_eq!(t["nodeKey"], key, "{t}");
        let inner = nodes[key].get("id").cloned().unwrap_or(json!(key));
        assert_eq!(t["id"], inner, "{t}");
    }
    assert_eq!(find("check_auth").unwrap()["id"], "check_auth_response");
}

#[tokio::test]
async fn unsaved_document_is_simulated_and_input_problems_are_listed_without_values() {
    let idp = IdentityServer::start("testuser", "correctpassword", "t")
        .await
        .unwrap();
    let api = Api::start().await;
    let (status, sim) = api
        .post("/api/v2/flows/simulate", &json!({"flow": seed_flow(&idp.url()), "input": {"username": "testuser", "password": "correctpassword"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["outcome"]["endNode"], "end_success");
    assert_eq!(sim["flowId"], Value::Null);

    let (status, body) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flow": seed_flow(&idp.url()), "input": {"password": 424242}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_input");
    let problems: Vec<(String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        problems.contains(&("/input/username".into(), "required".into())),
        "{problems:?}"
    );
    assert!(
        problems.contains(&("/input/password".into(), "type".into())),
        "{problems:?}"
    );
    assert!(!body.to_string().contains("424242"));
    assert_eq!(
        idp.requests(),
        1,
        "an invalid input never reaches the identity provider"
    );
}

#[tokio::test]
async fn flow_versions_list_get_validate_and_delete() {
    let api = Api::start().await;
    let (_, created) = api
        .post("/api/v2/flows", &seed_flow("https://idp.example.com/auth"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();

    let mut v2 = seed_flow("https://idp2.example.com/auth");
    v2["name"] = json!("Renamed");
    let (status, updated) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/v2/flows/{id}"),
            Some(&v2),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);

    let (_, list) = api.send(reqwest::Method::GET, "/api/v2/flows", None).await;
    let entities = list["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0]["name"], "Renamed");

    let (_, latest) = api
        .send(reqwest::Method::GET, &format!("/api/v2/flows/{id}"), None)
        .await;
    assert_eq!(
        latest["document"]["nodes"]["http_auth"]["properties"]["url"],
        "https://idp2.example.com/auth"
    );
    let (_, old) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v2/flows/{id}?version=1"),
            None,
        )
        .await;
    assert_eq!(old["version"], 1);
    assert_eq!(
        old["document"]["nodes"]["http_auth"]["properties"]["url"],
        "https://idp.example.com/auth"
    );
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v2/flows/{id}?version=9"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, report) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/v2/flows/{id}/validate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["valid"], true);
    assert_eq!(report["warnings"].as_array().unwrap().len(), 2);

    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v2/flows/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .send(reqwest::Method::GET, &format!("/api/v2/flows/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v2/flows/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flowId": id, "input": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn invalid_documents_get_400_with_every_problem() {
    let api = Api::start().await;
    let mut doc = seed_flow("http://idp.example.com/auth");
    doc["edges"][6]["target"] = json!("end_sucess");
    doc["nodes"]["audit_log"]["properties"]["message"] = json!("pw={{password}}");
    let (status, body) = api.post("/api/v2/flows", &doc).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_flow");
    let codes: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    for want in [
        "unknown_edge_target",
        "secure_value_logged",
        "secure_value_insecure_url",
    ] {
        assert!(codes.contains(&want), "{want} not in {codes:?}");
    }
    let target = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "unknown_edge_target")
        .unwrap();
    assert_eq!(target["path"], "/edges/6/target");
    assert!(target["message"].as_str().unwrap().contains("`end_sucess`"));

    // The same document through the validate endpoint: 200 with valid=false.
    let (status, report) = api.post("/api/v2/flows/validate", &doc).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["valid"], false);
    assert_eq!(
        report["errors"].as_array().unwrap().len(),
        body["errors"].as_array().unwrap().len()
    );

    // Wrong shapes are problems too, not 5xx.
    let (status, body) = api
        .post(
            "/api/v2/flows",
            &json!({"name": "x", "edges": "not-an-array"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], "invalid_shape");
    assert_eq!(body["errors"][0]["path"], "/edges");
    let (status, report) = api.post("/api/v2/flows/validate", &json!([1, 2])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["valid"], false);
}

#[tokio::test]
async fn bad_input_never_yields_a_5xx() {
    let api = Api::start().await;
    let cyclic = json!({
        "name": "cycle", "startNode": "a",
        "nodes": {"a": {"type": "start"}, "b": {"type": "setProperties", "properties": {"properties": []}}},
        "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]
    });
    let looping = json!({
        "name": "loop", "startNode": "s",
        "nodes": {
            "s": {"type": "start"},
            "c": {"type": "condition", "properties": {"conditions": [{"name": "never", "expression": "1 == 2"}]}},
            "e": {"type": "end"}
        },
        "edges": [{"source": "s", "target": "c"}, {"source": "c", "target": "e", "condition": "never"}, {"source": "c", "target": "s", "condition": "!never"}]
    });
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        ("/api/v2/flows", "application/json", b"{\"name\": ".to_vec()),
        ("/api/v2/flows", "application/json", b"\xff\xfe".to_vec()),
        ("/api/v2/flows", "text/plain", b"{}".to_vec()),
        ("/api/v2/flows", "application/json", b"null".to_vec()),
        (
            "/api/v2/flows",
            "application/json",
            b"{\"nodes\": {\"a\": 5}}".to_vec(),
        ),
        (
            "/api/v2/flows",
            "application/json",
            cyclic.to_string().into_bytes(),
        ),
        (
            "/api/v2/flows/simulate",
            "application/json",
            b"{\"flowId\": 5}".to_vec(),
        ),
        (
            "/api/v2/flows/simulate",
            "application/json",
            b"{\"flowId\": \"x\", \"surprise\": 1}".to_vec(),
        ),
        ("/api/v2/flows/simulate", "application/json", b"{}".to_vec()),
        (
            "/api/v2/flows/simulate",
            "application/json",
            json!({"flow": cyclic, "input": {}})
                .to_string()
                .into_bytes(),
        ),
        (
            "/api/v2/flows/simulate",
            "application/json",
            json!({"flow": looping, "input": "text"})
                .to_string()
                .into_bytes(),
        ),
        (
            "/api/v2/flows/simulate",
            "application/json",
            vec![b' '; 2 * 1024 * 1024],
        ),
    ];
    for (path, ct, body) in bodies {
        let preview = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, text) = api.raw(path, ct, body).await;
        assert!(
            status.is_client_error(),
            "{path} {preview:?} → {status} {text}"
        );
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: body is not JSON: {text}"));
        assert!(parsed["code"].is_string(), "{text}");
    }
    let (status, text) = api
        .raw("/api/v2/flows", "application/json", b"{\"name\": ".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("line 1") && text.contains("column"), "{text}");

    // A flow that loops at run time is stopped by the step bound: 200 with the error.
    let (status, sim) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flow": looping, "input": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["outcome"]["error"]["code"], "step_limit_exceeded");
    assert_eq!(sim["trace"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn a_deleted_flow_refuses_new_runs_and_lets_running_ones_finish() {
    let idp = IdentityServer::start_holding("testuser", "pw", "t", Some("slow"))
        .await
        .unwrap();
    let api = std::sync::Arc::new(Api::start().await);
    let (_, created) = api.post("/api/v2/flows", &seed_flow(&idp.url())).await;
    let id = created["id"].as_str().unwrap().to_owned();

    let running = {
        let api = api.clone();
        let id = id.clone();
        tokio::spawn(async move {
            api.post(
                "/api/v2/flows/simulate",
                &json!({"flowId": id, "input": {"username": "slow", "password": "x"}}),
            )
            .await
        })
    };
    idp.wait_held().await;
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v2/flows/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .post(
            "/api/v2/flows/simulate",
            &json!({"flowId": id, "input": {"username": "a", "password": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    idp.release();
    let (status, sim) = running.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["outcome"]["endNode"], "end_failure");
    assert_eq!(sim["version"], 1);
}

#[tokio::test]
async fn scopes_guard_the_flow_api() {
    let s = TestServer::start().await.unwrap();
    let (id, secret) = s.create_client("reader", &["flow:read"]).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    let res = s
        .http()
        .post(s.url("/api/v2/flows"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("flow:write"));
    let res = s
        .http()
        .post(s.url("/api/v2/flows/simulate"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = s.http().get(s.url("/api/v2/flows")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = s
        .http()
        .get(s.url("/api/v2/flows"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Issue 9: `flow:manage` (Genesys Cloud's advice for deployment permission errors) gives a
/// token that reads, writes and simulates flows, however the token is asked for.
#[tokio::test]
async fn a_flow_manage_client_reads_writes_and_simulates_however_its_token_is_asked_issue_9() {
    let s = TestServer::start().await.unwrap();
    let (id, secret) = s.create_client("manager", &["flow:manage"]).await.unwrap();
    let flow = json!({
        "name": "tiny",
        "nodes": {"start": {"type": "start"}, "done": {"type": "end", "properties": {"statusCode": 200}}},
        "edges": [{"source": "start", "target": "done"}],
        "startNode": "start"
    });
    for asked in [
        None,
        Some("flow:manage"),
        Some("flow:read"),
        Some("flow:write"),
        Some("flow:simulate"),
        Some("flow:read flow:write flow:simulate"),
    ] {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(asked.map(|a| ("scope", a)));
        let res = s
            .http()
            .post(s.url(ivrauth_server::http::auth::TOKEN_PATH))
            .basic_auth(&id, Some(&secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asked:?}");
        let body: Value = res.json().await.unwrap();
        let mut scope: Vec<&str> = body["scope"].as_str().unwrap().split(' ').collect();
        scope.sort_unstable();
        assert_eq!(
            scope,
            ["flow:manage", "flow:read", "flow:simulate", "flow:write"],
            "{asked:?}"
        );
        let token = body["access_token"].as_str().unwrap();
        let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
            let mut req = s.http().request(method, s.url(path)).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send()
        };
        let res = send(reqwest::Method::POST, "/api/v2/flows", Some(flow.clone()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "{asked:?} write");
        let created: Value = res.json().await.unwrap();
        let flow_id = created["id"].as_str().unwrap();
        let res = send(
            reqwest::Method::GET,
            &format!("/api/v2/flows/{flow_id}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asked:?} read");
        let res = send(
            reqwest::Method::POST,
            "/api/v2/flows/simulate",
            Some(json!({"flowId": flow_id, "input": {}})),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asked:?} simulate");
        let sim: Value = res.json().await.unwrap();
        assert_eq!(sim["outcome"]["endNode"], "done", "{sim}");
    }
    // It is about flows only: the decision API's scope is not part of it.
    let res = s
        .http()
        .post(s.url(ivrauth_server::http::auth::TOKEN_PATH))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "call:turn")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // A client without it cannot ask for it.
    let (reader, reader_secret) = s.create_client("reader", &["flow:read"]).await.unwrap();
    let err = s
        .token(&reader, &reader_secret, Some("flow:manage"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_scope"), "{err}");
}

#[tokio::test]
async fn openapi_documents_the_flow_api() {
    let s = TestServer::start().await.unwrap();
    let doc: Value = s
        .http()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v2/flows",
        "/api/v2/flows/{id}",
        "/api/v2/flows/validate",
        "/api/v2/flows/{id}/validate",
        "/api/v2/flows/simulate",
        "/auth/v3/oauth/token",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["SimulateResponse"].is_object());
}

#[tokio::test]
async fn bad_path_and_query_parameters_get_json_400s_without_their_values() {
    let idp = IdentityServer::start("testuser", "correctpassword", "tok")
        .await
        .unwrap();
    let api = Api::start().await;
    let (status, created) = api.post("/api/v2/flows", &seed_flow(&idp.url())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let get = |path: String, method: reqwest::Method| {
        let req = api
            .server
            .http()
            .request(method, api.server.url(&path))
            .bearer_auth(&api.token);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
            (status, content_type, res.text().await.unwrap())
        }
    };

    for (path, method) in [
        (
            format!("/api/v2/flows/{id}?version=abc"),
            reqwest::Method::GET,
        ),
        (
            format!("/api/v2/flows/{id}/validate?version=abc"),
            reqwest::Method::POST,
        ),
    ] {
        let (status, content_type, text) = get(path.clone(), method).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
        assert_eq!(content_type, "application/json", "{path}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["code"], "invalid_query", "{text}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("`version`"), "{message}");
        assert!(!text.contains("abc"), "{text}");
    }
    // A good version still works.
    let (status, _, text) = get(
        format!("/api/v2/flows/{id}?version=1"),
        reqwest::Method::GET,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // An id that is not UTF-8 once percent-decoded.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let (status, content_type, text) =
            get("/api/v2/flows/zz%FFqq".to_owned(), method.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {text}");
        assert_eq!(content_type, "application/json", "{method}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["code"], "invalid_path", "{text}");
        assert!(body["message"].as_str().unwrap().contains("`id`"), "{text}");
        assert!(!text.contains("zz") && !text.contains("qq"), "{text}");
    }
}

#[tokio::test]
async fn demo_mode_installs_flows_that_simulate_out_of_the_box() {
    let s = TestServer::builder()
        .config(|c| c.demo = true)
        .identity(
            |store, clock| ivrauth_server::app::identity::IdentityService {
                sleeper: std::sync::Arc::new(ivrauth_connect::RecordingSleeper::new()),
                ..ivrauth_testkit::builtin_identity(
                    store,
                    clock,
                    ivrauth_core::identity::HashParams::default(),
                    Default::default(),
                )
                .unwrap()
            },
        )
        .start()
        .await
        .unwrap();
    let info = ivrauth_server::http::demo::install(s.state(), s.base_url())
        .await
        .unwrap();
    assert_eq!(
        info.flow_ids,
        vec!["demo-auth", "demo-auth-masked", "demo-verify", "demo-pin"]
    );
    let token = s
        .token(info.client_id, &info.client_secret, None)
        .await
        .unwrap();
    let simulate = |flow_id: &'static str, password: &'static str| {
        s.http()
            .post(s.url("/api/v2/flows/simulate"))
            .bearer_auth(&token)
            .json(&json!({"flowId": flow_id, "input": {"username": "testuser", "password": password}}))
            .send()
    };
    let sim: Value = simulate("demo-auth", "correctpassword")
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
    let token_value = trace_entry(&sim, "bind_session")["properties"]["session.authToken"].clone();
    assert!(
        token_value.as_str().unwrap().starts_with("demo."),
        "{token_value}"
    );
    let sim: Value = simulate("demo-auth-masked", "correctpassword")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        trace_entry(&sim, "bind_session")["properties"]["session.authToken"],
        "********"
    );
    let sim: Value = simulate("demo-auth", "wrong")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sim["outcome"]["endNode"], "end_failure");
    // The demo account of the built-in directory verifies with its PIN.
    let verify = |pin: &'static str| {
        s.http()
            .post(s.url("/api/v2/flows/simulate"))
            .bearer_auth(&token)
            .json(&json!({"flowId": "demo-verify", "input": {"account": "10001", "pin": pin}, "contact": {"ani": "+15550100999"}}))
            .send()
    };
    let sim: Value = verify("2468").await.unwrap().json().await.unwrap();
    assert_eq!(sim["outcome"]["endNode"], "end_success", "{sim}");
    assert_eq!(trace_entry(&sim, "verify")["output"]["greeting"], "Ada");
    let sim: Value = verify("1111").await.unwrap().json().await.unwrap();
    assert_eq!(sim["outcome"]["endNode"], "end_failure");

    // A restart installs again: same flow versions, a new secret, and the old one is dead.
    let again = ivrauth_server::http::demo::install(s.state(), s.base_url())
        .await
        .unwrap();
    assert_ne!(again.client_secret, info.client_secret);
    assert!(s
        .token(info.client_id, &info.client_secret, None)
        .await
        .is_err());
    let token = s
        .token(again.client_id, &again.client_secret, None)
        .await
        .unwrap();
    let res = s
        .http()
        .get(s.url("/api/v2/flows/demo-auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let flow: Value = res.json().await.unwrap();
    assert_eq!(flow["version"], 1);
}
