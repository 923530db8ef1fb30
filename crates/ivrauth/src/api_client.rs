//! The CLI's client of a running server's API, used by every command that talks to one
//! (`flow deploy`, `flow simulate`, `call --server`): the transport check, the token fetch,
//! requests with the bearer token, and refusals rendered in words.
//!
//! Credentials (and a caller's keys) go only over https or plain http to a loopback address,
//! unless `--insecure` accepts plain http. The client secret and the access token are held
//! as [`Secret`]s, and no message carries them or a URL's user information. Redirects are
//! never followed, so nothing is re-sent elsewhere.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use ivrauth_core::http::{redacted_url, secure_transport};
use ivrauth_core::secret::Secret;
use ivrauth_proto::api::{Diagnostic, ErrorBody, TokenResponse};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// clap's parser for a client secret: straight into a [`Secret`], so no `Debug` shows it.
pub fn parse_secret(s: &str) -> Result<Secret<String>, std::convert::Infallible> {
    Ok(Secret::new(s.to_owned()))
}

/// Where to connect and as whom.
pub struct Credentials<'a> {
    /// The server's base URL.
    pub server: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a Secret<String>,
    /// Accept plain http to an address that is not loopback.
    pub insecure: bool,
    /// What crosses the network besides the token, for the messages: "the client
    /// credentials", "the client credentials and the caller's keys".
    pub sends: &'static str,
}

/// Refuse to send `sends` to `server` unless it is https or plain http to a loopback
/// address, or `insecure` accepts plain http (with a warning on stderr).
pub fn check_transport(server: &str, insecure: bool, sends: &str) -> anyhow::Result<()> {
    let shown = redacted_url(server);
    let scheme = url::Url::parse(server).map(|u| u.scheme().to_owned());
    match scheme.as_deref() {
        Ok("https") => Ok(()),
        Ok("http") if secure_transport(server) => Ok(()),
        Ok("http") if insecure => {
            eprintln!("warning: --insecure: sending {sends} to {shown} over plain http");
            Ok(())
        }
        Ok("http") => bail!(
            "refusing to send {sends} to {shown} over plain http: the client secret (HTTP \
             Basic) and the access token would cross the network unencrypted, readable by \
             anyone on the way. Use an https:// --server URL (plain http is allowed to \
             loopback addresses only), or pass --insecure if you trust the network."
        ),
        _ => bail!("--server must be an http(s) URL such as https://ivrauth.example.com"),
    }
}

/// A server's API with a bearer token.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Secret<String>,
}

/// An answer of the API: its status and JSON body (`null` when it had none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T`, or an error saying the server did not answer as expected.
    pub fn parse<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        serde_json::from_value(self.body).context("unexpected answer from the server")
    }

    /// The refusal this answer is, when it is not a success.
    pub fn refusal(&self) -> Refusal {
        Refusal {
            status: self.status,
            error: serde_json::from_value(self.body.clone()).ok(),
        }
    }
}

/// A non-2xx answer: its status and, when the body is the API's error body, that.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub error: Option<ErrorBody>,
}

impl Refusal {
    /// One line: `the server answered 404 (hint): not_found: no such flow`.
    pub fn describe(&self, hint: &str) -> String {
        let detail = self.error.as_ref().map_or_else(
            || "no details".to_owned(),
            |e| format!("{}: {}", e.code, e.message),
        );
        format!("the server answered {}{hint}: {detail}", self.status)
    }

    /// The line, then each problem the body lists (a refused flow document's diagnostics).
    pub fn write(&self, out: &mut impl std::io::Write, hint: &str) -> std::io::Result<()> {
        writeln!(out, "error: {}", self.describe(hint))?;
        for d in self.error.iter().flat_map(|e| &e.errors) {
            write_diagnostic(out, "  error", d)?;
        }
        Ok(())
    }
}

