//! `ivrauth flow ...`: validate a document locally, deploy it to a running server, and
//! simulate a run there (the same runner as `POST /api/v2/flows/simulate`).
//!
//! These commands take their settings from flags and environment variables only; they
//! refuse `--config`, which configures the server side. The client secret is held as a
//! [`Secret`] and is sent only over https or to a loopback address (unless `--insecure`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use ivrauth_core::flow::compile;
use ivrauth_core::secret::Secret;
use ivrauth_proto::api::{Diagnostic, FlowDetail, SimulateResponse, TraceEntry};

use crate::api_client::{parse_secret, write_diagnostic as print_diag, ApiClient, Credentials};
use crate::table::Table;

/// Largest document file read; far above what the API accepts (1 MiB), small enough that
/// reading it cannot exhaust memory.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Help shown under every `flow` command: where its settings come from.
const SETTINGS_HELP: &str =
    "Settings: `flow` commands read only their flags and the IVRAUTH_SERVER, \
IVRAUTH_CLIENT_ID and IVRAUTH_CLIENT_SECRET environment variables. They do not read a config \
file (ivrauth.toml is the server's), and refuse --config.";

#[derive(Debug, clap::Subcommand)]
pub enum FlowCommand {
    /// Validate a flow document offline; lists every problem and exits 1 when invalid
    #[command(after_help = SETTINGS_HELP)]
    Validate {
        /// The flow document (JSON)
        file: PathBuf,
        /// Print the report as JSON ({valid, errors, warnings})
        #[arg(long)]
        json: bool,
    },
    /// Deploy a flow document to a running server (a new flow, or a new version with --id)
    #[command(after_help = SETTINGS_HELP)]
    Deploy {
        file: PathBuf,
        /// Deploy as a new version of this flow
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Simulate a run on a running server and print its trace
    #[command(after_help = SETTINGS_HELP)]
    Simulate {
        /// An unsaved flow document to run (or use --flow-id)
        file: Option<PathBuf>,
        /// A deployed flow to run
        #[arg(long, conflicts_with = "file")]
        flow_id: Option<String>,
        /// An older version of the deployed flow
        #[arg(long, requires = "flow_id")]
        version: Option<i64>,
        /// The run's input, a JSON object
        #[arg(long, default_value = "{}")]
        input: String,
        /// Host variables visible as contact.* (a JSON object)
        #[arg(long)]
        contact: Option<String>,
        /// Print the response body as JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Base URL of the ivrauth server: https, or plain http to a loopback address only
    /// (see --insecure)
    #[arg(long, env = "IVRAUTH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API client id (see `ivrauth client create`)
    #[arg(long, env = "IVRAUTH_CLIENT_ID")]
    pub client_id: String,
    /// API client secret (prefer the environment variable: arguments show in `ps`)
    #[arg(long, env = "IVRAUTH_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub client_secret: Secret<String>,
    /// Allow a plain http:// --server that is not a loopback address. The client secret and
    /// the access token then cross the network unencrypted: only on a network you trust.
    #[arg(long)]
    pub insecure: bool,
}

impl ServerArgs {
    /// Connect with these arguments (the token carries all of the client's scopes).
    async fn connect(&self) -> anyhow::Result<ApiClient> {
        ApiClient::connect(&Credentials {
            server: &self.server,
            client_id: &self.client_id,
            client_secret: &self.client_secret,
            insecure: self.insecure,
            sends: "the client credentials",
        })
        .await
    }
}

/// Run a `flow` command. `config` is the global `--config`, which these commands refuse.
pub async fn run(cmd: FlowCommand, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    if let Some(path) = config {
        bail!(
            "--config {} does not apply to `ivrauth flow` commands: they take their settings \
             from --server, --client-id and --client-secret (or IVRAUTH_SERVER, \
             IVRAUTH_CLIENT_ID and IVRAUTH_CLIENT_SECRET); remove --config",
            path.display()
        );
    }
    match cmd {
        FlowCommand::Validate { file, json } => validate(&file, json),
        FlowCommand::Deploy { file, id, server } => deploy(&file, id.as_deref(), &server).await,
        FlowCommand::Simulate {
            file,
            flow_id,
            version,
            input,
            contact,
            json,
            server,
        } => {
            let input: Value = serde_json::from_str(&input).context("--input is not valid JSON")?;
            let mut body = json!({ "input": input });
            match (file, flow_id) {
                (Some(f), None) => body["flow"] = read_json(&f)?,
                (None, Some(id)) => {
                    body["flowId"] = json!(id);
                    if let Some(v) = version {
                        body["version"] = json!(v);
                    }
                }
                _ => bail!("give a flow document FILE or --flow-id ID"),
            }
            if let Some(c) = contact {
                body["contact"] =
                    serde_json::from_str(&c).context("--contact is not valid JSON")?;
            }
            simulate(&body, json, &server).await
        }
    }
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{} is {} bytes; flow documents are limited to {MAX_FILE_BYTES} bytes",
            file.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text = read_text(file)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
}

fn validate(file: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let text = read_text(file)?;
    let report = match ivrauth_proto::flow::parse_document(&text) {
        Ok(doc) => ivrauth_core::flow::validate(&doc),
        Err(e) if e.syntax => bail!(
            "{}:{}:{}: malformed JSON: {}",
            file.display(),
            e.line,
            e.column,
            e.message
        ),
        Err(e) => ivrauth_core::flow::Report {
            errors: vec![Diagnostic {
                path: format!("/{}", e.path.replace('.', "/")),
                node_id: None,
                code: "invalid_shape".to_owned(),
                message: e.message,
            }],
            warnings: Vec::new(),
        },
    };
    let mut out = std::io::stdout().lock();
    if as_json {
        let body = json!({"valid": report.errors.is_empty(), "errors": report.errors, "warnings": report.warnings});
        writeln!(out, "{body}")?;
    } else {
        for d in &report.errors {
            print_diag(&mut out, "error", d)?;
        }
        for d in &report.warnings {
            print_diag(&mut out, "warning", d)?;
        }
        if report.errors.is_empty() {
            writeln!(
                out,
                "{}: valid ({} warning(s))",
                file.display(),
                report.warnings.len()
            )?;
        } else {
            writeln!(
                out,
                "{}: invalid: {} error(s), {} warning(s)",
                file.display(),
                report.errors.len(),
                report.warnings.len()
            )?;
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn deploy(file: &Path, id: Option<&str>, server: &ServerArgs) -> anyhow::Result<ExitCode> {
    let doc = read_json(file)?;
    let api = server.connect().await?;
    let answer = match id {
        Some(id) => {
            let path = format!("/api/v2/flows/{}", crate::api_client::path_segment(id));
            api.send(reqwest::Method::PUT, &path, &doc).await?
        }
        None => api.post("/api/v2/flows", &doc).await?,
    };
    if !answer.is_success() {
        answer.refusal().write(&mut std::io::stderr().lock(), "")?;
        return Ok(ExitCode::FAILURE);
    }
    let detail: FlowDetail = answer.parse()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "deployed flow {} ({}) version {}",
        detail.summary.id, detail.summary.name, detail.summary.version
    )?;
    for w in &detail.warnings {
        print_diag(&mut out, "warning", w)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn simulate(body: &Value, as_json: bool, server: &ServerArgs) -> anyhow::Result<ExitCode> {
    // Validate an unsaved document locally first: faster feedback, same rules.
    if let Some(doc) = body.get("flow") {
        if let Ok(d) = ivrauth_proto::flow::document_from_value(doc) {
            if let Err(report) = compile(&d) {
                let mut err = std::io::stderr().lock();
                for e in &report.errors {
                    print_diag(&mut err, "error", e)?;
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let api = server.connect().await?;
    let answer = api.post("/api/v2/flows/simulate", body).await?;
    if answer.status != 200 {
        answer.refusal().write(&mut std::io::stderr().lock(), "")?;
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", answer.body)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sim: SimulateResponse = answer.parse()?;
    write_table(&mut out, &sim)?;
    Ok(ExitCode::SUCCESS)
}

fn detail_of(t: &TraceEntry) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = &t.request {
        let status = t
            .output
            .as_ref()
            .and_then(|o| o.get("statusCode"))
            .filter(|s| !s.is_null())
            .map(|s| s.to_string())
            .or_else(|| {
                t.output
                    .as_ref()
                    .and_then(|o| o.pointer("/error/code"))
                    .map(|c| format!("error {}", c.as_str().unwrap_or("?")))
            })
            .unwrap_or_default();
        parts.push(format!("{} {} → {status}", r.method, r.url));
    }
    if let Some(a) = &t.action {
        let inputs: Vec<String> = a.inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let outputs: Vec<String> = t
            .output
            .as_ref()
            .and_then(|o| o.as_object())
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default();
        parts.push(format!(
            "{}({}) → {}",
            a.name,
            inputs.join(", "),
            outputs.join(" ")
        ));
    }
    if let Some(p) = &t.properties {
        parts.extend(p.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if let Some(r) = &t.result {
        parts.extend(r.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if let Some(m) = &t.message {
        parts.push(m.clone());
    }
    parts.extend(t.errors.iter().map(|e| format!("! {e}")));
    if let Some(n) = &t.next {
        parts.push(format!("→ {n}"));
    }
    parts.join("  ")
}

/// The trace as a table: one row per executed node, named by its key (the name edges use).
fn write_table(out: &mut impl std::io::Write, sim: &SimulateResponse) -> std::io::Result<()> {
    let mut table = Table::new(&["step", "node", "type", "ms", "detail"], &[0, 3]);
    for t in &sim.trace {
        table.row([
            t.step.to_string(),
            t.node_key.clone(),
            t.node_type.clone(),
            t.duration_ms.to_string(),
            detail_of(t),
        ]);
    }
    table.write(out)?;
    let o = &sim.outcome;
    match (&o.end_node, &o.error) {
        (_, Some(e)) => writeln!(out, "outcome: failed: {} ({})", e.message, e.code)?,
        (Some(end), None) => writeln!(
            out,
            "outcome: {end}{}",
            o.status_code
                .map(|s| format!(" (status {s})"))
                .unwrap_or_default()
        )?,
        (None, None) => writeln!(out, "outcome: none")?,
    }
    writeln!(out, "trace id: {}", sim.trace_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: FlowCommand,
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        let cli = Cli::try_parse_from([
            "flow",
            "simulate",
            "--flow-id",
            "f",
            "--client-id",
            "cli_x",
            "--client-secret",
            "canary-secret-1234",
        ])
        .unwrap();
        let dump = format!("{cli:?}");
        assert!(!dump.contains("canary-secret-1234"), "{dump}");
        assert!(dump.contains("cli_x"), "{dump}");
        let FlowCommand::Simulate { server, .. } = cli.cmd else {
            panic!("parsed {dump}");
        };
        assert_eq!(server.client_secret.expose(), "canary-secret-1234");
    }
}
