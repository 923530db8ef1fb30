//! The host-side executor for flow `http` nodes.
//!
//! Product rules enforced here: redirects are never followed; every attempt has a timeout;
//! secrets travel only over https (or plain http to loopback); only http/https URLs; hosts
//! must be on the allow-list when there is one, and no request reaches a link-local, cloud
//! metadata or other refused address unless an entry names it, checked on the addresses a
//! name resolves to when connecting (see the `outbound` module; no proxy is used, so that
//! the check sees the real destination); only 429 and 503 are retried, honouring
//! `Retry-After`; responses are size-capped. Failure messages and logs never contain header
//! values or bodies, and URLs in them are shown without userinfo or query string.

use std::sync::Arc;
use std::time::Duration;

use ivrauth_core::http::{
    secure_transport, HttpFailure, HttpFailureKind, HttpRequest, HttpResponse, HttpResult,
    DEFAULT_TIMEOUT_MS,
};
use ivrauth_core::time::{Clock, UnixMillis};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use crate::clock::system_time_to_millis;
use crate::outbound::{
    refusal_of, GuardedResolver, HostLookup, HostPattern, OutboundPolicy, SystemLookup,
};
use crate::sleep::Sleeper;

/// Longest timeout honoured for one attempt; larger `timeout_ms` values are clamped to it.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How the executor behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where requests may go: exact host names and `*.example.com` (any subdomain of
    /// `example.com`, not `example.com` itself), matched against the URL's host; IP
    /// addresses and CIDR ranges (`10.0.0.0/8`), matched against the addresses the host is
    /// or resolves to. `None` allows every host; `Some(vec![])` allows none. Either way,
    /// link-local, cloud metadata, unspecified, multicast and broadcast addresses are
    /// refused unless an IP or CIDR entry inside that range names them.
    pub allowed_hosts: Option<Vec<String>>,
    /// Attempts in total for a request answered with 429 or 503 (0 is treated as 1).
    pub max_attempts: u32,
    /// Back-off base when there is no `Retry-After`: retry `n` (from 0) waits a random
    /// duration in `[0, min(max_backoff, base_backoff * 2^n)]`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the 429/503 is the result.
    pub max_retry_after: Duration,
    /// Largest response body accepted; a larger one fails with `ResponseTooLarge`.
    pub max_response_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allowed_hosts: None,
            max_attempts: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// Errors building an [`HttpExecutor`]. Executing a request never errors: failures are
/// [`HttpResult::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error(
        "allow-list entry {0:?} is not a host name, an IP address, a CIDR range or a *.domain \
         pattern (no scheme, port or path)"
    )]
    InvalidAllowedHost(String),
    #[error("allow-list entry {entry:?} has bits set after its prefix length; write {network}")]
    AllowedRangeHostBits { entry: String, network: String },
}

impl HttpConfig {
    /// Checks one [`HttpConfig::allowed_hosts`] entry as [`HttpExecutor::new`] will.
    pub fn check_allowed_host(entry: &str) -> Result<(), ConnectError> {
        HostPattern::parse(entry).map(|_| ())
    }
}

