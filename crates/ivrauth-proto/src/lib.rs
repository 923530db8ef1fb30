//! Wire and file contracts of ivrauth: the flow document format and the REST bodies.
//!
//! Serde types only. Nothing here validates meaning (that is `ivrauth-core`'s flow compiler)
//! and nothing here performs I/O. Every type in this crate is a contract that operators'
//! scripts and telephony platforms depend on: rename nothing without a format version.

pub mod api;
pub mod flow;
