//! The turn-by-turn host of the engine for calls.
//!
//! A turn: open the call's sealed continuation (or start the flow on the first turn), feed
//! the caller's keys to the engine, perform what it asks (HTTP, identity actions, log
//! lines) until it asks for keys again or ends, then seal the new state for the next turn.
//!
//! Ordinary turns (prompts, menus, collects) write nothing durable: the state travels
//! sealed (AEAD) in the callback URL the platform calls next, so no instance holds per-call
//! memory between turns. A turn that performs an identity action is durable: the
//! counters and audit record are written by the identity service, and the session row
//! (next turn, sealed state, the answer given, failures) is written before the answer goes
//! out, so a replayed webhook gets the same answer without a second attempt, and a hang-up
//! can count a secret the caller was being asked for after a failure.
//!
//! Bounds: the engine's step budget is per turn (each turn waits for the caller), and a call
//! has at most [`CallsConfig::max_turns`] turns; the turn after the last ends the call as an
//! engine error does (`turn_limit_exceeded`: a hang-up, audited as `call.ended` with that
//! error), so no platform, replaying or not, can keep a call going for ever.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use ivrauth_core::audit::AuditEvent;
use ivrauth_core::clients::hash_credential;
use ivrauth_core::engine::{self, ActionFailure, Command, Event, RunContext, RunState, StepBudget};
use ivrauth_core::flow::Flow;
use ivrauth_core::ivr::{CallEnd, Input, Verb};
use ivrauth_core::ports::{CallRecord, StoreError};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::UnixMillis;
use ivrauth_proto::api::Outcome;

use super::seal::SessionKeys;
use super::{TransferAttributes, TurnAnswer};
use crate::identity::CallContext;
use crate::AppState;

/// Default idle expiry of a call session.
pub const DEFAULT_IDLE_SECS: i64 = 30 * 60;

/// Default bound on the turns of one call: well above a long two-factor call's 20 to 30.
pub const DEFAULT_MAX_TURNS: u32 = 200;

/// Which front-end a call came through; part of the call's key and of the seal's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Twilio,
    Jambonz,
    Vxml,
    Api,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Twilio => "twilio",
            Platform::Jambonz => "jambonz",
            Platform::Vxml => "vxml",
            Platform::Api => "api",
        }
    }
}

/// Settings of calls (sessions, platforms).
pub struct CallsConfig {
    /// Seals call state; the first key seals, all open (rotation).
    pub keys: SessionKeys,
    /// A session idle for longer is over.
    pub idle_secs: i64,
    /// Turns one call may take; the next one ends the call (`turn_limit_exceeded`).
    pub max_turns: u32,
    /// Twilio, jambonz, public URL.
    pub platforms: super::web::PlatformConfig,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            keys: SessionKeys::generate(),
            idle_secs: DEFAULT_IDLE_SECS,
            max_turns: DEFAULT_MAX_TURNS,
            platforms: Default::default(),
        }
    }
}

/// Why a turn could not be answered. Front-ends answer the platform with an apology and a
/// hang-up (or 403/404/409 where the platform expects a status).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no such flow")]
    UnknownFlow,
    /// The continuation did not open, or belongs to another call or turn.
    #[error("the session token is not valid for this call")]
    BadSession,
    #[error("the call session has expired")]
    Expired,
    /// A turn older than the last durable one, other than its exact replay.
    #[error("that turn was already answered")]
    StaleTurn,
    /// The decision API: the call has a session, and the request gave no `turn`.
    #[error("the call has a session; send the `turn` of the last answer")]
    TurnRequired,
    #[error("the flow is not ready for calls: {0}")]
    FlowNotCallable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    /// Internal to [`turn`]: a retried durable turn, answered from the store.
    #[error("replayed")]
    Replayed(Box<TurnResponse>),
}

/// One turn as a front-end parsed it.
pub struct TurnRequest {
    pub platform: Platform,
    pub flow_id: String,
    /// The platform's call id (VoiceXML: the id ivrauth minted).
    pub call_id: String,
    pub ani: String,
    pub dnis: String,
    /// The turn number from the URL (`None` on the first request of a call).
    pub turn: Option<u32>,
    /// The sealed continuation from the URL (`None` on the first request).
    pub token: Option<String>,
    /// The caller's answer (ignored on the first turn).
    pub input: Option<Input>,
    /// VoiceXML's per-call secret: minted for the first turn, from the URL for later ones
    /// (checked against the sealed digest).
    pub call_secret: Option<Secret<String>>,
}

