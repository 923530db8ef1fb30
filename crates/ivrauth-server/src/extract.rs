//! Request extractors whose every rejection is an [`ApiError`]: [`ApiJson`] for JSON bodies,
//! and the Content-Length guard that turns oversized bodies into 413 before they are read.
//!
//! Deserialization errors name the JSON path and what was expected, never the value sent
//! (it may be a password).

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use ivrauth_proto::api::Diagnostic;

use crate::error::ApiError;
use crate::AppState;

/// A JSON request body deserialized into `T`, with API errors for every failure:
/// missing or wrong `Content-Type` → 415, too large → 413, malformed → 400 `malformed_json`
/// (with line and column), wrong shape → 400 `invalid_body` (with the JSON path).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            });
        }
        let limit = AppState::from_ref(state).config.max_body_bytes;
        let bytes = read_body(req, state, limit).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Buffer a body (honouring [`axum::extract::DefaultBodyLimit`]); 413 when over `limit`.
pub(crate) async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
    limit: usize,
) -> Result<Bytes, ApiError> {
    match Bytes::from_request(req, state).await {
        Ok(b) => Ok(b),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::bad_request(
            "unreadable_body",
            "the request body could not be read",
        )),
    }
}

/// The media type of a request, lower-cased and without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Some(essence)
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    match media_type(headers) {
        Some(m) => {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        }
        None => false,
    }
}

/// Deserialize a JSON body into `T`, mapping errors to `malformed_json` / `invalid_body`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(err) => {
            let path = err.path().clone();
            let inner = err.into_inner();
            if inner.is_data() {
                let problem = sanitize_data_error(&inner);
                // The last segment of an unknown field's path is the unknown key itself:
                // client input, so it is left out.
                let drop_last = problem.starts_with("unknown field");
                let pointer = json_pointer(&path, drop_last);
                let shown = if pointer.is_empty() {
                    "the body".to_owned()
                } else {
                    format!("`{pointer}`")
                };
                return Err(ApiError::BadRequest {
                    code: "invalid_body".to_owned(),
                    message: format!("invalid request body at {shown}: {problem}"),
                    errors: vec![Diagnostic {
                        path: pointer,
                        node_id: None,
                        code: "invalid_body".to_owned(),
                        message: problem,
                    }],
                });
            }
            return Err(malformed(&inner));
        }
    };
    // Trailing characters after the document are a syntax error too.
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "malformed_json",
        format!(
            "the body is not valid JSON: {} at line {} column {}",
            syntax_problem(e),
            e.line(),
            e.column()
        ),
    )
}

/// serde_json's syntax message without its " at line L column C" suffix. Syntax messages
/// are fixed texts ("expected `,` or `}`", "trailing comma"...), never document content.
fn syntax_problem(e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected end of input".to_owned();
    }
    strip_position(&e.to_string())
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// What was wrong with a well-formed value, keeping only the kind of problem and what was
/// expected. serde's texts quote the value sent (`invalid type: string "hunter2", expected
/// u32`) or the unknown key; both are dropped.
fn sanitize_data_error(e: &serde_json::Error) -> String {
    let msg = strip_position(&e.to_string());
    // `missing field `x`` names a field of our own type, not client input.
    if msg.starts_with("missing field `") {
        return msg;
    }
    const KINDS: &[&str] = &[
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown field",
        "unknown variant",
    ];
    let Some(kind) = KINDS.iter().find(|k| msg.starts_with(**k)) else {
        // A custom message from a Deserialize impl: it may quote the input, so say nothing more.
        return "invalid value".to_owned();
    };
    if msg.ends_with(", there are no fields") || msg.ends_with(", there are no variants") {
        return (*kind).to_owned();
    }
    // The expectation comes last; anything the client sent comes before it.
    match msg.rfind(", expected ") {
        Some(i) => format!("{kind}, {}", &msg[i + 2..]),
        None => (*kind).to_owned(),
    }
}

/// A serde_path_to_error path as a JSON pointer (`/items/0/pin`; empty for the root).
fn json_pointer(path: &serde_path_to_error::Path, drop_last: bool) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let keep = if drop_last {
        path.iter().len().saturating_sub(1)
    } else {
        path.iter().len()
    };
    for seg in path.iter().take(keep) {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => {
                out.push_str(&variant.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// Middleware: a declared `Content-Length` over the limit gets 413 before the body is read.
/// (Bodies without a length are cut off by `DefaultBodyLimit` when they are buffered.)
pub async fn reject_oversized(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        pin: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    fn message(e: ApiError) -> (String, String) {
        match e {
            ApiError::BadRequest { code, message, .. } => (code, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_type_names_path_not_value() {
        let err = parse_json::<Outer>(br#"{"name":"a","items":[{"pin":"hunter2"}]}"#).unwrap_err();
        let (code, msg) = message(err);
        assert_eq!(code, "invalid_body");
        assert!(msg.contains("/items/0/pin"), "{msg}");
        assert!(msg.contains("expected u32"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn unknown_field_is_not_echoed() {
        let err =
            parse_json::<Outer>(br#"{"name":"a","items":[],"hunter2, expected x":1}"#).unwrap_err();
        let (code, msg) = message(err);
        assert_eq!(code, "invalid_body");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
        let err =
            parse_json::<Outer>(br#"{"name":"a","items":[{"pin":1,"hunter2":2}]}"#).unwrap_err();
        let (_, msg) = message(err);
        assert!(
            !msg.contains("hunter2") && msg.contains("/items/0"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_value_is_not_echoed() {
        let err = parse_json::<Inner>(br#"{"pin":-12345}"#).unwrap_err();
        let (_, msg) = message(err);
        assert!(!msg.contains("12345"), "{msg}");
    }

    #[test]
    fn missing_field_is_named() {
        let (_, msg) = message(parse_json::<Outer>(br#"{"items":[]}"#).unwrap_err());
        assert!(msg.contains("missing field `name`"), "{msg}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let (code, msg) =
            message(parse_json::<Outer>(b"{\n  \"name\": \"secret-value\",,\n}").unwrap_err());
        assert_eq!(code, "malformed_json");
        assert!(msg.contains("line 2 column"), "{msg}");
        assert!(!msg.contains("secret-value"), "{msg}");
        let (code, _) = message(parse_json::<serde_json::Value>(b"{} x").unwrap_err());
        assert_eq!(code, "malformed_json");
        let (code, _) = message(parse_json::<serde_json::Value>(b"").unwrap_err());
        assert_eq!(code, "malformed_json");
    }
}
