//! Integration tests of the store (the conformance suite on SQLite, the directory, the hashing pool): one binary for the crate, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;
mod directory;
mod hashpool;
mod sqlite;
