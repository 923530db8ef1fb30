//! `ivrauth serve`: open the store, build the configured identity provider and check its
//! health (a provider that fails stops the start-up, naming it), build the server state,
//! bind, announce the address on stdout and serve until Ctrl-C or SIGTERM, then close the
//! store (checkpointing its WAL).
//!
//! Call sessions are sealed with `[calls] session_keys` when configured; otherwise with a
//! key generated once and kept in `DATA_DIR/call-session.key` (owner-only, created
//! atomically), so one instance's calls survive a restart. Several instances must share
//! configured keys. Idle call sessions are closed every minute. Anything in the data
//! directory that other users can open is warned about at start (`private_files`); the soft
//! open-files limit is raised to fit `[server] max_connections` where the hard one allows.
//!
//! `ivrauth call` builds its in-process state with the same [`app_state`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use ivrauth_connect::{HttpConfig, HttpExecutor, SystemClock, TokioSleeper};
use ivrauth_core::identity::{IdentityError, IdentityProvider};
use ivrauth_core::ports::Store;
use ivrauth_core::secret::Secret;
use ivrauth_core::time::Clock;
use ivrauth_server::app::identity::IdentityService;
use ivrauth_server::app::seal::SessionKeys;
use ivrauth_server::app::turn as session;
use ivrauth_server::AppState;
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};

use crate::config::{IdentitySettings, ProviderKind, Settings, SimulateIdentityMode};
use crate::DataDirArg;
use ivrauth_server::SimulateIdentity;

/// How often expired access tokens and old caller-number failures are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// How often idle call sessions are closed, and how many at most per batch.
const CALL_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
const CALL_EXPIRY_BATCH: u32 = 1000;

/// The generated call session key, in the data directory, when none is configured.
pub(crate) const SESSION_KEY_FILE: &str = "call-session.key";

/// The HTTP Basic user of the VoiceXML credentials `serve --demo` generates when none are
/// configured.
pub(crate) const DEMO_VOICEXML_USER: &str = "demo-voicexml";

/// The demo accounts and their PINs (`serve --demo`), in the data directory.
pub(crate) const DEMO_ACCOUNTS_FILE: &str = "demo-accounts.txt";

/// Caller-number failures older than this are forgotten (the per-number limits count one
/// hour).
const ANI_FAILURE_RETENTION_SECS: i64 = 60 * 60;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    #[command(flatten)]
    pub data: DataDirArg,

    /// Install the demo flows and demo API client
    #[arg(long)]
    pub demo: bool,
}

pub async fn run(settings: Settings, demo: bool) -> anyhow::Result<()> {
    let sqlite = SqliteStore::open(&settings.server.data_dir)
        .await
        .with_context(|| {
            format!(
                "cannot open the store in {}",
                settings.server.data_dir.display()
            )
        })?;
    let result = serve_with(&settings, demo, &sqlite).await;
    crate::client_cmd::close(&sqlite, &settings.server.data_dir).await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

async fn serve_with(settings: &Settings, demo: bool, sqlite: &SqliteStore) -> anyhow::Result<()> {
    // The demo's VoiceXML calls need a credential: unless one is configured, HTTP Basic
    // credentials generated for this run (printed below, like the demo client's secret).
    let mut settings = settings.clone();
    let demo_voicexml = (demo && !settings.voicexml.accepts_requests()).then(|| {
        let user = DEMO_VOICEXML_USER.to_owned();
        let password = Secret::new(ivrauth_server::http::auth::mint_token());
        settings.voicexml.basic_username = Some(user.clone());
        settings.voicexml.basic_password = Some(password.clone());
        (user, password)
    });
    let settings = &settings;
    let (state, keys) = app_state(settings, demo, sqlite).await?;
    announce_calls(settings, &keys);
    let store = state.store.clone();
    let clock = state.clock.clone();

    fit_open_files_limit(settings.server.max_connections);
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    // Listen for SIGTERM before announcing the address: a supervisor (or a test) may send
    // it as soon as it reads the line.
    let shutdown = shutdown_signal();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ivrauth listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, data_dir = %settings.server.data_dir.display(), "serving");
    if demo {
        demo_setup(
            &state,
            addr,
            &settings.server.data_dir,
            demo_voicexml.as_ref(),
        )
        .await?;
    }

    // An unknown number's counters are kept as long as a lock could last, at least the hour
    // the caller-number limits look at.
    let unknown_window = settings
        .identity
        .lockout
        .lock_max_secs
        .max(ANI_FAILURE_RETENTION_SECS);
    let purger = tokio::spawn(purge_periodically(store, clock, unknown_window));
    let expirer = tokio::spawn(expire_calls_periodically(state.clone()));
    let refusals = tokio::spawn(flush_refusals_periodically(state.clone()));
    let result = ivrauth_server::serve(listener, state.clone(), shutdown).await;
    refusals.abort();
    let _ = refusals.await;
    // The refusals counted since the last flush are written before the process ends.
    if let Err(e) = state
        .refusals
        .flush(state.store.as_ref(), state.clock.now())
        .await
    {
        tracing::error!(error = %e, "could not audit the refusals counted before shutdown");
    }
    purger.abort();
    expirer.abort();
    // Wait for the background tasks to stop, so no query races the close.
    let _ = purger.await;
    let _ = expirer.await;
    result.context("server error")
}

