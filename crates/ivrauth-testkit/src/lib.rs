//! Test helpers for ivrauth's crates (a dev-dependency only, never shipped).
//!
//! [`FakeClock`] is a [`Clock`] tests move by hand instead of sleeping; [`TestServer`] runs
//! the real router (through [`ivrauth_server::serve_router_with_limits`], within the config's
//! connection limits) on `127.0.0.1:0` with a fresh SQLite store in a temporary directory and
//! a fake clock, and offers shortcuts to create API clients and fetch tokens through the real
//! token endpoint.
//!
//! Helpers return [`Result`] rather than panicking; tests `unwrap()` them.

pub mod identity;
pub mod identity_conformance;
pub mod oauth2_server;
pub mod schemathesis;
pub mod slapd;
pub mod telephony;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ivrauth_connect::{HttpConfig, HttpExecutor, TokioSleeper};
use ivrauth_core::clients::hash_credential;
use ivrauth_core::ports::{ClientRecord, ClientStore as _, Store};
use ivrauth_core::time::{Clock, UnixMillis};
use ivrauth_proto::api::TokenResponse;
use ivrauth_server::{AppState, ServerConfig};
use ivrauth_store::SqliteStore;

/// Where a [`TestServer`]'s clock starts: 2025-01-01T00:00:00Z.
pub const TEST_EPOCH: UnixMillis = UnixMillis(1_735_689_600_000);

/// The counter key tests give their identity service.
pub const TEST_ACCOUNT_KEY: [u8; 32] = [0x5a; 32];

/// The key `account`'s lockout counters are kept under by `ivrauth` (serve, account, call)
/// running on `data_dir` with default settings: derived from `data_dir/call-session.key`,
/// which is created (owner-only) when missing, as the first command would create it.
pub fn data_dir_counter_key(data_dir: &std::path::Path, account: &str) -> Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("call-session.key");
    if !path.exists() {
        std::fs::create_dir_all(data_dir).map_err(|e| err("create data dir", e))?;
        // A test key: unique per directory, not secret.
        use sha2::Digest as _;
        let key = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
        let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()))
            .map_err(|e| err("write call-session.key", e))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err("read call-session.key", e))?;
    let keys = ivrauth_server::app::seal::SessionKeys::from_base64(&[text.trim()])
        .map_err(|e| err("call-session.key", e))?;
    let account = ivrauth_core::identity::AccountRules::default()
        .normalise(account)
        .map_err(|e| err("account number", e))?;
    Ok(keys.account_key().counter_key(&account))
}

/// argon2 parameters cheap enough for tests that hash many PINs.
pub const CHEAP_HASH: ivrauth_core::identity::HashParams = ivrauth_core::identity::HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// The identity service most tests use: the built-in directory (hashing with `params`) on
/// the server's own store and clock, `policy`, no timing padding, the default account
/// rules and lookup allowance, and [`TEST_ACCOUNT_KEY`]. Override fields with struct
/// update syntax.
pub fn builtin_identity(
    store: &Arc<SqliteStore>,
    clock: &FakeClock,
    params: ivrauth_core::identity::HashParams,
    policy: ivrauth_core::identity::LockoutPolicy,
) -> Result<ivrauth_server::app::identity::IdentityService> {
    use ivrauth_server::app::identity::{
        lookup_limiter, IdentityService, DEFAULT_LOOKUPS_PER_HOUR,
    };
    let directory = ivrauth_store::BuiltinDirectory::new(
        store.clone(),
        params,
        ivrauth_store::HashPool::new(2),
        Arc::new(clock.clone()),
    );
    let provider: Arc<dyn ivrauth_core::identity::IdentityProvider> =
        Arc::new(directory.map_err(|e| err("the built-in directory", e))?);
    Ok(IdentityService {
        provider,
        store: store.clone(),
        policy,
        min_verify_duration: std::time::Duration::ZERO,
        clock: Arc::new(clock.clone()),
        sleeper: Arc::new(ivrauth_connect::TokioSleeper),
        account_rules: Default::default(),
        account_key: ivrauth_core::identity::AccountKey::new(TEST_ACCOUNT_KEY.to_vec()),
        lookup_limiter: lookup_limiter(DEFAULT_LOOKUPS_PER_HOUR),
    })
}

/// The key `account`'s lockout counters are kept under by an identity service with
/// [`TEST_ACCOUNT_KEY`] and the default account rules.
pub fn counter_key(account: &str) -> String {
    use ivrauth_core::identity::{AccountKey, AccountRules};
    match AccountRules::default().normalise(account) {
        Ok(a) => AccountKey::new(TEST_ACCOUNT_KEY.to_vec()).counter_key(&a),
        Err(_) => ivrauth_core::identity::INVALID_ACCOUNT_KEY.to_owned(),
    }
}

/// Why a helper failed.
#[derive(Debug)]
pub struct TestkitError(pub String);

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TestkitError {}

pub type Result<T> = std::result::Result<T, TestkitError>;

pub(crate) fn err(context: &str, e: impl fmt::Display) -> TestkitError {
    TestkitError(format!("{context}: {e}"))
}

/// A clock that only moves when told. Clones share the same time.
#[derive(Debug, Clone)]
pub struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub fn new(start: UnixMillis) -> Self {
        FakeClock(Arc::new(AtomicI64::new(start.0)))
    }

    /// Move forward by `d` (saturating).
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }

    /// Jump to `t` (backwards too).
    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

/// How to start a [`TestServer`].
pub struct TestServerBuilder {
    config: ServerConfig,
    http: HttpConfig,
    routes: Router<AppState>,
    start: UnixMillis,
    identity: Option<IdentityHook>,
    calls: ivrauth_server::CallsConfig,
    map_state: Option<StateHook>,
}

