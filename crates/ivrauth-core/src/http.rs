//! The HTTP request the engine asks the host to perform, and the result the host feeds back.
//!
//! Types only: performing requests (timeouts, retries, redirects, allow-lists) is
//! `ivrauth-connect`'s job.

use crate::secret::Secret;

/// A request an `http` node wants sent. Header values and the body may hold secrets, so they
/// are [`Secret`]s; `carries_secret` says whether any of them actually does. Its `Debug`
/// shows the URL without query string or credentials.
#[derive(Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Secret<String>)>,
    pub body: Option<Secret<Vec<u8>>>,
    pub timeout_ms: u64,
    pub carries_secret: bool,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &redacted_url(&self.url))
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("timeout_ms", &self.timeout_ms)
            .field("carries_secret", &self.carries_secret)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]/path` of a URL: no userinfo, query or fragment. Safe to log.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            match u.port() {
                Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        Err(_) => "(invalid url)".to_owned(),
    }
}

/// Default per-request timeout when a node gives none.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq)]
pub enum HttpResult {
    Response(HttpResponse),
    Failed(HttpFailure),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpFailure {
    pub kind: HttpFailureKind,
    /// A message safe to show (never contains the request body or header values).
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFailureKind {
    Timeout,
    Connect,
    /// The host is not on the configured allow-list, or it is (or resolves to) an address
    /// of a refused class (link-local, cloud metadata, ...) that no entry names.
    DisallowedHost,
    /// A secret would have gone to a URL that is neither https nor loopback.
    InsecureTransport,
    InvalidRequest,
    ResponseTooLarge,
    Other,
}

impl HttpFailureKind {
    pub fn code(self) -> &'static str {
        match self {
            HttpFailureKind::Timeout => "timeout",
            HttpFailureKind::Connect => "connect",
            HttpFailureKind::DisallowedHost => "disallowed_host",
            HttpFailureKind::InsecureTransport => "insecure_transport",
            HttpFailureKind::InvalidRequest => "invalid_request",
            HttpFailureKind::ResponseTooLarge => "response_too_large",
            HttpFailureKind::Other => "other",
        }
    }
}

/// Whether a URL's host is a loopback address (`localhost`, 127.0.0.0/8, `[::1]`), the only
/// place plain `http` may carry a secret (local testing).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// True when a request to `url` may carry a secret: `https`, or `http` to a loopback host.
pub fn secure_transport(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => match u.scheme() {
            "https" => true,
            "http" => u.host_str().is_some_and(is_loopback_host),
            _ => false,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_rules() {
        assert!(secure_transport("https://idp.example.com/token"));
        assert!(secure_transport("http://127.0.0.1:3999/api/auth"));
        assert!(secure_transport("http://localhost:3999/api/auth"));
        assert!(secure_transport("http://[::1]:80/x"));
        assert!(!secure_transport("http://idp.example.com/token"));
        assert!(!secure_transport("http://127.example.com/token"));
        assert!(!secure_transport("ftp://127.0.0.1/x"));
    }
}
