//! Authentication: the OAuth2 client-credentials token endpoint (RFC 6749 §4.4), and the
//! [`Scoped`] extractor that guards API routes with a bearer token, a scope and the
//! per-client rate limit.
//!
//! The token endpoint checks the credentials before it limits: tokens issued are limited per
//! client (only its secret can use up that limit), refusals per existing client id presented
//! and, for every unknown or malformed id together, in one shared bucket. Refusals over the
//! limit get 429 without an audit record, which bounds how fast refusals grow the audit log.
//!
//! Secrets and tokens are only ever handled as SHA-256 hashes once they arrive; neither is
//! logged, audited or echoed.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use ivrauth_core::audit::{AuditEvent, EventName, Outcome};
use ivrauth_core::clients::{grant_scopes, hash_credential, is_valid_credential_text};
use ivrauth_core::ports::{ClientRecord, ClientStore, StoreError, TokenRecord};
use ivrauth_core::time::UnixMillis;
use ivrauth_proto::api::TokenResponse;

use super::error::ApiError;
use super::extract::{media_type, read_body};
use crate::AppState;

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/auth/v3/oauth/token";

pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(token))
}

// ---------------------------------------------------------------------------------------
// Scopes as types
// ---------------------------------------------------------------------------------------

/// A scope a route requires, as a marker type for [`Scoped`].
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: &'static str;
}

/// `flow:read`: list and read flows.
#[derive(Debug, Clone, Copy)]
pub struct FlowRead;
impl RequiredScope for FlowRead {
    const SCOPE: &'static str = "flow:read";
}

/// `flow:write`: create, update, delete flows.
#[derive(Debug, Clone, Copy)]
pub struct FlowWrite;
impl RequiredScope for FlowWrite {
    const SCOPE: &'static str = "flow:write";
}

/// `call:turn`: drive calls through the decision API.
#[derive(Debug, Clone, Copy)]
pub struct CallTurn;
impl RequiredScope for CallTurn {
    const SCOPE: &'static str = "call:turn";
}

/// `flow:simulate`: run flows in the simulator.
#[derive(Debug, Clone, Copy)]
pub struct FlowSimulate;
impl RequiredScope for FlowSimulate {
    const SCOPE: &'static str = "flow:simulate";
}

/// `identity:simulate`: simulations may perform actions that reach an account. Checked in
/// the simulation handler (only flows with such actions need it), not as an extractor.
#[derive(Debug, Clone, Copy)]
pub struct IdentitySimulate;
impl RequiredScope for IdentitySimulate {
    const SCOPE: &'static str = "identity:simulate";
}

/// Extractor: the request carries a valid, unexpired bearer token of a client that is not
/// revoked, the token has scope `S::SCOPE`, and the client is within its rate limit.
/// Rejects with 401, 403 (naming the scope) or 429. Yields the client id, the audit actor.
///
/// ```no_run
/// use axum::extract::State;
/// use ivrauth_server::{AppState, FlowRead, Scoped};
///
/// async fn list(caller: Scoped<FlowRead>, State(_state): State<AppState>) -> String {
///     caller.client_id
/// }
/// let _routes: axum::Router<AppState> = axum::Router::new().route("/x", axum::routing::get(list));
/// ```
#[derive(Debug, Clone)]
pub struct Scoped<S> {
    /// The authenticated client's id.
    pub client_id: String,
    /// Every scope the token carries.
    pub scopes: Vec<String>,
    _scope: PhantomData<fn() -> S>,
}

impl<S> Scoped<S> {
    /// The audit actor: the client id.
    pub fn actor(&self) -> &str {
        &self.client_id
    }
}

impl<S, St> FromRequestParts<St> for Scoped<S>
where
    S: RequiredScope,
    St: Send + Sync,
    AppState: FromRef<St>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer_token(&parts.headers)?;
        let now = state.clock.now();
        let record = lookup_token(&state, &token, now).await?;
        if !record.scopes.iter().any(|s| s == S::SCOPE) {
            return Err(ApiError::Forbidden {
                scope: S::SCOPE.to_owned(),
            });
        }
        state
            .rate_limiter
            .check(&record.client_id, now)
            .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
        Ok(Scoped {
            client_id: record.client_id,
            scopes: record.scopes,
            _scope: PhantomData,
        })
    }
}

