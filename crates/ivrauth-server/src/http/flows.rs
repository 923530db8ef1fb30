//! The Flow API (`/api/v2/flows...`): deploy, version, read, delete and validate flow
//! documents, and simulate runs. Handlers are thin: parsing and validation are the core's,
//! storage the store's, running the engine host's ([`crate::app::simulate`]); errors map in [`ApiError`].

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use ivrauth_core::audit::{EventName, Outcome};
use ivrauth_core::flow::{compile, validate, Report};
use ivrauth_core::ports::StoredFlow;
use ivrauth_proto::api::{
    Diagnostic, FlowDetail, FlowList, FlowSummary, SimulateRequest, SimulateResponse,
    ValidationReport,
};
use ivrauth_proto::flow::{document_from_value, FlowDocument};

use super::auth::{FlowRead, FlowSimulate, FlowWrite, Scoped};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::app::audit::audit;
use crate::app::simulate::{self, RunRequest};
use crate::AppState;

/// Routes of the Flow API, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_flow, list_flows))
        .routes(routes!(validate_document))
        .routes(routes!(simulate))
        .routes(routes!(get_flow, update_flow, delete_flow))
        .routes(routes!(validate_stored))
}

/// A flow document, as the OpenAPI document describes it: the fields every document needs
/// (`name`, non-empty `nodes`, `startNode`) and the types of the others. The validator
/// checks much more (node types and properties, edges, reachability) and lists every
/// problem in a 400; those rules are in the flow format's documentation, not in a schema.
pub struct FlowDocumentSchema;

impl utoipa::PartialSchema for FlowDocumentSchema {
    /// A placeholder: `openapi::complete` puts [`flow_document_schema`] in its place (a
    /// `oneOf` of an object and an array is more than utoipa's builders take).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
            utoipa::openapi::schema::Object::new(),
        ))
    }
}

/// The JSON Schema of a flow document in the OpenAPI document (see [`FlowDocumentSchema`]).
pub(crate) fn flow_document_schema() -> Value {
    json!({
        "type": "object",
        "description": "A flow document. The server validates it whole and lists every problem; the schema states the fields every document needs.",
        "required": ["name", "nodes", "startNode"],
        "additionalProperties": false,
        "properties": {
            "formatVersion": {"type": "integer", "minimum": 0},
            "name": {"type": "string", "pattern": "\\S"},
            "description": {"type": "string"},
            "type": {"type": "string"},
            "inputSchema": {"type": "object", "description": "JSON Schema (draft 7) of the run's inputs"},
            "nodes": {
                "description": "The nodes, by key (an object) or in order (an array, keyed by each node's `id`)",
                "oneOf": [
                    {"type": "object", "minProperties": 1, "additionalProperties": {"type": "object"}},
                    {"type": "array", "minItems": 1, "items": {"type": "object"}},
                ],
            },
            "edges": {"type": "array", "items": {"type": "object"}},
            "startNode": {"type": "string"},
            "endNodes": {"type": "array", "items": {"type": "string"}},
            "metadata": {},
        },
    })
}

impl utoipa::ToSchema for FlowDocumentSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "FlowDocument".into()
    }
}

/// A document's shape error (a string where an array belongs) as a diagnostic.
fn shape_error(e: &ivrauth_proto::flow::DocumentParseError) -> Diagnostic {
    let path = if e.path.is_empty() {
        String::new()
    } else {
        format!("/{}", e.path.replace('.', "/"))
    };
    Diagnostic {
        path,
        node_id: None,
        code: "invalid_shape".to_owned(),
        message: scrub(&e.message),
    }
}

/// serde's messages quote the offending value (`invalid type: string "x"`); a flow document
/// holds no caller secrets, but keep the habit: say what was expected, not what was sent.
fn scrub(message: &str) -> String {
    match (message.find(": "), message.find(", expected")) {
        (Some(a), Some(b)) if a < b && message.starts_with("invalid") => {
            format!("{}{}", &message[..a], &message[b..])
        }
        _ => message.to_owned(),
    }
}

