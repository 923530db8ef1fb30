//! Call turns: the turn-by-turn host of the engine for telephony platforms.
//!
//! A turn: admit it ([`ivrauth_core::call::admit`]), open the call's sealed continuation
//! (or start the flow on the first turn), feed the caller's keys to the engine, perform
//! what it asks through the engine host ([`super::host`]) until it asks for keys again or
//! ends, then seal the new state for the next turn.
//!
//! Ordinary turns (prompts, menus, collects) write nothing durable: the state travels
//! sealed (AEAD) in the callback URL the platform calls next, so no instance holds per-call
//! memory between turns. A turn that performs an identity action is durable: the
//! counters and audit record are written by the identity service, and the session row
//! (next turn, sealed state, the answer given, failures) is written before the answer goes
//! out, so a replayed webhook gets the same answer without a second attempt, and a hang-up
//! can count a secret the caller was being asked for after a failure. What is admitted,
//! what is durable, what a hang-up is charged and what travels with a transfer are pure
//! decisions of [`ivrauth_core::call`]; this module does their I/O.
//!
//! Bounds: the engine's step budget is per turn (each turn waits for the caller), and a call
//! has at most `[calls] max_turns` turns; the turn after the last ends the call as an
//! engine error does (`turn_limit_exceeded`: a hang-up, audited as `call.ended` with that
//! error), so no platform, replaying or not, can keep a call going for ever.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use ivrauth_core::audit::{EventName, Outcome as AuditOutcome};
use ivrauth_core::call::{
    self, Admission, CallKey, CallProgress, Carrier, HangupCharge, Refusal, StoredTurn, TurnAnswer,
    TurnEffects,
};
use ivrauth_core::clients::hash_credential;
use ivrauth_core::engine::{self, Command, Event, RunContext, RunState, StepBudget};
use ivrauth_core::flow::Flow;
use ivrauth_core::ivr::{Input, Verb};
use ivrauth_core::ports::{CallRecord, StoreError};
use ivrauth_core::secret::Secret;
use ivrauth_core::time::UnixMillis;
use ivrauth_proto::api::Outcome;

pub use ivrauth_core::call::Platform;

use super::audit::audit_event;
use super::host::{EngineHost, Performed};
use super::identity::CallContext;
use super::seal::SessionKeys;
use crate::AppState;

/// Default idle expiry of a call session.
pub const DEFAULT_IDLE_SECS: i64 = 30 * 60;

/// Default bound on the turns of one call: well above a long two-factor call's 20 to 30.
pub const DEFAULT_MAX_TURNS: u32 = 200;

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
}

impl CallError {
    /// The refusal reason of a turn that is refused rather than failed (for the audit's
    /// count of refusals).
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            CallError::BadSession => Some("bad_session"),
            CallError::Expired => Some("expired"),
            CallError::StaleTurn => Some("stale_turn"),
            CallError::TurnRequired => Some("turn_required"),
            _ => None,
        }
    }
}

