//! Integration tests of the CLI as a user runs it (the real binary, spawned): one binary for the crate, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account;
mod call;
mod canary;
mod cli;
mod identity_config;
mod large_flow;
mod security;
mod support;
