//! Application services: what the server does, with no HTTP in it. The engine host
//! ([`host`]) that performs the engine's commands for simulations ([`simulate`]) and call
//! turns ([`turn`]), the identity actions ([`identity`]), the compiled-flow cache
//! ([`flow_cache`]), audit writing ([`audit`]), call-state sealing ([`seal`]), refusal
//! counting ([`refusals`]) and rate limiting ([`ratelimit`]).
//!
//! Nothing here knows axum, hyper or HTTP status codes (`tests/it/layers.rs` fails the build
//! if a file here names them): the HTTP layer (`crate::http`) and the telephony
//! front-ends (`crate::calls`) parse requests, call these services and map their typed
//! errors to responses.

pub mod audit;
pub mod flow_cache;
pub mod host;
pub mod identity;
pub mod ratelimit;
pub mod refusals;
pub mod seal;
pub mod simulate;
pub mod turn;