fn parse(body: &Value) -> Result<FlowDocument, Report> {
    document_from_value(body).map_err(|e| Report {
        errors: vec![shape_error(&e)],
        warnings: Vec::new(),
    })
}

fn invalid_flow(report: Report) -> ApiError {
    let n = report.errors.len();
    ApiError::BadRequest {
        code: "invalid_flow".to_owned(),
        message: format!(
            "the flow document has {n} problem{}",
            if n == 1 { "" } else { "s" }
        ),
        errors: report.errors,
    }
}

/// Validate for storage: the document's name and its warnings, or a 400 listing every problem.
fn check_for_deploy(body: &Value) -> Result<(String, Vec<Diagnostic>), ApiError> {
    let doc = parse(body).map_err(invalid_flow)?;
    let (flow, warnings) = compile(&doc).map_err(invalid_flow)?;
    Ok((flow.name, warnings))
}

fn summary(f: &StoredFlow) -> FlowSummary {
    FlowSummary {
        id: f.id.clone(),
        name: f.name.clone(),
        version: f.version,
        created_at: f.created_at.to_rfc3339(),
        updated_at: f.updated_at.to_rfc3339(),
        created_by: f.created_by.clone(),
    }
}

fn detail(f: &StoredFlow, warnings: Vec<Diagnostic>) -> Result<FlowDetail, ApiError> {
    let document = serde_json::from_str(&f.document)
        .map_err(|e| ApiError::Internal(format!("stored flow {} is not JSON: {e}", f.id)))?;
    Ok(FlowDetail {
        summary: summary(f),
        document,
        warnings,
    })
}

/// Deploy a new flow (version 1).
#[utoipa::path(post, path = "/api/v2/flows", tag = "flows", security(("bearer" = ["flow:write"])),
    request_body(content = FlowDocumentSchema, description = "A flow document"),
    responses((status = 201, description = "Deployed", body = FlowDetail),
              (status = 400, description = "`invalid_flow` (every problem listed), or a body that does not parse", body = ivrauth_proto::api::ErrorBody)))]
pub async fn create_flow(
    caller: Scoped<FlowWrite>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let (name, warnings) = check_for_deploy(&body)?;
    let id = uuid::Uuid::new_v4().to_string();
    let stored = state
        .store
        .create_flow(
            &id,
            &name,
            &body.to_string(),
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    audit(
        &state,
        EventName::FlowCreated,
        Outcome::Success,
        caller.actor(),
        &id,
        None,
        json!({"name": name, "version": 1}),
    )
    .await?;
    let location = format!("/api/v2/flows/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(detail(&stored, warnings)?),
    )
        .into_response())
}

/// The latest version of every flow.
#[utoipa::path(get, path = "/api/v2/flows", tag = "flows", security(("bearer" = ["flow:read"])),
    responses((status = 200, description = "Flows", body = FlowList)))]
