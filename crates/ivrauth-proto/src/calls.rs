//! Bodies of the decision API (`POST /api/v2/calls/{callId}/turns` and `/hangup`), spoken
//! by the server and by `ivrauth call --server` alike.
//!
//! The answer is flat (strings, numbers, booleans) for platforms such as Genesys Cloud data
//! actions, which map response fields one by one. A request's `input` may be a PIN: its
//! `Debug` never shows it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::MASK;

/// A turn of the decision API.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiTurnRequest {
    /// The flow the call runs (at most 128 characters, as every text field here).
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub flow_id: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub ani: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub dnis: String,
    /// The keys the caller pressed for the last prompt; `""` or absent for no input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub input: Option<String>,
    /// The `turn` of the last response, so that a retried request gets the same answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
}

impl std::fmt::Debug for ApiTurnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTurnRequest")
            .field("flow_id", &self.flow_id)
            .field("ani", &self.ani)
            .field("dnis", &self.dnis)
            .field("input", &self.input.as_ref().map(|_| MASK))
            .field("turn", &self.turn)
            .finish()
    }
}

/// What the platform does next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TurnAction {
    /// Play `prompt`, then collect keys.
    #[default]
    Collect,
    /// Play `prompt`; the flow ended.
    Say,
    /// Play `prompt`, then transfer to `queue` or `target`.
    Transfer,
    /// Hang up.
    Hangup,
}

/// The decision API's answer: flat, for platforms such as Genesys Cloud data actions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiTurnResponse {
    pub call_id: String,
    /// Send this back as `turn` with the next request.
    pub turn: u32,
    /// `collect` (play `prompt`, then collect keys), `say` (play `prompt`; the flow ended),
    /// `transfer` (play `prompt`, then transfer to `queue` or `target`), `hangup`.
    pub action: TurnAction,
    /// Everything to speak this turn, in order.
    pub prompt: String,
    pub min_digits: u32,
    pub max_digits: u32,
    pub finish_on_key: String,
    pub timeout_seconds: u32,
    /// The keys are secret: mask them, suppress recording.
    pub secure: bool,
    /// Menu keys, comma-separated (`"1,2,9"`); empty for a collect.
    pub choices: String,
    /// `pause` or `resume` call recording before playing the prompt; empty for neither.
    pub recording: String,
    pub queue: String,
    pub target: String,
    pub reason: String,
    /// The node the flow ended at (`say`, `transfer`, `hangup`); empty for `collect`.
    pub end_node: String,
    /// An `end` node's status code; 0 when there is none.
    pub status_code: u16,
    /// The account number the caller keyed in, when a verification was attempted (also
    /// in `attributes`).
    pub account: String,
    pub verified: bool,
    /// Factors that succeeded, comma-separated.
    pub factors: String,
    pub failure_reason: String,
    /// The same verification result, as an object (for platforms that keep JSON).
    pub attributes: Value,
}

/// `POST /api/v2/calls/{callId}/hangup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiHangupResponse {
    /// False when the call had no session.
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_never_shows_its_keys_in_debug() {
        let req = ApiTurnRequest {
            flow_id: "f".to_owned(),
            input: Some("2468#".to_owned()),
            ..ApiTurnRequest::default()
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("2468"), "{shown}");
        assert!(shown.contains(MASK), "{shown}");
    }

    #[test]
    fn actions_are_lowercase_words() {
        let words: Vec<String> = [
            TurnAction::Collect,
            TurnAction::Say,
            TurnAction::Transfer,
            TurnAction::Hangup,
        ]
        .iter()
        .map(|a| {
            serde_json::to_value(a)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(words, ["collect", "say", "transfer", "hangup"]);
    }

    #[test]
    fn a_first_turn_sends_neither_turn_nor_input() {
        let req = ApiTurnRequest {
            flow_id: "f".to_owned(),
            ..ApiTurnRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"flowId": "f", "ani": "", "dnis": ""})
        );
    }
}
