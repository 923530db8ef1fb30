//! The server: application services and their HTTP faces, in three module trees.
//!
//! - [`app`]: what the server does, with no HTTP in it: the engine host (simulations and
//!   call turns perform the engine's commands through one function), identity actions,
//!   the compiled-flow cache, audit writing, call-state sealing.
//! - [`http`]: the REST API (token endpoint, Flow API, simulation), health, the OpenAPI
//!   document, extractors, the one error type, and the accept loop
//!   ([`http::connections`]: timeouts and a connection cap).
//! - [`calls`]: the telephony front-ends, one file per platform.
//!
//! This crate root assembles them: [`AppState`], [`router`] and [`serve`]. This is the
//! only crate that knows HTTP. It is not for: flow rules (those live in `ivrauth-core`),
//! storage (`ivrauth-store` implements the ports held here as `Arc<dyn Store>`), performing
//! outbound HTTP (`ivrauth-connect`) or reading configuration files (the `ivrauth` binary
//! builds a [`ServerConfig`]).
//!
//! Time comes from the injected [`Clock`], never from the system directly, so tests move a
//! fake clock instead of sleeping.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::Router;
use tower_http::trace::TraceLayer;

use ivrauth_connect::HttpExecutor;
use ivrauth_core::ports::Store;
use ivrauth_core::time::Clock;

pub mod app;
pub mod calls;
pub mod http;

pub use app::ratelimit::RateLimiter;
pub use http::auth::{FlowRead, FlowSimulate, FlowWrite, RequiredScope, Scoped};
pub use http::connections::ServeLimits;
pub use http::error::ApiError;
pub use http::extract::{ApiJson, ApiPath, ApiQuery};

use app::identity::IdentityService;
use app::seal::SessionKeys;
use app::simulate::SimulateConfig;

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
    pub simulate: SimulateConfig,
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
            simulate: SimulateConfig::default(),
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
    Demo(Arc<IdentityService>),
    /// Refused like a missing scope.
    Off,
}

/// Settings of calls (sessions, platforms).
pub struct CallsConfig {
    /// Seals call state; the first key seals, all open (rotation).
    pub keys: SessionKeys,
    /// A session idle for longer is over.
    pub idle_secs: i64,
    /// Turns one call may take; the next one ends the call (`turn_limit_exceeded`).
    pub max_turns: u32,
    /// Twilio, jambonz, VoiceXML, public URL.
    pub platforms: calls::PlatformConfig,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            keys: SessionKeys::generate(),
            idle_secs: app::turn::DEFAULT_IDLE_SECS,
            max_turns: app::turn::DEFAULT_MAX_TURNS,
            platforms: Default::default(),
        }
    }
}

/// Everything a handler needs; cheap to clone (all shared).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    pub rate_limiter: Arc<RateLimiter>,
    /// Performs the `http` nodes of flows (simulations and calls).
    pub http: Arc<HttpExecutor>,
    /// Compiled flow versions, so a run does not re-validate its document.
    pub flow_cache: Arc<app::flow_cache::FlowCache>,
    /// Performs `identity.*` actions; `None` when no directory is configured.
    pub identity: Option<Arc<IdentityService>>,
    /// What simulations' identity actions reach (`[simulate] identity`).
    pub simulate_identity: SimulateIdentity,
    /// Refused requests, counted and audited once per key and interval.
    pub refusals: Arc<app::refusals::RefusalLog>,
    /// Call sessions: the sealing keys, idle expiry, platform settings.
    pub calls: Arc<CallsConfig>,
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
    pub fn with_calls(mut self, calls: CallsConfig) -> Self {
        self.calls = Arc::new(calls);
        self
    }

    /// The same state with simulations' identity actions reaching `what`.
    pub fn with_simulate_identity(mut self, what: SimulateIdentity) -> Self {
        self.simulate_identity = what;
        self
    }

    /// The service a simulation's identity actions go to, if any.
    pub fn simulation_identity(&self) -> Option<&Arc<IdentityService>> {
        match &self.simulate_identity {
            SimulateIdentity::Live => self.identity.as_ref(),
            SimulateIdentity::Demo(service) => Some(service),
            SimulateIdentity::Off => None,
        }
    }

    /// The same state with `identity.*` actions performed by `service`.
    pub fn with_identity(mut self, service: IdentityService) -> Self {
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

/// Every route the server answers, each registered together with its OpenAPI operation
/// (`utoipa_axum::routes!` reads the handler's `#[utoipa::path]`), so a route cannot be
/// served without being documented. The demo identity endpoint is there only with `demo`.
pub fn api_routes(demo: bool) -> utoipa_axum::router::OpenApiRouter<AppState> {
    let routes = utoipa_axum::router::OpenApiRouter::with_openapi(http::openapi::base())
        .routes(utoipa_axum::routes!(http::healthz))
        .merge(http::auth::routes())
        .merge(http::openapi::routes())
        .merge(http::flows::routes())
        .merge(calls::routes());
    if demo {
        routes.merge(http::demo::routes())
    } else {
        routes
    }
}

/// The OpenAPI document of the routes [`router`] serves with this config (`/openapi.json`).
pub fn openapi(demo: bool) -> serde_json::Value {
    http::openapi::complete(api_routes(demo).into_openapi())
}

fn with_state_and_layers(extra: Router<AppState>, state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let (api, doc) = api_routes(state.config.demo).split_for_parts();
    let doc = http::openapi::Document::new(http::openapi::complete(doc));
    Router::new()
        .merge(api)
        .layer(axum::Extension(doc))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::extract::reject_oversized,
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
/// [`http::connections`]) until `shutdown` completes, then finish in-flight requests.
pub async fn serve_router_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http::connections::serve(listener, app, limits, shutdown).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
