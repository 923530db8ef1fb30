//! The call protocol, without I/O: what a host decides about a turn of a call before and
//! after it runs the engine.
//!
//! A call is named by its [`CallKey`] (platform and call id). Between turns its state is
//! carried where its platform allows ([`Carrier`]): sealed in the callback URL the platform
//! calls next (TwiML, jambonz, VoiceXML), or in the call's row in the store (the decision
//! API has no URL to carry it). The host asks this module:
//!
//! - whether a turn is admitted ([`admit`], and [`admit_effect`] again before a side
//!   effect): start the flow, go on, answer a retried turn from the store
//!   ([`Admission::Replay`]), or refuse a stale one;
//! - whether the turn must be written durably before its answer goes out ([`durable`]);
//! - what a hang-up at this prompt would be charged ([`hangup_charge`]);
//! - what travels with a transferred call ([`transfer_attributes`]).
//!
//! Not here: sealing, the store, HTTP, rendering (the server does those).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ivr::{CallEnd, Prompt, Verb};
use ivrauth_proto::api::Outcome;

/// Which front-end a call came through; part of the call's key and of the seal's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Twilio,
    Jambonz,
    Vxml,
    /// The decision API (`/api/v2/calls/...`).
    Api,
}

impl Platform {
    pub const ALL: [Platform; 4] = [
        Platform::Twilio,
        Platform::Jambonz,
        Platform::Vxml,
        Platform::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Twilio => "twilio",
            Platform::Jambonz => "jambonz",
            Platform::Vxml => "vxml",
            Platform::Api => "api",
        }
    }

    /// Where this platform's calls carry their state between turns.
    pub fn carrier(self) -> Carrier {
        match self {
            Platform::Api => Carrier::Row,
            Platform::Twilio | Platform::Jambonz | Platform::Vxml => Carrier::Url,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Platform`], or a text that is not a [`CallKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallKeyError {
    #[error("unknown platform (expected twilio, jambonz, vxml or api)")]
    UnknownPlatform,
    #[error("a call key is `<platform>:<call id>`")]
    Malformed,
}

impl FromStr for Platform {
    type Err = CallKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(CallKeyError::UnknownPlatform)
    }
}

/// Where a call's state waits for the next turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// Sealed in the callback URL; the row is written only by durable turns.
    Url,
    /// In the call's row, every turn (the platform keeps no URL for us).
    Row,
}

/// The key of a call in the store and the audit: `<platform>:<call id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub platform: Platform,
    /// The platform's call id (VoiceXML: the id ivrauth minted; the decision API: the
    /// client's id, `/`, the platform's call id).
    pub call_id: String,
}

impl CallKey {
    pub fn new(platform: Platform, call_id: impl Into<String>) -> Self {
        CallKey {
            platform,
            call_id: call_id.into(),
        }
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.call_id)
    }
}

impl FromStr for CallKey {
    type Err = CallKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (platform, call_id) = s.split_once(':').ok_or(CallKeyError::Malformed)?;
        if call_id.is_empty() {
            return Err(CallKeyError::Malformed);
        }
        Ok(CallKey::new(platform.parse()?, call_id))
    }
}

/// What ivrauth answers at one turn of a call, before a front-end renders it. Stored in a
/// durable turn's row (JSON) and replayed from there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TurnAnswer {
    /// Play `verbs`, then ask for keys.
    Ask { verbs: Vec<Verb>, prompt: Prompt },
    /// Play `verbs`, then end the dialogue as `end` says (transfer, hang up, end).
    End {
        verbs: Vec<Verb>,
        end: CallEnd,
        attributes: TransferAttributes,
    },
}

impl TurnAnswer {
    /// Everything played before the input request or the end.
    pub fn verbs(&self) -> &[Verb] {
        match self {
            TurnAnswer::Ask { verbs, .. } | TurnAnswer::End { verbs, .. } => verbs,
        }
    }
}

/// The verification result that travels with a transferred call to the agent. Never a
/// secret, never the account's data beyond the number the caller keyed in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferAttributes {
    pub verified: bool,
    /// Factors that succeeded, such as `pin`.
    pub factors: Vec<String>,
    /// Why the caller is not verified: `not_attempted` (no verification was tried),
    /// `failed` (tried, not verified), `max_attempts` (the call's attempts ran out).
    /// `None` when verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The account number the caller keyed in, when a verification was attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The transfer node's reason ("Account Recovery").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub call_id: String,
}

/// What the host keeps about a call besides the engine's state: carried with it (sealed)
/// from turn to turn. The field names are part of sealed continuations: keep them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallProgress {
    pub failures: u32,
    /// The last verification succeeded.
    pub verified: bool,
    /// The account number of the last verification attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// That account number was keyed as a secret: it never leaves in attributes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub account_secure: bool,
    /// What the call's row says a hang-up would be charged against, as last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_pending: Option<String>,
}

impl CallProgress {
    /// A verification was performed for `account` (keyed as a secret or not).
    pub fn verification(&mut self, account: Option<String>, account_secure: bool, verified: bool) {
        self.account = account;
        self.account_secure = account_secure;
        self.verified = verified;
    }
}

/// What a hang-up now would be charged against: a failed attempt of this account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangupCharge {
    /// The account number, written in the row in plain text.
    Account(String),
    /// The account number was keyed as a secret: the row says [`SEALED_ACCOUNT`] and a
    /// hang-up reads the account from the row's sealed state.
    Sealed,
}

/// What the row's `pending_secret_account` holds for [`HangupCharge::Sealed`].
pub const SEALED_ACCOUNT: &str = "(sealed)";