pub async fn list_flows(
    _caller: Scoped<FlowRead>,
    State(state): State<AppState>,
) -> Result<Json<FlowList>, ApiError> {
    let flows = state.store.list_flows().await?;
    Ok(Json(FlowList {
        entities: flows.iter().map(summary).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VersionQuery {
    /// An older version; the latest when absent.
    pub version: Option<i64>,
}

async fn load(state: &AppState, id: &str, version: Option<i64>) -> Result<StoredFlow, ApiError> {
    state
        .store
        .get_flow(id, version)
        .await?
        .ok_or_else(|| match version {
            Some(v) => ApiError::NotFound(format!("flow `{}` has no version {v}", printable(id))),
            None => ApiError::NotFound(format!("no flow `{}`", printable(id))),
        })
}

/// Ids are ours (UUIDs) or an operator's; quote at most a short, printable form.
fn printable(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// One flow: document and metadata.
#[utoipa::path(get, path = "/api/v2/flows/{id}", tag = "flows", security(("bearer" = ["flow:read"])),
    params(("id" = String, Path, description = "Flow id"), VersionQuery),
    responses((status = 200, description = "The flow", body = FlowDetail),
              (status = 400, description = "`invalid_path` or `invalid_query`", body = ivrauth_proto::api::ErrorBody),
              (status = 404, description = "`not_found`: No such flow or version", body = ivrauth_proto::api::ErrorBody)))]
pub async fn get_flow(
    _caller: Scoped<FlowRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<Json<FlowDetail>, ApiError> {
    let stored = load(&state, &id, q.version).await?;
    let warnings = parse(&serde_json::from_str(&stored.document).unwrap_or(Value::Null))
        .map(|d| validate(&d).warnings)
        .unwrap_or_default();
    Ok(Json(detail(&stored, warnings)?))
}

/// Deploy a new version of a flow; older versions are kept.
#[utoipa::path(put, path = "/api/v2/flows/{id}", tag = "flows", security(("bearer" = ["flow:write"])),
    params(("id" = String, Path, description = "Flow id")),
    request_body(content = FlowDocumentSchema, description = "A flow document"),
    responses((status = 200, description = "The new version", body = FlowDetail),
              (status = 400, description = "`invalid_flow` (every problem listed), `invalid_path`, or a body that does not parse", body = ivrauth_proto::api::ErrorBody),
              (status = 404, description = "`not_found`: No such flow", body = ivrauth_proto::api::ErrorBody)))]
pub async fn update_flow(
    caller: Scoped<FlowWrite>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<FlowDetail>, ApiError> {
    let (name, warnings) = check_for_deploy(&body)?;
    let stored = match state
        .store
        .update_flow(
            &id,
            &name,
            &body.to_string(),
            caller.actor(),
            state.clock.now(),
        )
        .await
    {
        Err(ivrauth_core::ports::StoreError::NotFound) => {
            return Err(ApiError::NotFound(format!("no flow `{}`", printable(&id))))
        }
        other => other?,
    };
    audit(
        &state,
        EventName::FlowUpdated,
        Outcome::Success,
        caller.actor(),
        &id,
        None,
        json!({"name": name, "version": stored.version}),
    )
    .await?;
    Ok(Json(detail(&stored, warnings)?))
}

/// Delete a flow: new runs are refused; runs under way finish on the version they started with.
#[utoipa::path(delete, path = "/api/v2/flows/{id}", tag = "flows", security(("bearer" = ["flow:write"])),
    params(("id" = String, Path, description = "Flow id")),
    responses((status = 204, description = "Deleted"),
              (status = 400, description = "`invalid_path`", body = ivrauth_proto::api::ErrorBody),
              (status = 404, description = "`not_found`: No such flow", body = ivrauth_proto::api::ErrorBody)))]
pub async fn delete_flow(
    caller: Scoped<FlowWrite>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_flow(&id, state.clock.now()).await? {
        return Err(ApiError::NotFound(format!("no flow `{}`", printable(&id))));
    }
    audit(
        &state,
        EventName::FlowDeleted,
        Outcome::Success,
        caller.actor(),
        &id,
        None,
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn report_body(r: Report) -> ValidationReport {
    ValidationReport {
        valid: r.errors.is_empty(),
        errors: r.errors,
        warnings: r.warnings,
    }
}

/// Validate a document without storing it.
#[utoipa::path(post, path = "/api/v2/flows/validate", tag = "flows", security(("bearer" = ["flow:read"])),
    request_body(content = Value, description = "Any JSON value: what is not a valid flow document is reported, not refused"),
    responses((status = 200, description = "Every problem found", body = ValidationReport)))]
pub async fn validate_document(
    _caller: Scoped<FlowRead>,
    ApiJson(body): ApiJson<Value>,
) -> Json<ValidationReport> {
    Json(report_body(match parse(&body) {
        Ok(doc) => validate(&doc),
        Err(r) => r,
    }))
}

/// Validate a stored flow again (for example after the server learnt new rules).
#[utoipa::path(post, path = "/api/v2/flows/{id}/validate", tag = "flows", security(("bearer" = ["flow:read"])),
    params(("id" = String, Path, description = "Flow id"), VersionQuery),
    responses((status = 200, description = "Every problem found", body = ValidationReport),
              (status = 400, description = "`invalid_path` or `invalid_query`", body = ivrauth_proto::api::ErrorBody),
              (status = 404, description = "`not_found`: No such flow", body = ivrauth_proto::api::ErrorBody)))]