/// Changes the finished state (last, after the identity service and calls are set).
type StateHook = Box<dyn FnOnce(AppState, &Arc<SqliteStore>, &FakeClock) -> AppState + Send>;

/// Builds the server's identity service from its store and clock.
type IdentityHook = Box<
    dyn FnOnce(&Arc<SqliteStore>, &FakeClock) -> ivrauth_server::app::identity::IdentityService
        + Send,
>;

impl TestServerBuilder {
    /// Change the server config (defaults: [`ServerConfig::default`]).
    pub fn config(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The flow runtime's HTTP executor config (default: [`HttpConfig::default`]).
    pub fn http_config(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// Extra routes mounted beside the real ones, with the same state, layers and errors
    /// (for probe handlers, such as one guarded by a scope extractor).
    pub fn routes(mut self, routes: Router<AppState>) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Perform `identity.*` actions with the service `f` builds from the server's own store
    /// and fake clock.
    pub fn identity(
        mut self,
        f: impl FnOnce(&Arc<SqliteStore>, &FakeClock) -> ivrauth_server::app::identity::IdentityService
            + Send
            + 'static,
    ) -> Self {
        self.identity = Some(Box::new(f));
        self
    }

    /// Change the call settings (sessions, Twilio, jambonz).
    pub fn calls(mut self, f: impl FnOnce(&mut ivrauth_server::CallsConfig)) -> Self {
        f(&mut self.calls);
        self
    }

    /// Change the finished state (say, what simulations' identity actions reach), given the
    /// server's own store and fake clock.
    pub fn map_state(
        mut self,
        f: impl FnOnce(AppState, &Arc<SqliteStore>, &FakeClock) -> AppState + Send + 'static,
    ) -> Self {
        self.map_state = Some(Box::new(f));
        self
    }

    /// Where the fake clock starts (default [`TEST_EPOCH`]).
    pub fn clock_start(mut self, t: UnixMillis) -> Self {
        self.start = t;
        self
    }

    pub async fn start(self) -> Result<TestServer> {
        let dir = tempfile::TempDir::new().map_err(|e| err("temp dir", e))?;
        let store = Arc::new(
            SqliteStore::open(dir.path())
                .await
                .map_err(|e| err("open store", e))?,
        );
        let clock = FakeClock::new(self.start);
        let http = HttpExecutor::new(self.http, Arc::new(TokioSleeper), Arc::new(clock.clone()))
            .map_err(|e| err("http executor", e))?;
        let dyn_store: Arc<dyn Store> = store.clone();
        let mut state = AppState::new(
            dyn_store,
            Arc::new(clock.clone()),
            self.config,
            Arc::new(http),
        );
        if let Some(f) = self.identity {
            state = state.with_identity(f(&store, &clock));
        }
        state = state.with_calls(self.calls);
        if let Some(f) = self.map_state {
            state = f(state, &store, &clock);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err("bind", e))?;
        let addr = listener.local_addr().map_err(|e| err("local addr", e))?;
        let app = ivrauth_server::router_with(self.routes, state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(ivrauth_server::serve_router_with_limits(
            listener,
            app,
            state.config.limits,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(TestServer {
            base_url: format!("http://{addr}"),
            clock,
            store,
            state,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
            next_client: AtomicU64::new(1),
            dir,
        })
    }
}

/// The real server on an ephemeral loopback port. Stops when dropped or on [`shutdown`].
///
/// [`shutdown`]: TestServer::shutdown
pub struct TestServer {
    base_url: String,
    clock: FakeClock,
    store: Arc<SqliteStore>,
    state: AppState,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    next_client: AtomicU64,
    // Last: dropped after the server was told to stop.
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Start with the default config.
    pub async fn start() -> Result<TestServer> {
        Self::builder().start().await
    }

    /// Start with config overrides, e.g. `TestServer::start_with(|c| c.rate_limit_burst = 3)`.
    pub async fn start_with(overrides: impl FnOnce(&mut ServerConfig)) -> Result<TestServer> {
        Self::builder().config(overrides).start().await
    }

    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            config: ServerConfig::default(),
            http: HttpConfig::default(),
            routes: Router::new(),
            start: TEST_EPOCH,
            identity: None,
            calls: Default::default(),
            map_state: None,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn clock(&self) -> &FakeClock {
        &self.clock
    }

    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    /// The state the server runs with.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A plain HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Create an API client straight in the store; `scopes` like `["flow:read"]`.
    /// Returns `(client_id, client_secret)`.
    pub async fn create_client(&self, name: &str, scopes: &[&str]) -> Result<(String, String)> {
        let n = self.next_client.fetch_add(1, Ordering::SeqCst);
        let id = format!("cli_test{n}");
        let secret = ivrauth_server::http::auth::mint_token();
        let record = ClientRecord {
            id: id.clone(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            secret_hash: hash_credential(&secret),
            previous_secret_hash: None,
            previous_valid_until: None,
            created_at: self.clock.now(),
            revoked_at: None,
        };
        self.store
            .create_client(&record)
            .await
            .map_err(|e| err("create client", e))?;
        Ok((id, secret))
    }

    /// An access token from the real token endpoint (HTTP Basic); `scope` space separated.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<String> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let res = self
            .http
            .post(self.url(ivrauth_server::http::auth::TOKEN_PATH))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| err("token request", e))?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(TestkitError(format!(
                "token endpoint answered {status}: {body}"
            )));
        }
        let body: TokenResponse = res.json().await.map_err(|e| err("token response", e))?;
        Ok(body.access_token)
    }

    /// Stop accepting connections, finish in-flight requests and wait for the server.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .map_err(|e| err("server task", e))?
                .map_err(|e| err("server", e))?;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