/// What a front-end renders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnResponse {
    pub answer: TurnAnswer,
    /// The turn number the next request must carry.
    pub next_turn: u32,
    /// The sealed continuation for the next request (`None` once the call has ended).
    pub token: Option<String>,
    /// The call id (VoiceXML: minted on the first turn).
    pub call_id: String,
    /// VoiceXML: the per-call secret to carry in URLs (the request's own, checked). Never
    /// stored: a stored answer gets it back from the replayed request.
    #[serde(skip)]
    pub call_secret: Option<Secret<String>>,
}

/// What the host keeps about a call besides the engine's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HostState {
    failures: u32,
    /// The last verification succeeded.
    verified: bool,
    /// The account number of the last verification attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    /// That account number was keyed as a secret: it never leaves in attributes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    account_secure: bool,
    /// What the call's row says a hang-up would be charged against, as last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored_pending: Option<String>,
}

/// The sealed continuation: everything the next turn needs.
#[derive(Serialize, Deserialize)]
struct Continuation {
    flow_id: String,
    version: i64,
    call_id: String,
    /// The turn this continuation answers.
    turn: u32,
    /// When the session last moved (idle expiry).
    at: i64,
    started: i64,
    ani: String,
    dnis: String,
    /// VoiceXML: SHA-256 (hex) of the per-call secret. The secret itself is kept nowhere,
    /// not even sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_sha256: Option<String>,
    /// Continuations sealed by earlier versions carried the secret itself: read (and
    /// hashed) so that calls in progress across an upgrade go on, never written.
    #[serde(default, rename = "secret", skip_serializing)]
    legacy_secret: Option<String>,
    host: HostState,
    /// The engine's snapshot (JSON).
    engine: Box<serde_json::value::RawValue>,
}

fn aad(platform: Platform, flow_id: &str, call_id: &str) -> Vec<u8> {
    format!("ivrauth-call\0{}\0{flow_id}\0{call_id}", platform.as_str()).into_bytes()
}

/// The key of a call in the store.
/// `pending_secret_account` when the account number is a secret: it is in the row's
/// sealed state.
const SEALED_ACCOUNT: &str = "(sealed)";

/// The account of a pending secret, from the row (in the clear, or from its sealed state).
fn pending_account(state: &AppState, row: &CallRecord) -> Option<String> {
    let account = row.pending_secret_account.as_ref()?;
    if account != SEALED_ACCOUNT {
        return Some(account.clone());
    }
    let (platform, call_id) = row.call_id.split_once(':')?;
    let platform = match platform {
        "twilio" => Platform::Twilio,
        "jambonz" => Platform::Jambonz,
        "vxml" => Platform::Vxml,
        "api" => Platform::Api,
        _ => return None,
    };
    let token = std::str::from_utf8(&row.state).ok()?;
    open_continuation(state, platform, &row.flow_id, call_id, token)
        .ok()?
        .host
        .account
}

/// Open a sealed continuation of the call `call_id` of `flow_id` on `platform`.
fn open_continuation(
    state: &AppState,
    platform: Platform,
    flow_id: &str,
    call_id: &str,
    token: &str,
) -> Result<Continuation, CallError> {
    let plain = state
        .calls
        .keys
        .open(token, &aad(platform, flow_id, call_id))
        .map_err(|e| {
            tracing::warn!(error = %e, call = %call_id, "call session token refused");
            CallError::BadSession
        })?;
    let cont: Continuation = serde_json::from_slice(&plain).map_err(|_| CallError::BadSession)?;
    if cont.call_id != call_id || cont.flow_id != flow_id {
        return Err(CallError::BadSession);
    }
    Ok(cont)
}

/// The digest of VoiceXML's per-call secret that a continuation holds, if any.
fn sealed_secret_digest(cont: &Continuation) -> Option<String> {
    cont.secret_sha256
        .clone()
        .or_else(|| cont.legacy_secret.as_deref().map(hash_credential))
}