impl From<Refusal> for CallError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::BadSession => CallError::BadSession,
            Refusal::TurnRequired => CallError::TurnRequired,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> CallError {
    CallError::Internal(e.to_string())
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

impl TurnRequest {
    fn key(&self) -> CallKey {
        CallKey::new(self.platform, self.call_id.clone())
    }
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

/// The sealed continuation: everything the next turn needs. The flow and the call it
/// belongs to are not in it: the seal's associated data binds them ([`aad`]).
///
/// Its plaintext is told apart by the first byte: [`COMPACT`] (written) is that byte, the
/// fixed fields in postcard ([`CompactHead`]), then the engine's snapshot to the end; a
/// JSON object (`{`, [`JsonContinuation`]) was sealed by earlier versions and is still
/// read, so calls in progress go on across an upgrade. Anything else does not open.
/// No `Debug` outside tests: the snapshot holds what the caller keyed.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Continuation {
    version: i64,
    /// The turn this continuation answers.
    turn: u32,
    /// When the session last moved (idle expiry).
    at: i64,
    started: i64,
    ani: String,
    dnis: String,
    /// VoiceXML: SHA-256 (hex) of the per-call secret. The secret itself is kept nowhere,
    /// not even sealed.
    secret_sha256: Option<String>,
    host: CallProgress,
    /// The engine's snapshot.
    engine: Vec<u8>,
}

/// The first byte of a compact continuation (a JSON one begins with `{`).
const COMPACT: u8 = 2;

/// The fixed fields of a compact continuation, in this order (postcard: varints and
/// length-prefixed strings, no field names). `S` is `&str` to write, `String` to read.
#[derive(Serialize, Deserialize)]
struct CompactHead<S> {
    version: i64,
    turn: u32,
    at: i64,
    started: i64,
    ani: S,
    dnis: S,
    secret_sha256: Option<S>,
    failures: u32,
    verified: bool,
    account: Option<S>,
    account_secure: bool,
    stored_pending: Option<S>,
}

/// A continuation as earlier versions sealed it (JSON). Read, never written.
#[derive(Deserialize)]
struct JsonContinuation {
    flow_id: String,
    version: i64,
    call_id: String,
    turn: u32,
    at: i64,
    started: i64,
    ani: String,
    dnis: String,
    #[serde(default)]
    secret_sha256: Option<String>,
    /// The oldest continuations carried VoiceXML's secret itself: read (and hashed) so
    /// that calls in progress across an upgrade go on.
    #[serde(default, rename = "secret")]
    legacy_secret: Option<String>,
    host: CallProgress,
    engine: Box<serde_json::value::RawValue>,
}

impl Continuation {
    /// The compact plaintext.
    fn encode(&self) -> Result<Vec<u8>, CallError> {
        // Destructured so that a field added to `CallProgress` cannot be forgotten here.
        let CallProgress {
            failures,
            verified,
            account,
            account_secure,
            stored_pending,
        } = &self.host;
        let head = CompactHead {
            version: self.version,
            turn: self.turn,
            at: self.at,
            started: self.started,
            ani: self.ani.as_str(),
            dnis: self.dnis.as_str(),
            secret_sha256: self.secret_sha256.as_deref(),
            failures: *failures,
            verified: *verified,
            account: account.as_deref(),
            account_secure: *account_secure,
            stored_pending: stored_pending.as_deref(),
        };
        let mut out = Vec::with_capacity(64 + self.ani.len() + self.dnis.len() + self.engine.len());
        out.push(COMPACT);
        let mut out = postcard::to_extend(&head, out).map_err(internal)?;
        out.extend_from_slice(&self.engine);
        Ok(out)
    }

    /// A continuation of the call `key` of `flow_id` from its plaintext, either format.
    fn decode(plain: &[u8], key: &CallKey, flow_id: &str) -> Option<Continuation> {
        match plain.first()? {
            &COMPACT => {
                let (head, engine) =
                    postcard::take_from_bytes::<CompactHead<String>>(plain.get(1..)?).ok()?;
                Some(Continuation {
                    version: head.version,
                    turn: head.turn,
                    at: head.at,
                    started: head.started,
                    ani: head.ani,
                    dnis: head.dnis,
                    secret_sha256: head.secret_sha256,
                    host: CallProgress {
                        failures: head.failures,
                        verified: head.verified,
                        account: head.account,
                        account_secure: head.account_secure,
                        stored_pending: head.stored_pending,
                    },
                    engine: engine.to_vec(),
                })
            }
            b'{' => {
                let json: JsonContinuation = serde_json::from_slice(plain).ok()?;
                if json.call_id != key.call_id || json.flow_id != flow_id {
                    return None;
                }
                Some(Continuation {
                    version: json.version,
                    turn: json.turn,
                    at: json.at,
                    started: json.started,
                    ani: json.ani,
                    dnis: json.dnis,
                    secret_sha256: json
                        .secret_sha256
                        .or_else(|| json.legacy_secret.as_deref().map(hash_credential)),
                    host: json.host,
                    engine: json.engine.get().as_bytes().to_vec(),
                })
            }
            _ => None,
        }
    }
}

fn aad(key: &CallKey, flow_id: &str) -> Vec<u8> {
    format!(
        "ivrauth-call\0{}\0{flow_id}\0{}",
        key.platform.as_str(),
        key.call_id
    )
    .into_bytes()
}

/// The account of a pending secret, from the row (in the clear, or from its sealed state).
fn pending_account(state: &AppState, row: &CallRecord) -> Option<String> {
    match HangupCharge::from_row(row.pending_secret_account.as_ref()?) {
        HangupCharge::Account(account) => Some(account),
        HangupCharge::Sealed => {
            let key: CallKey = row.call_id.parse().ok()?;
            let token = std::str::from_utf8(&row.state).ok()?;
            open_continuation(state, &key, &row.flow_id, token)
                .ok()?
                .host
                .account
        }
    }
}

/// Open a sealed continuation of the call `key` of `flow_id`.
fn open_continuation(
    state: &AppState,
    key: &CallKey,
    flow_id: &str,
    token: &str,
) -> Result<Continuation, CallError> {
    open_sealed(&state.calls.keys, key, flow_id, token)
}

fn open_sealed(
    keys: &SessionKeys,
    key: &CallKey,
    flow_id: &str,
    token: &str,
) -> Result<Continuation, CallError> {
    let plain = keys.open(token, &aad(key, flow_id)).map_err(|e| {
        tracing::warn!(error = %e, call = %key.call_id, "call session token refused");
        CallError::BadSession
    })?;
    Continuation::decode(&plain, key, flow_id).ok_or(CallError::BadSession)
}

fn seal_continuation(
    keys: &SessionKeys,
    key: &CallKey,
    flow_id: &str,
    cont: &Continuation,
) -> Result<String, CallError> {
    keys.seal(&cont.encode()?, &aad(key, flow_id))
        .map_err(|e| CallError::Internal(format!("cannot seal the call state: {e}")))
}

/// VoiceXML's per-call secret from the URL matches the sealed digest (other platforms
/// have none). Digests are compared in constant time.
fn secret_matches(cont: &Continuation, given: Option<&Secret<String>>) -> bool {
    match &cont.secret_sha256 {
        Some(expected) => {
            let given = hash_credential(given.map_or("", |s| s.expose().as_str()));
            constant_time_eq(expected.as_bytes(), given.as_bytes())
        }
        None => true,
    }
}

fn stored_turn(row: &CallRecord) -> StoredTurn<'_> {
    StoredTurn {
        turn: row.turn,
        ended: row.ended,
        last_answer: row.last_answer.as_deref(),
    }
}

