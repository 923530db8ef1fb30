//! The OpenAPI document, generated from the router and served at `GET /openapi.json` (no
//! token needed).
//!
//! Routes are registered with `utoipa_axum`'s `OpenApiRouter` and `routes!(handler)`, which
//! reads the handler's `#[utoipa::path(...)]`: a route and its operation are one
//! registration, so the document cannot miss a route (`crate::api_routes`; a test also
//! probes every operation and checks that no `.route(` is registered by hand). Body types
//! referenced with `body = ...` are collected as components on the way.
//!
//! What every operation of a kind answers is added here once, by [`complete`], from the
//! code that answers it: 413 on every route (`extract::reject_oversized`, before any
//! handler); 401, 403 and 429 on every bearer route (`auth::Scoped`); 400 and 415 on every
//! JSON body (`extract::ApiJson`). A handler's own annotation lists the rest. Constraints
//! a derive cannot state ("exactly one of `flowId` or `flow`") are set by [`complete`] too.
//!
//! Not for: the document's wire types (those derive `ToSchema` in `ivrauth-proto`, behind
//! its `openapi` feature); only the form-encoded token request is described by hand
//! (`auth::TokenRequest`).

use std::sync::Arc;

use axum::{Extension, Json};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document_;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ivrauth", description = "Authenticates phone callers by running IVR call flows."),
    components(schemas(ivrauth_proto::api::ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "OAuth2 client credentials"),
        (name = "health", description = "Liveness and this document"),
        (name = "flows", description = "Deploy, validate and simulate call flows"),
        (name = "calls", description = "The decision API: one JSON decision per turn (bearer `call:turn`)"),
        (name = "telephony", description = "Telephony webhooks (Twilio, jambonz, VoiceXML), authenticated by the platform's own signature or credentials"),
        (name = "demo", description = "`serve --demo` only: the demo identity provider"),
    )
)]
struct ApiDoc;

/// The document's info, tags and security schemes, before any route is registered.
pub(crate) fn base() -> Document_ {
    ApiDoc::openapi()
}

/// Adds the security schemes: `bearer` (access token), `client_basic` (token endpoint),
/// and the telephony platforms' own: `twilio_signature`, `jambonz_signature`,
/// `voicexml_basic`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "twilio_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Twilio-Signature",
                "Twilio's HMAC-SHA1 over the public URL and the form fields (auth token)",
            ))),
        );
        components.add_security_scheme(
            "jambonz_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Jambonz-Signature",
                "`t=<unix seconds>,v1=<hex HMAC-SHA256 over \"<t>.<body>\">` (webhook secret)",
            ))),
        );
        components.add_security_scheme(
            "voicexml_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "`[voicexml]` Basic credentials on the start URL, and/or an allowed source address",
                    ))
                    .build(),
            ),
        );
    }
}

/// The route of the document itself.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// The document as served: built once per router.
#[derive(Clone)]
pub(crate) struct Document(Arc<Value>);

impl Document {
    pub(crate) fn new(doc: Value) -> Self {
        Document(Arc::new(doc))
    }
}

/// This document: every route the server answers, with its bodies, statuses and security.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document of this server", body = Object)))]
async fn openapi_json(Extension(doc): Extension<Document>) -> Json<Value> {
    Json(Value::clone(&doc.0))
}

/// A response added to every operation it applies to, unless the handler documents that
/// status itself.
struct Shared {
    status: &'static str,
    description: &'static str,
    /// `Retry-After` (429) or `WWW-Authenticate` (401, 403).
    header: Option<(&'static str, &'static str)>,
}

const TOO_LARGE: Shared = Shared {
    status: "413",
    description: "`payload_too_large`: the body (or its declared `Content-Length`) exceeds the server's limit",
    header: None,
};

const BEARER: [Shared; 3] = [
    Shared {
        status: "401",
        description: "`unauthorized`: no bearer token, or one that is invalid, expired or revoked",
        header: Some((
            "WWW-Authenticate",
            "`Bearer realm=\"ivrauth\"`, with `error=\"invalid_token\"` when a token was presented",
        )),
    },
    Shared {
        status: "403",
        description: "`insufficient_scope`: the token lacks the scope this operation needs",
        header: Some((
            "WWW-Authenticate",
            "`Bearer realm=\"ivrauth\", error=\"insufficient_scope\", scope=\"...\"`",
        )),
    },
    Shared {
        status: "429",
        description: "`rate_limited`: the client is over its rate limit",
        header: Some(("Retry-After", "Seconds to wait before retrying")),
    },
];

const JSON_BODY: [Shared; 2] = [
    Shared {
        status: "400",
        description: "`malformed_json`, `invalid_body` (naming the JSON path, never the value) or `body_timeout`",
        header: None,
    },
    Shared {
        status: "415",
        description: "`unsupported_media_type`: the body is not `application/json`",
        header: None,
    },
];

/// The document completed with what every operation of a kind answers (see the module
/// documentation) and the body constraints a derive cannot state.
pub fn complete(doc: Document_) -> Value {
    let mut value = serde_json::to_value(&doc).unwrap_or(Value::Null);
    complete_value(&mut value);
    value
}

fn complete_value(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "post" | "put" | "delete" | "patch") {
                continue;
            }
            let bearer = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            // Telephony webhooks read their bodies themselves (no `ApiJson`): no 415.
            let telephony = op["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "telephony"));
            let json_body = !telephony
                && op["requestBody"]["content"]
                    .get("application/json")
                    .is_some();
            let mut shared: Vec<&Shared> = vec![&TOO_LARGE];
            if bearer {
                shared.extend(BEARER.iter());
            }
            if json_body {
                shared.extend(JSON_BODY.iter());
            }
            let responses = &mut op["responses"];
            for s in shared {
                if responses.get(s.status).is_some() {
                    continue;
                }
                let mut response = json!({
                    "description": s.description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                });
                if let Some((name, description)) = s.header {
                    response["headers"] =
                        json!({ name: {"description": description, "schema": {"type": "string"}} });
                }
                responses[s.status] = response;
            }
        }
    }
    constrain(doc);
}

/// Constraints of request bodies that the derives cannot state.
fn constrain(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    schemas["FlowDocument"] = super::flows::flow_document_schema();
    // The client authenticates with HTTP Basic or with both form fields; one field alone
    // is `invalid_request`.
    if let Some(token) = schemas.get_mut("TokenRequest") {
        token["dependentRequired"] =
            json!({"client_id": ["client_secret"], "client_secret": ["client_id"]});
    }
    // A simulation runs exactly one of a stored flow or an inline document.
    if let Some(simulate) = schemas.get_mut("SimulateRequest") {
        // `null` reads as absent, so neither may be `null` where it is the one given.
        simulate["properties"]["flowId"] =
            json!({"type": "string", "description": "A deployed flow's id"});
        simulate["properties"]["flow"] = json!({"$ref": "#/components/schemas/FlowDocument"});
        simulate["oneOf"] = json!([
            {"required": ["flowId"], "not": {"required": ["flow"]}},
            {"required": ["flow"], "not": {"required": ["flowId"]}},
        ]);
    }
}