/// Raise the soft limit on open files to fit `max_connections` (plus the store, listener
/// and outbound requests) when the hard limit allows; warn when it cannot, since accepting
/// would then fail before the connection cap is reached.
fn fit_open_files_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let wanted = u64::try_from(max_connections)
            .unwrap_or(u64::MAX)
            .saturating_add(256);
        let limit = getrlimit(Resource::Nofile);
        // `None` is unlimited.
        let Some(mut current) = limit.current else {
            return;
        };
        if current >= wanted {
            return;
        }
        let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
        if raised > current
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(raised),
                    maximum: limit.maximum,
                },
            )
            .is_ok()
        {
            current = raised;
        }
        if current < wanted {
            tracing::warn!(
                open_files = current,
                max_connections,
                "the process may open only {current} files, fewer than [server] max_connections needs: new connections may fail before the cap answers 503; raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

/// Where the call session keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// `[calls] session_keys` (or `IVRAUTH_CALL_SESSION_KEYS`), with this many keys.
    Configured(usize),
    /// The data directory's key file, created just now.
    Generated(PathBuf),
    /// The data directory's key file, as an earlier start left it.
    Existing(PathBuf),
}

/// The server's state as `serve` runs it: the store, the configured identity provider
/// (health-checked), outbound HTTP, and call sessions ([`session_keys`]). `ivrauth call`
/// drives calls in-process with the very same state.
pub(crate) async fn app_state(
    settings: &Settings,
    demo: bool,
    sqlite: &SqliteStore,
) -> anyhow::Result<(AppState, KeySource)> {
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let provider = identity_provider(&settings.identity, store.clone(), clock.clone()).await?;
    let (keys, source) = session_keys(settings)?;
    // The configured provider, or the demo directory, with the configured rules.
    let service = |provider: Arc<dyn IdentityProvider>, account_key| IdentityService {
        provider,
        store: store.clone(),
        policy: settings.identity.lockout.policy(),
        min_verify_duration: settings.identity.min_verify_duration(),
        clock: clock.clone(),
        sleeper: Arc::new(TokioSleeper),
        account_rules: settings.identity.account_rules(),
        account_key,
        lookup_limiter: ivrauth_server::app::identity::lookup_limiter(
            settings.identity.lookups_per_caller_per_hour,
        ),
    };
    let identity = service(provider, keys.account_key());
    let http_config = HttpConfig {
        allowed_hosts: settings.http.allowed_hosts.clone(),
        ..HttpConfig::default()
    };
    let http = HttpExecutor::new(http_config, Arc::new(TokioSleeper), clock.clone())
        .context("invalid [http] configuration")?;
    let simulate_identity = match settings.simulate.identity {
        SimulateIdentityMode::Live => SimulateIdentity::Live,
        SimulateIdentityMode::Off => SimulateIdentity::Off,
        SimulateIdentityMode::Demo => SimulateIdentity::Demo(Arc::new(service(
            Arc::new(ivrauth_server::http::demo::DemoDirectory),
            keys.demo_account_key(),
        ))),
    };
    crate::private_files::warn_exposed(&settings.server.data_dir);
    let state = AppState::new(store, clock, settings.server_config(demo), Arc::new(http))
        .with_identity(identity)
        .with_simulate_identity(simulate_identity)
        .with_calls(settings.calls_config(keys));
    Ok((state, source))
}

/// The call session key ring: `[calls] session_keys` when configured, else the key in
/// `DATA_DIR/call-session.key`, generated on first use. The key is never logged.
pub(crate) fn session_keys(settings: &Settings) -> anyhow::Result<(SessionKeys, KeySource)> {
    if let Some(ring) = settings.calls.configured_keys() {
        let ring = ring.map_err(|e| anyhow::anyhow!("[calls] session_keys: {e}"))?;
        let n = ring.key_count();
        return Ok((ring, KeySource::Configured(n)));
    }
    let path = settings.server.data_dir.join(SESSION_KEY_FILE);
    let created = if path.exists() {
        false
    } else {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        let mut text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        zeroize::Zeroize::zeroize(&mut key);
        text.push('\n');
        let created = create_private_file(&path, text.as_bytes());
        zeroize::Zeroize::zeroize(&mut text);
        created.with_context(|| format!("cannot create the call session key {}", path.display()))?
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the call session key {}", path.display()))?,
    );
    let ring = SessionKeys::from_base64(&[text.trim()]).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}. It should hold one base64 key of 32 bytes; delete the file to generate a new one (calls in progress are then lost)",
            path.display()
        )
    })?;
    Ok((
        ring,
        if created {
            KeySource::Generated(path)
        } else {
            KeySource::Existing(path)
        },
    ))
}

