//! Wire and file contracts of ivrauth: the flow document format and the REST bodies (the
//! Flow API's in `api`, the decision API's in `calls`).
//!
//! Serde types only. Nothing here validates meaning (that is `ivrauth-core`'s flow compiler)
//! and nothing here performs I/O. Every type in this crate is a contract that operators'
//! scripts and telephony platforms depend on: rename nothing without a format version.

pub mod api;
pub mod calls;
pub mod flow;