/// VoiceXML's per-call secret from the URL matches the sealed digest (other platforms
/// have none). Digests are compared in constant time.
fn secret_matches(cont: &Continuation, given: Option<&Secret<String>>) -> bool {
    match sealed_secret_digest(cont) {
        Some(expected) => {
            let given = hash_credential(given.map_or("", |s| s.expose().as_str()));
            constant_time_eq(expected.as_bytes(), given.as_bytes())
        }
        None => true,
    }
}

pub fn call_key(platform: Platform, call_id: &str) -> String {
    format!("{}:{call_id}", platform.as_str())
}

/// Answer one turn of a call.
pub async fn turn(state: &AppState, req: TurnRequest) -> Result<TurnResponse, CallError> {
    // A replayed answer was stored without the call's secret; the request's own was
    // checked before the replay was found.
    let secret = req.call_secret.clone();
    match turn_inner(state, req).await {
        Err(CallError::Replayed(mut r)) => {
            r.call_secret = secret;
            Ok(*r)
        }
        other => other,
    }
}

async fn turn_inner(state: &AppState, req: TurnRequest) -> Result<TurnResponse, CallError> {
    let calls = state.calls.clone();
    let now = state.clock.now();
    let key = call_key(req.platform, &req.call_id);
    // The decision API keeps its state in the store (it has no URL to carry it).
    let stored = if req.platform == Platform::Api {
        state.store.load_call(&key).await?
    } else {
        None
    };
    if req.platform == Platform::Api {
        match (&stored, req.turn) {
            (Some(row), Some(t)) if t < row.turn => return replay(row, t),
            // Without a turn number a retry could not be told from the next answer.
            (Some(_), None) => return Err(CallError::TurnRequired),
            // A later turn of a call whose session is gone (hung up, expired) does not
            // start the flow again.
            (None, Some(t)) if t > 1 => return Err(CallError::BadSession),
            _ => {}
        }
    }
    let token = match (&req.token, &stored) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(row)) => {
            Some(String::from_utf8(row.state.clone()).map_err(|_| CallError::BadSession)?)
        }
        (None, None) => None,
    };

    let Some(token) = token else {
        // The first turn: start the flow's current version.
        let stored_flow = state
            .store
            .get_flow(&req.flow_id, None)
            .await?
            .filter(|f| !f.deleted)
            .ok_or(CallError::UnknownFlow)?;
        let flow = state
            .flow_cache
            .get_or_compile(&stored_flow)
            .map_err(|e| CallError::Internal(e.to_string()))?;
        let mut ctx = RunContext::new(req.call_id.clone());
        ctx.flow_id = Some(req.flow_id.clone());
        ctx.contact = contact(&req);
        ctx.budget = StepBudget::PerTurn;
        let (run, cmd) = engine::start(&flow, &json!({}), ctx, now).map_err(|_| {
            CallError::FlowNotCallable(
                "the flow requires inputs; a call flow takes its data from the caller".to_owned(),
            )
        })?;
        let meta = Meta {
            version: stored_flow.version,
            started: now.0,
            ani: req.ani.clone(),
            dnis: req.dnis.clone(),
            secret_sha256: req
                .call_secret
                .as_ref()
                .map(|s| hash_credential(s.expose())),
        };
        let driven = drive(state, &flow, &req, run, cmd, HostState::default(), 1, &meta).await?;
        return finish_turn(state, &req, &meta, driven, &calls.keys, now).await;
    };

    let cont = open_continuation(state, req.platform, &req.flow_id, &req.call_id, &token)?;
    if req.turn.is_some_and(|t| t != cont.turn) || !secret_matches(&cont, req.call_secret.as_ref())
    {
        return Err(CallError::BadSession);
    }
    if now.0.saturating_sub(cont.at) > calls.idle_secs.saturating_mul(1000) {
        return Err(CallError::Expired);
    }
    // Versions are immutable: a compiled one in the cache needs no store read.
    let flow = match state.flow_cache.get(&cont.flow_id, cont.version) {
        Some(flow) => flow,
        None => {
            let stored_flow = state
                .store
                .get_flow(&cont.flow_id, Some(cont.version))
                .await?
                .ok_or(CallError::UnknownFlow)?;
            state
                .flow_cache
                .get_or_compile(&stored_flow)
                .map_err(|e| CallError::Internal(e.to_string()))?
        }
    };
    let run = RunState::restore(&flow, cont.engine.get().as_bytes())
        .map_err(|_| CallError::BadSession)?;
    let meta = Meta {
        secret_sha256: sealed_secret_digest(&cont),
        version: cont.version,
        started: cont.started,
        ani: cont.ani,
        dnis: cont.dnis,
    };
    let (run, cmd) = if cont.turn > calls.max_turns {
        let mut run = run;
        let message = format!(
            "the call took the {} turns [calls] max_turns allows",
            calls.max_turns
        );
        let outcome = run.abort("turn_limit_exceeded", message, now);
        (run, Command::Finish(outcome))
    } else {
        let input = req.input.clone().unwrap_or(Input::NoInput);
        engine::step(&flow, run, Event::Input(input), now)
    };
    let driven = drive(state, &flow, &req, run, cmd, cont.host, cont.turn, &meta).await?;
    finish_turn(state, &req, &meta, driven, &calls.keys, now).await
}