/// Log how calls are set up: where the session keys come from, which front-ends accept
/// requests, and a loud warning for each signature check that is off.
fn announce_calls(settings: &Settings, keys: &KeySource) {
    match keys {
        KeySource::Configured(n) => {
            tracing::info!(
                keys = n,
                "call sessions sealed with the configured [calls] session_keys"
            );
        }
        KeySource::Generated(path) | KeySource::Existing(path) => {
            let verb = if matches!(keys, KeySource::Generated(_)) {
                "generated"
            } else {
                "kept"
            };
            tracing::info!(
                key_file = %path.display(),
                "call sessions sealed with the key {verb} in the data directory; several instances behind one address must share configured keys ([calls] session_keys or IVRAUTH_CALL_SESSION_KEYS) instead"
            );
        }
    }
    let twilio = &settings.twilio;
    announce_signed(
        ("twilio", "Twilio"),
        twilio.skip_signature_check,
        twilio.accepts_requests(),
        "[twilio] auth_token (or IVRAUTH_TWILIO_AUTH_TOKEN)",
    );
    if twilio.auth_token.is_some() && twilio.rest().is_none() {
        tracing::info!(
            "Twilio REST API not configured ([twilio] rest_username, rest_password): call recording cannot be paused in secure segments, so recording must be off for these numbers"
        );
    }
    let jambonz = &settings.jambonz;
    announce_signed(
        ("jambonz", "jambonz"),
        jambonz.skip_signature_check,
        jambonz.accepts_requests(),
        "[jambonz] webhook_secret (or IVRAUTH_JAMBONZ_WEBHOOK_SECRET)",
    );
    let voicexml = &settings.voicexml;
    let list = |ranges: &[ivrauth_server::calls::vxml::access::Cidr]| {
        ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !voicexml.accepts_requests() {
        tracing::info!(
            "VoiceXML requests are refused (403): set [voicexml] basic_username and basic_password (or IVRAUTH_VOICEXML_BASIC_USERNAME, IVRAUTH_VOICEXML_BASIC_PASSWORD), or [voicexml] allowed_sources (or IVRAUTH_VOICEXML_ALLOWED_SOURCES)"
        );
    } else {
        if voicexml.basic_username.is_none()
            && voicexml.allowed_sources.iter().any(|c| c.prefix() == 0)
        {
            tracing::warn!(
                "!!! [voicexml] allowed_sources admits every address and no Basic credentials are set: anyone who can reach /voice/vxml can start calls. For development only. !!!"
            );
        }
        tracing::info!(
            basic_username = voicexml.basic_username.as_deref().unwrap_or("(none)"),
            allowed_sources = %list(&voicexml.allowed_sources),
            trusted_proxies = %list(&voicexml.trusted_proxies),
            "VoiceXML requests accepted: start requests need the Basic credentials (when set), every request a source address in allowed_sources (when set)"
        );
    }
}

/// The start-up line of a platform whose requests are signed (`section` as in the config
/// and `/voice/{section}`, `name` as people write it): a loud warning when the check is
/// off, a note when requests are refused for want of the `secret` setting.
fn announce_signed((section, name): (&str, &str), skip_check: bool, accepts: bool, secret: &str) {
    if skip_check {
        tracing::warn!(
            "!!! [{section}] skip_signature_check = true: {name} requests are NOT authenticated; anyone who can reach /voice/{section} can drive calls. For development only. !!!"
        );
    } else if !accepts {
        tracing::info!("{name} requests are refused (403): no {secret} is configured");
    }
}

/// Create `path` with `contents`, readable and writable by its owner only, unless it
/// exists. Atomic: the file appears complete or not at all, and of two processes creating
/// it at once one wins and the other reads the winner's (`Ok(false)`).
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let tmp = write_private_temp(path, contents)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Write `path` with `contents` (replacing it), readable and writable by its owner only.
/// Atomic: readers see the old file or the new one, never a part.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = write_private_temp(path, contents)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path);
    Ok(())
}

