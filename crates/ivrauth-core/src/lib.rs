//! The domain of ivrauth, without I/O: the flow compiler and validator, the step engine,
//! the audit chain, client-credential rules and the port traits that storage implements.
//!
//! Nothing in this crate opens a socket or a file, reads the clock or draws randomness:
//! time (`now`) and random values are arguments. A `cargo metadata` test in the workspace
//! fails the build if this crate ever depends on tokio, axum, sqlx or reqwest.

pub mod actions;
pub mod audit;
pub mod call;
pub mod clients;
pub mod engine;
pub mod expr;
pub mod flow;
pub mod http;
pub mod identity;
pub mod inputs;
pub mod ivr;
pub mod ports;
pub mod secret;
pub mod time;

pub use secret::Secret;
pub use time::UnixMillis;