/// Check that a request carries a valid session of its call (VoiceXML's hang-up, which
/// has no other authentication).
pub fn authentic(state: &AppState, req: &TurnRequest) -> Result<(), CallError> {
    let token = req.token.as_deref().ok_or(CallError::BadSession)?;
    let cont = open_continuation(state, req.platform, &req.flow_id, &req.call_id, token)?;
    if secret_matches(&cont, req.call_secret.as_ref()) {
        Ok(())
    } else {
        Err(CallError::BadSession)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The platform retried turn `t`, already answered: the same answer again, if it is the
/// last one; otherwise the request is stale.
fn replay(row: &CallRecord, t: u32) -> Result<TurnResponse, CallError> {
    if t + 1 == row.turn {
        if let Some(answer) = &row.last_answer {
            let mut r: TurnResponse =
                serde_json::from_str(answer).map_err(|e| CallError::Internal(e.to_string()))?;
            // The answer is stored without its continuation, which is the row's state (the
            // decision API carries none).
            let api = row.call_id.starts_with("api:");
            if !api && matches!(r.answer, TurnAnswer::Ask { .. }) && !row.state.is_empty() {
                r.token = Some(
                    String::from_utf8(row.state.clone())
                        .map_err(|e| CallError::Internal(e.to_string()))?,
                );
            }
            return Ok(r);
        }
    }
    Err(CallError::StaleTurn)
}

struct Meta {
    version: i64,
    started: i64,
    ani: String,
    dnis: String,
    secret_sha256: Option<String>,
}

/// What [`drive`] produced.
struct Driven {
    answer: TurnAnswer,
    /// The turn that was answered.
    turn: u32,
    /// The engine's snapshot, if the call goes on.
    engine: Option<Vec<u8>>,
    host: HostState,
    /// The account a secret is being asked for after a failure (a hang-up counts).
    pending_secret: Option<String>,
    /// Whether this turn must be written durably before the answer goes out.
    durable: bool,
    ended: Option<Outcome>,
}

fn contact(req: &TurnRequest) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("ani".into(), json!(req.ani));
    c.insert("dnis".into(), json!(req.dnis));
    c.insert("callId".into(), json!(req.call_id));
    c.insert("platform".into(), json!(req.platform.as_str()));
    c
}

/// Perform the engine's commands until it asks for keys or ends. `turn` is the turn being
/// answered.
#[allow(clippy::too_many_arguments)]
async fn drive(
    state: &AppState,
    flow: &Flow,
    req: &TurnRequest,
    mut run: RunState,
    mut cmd: Command,
    mut host: HostState,
    turn: u32,
    meta: &Meta,
) -> Result<Driven, CallError> {
    let key = call_key(req.platform, &req.call_id);
    let mut durable = req.platform == Platform::Api;
    let mut claimed = false;
    let mut verbs: Vec<Verb> = Vec::new();
    loop {
        let event = match cmd {
            Command::Prompt(prompt) => {
                verbs.extend(run.take_verbs());
                // A hang-up now would abandon a secret asked for after a failed attempt.
                let pending_secret = if prompt.secure && host.failures > 0 && !host.verified {
                    // An account number keyed as a secret is not written in plain text: a
                    // hang-up finds it in the row's sealed state.
                    if host.account_secure {
                        Some(SEALED_ACCOUNT.to_owned())
                    } else {
                        host.account.clone()
                    }
                } else {
                    None
                };
                // The row must say so before the answer goes out (and stop saying so).
                durable |= pending_secret != host.stored_pending;
                return Ok(Driven {
                    answer: TurnAnswer::Ask { verbs, prompt },
                    turn,
                    engine: Some(run.snapshot()),
                    host,
                    pending_secret,
                    durable,
                    ended: None,
                });
            }
            Command::Finish(outcome) => {
                if !claimed {
                    claim(state, &key, req, turn, meta, &mut host).await?;
                }
                verbs.extend(run.take_verbs());
                let end = call_end(&outcome);
                let attributes = attributes(state, &host, &end, &req.call_id);
                return Ok(Driven {
                    answer: TurnAnswer::End {
                        verbs,
                        end,
                        attributes,
                    },
                    turn,
                    engine: None,
                    host,
                    pending_secret: None,
                    durable: true,
                    ended: Some(outcome),
                });
            }
            Command::Http(request) => Event::HttpCompleted(state.http.execute(&request).await),
            Command::Log(line) => {
                tracing::info!(target: "ivrauth::flow_log", call = %key, node = %line.node_id, level = %line.level, "{}", line.message);
                Event::LogWritten
            }
            Command::Action(call) => {
                // A side effect: claim this turn first (so that neither a retry nor a
                // concurrent copy performs it again), and take the call's failure count
                // from the store (the continuation may be older).
                if !claimed {
                    claim(state, &key, req, turn, meta, &mut host).await?;
                    claimed = true;
                    durable = true;
                }
                let account = call.text("account").map(|s| s.expose().clone());
                let account_secure = call.secrets.iter().any(|(n, _)| *n == "account");
                let is_verify = call.action == "identity.verify";
                match &state.identity {
                    Some(service) => {
                        let ctx = CallContext {
                            call_id: key.clone(),
                            ani: meta.ani.clone(),
                            failures: host.failures,
                        };
                        let (result, failures) = service.perform(call, ctx).await;
                        host.failures = failures;
                        if is_verify {
                            host.account = account;
                            host.account_secure = account_secure;
                            host.verified = matches!(&result, Ok(out) if out.get("verified") == Some(&Value::Bool(true)));
                        }
                        Event::ActionCompleted(result)
                    }
                    None => Event::ActionCompleted(Err(ActionFailure {
                        code: "unavailable".to_owned(),
                        message: format!(
                            "action `{}` is not configured on this server",
                            call.action
                        ),
                    })),
                }
            }
        };
        // Pure nodes never wait: let other tasks run.
        tokio::task::coop::consume_budget().await;
        (run, cmd) = engine::step(flow, run, event, state.clock.now());
    }
}

/// Claim turn `turn` of the call `key` before a side effect: refuse an ended call, answer
/// a turn already answered from the store, and move the row to the next turn so that a
/// concurrent copy of this turn cannot perform the side effect too.
async fn claim(
    state: &AppState,
    key: &str,
    req: &TurnRequest,
    turn: u32,
    meta: &Meta,
    host: &mut HostState,
) -> Result<(), CallError> {
    let row = state.store.load_call(key).await?;
    if let Some(row) = &row {
        if row.ended {
            return Err(CallError::BadSession);
        }
        if row.turn > turn {
            return Err(match replay(row, turn) {
                Ok(r) => CallError::Replayed(Box::new(r)),
                Err(e) => e,
            });
        }
        host.failures = host.failures.max(row.failures);
    }
    let now = state.clock.now();
    let record = CallRecord {
        call_id: key.to_owned(),
        flow_id: req.flow_id.clone(),
        flow_version: meta.version,
        turn: turn + 1,
        state: row.as_ref().map(|r| r.state.clone()).unwrap_or_default(),
        last_answer: None,
        failures: host.failures,
        pending_secret_account: row.as_ref().and_then(|r| r.pending_secret_account.clone()),
        ani: meta.ani.clone(),
        created_at: UnixMillis(meta.started),
        updated_at: now,
        expires_at: now.plus_secs(state.calls.idle_secs),
        ended: false,
    };
    match state.store.claim_call(&record).await {
        Ok(()) => Ok(()),
        // Another copy of this turn got there first (or the call just ended).
        Err(StoreError::Conflict) => Err(CallError::StaleTurn),
        Err(e) => Err(e.into()),
    }
}

fn call_end(outcome: &Outcome) -> CallEnd {
    let node = outcome.end_node.clone().unwrap_or_default();
    if let Some(t) = &outcome.transfer {
        return CallEnd::Transfer {
            node_id: node,
            queue: t.queue.clone(),
            target: t.target.clone(),
            reason: t.reason.clone(),
        };
    }
    if outcome.hangup || outcome.error.is_some() {
        return CallEnd::Hangup { node_id: node };
    }
    CallEnd::End {
        end_node: node,
        status_code: outcome.status_code,
    }
}

fn attributes(
    state: &AppState,
    host: &HostState,
    end: &CallEnd,
    call_id: &str,
) -> TransferAttributes {
    let limit = state
        .identity
        .as_ref()
        .map_or(u32::MAX, |s| s.policy.per_call_failures);
    let failure_reason = if host.verified {
        None
    } else if host.failures == 0 {
        Some("not_attempted".to_owned())
    } else if host.failures >= limit {
        Some("max_attempts".to_owned())
    } else {
        Some("failed".to_owned())
    };
    TransferAttributes {
        verified: host.verified,
        factors: if host.verified {
            vec!["pin".to_owned()]
        } else {
            Vec::new()
        },
        failure_reason,
        account: if host.account_secure {
            None
        } else {
            host.account.clone()
        },
        reason: match end {
            CallEnd::Transfer { reason, .. } => reason.clone(),
            _ => None,
        },
        call_id: call_id.to_owned(),
    }
}

/// Seal the state for the next turn and, for a durable turn, write the session before
/// the answer goes out.
async fn finish_turn(
    state: &AppState,
    req: &TurnRequest,
    meta: &Meta,
    mut driven: Driven,
    keys: &SessionKeys,
    now: UnixMillis,
) -> Result<TurnResponse, CallError> {
    let next_turn = driven.turn + 1;
    if driven.durable {
        driven.host.stored_pending = driven.pending_secret.clone();
    }
    let token = match driven.engine.take() {
        None => None,
        Some(engine) => {
            let raw = serde_json::value::RawValue::from_string(
                String::from_utf8(engine).map_err(|e| CallError::Internal(e.to_string()))?,
            )
            .map_err(|e| CallError::Internal(e.to_string()))?;
            let cont = Continuation {
                flow_id: req.flow_id.clone(),
                version: meta.version,
                call_id: req.call_id.clone(),
                turn: next_turn,
                at: now.0,
                started: meta.started,
                ani: meta.ani.clone(),
                dnis: meta.dnis.clone(),
                secret_sha256: meta.secret_sha256.clone(),
                legacy_secret: None,
                host: driven.host.clone(),
                engine: raw,
            };
            let plain =
                serde_json::to_vec(&cont).map_err(|e| CallError::Internal(e.to_string()))?;
            Some(
                keys.seal(&plain, &aad(req.platform, &req.flow_id, &req.call_id))
                    .map_err(|e| CallError::Internal(format!("cannot seal the call state: {e}")))?,
            )
        }
    };
    let response = TurnResponse {
        answer: driven.answer,
        next_turn,
        token: if req.platform == Platform::Api {
            None
        } else {
            token.clone()
        },
        call_id: req.call_id.clone(),
        call_secret: req.call_secret.clone(),
    };
    if driven.durable {
        let key = call_key(req.platform, &req.call_id);
        let record = CallRecord {
            call_id: key.clone(),
            flow_id: req.flow_id.clone(),
            flow_version: meta.version,
            turn: next_turn,
            state: token.unwrap_or_default().into_bytes(),
            // Without the continuation: it is the row's `state` already.
            last_answer: Some(
                serde_json::to_string(&TurnResponse {
                    token: None,
                    ..response.clone()
                })
                .map_err(|e| CallError::Internal(e.to_string()))?,
            ),
            failures: driven.host.failures,
            pending_secret_account: driven.pending_secret.clone(),
            ani: meta.ani.clone(),
            created_at: UnixMillis(meta.started),
            updated_at: now,
            expires_at: now.plus_secs(state.calls.idle_secs),
            ended: false,
        };
        match state.store.save_call(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(CallError::StaleTurn),
            Err(e) => return Err(e.into()),
        }
        if let Some(outcome) = &driven.ended {
            let event = AuditEvent {
                id: uuid::Uuid::new_v4().to_string(),
                event: "call.ended".to_owned(),
                outcome: if outcome.error.is_some() {
                    "failure"
                } else {
                    "success"
                }
                .to_owned(),
                actor: format!("platform:{}", req.platform.as_str()),
                subject: req.flow_id.clone(),
                trace_id: Some(key),
                detail: json!({
                    "end": call_end(outcome),
                    "error": outcome.error.as_ref().map(|e| e.code.clone()),
                    "verified": driven.host.verified,
                    "failures": driven.host.failures,
                    "turns": driven.turn,
                }),
            };
            state.store.append_audit(&event, now).await?;
        }
    }
    Ok(response)
}

/// The platform says the call is over. Marks the session ended (a tombstone until it
/// expires, so no old continuation can act for the call again); a caller who hung up while
/// being asked for a secret after a failed attempt is charged that attempt, once.
pub async fn hangup(
    state: &AppState,
    platform: Platform,
    call_id: &str,
) -> Result<bool, CallError> {
    let key = call_key(platform, call_id);
    let Some(row) = state.store.end_call(&key, state.clock.now()).await? else {
        return Ok(false);
    };
    charge_abandoned(state, &row, "hangup").await?;
    Ok(true)
}

/// End sessions idle past their expiry (run periodically by `serve`).
pub async fn expire(state: &AppState, limit: u32) -> Result<usize, CallError> {
    let rows = state
        .store
        .take_expired_calls(state.clock.now(), limit)
        .await?;
    // The rows are already gone: charge every one even if one fails (each failure is logged).
    for row in rows.iter().filter(|r| !r.ended) {
        if let Err(e) = charge_abandoned(state, row, "expired").await {
            tracing::error!(error = %e, call = %row.call_id, "cannot close an expired call session");
        }
    }
    Ok(rows.len())
}

async fn charge_abandoned(state: &AppState, row: &CallRecord, how: &str) -> Result<(), CallError> {
    let now = state.clock.now();
    let pending = pending_account(state, row);
    if row.pending_secret_account.is_some() && pending.is_none() {
        tracing::error!(call = %row.call_id, "cannot read the account of an abandoned secret (session keys changed?)");
    }
    if let (Some(account), Some(service)) = (&pending, &state.identity) {
        let ctx = CallContext {
            call_id: row.call_id.clone(),
            ani: row.ani.clone(),
            failures: row.failures,
        };
        service.abandoned(account, &ctx).await?;
    }
    let event = AuditEvent {
        id: uuid::Uuid::new_v4().to_string(),
        event: "call.closed".to_owned(),
        outcome: "success".to_owned(),
        actor: "platform".to_owned(),
        subject: row.flow_id.clone(),
        trace_id: Some(row.call_id.clone()),
        detail: json!({"how": how, "chargedFailure": row.pending_secret_account.is_some()}),
    };
    state.store.append_audit(&event, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn continuation(secret_fields: &str) -> Continuation {
        serde_json::from_str(&format!(
            r#"{{"flow_id":"f","version":1,"call_id":"c","turn":2,"at":0,"started":0,"ani":"","dnis":"",{secret_fields}"host":{{"failures":0,"verified":false}},"engine":{{}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_continuation_keeps_only_the_digest_of_the_call_secret() {
        let given = |s: &str| Secret::new(s.to_owned());
        // Sealed by an earlier version, with the secret itself: still opens the call.
        let legacy = continuation(r#""secret":"s3cret-canary","#);
        assert!(secret_matches(&legacy, Some(&given("s3cret-canary"))));
        assert!(!secret_matches(&legacy, Some(&given("s3cret-canarx"))));
        assert!(!secret_matches(&legacy, None));
        // Sealed again, it holds the digest only.
        let resealed = Continuation {
            secret_sha256: sealed_secret_digest(&legacy),
            legacy_secret: None,
            ..legacy
        };
        let text = serde_json::to_string(&resealed).unwrap();
        assert!(!text.contains("s3cret-canary"), "{text}");
        assert!(text.contains(&hash_credential("s3cret-canary")), "{text}");
        let reopened: Continuation = serde_json::from_str(&text).unwrap();
        assert!(secret_matches(&reopened, Some(&given("s3cret-canary"))));
        assert!(!secret_matches(&reopened, Some(&given(""))));
        // Other platforms carry none, and need none.
        assert!(secret_matches(&continuation(""), None));
    }
}
