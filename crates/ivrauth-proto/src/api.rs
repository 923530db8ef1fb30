//! REST bodies of the Flow API, the simulation endpoint and the token endpoint.
//!
//! Field names are contracts (camelCase where the seed's Genesys-style API uses it,
//! snake_case in OAuth2 bodies as RFC 6749 prescribes).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The string every secret value is replaced with in responses and traces.
pub const MASK: &str = "********";

/// One problem found in a flow document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    /// JSON pointer into the document (`/nodes/http_auth/properties/url`).
    pub path: String,
    /// The node the problem is about, when there is one.
    pub node_id: Option<String>,
    /// A stable machine-readable code, such as `unknown_edge_target`. For problems with a
    /// run's input (`invalid_input`), the JSON Schema keyword that failed (`required`, `type`).
    pub code: String,
    pub message: String,
}

/// `POST /api/v2/flows/validate` and `/api/v2/flows/{id}/validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationReport {
    pub valid: bool,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// Every error body the API returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Diagnostic>,
}

/// A stored flow as listed and returned by the Flow API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FlowSummary {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FlowDetail {
    #[serde(flatten)]
    pub summary: FlowSummary,
    pub document: Value,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FlowList {
    pub entities: Vec<FlowSummary>,
}

/// `POST /api/v2/flows/simulate`: either `flowId` of a stored flow or `flow`, a document.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Value>,
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Host variables visible as `contact.*` (for example `ani`, `ipAddress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<serde_json::Map<String, Value>>,
    /// Keys for the flow's prompts, one entry per collect or menu turn (`""` is a silent
    /// turn). Prompts beyond the list time out. Never echoed: they may be PINs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digits: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SimulateResponse {
    pub flow_id: Option<String>,
    pub version: Option<i64>,
    pub trace_id: String,
    pub environment: String,
    pub outcome: Outcome,
    pub trace: Vec<TraceEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub end_node: Option<String>,
    pub status_code: Option<u16>,
    /// Set when the run stopped without reaching an end node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunFailure>,
    /// Set when the run ended at a `transfer` node (`endNode` is that node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferOutcome>,
    /// True when the run ended at a `hangup` node (`endNode` is that node).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hangup: bool,
}

/// Where a `transfer` node sends the call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TransferOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunFailure {
    pub code: String,
    pub message: String,
}

/// One executed node. Secure values, and everything derived from one, read [`MASK`].
///
/// A node is named by its key in `nodes` (the name edges and placeholders use), and may
/// carry an inner `id` that differs from it: `nodeId` and `nodeKey` are both the key
/// (`nodeKey` for clients written before `nodeId` became the key), `id` is the inner id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TraceEntry {
    pub step: u32,
    /// The node's key: the name it is listed under in `nodes`, which edges use.
    pub node_id: String,
    /// The same key as `nodeId`.
    pub node_key: String,
    /// The node's inner `id` (its key when the document gives none).
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<TraceRequest>,
    /// An action node's action and inputs (secure inputs masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<TraceAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Map<String, Value>>,
    /// Problems met while executing the node (a condition that failed to evaluate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The edge taken out of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceAction {
    pub name: String,
    pub inputs: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceRequest {
    pub method: String,
    pub url: String,
}

/// RFC 6749 §5.1 access token response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}

/// RFC 6749 §5.2 error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}
