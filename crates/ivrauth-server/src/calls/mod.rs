//! Calls: the turn-by-turn host of the engine for telephony platforms, and the renderers
//! that turn a platform-neutral [`TurnAnswer`] into TwiML, jambonz verbs or VoiceXML.

pub mod access;
pub mod jambonz;
pub mod seal;
pub mod session;
pub mod signature;
pub mod twiml;
pub mod vxml;
pub mod web;
mod xml;

use ivrauth_core::ivr::{CallEnd, Prompt, Verb};
use serde::{Deserialize, Serialize};

/// What ivrauth answers at one turn of a call, before a front-end renders it.
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

/// Where the platform sends the caller's next answer. Absolute URLs that already carry the
/// call id, the next turn number and the sealed session; renderers only escape them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextTurn {
    /// Where keys go (TwiML `Gather action`, jambonz `actionHook`, VoiceXML `submit next`).
    pub action: String,
    /// Where a silent turn goes (TwiML `<Redirect>` after the Gather, VoiceXML `noinput`).
    pub no_input: String,
    /// VoiceXML only: where the `nomatch` and hang-up catches submit.
    pub no_match: String,
    pub hangup: String,
}