/// Answer one turn of a call.
pub async fn turn(state: &AppState, req: TurnRequest) -> Result<TurnResponse, CallError> {
    let now = state.clock.now();
    let key = req.key();
    let carrier = req.platform.carrier();
    // A row-carried call keeps its state in the store; URL-carried turns read nothing.
    let stored = match carrier {
        Carrier::Row => state.store.load_call(&key.to_string()).await?,
        Carrier::Url => None,
    };
    let admission = call::admit(
        carrier,
        stored.as_ref().map(stored_turn),
        req.turn,
        req.token.is_some(),
    )?;
    let token = match admission {
        Admission::Replay(answer) => {
            let state = stored.as_ref().map_or(&[][..], |r| r.state.as_slice());
            return replayed(&req, state, &answer);
        }
        Admission::Stale => return Err(CallError::StaleTurn),
        Admission::Start => None,
        Admission::Continue => match (&req.token, &stored) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(row)) => {
                Some(String::from_utf8(row.state.clone()).map_err(|_| CallError::BadSession)?)
            }
            (None, None) => None,
        },
    };
    let Some(token) = token else {
        return first_turn(state, &req, now).await;
    };

    let cont = open_continuation(state, &key, &req.flow_id, &token)?;
    if req.turn.is_some_and(|t| t != cont.turn) || !secret_matches(&cont, req.call_secret.as_ref())
    {
        return Err(CallError::BadSession);
    }
    if now.0.saturating_sub(cont.at) > state.calls.idle_secs.saturating_mul(1000) {
        return Err(CallError::Expired);
    }
    // Versions are immutable: a compiled one in the cache needs no store read.
    let flow = match state.flow_cache.get(&req.flow_id, cont.version) {
        Some(flow) => flow,
        None => {
            let stored_flow = state
                .store
                .get_flow(&req.flow_id, Some(cont.version))
                .await?
                .ok_or(CallError::UnknownFlow)?;
            state
                .flow_cache
                .get_or_compile(&stored_flow)
                .map_err(internal)?
        }
    };
    let run = RunState::restore(&flow, &cont.engine).map_err(|_| CallError::BadSession)?;
    let meta = Meta {
        secret_sha256: cont.secret_sha256,
        version: cont.version,
        started: cont.started,
        ani: cont.ani,
        dnis: cont.dnis,
    };
    let max_turns = state.calls.max_turns;
    let (run, cmd) = if cont.turn > max_turns {
        let mut run = run;
        let message = format!("the call took the {max_turns} turns [calls] max_turns allows");
        let outcome = run.abort("turn_limit_exceeded", message, now);
        (run, Command::Finish(outcome))
    } else {
        let input = req.input.clone().unwrap_or(Input::NoInput);
        engine::step(&flow, run, Event::Input(input), now)
    };
    match drive(state, &flow, &req, run, cmd, cont.host, cont.turn, &meta).await? {
        Drove::Answered(driven) => finish_turn(state, &req, &meta, *driven, now).await,
        Drove::Replayed { answer, state } => replayed(&req, &state, &answer),
    }
}

