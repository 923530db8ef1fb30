#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The HTTP executor against real HTTP servers on 127.0.0.1, with a recording sleeper so
//! that back-off never really waits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use ivrauth_connect::{HttpConfig, HttpExecutor, RecordingSleeper};
use ivrauth_core::http::{HttpFailureKind, HttpRequest, HttpResponse, HttpResult};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::{Clock, UnixMillis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NOW_SECS: u64 = 1_700_000_000;

struct FixedClock(UnixMillis);

impl Clock for FixedClock {
    fn now(&self) -> UnixMillis {
        self.0
    }
}

fn executor(config: HttpConfig) -> (HttpExecutor, Arc<RecordingSleeper>) {
    let sleeper = Arc::new(RecordingSleeper::new());
    let clock = Arc::new(FixedClock(UnixMillis(NOW_SECS as i64 * 1000)));
    let exec = HttpExecutor::new(config, sleeper.clone(), clock).expect("executor");
    (exec, sleeper)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

fn get(url: String) -> HttpRequest {
    HttpRequest {
        method: "GET".to_owned(),
        url,
        headers: vec![],
        body: None,
        timeout_ms: 0,
        carries_secret: false,
    }
}

fn status(code: u16, headers: &[(&str, &str)], body: &'static str) -> Response {
    let mut b = Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body)).unwrap()
}

/// A server whose `/x` answers the n-th request (from 0) with `answer(n)`; returns the
/// address and the request counter.
async fn scripted(
    answer: impl Fn(usize) -> Response + Clone + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        "/x",
        any(move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            let resp = answer(n);
            async move { resp }
        }),
    );
    (serve(router).await, hits)
}

fn response(r: HttpResult) -> HttpResponse {
    match r {
        HttpResult::Response(r) => r,
        HttpResult::Failed(f) => panic!("expected a response, got {f:?}"),
    }
}

fn failure_kind(r: &HttpResult) -> Option<HttpFailureKind> {
    match r {
        HttpResult::Failed(f) => Some(f.kind),
        HttpResult::Response(_) => None,
    }
}

#[tokio::test]
async fn retry_after_seconds_then_success() {
    let (addr, hits) = scripted(|n| match n {
        0 => status(429, &[("retry-after", "2")], "slow down"),
        _ => status(200, &[], "ok"),
    })
    .await;
    let (exec, sleeper) = executor(HttpConfig::default());
    let r = response(exec.execute(&get(format!("http://{addr}/x"))).await);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(sleeper.recorded(), vec![Duration::from_secs(2)]);
}

#[tokio::test]
async fn retry_after_http_date_uses_injected_clock() {
    let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(NOW_SECS + 7));
    let (addr, hits) = scripted(move |n| match n {
        0 => {
            let mut resp = status(503, &[], "");
            resp.headers_mut()
                .insert("retry-after", date.parse().unwrap());
            resp
        }
        _ => status(200, &[], "ok"),
    })
    .await;
    let (exec, sleeper) = executor(HttpConfig::default());
    let r = response(exec.execute(&get(format!("http://{addr}/x"))).await);
    assert_eq!(r.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(sleeper.recorded(), vec![Duration::from_secs(7)]);
}

#[tokio::test]
async fn three_503s_return_the_last_503() {
    let (addr, hits) = scripted(|n| {
        let body: &'static str = ["first", "second", "third", "fourth"][n.min(3)];
        status(503, &[("retry-after", "1")], body)
    })
    .await;
    let (exec, sleeper) = executor(HttpConfig::default());
    let r = response(exec.execute(&get(format!("http://{addr}/x"))).await);
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"third");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(sleeper.recorded(), vec![Duration::from_secs(1); 2]);
}

