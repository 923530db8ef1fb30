//! An OAuth2 identity provider: accounts live at an authorization server with a management
//! API (Auth0, Keycloak, Okta and the like), callers' secrets are checked with the resource
//! owner password grant.
//!
//! [`OAuth2Directory`] implements [`IdentityProvider`] (kind `oauth2`):
//!
//! - **lookup** searches the management API: the account number is quoted and escaped for
//!   the provider's Lucene-style query syntax ([`quote_query_value`]), percent-encoded, and
//!   put into [`OAuth2Config::user_search_url_template`]. The answer must be a JSON array:
//!   empty means no such account; more than one user is refused as ambiguous (a search that
//!   ignores its query must not pick somebody's account); [`ProfilePointers`] (JSON pointers
//!   into the whole answer, so `/0/...` is the first user) map it to a [`Profile`].
//! - **verify** refuses an empty secret before any request, looks the account up (unknown →
//!   `UnknownAccount`, blocked → `Disabled`), then asks for a token with the password grant
//!   under the login client. A 4xx answer is a failed login (`WrongSecret`): authlib answers
//!   bad user credentials with `invalid_request`, Auth0 with `invalid_grant`/403 — except 429
//!   and the errors that say the *client* is misconfigured (`invalid_client`,
//!   `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`), which are
//!   [`IdentityError::Unavailable`] so that a broken configuration does not lock callers
//!   out. A 200 must carry an access token that passes validation — as a JWT against the
//!   provider's JWKS ([`validate_jwt`]: signature, only the configured asymmetric
//!   algorithms, never `none`, issuer, audience, `exp`/`nbf` with [`JWT_LEEWAY_SECS`] of
//!   leeway) or by RFC 7662 introspection (`active: true`). Anything else is
//!   `Unavailable("token validation failed")`.
//! - **change_secret** sends `{"password": ...}` to the management API
//!   ([`OAuth2Config::user_update_url_template`], `PATCH` like Auth0's).
//! - **health** fetches a management token and the JWKS (or introspects a dummy token).
//!
//! The management token (client credentials) is cached until shortly before it expires
//! (30 s, or half its lifetime if that is shorter), refreshed on demand by one task at a
//! time, and fetched again once when the management API answers 401. The JWKS is cached
//! and fetched again once when a token names a key it does not have.
//!
//! Transport: every URL must be https or plain http to a loopback host; no link-local, cloud
//! metadata or other refused address is connected to (as for flow `http` nodes); redirects
//! are never followed; every request has a timeout; answers are capped at 1 MiB. Nothing
//! logged or returned contains a secret, a token, a response body or a URL's query string.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::PublicKeyUse;
use jsonwebtoken::{DecodingKey, Validation};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use ivrauth_core::http::secure_transport;
use ivrauth_core::identity::{
    default_greeting, is_e164, AccountNumber, AccountStatus, IdentityError, IdentityProvider,
    Profile, RejectReason, Verification,
};
use ivrauth_core::secret::Secret;

pub use jsonwebtoken::jwk::JwkSet;
pub use jsonwebtoken::Algorithm;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const JWT_LEEWAY_SECS: u64 = 30;
/// A cached management token is replaced this long before it expires (or at half its
/// lifetime, if that comes first).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// How to reach and read an OAuth2 provider.
#[derive(Debug, Clone)]
pub struct OAuth2Config {
    /// The token endpoint, for both the management and the login client.
    pub token_url: String,
    /// The management client (client_credentials grant, HTTP Basic).
    pub client_id: String,
    pub client_secret: Secret<String>,
    /// `scope` asked for the management token (e.g. `read:users update:users`).
    pub mgmt_scope: Option<String>,
    /// `audience` sent with the management token request (Auth0's management API wants it).
    pub audience: Option<String>,
    /// The user search URL with an `{account}` placeholder, which is replaced by the account
    /// number quoted and escaped for the query syntax, then percent-encoded; e.g.
    /// `https://tenant.example/api/v2/users?q=app_metadata.account_number:{account}`.
    pub user_search_url_template: String,
    /// The user update URL with a `{user_id}` placeholder (percent-encoded), for
    /// `change_secret`; e.g. `https://tenant.example/api/v2/users/{user_id}`. `None`:
    /// changing secrets is not supported.
    pub user_update_url_template: Option<String>,
    /// Where the profile fields are in the search answer.
    pub pointers: ProfilePointers,
    /// The client used for the password grant (may be the management client).
    pub login_client_id: String,
    pub login_client_secret: Secret<String>,
    /// `scope` asked for in the password grant.
    pub login_scope: Option<String>,
    /// How an access token from the password grant is checked.
    pub token_validation: TokenValidation,
    /// Timeout of each request, connection included.
    pub timeout: Duration,
}

