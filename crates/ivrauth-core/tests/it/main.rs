//! Integration tests of the core (engine cases, call-protocol cases, validator, the crate graph): one binary for the crate, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod architecture;
mod call_cases;
mod engine_cases;
mod validator;