/// The bearer token of `Authorization`, or 401 (with `invalid_token` when something was
/// presented but is not a usable bearer token).
fn bearer_token(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized {
            token_presented: false,
        });
    };
    let invalid = || ApiError::Unauthorized {
        token_presented: true,
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized {
            token_presented: false,
        });
    }
    let token = rest.trim();
    if !is_valid_credential_text(token) {
        return Err(invalid());
    }
    Ok(token.to_owned())
}

/// The token's record if it is known, unexpired and its client is not revoked.
async fn lookup_token(
    state: &AppState,
    token: &str,
    now: UnixMillis,
) -> Result<TokenRecord, ApiError> {
    let invalid = || ApiError::Unauthorized {
        token_presented: true,
    };
    let record = state
        .store
        .get_token(&hash_credential(token))
        .await?
        .ok_or_else(invalid)?;
    if record.expires_at <= now {
        return Err(invalid());
    }
    match state.store.get_client(&record.client_id).await? {
        Some(c) if c.revoked_at.is_none() => Ok(record),
        _ => Err(invalid()),
    }
}

// ---------------------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------------------

const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// How the client presented its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMethod {
    Basic,
    Form,
    None,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Basic => "basic",
            AuthMethod::Form => "form",
            AuthMethod::None => "none",
        }
    }
}

/// Why a token request was refused: the OAuth error, a safe description for the client, and
/// the reason recorded in the audit log.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    reason: &'static str,
}

impl Refusal {
    fn invalid_request(description: &'static str, reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description,
            reason,
        }
    }
    fn invalid_client(reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "client authentication failed",
            reason,
        }
    }
}