/// The first turn: start the flow's current version.
async fn first_turn(
    state: &AppState,
    req: &TurnRequest,
    now: UnixMillis,
) -> Result<TurnResponse, CallError> {
    let stored_flow = state
        .store
        .get_flow(&req.flow_id, None)
        .await?
        .filter(|f| !f.deleted)
        .ok_or(CallError::UnknownFlow)?;
    let flow = state
        .flow_cache
        .get_or_compile(&stored_flow)
        .map_err(internal)?;
    let mut ctx = RunContext::new(req.call_id.clone());
    ctx.flow_id = Some(req.flow_id.clone());
    ctx.contact = contact(req);
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
    match drive(
        state,
        &flow,
        req,
        run,
        cmd,
        CallProgress::default(),
        1,
        &meta,
    )
    .await?
    {
        Drove::Answered(driven) => finish_turn(state, req, &meta, *driven, now).await,
        Drove::Replayed { answer, state } => replayed(req, &state, &answer),
    }
}

/// Check that a request carries a valid session of its call (VoiceXML's hang-up, which
/// has no other authentication).
pub fn authentic(state: &AppState, req: &TurnRequest) -> Result<(), CallError> {
    let token = req.token.as_deref().ok_or(CallError::BadSession)?;
    let cont = open_continuation(state, &req.key(), &req.flow_id, token)?;
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

/// A retried durable turn, answered from the store. The answer was stored without its
/// continuation, which is the row's state (a row-carried call hands none out), and without
/// the call's secret, which the request carried (and which was checked).
fn replayed(req: &TurnRequest, row_state: &[u8], answer: &str) -> Result<TurnResponse, CallError> {
    let mut r: TurnResponse = serde_json::from_str(answer).map_err(internal)?;
    let url_carried = req.platform.carrier() == Carrier::Url;
    if url_carried && matches!(r.answer, TurnAnswer::Ask { .. }) && !row_state.is_empty() {
        r.token = Some(String::from_utf8(row_state.to_vec()).map_err(internal)?);
    }
    r.call_secret = req.call_secret.clone();
    Ok(r)
}

struct Meta {
    version: i64,
    started: i64,
    ani: String,
    dnis: String,
    secret_sha256: Option<String>,
}

/// What [`drive`] produced: an answer, or the stored answer of a turn another copy of
/// this request already answered.
enum Drove {
    Answered(Box<Driven>),
    /// The stored answer, and the row's state (its continuation).
    Replayed {
        answer: String,
        state: Vec<u8>,
    },
}

/// An answered turn.
struct Driven {
    answer: TurnAnswer,
    /// The turn that was answered.
    turn: u32,
    /// The engine's snapshot, if the call goes on.
    engine: Option<Vec<u8>>,
    host: CallProgress,
    /// What a hang-up now would be charged.
    charge: Option<HangupCharge>,
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
    mut progress: CallProgress,
    turn: u32,
    meta: &Meta,
) -> Result<Drove, CallError> {
    let key = req.key();
    let carrier = req.platform.carrier();
    let mut host = EngineHost::call(state, key.to_string(), meta.ani.clone(), progress.failures);
    let mut claimed = false;
    let mut verbs: Vec<Verb> = Vec::new();
    loop {
        // A side effect: claim this turn first (so that neither a retry nor a concurrent
        // copy performs it again), and take the call's failure count from the store (the
        // continuation may be older).
        let verification = match &cmd {
            Command::Action(action) => {
                if !claimed {
                    if let Some(replay) = claim(state, &key, req, turn, meta, &mut progress).await?
                    {
                        return Ok(replay);
                    }
                    claimed = true;
                    host.failures = progress.failures;
                }
                (action.action == "identity.verify").then(|| {
                    (
                        action.text("account").map(|s| s.expose().clone()),
                        action.secrets.iter().any(|(n, _)| *n == "account"),
                    )
                })
            }
            _ => None,
        };
        let event = match host.perform(cmd).await {
            Performed::Done(event) => event,
            Performed::Prompt(prompt) => {
                verbs.extend(run.take_verbs());
                let charge = call::hangup_charge(&progress, &prompt);
                let effects = TurnEffects {
                    performed_action: claimed,
                    ended: false,
                    charge_changed: call::charge_changed(charge.as_ref(), &progress),
                };
                return Ok(Drove::Answered(Box::new(Driven {
                    answer: TurnAnswer::Ask { verbs, prompt },
                    turn,
                    engine: Some(run.snapshot()),
                    host: progress,
                    charge,
                    durable: call::durable(carrier, effects),
                    ended: None,
                })));
            }
            Performed::Finish(outcome) => {
                if !claimed {
                    if let Some(replay) = claim(state, &key, req, turn, meta, &mut progress).await?
                    {
                        return Ok(replay);
                    }
                }
                verbs.extend(run.take_verbs());
                let end = call::call_end(&outcome);
                let limit = state.identity.as_ref().map(|s| s.policy.per_call_failures);
                let attributes = call::transfer_attributes(&progress, limit, &end, &req.call_id);
                return Ok(Drove::Answered(Box::new(Driven {
                    answer: TurnAnswer::End {
                        verbs,
                        end,
                        attributes,
                    },
                    turn,
                    engine: None,
                    host: progress,
                    charge: None,
                    durable: true,
                    ended: Some(outcome),
                })));
            }
        };
        progress.failures = host.failures;
        if let (Some((account, account_secure)), Event::ActionCompleted(result)) =
            (verification, &event)
        {
            let verified =
                matches!(result, Ok(out) if out.get("verified") == Some(&Value::Bool(true)));
            progress.verification(account, account_secure, verified);
        }
        // Pure nodes never wait: let other tasks run.
        tokio::task::coop::consume_budget().await;
        (run, cmd) = engine::step(flow, run, event, state.clock.now());
    }
}

/// Claim turn `turn` of the call `key` before a side effect: refuse an ended call, hand
/// back the stored answer of a turn already answered (`Some`, a replay), and move the row to the
/// next turn so that a concurrent copy of this turn cannot perform the side effect too.
async fn claim(
    state: &AppState,
    key: &CallKey,
    req: &TurnRequest,
    turn: u32,
    meta: &Meta,
    progress: &mut CallProgress,
) -> Result<Option<Drove>, CallError> {
    let key_text = key.to_string();
    let row = state.store.load_call(&key_text).await?;
    match call::admit_effect(row.as_ref().map(stored_turn), turn)? {
        Admission::Replay(answer) => {
            let state = row.map(|r| r.state).unwrap_or_default();
            return Ok(Some(Drove::Replayed { answer, state }));
        }
        Admission::Stale => return Err(CallError::StaleTurn),
        Admission::Start | Admission::Continue => {}
    }
    if let Some(row) = &row {
        progress.failures = progress.failures.max(row.failures);
    }
    let now = state.clock.now();
    let record = CallRecord {
        call_id: key_text,
        flow_id: req.flow_id.clone(),
        flow_version: meta.version,
        turn: turn + 1,
        state: row.as_ref().map(|r| r.state.clone()).unwrap_or_default(),
        last_answer: None,
        failures: progress.failures,
        pending_secret_account: row.as_ref().and_then(|r| r.pending_secret_account.clone()),
        ani: meta.ani.clone(),
        created_at: UnixMillis(meta.started),
        updated_at: now,
        expires_at: now.plus_secs(state.calls.idle_secs),
        ended: false,
    };
    match state.store.claim_call(&record).await {
        Ok(()) => Ok(None),
        // Another copy of this turn got there first (or the call just ended).
        Err(StoreError::Conflict) => Err(CallError::StaleTurn),
        Err(e) => Err(e.into()),
    }
}

/// Seal the state for the next turn and, for a durable turn, write the session before
/// the answer goes out.
async fn finish_turn(
    state: &AppState,
    req: &TurnRequest,
    meta: &Meta,
    mut driven: Driven,
    now: UnixMillis,
) -> Result<TurnResponse, CallError> {
    let key = req.key();
    let next_turn = driven.turn + 1;
    let pending = driven.charge.as_ref().map(HangupCharge::to_row);
    if driven.durable {
        driven.host.stored_pending = pending.clone();
    }
    let token = match driven.engine.take() {
        None => None,
        Some(engine) => {
            let cont = Continuation {
                version: meta.version,
                turn: next_turn,
                at: now.0,
                started: meta.started,
                ani: meta.ani.clone(),
                dnis: meta.dnis.clone(),
                secret_sha256: meta.secret_sha256.clone(),
                host: driven.host.clone(),
                engine,
            };
            Some(seal_continuation(
                &state.calls.keys,
                &key,
                &req.flow_id,
                &cont,
            )?)
        }
    };
    let response = TurnResponse {
        answer: driven.answer,
        next_turn,
        token: match req.platform.carrier() {
            Carrier::Url => token.clone(),
            Carrier::Row => None,
        },
        call_id: req.call_id.clone(),
        call_secret: req.call_secret.clone(),
    };
    if driven.durable {
        let record = CallRecord {
            call_id: key.to_string(),
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
                .map_err(internal)?,
            ),
            failures: driven.host.failures,
            pending_secret_account: pending,
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
            let event = audit_event(
                EventName::CallEnded,
                if outcome.error.is_some() {
                    AuditOutcome::Failure
                } else {
                    AuditOutcome::Success
                },
                &format!("platform:{}", req.platform),
                &req.flow_id,
                Some(&key.to_string()),
                json!({
                    "end": call::call_end(outcome),
                    "error": outcome.error.as_ref().map(|e| e.code.clone()),
                    "verified": driven.host.verified,
                    "failures": driven.host.failures,
                    "turns": driven.turn,
                }),
            );
            state.store.append_audit(&event, now).await?;
        }
    }
    Ok(response)
}

