//! The HTTP face of ivrauth: the REST API (token endpoint, Flow API, simulation), health
//! and OpenAPI document, routed with axum and served by the accept loop in [`connections`]
//! (timeouts and a connection cap).
//!
//! This is the only crate that knows HTTP. It is for: routing, authentication of API
//! clients (OAuth2 client credentials and bearer tokens), scopes, per-client rate limits,
//! mapping every error to one JSON body shape, and request tracing. It is not for: flow
//! rules (those live in `ivrauth-core`), storage (`ivrauth-store` implements the ports held
//! here as `Arc<dyn Store>`), performing outbound HTTP (`ivrauth-connect`) or reading
//! configuration files (the `ivrauth` binary builds a [`ServerConfig`]).
//!
//! Time comes from the injected [`Clock`], never from the system directly, so tests move a
//! fake clock instead of sleeping.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use ivrauth_connect::HttpExecutor;
use ivrauth_core::ports::Store;
use ivrauth_core::time::Clock;

pub mod auth;
pub mod calls;
pub mod connections;
pub mod demo;
pub mod error;
pub mod extract;
pub mod flows;
pub mod identity;
pub mod openapi;
pub mod ratelimit;
pub mod refusals;
pub mod runtime;

pub use auth::{FlowRead, FlowSimulate, FlowWrite, RequiredScope, Scoped};
pub use connections::ServeLimits;
pub use error::ApiError;
pub use extract::{ApiJson, ApiPath, ApiQuery};
pub use ratelimit::RateLimiter;

/// Settings of the HTTP server. The binary layers file, environment and flags into this.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Lifetime of issued access tokens.
    pub token_ttl_secs: u64,
    /// Sustained requests per second each client may make on token-protected routes; the
    /// same rate limits, at the token endpoint, the tokens issued to each client, the
    /// refusals for each existing client id, and the refusals for unknown client ids (all
    /// of those together).
    pub rate_limit_per_sec: u32,
    /// Requests a client may make in a burst before the sustained rate applies (for each of
    /// the buckets above).
    pub rate_limit_burst: u32,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Whether the demo flows were installed (`serve --demo`).
    pub demo: bool,
    /// The URL clients reach this server at, when it differs from the listen address.
    pub public_base_url: Option<String>,
    /// Bounds of simulation runs.
    pub simulate: runtime::SimulateConfig,
    /// Connection timeouts and cap, applied by [`serve`].
    pub limits: ServeLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token_ttl_secs: 3600,
            rate_limit_per_sec: 50,
            rate_limit_burst: 100,
            max_body_bytes: 1024 * 1024,
            demo: false,
            public_base_url: None,
            simulate: runtime::SimulateConfig::default(),
            limits: ServeLimits::default(),
        }
    }
}

/// What the identity actions of simulations reach (`[simulate] identity`). Every mode also
/// needs the client's scope `identity:simulate`.
#[derive(Clone, Default)]
pub enum SimulateIdentity {
    /// The configured directory, limited per client as if the client were one caller.
    #[default]
    Live,
    /// Only the built-in demo accounts (a directory of their own), never the live one.
    Demo(Arc<identity::IdentityService>),
    /// Refused like a missing scope.
    Off,
}

/// Everything a handler needs; cheap to clone (all shared).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    pub rate_limiter: Arc<RateLimiter>,
    /// Performs the `http` nodes of flows (simulation and, later, calls).
    pub http: Arc<HttpExecutor>,
    /// Compiled flow versions, so a run does not re-validate its document.
    pub flow_cache: Arc<runtime::FlowCache>,
    /// Performs `identity.*` actions; `None` when no directory is configured.
    pub identity: Option<Arc<identity::IdentityService>>,
    /// What simulations' identity actions reach (`[simulate] identity`).
    pub simulate_identity: SimulateIdentity,
    /// Refused requests, counted and audited once per key and interval.
    pub refusals: Arc<refusals::RefusalLog>,
    /// Call sessions: the sealing keys, idle expiry, platform settings.
    pub calls: Arc<calls::session::CallsConfig>,
}

impl AppState {
    /// Build the state; the rate limiter is made from the config.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        http: Arc<HttpExecutor>,
    ) -> Self {
        let rate_limiter = Arc::new(RateLimiter::new(
            config.rate_limit_per_sec,
            config.rate_limit_burst,
        ));
        AppState {
            store,
            clock,
            config: Arc::new(config),
            rate_limiter,
            http,
            flow_cache: Arc::default(),
            identity: None,
            simulate_identity: SimulateIdentity::Live,
            refusals: Arc::default(),
            calls: Arc::default(),
        }
    }

    /// The same state with these call settings.
    pub fn with_calls(mut self, calls: calls::session::CallsConfig) -> Self {
        self.calls = Arc::new(calls);
        self
    }

    /// The same state with simulations' identity actions reaching `what`.
    pub fn with_simulate_identity(mut self, what: SimulateIdentity) -> Self {
        self.simulate_identity = what;
        self
    }

    /// The service a simulation's identity actions go to, if any.
    pub fn simulation_identity(&self) -> Option<&Arc<identity::IdentityService>> {
        match &self.simulate_identity {
            SimulateIdentity::Live => self.identity.as_ref(),
            SimulateIdentity::Demo(service) => Some(service),
            SimulateIdentity::Off => None,
        }
    }

    /// The same state with `identity.*` actions performed by `service`.
    pub fn with_identity(mut self, service: identity::IdentityService) -> Self {
        self.identity = Some(Arc::new(service));
        self
    }
}

/// The whole API: token endpoint, health, OpenAPI, the Flow API; JSON errors for unknown
/// routes and methods; body limit; request tracing.
pub fn router(state: AppState) -> Router {
    with_state_and_layers(Router::new(), state)
}

/// [`router`] plus `extra` routes sharing the same state, layers and error handling (tests
/// use this to mount probe handlers behind the scope extractor).
pub fn router_with(extra: Router<AppState>, state: AppState) -> Router {
    with_state_and_layers(extra, state)
}

fn with_state_and_layers(extra: Router<AppState>, state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let demo = if state.config.demo {
        demo::routes()
    } else {
        Router::new()
    };
    Router::new()
        .route("/healthz", get(healthz))
        .merge(auth::routes())
        .merge(openapi::routes())
        .merge(flows::routes())
        .merge(calls::web::routes())
        .merge(demo)
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::reject_oversized,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        status = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(
                    |res: &axum::response::Response,
                     latency: std::time::Duration,
                     span: &tracing::Span| {
                        span.record("status", res.status().as_u16());
                        tracing::info!(latency_ms = latency.as_millis() as u64, "response");
                    },
                )
                .on_failure(()),
        )
        .with_state(state)
}

/// Serve [`router`] on `listener` within `state.config.limits` until `shutdown` completes,
/// then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.limits;
    serve_router_with_limits(listener, router(state), limits, shutdown).await
}

/// Serve an already built router (see [`router_with`]) within the default [`ServeLimits`].
/// Every request carries its connection's peer address as a `ConnectInfo<SocketAddr>`
/// extension (the VoiceXML allow-list reads it).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router_with_limits(listener, app, ServeLimits::default(), shutdown).await
}

/// Serve an already built router within `limits` (timeouts and connection cap, see
/// [`connections`]) until `shutdown` completes, then finish in-flight requests.
pub async fn serve_router_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    connections::serve(listener, app, limits, shutdown).await
}

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

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
