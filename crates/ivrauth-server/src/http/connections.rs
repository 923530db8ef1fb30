//! The accept loop behind [`crate::serve`]: HTTP/1.1 connections with the limits that keep
//! slow, idle or too many clients from holding the server.
//!
//! Per connection ([`ServeLimits`]): the head of a request must arrive whole within
//! `header_read_timeout`, counted from the connection's start or from the first byte of a
//! later request; a kept-alive connection waits at most `idle_timeout` for its next request;
//! a request body must arrive whole within `body_timeout` of its head (else the body reads
//! fail with [`BodyTimeout`], and extractors answer 400 `body_timeout`), and a response the
//! client stops taking is dropped `body_timeout` after its socket first stopped taking bytes.
//! Trickling bytes does not reset any of these. At most `max_connections` are open at once;
//! one more is answered 503 (when its socket takes the few bytes at once) and closed at
//! accept, so a flood is refused, not queued. Hyper's own header-read timer stays on as a
//! backstop (`header_read_timeout + idle_timeout`).
//!
//! Each request carries [`axum::extract::ConnectInfo`] with the peer's address. On shutdown
//! the loop stops accepting, idle connections close, in-flight requests finish.
//!
//! Not here: per-client rate limits ([`crate::app::ratelimit`]) and body size (the router's
//! layers). HTTP/2 is not served (as before).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// How long connections may take and how many may be open; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request's head must arrive whole within this, from the connection's start or from
    /// the first byte of a later request on it.
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this of its head; a response the client
    /// stops taking is dropped this long after it stopped.
    pub body_timeout: Duration,
    /// A kept-alive connection is closed when no next request starts within this.
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // Far above a burst of 500 calls, each holding a connection or two.
            max_connections: 4096,
        }
    }
}

/// A request body did not arrive whole within [`ServeLimits::body_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Whether `e`, or an error it wraps, is a [`BodyTimeout`].
    pub fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(e) = next {
            if e.is::<BodyTimeout>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// Accept connections on `listener` and serve `app` on each within `limits`, until
/// `shutdown` completes; then stop accepting and wait for open connections to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let refusal = refusal_response();
    // Dropping `signal_rx` tells the loop and every connection that shutdown began.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    // Each connection task holds a `close_rx`; `close_tx.closed()` waits for them all.
    let (close_tx, close_rx) = watch::channel(());
    let mut refusing = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = signal_tx.closed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached: new connections are answered 503 and closed until some close ([server] max_connections)"
                );
                refusing = true;
            }
            // Never wait on a refused peer: what the socket does not take at once is lost.
            let _ = stream.try_write(&refusal);
            continue;
        };
        if refusing {
            tracing::info!("below the connection cap again: accepting connections");
            refusing = false;
        }
        let app = app.clone();
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, &signal_tx).await;
            drop(permit);
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
    Ok(())
}

/// The next connection. Errors of one connection are skipped; others (such as too many open
/// files) are logged and retried after a pause, as hyper's and axum's servers do.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot accept connections; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What a connection over the cap gets before it is closed.
fn refusal_response() -> Vec<u8> {
    let body = serde_json::to_vec(&ivrauth_proto::api::ErrorBody {
        code: "too_many_connections".to_owned(),
        message: "the server has too many open connections; retry shortly".to_owned(),
        errors: Vec::new(),
    })
    .unwrap_or_default();
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

/// Serve one connection until it ends, a limit closes it, or shutdown lets it finish.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    signal_tx: &watch::Sender<()>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let io = TokioIo::new(Watched::new(stream, in_flight.clone(), limits));
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = InFlight::enter(&in_flight);
        let deadline = Instant::now() + body_timeout;
        let mut req = req.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline,
                timeout: body_timeout,
                sleep: None,
            })
        });
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = match app.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Guarded {
                    inner: body,
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut shutdown = pin!(signal_tx.closed());
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection closed");
                }
                break;
            }
            () = &mut shutdown, if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

