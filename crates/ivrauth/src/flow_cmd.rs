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
use ivrauth_core::http::{redacted_url, secure_transport};
use ivrauth_core::secret::Secret;
use ivrauth_proto::api::{
    Diagnostic, ErrorBody, FlowDetail, SimulateResponse, TokenResponse, TraceEntry,
};

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

/// clap's parser for the client secret: straight into a [`Secret`], so no `Debug` shows it.
fn parse_secret(s: &str) -> Result<Secret<String>, std::convert::Infallible> {
    Ok(Secret::new(s.to_owned()))
}

/// Refuse to send credentials to `server` unless it is https or plain http to a loopback
/// address, or `insecure` says plain http is accepted.
fn check_transport(server: &str, insecure: bool) -> anyhow::Result<()> {
    let shown = redacted_url(server);
    let scheme = url::Url::parse(server).map(|u| u.scheme().to_owned());
    match scheme.as_deref() {
        Ok("https") => Ok(()),
        Ok("http") if secure_transport(server) => Ok(()),
        Ok("http") if insecure => {
            eprintln!(
                "warning: --insecure: sending the client credentials to {shown} over plain http"
            );
            Ok(())
        }
        Ok("http") => bail!(
            "refusing to send the client credentials to {shown} over plain http: the client \
             secret (HTTP Basic) and the access token would cross the network unencrypted, \
             readable by anyone on the way. Use an https:// --server URL (plain http is allowed \
             to loopback addresses only), or pass --insecure if you trust the network."
        ),
        _ => bail!("--server must be an http(s) URL such as https://ivrauth.example.com"),
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

fn print_diag(out: &mut impl std::io::Write, kind: &str, d: &Diagnostic) -> std::io::Result<()> {
    let node = d
        .node_id
        .as_deref()
        .map(|n| format!(" (node {n})"))
        .unwrap_or_default();
    let path = if d.path.is_empty() {
        "/"
    } else {
        d.path.as_str()
    };
    writeln!(out, "{kind}[{}] {path}{node}: {}", d.code, d.message)
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

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn connect(args: &ServerArgs) -> anyhow::Result<Api> {
        check_transport(&args.server, args.insecure)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        let base = args.server.trim_end_matches('/').to_owned();
        let res = http
            .post(format!("{base}/auth/v3/oauth/token"))
            .basic_auth(&args.client_id, Some(args.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {base}"))?;
        if !res.status().is_success() {
            bail!(
                "the server refused the client credentials ({})",
                res.status()
            );
        }
        let token: TokenResponse = res.json().await.context("unexpected token response")?;
        Ok(Api {
            http,
            base,
            token: token.access_token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn print_error(status: u16, body: &Value) -> anyhow::Result<ExitCode> {
    let mut err = std::io::stderr().lock();
    match serde_json::from_value::<ErrorBody>(body.clone()) {
        Ok(e) => {
            writeln!(err, "error ({status}) {}: {}", e.code, e.message)?;
            for d in &e.errors {
                print_diag(&mut err, "  error", d)?;
            }
        }
        Err(_) => writeln!(err, "error: the server answered {status}")?,
    }
    Ok(ExitCode::FAILURE)
}

async fn deploy(file: &Path, id: Option<&str>, server: &ServerArgs) -> anyhow::Result<ExitCode> {
    let doc = read_json(file)?;
    let api = Api::connect(server).await?;
    let (status, body) = match id {
        Some(id) => {
            api.send(reqwest::Method::PUT, &format!("/api/v2/flows/{id}"), &doc)
                .await?
        }
        None => {
            api.send(reqwest::Method::POST, "/api/v2/flows", &doc)
                .await?
        }
    };
    if !(200..300).contains(&status) {
        return print_error(status, &body);
    }
    let detail: FlowDetail = serde_json::from_value(body).context("unexpected response")?;
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
    let api = Api::connect(server).await?;
    let (status, resp) = api
        .send(reqwest::Method::POST, "/api/v2/flows/simulate", body)
        .await?;
    if status != 200 {
        return print_error(status, &resp);
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{resp}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let sim: SimulateResponse = serde_json::from_value(resp).context("unexpected response")?;
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

fn write_table(out: &mut impl std::io::Write, sim: &SimulateResponse) -> std::io::Result<()> {
    let width = sim
        .trace
        .iter()
        .map(|t| t.node_key.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:>4}  {:<width$}  {:<13}  {:>5}  detail",
        "step", "node", "type", "ms"
    )?;
    for t in &sim.trace {
        writeln!(
            out,
            "{:>4}  {:<width$}  {:<13}  {:>5}  {}",
            t.step,
            t.node_key,
            t.node_type,
            t.duration_ms,
            detail_of(t)
        )?;
    }
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

    #[test]
    fn credentials_go_over_https_or_loopback_unless_insecure() {
        for ok in [
            "https://ivrauth.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(check_transport(ok, false).is_ok(), "{ok}");
        }
        let err = check_transport("http://ivrauth.example.com", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--insecure") && err.contains("plain http"),
            "{err}"
        );
        assert!(check_transport("http://10.0.0.5:8080", false).is_err());
        assert!(check_transport("http://ivrauth.example.com", true).is_ok());
        // --insecure is about plain http only.
        assert!(check_transport("ftp://ivrauth.example.com", true).is_err());
        assert!(check_transport("not a url", true).is_err());
    }
}
