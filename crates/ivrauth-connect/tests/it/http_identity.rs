#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `HttpIdentity` against ivrauth-testkit's `IdentityServer` (seed 000's contract) and a few
//! misbehaving endpoints on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ivrauth_connect::http_identity::{HttpIdentity, HttpIdentityConfig};
use ivrauth_core::identity::{
    AccountNumber, IdentityError, IdentityProvider, RejectReason, Verification,
};
use ivrauth_core::secret::Secret;
use ivrauth_testkit::identity::IdentityServer;
use serde_json::json;

fn account(s: &str) -> AccountNumber {
    AccountNumber::parse(s).unwrap()
}

fn secret(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

fn provider(url: &str) -> HttpIdentity {
    HttpIdentity::new(HttpIdentityConfig {
        url: url.to_owned(),
        health_url: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn verify_right_wrong_unknown_and_empty() {
    let server = IdentityServer::start("10001", "2468", "tok-canary")
        .await
        .unwrap();
    let p = provider(&server.url());
    assert_eq!(p.kind(), "http");
    assert_eq!(
        p.verify(&account("10001"), &secret("2468")).await,
        Ok(Verification::Verified)
    );
    assert_eq!(
        p.verify(&account("10001"), &secret("1357")).await,
        Ok(Verification::Rejected(RejectReason::WrongSecret))
    );
    // The contract cannot tell an unknown account from a wrong secret.
    assert_eq!(
        p.verify(&account("99999"), &secret("2468")).await,
        Ok(Verification::Rejected(RejectReason::WrongSecret))
    );
    assert_eq!(server.requests(), 3);
    assert_eq!(
        p.verify(&account("10001"), &secret("")).await,
        Ok(Verification::Rejected(RejectReason::EmptySecret))
    );
    assert_eq!(server.requests(), 3, "an empty secret is never sent");
}

#[tokio::test]
async fn lookup_and_change_secret_are_unsupported() {
    let server = IdentityServer::start("10001", "2468", "tok").await.unwrap();
    let p = provider(&server.url());
    assert!(matches!(
        p.lookup(&account("10001")).await,
        Err(IdentityError::Unsupported(_))
    ));
    assert!(matches!(
        p.change_secret(&account("10001"), &secret("1111")).await,
        Err(IdentityError::Unsupported(_))
    ));
    assert_eq!(server.requests(), 0);
    assert_eq!(p.health().await, Ok(()), "no health URL: nothing to check");
}

#[tokio::test]
async fn only_https_or_loopback_http() {
    let cfg = |url: &str| HttpIdentityConfig {
        url: url.to_owned(),
        health_url: None,
        timeout: Duration::from_secs(5),
    };
    assert!(HttpIdentity::new(cfg("https://idp.example.test/api/auth")).is_ok());
    assert!(HttpIdentity::new(cfg("http://localhost:3999/api/auth")).is_ok());
    for bad in [
        "http://idp.example.test/api/auth",
        "ftp://127.0.0.1/x",
        "not a url",
    ] {
        assert!(
            matches!(
                HttpIdentity::new(cfg(bad)),
                Err(IdentityError::Unavailable(_))
            ),
            "{bad}"
        );
    }
    let mut zero = cfg("https://idp.example.test/api/auth");
    zero.timeout = Duration::ZERO;
    assert!(HttpIdentity::new(zero).is_err());
}

#[tokio::test]
async fn odd_answers_are_unavailable() {
    let app = Router::new()
        .route(
            "/no-token",
            post(|| async { Json(json!({"expires_in": 60})) }),
        )
        .route(
            "/empty-token",
            post(|| async { Json(json!({"token": "", "expires_in": 60})) }),
        )
        .route(
            "/broken",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "oops") }),
        )
        .route(
            "/bad-request",
            post(|| async { (StatusCode::BAD_REQUEST, "no") }),
        )
        .route(
            "/forbidden",
            post(|| async { (StatusCode::FORBIDDEN, "no") }),
        )
        .route(
            "/not-found",
            post(|| async { (StatusCode::NOT_FOUND, "no such user") }),
        )
        .route(
            "/redirect",
            post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", "http://127.0.0.1:9/steal")],
                )
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Json(json!({"token": "late", "expires_in": 60}))
            }),
        );
    let addr = serve(app).await;
    let url = |p: &str| format!("http://{addr}{p}");
    for path in [
        "/no-token",
        "/empty-token",
        "/broken",
        "/bad-request",
        "/redirect",
    ] {
        let r = provider(&url(path))
            .verify(&account("10001"), &secret("2468"))
            .await;
        assert!(
            matches!(r, Err(IdentityError::Unavailable(_))),
            "{path}: {r:?}"
        );
    }
    assert_eq!(
        provider(&url("/forbidden"))
            .verify(&account("10001"), &secret("2468"))
            .await,
        Ok(Verification::Rejected(RejectReason::WrongSecret))
    );
    // A 404 for an unknown user is a rejection like any other, not an outage.
    assert_eq!(
        provider(&url("/not-found"))
            .verify(&account("10001"), &secret("2468"))
            .await,
        Ok(Verification::Rejected(RejectReason::UnknownAccount))
    );
    // A timeout, well before the handler answers.
    let slow = HttpIdentity::new(HttpIdentityConfig {
        url: url("/slow"),
        health_url: None,
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    let started = Instant::now();
    let r = slow.verify(&account("10001"), &secret("2468")).await;
    assert!(matches!(r, Err(IdentityError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = provider(&format!("http://127.0.0.1:{port}/api/auth"))
        .verify(&account("10001"), &secret("2468"))
        .await;
    let err = r.unwrap_err().to_string();
    assert!(!err.contains("2468"), "{err}");
}

#[tokio::test]
async fn health_uses_the_health_url() {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/sick",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        );
    let addr = serve(app).await;
    let with_health = |h: &str| {
        HttpIdentity::new(HttpIdentityConfig {
            url: format!("http://{addr}/api/auth"),
            health_url: Some(format!("http://{addr}{h}")),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    };
    assert_eq!(with_health("/healthz").health().await, Ok(()));
    assert!(matches!(
        with_health("/sick").health().await,
        Err(IdentityError::Unavailable(_))
    ));
}
