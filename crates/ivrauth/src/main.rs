//! `ivrauth`: the server binary and its administration commands.
//!
//! `ivrauth serve` hosts the API; `ivrauth client ...` manages API clients,
//! `ivrauth account ...` the built-in directory's accounts and lockouts,
//! `ivrauth audit verify` checks the audit chain, all against the same data directory, and
//! `ivrauth call` simulates a phone call in the terminal (in-process, or against a server).
//! Configuration is layered (see `config.rs` and `config.example.toml`).

/// mimalloc: a call turn measured about 6 % less CPU than with the system allocator
/// (BENCHMARKS.md, "ordinary turns from a separate process").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod account_cmd;
mod api_client;
mod audit_cmd;
mod call;
mod client_cmd;
mod config;
mod flow_cmd;
mod private_files;
mod serve;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ivrauth",
    version,
    about = "Authenticates phone callers by running IVR call flows"
)]
struct Cli {
    /// Configuration file (default: ./ivrauth.toml when it exists); `flow` commands refuse it
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API server
    Serve(serve::ServeArgs),
    /// Validate, deploy and simulate flow documents
    #[command(subcommand)]
    Flow(flow_cmd::FlowCommand),
    /// Manage API clients (OAuth2 client credentials)
    #[command(subcommand)]
    Client(client_cmd::ClientCommand),
    /// Inspect the audit log
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Manage the built-in directory's accounts, PINs and lockouts
    #[command(subcommand)]
    Account(account_cmd::AccountCommand),
    /// Simulate a phone call to a flow in this terminal (in-process, or against a server)
    Call(call::CallArgs),
}

fn main() -> ExitCode {
    // Before anything is created: the data directory holds PIN hashes and keys.
    private_files::restrict_umask();
    let cli = Cli::parse();
    // A call in the terminal is a conversation: only warnings interrupt it unless asked.
    let default_level = if matches!(cli.command, Command::Call(_)) {
        "warn"
    } else {
        "info"
    };
    init_tracing(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut flags = config::Flags {
        config: cli.config,
        ..config::Flags::default()
    };
    match cli.command {
        Command::Serve(args) => {
            flags.listen = args.listen;
            flags.data_dir = args.data.data_dir.clone();
            let settings = load_settings(&flags)?;
            serve::run(settings, args.demo).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Flow(cmd) => flow_cmd::run(cmd, flags.config.as_deref()).await,
        Command::Client(cmd) => {
            flags.data_dir = cmd.data_dir().clone();
            let settings = load_settings(&flags)?;
            client_cmd::run(cmd, &settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(cmd) => {
            flags.data_dir = cmd.data_dir().clone();
            let settings = load_settings(&flags)?;
            audit_cmd::run(cmd, &settings).await
        }
        Command::Account(cmd) => {
            flags.data_dir = cmd.data_dir().clone();
            let settings = load_settings(&flags)?;
            account_cmd::run(cmd, &settings).await
        }
        Command::Call(args) => {
            if args.server.is_some() {
                // Against a server, the server's configuration applies, not this one.
                if let Some(path) = &flags.config {
                    anyhow::bail!(
                        "--config {} does not apply to `ivrauth call --server`: the server uses its own configuration; remove --config",
                        path.display()
                    );
                }
                return call::run(args, None).await;
            }
            flags.data_dir = args.data.data_dir.clone();
            let settings = load_settings(&flags)?;
            call::run(args, Some(&settings)).await
        }
    }
}

fn load_settings(flags: &config::Flags) -> anyhow::Result<config::Settings> {
    let cwd = std::env::current_dir()?;
    let (settings, warnings) = config::load(flags, &cwd, &config::process_env())?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(settings)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_level`).
fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `--data-dir`, shared by every subcommand that opens the store.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Data directory (default: ./data, or [server] data_dir / IVRAUTH_DATA_DIR)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The arguments of a `list` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}
