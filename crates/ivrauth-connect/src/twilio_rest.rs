//! Twilio's REST API, for what TwiML cannot do: pausing and resuming a call's recording
//! around a secure segment (`POST /2010-04-01/Accounts/{sid}/Calls/{sid}/Recordings/
//! Twilio.CURRENT.json`, HTTP Basic with the Account SID or an API key).
//!
//! The client follows the outbound rules of every client here: no redirects, a timeout,
//! no link-local or metadata addresses, and credentials only over https or plain http to a
//! loopback host. Errors name the class of failure, never the credentials or the URL's
//! secrets.

use std::sync::OnceLock;
use std::time::Duration;

use ivrauth_core::http::secure_transport;
use ivrauth_core::secret::Secret;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::oauth2::transport;

/// Each request to Twilio's REST API must finish within this.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A path segment keeps RFC 3986's unreserved characters; the rest is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where and how to reach Twilio's REST API (`[twilio] rest_*`).
pub struct TwilioRest {
    /// `https://api.twilio.com` (a local stand-in in tests).
    pub base_url: String,
    /// Basic-auth user: the Account SID or an API key SID.
    pub username: String,
    pub password: Secret<String>,
}

/// What to do with the call's current recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// Stop recording (entering a secure segment); the paused part is skipped.
    Pause,
    /// Record again (leaving it).
    Resume,
}

impl Recording {
    /// Twilio's `Status` value.
    pub fn status(self) -> &'static str {
        match self {
            Recording::Pause => "paused",
            Recording::Resume => "in-progress",
        }
    }
}

/// Why Twilio did not confirm a change.
#[derive(Debug, thiserror::Error)]
pub enum TwilioRestError {
    #[error("Twilio answered {status}")]
    Refused { status: u16 },
    #[error("cannot reach Twilio: {0}")]
    Unreachable(String),
    #[error("the Twilio REST URL must be https (or http to a loopback host)")]
    InsecureUrl,
}

fn client() -> Result<&'static reqwest::Client, TwilioRestError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let built =
        transport::client(TIMEOUT).map_err(|e| TwilioRestError::Unreachable(e.to_string()))?;
    Ok(CLIENT.get_or_init(|| built))
}

impl TwilioRest {
    /// Pause or resume the current recording of `call_sid` under `account_sid`.
    pub async fn set_recording(
        &self,
        account_sid: &str,
        call_sid: &str,
        what: Recording,
    ) -> Result<(), TwilioRestError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}/Recordings/Twilio.CURRENT.json",
            self.base_url.trim_end_matches('/'),
            utf8_percent_encode(account_sid, SEGMENT),
            utf8_percent_encode(call_sid, SEGMENT),
        );
        if !secure_transport(&url) {
            return Err(TwilioRestError::InsecureUrl);
        }
        let mut form = vec![("Status", what.status())];
        if what == Recording::Pause {
            form.push(("PauseBehavior", "skip"));
        }
        let req = client()?
            .post(&url)
            .basic_auth(&self.username, Some(self.password.expose()))
            .form(&form);
        let shown = transport::shown_url(&url);
        let (status, _body) = transport::send(req, &shown)
            .await
            .map_err(|e| TwilioRestError::Unreachable(e.to_string()))?;
        if status.as_u16() < 300 {
            Ok(())
        } else {
            Err(TwilioRestError::Refused {
                status: status.as_u16(),
            })
        }
    }
}