#[tokio::test]
async fn too_many_requests_without_retry_after_backs_off_within_cap() {
    let (addr, hits) = scripted(|_| status(429, &[], "")).await;
    let config = HttpConfig {
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let (exec, sleeper) = executor(config);
    let r = response(exec.execute(&get(format!("http://{addr}/x"))).await);
    assert_eq!(r.status, 429);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let waits = sleeper.recorded();
    assert_eq!(waits.len(), 2);
    assert!(waits[0] <= Duration::from_millis(200), "{waits:?}");
    assert!(waits[1] <= Duration::from_millis(300), "{waits:?}");
}

#[tokio::test]
async fn retry_after_beyond_max_is_not_waited_for() {
    let (addr, hits) = scripted(|_| status(429, &[("retry-after", "31")], "later")).await;
    let (exec, sleeper) = executor(HttpConfig::default());
    let r = response(exec.execute(&get(format!("http://{addr}/x"))).await);
    assert_eq!(r.status, 429);
    assert_eq!(r.body, b"later");
    assert!(r
        .headers
        .contains(&("retry-after".to_owned(), "31".to_owned())));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(sleeper.recorded().is_empty());
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let target_hits = Arc::new(AtomicUsize::new(0));
    let t = target_hits.clone();
    let router = Router::new()
        .route(
            "/from",
            any(|| async { status(302, &[("Location", "/to")], "") }),
        )
        .route(
            "/to",
            any(move || {
                t.fetch_add(1, Ordering::SeqCst);
                async { "target" }
            }),
        );
    let addr = serve(router).await;
    let (exec, _) = executor(HttpConfig::default());
    let r = response(exec.execute(&get(format!("http://{addr}/from"))).await);
    assert_eq!(r.status, 302);
    assert!(r
        .headers
        .contains(&("location".to_owned(), "/to".to_owned())));
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn hanging_handler_times_out() {
    let router = Router::new().route(
        "/hang",
        any(|| async {
            std::future::pending::<()>().await;
            "never"
        }),
    );
    let addr = serve(router).await;
    let (exec, sleeper) = executor(HttpConfig::default());
    let mut req = get(format!("http://{addr}/hang?token=s3cret"));
    req.timeout_ms = 300;
    let started = Instant::now();
    let r = exec.execute(&req).await;
    assert_eq!(failure_kind(&r), Some(HttpFailureKind::Timeout), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    if let HttpResult::Failed(f) = &r {
        assert!(!f.message.contains("s3cret"), "{}", f.message);
    }
    assert!(sleeper.recorded().is_empty());
}

#[tokio::test]
async fn connection_refused_is_connect_and_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (exec, sleeper) = executor(HttpConfig::default());
    let r = exec
        .execute(&get(format!(
            "http://user:pa55@127.0.0.1:{port}/x?token=s3cret"
        )))
        .await;
    let HttpResult::Failed(f) = r else {
        panic!("expected a failure, got {r:?}")
    };
    assert_eq!(f.kind, HttpFailureKind::Connect, "{f:?}");
    assert!(
        !f.message.contains("s3cret") && !f.message.contains("pa55"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains(&format!("127.0.0.1:{port}/x")),
        "{}",
        f.message
    );
    assert!(sleeper.recorded().is_empty());
}

#[tokio::test]
async fn allow_list_refuses_host_and_sends_nothing() {
    let (addr, hits) = scripted(|_| status(200, &[], "ok")).await;
    let config = HttpConfig {
        allowed_hosts: Some(vec![
            "api.example.com".to_owned(),
            "*.example.org".to_owned(),
        ]),
        ..HttpConfig::default()
    };
    let (exec, _) = executor(config);
    let r = exec.execute(&get(format!("http://{addr}/x"))).await;
    assert_eq!(
        failure_kind(&r),
        Some(HttpFailureKind::DisallowedHost),
        "{r:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The same server is reachable once it is on the list.
    let config = HttpConfig {
        allowed_hosts: Some(vec!["*.example.org".to_owned(), "127.0.0.1".to_owned()]),
        ..HttpConfig::default()
    };
    let (exec, _) = executor(config);
    assert_eq!(
        response(exec.execute(&get(format!("http://{addr}/x"))).await).status,
        200
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_allow_list_entry_is_rejected() {
    let config = HttpConfig {
        allowed_hosts: Some(vec!["ex*mple.com".to_owned()]),
        ..HttpConfig::default()
    };
    let clock = Arc::new(FixedClock(UnixMillis(0)));
    assert!(HttpExecutor::new(config, Arc::new(RecordingSleeper::new()), clock).is_err());
}

#[tokio::test]
async fn secrets_only_over_secure_transport() {
    let (exec, _) = executor(HttpConfig::default());
    let mut req = get("http://example.invalid/".to_owned());
    req.carries_secret = true;
    req.headers = vec![(
        "authorization".to_owned(),
        Secret::new("Bearer s3cret".to_owned()),
    )];
    let r = exec.execute(&req).await;
    assert_eq!(
        failure_kind(&r),
        Some(HttpFailureKind::InsecureTransport),
        "{r:?}"
    );

    let (addr, hits) = scripted(|_| status(200, &[], "ok")).await;
    req.url = format!("http://127.0.0.1:{}/x", addr.port());
    assert_eq!(response(exec.execute(&req).await).status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn non_http_scheme_is_invalid() {
    let (exec, _) = executor(HttpConfig::default());
    for url in ["ftp://127.0.0.1/x", "file:///etc/passwd", "not a url"] {
        let r = exec.execute(&get(url.to_owned())).await;
        assert_eq!(
            failure_kind(&r),
            Some(HttpFailureKind::InvalidRequest),
            "{url}: {r:?}"
        );
    }
}

#[tokio::test]
async fn oversized_body_is_response_too_large() {
    static BIG: [u8; 2048] = [b'a'; 2048];
    let router = Router::new()
        .route("/big", any(|| async { Bytes::from_static(&BIG) }))
        .route("/fits", any(|| async { Bytes::from_static(&BIG[..1024]) }));
    let addr = serve(router).await;
    let config = HttpConfig {
        max_response_bytes: 1024,
        ..HttpConfig::default()
    };
    let (exec, _) = executor(config);
    let r = exec.execute(&get(format!("http://{addr}/big"))).await;
    assert_eq!(
        failure_kind(&r),
        Some(HttpFailureKind::ResponseTooLarge),
        "{r:?}"
    );
    let r = response(exec.execute(&get(format!("http://{addr}/fits"))).await);
    assert_eq!(r.body.len(), 1024);
}

/// A body without Content-Length (chunked) is capped while it streams.
#[tokio::test]
async fn oversized_chunked_body_is_response_too_large() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("200\r\n{}\r\n", "b".repeat(0x200));
                for _ in 0..8 {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let (exec, _) = executor(HttpConfig {
        max_response_bytes: 1024,
        ..HttpConfig::default()
    });
    let r = exec.execute(&get(format!("http://{addr}/stream"))).await;
    assert_eq!(
        failure_kind(&r),
        Some(HttpFailureKind::ResponseTooLarge),
        "{r:?}"
    );

    let (exec, _) = executor(HttpConfig {
        max_response_bytes: 4096,
        ..HttpConfig::default()
    });
    let r = response(exec.execute(&get(format!("http://{addr}/stream"))).await);
    assert_eq!(r.body.len(), 4096);
}

#[tokio::test]
async fn server_error_is_not_retried() {
    let (addr, hits) = scripted(|_| status(500, &[("retry-after", "1")], "boom")).await;
    let (exec, sleeper) = executor(HttpConfig::default());
    let r = response(exec.execute(&get(format!("http://{addr}/x"))).await);
    assert_eq!(r.status, 500);
    assert_eq!(r.body, b"boom");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(sleeper.recorded().is_empty());
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

#[tokio::test]
async fn json_post_arrives_as_sent() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    let router = Router::new().route(
        "/api/auth",
        any(
            move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                s.lock().unwrap().push(Seen {
                    method,
                    query: uri.query().map(str::to_owned),
                    headers,
                    body,
                });
                async {
                    status(
                        201,
                        &[
                            ("X-Request-Id", "abc"),
                            ("Content-Type", "application/json"),
                        ],
                        "{\"ok\":true}",
                    )
                }
            },
        ),
    );
    let addr = serve(router).await;
    let payload = serde_json::json!({"pin": "1234", "caller": "+15551234567"});
    let payload_bytes = serde_json::to_vec(&payload).unwrap();
    let req = HttpRequest {
        method: "POST".to_owned(),
        url: format!("http://127.0.0.1:{}/api/auth?v=1", addr.port()),
        headers: vec![
            (
                "Content-Type".to_owned(),
                Secret::new("application/json".to_owned()),
            ),
            ("X-Api-Key".to_owned(), Secret::new("k-123".to_owned())),
            ("X-Multi".to_owned(), Secret::new("one".to_owned())),
            ("X-Multi".to_owned(), Secret::new("two".to_owned())),
        ],
        body: Some(Secret::new(payload_bytes.clone())),
        timeout_ms: 2_000,
        carries_secret: true,
    };
    let (exec, _) = executor(HttpConfig::default());
    let r = response(exec.execute(&req).await);
    assert_eq!(r.status, 201);
    assert_eq!(r.body, b"{\"ok\":true}");
    assert!(r
        .headers
        .contains(&("x-request-id".to_owned(), "abc".to_owned())));
    assert!(r.headers.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, Method::POST);
    assert_eq!(s.query.as_deref(), Some("v=1"));
    assert_eq!(s.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(s.headers.get("x-api-key").unwrap(), "k-123");
    let multi: Vec<_> = s.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(s.body.as_ref(), payload_bytes.as_slice());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&s.body).unwrap(),
        payload
    );
}
