//! `serve --demo`: a built-in stand-in identity provider and demo flows pointed at it, so a
//! fresh checkout can deploy and simulate the seed's flow with nothing else running.
//!
//! Not for production: the demo provider knows one hard-coded user, and the demo client's
//! secret is printed at start-up. Its routes exist only when the server runs with `--demo`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use ivrauth_core::audit::{EventName, Outcome};
use ivrauth_core::clients::{hash_credential, SCOPES};
use ivrauth_core::identity::{AccountNumber, HashParams};
use ivrauth_core::ports::ClientRecord;

use super::error::ApiError;
use super::extract::ApiJson;
use crate::AppState;

/// The demo identity provider's one account (the seed's test user).
pub const DEMO_USERNAME: &str = "testuser";
pub const DEMO_PASSWORD: &str = "correctpassword";
/// The API client `serve --demo` creates (its secret is minted at each start).
pub const DEMO_CLIENT_ID: &str = "demo";
/// Path of the demo identity endpoint (seed 000's contract).
pub const DEMO_IDENTITY_PATH: &str = "/demo/identity/token";

const SEED_FLOW: &str = include_str!("../../../../examples/seed-auth-flow.json");
const DEMO_PIN_FLOW: &str = include_str!("../../../../examples/demo-pin-flow.json");

/// Routes of the demo identity provider; merged only when the config says `demo`.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(identity_token))
}

/// Seed 000's identity request; every field may be absent (the request is then refused).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = DemoCredentials)]
struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    grant_type: String,
}

/// Seed 000's identity contract: `POST {username, password, grant_type: "password"}` →
/// 200 `{token, expires_in}` or 401. A body that is not such JSON gets the API's 4xx (which
/// never quotes what was sent: it may be a password).
#[utoipa::path(post, path = "/demo/identity/token", tag = "demo",
    request_body = Credentials,
    responses(
        (status = 200, description = "The demo user's credentials: `{token, expires_in}`", body = Object),
        (status = 401, description = "Anything else: `{\"error\": \"invalid_credentials\"}`", body = Object),
    ))]
