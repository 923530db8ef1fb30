//! Security properties of the server, each proven by a test named after it: a module per
//! property, the real router on a loopback port, real outbound servers where a flow calls
//! one.

mod bounded_runs;
mod echoed_secret;
mod url_templates;
