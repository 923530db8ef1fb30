//! Request extractors whose every rejection is an [`ApiError`]: [`ApiJson`] for JSON bodies,
//! [`ApiPath`] and [`ApiQuery`] for path parameters and query strings, and the
//! Content-Length guard that turns oversized bodies into 413 before they are read. A body
//! that does not arrive within the server's body timeout is 400 `body_timeout`.
//!
//! Deserialization errors name the JSON path or the parameter and what was expected, never
//! the value sent (it may be a password).

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{
    FromRef, FromRequest, FromRequestParts, Path, Query, RawPathParams, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use ivrauth_proto::api::Diagnostic;

use super::connections::BodyTimeout;
use super::error::ApiError;
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

/// Path parameters deserialized into `T`; a failure is 400 `invalid_path` naming the
/// parameter (never its value).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let err = match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => return Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => e.into_kind(),
            Err(other) => {
                return Err(ApiError::Internal(format!(
                    "path parameters: {}",
                    other.body_text()
                )))
            }
        };
        // The route's own parameter names, to name the one at fault when serde did not.
        let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
            .await
            .map(|raw| raw.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default();
        let named = |key: Option<&str>, problem: &str| {
            let message = match key {
                Some(k) => format!("invalid path parameter `{k}`: {problem}"),
                None => format!("invalid path parameter: {problem}"),
            };
            ApiError::bad_request("invalid_path", message)
        };
        Err(match err {
            ErrorKind::InvalidUtf8InPathParam { key } => {
                named(Some(&key), "not valid UTF-8 once percent-decoded")
            }
            ErrorKind::ParseErrorAtKey {
                key, expected_type, ..
            } => named(Some(&key), &format!("expected {expected_type}")),
            ErrorKind::ParseErrorAtIndex {
                index,
                expected_type,
                ..
            } => named(
                names.get(index).map(String::as_str),
                &format!("expected {expected_type}"),
            ),
            ErrorKind::ParseError { expected_type, .. } => named(
                names
                    .first()
                    .map(String::as_str)
                    .filter(|_| names.len() == 1),
                &format!("expected {expected_type}"),
            ),
            // A custom message may quote the value.
            ErrorKind::DeserializeError { key, .. } => named(Some(&key), "invalid value"),
            ErrorKind::Message(_) => named(None, "invalid value"),
            // Wrong number of parameters, unsupported type: the handler's type does not fit
            // its route, a programming error.
            other => ApiError::Internal(format!("path parameters: {other}")),
        })
    }
}

/// The query string deserialized into `T`; a failure is 400 `invalid_query` naming the
/// parameter (never its value).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => {
                let query = parts.uri.query().unwrap_or_default();
                let message = match query_parameter_at_fault(&rejection.body_text(), query) {
                    Some(name) => format!("invalid query parameter `{name}`: invalid value"),
                    None => "invalid query string".to_owned(),
                };
                Err(ApiError::bad_request("invalid_query", message))
            }
        }
    }
}

/// The parameter a query-string rejection is about. axum's text reads
/// `Failed to deserialize query string: PATH: PROBLEM` (`PATH: ` only when serde knew where);
/// the path is kept only when it is a parameter name actually present in `query`, so no
/// value, and nothing from the problem text, is ever quoted.
fn query_parameter_at_fault(rejection_text: &str, query: &str) -> Option<String> {
    let rest = rejection_text.split_once(": ")?.1;
    let (path, _) = rest.split_once(": ")?;
    let plain = !path.is_empty()
        && path.len() <= 64
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let present = url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == path);
    (plain && present).then(|| path.to_owned())
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
        Err(rejection) if BodyTimeout::caused(&rejection) => Err(ApiError::bad_request(
            "body_timeout",
            "the request body did not arrive in time; send it whole with its request",
        )),
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
    fn query_rejection_names_only_a_parameter_that_was_sent() {
        let text = "Failed to deserialize query string: version: invalid digit found in string";
        assert_eq!(
            query_parameter_at_fault(text, "version=abc").as_deref(),
            Some("version")
        );
        // No path (serde did not know where): nothing is named, whatever the problem says.
        let text = "Failed to deserialize query string: abc: invalid digit found in string";
        assert_eq!(query_parameter_at_fault(text, "version=abc"), None);
        let text = "Failed to deserialize query string: unknown variant `x: y`";
        assert_eq!(query_parameter_at_fault(text, "v=x: y"), None);
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
