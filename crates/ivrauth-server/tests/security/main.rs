//! Security properties of the server, a module per property, each test named after it.
mod ssrf;
