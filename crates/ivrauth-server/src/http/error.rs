//! `ApiError`: every way a request can fail, and the one place that turns a failure into an
//! HTTP response.
//!
//! Bodies are [`ErrorBody`] (`{code, message, errors}`) with stable snake_case codes, except
//! the token endpoint's, which are RFC 6749 §5.2 [`OAuthError`] bodies. A body never holds
//! internal detail (that goes to the log) nor a value the client sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use ivrauth_core::ports::StoreError;
use ivrauth_proto::api::{Diagnostic, ErrorBody, OAuthError};

/// `WWW-Authenticate` challenge of bearer-protected routes.
const BEARER_REALM: &str = "Bearer realm=\"ivrauth\"";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a stable code, a message fit for the client and optional diagnostics.
    #[error("{code}: {message}")]
    BadRequest {
        code: String,
        message: String,
        errors: Vec<Diagnostic>,
    },
    /// 401 on a bearer-protected route; `token_presented` adds `error="invalid_token"`.
    #[error("unauthorized")]
    Unauthorized { token_presented: bool },
    /// 403: the token is valid but lacks `scope`.
    #[error("missing scope {scope}")]
    Forbidden { scope: String },
    /// 404; the message says what was not found (never echoing request values).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409; the message says what conflicts.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413: the body is larger than `limit` bytes.
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    /// 415: the body is not of the `expected` media type.
    #[error("unsupported media type")]
    UnsupportedMediaType { expected: &'static str },
    /// 429 with `Retry-After`.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// 503; the message is for the client (say what is unavailable, not why internally).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500; the text goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
    /// A telephony webhook's failure, answered in the platform's own terms: the status the
    /// platform expects and what it can play (an apology in TwiML, jambonz verbs or
    /// VoiceXML), or no body (Twilio's and jambonz's 400 and 403); `challenge` is a
    /// `WWW-Authenticate` value (VoiceXML's Basic).
    #[error("call webhook answered {status}")]
    Platform {
        status: StatusCode,
        body: PlatformBody,
        challenge: Option<&'static str>,
    },
    /// RFC 6749 §5.2 error of the token endpoint (`invalid_client`, `invalid_scope`...).
    #[error("oauth error {error}")]
    OAuth {
        status: StatusCode,
        error: &'static str,
        description: Option<String>,
        /// Add `WWW-Authenticate: Basic realm="ivrauth"` (the client used HTTP Basic).
        basic_challenge: bool,
    },
}

/// The body of an [`ApiError::Platform`].
#[derive(Debug)]
pub enum PlatformBody {
    Empty,
    /// `text/xml` (TwiML, VoiceXML).
    Xml(String),
    /// jambonz verbs.
    Json(serde_json::Value),
}

impl ApiError {
    /// A platform's bare status, no body.
    pub fn platform_status(status: StatusCode) -> Self {
        ApiError::Platform {
            status,
            body: PlatformBody::Empty,
            challenge: None,
        }
    }

    /// A platform's status with a body it can play.
    pub fn platform(status: StatusCode, body: PlatformBody) -> Self {
        ApiError::Platform {
            status,
            body,
            challenge: None,
        }
    }

    /// A 400 with no diagnostics.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: code.to_owned(),
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Platform { status, .. } | ApiError::OAuth { status, .. } => *status,
        }
    }
}

impl From<crate::app::simulate::SimulateError> for ApiError {
    fn from(e: crate::app::simulate::SimulateError) -> Self {
        use crate::app::simulate::SimulateError;
        match e {
            SimulateError::InvalidInput(problems) => ApiError::BadRequest {
                code: "invalid_input".to_owned(),
                message: format!(
                    "the input does not match the flow's inputSchema ({} problem(s))",
                    problems.len()
                ),
                errors: problems,
            },
            SimulateError::Store(e) => e.into(),
        }
    }
}

impl From<crate::app::flow_cache::StaleFlow> for ApiError {
    fn from(e: crate::app::flow_cache::StaleFlow) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".to_owned()),
            StoreError::Conflict => ApiError::Conflict("already exists".to_owned()),
            StoreError::Backend(detail) => ApiError::Internal(format!("store: {detail}")),
        }
    }
}

fn body(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code: code.to_owned(),
        message: message.into(),
        errors: Vec::new(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::BadRequest {
                code,
                message,
                errors,
            } => (
                status,
                Json(ErrorBody {
                    code,
                    message,
                    errors,
                }),
            )
                .into_response(),
            ApiError::Unauthorized { token_presented } => {
                let (challenge, message) = if token_presented {
                    (
                        format!("{BEARER_REALM}, error=\"invalid_token\""),
                        "the access token is invalid, expired or revoked",
                    )
                } else {
                    (
                        BEARER_REALM.to_owned(),
                        "an access token is required (Authorization: Bearer ...)",
                    )
                };
                let mut res = (status, Json(body("unauthorized", message))).into_response();
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                res
            }
            ApiError::Forbidden { scope } => {
                let mut res = (
                    status,
                    Json(body(
                        "insufficient_scope",
                        format!("the access token lacks the scope {scope}"),
                    )),
                )
                    .into_response();
                let challenge =
                    format!("{BEARER_REALM}, error=\"insufficient_scope\", scope=\"{scope}\"");
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                res
            }
            ApiError::NotFound(message) => {
                (status, Json(body("not_found", message))).into_response()
            }
            ApiError::MethodNotAllowed => (
                status,
                Json(body(
                    "method_not_allowed",
                    "method not allowed on this route",
                )),
            )
                .into_response(),
            ApiError::Conflict(message) => {
                (status, Json(body("conflict", message))).into_response()
            }
            ApiError::PayloadTooLarge { limit } => (
                status,
                Json(body(
                    "payload_too_large",
                    format!("the request body exceeds the limit of {limit} bytes"),
                )),
            )
                .into_response(),
            ApiError::UnsupportedMediaType { expected } => (
                status,
                Json(body(
                    "unsupported_media_type",
                    format!("the request body must be {expected}"),
                )),
            )
                .into_response(),
            ApiError::RateLimited { retry_after_secs } => {
                let secs = retry_after_secs.max(1);
                let mut res = (
                    status,
                    Json(body(
                        "rate_limited",
                        format!("too many requests; retry after {secs} s"),
                    )),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                res
            }
            ApiError::Unavailable(message) => {
                (status, Json(body("unavailable", message))).into_response()
            }
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                (status, Json(body("internal", "internal error"))).into_response()
            }
            ApiError::Platform {
                body, challenge, ..
            } => {
                let mut res = match body {
                    PlatformBody::Empty => status.into_response(),
                    PlatformBody::Xml(xml) => (
                        status,
                        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                        xml,
                    )
                        .into_response(),
                    PlatformBody::Json(value) => (status, Json(value)).into_response(),
                };
                if let Some(challenge) = challenge {
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                }
                res
            }
            ApiError::OAuth {
                error,
                description,
                basic_challenge,
                ..
            } => {
                let mut res = (
                    status,
                    Json(OAuthError {
                        error: error.to_owned(),
                        error_description: description,
                    }),
                )
                    .into_response();
                let h = res.headers_mut();
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                if basic_challenge {
                    h.insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"ivrauth\""),
                    );
                }
                res
            }
        }
    }
}
