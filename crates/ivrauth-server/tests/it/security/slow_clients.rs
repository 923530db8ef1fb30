//! Slow clients cannot hold the server: a trickled head, an idle kept-alive connection and
//! a trickled body are each cut off at their timeout (trickling does not reset it);
//! connections over the cap are refused at once, not queued; shutdown still lets a request
//! in flight finish.
//!
//! These run the real server on 127.0.0.1:0 with short limits. The timeouts are the server's
//! real timers, so elapsed time is measured for real; each bound is generous, and no test
//! sleeps to decide an outcome: it waits for the server to close or answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use ivrauth_server::{AppState, ServeLimits};
use ivrauth_testkit::TestServer;

/// Slack on top of a timeout for the server to act on it (slow CI machines included).
const MARGIN: Duration = Duration::from_secs(3);
/// How long a test waits for anything before it fails.
const PATIENCE: Duration = Duration::from_secs(20);
/// Pace of a trickling client.
const TRICKLE: Duration = Duration::from_millis(300);

fn limits(f: impl FnOnce(&mut ServeLimits)) -> ServeLimits {
    let mut limits = ServeLimits {
        header_read_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        max_connections: 64,
    };
    f(&mut limits);
    limits
}

async fn start(limits: ServeLimits) -> TestServer {
    TestServer::start_with(|c| c.limits = limits).await.unwrap()
}

fn addr(server: &TestServer) -> String {
    server
        .base_url()
        .strip_prefix("http://")
        .unwrap()
        .to_owned()
}

/// One response read from `stream` (head and a `content-length` body), or `None` when the
/// server closes first. Fails after [`PATIENCE`].
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    tokio::time::timeout(PATIENCE, read_response_unbounded(stream))
        .await
        .expect("neither an answer nor a close from the server")
}

async fn read_response_unbounded(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(text);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Wait until the server closes `stream` (EOF or reset), discarding what it sends; the
/// time it took. Fails after [`PATIENCE`].
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server never closed the connection")
}

/// Write `bytes` one at a time every [`TRICKLE`] while watching for the server's answer or
/// close. Returns what the server sent, how many bytes went out, and when it closed
/// (measured from `since`).
async fn trickle(stream: TcpStream, bytes: &[u8], since: Instant) -> (String, usize, Duration) {
    let (mut reader, mut writer) = stream.into_split();
    let mut received = Vec::new();
    let mut sent = 0;
    let mut chunk = [0u8; 4096];
    let mut pace = tokio::time::interval(TRICKLE);
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            tokio::select! {
                read = reader.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return since.elapsed(),
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                },
                _ = pace.tick(), if sent < bytes.len() => {
                    if writer.write_all(&bytes[sent..=sent]).await.is_err() {
                        return since.elapsed();
                    }
                    sent += 1;
                }
            }
        }
    })
    .await
    .expect("the server never closed the trickling connection");
    (
        String::from_utf8_lossy(&received).into_owned(),
        sent,
        closed,
    )
}

#[tokio::test]
async fn a_client_trickling_its_head_is_disconnected_within_the_header_timeout() {
    let header = Duration::from_secs(1);
    let server = start(limits(|l| l.header_read_timeout = header)).await;
    // A head that never ends: a byte every 300 ms would go on for a minute.
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec();
    head.resize(200, b'a');

    let since = Instant::now();
    let stream = TcpStream::connect(addr(&server)).await.unwrap();
    let (answer, sent, closed) = trickle(stream, &head, since).await;

    assert!(
        closed >= header - Duration::from_millis(100) && closed < header + MARGIN,
        "closed after {closed:?}"
    );
    assert!(sent < head.len(), "the head was sent whole ({sent} bytes)");
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let header = Duration::from_secs(1);
    let idle = Duration::from_secs(2);
    let server = start(limits(|l| {
        l.header_read_timeout = header;
        l.idle_timeout = idle;
    }))
    .await;

    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let since = Instant::now();
    let closed = closed_after(&mut stream, since).await;
    // Kept past the header timeout, closed at the idle timeout.
    assert!(
        closed >= idle - Duration::from_millis(100) && closed < idle + MARGIN,
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn a_request_body_trickled_past_the_body_timeout_is_refused_and_closed() {
    let body_timeout = Duration::from_secs(1);
    let server = start(limits(|l| l.body_timeout = body_timeout)).await;

    let since = Instant::now();
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    stream
        .write_all(
            b"POST /auth/v3/oauth/token HTTP/1.1\r\nhost: x\r\n\
              content-type: application/x-www-form-urlencoded\r\ncontent-length: 200\r\n\r\n",
        )
        .await
        .unwrap();
    let (answer, sent, closed) = trickle(stream, &[b'a'; 200], since).await;

    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(
        closed >= body_timeout - Duration::from_millis(100) && closed < body_timeout + MARGIN,
        "closed after {closed:?}"
    );
    assert!(sent < 200, "the body was sent whole");
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once_and_a_freed_place_is_reused() {
    let server = start(limits(|l| l.max_connections = 2)).await;
    let addr = addr(&server);

    // Two connections hold the two places (the server accepts in arrival order).
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();

    // A third is answered 503 and closed at once, not kept waiting for a place.
    let since = Instant::now();
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let refusal = read_response(&mut third).await.unwrap();
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("too_many_connections"), "{refusal}");
    let closed = closed_after(&mut third, since).await;
    assert!(closed < MARGIN, "refused after {closed:?}");

    // The held connections are served.
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let ok = read_response(&mut second).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    // Freeing a place lets the next connection in (once the server has seen the close).
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let ok = read_response(&mut first).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    closed_after(&mut first, Instant::now()).await;
    let admitted = tokio::time::timeout(PATIENCE, async {
        let mut refused = 0u32;
        loop {
            let mut next = TcpStream::connect(&addr).await.unwrap();
            next.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            match read_response(&mut next).await {
                Some(r) if r.starts_with("HTTP/1.1 200") => return refused,
                Some(r) if r.starts_with("HTTP/1.1 503") => refused += 1,
                other => panic!("unexpected answer {other:?}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no connection was admitted after a place was freed");
    assert!(admitted < 1000, "refused {admitted} times first");

    // And the other held connection is still open and served.
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let ok = read_response(&mut second).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    let entered = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let (e, g) = (entered.clone(), gate.clone());
    let slow: Router<AppState> = Router::new().route(
        "/test/slow",
        get(move || {
            let (e, g) = (e.clone(), g.clone());
            async move {
                e.notify_one();
                g.notified().await;
                "done"
            }
        }),
    );
    let server = TestServer::builder().routes(slow).start().await.unwrap();
    let addr = addr(&server);

    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut idle)
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let mut busy = TcpStream::connect(&addr).await.unwrap();
    busy.write_all(b"GET /test/slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("the slow request never reached its handler");

    let stopping = tokio::spawn(server.shutdown());
    // The idle connection is closed; the server waits for the busy one.
    closed_after(&mut idle, Instant::now()).await;
    assert!(!stopping.is_finished());

    gate.notify_one();
    let response = tokio::time::timeout(PATIENCE, read_response(&mut busy))
        .await
        .unwrap()
        .expect("the request in flight was cut off");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("done"),
        "{response}"
    );
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}
