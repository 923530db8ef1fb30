//! The OpenAPI document, generated from the code with utoipa and served at
//! `GET /openapi.json` (no token needed).
//!
//! To document a new route: annotate the handler with `#[utoipa::path(...)]` and add it to
//! the `paths(...)` list of [`ApiDoc`]; add its body types to `components(schemas(...))`.
//! The REST bodies are `ivrauth-proto` types, which derive `ToSchema` behind that crate's
//! `openapi` feature; only the form-encoded token request is described by hand (`auth::TokenRequest`).

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ivrauth", description = "Authenticates phone callers by running IVR call flows."),
    paths(
        super::healthz,
        super::auth::token,
        super::flows::create_flow,
        super::flows::list_flows,
        super::flows::get_flow,
        super::flows::update_flow,
        super::flows::delete_flow,
        super::flows::validate_document,
        super::flows::validate_stored,
        super::flows::simulate,
    ),
    components(schemas(
        super::Health,
        super::auth::TokenRequest,
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
