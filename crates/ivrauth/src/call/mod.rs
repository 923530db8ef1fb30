//! `ivrauth call`: a phone call in the terminal.
//!
//! The caller hears each prompt as text and answers with keys. In-process (the default) the
//! call runs against the data directory with the very state `serve` builds (same store,
//! identity provider, lockout, session keys) through the decision API's platform
//! (`Platform::Api`); with `--server URL` it goes through a running server's decision API
//! (`POST /api/v2/calls/{callId}/turns`, scope `call:turn`).
//!
//! Keys come from the terminal, a line per prompt (an empty line is a silent turn; end of
//! input hangs up), or from `--digits "10001#,2468#,9"`, one entry per prompt, the call
//! hanging up when the list runs out. Secure prompts (PINs) echo `*` per key on a terminal
//! and are read silently otherwise; secure keys appear in no output, log or audit record.
//! The call ends with its outcome and, in-process, its audit trail; `--json` prints only
//! `{"outcome": {...}, "prompts": [...]}`.
//!
//! Here: the arguments and the dialogue, whichever way the call goes. `terminal` is the
//! caller's side (transcript and keys), `local` the in-process call (and the phone demo),
//! `remote` the call through a server's decision API.

mod local;
mod remote;
mod terminal;

use std::collections::VecDeque;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

use ivrauth_core::http::redacted_url;
use ivrauth_core::secret::Secret;

use crate::api_client::parse_secret;
use crate::config::Settings;
use crate::DataDirArg;
use terminal::{parse_digits, read_keys, Ui};

/// The flow `--demo` installs.
const DEMO_FLOW: &str = ivrauth_server::http::demo::PHONE_DEMO_FLOW;

/// What `--help` adds.
const CALL_HELP: &str = "\
Examples:
  ivrauth call --demo --flow demo-pin                     # install the phone demo, then call it
  ivrauth call --flow demo-pin --digits '10001#,2468#,9'  # scripted: one entry per prompt
  IVRAUTH_CLIENT_ID=... IVRAUTH_CLIENT_SECRET=... ivrauth call --flow demo-pin --server http://127.0.0.1:8080

Type the keys for each prompt, with the # the prompt asks for, and press Enter (a secure \
entry such as a PIN ends at the # itself, echoing * per key); an empty line is a silent turn \
(no input). Ctrl-D hangs up. --digits entries may be empty (silence); when \
the list runs out, the caller hangs up. Keys on the command line show in `ps` and the shell's \
history: use --digits with demo accounts only.";

#[derive(Debug, clap::Args)]
#[command(after_help = CALL_HELP)]
pub struct CallArgs {
    /// The flow to call
    #[arg(long, value_name = "FLOW_ID")]
    pub flow: String,
    /// The caller's number (ANI)
    #[arg(long, default_value = "+15550100", value_name = "NUMBER")]
    pub ani: String,
    /// The number called (DNIS)
    #[arg(long, default_value = "+15550199", value_name = "NUMBER")]
    pub dnis: String,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Call through a running server's decision API instead of in-process (https, or plain
    /// http to a loopback address); credentials from IVRAUTH_CLIENT_ID and
    /// IVRAUTH_CLIENT_SECRET, a client with the scope call:turn
    #[arg(long, value_name = "URL", conflicts_with_all = ["data_dir", "demo"])]
    pub server: Option<String>,
    /// API client id, with --server
    #[arg(long, env = "IVRAUTH_CLIENT_ID")]
    pub client_id: Option<String>,
    /// API client secret, with --server (prefer the environment variable: arguments show in `ps`)
    #[arg(long, env = "IVRAUTH_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub client_secret: Option<Secret<String>>,
    /// Allow a plain http:// --server that is not a loopback address (credentials and keys
    /// then cross the network unencrypted)
    #[arg(long, requires = "server")]
    pub insecure: bool,
    /// The caller's keys, one comma-separated entry per prompt ("" is silence); the caller
    /// hangs up when they run out. Without it, keys are read from the terminal.
    #[arg(long, value_name = "KEYS", allow_hyphen_values = true)]
    pub digits: Option<String>,
    /// Print only {"outcome": {...}, "prompts": [...]} on stdout (the dialogue, when
    /// interactive, goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// First install the phone demo (flow demo-pin and the demo accounts, listed with their
    /// PINs in DATA_DIR/demo-accounts.txt) into the data directory
    #[arg(long)]
    pub demo: bool,
}

/// Run `ivrauth call`: in-process with `settings`, or against `--server` (`settings`
/// `None`).
pub async fn run(args: CallArgs, settings: Option<&Settings>) -> anyhow::Result<ExitCode> {
    let script = match &args.digits {
        Some(d) => Some(parse_digits(d)?),
        None => None,
    };
    let call_id = format!("cli-{}", uuid::Uuid::new_v4());
    let mut ui = Ui::new(args.json, script.is_some());
    match (&args.server, settings) {
        (Some(server), _) => {
            let remote = remote::Remote::connect(&args, server, &call_id).await?;
            ui.say_note(&format!(
                "call {call_id} to flow {} through {} (caller {})",
                args.flow,
                redacted_url(server),
                args.ani
            ));
            let mut line = Line::Remote(remote);
            let outcome = converse(&mut line, &args, script, &mut ui).await;
            finish(&mut line, outcome, &mut ui).await
        }
        (None, Some(settings)) => {
            let sqlite = crate::client_cmd::open(settings, args.demo).await?;
            let result = local::call(&args, settings, &sqlite, script, &mut ui, &call_id).await;
            crate::client_cmd::close(&sqlite, &settings.server.data_dir).await;
            result
        }
        (None, None) => bail!("internal: `ivrauth call` needs settings in-process"),
    }
}