/// Counts a connection's requests from their head until their response body is done.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted until hyper is done with it.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with [`BodyTimeout`] once `deadline` passes before its end.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Armed the first time the body is not at hand, so a complete body costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where a connection is between requests, for its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's head: `header_read_timeout` from its first byte (or the start).
    Head,
    /// A request is being served: its body and response have their own deadlines.
    Busy,
    /// Waiting for the next request: `idle_timeout` from the last response.
    Idle,
}

/// A connection's socket that enforces the head, idle and response deadlines: a read that
/// would wait past the phase's deadline fails with `TimedOut`, which ends the connection.
struct Watched<S> {
    inner: S,
    in_flight: Arc<AtomicUsize>,
    limits: ServeLimits,
    phase: Phase,
    /// The deadline of `Head` and `Idle`.
    deadline: Pin<Box<Sleep>>,
    /// Armed when a write first finds the socket full, until the next request.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    fn new(inner: S, in_flight: Arc<AtomicUsize>, limits: ServeLimits) -> Self {
        Watched {
            inner,
            in_flight,
            limits,
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
            write_stall: None,
        }
    }

    fn enter(&mut self, phase: Phase, timeout: Duration) {
        self.phase = phase;
        self.deadline.as_mut().reset(Instant::now() + timeout);
    }

    /// A request being served makes the connection busy; its response done, idle.
    fn refresh(&mut self) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            self.phase = Phase::Busy;
        } else if self.phase == Phase::Busy {
            self.write_stall = None;
            self.enter(Phase::Idle, self.limits.idle_timeout);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.refresh();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.enter(Phase::Head, this.limits.header_read_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase != Phase::Busy && this.deadline.as_mut().poll(cx).is_ready() {
                    let what = if this.phase == Phase::Head {
                        "request head not received within the header read timeout"
                    } else {
                        "kept-alive connection idle past the idle timeout"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_write_stall(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_write_stall(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_write_stall(cx).map_ok(|_| ()),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> Watched<S> {
    /// The socket takes no more bytes: pending until the stall deadline, then `TimedOut`.
    fn poll_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let timeout = self.limits.body_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped taking the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn limits(ms: u64) -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_millis(ms),
            body_timeout: Duration::from_millis(ms),
            idle_timeout: Duration::from_millis(ms),
            max_connections: 1,
        }
    }

    #[tokio::test]
    async fn each_request_carries_the_peer_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, ServeLimits::default(), async move {
            let _ = stopped.await;
        }));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap().to_string();
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with(&local),
            "{response}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_response_the_client_does_not_take_fails_after_the_body_timeout() {
        // The peer never reads: a small pipe fills, then the write must fail, not wait.
        let (server_end, _client_end) = tokio::io::duplex(64);
        let mut watched = Watched::new(server_end, Arc::new(AtomicUsize::new(1)), limits(200));
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = watched.write_all(&[b'x'; 1024]).await {
                    break e;
                }
            }
        })
        .await
        .expect("the stalled write never failed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_later_request_trickling_its_head_times_out_at_the_header_timeout_not_the_idle_one() {
        // Idle after a response; the first byte of the next request starts the head
        // deadline, and further bytes do not push it back.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (server_end, mut client_end) = tokio::io::duplex(64);
        let mut watched = Watched::new(
            server_end,
            in_flight.clone(),
            ServeLimits {
                header_read_timeout: Duration::from_millis(300),
                idle_timeout: Duration::from_secs(30),
                ..limits(300)
            },
        );
        watched.phase = Phase::Busy;
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if client_end.write_all(b"G").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = watched.read(&mut buf).await {
                    return e;
                }
            }
        })
        .await
        .expect("the trickled head never timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(watched.phase, Phase::Head);
        // Well before the idle timeout (30 s) and the trickle's end (5 s).
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        trickle.abort();
    }
}
