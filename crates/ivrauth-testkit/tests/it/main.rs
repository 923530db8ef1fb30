//! Integration tests of the test peers themselves (providers, telephony checkers): one binary for the crate, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod providers;
mod telephony;