impl HangupCharge {
    /// The row's `pending_secret_account` text.
    pub fn to_row(&self) -> String {
        match self {
            HangupCharge::Account(a) => a.clone(),
            HangupCharge::Sealed => SEALED_ACCOUNT.to_owned(),
        }
    }

    /// From the row's `pending_secret_account` text.
    pub fn from_row(text: &str) -> HangupCharge {
        if text == SEALED_ACCOUNT {
            HangupCharge::Sealed
        } else {
            HangupCharge::Account(text.to_owned())
        }
    }
}

/// A hang-up at `prompt` would abandon a secret asked for after a failed attempt (and not
/// verified since): the caller is then charged one failure, once.
pub fn hangup_charge(progress: &CallProgress, prompt: &Prompt) -> Option<HangupCharge> {
    if !(prompt.secure && progress.failures > 0 && !progress.verified) {
        return None;
    }
    if progress.account_secure {
        return Some(HangupCharge::Sealed);
    }
    progress.account.clone().map(HangupCharge::Account)
}

/// What the store says of a call at the start of a turn (`None`: no row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredTurn<'a> {
    /// The next turn the platform is expected to send.
    pub turn: u32,
    /// The call hung up (a tombstone).
    pub ended: bool,
    /// The answer given to turn `turn - 1`.
    pub last_answer: Option<&'a str>,
}

/// What to do with a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The call's first turn: start the flow.
    Start,
    /// Go on from the carried state.
    Continue,
    /// A retried turn that was answered durably: send this stored answer again, perform
    /// nothing.
    Replay(String),
    /// A turn older than the last durable one, other than its exact replay.
    Stale,
}

/// Why a turn is refused before the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid session for this call and turn (ended, gone, forged).
    BadSession,
    /// A row-carried call has a session and the request did not say which turn it answers.
    TurnRequired,
}

/// Admit a turn as it arrives. `stored` is the call's row, read only for row-carried
/// calls (URL-carried ordinary turns read nothing); `turn` is the turn the request says it
/// answers; `carried` whether it brought a continuation.
pub fn admit(
    carrier: Carrier,
    stored: Option<StoredTurn<'_>>,
    turn: Option<u32>,
    carried: bool,
) -> Result<Admission, Refusal> {
    match carrier {
        Carrier::Url if carried => Ok(Admission::Continue),
        Carrier::Url => Ok(Admission::Start),
        Carrier::Row => match (stored, turn) {
            (Some(row), Some(t)) if t < row.turn => Ok(replay(row, t)),
            (Some(_), Some(_)) => Ok(Admission::Continue),
            // Without a turn number a retry could not be told from the next answer.
            (Some(_), None) => Err(Refusal::TurnRequired),
            // A later turn of a call whose session is gone (hung up, expired) does not
            // start the flow again.
            (None, Some(t)) if t > 1 => Err(Refusal::BadSession),
            (None, _) => Ok(Admission::Start),
        },
    }
}

/// Admit turn `turn` again just before its first side effect, against the row as it is
/// now: an ended call is refused, a turn already answered is replayed (or stale), and
/// otherwise the host claims the row ([`Admission::Continue`]).
pub fn admit_effect(stored: Option<StoredTurn<'_>>, turn: u32) -> Result<Admission, Refusal> {
    match stored {
        Some(row) if row.ended => Err(Refusal::BadSession),
        Some(row) if row.turn > turn => Ok(replay(row, turn)),
        _ => Ok(Admission::Continue),
    }
}

/// The platform retried turn `t`, already answered: the same answer again if it is the
/// last one; otherwise the request is stale.
fn replay(row: StoredTurn<'_>, t: u32) -> Admission {
    match row.last_answer {
        Some(answer) if t.saturating_add(1) == row.turn => Admission::Replay(answer.to_owned()),
        _ => Admission::Stale,
    }
}

/// What happened in a turn, as far as its durability goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnEffects {
    /// An action with side effects was performed (an identity action).
    pub performed_action: bool,
    /// The flow ended.
    pub ended: bool,
    /// What a hang-up would be charged differs from what the row says.
    pub charge_changed: bool,
}

/// Whether a turn's row must be written before its answer goes out: always for
/// row-carried calls; otherwise when the turn performed an action, ended the call, or
/// changed what a hang-up would be charged.
pub fn durable(carrier: Carrier, effects: TurnEffects) -> bool {
    carrier == Carrier::Row || effects.performed_action || effects.ended || effects.charge_changed
}

/// Whether the charge a prompt implies differs from what the row says.
pub fn charge_changed(charge: Option<&HangupCharge>, progress: &CallProgress) -> bool {
    charge.map(HangupCharge::to_row) != progress.stored_pending
}

/// How a finished run ends the call.
pub fn call_end(outcome: &Outcome) -> CallEnd {
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

/// The verification result that travels with the call as it ends. `per_call_failures` is
/// the identity policy's limit of failures per call (`None`: no identity service).
pub fn transfer_attributes(
    progress: &CallProgress,
    per_call_failures: Option<u32>,
    end: &CallEnd,
    call_id: &str,
) -> TransferAttributes {
    let limit = per_call_failures.unwrap_or(u32::MAX);
    let failure_reason = if progress.verified {
        None
    } else if progress.failures == 0 {
        Some("not_attempted".to_owned())
    } else if progress.failures >= limit {
        Some("max_attempts".to_owned())
    } else {
        Some("failed".to_owned())
    };
    TransferAttributes {
        verified: progress.verified,
        factors: if progress.verified {
            vec!["pin".to_owned()]
        } else {
            Vec::new()
        },
        failure_reason,
        account: if progress.account_secure {
            None
        } else {
            progress.account.clone()
        },
        reason: match end {
            CallEnd::Transfer { reason, .. } => reason.clone(),
            _ => None,
        },
        call_id: call_id.to_owned(),
    }
}