/// JSON pointers (RFC 6901) into the user search answer, which is a JSON array: `/0/...`
/// points into the first (and only) user. A pointer that finds nothing, or a value of the
/// wrong type, leaves the field empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfilePointers {
    /// The name the password grant takes as `username` (required).
    pub login_name: String,
    /// The user id the update URL takes (required for `change_secret`).
    pub user_id: String,
    /// When set, the value there must equal the account number searched for, or the
    /// answer is refused (a safety net against a search that ignores its query).
    pub account: Option<String>,
    pub name: Option<String>,
    /// Defaults to the first word of the name when absent.
    pub greeting: Option<String>,
    /// Kept only when it is an E.164 number.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub phone_verified: Option<String>,
    pub email_verified: Option<String>,
    /// `true` there makes the account `Disabled`.
    pub blocked: Option<String>,
}

impl Default for ProfilePointers {
    /// Auth0's user search answer.
    fn default() -> Self {
        ProfilePointers {
            login_name: "/0/username".into(),
            user_id: "/0/user_id".into(),
            account: Some("/0/app_metadata/account_number".into()),
            name: Some("/0/name".into()),
            greeting: Some("/0/given_name".into()),
            phone: Some("/0/phone_number".into()),
            email: Some("/0/email".into()),
            phone_verified: Some("/0/phone_verified".into()),
            email_verified: Some("/0/email_verified".into()),
            blocked: Some("/0/blocked".into()),
        }
    }
}

/// How the access token from a successful password grant is checked.
#[derive(Debug, Clone)]
pub enum TokenValidation {
    /// A signed JWT, checked against the provider's JWKS.
    Jwt {
        jwks_url: String,
        /// The exact `iss` expected.
        issuer: String,
        /// An `aud` the token must carry.
        audience: String,
        /// Accepted signature algorithms: asymmetric ones only (RS*, PS*, ES*, EdDSA).
        algorithms: Vec<Algorithm>,
    },
    /// RFC 7662 introspection, authenticated with HTTP Basic; `active: true` is required.
    Introspection {
        url: String,
        client_id: String,
        client_secret: Secret<String>,
    },
}

/// Why a JWT was refused. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    /// The key the token names is not in the key set (fetch the JWKS again).
    #[error("the token names a key that is not in the key set")]
    UnknownKey,
    #[error("{0}")]
    Invalid(&'static str),
}

