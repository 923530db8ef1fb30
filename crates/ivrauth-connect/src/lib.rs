//! `ivrauth-connect`: the host's adapters to the outside world.
//!
//! The flow engine in `ivrauth-core` performs no I/O; when a flow needs something from
//! another system it asks its host, and this crate is where the host does it. Today that is
//! the HTTP executor behind flow `http` nodes (data actions): [`HttpExecutor`] sends an
//! [`ivrauth_core::http::HttpRequest`] under the product's transport rules (no redirects,
//! per-request timeouts, host allow-list, no link-local or cloud metadata addresses, secrets
//! only over https or loopback, bounded retries of 429/503, response size cap) and hands
//! back an [`ivrauth_core::http::HttpResult`]. LDAP directories and OAuth2/OIDC identity
//! providers live here too, and Twilio's REST API (pausing call recordings); SMTP and SMS
//! gateways will later.
//!
//! It also holds the production [`SystemClock`] and the [`Sleeper`] abstraction, so that
//! time and waiting can be faked in tests.
//!
//! What it is not: it knows nothing about flows, nodes, templates or sessions (that is
//! `ivrauth-core`), it stores nothing (`ivrauth-store`), and it serves nothing
//! (`ivrauth-server`). Failures are returned as values, never as panics, and nothing it
//! logs or reports contains request header values or bodies.

mod clock;
mod http;
pub mod http_identity;
pub mod ldap;
pub mod oauth2;
mod outbound;
mod sleep;
pub mod twilio_rest;

pub use clock::SystemClock;
pub use http::{ConnectError, HttpConfig, HttpExecutor};
pub use http_identity::{HttpIdentity, HttpIdentityConfig};
pub use ldap::{LdapConfig, LdapConfigError, LdapDirectory};
pub use oauth2::{OAuth2Config, OAuth2Directory, ProfilePointers, TokenValidation};
pub use outbound::{HostLookup, SystemLookup};
pub use sleep::{RecordingSleeper, Sleeper, TokioSleeper};
pub use twilio_rest::{Recording, TwilioRest, TwilioRestError};
