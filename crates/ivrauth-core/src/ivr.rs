//! What a call flow asks of a telephony platform, independent of any platform.
//!
//! The engine produces [`Verb`]s (things to play) and, when it needs the caller's keys, a
//! [`Prompt`]; front-ends (TwiML, jambonz, VoiceXML, the decision API, the terminal
//! simulator) render them. The caller's answer comes back as [`Input`]. Nothing here holds
//! a secret: prompts are rendered text the validator has checked never speaks one.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Something the platform plays or does before the next input request or the end of the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "camelCase")]
pub enum Verb {
    /// Text to speech.
    Say {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voice: Option<String>,
    },
    /// Silence for a number of seconds.
    Pause { seconds: u32 },
    /// Audio from a URL (hold music).
    Play { url: String },
    /// Entering a secure segment: stop recording the call.
    RecordingPause,
    /// Leaving a secure segment: resume recording.
    RecordingResume,
}

/// Which kind of input request a prompt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PromptKind {
    /// Digits into a variable (account number, PIN, code).
    Collect,
    /// One key choosing a branch.
    Menu,
}

/// A request for keypad input. The verbs to play while waiting are in `say` (the node's
/// prompt, preceded by a re-prompt such as "Sorry, that did not match." on a retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompt {
    pub node_id: String,
    pub kind: PromptKind,
    pub say: Vec<Verb>,
    pub min_digits: u32,
    pub max_digits: u32,
    /// The key that ends entry early (`#` by default; empty for none).
    pub finish_on_key: String,
    pub timeout_seconds: u32,
    /// Keys are secret: mask them, suppress recording, never echo.
    pub secure: bool,
    /// Menu choices (single keys); empty for a collect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// 1 for the first asking, 2 for the first retry, ...
    pub attempt: u32,
    /// How many askings the node allows in all.
    pub attempts: u32,
}

/// The caller's answer to a [`Prompt`].
#[derive(Debug, Clone)]
pub enum Input {
    /// Keys pressed (the finish key, if the platform passes it on, is stripped by the engine).
    Digits(Secret<String>),
    /// The prompt timed out without a key.
    NoInput,
    /// The platform judged the entry invalid itself (a VoiceXML grammar's nomatch) and
    /// passed no digits on.
    NoMatch,
}

/// How a call ended, as far as the flow is concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum CallEnd {
    /// An `end` node.
    #[serde(rename_all = "camelCase")]
    End {
        end_node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_code: Option<u16>,
    },
    /// A `transfer` node: hand the call to a queue or a number.
    #[serde(rename_all = "camelCase")]
    Transfer {
        node_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A `hangup` node.
    #[serde(rename_all = "camelCase")]
    Hangup { node_id: String },
}