/// The platform says the call is over. Marks the session ended (a tombstone until it
/// expires, so no old continuation can act for the call again); a caller who hung up while
/// being asked for a secret after a failed attempt is charged that attempt, once.
pub async fn hangup(state: &AppState, key: &CallKey) -> Result<bool, CallError> {
    let Some(row) = state
        .store
        .end_call(&key.to_string(), state.clock.now())
        .await?
    else {
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
    let event = audit_event(
        EventName::CallClosed,
        AuditOutcome::Success,
        "platform",
        &row.flow_id,
        Some(&row.call_id),
        json!({"how": how, "chargedFailure": row.pending_secret_account.is_some()}),
    );
    state.store.append_audit(&event, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn key() -> CallKey {
        CallKey::new(Platform::Twilio, "CA1".to_owned())
    }

    /// A continuation as earlier versions sealed it: JSON, the flow and call inside.
    fn json_plaintext(secret_fields: &str) -> String {
        format!(
            r#"{{"flow_id":"f","version":3,"call_id":"CA1","turn":2,"at":7,"started":5,"ani":"+1555","dnis":"+1666",{secret_fields}"host":{{"failures":1,"verified":false,"account":"10001"}},"engine":{{"current":4,"roots":{{}}}}}}"#
        )
    }

    fn continuation() -> Continuation {
        Continuation {
            version: 3,
            turn: 2,
            at: 1_765_000_000_000,
            started: 1_764_999_990_000,
            ani: "+15550100777".to_owned(),
            dnis: "+15550100000".to_owned(),
            secret_sha256: Some(hash_credential("s3cret")),
            host: CallProgress {
                failures: 2,
                verified: true,
                account: Some("10001".to_owned()),
                account_secure: true,
                stored_pending: Some("(sealed)".to_owned()),
            },
            engine: br#"{"current":4,"roots":{"x":1}}"#.to_vec(),
        }
    }

    #[test]
    fn a_compact_continuation_round_trips_through_the_seal() {
        let keys = SessionKeys::generate();
        let cont = continuation();
        let plain = cont.encode().unwrap();
        assert_eq!(plain[0], COMPACT);
        assert!(plain.ends_with(&cont.engine));
        let token = seal_continuation(&keys, &key(), "f", &cont).unwrap();
        assert_eq!(open_sealed(&keys, &key(), "f", &token).unwrap(), cont);
        // Every field at its default round-trips too.
        let bare = Continuation {
            secret_sha256: None,
            host: CallProgress::default(),
            engine: Vec::new(),
            ani: String::new(),
            ..continuation()
        };
        let token = seal_continuation(&keys, &key(), "f", &bare).unwrap();
        assert_eq!(open_sealed(&keys, &key(), "f", &token).unwrap(), bare);
    }

    #[test]
    fn a_compact_continuation_is_smaller_than_the_json_one() {
        let cont = continuation();
        let json = json_plaintext(&format!(
            r#""secret_sha256":"{}","#,
            cont.secret_sha256.clone().unwrap()
        ));
        assert!(
            cont.encode().unwrap().len() + 100 < json.len(),
            "{} vs {}",
            cont.encode().unwrap().len(),
            json.len()
        );
    }

    /// Calls in progress across an upgrade: a token sealed with the JSON format still opens,
    /// for its own call and flow only.
    #[test]
    fn a_token_sealed_in_the_json_format_still_opens() {
        let keys = SessionKeys::generate();
        let plain = json_plaintext("");
        let token = keys.seal(plain.as_bytes(), &aad(&key(), "f")).unwrap();
        let cont = open_sealed(&keys, &key(), "f", &token).unwrap();
        assert_eq!(cont.version, 3);
        assert_eq!(cont.turn, 2);
        assert_eq!((cont.at, cont.started), (7, 5));
        assert_eq!((cont.ani.as_str(), cont.dnis.as_str()), ("+1555", "+1666"));
        assert_eq!(cont.host.failures, 1);
        assert_eq!(cont.host.account.as_deref(), Some("10001"));
        assert_eq!(cont.engine, br#"{"current":4,"roots":{}}"#);
        assert_eq!(cont.secret_sha256, None);
        // The JSON names its call and flow: sealed for another, it is refused even if the
        // seal's context matches.
        let other = CallKey::new(Platform::Twilio, "CA2".to_owned());
        let token = keys.seal(plain.as_bytes(), &aad(&other, "f")).unwrap();
        assert!(matches!(
            open_sealed(&keys, &other, "f", &token),
            Err(CallError::BadSession)
        ));
    }

    #[test]
    fn a_tampered_or_misplaced_token_is_refused() {
        let keys = SessionKeys::generate();
        let token = seal_continuation(&keys, &key(), "f", &continuation()).unwrap();
        // Every character changed in turn.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(
                matches!(
                    open_sealed(&keys, &key(), "f", &tampered),
                    Err(CallError::BadSession)
                ),
                "character {i} changed and the token still opened"
            );
        }
        // Another call, another flow, another key ring.
        let other = CallKey::new(Platform::Twilio, "CA2".to_owned());
        assert!(open_sealed(&keys, &other, "f", &token).is_err());
        assert!(open_sealed(&keys, &key(), "g", &token).is_err());
        assert!(open_sealed(&SessionKeys::generate(), &key(), "f", &token).is_err());
        // Authentic, but neither format (an unknown first byte, a truncated head).
        for plain in [&b"\x03anything"[..], b"", &[COMPACT, 0x80]] {
            let token = keys.seal(plain, &aad(&key(), "f")).unwrap();
            assert!(open_sealed(&keys, &key(), "f", &token).is_err());
        }
    }

    #[test]
    fn a_continuation_keeps_only_the_digest_of_the_call_secret() {
        let given = |s: &str| Secret::new(s.to_owned());
        let keys = SessionKeys::generate();
        // Sealed by an earlier version, with the secret itself: still opens the call.
        let plain = json_plaintext(r#""secret":"s3cret-canary","#);
        let token = keys.seal(plain.as_bytes(), &aad(&key(), "f")).unwrap();
        let legacy = open_sealed(&keys, &key(), "f", &token).unwrap();
        assert!(secret_matches(&legacy, Some(&given("s3cret-canary"))));
        assert!(!secret_matches(&legacy, Some(&given("s3cret-canarx"))));
        assert!(!secret_matches(&legacy, None));
        // Sealed again, it holds the digest only.
        let resealed = legacy.encode().unwrap();
        let text = String::from_utf8_lossy(&resealed);
        assert!(!text.contains("s3cret-canary"), "{text}");
        assert!(text.contains(&hash_credential("s3cret-canary")), "{text}");
        let token = seal_continuation(&keys, &key(), "f", &legacy).unwrap();
        let reopened = open_sealed(&keys, &key(), "f", &token).unwrap();
        assert!(secret_matches(&reopened, Some(&given("s3cret-canary"))));
        assert!(!secret_matches(&reopened, Some(&given(""))));
        // Other platforms carry none, and need none.
        let none = open_sealed(
            &keys,
            &key(),
            "f",
            &keys
                .seal(json_plaintext("").as_bytes(), &aad(&key(), "f"))
                .unwrap(),
        )
        .unwrap();
        assert!(secret_matches(&none, None));
    }
}