async fn identity_token(ApiJson(c): ApiJson<Credentials>) -> Response {
    let ok = c.grant_type == "password"
        && subtle_eq(c.username.as_bytes(), DEMO_USERNAME.as_bytes())
        && subtle_eq(c.password.as_bytes(), DEMO_PASSWORD.as_bytes());
    if ok {
        let token = super::auth::mint_token();
        (
            StatusCode::OK,
            Json(json!({ "token": format!("demo.{token}"), "expires_in": 3600 })),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_credentials" })),
        )
            .into_response()
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The demo flows, with their identity endpoint at `base_url` (`http://127.0.0.1:8080`).
/// `demo-auth` is the seed's flow as the seed builds it; `demo-auth-masked` also marks the
/// returned token secure, so the trace shows it masked.
pub fn demo_flows(base_url: &str) -> Result<Vec<(&'static str, Value)>, ApiError> {
    let mut seed: Value = serde_json::from_str(SEED_FLOW)
        .map_err(|e| ApiError::Internal(format!("embedded demo flow: {e}")))?;
    seed["nodes"]["http_auth"]["properties"]["url"] =
        json!(format!("{base_url}{DEMO_IDENTITY_PATH}"));
    let mut masked = seed.clone();
    masked["name"] = json!("IVR Authentication Flow (token marked secure)");
    masked["nodes"]["http_auth"]["properties"]["secureOutput"] = json!(["body.token"]);
    let verify = serde_json::json!({
        "name": "Verify a caller's PIN (built-in directory)",
        "description": "identity.verify with lockout and anti-enumeration; try account 10001, PIN 2468",
        "inputSchema": {
            "type": "object",
            "properties": {
                "account": {"type": "string", "title": "Account number"},
                "pin": {"type": "string", "title": "PIN", "x-secure": true}
            },
            "required": ["account", "pin"]
        },
        "nodes": {
            "start": {"type": "start"},
            "verify": {"type": "action", "properties": {"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}"}}},
            "check": {"type": "condition", "properties": {"conditions": [{"name": "verified", "expression": "{{verify.verified}} == true"}]}},
            "welcome": {"type": "log", "properties": {"message": "caller verified, greeting={{verify.greeting}}"}},
            "end_success": {"type": "end", "properties": {"statusCode": 200}},
            "end_failure": {"type": "end", "properties": {"statusCode": 401}}
        },
        "edges": [
            {"source": "start", "target": "verify"},
            {"source": "verify", "target": "check"},
            {"source": "check", "target": "welcome", "condition": "verified"},
            {"source": "check", "target": "end_failure", "condition": "!verified"},
            {"source": "welcome", "target": "end_success"}
        ],
        "startNode": "start"
    });
    let pin: Value = serde_json::from_str(DEMO_PIN_FLOW)
        .map_err(|e| ApiError::Internal(format!("embedded demo flow: {e}")))?;
    Ok(vec![
        ("demo-auth", seed),
        ("demo-auth-masked", masked),
        ("demo-verify", verify),
        (PHONE_DEMO_FLOW, pin),
    ])
}

/// The built-in directory's demo account (`demo-verify` checks its PIN). Its PIN is hashed
/// with the default parameters; the directory re-hashes it with the configured ones on the
/// first successful verification.
pub const DEMO_ACCOUNT: &str = "10001";
pub const DEMO_PIN: &str = "2468";

/// The demo directory: account number, PIN, name, phone, email. `serve --demo` lists them
/// (with their PINs) in `DATA_DIR/demo-accounts.txt`, readable by its owner only.
pub const DEMO_ACCOUNTS: &[(&str, &str, &str, &str, &str)] = &[
    (
        DEMO_ACCOUNT,
        DEMO_PIN,
        "Ada Lovelace",
        "+15550100001",
        "ada@example.test",
    ),
    (
        "10002",
        "1357",
        "Grace Hopper",
        "+15550100002",
        "grace@example.test",
    ),
    (
        "10003",
        "864209",
        "Alan Turing",
        "+15550100003",
        "alan@example.test",
    ),
];

/// Create the demo accounts that do not exist yet, their PINs hashed with `params` (on a
/// blocking thread). Returns the account numbers created.
async fn install_demo_accounts(
    state: &AppState,
    now: ivrauth_core::UnixMillis,
    params: HashParams,
) -> Result<Vec<&'static str>, ApiError> {
    let mut created = Vec::new();
    for (number, pin, name, phone, email) in DEMO_ACCOUNTS {
        if state.store.get_account(number).await?.is_some() {
            continue;
        }
        let account =
            AccountNumber::parse(number).map_err(|e| ApiError::Internal(e.to_string()))?;
        let pin = ivrauth_core::Secret::new((*pin).to_owned());
        let hash =
            tokio::task::spawn_blocking(move || ivrauth_store::directory::hash_pin(&pin, params))
                .await
                .map_err(|e| ApiError::Internal(format!("the hashing thread failed: {e}")))?
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        state
            .store
            .create_account(&ivrauth_core::ports::AccountRecord {
                account,
                name: (*name).to_owned(),
                greeting: None,
                phone: Some((*phone).to_owned()),
                email: Some((*email).to_owned()),
                phone_verified: true,
                email_verified: false,
                disabled: false,
                pin_hash: Some(hash),
                pin_history: Vec::new(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        created.push(*number);
    }
    Ok(created)
}

/// Store a demo flow: a new flow, or a new version only when its document changed.
async fn install_flow(
    state: &AppState,
    id: &str,
    doc: &Value,
    now: ivrauth_core::UnixMillis,
) -> Result<(), ApiError> {
    let text = doc.to_string();
    let name = doc["name"].as_str().unwrap_or(id).to_owned();
    match state.store.get_flow(id, None).await? {
        Some(existing) if existing.document == text => {}
        Some(_) => {
            state
                .store
                .update_flow(id, &name, &text, "demo", now)
                .await?;
        }
        None => {
            state
                .store
                .create_flow(id, &name, &text, "demo", now)
                .await?;
        }
    }
    Ok(())
}

/// The flow of the phone demo (`ivrauth call --demo`).
pub const PHONE_DEMO_FLOW: &str = "demo-pin";

/// Install the phone demo: the `demo-pin` flow (a new version only when its document
/// changed) and the demo accounts that do not exist yet, their PINs hashed with `params`;
/// audited as `demo.installed` by `actor`. Unlike [`install`] it creates no API client, so
/// a server running on the same store keeps its demo secret. Returns the accounts created.
pub async fn install_phone_demo(
    state: &AppState,
    params: HashParams,
    actor: &str,
) -> Result<Vec<&'static str>, ApiError> {
    let now = state.clock.now();
    let pin: Value = serde_json::from_str(DEMO_PIN_FLOW)
        .map_err(|e| ApiError::Internal(format!("embedded demo flow: {e}")))?;
    install_flow(state, PHONE_DEMO_FLOW, &pin, now).await?;
    let created = install_demo_accounts(state, now, params).await?;
    crate::app::audit::audit(
        state,
        EventName::DemoInstalled,
        Outcome::Success,
        actor,
        "demo",
        None,
        json!({ "flows": [PHONE_DEMO_FLOW], "accountsCreated": created }),
    )
    .await?;
    Ok(created)
}

/// What `serve --demo` prints.
#[derive(Debug)]
pub struct DemoInfo {
    pub flow_ids: Vec<&'static str>,
    pub client_id: &'static str,
    pub client_secret: String,
}

/// Install (or refresh) the demo flows and the demo client. Idempotent across restarts: the
/// flows get a new version only when their document changed, and the client a new secret.
pub async fn install(state: &AppState, base_url: &str) -> Result<DemoInfo, ApiError> {
    let now = state.clock.now();
    let mut flow_ids = Vec::new();
    for (id, doc) in demo_flows(base_url)? {
        install_flow(state, id, &doc, now).await?;
        flow_ids.push(id);
    }
    // Default hashing parameters: the directory re-hashes with the configured ones on the
    // first successful verification.
    let created = install_demo_accounts(state, now, HashParams::default()).await?;
    let secret = super::auth::mint_token();
    let hash = hash_credential(&secret);
    if state
        .store
        .get_client(DEMO_CLIENT_ID)
        .await?
        .is_some_and(|c| c.revoked_at.is_none())
    {
        // The old demo secret stops working at once.
        state
            .store
            .rotate_client_secret(DEMO_CLIENT_ID, &hash, now)
            .await?;
        // A data directory from an earlier version gets the scopes added since (the README's
        // tour simulates identity actions, which need `identity:simulate`).
        let scopes: Vec<String> = SCOPES.iter().map(|s| (*s).to_owned()).collect();
        state
            .store
            .set_client_scopes(DEMO_CLIENT_ID, &scopes)
            .await?;
    } else if state.store.get_client(DEMO_CLIENT_ID).await?.is_none() {
        state
            .store
            .create_client(&ClientRecord {
                id: DEMO_CLIENT_ID.to_owned(),
                name: "demo".to_owned(),
                scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                secret_hash: hash,
                previous_secret_hash: None,
                previous_valid_until: None,
                created_at: now,
                revoked_at: None,
            })
            .await?;
    } else {
        return Err(ApiError::Conflict(
            "the demo client was revoked; use a fresh --data-dir".to_owned(),
        ));
    }
    crate::app::audit::audit(
        state,
        EventName::DemoInstalled,
        Outcome::Success,
        "demo",
        "demo",
        None,
        json!({ "flows": flow_ids, "accountsCreated": created }),
    )
    .await?;
    Ok(DemoInfo {
        flow_ids,
        client_id: DEMO_CLIENT_ID,
        client_secret: secret,
    })
}

/// The demo accounts as a directory of their own, in memory: what simulations reach with
/// `[simulate] identity = "demo"`, so a simulating client can try the demo accounts and
/// never the live directory. PINs are compared in constant time; there is nothing to change.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoDirectory;

impl DemoDirectory {
    fn find(account: &ivrauth_core::identity::AccountNumber) -> Option<&'static DemoAccount> {
        DEMO_ACCOUNTS.iter().find(|a| a.0 == account.as_str())
    }
}

type DemoAccount = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[async_trait::async_trait]
impl ivrauth_core::identity::IdentityProvider for DemoDirectory {
    fn kind(&self) -> &'static str {
        "demo"
    }

    async fn lookup(
        &self,
        account: &ivrauth_core::identity::AccountNumber,
    ) -> Result<Option<ivrauth_core::identity::Profile>, ivrauth_core::identity::IdentityError>
    {
        use ivrauth_core::identity::{AccountStatus, Profile};
        Ok(
            Self::find(account).map(|(_, _, name, phone, email)| Profile {
                account: account.clone(),
                name: Some((*name).to_owned()),
                greeting: None,
                phone: Some((*phone).to_owned()),
                email: Some((*email).to_owned()),
                phone_verified: true,
                email_verified: false,
                status: AccountStatus::Active,
            }),
        )
    }

    async fn verify(
        &self,
        account: &ivrauth_core::identity::AccountNumber,
        secret: &ivrauth_core::Secret<String>,
    ) -> Result<ivrauth_core::identity::Verification, ivrauth_core::identity::IdentityError> {
        use ivrauth_core::identity::{RejectReason, Verification};
        use subtle::ConstantTimeEq;
        if secret.expose().is_empty() {
            return Ok(Verification::Rejected(RejectReason::EmptySecret));
        }
        Ok(match Self::find(account) {
            Some((_, pin, ..)) if bool::from(pin.as_bytes().ct_eq(secret.expose().as_bytes())) => {
                Verification::Verified
            }
            Some(_) => Verification::Rejected(RejectReason::WrongSecret),
            None => Verification::Rejected(RejectReason::UnknownAccount),
        })
    }

    async fn change_secret(
        &self,
        _account: &ivrauth_core::identity::AccountNumber,
        _new_secret: &ivrauth_core::Secret<String>,
    ) -> Result<(), ivrauth_core::identity::IdentityError> {
        Err(ivrauth_core::identity::IdentityError::Unsupported(
            "the demo directory is read-only",
        ))
    }

    async fn health(&self) -> Result<(), ivrauth_core::identity::IdentityError> {
        Ok(())
    }
}