/// Issue an access token to a client (OAuth2 client credentials, RFC 6749 §4.4).
///
/// The client authenticates with HTTP Basic (`client_id:client_secret`) or with the
/// `client_id` and `client_secret` form fields. `scope` (space separated) must be a subset of
/// the client's scopes; without it the token gets all of them. A client holding
/// `flow:manage` holds `flow:read`, `flow:write` and `flow:simulate`, and its token carries
/// all four whether it asks for none, `flow:manage` or any of the three.
///
/// Credentials are checked first (a SHA-256 and a constant-time compare), then the request
/// is charged to one of three kinds of bucket (see [`SUCCESS_KEY_PREFIX`]): issuance to the
/// client's own, a refusal to the failure bucket of the client id presented when that client
/// exists, else to the one bucket shared by every unknown or malformed client id. A refusal
/// over its bucket's limit is answered 429 and not audited; the others are counted and
/// audited as one `token.refused` record per client id, reason and interval (with a
/// `count`), so refusals never cost a durable write each, and nobody can use up a client's
/// issuance limit without its secret.
#[utoipa::path(
    post,
    path = "/auth/v3/oauth/token",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses(
        (status = 200, description = "Token issued (`Cache-Control: no-store`)", body = ivrauth_proto::api::TokenResponse),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type` or `invalid_scope`", body = ivrauth_proto::api::OAuthError),
        (status = 401, description = "`invalid_client`: unknown or revoked client, or wrong secret", body = ivrauth_proto::api::OAuthError),
        (status = 413, description = "Body too large", body = ivrauth_proto::api::ErrorBody),
        (status = 415, description = "Body is not `application/x-www-form-urlencoded`", body = ivrauth_proto::api::ErrorBody),
        (status = 429, description = "Too many tokens issued to this client, or too many refused requests for this client id (or for unknown client ids); `Retry-After` says when to retry", body = ivrauth_proto::api::ErrorBody),
    )
)]
pub async fn token(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    if media_type(req.headers()).as_deref() != Some(FORM_MEDIA_TYPE) {
        return Err(ApiError::UnsupportedMediaType {
            expected: FORM_MEDIA_TYPE,
        });
    }
    let basic = basic_credentials(req.headers());
    let body = read_body(req, &state, state.config.max_body_bytes).await?;
    let now = state.clock.now();

    let mut known: Option<String> = None;
    let result = issue(&state, basic, &body, now, &mut known).await;
    match result {
        Ok((response, scopes, client_id)) => {
            let event = AuditEvent::new(
                uuid::Uuid::new_v4().to_string(),
                EventName::TokenIssued,
                Outcome::Success,
                client_id.clone(),
                client_id,
                None,
                json!({ "scopes": scopes, "expires_in": response.expires_in }),
            );
            state.store.append_audit(&event, now).await?;
            let mut res = (StatusCode::OK, Json(response)).into_response();
            let h = res.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            Ok(res)
        }
        Err(IssueError::Store(e)) => Err(e.into()),
        Err(IssueError::RateLimited(retry_after_secs)) => {
            Err(ApiError::RateLimited { retry_after_secs })
        }
        Err(IssueError::Refused(refusal, used)) => {
            // Over the limit: answered without an audit record, so a flood of refusals
            // cannot grow the audit log faster than the configured rate.
            state
                .rate_limiter
                .check(&failure_key(known.as_deref()), now)
                .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
            // Counted, and audited once per key and interval (see `refusals`), so refusals
            // cost no durable write each.
            let who = known.unwrap_or_else(|| "anonymous".to_owned());
            state.refusals.note(
                EventName::TokenRefused,&who,
                &who,
                json!({ "reason": refusal.reason, "error": refusal.error, "auth_method": used.as_str() }),
                now,
            );
            Err(ApiError::OAuth {
                status: refusal.status,
                error: refusal.error,
                description: Some(refusal.description.to_owned()),
                basic_challenge: refusal.status == StatusCode::UNAUTHORIZED
                    && used == AuthMethod::Basic,
            })
        }
    }
}

/// Rate-limit bucket of the tokens issued to a client: `token:{client_id}`. Only requests
/// that authenticated as the client take from it. (Client ids never contain `:`, so these
/// keys cannot meet those of bearer-authenticated requests, which are bare client ids.)
pub const SUCCESS_KEY_PREFIX: &str = "token:";

/// Rate-limit bucket of the refused requests that presented an existing client's id:
/// `token-fail:{client_id}`.
pub const FAILURE_KEY_PREFIX: &str = "token-fail:";

/// The one bucket shared by refused requests whose client id is missing, malformed or
/// unknown. (`(` cannot appear in a client id, so no client's failure bucket is this one.)
pub const UNKNOWN_FAILURE_KEY: &str = "token-fail:(unknown)";

/// The failure bucket of a refused request: the existing client's own, or the shared one.
fn failure_key(known_client: Option<&str>) -> String {
    match known_client {
        Some(id) => format!("{FAILURE_KEY_PREFIX}{id}"),
        None => UNKNOWN_FAILURE_KEY.to_owned(),
    }
}

enum IssueError {
    Refused(Refusal, AuthMethod),
    /// The client authenticated but has used up its issuance limit (seconds to wait).
    RateLimited(u64),
    Store(StoreError),
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        IssueError::Store(e)
    }
}

/// The checks and the minting. `known` is set as soon as the client id presented is found
/// in the store (before its secret is checked): refusals are then charged to that client's
/// failure bucket and audited with it as the actor.
async fn issue(
    state: &AppState,
    basic: Option<Result<(String, String), ()>>,
    body: &[u8],
    now: UnixMillis,
    known: &mut Option<String>,
) -> Result<(TokenResponse, Vec<String>, String), IssueError> {
    let method_hint = if basic.is_some() {
        AuthMethod::Basic
    } else {
        AuthMethod::Form
    };
    let refuse = |r: Refusal, m: AuthMethod| IssueError::Refused(r, m);

    // Parameters; RFC 6749 §3.2: none may appear twice (refused once the client is known,
    // so that the refusal is charged to the right bucket).
    let mut grant_type: Option<String> = None;
    let mut scope: Option<String> = None;
    let mut form_id: Option<String> = None;
    let mut form_secret: Option<String> = None;
    let mut repeated = false;
    for (k, v) in url::form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "grant_type" => &mut grant_type,
            "scope" => &mut scope,
            "client_id" => &mut form_id,
            "client_secret" => &mut form_secret,
            _ => continue,
        };
        if slot.is_some() {
            repeated = true;
        } else {
            *slot = Some(v.into_owned());
        }
    }

    // The client presented (HTTP Basic, else the form field), looked up once.
    let presented = match &basic {
        Some(Ok((id, _))) => Some(id.as_str()),
        Some(Err(())) => None,
        None => form_id.as_deref(),
    };
    let client = match presented {
        Some(id) if is_valid_credential_text(id) => state.store.get_client(id).await?,
        _ => None,
    };
    if let Some(c) = &client {
        *known = Some(c.id.clone());
    }

    if repeated {
        return Err(refuse(
            Refusal::invalid_request("a parameter is repeated", "duplicate_parameter"),
            method_hint,
        ));
    }
    let Some(grant_type) = grant_type else {
        return Err(refuse(
            Refusal::invalid_request("the grant_type parameter is required", "missing_grant_type"),
            method_hint,
        ));
    };

    // Client credentials: exactly one method.
    let (method, client_id, secret) = match basic {
        Some(Err(())) => {
            return Err(refuse(
                Refusal::invalid_client("malformed_basic_credentials"),
                AuthMethod::Basic,
            ))
        }
        Some(Ok((id, secret))) => {
            if form_secret.is_some() {
                return Err(refuse(
                    Refusal::invalid_request(
                        "use one client authentication method, not two",
                        "two_auth_methods",
                    ),
                    AuthMethod::Basic,
                ));
            }
            if form_id.as_deref().is_some_and(|f| f != id) {
                return Err(refuse(
                    Refusal::invalid_request(
                        "client_id differs from the Basic credentials",
                        "client_id_mismatch",
                    ),
                    AuthMethod::Basic,
                ));
            }
            (AuthMethod::Basic, id, secret)
        }
        None => match (form_id, form_secret) {
            (Some(id), Some(secret)) => (AuthMethod::Form, id, secret),
            (Some(_), None) => {
                return Err(refuse(
                    Refusal::invalid_request(
                        "the client_secret parameter is required",
                        "missing_client_secret",
                    ),
                    AuthMethod::Form,
                ))
            }
            (None, Some(_)) => {
                return Err(refuse(
                    Refusal::invalid_request(
                        "the client_id parameter is required",
                        "missing_client_id",
                    ),
                    AuthMethod::Form,
                ))
            }
            (None, None) => {
                return Err(refuse(
                    Refusal::invalid_client("no_client_authentication"),
                    AuthMethod::None,
                ))
            }
        },
    };

    let client = match authenticate(&client_id, client, &secret, now) {
        Ok(c) => c,
        Err(reason) => return Err(refuse(Refusal::invalid_client(reason), method)),
    };

    if grant_type != "client_credentials" {
        return Err(refuse(
            Refusal {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "only the client_credentials grant is supported",
                reason: "unsupported_grant_type",
            },
            method,
        ));
    }

    // `flow:manage` stands for flow:read, flow:write and flow:simulate together.
    let requested: Option<Vec<&str>> = scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| r.split(' ').filter(|s| !s.is_empty()).collect());
    let Ok(scopes) = grant_scopes(&client.scopes, requested.as_deref()) else {
        return Err(refuse(
            Refusal {
                status: StatusCode::BAD_REQUEST,
                error: "invalid_scope",
                description: "the requested scope exceeds the scopes granted to this client",
                reason: "scope_not_granted",
            },
            method,
        ));
    };

    // Issuance is limited per client; only a request holding the secret reaches this point.
    state
        .rate_limiter
        .check(&format!("{SUCCESS_KEY_PREFIX}{}", client.id), now)
        .map_err(IssueError::RateLimited)?;

    let token = mint_token();
    let ttl = state.config.token_ttl_secs;
    let record = TokenRecord {
        token_hash: hash_credential(&token),
        client_id: client.id.clone(),
        scopes: scopes.clone(),
        issued_at: now,
        expires_at: now.plus_secs(i64::try_from(ttl).unwrap_or(i64::MAX)),
    };
    store_token(state.store.as_ref(), &record, method).await?;
    let response = TokenResponse {
        access_token: token,
        token_type: "bearer".to_owned(),
        expires_in: ttl,
        scope: scopes.join(" "),
    };
    Ok((response, scopes, client.id))
}

/// Store an issued token. The store refuses (`NotFound`) when the client was revoked after
/// it authenticated: a revoke racing the request, refused like any revoked client.
async fn store_token<S: ClientStore + ?Sized>(
    store: &S,
    record: &TokenRecord,
    method: AuthMethod,
) -> Result<(), IssueError> {
    match store.insert_token(record).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(IssueError::Refused(
            Refusal::invalid_client("revoked"),
            method,
        )),
        Err(e) => Err(IssueError::Store(e)),
    }
}

/// The client when `secret` is its current secret (or its previous one, during the
/// overlap after a rotation) and it is not revoked; otherwise the audit reason.
fn authenticate(
    client_id: &str,
    client: Option<ClientRecord>,
    secret: &str,
    now: UnixMillis,
) -> Result<ClientRecord, &'static str> {
    if !is_valid_credential_text(client_id) || !is_valid_credential_text(secret) {
        return Err("malformed_credentials");
    }
    let presented = hash_credential(secret);
    let Some(client) = client else {
        return Err("unknown_client");
    };
    let current = presented.as_bytes().ct_eq(client.secret_hash.as_bytes());
    let previous = match (&client.previous_secret_hash, client.previous_valid_until) {
        (Some(prev), Some(until)) if until > now => presented.as_bytes().ct_eq(prev.as_bytes()),
        _ => subtle::Choice::from(0),
    };
    if !bool::from(current | previous) {
        return Err("bad_secret");
    }
    if client.revoked_at.is_some() {
        return Err("revoked");
    }
    Ok(client)
}

/// 32 random bytes, base64url without padding.
pub fn mint_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `Some(Ok((id, secret)))` for well-formed Basic credentials, `Some(Err(()))` for a Basic
/// header that cannot be decoded, `None` when no Basic credentials were sent.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let value = match value.to_str() {
        Ok(v) => v,
        Err(_) => return Some(Err(())),
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = match base64::engine::general_purpose::STANDARD.decode(rest.trim()) {
        Ok(d) => d,
        Err(_) => return Some(Err(())),
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Some(Err(()));
    };
    let Some((id, secret)) = text.split_once(':') else {
        return Some(Err(()));
    };
    // RFC 6749 §2.3.1: both parts are form-urlencoded before being joined.
    Some(Ok((form_decode(id), form_decode(secret))))
}

/// Undo application/x-www-form-urlencoded encoding (`+` and `%XX`); text that is not
/// validly encoded is kept as it is (and then fails the credential-text check).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => return s.to_owned(),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// RFC 6749 §4.4.2 access token request (form-encoded), for the OpenAPI document (the
/// endpoint parses the form by hand).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: String,
    /// Space-separated subset of the client's scopes; all of them when absent. A client
    /// holding `flow:manage` holds `flow:read`, `flow:write` and `flow:simulate`: asking
    /// for any of them, or for `flow:manage`, gives a token with all four.
    pub scope: Option<String>,
    /// When not using HTTP Basic.
    pub client_id: Option<String>,
    /// When not using HTTP Basic.
    pub client_secret: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A client store whose client was revoked between the secret check and the insert:
    /// `insert_token` finds no live client, as the SQLite store then does.
    struct RevokedMeanwhile;

    #[async_trait::async_trait]
    impl ClientStore for RevokedMeanwhile {
        async fn create_client(&self, _: &ClientRecord) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn get_client(&self, _: &str) -> Result<Option<ClientRecord>, StoreError> {
            unimplemented!()
        }
        async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
            unimplemented!()
        }
        async fn revoke_client(&self, _: &str, _: UnixMillis) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn rotate_client_secret(
            &self,
            _: &str,
            _: &str,
            _: UnixMillis,
        ) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn set_client_scopes(&self, _: &str, _: &[String]) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn insert_token(&self, _: &TokenRecord) -> Result<(), StoreError> {
            Err(StoreError::NotFound)
        }
        async fn get_token(&self, _: &str) -> Result<Option<TokenRecord>, StoreError> {
            unimplemented!()
        }
        async fn purge_expired_tokens(&self, _: UnixMillis) -> Result<u64, StoreError> {
            unimplemented!()
        }
    }

    #[tokio::test]
    async fn revoke_racing_a_token_request_is_an_invalid_client_refusal() {
        let record = TokenRecord {
            token_hash: hash_credential("t"),
            client_id: "cli_x".to_owned(),
            scopes: vec!["flow:read".to_owned()],
            issued_at: UnixMillis(0),
            expires_at: UnixMillis(1_000),
        };
        match store_token(&RevokedMeanwhile, &record, AuthMethod::Basic).await {
            Err(IssueError::Refused(refusal, AuthMethod::Basic)) => {
                assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
                assert_eq!(refusal.error, "invalid_client");
                assert_eq!(refusal.reason, "revoked");
            }
            Err(IssueError::Store(e)) => panic!("a store error ({e:?}) would answer 404"),
            _ => panic!("expected an invalid_client refusal"),
        }
    }

    #[test]
    fn failure_buckets_are_per_existing_client_else_one_shared() {
        assert_eq!(failure_key(Some("cli_a")), "token-fail:cli_a");
        assert_eq!(failure_key(None), UNKNOWN_FAILURE_KEY);
        // No client id can name the shared bucket.
        let shared_suffix = &UNKNOWN_FAILURE_KEY[FAILURE_KEY_PREFIX.len()..];
        assert!(!is_valid_credential_text(shared_suffix));
    }
}
