//! A real HTTP identity endpoint on `127.0.0.1:0` speaking seed 000's contract:
//! `POST {username, password, grant_type: "password"}` → 200 `{token, expires_in}` or 401.
//! It counts requests, and can hold answers for one username until released, so tests can
//! catch a run in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use crate::{err, Result};

/// The path the endpoint answers on.
pub const IDENTITY_PATH: &str = "/api/auth";

struct Inner {
    username: String,
    password: String,
    token: String,
    requests: AtomicUsize,
    hold_username: Option<String>,
    held: Notify,
    release: Notify,
}

/// A running identity endpoint; stops when dropped.
pub struct IdentityServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: oneshot::Sender<()>,
}

impl IdentityServer {
    /// Accepts exactly `username`/`password` and answers with `token`.
    pub async fn start(username: &str, password: &str, token: &str) -> Result<IdentityServer> {
        Self::start_holding(username, password, token, None).await
    }

    /// Like [`start`](Self::start), but requests for `hold_username` wait for
    /// [`release`](Self::release) before they are answered (with 401).
    pub async fn start_holding(
        username: &str,
        password: &str,
        token: &str,
        hold_username: Option<&str>,
    ) -> Result<IdentityServer> {
        let inner = Arc::new(Inner {
            username: username.to_owned(),
            password: password.to_owned(),
            token: token.to_owned(),
            requests: AtomicUsize::new(0),
            hold_username: hold_username.map(str::to_owned),
            held: Notify::new(),
            release: Notify::new(),
        });
        let app = Router::new()
            .route(IDENTITY_PATH, post(answer))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err("bind", e))?;
        let addr = listener.local_addr().map_err(|e| err("local_addr", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(IdentityServer {
            addr,
            inner,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT/api/auth`
    pub fn url(&self) -> String {
        format!("http://{}{IDENTITY_PATH}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Completes once a request for the held username has arrived.
    pub async fn wait_held(&self) {
        self.inner.held.notified().await;
    }

    /// Let the held request be answered.
    pub fn release(&self) {
        self.inner.release.notify_one();
    }
}

async fn answer(
    State(inner): State<Arc<Inner>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let user = body
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pass = body
        .get("password")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let grant = body
        .get("grant_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if inner.hold_username.as_deref() == Some(user) {
        let released = inner.release.notified();
        inner.held.notify_one();
        released.await;
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_credentials"})),
        );
    }
    if grant == "password" && user == inner.username && pass == inner.password {
        (
            StatusCode::OK,
            Json(json!({"token": inner.token, "expires_in": 3600})),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_credentials"})),
        )
    }
}
