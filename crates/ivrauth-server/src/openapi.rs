//! The OpenAPI document, generated from the code with utoipa and served at
//! `GET /openapi.json` (no token needed).
//!
//! To document a new route: annotate the handler with `#[utoipa::path(...)]` and add it to
//! the `paths(...)` list of [`ApiDoc`]; add its body types to `components(schemas(...))`.
//! Types of `ivrauth-proto` do not derive `ToSchema` (that crate knows no HTTP library), so
//! their documented shapes are mirrored in [`schema`].

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
        schema::TokenResponse,
        schema::OAuthError,
        schema::ErrorBody,
        schema::Diagnostic,
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

/// Documentation mirrors of the `ivrauth-proto` bodies (same field names and meaning).
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

    /// RFC 6749 §5.1 access token response.
    #[allow(dead_code)]
    #[derive(ToSchema)]
    pub struct TokenResponse {
        pub access_token: String,
        /// Always `bearer`.
        pub token_type: String,
        /// Seconds until the token expires.
        pub expires_in: u64,
        /// Space-separated scopes of the token.
        pub scope: String,
    }

    /// RFC 6749 §5.2 error response of the token endpoint.
    #[allow(dead_code)]
    #[derive(ToSchema)]
    pub struct OAuthError {
        /// `invalid_request`, `invalid_client`, `unsupported_grant_type`, `invalid_scope`.
        pub error: String,
        pub error_description: Option<String>,
    }

    /// Every other error body.
    #[allow(dead_code)]
    #[derive(ToSchema)]
    pub struct ErrorBody {
        /// Stable snake_case code, such as `malformed_json` or `insufficient_scope`.
        pub code: String,
        pub message: String,
        /// Present when there are detailed problems (validation diagnostics).
        pub errors: Option<Vec<Diagnostic>>,
    }

    /// One problem found in a document or body.
    #[allow(dead_code)]
    #[derive(ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub struct Diagnostic {
        /// JSON pointer into the document.
        pub path: String,
        pub node_id: Option<String>,
        pub code: String,
        pub message: String,
    }
}