// ---------------------------------------------------------------- the dialogue

/// Keys for one prompt; `None` is silence (no input).
type Keys = Option<Secret<String>>;

/// What a prompt asks for.
#[derive(Debug, Clone)]
struct Ask {
    secure: bool,
    menu: bool,
    choices: Vec<String>,
    min_digits: u32,
    max_digits: u32,
    finish_on_key: String,
}

/// How a call ended.
#[derive(Debug, Clone, Default)]
struct Outcome {
    /// `end`, `transfer` or `hangup`.
    kind: &'static str,
    /// `None` when the caller hung up.
    end_node: Option<String>,
    status_code: Option<u16>,
    queue: Option<String>,
    target: Option<String>,
    reason: Option<String>,
    verified: bool,
    factors: Vec<String>,
    failure_reason: Option<String>,
    /// Why the caller hung up, when they did.
    caller_hangup: Option<&'static str>,
}

/// Something played during a turn.
enum Shown {
    Say(String),
    Note(String),
}

/// One answered turn.
struct Turn {
    shown: Vec<Shown>,
    /// The turn number to send with the next answer.
    next_turn: u32,
    next: Next,
}

enum Next {
    Ask(Ask),
    End(Outcome),
}

/// Where the call goes: in-process, or a server's decision API.
enum Line {
    Local(local::Local),
    Remote(remote::Remote),
}

impl Line {
    async fn turn(
        &mut self,
        args: &CallArgs,
        turn: Option<u32>,
        keys: Option<Keys>,
    ) -> anyhow::Result<Turn> {
        match self {
            Line::Local(l) => l.turn(args, turn, keys).await,
            Line::Remote(r) => r.turn(args, turn, keys).await,
        }
    }

    /// Close the session (a caller who hangs up while asked for a secret after a failure is
    /// charged that attempt).
    async fn hangup(&mut self) -> anyhow::Result<()> {
        match self {
            Line::Local(l) => l.hangup().await,
            Line::Remote(r) => r.hangup().await,
        }
    }

    /// Where the call's audit records are (in-process: the records themselves).
    async fn write_trail(&self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        match self {
            Line::Local(l) => l.write_trail(out).await,
            Line::Remote(r) => r.write_trail(out),
        }
    }
}

/// Run the dialogue until the flow ends or the caller hangs up. Returns the outcome and
/// every spoken text; on an error, the texts so far go with it.
async fn converse(
    line: &mut Line,
    args: &CallArgs,
    mut script: Option<VecDeque<Keys>>,
    ui: &mut Ui,
) -> anyhow::Result<Outcome> {
    let mut turn: Option<u32> = None;
    let mut keys: Option<Keys> = None;
    loop {
        let answered = line.turn(args, turn, keys.take()).await?;
        for s in &answered.shown {
            match s {
                Shown::Say(text) => ui.ivr_says(text),
                Shown::Note(text) => ui.say_note(text),
            }
        }
        let ask = match answered.next {
            Next::End(outcome) => return Ok(outcome),
            Next::Ask(ask) => ask,
        };
        ui.hint(&ask);
        let next = match &mut script {
            Some(list) => list.pop_front().ok_or("the --digits list ran out"),
            None => read_keys(&ask, ui).await?,
        };
        let next = match next {
            Ok(k) => k,
            Err(why) => {
                return Ok(Outcome {
                    kind: "hangup",
                    caller_hangup: Some(why),
                    ..Outcome::default()
                })
            }
        };
        if script.is_some() {
            ui.scripted(&next, ask.secure);
        }
        turn = Some(answered.next_turn);
        keys = Some(next);
    }
}

/// Close the session, then print the outcome (and, in-process, the audit trail).
async fn finish(
    line: &mut Line,
    outcome: anyhow::Result<Outcome>,
    ui: &mut Ui,
) -> anyhow::Result<ExitCode> {
    // Close the session whatever happened: an abandoned call must not wait for the expiry.
    let closed = line.hangup().await;
    let outcome = outcome?;
    closed?;
    let mut out = std::io::stdout().lock();
    if ui.json {
        let body = json!({
            "outcome": {
                "type": outcome.kind,
                "endNode": outcome.end_node,
                "statusCode": outcome.status_code,
                "queue": outcome.queue,
            },
            "prompts": ui.prompts,
        });
        writeln!(out, "{body}")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{}", describe(&outcome))?;
    if outcome.caller_hangup.is_none() {
        let verified = if outcome.verified {
            format!("yes ({})", outcome.factors.join(", "))
        } else {
            format!(
                "no ({})",
                outcome.failure_reason.as_deref().unwrap_or("not attempted")
            )
        };
        writeln!(out, "caller verified: {verified}")?;
    }
    line.write_trail(&mut out).await?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn describe(o: &Outcome) -> String {
    if let Some(why) = o.caller_hangup {
        return format!("outcome: the caller hung up ({why})");
    }
    let node = o.end_node.as_deref().unwrap_or_default();
    match o.kind {
        "end" => format!(
            "outcome: end at {node}{}",
            o.status_code
                .map(|s| format!(" (status {s})"))
                .unwrap_or_default()
        ),
        "transfer" => {
            let to = match (&o.queue, &o.target) {
                (Some(q), _) => format!("queue {q}"),
                (None, Some(t)) => t.clone(),
                (None, None) => "the platform's default".to_owned(),
            };
            let reason = o
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!("outcome: transfer to {to} at {node}{reason}")
        }
        _ => format!("outcome: the flow hung up at {node}"),
    }
}
