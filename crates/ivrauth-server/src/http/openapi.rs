//! The OpenAPI document, generated from the code with utoipa and served at
//! `GET /openapi.json` (no token needed).
//!
//! To document a new route: annotate the handler with `#[utoipa::path(...)]` and add it to
//! the `paths(...)` list of [`ApiDoc`]; add its body types to `components(schemas(...))`.
//! The REST bodies are `ivrauth-proto` types, which derive `ToSchema` behind that crate's
//! `openapi` feature; only the form-encoded token request is described in [`schema`].

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ivrauth", description = "Authenticates phone callers by running IVR call flows."),
    paths(
        crate::healthz,
        crate::auth::token,
        crate::flows::create_flow,
        crate::flows::list_flows,
        crate::flows::get_flow,
        crate::flows::update_flow,
        crate::flows::delete_flow,
        crate::flows::validate_document,
        crate::flows::validate_stored,
        crate::flows::simulate,
    ),
    components(schemas(
        crate::Health,
        schema::TokenRequest,
        ivrauth_proto::api::TokenResponse,
        ivrauth_proto::api::OAuthError,
        ivrauth_proto::api::ErrorBody,
        ivrauth_proto::api::Diagnostic,
        ivrauth_proto::api::ValidationReport,
        ivrauth_proto::api::FlowSummary,
        ivrauth_proto::api::FlowDetail,
        ivrauth_proto::api::FlowList,
        ivrauth_proto::api::SimulateRequest,
        ivrauth_proto::api::SimulateResponse,
        ivrauth_proto::api::Outcome,
        ivrauth_proto::api::TransferOutcome,
        ivrauth_proto::api::RunFailure,
        ivrauth_proto::api::TraceEntry,
        ivrauth_proto::api::TraceRequest,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "OAuth2 client credentials"),
        (name = "health", description = "Liveness"),
        (name = "flows", description = "Deploy, validate and simulate call flows"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` (access token) and `client_basic` (token endpoint) schemes.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Bodies that have no Rust type of their own (the token request is parsed by hand).
pub mod schema {
    use utoipa::ToSchema;

    /// RFC 6749 §4.4.2 access token request (form-encoded).
    #[allow(dead_code)]
    #[derive(ToSchema)]
    pub struct TokenRequest {
        /// Must be `client_credentials`.
        pub grant_type: String,
        /// Space-separated subset of the client's scopes; all of them when absent.
        pub scope: Option<String>,
        /// When not using HTTP Basic.
        pub client_id: Option<String>,
        /// When not using HTTP Basic.
        pub client_secret: Option<String>,
    }
}
