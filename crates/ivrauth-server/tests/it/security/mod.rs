//! Security properties of the server through its real HTTP face, one module per area, each
//! test named after the property it proves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bounded_runs;
mod caller_limits;
mod echoed_secret;
mod refusals;
mod secrets;
mod side_door;
mod slow_clients;
mod ssrf;
mod support;
mod url_templates;
mod voicexml;