/// A new owner-only file next to `path` holding `contents`, flushed to disk.
fn write_private_temp(path: &Path, contents: &[u8]) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Make a new directory entry durable (best effort).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Install what `--demo` provides (demo flows pointed at the built-in demo identity
/// endpoint of this very server, and a demo client) and print how to try them, with the
/// VoiceXML credentials generated for this run, if any.
async fn demo_setup(
    state: &AppState,
    addr: SocketAddr,
    data_dir: &Path,
    voicexml: Option<&(String, Secret<String>)>,
) -> anyhow::Result<()> {
    // The demo flow calls this server over loopback, whatever address it listens on.
    let port = addr.port();
    let local = if addr.is_ipv6() {
        format!("http://[::1]:{port}")
    } else {
        format!("http://127.0.0.1:{port}")
    };
    let info = ivrauth_server::http::demo::install(state, &local)
        .await
        .map_err(|e| anyhow::anyhow!("cannot install the demo: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nDemo ready: flows {flows} call the built-in demo identity provider ({user} / {pw}).\n\
         Demo API client: {id}   secret (shown once per start): {secret}\n\n\
         Simulate the seed's flow from another terminal:\n  \
         IVRAUTH_SERVER={local} IVRAUTH_CLIENT_ID={id} IVRAUTH_CLIENT_SECRET={secret} \\\n    \
         cargo run -q -p ivrauth -- flow simulate --flow-id demo-auth --input '{{\"username\":\"{user}\",\"password\":\"{pw}\"}}'\n\n\
         or with curl:\n  \
         curl -s -u {id}:{secret} -d grant_type=client_credentials {local}/auth/v3/oauth/token\n  \
         curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n    \
         -d '{{\"flowId\":\"demo-auth\",\"input\":{{\"username\":\"{user}\",\"password\":\"{pw}\"}}}}' {local}/api/v2/flows/simulate\n",
        flows = info.flow_ids.join(", "),
        user = ivrauth_server::http::demo::DEMO_USERNAME,
        pw = ivrauth_server::http::demo::DEMO_PASSWORD,
        id = info.client_id,
        secret = info.client_secret,
    )?;
    let accounts = write_demo_accounts(data_dir)?;
    let dir = shell_word(&data_dir.display().to_string());
    writeln!(
        out,
        "\nPhone demo: flow demo-pin asks for an account number and PIN, then offers a menu.\n\
         Demo accounts and their PINs: {accounts} (readable by you only).\n\
         Call it from this terminal (in-process, same data directory):\n  \
         cargo run -q -p ivrauth -- call --flow demo-pin --data-dir {dir}\n\
         or through this server:\n  \
         IVRAUTH_CLIENT_ID={id} IVRAUTH_CLIENT_SECRET={secret} \\\n    \
         cargo run -q -p ivrauth -- call --flow demo-pin --server {local}\n",
        accounts = accounts.display(),
        id = info.client_id,
        secret = info.client_secret,
    )?;
    match voicexml {
        Some((user, password)) => writeln!(
            out,
            "\nVoiceXML: point a VoiceXML 2.1 browser at {local}/voice/vxml/demo-pin with HTTP Basic\n\
             user {user}, password (shown once per start): {pw}\n  \
             curl -s -u {user}:{pw} {local}/voice/vxml/demo-pin\n",
            pw = password.expose(),
        )?,
        None => writeln!(
            out,
            "\nVoiceXML: {local}/voice/vxml/demo-pin, with the configured [voicexml] credentials.\n"
        )?,
    }
    out.flush()?;
    Ok(())
}

/// Write `DATA_DIR/demo-accounts.txt` (owner-only, atomically): a header line, then each
/// demo account's number, PIN and name. Returns its path; the PINs are printed nowhere.
pub(crate) fn write_demo_accounts(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(DEMO_ACCOUNTS_FILE);
    let mut text = zeroize::Zeroizing::new(String::from("account  pin       name\n"));
    for (number, pin, name, _, _) in ivrauth_server::http::demo::DEMO_ACCOUNTS {
        text.push_str(&format!("{number:<8} {pin:<9} {name}\n"));
    }
    write_private_file(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `s` quoted for a POSIX shell when it needs to be.
pub(crate) fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Build the configured identity provider and check its health; an error names the
/// provider. The built-in directory hashes its dummy PIN here (one argon2 run, which also
/// checks the hash parameters).
async fn identity_provider(
    config: &IdentitySettings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn IdentityProvider>> {
    let kind = config.provider;
    let unusable = |why: String| {
        anyhow::anyhow!(
            "identity provider `{}` ({}) is not usable: {why}",
            kind.name(),
            kind.describe()
        )
    };
    let provider: Arc<dyn IdentityProvider> = match kind {
        ProviderKind::Builtin => {
            let params = config.hash();
            let pool = config
                .hash_pool_size
                .map_or_else(HashPool::per_core, HashPool::new)
                .with_margin(Duration::from_millis(config.hash_queue_margin_ms));
            let pool = match config.hash_queue_max_waiting {
                Some(n) => pool.with_max_waiting(n),
                None => pool,
            };
            let directory = tokio::task::spawn_blocking(move || {
                BuiltinDirectory::new(store, params, pool, clock)
            })
            .await
            .context("the hashing thread failed")?
            .map_err(|e| unusable(identity_error_text(&e)))?;
            let built: Arc<dyn IdentityProvider> = Arc::new(directory);
            Ok(built)
        }
        ProviderKind::Ldap => from_section(config.ldap.as_ref(), |s| s.directory()),
        ProviderKind::OAuth2 => from_section(config.oauth2.as_ref(), |s| s.directory()),
        ProviderKind::Http => from_section(config.http.as_ref(), |s| s.directory()),
    }
    .map_err(unusable)?;
    if let Err(e) = provider.health().await {
        anyhow::bail!(
            "identity provider `{}` ({}) failed its start-up health check: {}",
            kind.name(),
            kind.describe(),
            identity_error_text(&e)
        );
    }
    tracing::info!(provider = kind.name(), "identity provider ready");
    Ok(provider)
}

/// A remote provider's directory, built from its configuration section; why not, in words.
fn from_section<S, D: IdentityProvider + 'static>(
    section: Option<&S>,
    directory: impl FnOnce(&S) -> Result<D, Vec<String>>,
) -> Result<Arc<dyn IdentityProvider>, String> {
    let section = section.ok_or_else(|| "its configuration section is missing".to_owned())?;
    Ok(Arc::new(directory(section).map_err(|p| p.join("; "))?))
}

/// An identity error without the "identity provider unavailable" prefix (the caller says
/// which provider).
fn identity_error_text(e: &IdentityError) -> String {
    match e {
        IdentityError::Unavailable(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Every [`PURGE_INTERVAL`]: expired access tokens, caller-number failures older than the
/// hour the per-number limits look at, and the counters of account numbers that never
/// existed once their last failure is older than `unknown_window_secs` and they lock
/// nothing.
async fn purge_periodically(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    unknown_window_secs: i64,
) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tick.tick().await;
        let now = clock.now();
        match store.purge_expired_tokens(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired tokens purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired tokens"),
        }
        match store
            .purge_ani_failures(now.plus_secs(-ANI_FAILURE_RETENTION_SECS))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "old caller-number failures purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge old caller-number failures"),
        }
        match store
            .purge_unknown_counters(now.plus_secs(-unknown_window_secs), now)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "counters of unknown account numbers purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge unknown accounts' counters"),
        }
    }
}

/// Every [`ivrauth_server::app::refusals::FLUSH_INTERVAL`]: audit the refusals counted since the
/// last flush, one record per key.
async fn flush_refusals_periodically(state: AppState) {
    let mut tick = tokio::time::interval(ivrauth_server::app::refusals::FLUSH_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = state
            .refusals
            .flush(state.store.as_ref(), state.clock.now())
            .await
        {
            tracing::warn!(error = %e, "could not audit counted refusals; kept for the next flush");
        }
    }
}

/// Every [`CALL_EXPIRY_INTERVAL`]: close call sessions idle past their expiry (a caller
/// who went silent while asked for a secret after a failure is charged that attempt).
async fn expire_calls_periodically(state: AppState) {
    let mut tick = tokio::time::interval(CALL_EXPIRY_INTERVAL);
    loop {
        tick.tick().await;
        let mut closed = 0usize;
        // Drain a backlog batch by batch, but never loop forever.
        for _ in 0..100 {
            match session::expire(&state, CALL_EXPIRY_BATCH).await {
                Ok(n) => {
                    closed += n;
                    if n < CALL_EXPIRY_BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not close idle call sessions");
                    break;
                }
            }
        }
        if closed > 0 {
            tracing::info!(closed, "idle call sessions closed");
        }
    }
}

/// Completes on Ctrl-C or SIGTERM. SIGTERM is listened for from the call on, not from the
/// first poll.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match sigterm {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutting down");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn settings_in(dir: &Path) -> Settings {
        let mut settings = Settings::default();
        settings.server.data_dir = dir.to_owned();
        settings
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_generated_session_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        let (first, source) = session_keys(&settings).unwrap();
        let path = dir.path().join(SESSION_KEY_FILE);
        assert_eq!(source, KeySource::Generated(path.clone()));
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let token = first.seal(b"state", b"aad").unwrap();

        // A restart finds the same key: calls survive it.
        let (second, source) = session_keys(&settings).unwrap();
        assert_eq!(source, KeySource::Existing(path.clone()));
        assert_eq!(second.open(&token, b"aad").unwrap(), b"state");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [SESSION_KEY_FILE]);

        // A damaged file is an error that names it, and is not replaced.
        std::fs::write(&path, "not a key\n").unwrap();
        let err = session_keys(&settings).unwrap_err().to_string();
        assert!(
            err.contains(SESSION_KEY_FILE) && err.contains("delete"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }

    #[test]
    fn configured_keys_win_over_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings_in(dir.path());
        settings.calls.session_keys = vec![ivrauth_core::secret::Secret::new(
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]),
        )];
        let (ring, source) = session_keys(&settings).unwrap();
        assert_eq!(source, KeySource::Configured(1));
        assert_eq!(ring.key_count(), 1);
        assert!(!dir.path().join(SESSION_KEY_FILE).exists());
    }

    #[test]
    fn concurrent_creators_agree_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("once");
        let results: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || create_private_file(path, &[i; 16]).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|created| **created).count(), 1);
        let contents = std::fs::read(&path).unwrap();
        assert_eq!(contents.len(), 16);
        assert!(contents.iter().all(|b| *b == contents[0]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn demo_accounts_file_is_private_and_lists_every_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_demo_accounts(dir.path()).unwrap();
        // Written twice: replaced, not appended.
        let path2 = write_demo_accounts(dir.path()).unwrap();
        assert_eq!(path, path2);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("account"));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows.len(), ivrauth_server::http::demo::DEMO_ACCOUNTS.len());
        for (row, (number, pin, name, _, _)) in
            rows.iter().zip(ivrauth_server::http::demo::DEMO_ACCOUNTS)
        {
            assert_eq!(row[0], *number);
            assert_eq!(row[1], *pin);
            assert_eq!(row[2..].join(" "), *name);
        }
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("./data"), "./data");
        assert_eq!(shell_word("my data"), "'my data'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