/// Performs the HTTP requests of flow `http` nodes. Cheap to clone.
#[derive(Clone)]
pub struct HttpExecutor {
    config: HttpConfig,
    policy: Arc<OutboundPolicy>,
    client: reqwest::Client,
    sleeper: Arc<dyn Sleeper>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpExecutor {
    /// An executor resolving names with the system resolver.
    pub fn new(
        config: HttpConfig,
        sleeper: Arc<dyn Sleeper>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConnectError> {
        Self::with_lookup(config, sleeper, clock, Arc::new(SystemLookup))
    }

    /// An executor resolving names with `lookup`; every address it returns is checked
    /// against the allow-list and the refused classes before a connection is made.
    pub fn with_lookup(
        config: HttpConfig,
        sleeper: Arc<dyn Sleeper>,
        clock: Arc<dyn Clock>,
        lookup: Arc<dyn HostLookup>,
    ) -> Result<Self, ConnectError> {
        let policy = Arc::new(OutboundPolicy::new(config.allowed_hosts.as_deref())?);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ivrauth/", env!("CARGO_PKG_VERSION")))
            // Through a proxy the destination would be resolved, and checked, by nobody.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone(), lookup)))
            .build()
            .map_err(ConnectError::Client)?;
        Ok(HttpExecutor {
            config,
            policy,
            client,
            sleeper,
            clock,
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Sends `req` under the rules above. Never panics and never errors: every failure is an
    /// [`HttpResult::Failed`]. Any 3xx, and the last 429/503, is an ordinary response.
    pub async fn execute(&self, req: &HttpRequest) -> HttpResult {
        let prepared = match self.prepare(req) {
            Ok(p) => p,
            Err(f) => return HttpResult::Failed(f),
        };
        let timeout = match req.timeout_ms {
            0 => Duration::from_millis(DEFAULT_TIMEOUT_MS),
            ms => Duration::from_millis(ms),
        }
        .min(MAX_TIMEOUT);
        let attempts = self.config.max_attempts.max(1);
        let mut attempt: u32 = 1;
        loop {
            let deadline = Instant::now() + timeout;
            let resp = match self.send_once(&prepared, req, deadline).await {
                Ok(r) => r,
                Err(f) => {
                    tracing::debug!(
                        method = %prepared.method,
                        url = %prepared.shown,
                        failure = f.kind.code(),
                        "http attempt failed"
                    );
                    return HttpResult::Failed(f);
                }
            };
            let status = resp.status();
            tracing::debug!(
                method = %prepared.method,
                url = %prepared.shown,
                status = status.as_u16(),
                "http attempt"
            );
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE;
            if retryable && attempt < attempts {
                if let Some(delay) = self.retry_delay(resp.headers(), attempt - 1) {
                    drop(resp);
                    self.sleeper.sleep(delay).await;
                    attempt += 1;
                    continue;
                }
            }
            return match self.read_response(resp, deadline, &prepared.shown).await {
                Ok(r) => HttpResult::Response(r),
                Err(f) => HttpResult::Failed(f),
            };
        }
    }

    /// Validates the request and builds what every attempt shares. Sends nothing.
    fn prepare(&self, req: &HttpRequest) -> Result<Prepared, HttpFailure> {
        let url = Url::parse(&req.url)
            .map_err(|_| failure(HttpFailureKind::InvalidRequest, "the URL is not valid"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(failure(
                HttpFailureKind::InvalidRequest,
                "only http and https URLs are allowed",
            ));
        }
        let shown = shown_url(&url);
        let Some(host) = url.host() else {
            return Err(failure(
                HttpFailureKind::InvalidRequest,
                "the URL has no host",
            ));
        };
        if req.carries_secret && !secure_transport(&req.url) {
            return Err(failure(
                HttpFailureKind::InsecureTransport,
                format!("refusing to send a secret over plain http to {shown}"),
            ));
        }
        // IP literals are checked here (no resolver sees them), names when connecting.
        if let Err(refusal) = self.policy.check_url_host(&host) {
            return Err(failure(
                HttpFailureKind::DisallowedHost,
                refusal.to_string(),
            ));
        }
        let method = Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| failure(HttpFailureKind::InvalidRequest, "invalid HTTP method"))?;
        let mut headers = HeaderMap::with_capacity(req.headers.len());
        for (name, value) in &req.headers {
            let hname = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                failure(
                    HttpFailureKind::InvalidRequest,
                    "invalid request header name",
                )
            })?;
            let mut hvalue = HeaderValue::from_bytes(value.expose().as_bytes()).map_err(|_| {
                failure(
                    HttpFailureKind::InvalidRequest,
                    format!("invalid value for request header {hname}"),
                )
            })?;
            hvalue.set_sensitive(true);
            headers.append(hname, hvalue);
        }
        Ok(Prepared {
            url,
            shown,
            method,
            headers,
        })
    }

    async fn send_once(
        &self,
        p: &Prepared,
        req: &HttpRequest,
        deadline: Instant,
    ) -> Result<reqwest::Response, HttpFailure> {
        let mut builder = self
            .client
            .request(p.method.clone(), p.url.clone())
            .headers(p.headers.clone());
        if let Some(body) = &req.body {
            builder = builder.body(body.expose().clone());
        }
        match tokio::time::timeout_at(deadline, builder.send()).await {
            Err(_) => Err(timed_out(&p.shown)),
            Ok(Err(e)) => Err(classify(&e, &p.shown)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    async fn read_response(
        &self,
        mut resp: reqwest::Response,
        deadline: Instant,
        shown: &str,
    ) -> Result<HttpResponse, HttpFailure> {
        let cap = self.config.max_response_bytes;
        let too_large = || {
            failure(
                HttpFailureKind::ResponseTooLarge,
                format!("the response from {shown} is larger than {cap} bytes"),
            )
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let declared = resp.content_length();
        if declared.is_some_and(|len| len > cap as u64) {
            return Err(too_large());
        }
        let initial = declared
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(0)
            .min(cap);
        let mut body = Vec::with_capacity(initial);
        loop {
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => return Err(timed_out(shown)),
                Ok(Err(e)) => return Err(classify(&e, shown)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    if chunk.len() > cap.saturating_sub(body.len()) {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// How long to wait before retry number `retry` (from 0), or `None` when the server
    /// asked for a longer wait than `max_retry_after`.
    fn retry_delay(&self, headers: &HeaderMap, retry: u32) -> Option<Duration> {
        let asked = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        match asked {
            Some(d) if d > self.config.max_retry_after => None,
            Some(d) => Some(d),
            None => Some(backoff(
                self.config.base_backoff,
                self.config.max_backoff,
                retry,
            )),
        }
    }
}

struct Prepared {
    url: Url,
    /// The URL as it may appear in messages and logs.
    shown: String,
    method: Method,
    headers: HeaderMap,
}

fn failure(kind: HttpFailureKind, message: impl Into<String>) -> HttpFailure {
    HttpFailure {
        kind,
        message: message.into(),
    }
}

fn timed_out(shown: &str) -> HttpFailure {
    failure(
        HttpFailureKind::Timeout,
        format!("the request to {shown} timed out"),
    )
}

/// Maps a reqwest error to a failure. The message is built here from the shown URL and, at
/// most, an I/O error kind; reqwest's own text (which contains the full URL) is never used.
fn classify(e: &reqwest::Error, shown: &str) -> HttpFailure {
    let io_kind = io_error_kind(e)
        .map(|k| format!(": {k}"))
        .unwrap_or_default();
    if let Some(refusal) = refusal_of(e) {
        failure(HttpFailureKind::DisallowedHost, refusal.to_string())
    } else if e.is_timeout() {
        timed_out(shown)
    } else if e.is_connect() {
        failure(
            HttpFailureKind::Connect,
            format!("could not connect to {shown}{io_kind}"),
        )
    } else if e.is_builder() {
        failure(
            HttpFailureKind::InvalidRequest,
            format!("could not build the request to {shown}"),
        )
    } else {
        failure(
            HttpFailureKind::Other,
            format!("the request to {shown} failed{io_kind}"),
        )
    }
}

fn io_error_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// `scheme://host[:port]/path`: no userinfo, query or fragment.
fn shown_url(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(port) => format!("{}://{}:{}{}", u.scheme(), host, port, u.path()),
        None => format!("{}://{}{}", u.scheme(), host, u.path()),
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (relative to `now`; a past date is zero).
/// `None` when it is neither.
fn parse_retry_after(value: &str, now: UnixMillis) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse::<u64>().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let delta = system_time_to_millis(at).saturating_sub(now.0);
    Some(Duration::from_millis(u64::try_from(delta).unwrap_or(0)))
}

/// Full-jitter exponential back-off: random in `[0, min(max, base * 2^retry)]`.
fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    let cap = base.saturating_mul(factor).min(max);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::thread_rng().gen_range(0..=cap_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = UnixMillis(1_700_000_000_500);
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        let date =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_010));
        assert_eq!(
            parse_retry_after(&date, now),
            Some(Duration::from_millis(9_500))
        );
        let past = httpdate::fmt_http_date(std::time::UNIX_EPOCH);
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_is_capped() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        for retry in [0, 1, 2, 5, 31, 32, 1000] {
            let cap = base
                .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
                .min(max);
            for _ in 0..50 {
                assert!(backoff(base, max, retry) <= cap);
            }
        }
        assert_eq!(backoff(Duration::ZERO, max, 3), Duration::ZERO);
    }

    #[test]
    fn shown_url_strips_userinfo_and_query() {
        let u = Url::parse("https://user:pw@h.example:8443/a/b?token=s3cret#frag").ok();
        assert_eq!(
            u.map(|u| shown_url(&u)).as_deref(),
            Some("https://h.example:8443/a/b")
        );
    }
}