/// One diagnostic as `kind[code] /path (node id): message`.
pub fn write_diagnostic(
    out: &mut impl std::io::Write,
    kind: &str,
    d: &Diagnostic,
) -> std::io::Result<()> {
    let node = d
        .node_id
        .as_deref()
        .map(|n| format!(" (node {n})"))
        .unwrap_or_default();
    let path = if d.path.is_empty() {
        "/"
    } else {
        d.path.as_str()
    };
    writeln!(out, "{kind}[{}] {path}{node}: {}", d.code, d.message)
}

impl ApiClient {
    /// Check the transport, then fetch an access token with the client credentials (all of
    /// the client's scopes).
    pub async fn connect(c: &Credentials<'_>) -> anyhow::Result<ApiClient> {
        check_transport(c.server, c.insecure, c.sends)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let base = c.server.trim_end_matches('/').to_owned();
        let shown = redacted_url(&base);
        let res = http
            .post(format!("{base}/auth/v3/oauth/token"))
            .basic_auth(c.client_id, Some(c.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| unreachable(&shown, &e))?;
        let status = res.status();
        if !status.is_success() {
            bail!(
                "the server at {shown} refused the client credentials ({status}): check \
                 IVRAUTH_CLIENT_ID and IVRAUTH_CLIENT_SECRET"
            );
        }
        let token: TokenResponse = res
            .json()
            .await
            .with_context(|| format!("{shown} did not answer like an ivrauth server"))?;
        Ok(ApiClient {
            http,
            base,
            token: Secret::new(token.access_token),
        })
    }

    /// Send `body` as JSON to `path` with the bearer token.
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Answer> {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| unreachable(&redacted_url(&self.base), &e))?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    pub async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Answer> {
        self.send(reqwest::Method::POST, path, body).await
    }
}

/// A path segment, percent-encoded (all but `A-Z a-z 0-9 * - . _`).
pub fn path_segment(s: &str) -> String {
    // The form encoder writes a space as `+`, which a path takes literally.
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `cannot reach the server at URL: Connection refused` (the innermost cause, without the
/// URL reqwest repeats).
fn unreachable(shown: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    anyhow::anyhow!("cannot reach the server at {shown}: {source}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SENDS: &str = "the client credentials";

    #[test]
    fn credentials_go_over_https_or_loopback_unless_insecure() {
        for ok in [
            "https://ivrauth.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(check_transport(ok, false, SENDS).is_ok(), "{ok}");
        }
        let err = check_transport("http://ivrauth.example.com", false, SENDS)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--insecure") && err.contains("plain http") && err.contains(SENDS),
            "{err}"
        );
        assert!(check_transport("http://10.0.0.5:8080", false, SENDS).is_err());
        assert!(check_transport("http://ivrauth.example.com", true, SENDS).is_ok());
        // --insecure is about plain http only.
        assert!(check_transport("ftp://ivrauth.example.com", true, SENDS).is_err());
        assert!(check_transport("not a url", true, SENDS).is_err());
    }

    #[test]
    fn path_segments_stay_one_segment() {
        assert_eq!(path_segment("cli-1f2e"), "cli-1f2e");
        assert_eq!(path_segment("a b/c+d?"), "a%20b%2Fc%2Bd%3F");
    }

    #[test]
    fn a_url_with_user_information_is_never_repeated_with_it() {
        let err = check_transport("http://user:hunter2@ivr.example.com", false, SENDS)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn refusals_name_status_code_and_every_problem() {
        let answer = Answer {
            status: 400,
            body: serde_json::json!({
                "code": "invalid_flow",
                "message": "the flow document is invalid",
                "errors": [{"path": "/nodes/a", "nodeId": "a", "code": "unknown_node_type", "message": "unknown node type `htpp`"}]
            }),
        };
        let mut out = Vec::new();
        answer.refusal().write(&mut out, "").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "error: the server answered 400: invalid_flow: the flow document is invalid\n  \
             error[unknown_node_type] /nodes/a (node a): unknown node type `htpp`\n"
        );
        let bare = Answer {
            status: 502,
            body: Value::Null,
        };
        assert_eq!(
            bare.refusal().describe(" (hint)"),
            "the server answered 502 (hint): no details"
        );
    }
}