/// Check a JWT's signature against `keys` and its `iss`, `aud`, `exp` (and `nbf`, when
/// present) with [`JWT_LEEWAY_SECS`] of leeway. Only `algorithms` are accepted, and never a
/// symmetric one or `none`. A token without `kid` is checked with the only key of a
/// one-key set. Pure: the time is the system clock's.
pub fn validate_jwt(
    token: &str,
    keys: &JwkSet,
    issuer: &str,
    audience: &str,
    algorithms: &[Algorithm],
) -> Result<(), JwtRejection> {
    use JwtRejection::Invalid;
    // `alg: none` (any spelling) does not parse as an `Algorithm`: refused here.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| Invalid("the token is malformed or its algorithm is not supported"))?;
    if is_symmetric(header.alg) || !algorithms.contains(&header.alg) {
        return Err(Invalid("the token's algorithm is not allowed"));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(JwtRejection::UnknownKey)?;
    if let Some(key_alg) = jwk.common.key_algorithm {
        if Algorithm::from_str(&key_alg.to_string()).ok() != Some(header.alg) {
            return Err(Invalid("the key is for another algorithm"));
        }
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err(Invalid("the key is not a signing key"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Invalid("the key is not usable"))?;
    let mut v = Validation::new(header.alg);
    v.algorithms = vec![header.alg];
    v.leeway = JWT_LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        Invalid(match e.kind() {
            K::InvalidSignature => "bad signature",
            K::ExpiredSignature => "the token has expired",
            K::ImmatureSignature => "the token is not valid yet",
            K::InvalidIssuer => "wrong issuer",
            K::InvalidAudience => "wrong audience",
            K::MissingRequiredClaim(_) => "a required claim is missing",
            K::InvalidAlgorithm => "the token's algorithm does not match the key",
            _ => "the token is invalid",
        })
    })?;
    Ok(())
}

fn is_symmetric(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Quote `value` as a phrase for Lucene-style query syntax (Auth0's user search,
/// Elasticsearch `query_string`, the test server): wrapped in double quotes, with `\` and
/// `"` escaped by a backslash. Inside a phrase nothing else is special, so the value is
/// matched exactly, whatever it contains.
pub fn quote_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `template` with `{account}` replaced by `account`, quoted ([`quote_query_value`]) and
/// percent-encoded.
pub fn user_search_url(template: &str, account: &str) -> String {
    let quoted = quote_query_value(account);
    template.replace(
        "{account}",
        &utf8_percent_encode(&quoted, COMPONENT).to_string(),
    )
}

fn user_update_url(template: &str, user_id: &str) -> String {
    template.replace(
        "{user_id}",
        &utf8_percent_encode(user_id, COMPONENT).to_string(),
    )
}

struct CachedToken {
    token: Arc<Secret<String>>,
    refresh_at: Instant,
}

/// An OAuth2 authorization server as an identity provider. See the module documentation.
pub struct OAuth2Directory {
    config: OAuth2Config,
    client: reqwest::Client,
    mgmt_token: Mutex<Option<CachedToken>>,
    jwks: Mutex<Option<Arc<JwkSet>>>,
}

impl std::fmt::Debug for OAuth2Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Directory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The user search answer, with the pointers to read it.
struct FoundUser<'a> {
    doc: Value,
    pointers: &'a ProfilePointers,
}

impl FoundUser<'_> {
    fn string(&self, pointer: Option<&String>) -> Option<String> {
        let v = self.doc.pointer(pointer?)?;
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn flag(&self, pointer: Option<&String>) -> bool {
        pointer
            .and_then(|p| self.doc.pointer(p))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn blocked(&self) -> bool {
        self.flag(self.pointers.blocked.as_ref())
    }

    fn login_name(&self) -> Result<String, IdentityError> {
        self.string(Some(&self.pointers.login_name))
            .ok_or_else(|| unavailable("the user search answer has no login name"))
    }

    fn profile(&self, account: &AccountNumber) -> Profile {
        let p = self.pointers;
        let name = self.string(p.name.as_ref());
        let greeting = self
            .string(p.greeting.as_ref())
            .or_else(|| name.as_deref().and_then(default_greeting));
        let phone = self.string(p.phone.as_ref()).filter(|ph| is_e164(ph));
        let email = self.string(p.email.as_ref());
        Profile {
            account: account.clone(),
            name,
            greeting,
            phone_verified: phone.is_some() && self.flag(p.phone_verified.as_ref()),
            email_verified: email.is_some() && self.flag(p.email_verified.as_ref()),
            phone,
            email,
            status: if self.blocked() {
                AccountStatus::Disabled
            } else {
                AccountStatus::Active
            },
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: Option<String>,
}

impl OAuth2Directory {
    /// Checks the configuration (URLs, placeholders, algorithms) and builds the HTTP client.
    /// Contacts nothing: call [`IdentityProvider::health`] for that.
    pub fn new(config: OAuth2Config) -> Result<OAuth2Directory, IdentityError> {
        check_config(&config)?;
        let client = transport::client(config.timeout)?;
        Ok(OAuth2Directory {
            config,
            client,
            mgmt_token: Mutex::new(None),
            jwks: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OAuth2Config {
        &self.config
    }

    /// Search the management API for `account`, which may be any string (it is quoted and
    /// escaped; [`AccountNumber`] is stricter still). Returns the users found.
    pub async fn search(&self, account: &str) -> Result<Vec<Value>, IdentityError> {
        let url = user_search_url(&self.config.user_search_url_template, account);
        let shown = transport::shown_url(&url);
        let (status, body) = self
            .mgmt_request(&shown, |token| {
                self.client.get(url.as_str()).bearer_auth(token)
            })
            .await?;
        if status != StatusCode::OK {
            return Err(unavailable(format!("{shown} answered {status}")));
        }
        match serde_json::from_slice::<Value>(body.expose()) {
            Ok(Value::Array(users)) => Ok(users),
            _ => Err(unavailable(format!("{shown} did not answer a JSON array"))),
        }
    }

    /// The one user whose account number is `account`, or `None`.
    async fn find(&self, account: &str) -> Result<Option<FoundUser<'_>>, IdentityError> {
        let users = self.search(account).await?;
        if users.is_empty() {
            return Ok(None);
        }
        if users.len() > 1 {
            return Err(unavailable(
                "the user search found more than one user for one account number",
            ));
        }
        let found = FoundUser {
            doc: Value::Array(users),
            pointers: &self.config.pointers,
        };
        if let Some(p) = &self.config.pointers.account {
            if found.string(Some(p)).as_deref() != Some(account) {
                return Err(unavailable(
                    "the user search answered a user with another account number",
                ));
            }
        }
        Ok(Some(found))
    }

    /// POST `form` to the token endpoint authenticated as `client_id`; returns the status,
    /// the body and the URL as it may be shown (no query, no credentials).
    async fn token_request(
        &self,
        client_id: &str,
        client_secret: &Secret<String>,
        form: &[(&str, &str)],
    ) -> Result<(StatusCode, Secret<Vec<u8>>, String), IdentityError> {
        let shown = transport::shown_url(&self.config.token_url);
        let req = transport::client_auth(
            self.client.post(&self.config.token_url),
            client_id,
            client_secret,
        )
        .form(form);
        let (status, body) = transport::send(req, &shown).await?;
        Ok((status, body, shown))
    }

    /// Send a management API request with a bearer token; on 401, once more with a fresh
    /// token.
    async fn mgmt_request(
        &self,
        shown: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Secret<Vec<u8>>), IdentityError> {
        let token = self.mgmt_token(None).await?;
        let (status, body) = transport::send(build(token.expose()), shown).await?;
        if status != StatusCode::UNAUTHORIZED {
            return Ok((status, body));
        }
        tracing::debug!(url = %shown, "management token refused; fetching a new one");
        let token = self.mgmt_token(Some(&token)).await?;
        transport::send(build(token.expose()), shown).await
    }

    /// The cached management token, or a new one. `stale` is a token the caller saw refused:
    /// it is replaced unless another task already did.
    async fn mgmt_token(
        &self,
        stale: Option<&Arc<Secret<String>>>,
    ) -> Result<Arc<Secret<String>>, IdentityError> {
        let mut cache = self.mgmt_token.lock().await;
        if let Some(c) = cache.as_ref() {
            let refused = stale.is_some_and(|s| Arc::ptr_eq(s, &c.token));
            if !refused && Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        *cache = None;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.config.mgmt_scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &self.config.audience {
            form.push(("audience", audience));
        }
        let (status, body, shown) = self
            .token_request(&self.config.client_id, &self.config.client_secret, &form)
            .await?;
        if status != StatusCode::OK {
            return Err(unavailable(format!(
                "the management token request to {shown} answered {status}{}",
                error_code(&body)
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(body.expose())
            .map_err(|_| unavailable(format!("{shown} answered no access token")))?;
        let token = Arc::new(Secret::new(answer.access_token));
        if let Some(life) = answer.expires_in.as_ref().and_then(seconds) {
            let life = Duration::from_secs(life);
            let margin = TOKEN_REFRESH_MARGIN.min(life / 2);
            *cache = Some(CachedToken {
                token: token.clone(),
                refresh_at: Instant::now() + (life - margin),
            });
        }
        Ok(token)
    }

    /// The JWKS, fetched when absent, or when `stale` (a set that lacked a key) is still
    /// the cached one. The bool tells whether this call fetched it.
    async fn jwks(
        &self,
        jwks_url: &str,
        stale: Option<&Arc<JwkSet>>,
    ) -> Result<(Arc<JwkSet>, bool), IdentityError> {
        let mut cache = self.jwks.lock().await;
        if let Some(keys) = cache.as_ref() {
            if !stale.is_some_and(|s| Arc::ptr_eq(s, keys)) {
                return Ok((keys.clone(), false));
            }
        }
        let shown = transport::shown_url(jwks_url);
        let (status, body) = transport::send(self.client.get(jwks_url), &shown).await?;
        if status != StatusCode::OK {
            return Err(unavailable(format!("{shown} answered {status}")));
        }
        let keys: JwkSet = serde_json::from_slice(body.expose())
            .map_err(|_| unavailable(format!("{shown} did not answer a JWK set")))?;
        let keys = Arc::new(keys);
        *cache = Some(keys.clone());
        Ok((keys, true))
    }

    async fn validate_access_token(&self, token: &Secret<String>) -> Result<(), IdentityError> {
        let failed = || unavailable("token validation failed");
        match &self.config.token_validation {
            TokenValidation::Jwt {
                jwks_url,
                issuer,
                audience,
                algorithms,
            } => {
                let (keys, fresh) = self.jwks(jwks_url, None).await?;
                let check = |keys: &JwkSet| {
                    validate_jwt(token.expose(), keys, issuer, audience, algorithms)
                };
                let result = match check(&keys) {
                    Err(JwtRejection::UnknownKey) if !fresh => {
                        let (keys, _) = self.jwks(jwks_url, Some(&keys)).await?;
                        check(&keys)
                    }
                    other => other,
                };
                result.map_err(|reason| {
                    tracing::warn!(%reason, "access token from the password grant refused");
                    failed()
                })
            }
            TokenValidation::Introspection {
                url,
                client_id,
                client_secret,
            } => {
                let shown = transport::shown_url(url);
                let req = transport::client_auth(self.client.post(url), client_id, client_secret)
                    .form(&[
                        ("token", token.expose().as_str()),
                        ("token_type_hint", "access_token"),
                    ]);
                let (status, body) = transport::send(req, &shown).await?;
                if status != StatusCode::OK {
                    tracing::warn!(url = %shown, status = status.as_u16(), "introspection failed");
                    return Err(failed());
                }
                let answer: Value = serde_json::from_slice(body.expose()).map_err(|_| failed())?;
                if answer.get("active") != Some(&Value::Bool(true)) {
                    tracing::warn!("introspection: the access token is not active");
                    return Err(failed());
                }
                Ok(())
            }
        }
    }
}

#[async_trait]
impl IdentityProvider for OAuth2Directory {
    fn kind(&self) -> &'static str {
        "oauth2"
    }

    async fn lookup(&self, account: &AccountNumber) -> Result<Option<Profile>, IdentityError> {
        Ok(self
            .find(account.as_str())
            .await?
            .map(|user| user.profile(account)))
    }

    async fn verify(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
    ) -> Result<Verification, IdentityError> {
        if secret.expose().is_empty() {
            return Ok(Verification::Rejected(RejectReason::EmptySecret));
        }
        let Some(user) = self.find(account.as_str()).await? else {
            return Ok(Verification::Rejected(RejectReason::UnknownAccount));
        };
        if user.blocked() {
            return Ok(Verification::Rejected(RejectReason::Disabled));
        }
        let login_name = match user.login_name() {
            Ok(name) => name,
            Err(_) => {
                // An existing user who cannot log in with a password (no login name at the
                // configured pointer): refused like a disabled account, not an outage, so the
                // caller cannot tell that the account exists. The operator sees the warning.
                tracing::warn!(
                    "a user found by account search has no login name at the configured pointer; refusing"
                );
                return Ok(Verification::Rejected(RejectReason::Disabled));
            }
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "password"),
            ("username", &login_name),
            ("password", secret.expose()),
        ];
        if let Some(scope) = &self.config.login_scope {
            form.push(("scope", scope));
        }
        let (status, body, shown) = self
            .token_request(
                &self.config.login_client_id,
                &self.config.login_client_secret,
                &form,
            )
            .await?;
        tracing::debug!(url = %shown, status = status.as_u16(), "password grant");
        if status == StatusCode::OK {
            let answer: TokenAnswer = serde_json::from_slice(body.expose())
                .map_err(|_| unavailable("token validation failed"))?;
            let token = Secret::new(answer.access_token);
            self.validate_access_token(&token).await?;
            return Ok(Verification::Verified);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Auth0 and others answer 429 for a user their brute-force protection blocked:
            // a per-account refusal, which the caller must not be able to tell apart.
            return Ok(Verification::Rejected(RejectReason::Locked));
        }
        if status.is_client_error() {
            let code = serde_json::from_slice::<ErrorAnswer>(body.expose())
                .ok()
                .and_then(|e| e.error);
            if let Some(
                c @ ("invalid_client"
                | "unauthorized_client"
                | "unsupported_grant_type"
                | "invalid_scope"),
            ) = code.as_deref()
            {
                return Err(unavailable(format!(
                    "the password grant at {shown} refused the login client ({c})"
                )));
            }
            return Ok(Verification::Rejected(RejectReason::WrongSecret));
        }
        Err(unavailable(format!(
            "the password grant at {shown} answered {status}"
        )))
    }

    async fn change_secret(
        &self,
        account: &AccountNumber,
        new_secret: &Secret<String>,
    ) -> Result<(), IdentityError> {
        let Some(template) = &self.config.user_update_url_template else {
            return Err(IdentityError::Unsupported(
                "changing secrets (no user update URL is configured)",
            ));
        };
        if new_secret.expose().is_empty() {
            return Err(IdentityError::InvalidSecret(
                "the new secret is empty".into(),
            ));
        }
        let user = self
            .find(account.as_str())
            .await?
            .ok_or_else(|| unavailable("no such account at the identity provider"))?;
        let user_id = user
            .string(Some(&self.config.pointers.user_id))
            .ok_or_else(|| unavailable("the user search answer has no user id"))?;
        let url = user_update_url(template, &user_id);
        let shown = transport::shown_url(&url);
        let body = Secret::new(json!({ "password": new_secret.expose() }).to_string());
        let (status, answer) = self
            .mgmt_request(&shown, |token| {
                self.client
                    .patch(url.as_str())
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.expose().clone())
            })
            .await?;
        match status.as_u16() {
            200 | 204 => Ok(()),
            400 | 422 => Err(IdentityError::InvalidSecret(format!(
                "the identity provider refused the new secret{}",
                error_code(&answer)
            ))),
            _ => Err(unavailable(format!("{shown} answered {status}"))),
        }
    }

    async fn health(&self) -> Result<(), IdentityError> {
        self.mgmt_token(None).await?;
        match &self.config.token_validation {
            TokenValidation::Jwt { jwks_url, .. } => {
                let stale = self.jwks.lock().await.clone();
                self.jwks(jwks_url, stale.as_ref()).await?;
                Ok(())
            }
            TokenValidation::Introspection {
                url,
                client_id,
                client_secret,
            } => {
                let shown = transport::shown_url(url);
                let req = transport::client_auth(self.client.post(url), client_id, client_secret)
                    .form(&[("token", "ivrauth-health-check")]);
                let (status, body) = transport::send(req, &shown).await?;
                let answer: Option<Value> = serde_json::from_slice(body.expose()).ok();
                if status == StatusCode::OK
                    && answer.as_ref().and_then(|a| a.get("active")).is_some()
                {
                    Ok(())
                } else {
                    Err(unavailable(format!(
                        "introspection at {shown} answered {status}"
                    )))
                }
            }
        }
    }
}

fn unavailable(msg: impl Into<String>) -> IdentityError {
    IdentityError::Unavailable(msg.into())
}

/// ` (error_code)` from an OAuth2-style error answer, when it has a short, plain one.
fn error_code(body: &Secret<Vec<u8>>) -> String {
    serde_json::from_slice::<ErrorAnswer>(body.expose())
        .ok()
        .and_then(|e| e.error)
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn check_config(c: &OAuth2Config) -> Result<(), IdentityError> {
    let invalid = |what: String| unavailable(format!("invalid oauth2 configuration: {what}"));
    let url_ok = |name: &str, url: &str| {
        if secure_transport(url) {
            Ok(())
        } else {
            Err(invalid(format!(
                "{name} must be an https URL (or http to a loopback host)"
            )))
        }
    };
    url_ok("token_url", &c.token_url)?;
    if !c.user_search_url_template.contains("{account}") {
        return Err(invalid(
            "user_search_url_template has no {account} placeholder".into(),
        ));
    }
    url_ok(
        "user_search_url_template",
        &user_search_url(&c.user_search_url_template, "0"),
    )?;
    if let Some(t) = &c.user_update_url_template {
        if !t.contains("{user_id}") {
            return Err(invalid(
                "user_update_url_template has no {user_id} placeholder".into(),
            ));
        }
        url_ok("user_update_url_template", &user_update_url(t, "0"))?;
    }
    match &c.token_validation {
        TokenValidation::Jwt {
            jwks_url,
            algorithms,
            issuer,
            audience,
        } => {
            url_ok("jwks_url", jwks_url)?;
            if algorithms.is_empty() || algorithms.iter().any(|a| is_symmetric(*a)) {
                return Err(invalid(
                    "algorithms must list asymmetric algorithms only (RS*, PS*, ES*, EdDSA)".into(),
                ));
            }
            if issuer.is_empty() || audience.is_empty() {
                return Err(invalid("issuer and audience must not be empty".into()));
            }
        }
        TokenValidation::Introspection { url, .. } => url_ok("introspection url", url)?,
    }
    let p = &c.pointers;
    let pointers = [Some(&p.login_name), Some(&p.user_id)]
        .into_iter()
        .chain([
            p.account.as_ref(),
            p.name.as_ref(),
            p.greeting.as_ref(),
            p.phone.as_ref(),
            p.email.as_ref(),
            p.phone_verified.as_ref(),
            p.email_verified.as_ref(),
            p.blocked.as_ref(),
        ])
        .flatten();
    for ptr in pointers {
        if !ptr.is_empty() && !ptr.starts_with('/') {
            return Err(invalid(format!("{ptr:?} is not a JSON pointer")));
        }
    }
    if c.timeout.is_zero() {
        return Err(invalid("timeout must not be zero".into()));
    }
    Ok(())
}

/// HTTP plumbing shared by the identity providers in this crate.
pub(crate) mod transport {
    use std::sync::Arc;
    use std::time::Duration;

    use ivrauth_core::identity::IdentityError;
    use ivrauth_core::secret::Secret;
    use percent_encoding::utf8_percent_encode;
    use reqwest::StatusCode;

    use crate::outbound::{refusal_of, GuardedResolver, OutboundPolicy, Refusal, SystemLookup};

    /// Largest answer read from an identity provider.
    pub(crate) const MAX_BODY: usize = 1024 * 1024;

    /// A client that never follows redirects, times out every request, and connects to no
    /// link-local, cloud metadata or other refused address (the flow executor's rule, with
    /// no allow-list to open one). Its proxy settings come from the environment as before:
    /// through a proxy, names are resolved, and so checked, by the proxy.
    pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, IdentityError> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("ivrauth/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver::new(
                Arc::new(OutboundPolicy::default()),
                Arc::new(SystemLookup),
            )))
            .build()
            .map_err(|_| IdentityError::Unavailable("could not build the HTTP client".into()))
    }

    /// HTTP Basic client authentication as RFC 6749 §2.3.1 has it: id and secret are
    /// form-urlencoded first.
    pub(crate) fn client_auth(
        req: reqwest::RequestBuilder,
        id: &str,
        secret: &Secret<String>,
    ) -> reqwest::RequestBuilder {
        let enc = |s: &str| utf8_percent_encode(s, super::COMPONENT).to_string();
        let secret = Secret::new(enc(secret.expose()));
        req.basic_auth(enc(id), Some(secret.expose()))
    }

    /// Send, and read the answer (at most [`MAX_BODY`] bytes). Errors never carry
    /// reqwest's text (it holds the full URL), only `shown` and an error class.
    pub(crate) async fn send(
        req: reqwest::RequestBuilder,
        shown: &str,
    ) -> Result<(StatusCode, Secret<Vec<u8>>), IdentityError> {
        let (client, req) = req.build_split();
        let req = req.map_err(|e| failure(&e, shown))?;
        // An IP-literal host reaches no resolver: it is checked here.
        if let Some(host) = req.url().host() {
            OutboundPolicy::default()
                .check_url_host(&host)
                .map_err(|r| refused(&r, shown))?;
        }
        let mut resp = client.execute(req).await.map_err(|e| failure(&e, shown))?;
        let status = resp.status();
        let declared = resp.content_length();
        if declared.is_some_and(|l| l > MAX_BODY as u64) {
            return Err(too_large(shown));
        }
        let capacity = declared
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(8 * 1024)
            .min(MAX_BODY);
        // Wrapped at once, so that the answer (which may hold a token) is zeroized however
        // this ends.
        let mut body = Buffer(Vec::with_capacity(capacity));
        while let Some(chunk) = resp.chunk().await.map_err(|e| failure(&e, shown))? {
            if chunk.len() > MAX_BODY.saturating_sub(body.0.len()) {
                return Err(too_large(shown));
            }
            body.0.extend_from_slice(&chunk);
        }
        Ok((status, Secret::new(std::mem::take(&mut body.0))))
    }

    /// A buffer zeroized on drop.
    struct Buffer(Vec<u8>);

    impl Drop for Buffer {
        fn drop(&mut self) {
            drop(Secret::new(std::mem::take(&mut self.0)));
        }
    }

    fn too_large(shown: &str) -> IdentityError {
        IdentityError::Unavailable(format!(
            "the answer from {shown} is larger than {MAX_BODY} bytes"
        ))
    }

    fn refused(r: &Refusal, shown: &str) -> IdentityError {
        IdentityError::Unavailable(format!("the request to {shown} was refused: {r}"))
    }

    fn failure(e: &reqwest::Error, shown: &str) -> IdentityError {
        if let Some(r) = refusal_of(e) {
            return refused(r, shown);
        }
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else if e.is_redirect() {
            "redirected"
        } else {
            "failed"
        };
        IdentityError::Unavailable(format!("the request to {shown} {what}"))
    }

    /// `scheme://host[:port]/path`: no userinfo, query or fragment.
    pub(crate) fn shown_url(url: &str) -> String {
        match url::Url::parse(url) {
            Ok(u) => {
                let host = u.host_str().unwrap_or("");
                match u.port() {
                    Some(port) => format!("{}://{}:{}{}", u.scheme(), host, port, u.path()),
                    None => format!("{}://{}{}", u.scheme(), host, u.path()),
                }
            }
            Err(_) => "(invalid URL)".into(),
        }
    }
}
