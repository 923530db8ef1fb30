#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The HTTP API end to end: the real router on a loopback port, a fresh SQLite store and a
//! fake clock (time is moved, never slept).

use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use ivrauth_core::ports::{AuditStore as _, ClientStore as _};
use ivrauth_server::{ApiJson, AppState, FlowRead, FlowWrite, Scoped};
use ivrauth_testkit::TestServer;

const TOKEN: &str = "/auth/v3/oauth/token";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    name: String,
    pin: u32,
}

/// Probe routes behind the scope extractor and the JSON extractor.
fn probes() -> Router<AppState> {
    Router::new()
        .route(
            "/test/read",
            get(|c: Scoped<FlowRead>| async move { Json(json!({ "client": c.client_id })) }),
        )
        .route(
            "/test/echo",
            post(|_c: Scoped<FlowWrite>, ApiJson(p): ApiJson<Probe>| async move { Json(p) }),
        )
}

async fn server() -> TestServer {
    TestServer::builder()
        .routes(probes())
        .start()
        .await
        .unwrap()
}

async fn body_json(res: Response) -> Value {
    res.json().await.unwrap()
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn token_form(s: &TestServer, auth: Option<String>, form: &[(&str, &str)]) -> Response {
    let mut req = s.http().post(s.url(TOKEN)).form(form);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn get_with(s: &TestServer, path: &str, token: Option<&str>) -> Response {
    let mut req = s.http().get(s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn token_issued_by_basic_and_by_form_fields() {
    let s = server().await;
    let (id, secret) = s
        .create_client("app", &["flow:read", "flow:write"])
        .await
        .unwrap();

    let res = token_form(
        &s,
        Some(basic(&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = body_json(res).await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "flow:read flow:write");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "32 bytes base64url without padding");

    let res = token_form(
        &s,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let token2 = body_json(res).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(token, token2);

    let res = get_with(&s, "/test/read", Some(&token2)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["client"], id.as_str());

    // Both issuances are audited, without the secret or the tokens.
    let audit = s.store().read_audit().await.unwrap();
    let issued: Vec<_> = audit.iter().filter(|r| r.event == "token.issued").collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0].actor, id);
    let dump = format!("{audit:?}");
    assert!(!dump.contains(&secret) && !dump.contains(token) && !dump.contains(&token2));
}

#[tokio::test]
async fn wrong_secret_or_unknown_client_is_invalid_client() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();
    let wrong = format!("{secret}x");

    let res = token_form(
        &s,
        Some(basic(&id, &wrong)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[WWW_AUTHENTICATE], "Basic realm=\"ivrauth\"");
    assert_eq!(body_json(res).await["error"], "invalid_client");

    let res = token_form(
        &s,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &wrong),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    assert_eq!(body_json(res).await["error"], "invalid_client");

    let res = token_form(
        &s,
        Some(basic("cli_nobody", &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(res).await["error"], "invalid_client");

    let res = token_form(
        &s,
        Some("Basic !!!notbase64".to_owned()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Refusals are audited with a reason, never the secret: one record per client id,
    // reason and method, with a count.
    let refused = refused_records(&s).await;
    let audit = s.store().read_audit().await.unwrap();
    assert_eq!(refused.len(), 4);
    assert_eq!(refusal_count(&refused), 4);
    assert_eq!(refused[0].detail["reason"], "bad_secret");
    assert_eq!(refused[0].actor, id);
    assert_eq!(refused[2].detail["reason"], "unknown_client");
    assert!(!format!("{audit:?}").contains(&secret));
}

#[tokio::test]
async fn grant_type_and_missing_fields() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();

    let res = token_form(&s, Some(basic(&id, &secret)), &[("grant_type", "password")]).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["error"], "unsupported_grant_type");

    let res = token_form(&s, Some(basic(&id, &secret)), &[("scope", "flow:read")]).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["error"], "invalid_request");

    let res = token_form(
        &s,
        None,
        &[("grant_type", "client_credentials"), ("client_id", &id)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["error"], "invalid_request");

    let res = token_form(
        &s,
        Some(basic(&id, &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["error"], "invalid_request");

    // A JSON body is not a token request.
    let res = s
        .http()
        .post(s.url(TOKEN))
        .header("authorization", basic(&id, &secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn scope_subset_is_granted_and_outside_scope_is_refused() {
    let s = server().await;
    let (id, secret) = s
        .create_client("app", &["flow:read", "flow:write"])
        .await
        .unwrap();

    let res = token_form(
        &s,
        Some(basic(&id, &secret)),
        &[("grant_type", "client_credentials"), ("scope", "flow:read")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = body_json(res).await;
    assert_eq!(body["scope"], "flow:read");
    let read_only = body["access_token"].as_str().unwrap().to_owned();

    let res = token_form(
        &s,
        Some(basic(&id, &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "flow:read flow:simulate"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["error"], "invalid_scope");

    // The narrowed token lacks flow:write.
    let res = s
        .http()
        .post(s.url("/test/echo"))
        .bearer_auth(&read_only)
        .json(&json!({"name": "a", "pin": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_garbage_and_expired_tokens_get_401() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();

    let res = get_with(&s, "/test/read", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let challenge = res.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(!challenge.contains("invalid_token"));
    assert_eq!(body_json(res).await["code"], "unauthorized");

    for garbage in ["garbage", "a.b.c", "x y z"] {
        let res = get_with(&s, "/test/read", Some(garbage)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{garbage}");
        let challenge = res.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
    }

    let token = s.token(&id, &secret, None).await.unwrap();
    assert_eq!(
        get_with(&s, "/test/read", Some(&token)).await.status(),
        StatusCode::OK
    );
    s.clock().advance(Duration::from_secs(3599));
    assert_eq!(
        get_with(&s, "/test/read", Some(&token)).await.status(),
        StatusCode::OK
    );
    s.clock().advance(Duration::from_secs(1));
    let res = get_with(&s, "/test/read", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
}

#[tokio::test]
async fn token_without_the_scope_gets_403_naming_it() {
    let s = server().await;
    let (id, secret) = s.create_client("reader", &["flow:read"]).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    let res = s
        .http()
        .post(s.url("/test/echo"))
        .bearer_auth(&token)
        .json(&json!({"name": "a", "pin": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body = body_json(res).await;
    assert_eq!(body["code"], "insufficient_scope");
    assert!(
        body["message"].as_str().unwrap().contains("flow:write"),
        "{body}"
    );
}

#[tokio::test]
async fn rate_limit_returns_429_until_the_clock_moves() {
    let s = TestServer::builder()
        .routes(probes())
        .config(|c| {
            c.rate_limit_burst = 5;
            c.rate_limit_per_sec = 2;
        })
        .start()
        .await
        .unwrap();
    let (id, secret) = s.create_client("busy", &["flow:read"]).await.unwrap();
    let (other_id, other_secret) = s.create_client("calm", &["flow:read"]).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    let other = s.token(&other_id, &other_secret, None).await.unwrap();

    for i in 0..5 {
        assert_eq!(
            get_with(&s, "/test/read", Some(&token)).await.status(),
            StatusCode::OK,
            "request {i}"
        );
    }
    let res = get_with(&s, "/test/read", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[RETRY_AFTER], "1");
    assert_eq!(body_json(res).await["code"], "rate_limited");

    // The limit is per client.
    assert_eq!(
        get_with(&s, "/test/read", Some(&other)).await.status(),
        StatusCode::OK
    );

    s.clock().advance(Duration::from_secs(1));
    assert_eq!(
        get_with(&s, "/test/read", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get_with(&s, "/test/read", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get_with(&s, "/test/read", Some(&token)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn rotated_secret_overlap() {
    let s = server().await;
    let (id, old) = s.create_client("app", &["flow:read"]).await.unwrap();
    let new = ivrauth_server::http::auth::mint_token();
    let overlap: u64 = 86_400;
    let until = s.state().clock.now().plus_secs(overlap as i64);
    assert!(s
        .store()
        .rotate_client_secret(&id, &ivrauth_core::clients::hash_credential(&new), until)
        .await
        .unwrap());

    assert!(s.token(&id, &new, None).await.is_ok());
    assert!(s.token(&id, &old, None).await.is_ok());
    s.clock().advance(Duration::from_secs(overlap - 1));
    assert!(s.token(&id, &old, None).await.is_ok());
    s.clock().advance(Duration::from_secs(1));
    let res = token_form(
        &s,
        Some(basic(&id, &old)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(s.token(&id, &new, None).await.is_ok());
}

#[tokio::test]
async fn revoked_client_loses_its_tokens_and_cannot_get_more() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    assert_eq!(
        get_with(&s, "/test/read", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert!(s
        .store()
        .revoke_client(&id, s.state().clock.now())
        .await
        .unwrap());
    let res = get_with(&s, "/test/read", Some(&token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let res = token_form(
        &s,
        Some(basic(&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(res).await["error"], "invalid_client");
}

#[tokio::test]
async fn openapi_and_health_need_no_token() {
    let s = server().await;
    let res = get_with(&s, "/openapi.json", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc = body_json(res).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/auth/v3/oauth/token"]["post"].is_object());
    assert!(doc["components"]["schemas"]["TokenResponse"].is_object());

    let res = get_with(&s, "/healthz", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await, json!({"status": "ok"}));

    let res = get_with(&s, "/no/such/route", None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(res).await["code"], "not_found");
}

async fn echo(s: &TestServer, token: &str, content_type: Option<&str>, body: Vec<u8>) -> Response {
    let mut req = s
        .http()
        .post(s.url("/test/echo"))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn json_bodies_are_checked_with_api_errors() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:write"]).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();

    let res = echo(
        &s,
        &token,
        Some("application/json"),
        br#"{"name":"a","pin":7}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await, json!({"name": "a", "pin": 7}));

    let res = echo(
        &s,
        &token,
        Some("application/json"),
        b"{\n  \"name\": \"a\",\n  \"pin\": 7,,\n}".to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = body_json(res).await;
    assert_eq!(body["code"], "malformed_json");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("line 3") && msg.contains("column"), "{msg}");

    let res = echo(
        &s,
        &token,
        Some("text/plain"),
        br#"{"name":"a","pin":7}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body_json(res).await["code"], "unsupported_media_type");
    let res = echo(&s, &token, None, br#"{"name":"a","pin":7}"#.to_vec()).await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Wrong shape: the path and the expectation, never the value.
    let res = echo(
        &s,
        &token,
        Some("application/json"),
        br#"{"name":"a","pin":"hunter2"}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = body_json(res).await;
    assert_eq!(body["code"], "invalid_body");
    assert_eq!(body["errors"][0]["path"], "/pin");
    let text = body.to_string();
    assert!(text.contains("u32") && !text.contains("hunter2"), "{text}");

    let res = echo(
        &s,
        &token,
        Some("application/json"),
        br#"{"name":"a","pin":1,"hunter2":0}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let text = body_json(res).await.to_string();
    assert!(
        text.contains("unknown field") && !text.contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:write"]).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    let big = {
        let mut v = br#"{"name":""#.to_vec();
        v.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
        v.extend(br#"","pin":1}"#);
        v
    };
    let res = echo(&s, &token, Some("application/json"), big.clone()).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_json(res).await["code"], "payload_too_large");

    // Without a Content-Length (chunked), the limit applies while reading.
    let status = chunked_post(&s, "/test/echo", &token, &big).await;
    assert_eq!(status, 413);

    let res = s
        .http()
        .post(s.url(TOKEN))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(vec![b'a'; 10 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// POST `body` with `Transfer-Encoding: chunked` over a raw connection; the status code.
async fn chunked_post(s: &TestServer, path: &str, token: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = s.base_url().trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and stop reading before everything is sent.
    for chunk in body.chunks(64 * 1024) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn no_response_body_contains_the_secret() {
    let s = server().await;
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();
    let mut bodies: Vec<String> = Vec::new();
    let attempts: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", &secret),
            ("client_secret", &secret),
        ],
        vec![
            ("grant_type", &secret),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", &secret),
        ],
        vec![("grant_type", "client_credentials"), ("client_id", &id)],
    ];
    for form in &attempts {
        bodies.push(token_form(&s, None, form).await.text().await.unwrap());
    }
    bodies.push(
        token_form(
            &s,
            Some(basic(&secret, &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await
        .text()
        .await
        .unwrap(),
    );
    bodies.push(
        get_with(&s, "/test/read", Some(&secret))
            .await
            .text()
            .await
            .unwrap(),
    );
    let res = s
        .http()
        .post(s.url("/test/echo"))
        .bearer_auth(&secret)
        .json(&json!({"name": secret, "pin": secret}))
        .send()
        .await
        .unwrap();
    bodies.push(res.text().await.unwrap());
    assert_eq!(bodies.len(), 8);
    for b in &bodies {
        assert!(!b.contains(&secret), "secret leaked in {b}");
    }
    let audit = s.store().read_audit().await.unwrap();
    assert!(!format!("{audit:?}").contains(&secret));
}

/// How many refusals `records` stand for.
fn refusal_count<'a>(
    records: impl IntoIterator<Item = &'a ivrauth_core::audit::AuditRecord>,
) -> u64 {
    records
        .into_iter()
        .map(|r| r.detail["count"].as_u64().unwrap())
        .sum()
}

/// A form token request with these credentials.
async fn token_request(s: &TestServer, client: &str, secret: &str) -> Response {
    token_form(
        s,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
        ],
    )
    .await
}

/// The `token.refused` records, after writing the refusals counted so far.
async fn refused_records(s: &TestServer) -> Vec<ivrauth_core::audit::AuditRecord> {
    s.state()
        .refusals
        .flush(
            s.store().as_ref(),
            ivrauth_core::time::Clock::now(s.clock()),
        )
        .await
        .unwrap();
    let audit = s.store().read_audit().await.unwrap();
    audit
        .into_iter()
        .filter(|r| r.event == "token.refused")
        .collect()
}

#[tokio::test]
async fn wrong_secrets_cannot_lock_a_client_out_of_token_issuance() {
    let s = TestServer::builder()
        .config(|c| {
            c.rate_limit_burst = 3;
            c.rate_limit_per_sec = 1;
        })
        .start()
        .await
        .unwrap();
    let (id, secret) = s.create_client("target", &["flow:read"]).await.unwrap();
    let (other_id, other_secret) = s.create_client("bystander", &["flow:read"]).await.unwrap();
    let wrong = format!("{secret}x");

    // Someone who knows the (non-secret) client id sends wrong secrets: they use up the
    // failure bucket of that id, then get 429.
    for i in 0..3 {
        let res = token_request(&s, &id, &wrong).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let res = token_request(&s, &id, &wrong).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[RETRY_AFTER], "1");
    assert_eq!(body_json(res).await["code"], "rate_limited");
    // Basic with the same id counts against the same bucket.
    let res = token_form(
        &s,
        Some(basic(&id, &wrong)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // The client itself, holding its secret, still gets tokens, by either method.
    for _ in 0..3 {
        assert!(s.token(&id, &secret, None).await.is_ok());
    }
    // Issuance has its own limit per client (burst 3, used up just now).
    let res = token_form(
        &s,
        Some(basic(&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another client id has its own failure bucket, and its own issuance bucket.
    assert_eq!(
        token_request(&s, &other_id, &wrong).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(s.token(&other_id, &other_secret, None).await.is_ok());

    // One second refills one attempt of each.
    s.clock().advance(Duration::from_secs(1));
    assert_eq!(
        token_request(&s, &id, &wrong).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        token_request(&s, &id, &wrong).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(s.token(&id, &secret, None).await.is_ok());

    // Only the refusals that were let through are audited.
    let refused = refused_records(&s).await;
    assert_eq!(refusal_count(refused.iter().filter(|r| r.actor == id)), 4);
    assert_eq!(
        refusal_count(refused.iter().filter(|r| r.actor == other_id)),
        1
    );
}

#[tokio::test]
async fn random_client_ids_share_one_failure_bucket_and_cannot_flood_the_audit_log() {
    const BURST: u32 = 5;
    let s = TestServer::builder()
        .config(|c| {
            c.rate_limit_burst = BURST;
            c.rate_limit_per_sec = 1;
        })
        .start()
        .await
        .unwrap();
    let (id, secret) = s.create_client("app", &["flow:read"]).await.unwrap();

    let mut limited = 0;
    for i in 0..200 {
        // A fresh client id each time, as a flood would use.
        let fresh = ivrauth_server::http::auth::mint_token();
        let res = token_request(&s, &format!("cli_{}", &fresh[..16]), "guess").await;
        match res.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(res.headers().get(RETRY_AFTER).is_some());
                limited += 1;
            }
            other => panic!("request {i}: unexpected {other}"),
        }
    }
    let refused = refused_records(&s).await;
    let audited = refusal_count(&refused);
    assert!(audited <= u64::from(BURST), "{audited} refusals audited");
    // All of them under one key: one record.
    assert_eq!(refused.len(), 1);
    assert_eq!(limited, 200 - audited);
    assert!(refused.iter().all(|r| r.actor == "anonymous"));

    // Malformed ids and requests without any client authentication share that bucket.
    let res = token_form(&s, None, &[("grant_type", "client_credentials")]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = token_request(&s, "not a client id!", "x").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // A real client is unaffected, whether it holds its secret or not.
    assert!(s.token(&id, &secret, None).await.is_ok());
    assert_eq!(
        token_request(&s, &id, "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(refusal_count(&refused_records(&s).await), audited + 1);
}

#[tokio::test]
async fn demo_identity_endpoint_does_not_echo_rejected_values() {
    let s = TestServer::builder()
        .config(|c| c.demo = true)
        .start()
        .await
        .unwrap();
    for body in [
        r#"{"username":"testuser","password":12345678,"grant_type":"password"}"#,
        r#"{"username":"testuser","password":"12345678","grant_type":"password",,}"#,
        r#"[12345678]"#,
    ] {
        let res = s
            .http()
            .post(s.url(ivrauth_server::http::demo::DEMO_IDENTITY_PATH))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(status.is_client_error(), "{body} → {status}");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json", "{body}");
        let text = res.text().await.unwrap();
        assert!(!text.contains("12345678"), "{body} → {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["code"].is_string(), "{text}");
    }
    // The contract still holds.
    let res = s
        .http()
        .post(s.url(ivrauth_server::http::demo::DEMO_IDENTITY_PATH))
        .json(&json!({"username": "testuser", "password": "correctpassword", "grant_type": "password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document: every route in it, and true
// ---------------------------------------------------------------------------------------

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Every route the server answers, with the media type of its request body (if any).
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("get", "/healthz", None),
    ("get", "/openapi.json", None),
    (
        "post",
        "/auth/v3/oauth/token",
        Some("application/x-www-form-urlencoded"),
    ),
    ("post", "/api/v2/flows", Some("application/json")),
    ("get", "/api/v2/flows", None),
    ("post", "/api/v2/flows/validate", Some("application/json")),
    ("post", "/api/v2/flows/simulate", Some("application/json")),
    ("get", "/api/v2/flows/{id}", None),
    ("put", "/api/v2/flows/{id}", Some("application/json")),
    ("delete", "/api/v2/flows/{id}", None),
    ("post", "/api/v2/flows/{id}/validate", None),
    (
        "post",
        "/api/v2/calls/{callId}/turns",
        Some("application/json"),
    ),
    ("post", "/api/v2/calls/{callId}/hangup", None),
    (
        "post",
        "/voice/twilio/{flowId}",
        Some("application/x-www-form-urlencoded"),
    ),
    (
        "post",
        "/voice/twilio/{flowId}/status",
        Some("application/x-www-form-urlencoded"),
    ),
    ("post", "/voice/jambonz/{flowId}", Some("application/json")),
    (
        "post",
        "/voice/jambonz/{flowId}/status",
        Some("application/json"),
    ),
    ("get", "/voice/vxml/{flowId}", None),
    (
        "post",
        "/voice/vxml/{flowId}",
        Some("application/x-www-form-urlencoded"),
    ),
    ("post", "/demo/identity/token", Some("application/json")),
];

async fn demo_server() -> TestServer {
    TestServer::start_with(|c| c.demo = true).await.unwrap()
}

async fn openapi_doc(s: &TestServer) -> Value {
    body_json(get_with(s, "/openapi.json", None).await).await
}

/// A documented path with every parameter filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "no-such-flow")
        .replace("{callId}", "call-1")
        .replace("{flowId}", "no-such-flow")
}

#[tokio::test]
async fn openapi_documents_every_route_the_server_answers() {
    let s = demo_server().await;
    let doc = openapi_doc(&s).await;
    let paths = doc["paths"].as_object().unwrap();
    // The routes named in the contract, with their bodies.
    for (method, path, media) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing from /openapi.json");
        match media {
            Some(m) => assert!(
                op["requestBody"]["content"][m]["schema"].is_object(),
                "{method} {path}: no {m} body documented: {op}"
            ),
            None => assert!(op["requestBody"].is_null(), "{method} {path}: {op}"),
        }
    }
    // Nothing more and nothing less: the document lists exactly these operations...
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| ((*m).to_owned(), path.clone()))
        })
        .collect();
    assert_eq!(documented.len(), ROUTES.len(), "{documented:?}");
    // ...the server answers each of them (not the router's own 404 or 405), and answers no
    // other method on those paths.
    for (path, item) in paths {
        let url = s.url(&concrete(path));
        for method in METHODS {
            let res = s
                .http()
                .request(method.to_uppercase().parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body = res.text().await.unwrap();
            if item.get(method).is_some() {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(
                    !body.contains("no such route"),
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is answered but not documented: {body}"
                );
            }
        }
    }
    // Without --demo, the demo route is neither served nor documented.
    let plain = server().await;
    let doc = openapi_doc(&plain).await;
    assert!(doc["paths"]["/demo/identity/token"].is_null());
    let res = plain
        .http()
        .post(plain.url("/demo/identity/token"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_documents_the_statuses_each_route_answers() {
    let s = demo_server().await;
    let doc = openapi_doc(&s).await;
    for (method, path, media) in ROUTES {
        let op = &doc["paths"][path][method];
        let has = |status: &str| op["responses"][status].is_object();
        assert!(has("413"), "{method} {path}: 413 undocumented");
        let bearer = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if bearer {
            for status in ["401", "403", "429"] {
                assert!(has(status), "{method} {path}: {status} undocumented");
            }
            assert!(
                op["responses"]["429"]["headers"]["Retry-After"].is_object(),
                "{method} {path}"
            );
        }
        if bearer && *media == Some("application/json") {
            for status in ["400", "415"] {
                assert!(has(status), "{method} {path}: {status} undocumented");
            }
        }
        if path.starts_with("/voice/") {
            // Refused unsigned or unadmitted requests.
            assert!(has("403"), "{method} {path}: 403 undocumented");
            assert!(op["security"].is_array(), "{method} {path}: no security");
        }
    }
    let op = |m: &str, p: &str| doc["paths"][p][m]["responses"].clone();
    for (m, p, statuses) in [
        (
            "post",
            "/api/v2/calls/{callId}/turns",
            &["200", "400", "404", "409"][..],
        ),
        (
            "post",
            "/api/v2/flows/simulate",
            &["200", "400", "403", "404"],
        ),
        (
            "post",
            "/auth/v3/oauth/token",
            &["200", "400", "401", "415", "429"],
        ),
        (
            "get",
            "/voice/vxml/{flowId}",
            &["200", "400", "401", "403", "404"],
        ),
    ] {
        for status in statuses {
            assert!(
                op(m, p)[status].is_object(),
                "{m} {p}: {status} undocumented"
            );
        }
    }
}

/// Whether `instance` is valid against the component schema `name` of `doc`.
fn valid(doc: &Value, name: &str, instance: &Value) -> bool {
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"].clone(),
    });
    jsonschema::validator_for(&schema)
        .unwrap()
        .is_valid(instance)
}

#[tokio::test]
async fn openapi_bodies_the_server_refuses_are_invalid_in_the_schema() {
    let s = server().await;
    let doc = openapi_doc(&s).await;
    let flow = json!({"name": "f", "nodes": {"end": {"type": "end"}}, "startNode": "end"});
    // A simulation names exactly one of a stored flow and a document.
    assert!(!valid(&doc, "SimulateRequest", &json!({})));
    assert!(!valid(
        &doc,
        "SimulateRequest",
        &json!({"flowId": "a", "flow": flow})
    ));
    assert!(!valid(&doc, "SimulateRequest", &json!({"flowId": null})));
    assert!(valid(&doc, "SimulateRequest", &json!({"flowId": "a"})));
    assert!(valid(
        &doc,
        "SimulateRequest",
        &json!({"flow": flow, "digits": ["1"]})
    ));
    // A flow document needs a name, nodes and a start node.
    assert!(!valid(&doc, "FlowDocument", &json!({})));
    assert!(!valid(
        &doc,
        "FlowDocument",
        &json!({"name": " ", "nodes": {"a": {}}, "startNode": "a"})
    ));
    assert!(!valid(
        &doc,
        "FlowDocument",
        &json!({"name": "f", "nodes": {}, "startNode": "a"})
    ));
    assert!(valid(&doc, "FlowDocument", &flow));
    // The token form needs its grant type; a decision-API turn its flow.
    assert!(!valid(&doc, "TokenRequest", &json!({})));
    assert!(valid(
        &doc,
        "TokenRequest",
        &json!({"grant_type": "client_credentials"})
    ));
    assert!(!valid(&doc, "ApiTurnRequest", &json!({})));
    assert!(!valid(
        &doc,
        "ApiTurnRequest",
        &json!({"flowId": "x".repeat(129)})
    ));
    // And the server refuses what the schema calls invalid.
    let (id, secret) = s
        .create_client("sim", &["flow:simulate", "flow:write"])
        .await
        .unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    for (path, body) in [
        ("/api/v2/flows/simulate", json!({})),
        ("/api/v2/flows", json!({})),
    ] {
        let res = s
            .http()
            .post(s.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}

/// Schemathesis, an OpenAPI-driven fuzzer, against the real server with every check: the
/// document is true when it finds nothing. The client holds every scope; the telephony
/// webhooks need the platforms' signatures or credentials, so the fuzzer sees their
/// documented 401/403 answers there.
///
/// One check is loosened, for three operations, where it is impossible by design:
/// `positive_data_acceptance` expects every request valid against the schema to be
/// accepted (2xx, or 401/403/404/409/429), and there 400 is accepted too:
/// - deploying a flow, a new version, or simulating one: a flow document's rules (nodes of
///   known types with their properties, edges between existing nodes, a reachable end) are
///   beyond JSON Schema, so a generated document that fits the schema is still refused
///   with a 400 `invalid_flow` listing its problems;
/// - a decision-API turn: JSON Schema's `integer` admits `1.0`, which the wire contract's
///   `turn` (an unsigned integer) refuses; the 128-character limits are counted in bytes,
///   which JSON Schema cannot state; and `flow_not_callable` depends on the stored flow.
///
/// Every other check stays on for them, and every check for every other operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let s = TestServer::start_with(|c| {
        c.demo = true;
        c.rate_limit_per_sec = 100_000;
        c.rate_limit_burst = 100_000;
    })
    .await
    .unwrap();
    let scopes = [
        "flow:read",
        "flow:write",
        "flow:simulate",
        "identity:simulate",
        "call:turn",
    ];
    let (id, secret) = s.create_client("fuzzer", &scopes).await.unwrap();
    let token = s.token(&id, &secret, None).await.unwrap();
    let config = r#"
[[operations]]
include-path-regex = "^/api/v2/flows(/simulate|/\\{id\\})?$"
include-method-regex = "^(POST|PUT)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

[[operations]]
include-path = "/api/v2/calls/{callId}/turns"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let base = s.base_url().to_owned();
    let dir_path = dir.path().to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        ivrauth_testkit::schemathesis::run(&base, &token, 10, config, &dir_path)
    })
    .await
    .unwrap()
    .unwrap();
    println!("{}", outcome.output);
    // It tested every documented operation (the document itself is not among them).
    let tested = outcome
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(tested, Some(ROUTES.len() - 1), "{}", outcome.output);
    assert_eq!(
        outcome.code,
        Some(0),
        "schemathesis failed:\n{}",
        outcome.output
    );
}
