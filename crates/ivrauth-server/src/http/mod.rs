//! The HTTP face of the REST API: the token endpoint and the `Scoped<S>` extractor
//! ([`auth`]), the Flow API ([`flows`]), the extractors whose rejections go through
//! [`error::ApiError`] ([`extract`]), the one place errors become HTTP ([`error`]), the
//! OpenAPI document ([`openapi`]), `serve --demo` ([`demo`]) and the accept loop
//! ([`connections`]).
//!
//! Handlers here are thin: they parse, check scopes and call the application services
//! (`crate::app`), which know nothing of HTTP. The telephony webhooks are in
//! `crate::calls`, one file per platform.

pub mod auth;
pub mod connections;
pub mod demo;
pub mod error;
pub mod extract;
pub mod flows;
pub mod openapi;

/// Health of the process.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: &'static str,
}

/// Liveness probe; needs no token.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The server is up", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}