pub async fn validate_stored(
    _caller: Scoped<FlowRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<Json<ValidationReport>, ApiError> {
    let stored = load(&state, &id, q.version).await?;
    let body: Value = serde_json::from_str(&stored.document)
        .map_err(|e| ApiError::Internal(format!("stored flow is not JSON: {e}")))?;
    Ok(Json(report_body(match parse(&body) {
        Ok(doc) => validate(&doc),
        Err(r) => r,
    })))
}

/// Run a stored flow (`flowId`) or an unsaved document (`flow`) and return its trace, in
/// which every secure value, and everything derived from one, reads `********`.
#[utoipa::path(post, path = "/api/v2/flows/simulate", tag = "flows", security(("bearer" = ["flow:simulate"])),
    request_body = SimulateRequest,
    responses((status = 200, description = "The run's outcome and masked trace", body = SimulateResponse),
              (status = 400, description = "`invalid_body` (not exactly one of `flowId` and `flow`, or a body that does not parse), `invalid_flow`, `invalid_input` (the input does not match the flow's `inputSchema`)", body = ivrauth_proto::api::ErrorBody),
              (status = 403, description = "`insufficient_scope`: the token lacks `flow:simulate`, or the flow reaches accounts and the token lacks `identity:simulate` (or `[simulate] identity` is `off`)", body = ivrauth_proto::api::ErrorBody),
              (status = 404, description = "`not_found`: No such flow", body = ivrauth_proto::api::ErrorBody)))]
pub async fn simulate(
    caller: Scoped<FlowSimulate>,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SimulateRequest>,
) -> Result<Json<SimulateResponse>, ApiError> {
    let environment = req.environment.unwrap_or_else(|| "test".to_owned());
    let contact = req.contact.unwrap_or_default();
    let input = if req.input.is_null() {
        json!({})
    } else {
        req.input
    };
    let (flow, flow_id, version) = match (req.flow_id, req.flow) {
        (Some(id), None) => {
            let stored = load(&state, &id, req.version).await?;
            (
                state.flow_cache.get_or_compile(&stored)?,
                Some(id),
                Some(stored.version),
            )
        }
        (None, Some(doc)) => {
            let parsed = parse(&doc).map_err(invalid_flow)?;
            let (flow, _) = compile(&parsed).map_err(invalid_flow)?;
            (std::sync::Arc::new(flow), None, None)
        }
        _ => {
            return Err(ApiError::BadRequest {
                code: "invalid_body".to_owned(),
                message: "give exactly one of `flowId` (a deployed flow) or `flow` (a document)"
                    .to_owned(),
                errors: Vec::new(),
            })
        }
    };
    // Actions that reach an account need a scope of their own, and a directory to reach.
    if flow.reaches_accounts() {
        let scope = <super::auth::IdentitySimulate as super::auth::RequiredScope>::SCOPE;
        if !caller.scopes.iter().any(|s| s == scope)
            || matches!(state.simulate_identity, crate::SimulateIdentity::Off)
        {
            return Err(ApiError::Forbidden {
                scope: scope.to_owned(),
            });
        }
    }
    let response = simulate::simulate(
        &state,
        RunRequest {
            flow: &flow,
            flow_id,
            version,
            input: &input,
            contact,
            environment,
            actor: caller.actor(),
            digits: req
                .digits
                .into_iter()
                .map(ivrauth_core::secret::Secret::new)
                .collect(),
        },
    )
    .await?;
    Ok(Json(response))
}
