//! `ivrauth serve`: open the store, build the configured identity provider and check its
//! health (a provider that fails stops the start-up, naming it), build the server state,
//! bind, announce the address on stdout and serve until Ctrl-C or SIGTERM, then close the
//! store (checkpointing its WAL).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use ivrauth_connect::{HttpConfig, HttpExecutor, SystemClock, TokioSleeper};
use ivrauth_core::identity::{IdentityError, IdentityProvider};
use ivrauth_core::ports::Store;
use ivrauth_core::time::Clock;
use ivrauth_server::identity::IdentityService;
use ivrauth_server::AppState;
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};

use crate::config::{IdentitySettings, ProviderKind, Settings};
use crate::DataDirArg;

/// How often expired access tokens and old caller-number failures are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

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
    let sqlite = SqliteStore::open(&settings.data_dir)
        .await
        .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;
    let result = serve_with(&settings, demo, &sqlite).await;
    crate::client_cmd::close(&sqlite, &settings.data_dir).await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

async fn serve_with(settings: &Settings, demo: bool, sqlite: &SqliteStore) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let provider = identity_provider(&settings.identity, store.clone(), clock.clone()).await?;
    let identity = IdentityService {
        provider,
        store: store.clone(),
        policy: settings.identity.lockout,
        min_verify_duration: settings.identity.min_verify_duration(),
        clock: clock.clone(),
        sleeper: Arc::new(TokioSleeper),
    };
    let http_config = HttpConfig {
        allowed_hosts: settings.http_allowed_hosts.clone(),
        ..HttpConfig::default()
    };
    let http = HttpExecutor::new(http_config, Arc::new(TokioSleeper), clock.clone())
        .context("invalid [http] configuration")?;
    let state = AppState::new(
        store.clone(),
        clock.clone(),
        settings.server_config(demo),
        Arc::new(http),
    )
    .with_identity(identity);

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ivrauth listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    if demo {
        demo_setup(&state, addr).await?;
    }

    let purger = tokio::spawn(purge_periodically(store, clock));
    let result = ivrauth_server::serve(listener, state, shutdown_signal()).await;
    purger.abort();
    // Wait for the purger to stop, so no query races the close.
    let _ = purger.await;
    result.context("server error")
}

/// Install what `--demo` provides (demo flows pointed at the built-in demo identity
/// endpoint of this very server, and a demo client) and print how to try them.
async fn demo_setup(state: &AppState, addr: SocketAddr) -> anyhow::Result<()> {
    // The demo flow calls this server over loopback, whatever address it listens on.
    let port = addr.port();
    let local = if addr.is_ipv6() {
        format!("http://[::1]:{port}")
    } else {
        format!("http://127.0.0.1:{port}")
    };
    let info = ivrauth_server::demo::install(state, &local)
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
        user = ivrauth_server::demo::DEMO_USERNAME,
        pw = ivrauth_server::demo::DEMO_PASSWORD,
        id = info.client_id,
        secret = info.client_secret,
    )?;
    out.flush()?;
    Ok(())
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
    let section_missing = || unusable("its configuration section is missing".to_owned());
    let provider: Arc<dyn IdentityProvider> = match kind {
        ProviderKind::Builtin => {
            let params = config.hash;
            let pool = config
                .hash_pool_size
                .map_or_else(HashPool::per_core, HashPool::new);
            let directory = tokio::task::spawn_blocking(move || {
                BuiltinDirectory::new(store, params, pool, clock)
            })
            .await
            .context("the hashing thread failed")?
            .map_err(|e| unusable(identity_error_text(&e)))?;
            Arc::new(directory)
        }
        ProviderKind::Ldap => Arc::new(
            config
                .ldap
                .as_ref()
                .ok_or_else(section_missing)?
                .directory()
                .map_err(|p| unusable(p.join("; ")))?,
        ),
        ProviderKind::OAuth2 => Arc::new(
            config
                .oauth2
                .as_ref()
                .ok_or_else(section_missing)?
                .directory()
                .map_err(|p| unusable(p.join("; ")))?,
        ),
        ProviderKind::Http => Arc::new(
            config
                .http
                .as_ref()
                .ok_or_else(section_missing)?
                .directory()
                .map_err(|p| unusable(p.join("; ")))?,
        ),
    };
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

/// An identity error without the "identity provider unavailable" prefix (the caller says
/// which provider).
fn identity_error_text(e: &IdentityError) -> String {
    match e {
        IdentityError::Unavailable(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Every [`PURGE_INTERVAL`]: expired access tokens, and caller-number failures older than
/// the hour the per-number limits look at.
async fn purge_periodically(store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
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
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
