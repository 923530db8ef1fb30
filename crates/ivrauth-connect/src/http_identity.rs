//! An identity provider behind one HTTP endpoint, speaking seed 000's contract:
//! `POST {"username", "password", "grant_type": "password"}` as JSON, answered with
//! `200 {"token", "expires_in"}` when the secret is right and `401` (or `403`) when not.
//!
//! [`HttpIdentity`] implements [`IdentityProvider`] (kind `http`):
//!
//! - **verify** refuses an empty secret before any request. A 200 whose JSON body has a
//!   non-empty string `token` is `Verified` (the token is dropped at once, never logged); a
//!   401 or 403 is `Rejected(WrongSecret)`. The contract cannot tell an unknown account from
//!   a wrong secret, so an unknown account is reported as `WrongSecret` too (the caller
//!   hears the same either way; only the audit loses the distinction). Anything else
//!   (another status, a 200 without a token, a timeout) is [`IdentityError::Unavailable`].
//! - **lookup** is [`IdentityError::Unsupported`]: the contract has no way to ask whether
//!   an account exists or what it is called, and a made-up profile would make every
//!   account number look valid to a flow. Flows using this provider verify directly.
//! - **change_secret** is [`IdentityError::Unsupported`].
//! - **health** GETs the optional health URL (any 2xx is healthy); without one it only
//!   checks the configuration.
//!
//! Transport as for every provider here: https, or plain http to a loopback host only;
//! no link-local or cloud metadata addresses; no redirects; a timeout on every request;
//! answers capped at 1 MiB; no secret, token, body or query string in errors or logs.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};

use ivrauth_core::http::secure_transport;
use ivrauth_core::identity::{
    AccountNumber, IdentityError, IdentityProvider, Profile, RejectReason, Verification,
};
use ivrauth_core::secret::Secret;

use crate::oauth2::transport;

/// Where the endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpIdentityConfig {
    /// The endpoint verify POSTs to: https, or http to a loopback host.
    pub url: String,
    /// GET here must answer 2xx for [`IdentityProvider::health`]; `None` skips the check.
    pub health_url: Option<String>,
    /// Timeout of each request, connection included.
    pub timeout: Duration,
}

/// Seed 000's HTTP identity endpoint as an identity provider. See the module documentation.
#[derive(Debug)]
pub struct HttpIdentity {
    config: HttpIdentityConfig,
    client: reqwest::Client,
}

impl HttpIdentity {
    /// Checks the URLs and builds the HTTP client; contacts nothing.
    pub fn new(config: HttpIdentityConfig) -> Result<HttpIdentity, IdentityError> {
        let invalid = |what: &str| {
            IdentityError::Unavailable(format!("invalid http identity configuration: {what}"))
        };
        if !secure_transport(&config.url) {
            return Err(invalid(
                "url must be an https URL (or http to a loopback host)",
            ));
        }
        if let Some(h) = &config.health_url {
            if url::Url::parse(h).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                return Err(invalid("health_url must be an http or https URL"));
            }
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout must not be zero"));
        }
        let client = transport::client(config.timeout)?;
        Ok(HttpIdentity { config, client })
    }

    pub fn config(&self) -> &HttpIdentityConfig {
        &self.config
    }
}

#[async_trait]
impl IdentityProvider for HttpIdentity {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn lookup(&self, _account: &AccountNumber) -> Result<Option<Profile>, IdentityError> {
        Err(IdentityError::Unsupported(
            "looking accounts up (the HTTP identity contract only verifies)",
        ))
    }

    async fn verify(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
    ) -> Result<Verification, IdentityError> {
        if secret.expose().is_empty() {
            return Ok(Verification::Rejected(RejectReason::EmptySecret));
        }
        let body = Secret::new(
            json!({
                "username": account.as_str(),
                "password": secret.expose(),
                "grant_type": "password",
            })
            .to_string(),
        );
        let shown = transport::shown_url(&self.config.url);
        let req = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.expose().clone());
        let (status, answer) = transport::send(req, &shown).await?;
        tracing::debug!(url = %shown, status = status.as_u16(), "http identity verify");
        match status {
            StatusCode::OK => {
                let has_token = serde_json::from_slice::<Value>(answer.expose())
                    .ok()
                    .and_then(|v| {
                        v.get("token")
                            .and_then(Value::as_str)
                            .map(|t| !t.is_empty())
                    })
                    .unwrap_or(false);
                if has_token {
                    Ok(Verification::Verified)
                } else {
                    Err(IdentityError::Unavailable(format!(
                        "{shown} answered 200 without a token"
                    )))
                }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Ok(Verification::Rejected(RejectReason::WrongSecret))
            }
            // Some implementations of the contract answer 404 for an unknown user.
            StatusCode::NOT_FOUND => Ok(Verification::Rejected(RejectReason::UnknownAccount)),
            other => Err(IdentityError::Unavailable(format!(
                "{shown} answered {other}"
            ))),
        }
    }

    async fn change_secret(
        &self,
        _account: &AccountNumber,
        _new_secret: &Secret<String>,
    ) -> Result<(), IdentityError> {
        Err(IdentityError::Unsupported(
            "changing secrets (the HTTP identity contract only verifies)",
        ))
    }

    async fn health(&self) -> Result<(), IdentityError> {
        let Some(url) = &self.config.health_url else {
            return Ok(());
        };
        let shown = transport::shown_url(url);
        let (status, _) = transport::send(self.client.get(url), &shown).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(IdentityError::Unavailable(format!(
                "{shown} answered {status}"
            )))
        }
    }
}
