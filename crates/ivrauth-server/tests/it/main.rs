//! Integration tests of the server through its real HTTP face (API, flows, calls, identity, layers, security): one binary for the crate, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod calls;
mod flows;
mod identity;
mod layers;
mod security;
