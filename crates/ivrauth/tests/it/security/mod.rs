//! Security properties of the `ivrauth` binary, each test named after the property it
//! proves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account_key;
mod files;
