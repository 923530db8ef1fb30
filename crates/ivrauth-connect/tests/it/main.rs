//! Integration tests of the outbound adapters (http executor, seed-000 endpoint, LDAP, OAuth2, security): one binary for the crate, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_executor;
mod http_identity;
mod ldap;
mod oauth2;
mod security;
