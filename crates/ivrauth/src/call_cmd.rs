//! `ivrauth call`: a phone call in the terminal.
//!
//! The caller hears each prompt as text and answers with keys. In-process (the default) the
//! call runs against the data directory with the very state `serve` builds (same store,
//! identity provider, lockout, session keys) through the decision API's platform
//! ([`Platform::Api`]); with `--server URL` it goes through a running server's decision API
//! (`POST /api/v2/calls/{callId}/turns`, scope `call:turn`).
//!
//! Keys come from the terminal, a line per prompt (an empty line is a silent turn; end of
//! input hangs up), or from `--digits "10001#,2468#,9"`, one entry per prompt, the call
//! hanging up when the list runs out. Secure prompts (PINs) echo `*` per key on a terminal
//! and are read silently otherwise; secure keys appear in no output, log or audit record.
//! The call ends with its outcome and, in-process, its audit trail; `--json` prints only
//! `{"outcome": {...}, "prompts": [...]}`.

use std::collections::VecDeque;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroize as _;

use ivrauth_core::call::CallKey;
use ivrauth_core::http::{redacted_url, secure_transport};
use ivrauth_core::identity::AccountNumber;
use ivrauth_core::ivr::{CallEnd, Input, PromptKind, Verb};
use ivrauth_core::ports::AccountRecord;
use ivrauth_core::secret::Secret;
use ivrauth_proto::api::{ErrorBody, TokenResponse};
use ivrauth_server::app::turn::{self as session, CallError, Platform, TurnRequest, TurnResponse};
use ivrauth_server::calls::TurnAnswer;
use ivrauth_server::AppState;
use ivrauth_store::SqliteStore;

use crate::config::Settings;
use crate::DataDirArg;

/// The flow `--demo` installs.
const DEMO_FLOW: &str = "demo-pin";

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

/// clap's parser for the client secret: straight into a [`Secret`].
fn parse_secret(s: &str) -> Result<Secret<String>, std::convert::Infallible> {
    Ok(Secret::new(s.to_owned()))
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
            let remote = Remote::connect(&args, server).await?;
            let mut line = Line::Remote {
                remote,
                call_id: call_id.clone(),
            };
            ui.say_note(&format!(
                "call {call_id} to flow {} through {} (caller {})",
                args.flow,
                redacted_url(server),
                args.ani
            ));
            let outcome = converse(&mut line, &args, script, &mut ui).await;
            finish(&mut line, outcome, &mut ui).await
        }
        (None, Some(settings)) => {
            let sqlite = crate::client_cmd::open(settings, args.demo).await?;
            let result = in_process(&args, settings, &sqlite, script, &mut ui, &call_id).await;
            crate::client_cmd::close(&sqlite, &settings.server.data_dir).await;
            result
        }
        (None, None) => bail!("internal: `ivrauth call` needs settings in-process"),
    }
}

async fn in_process(
    args: &CallArgs,
    settings: &Settings,
    sqlite: &SqliteStore,
    script: Option<VecDeque<Keys>>,
    ui: &mut Ui,
    call_id: &str,
) -> anyhow::Result<ExitCode> {
    let (state, _keys) = crate::serve::app_state(settings, false, sqlite).await?;
    if args.demo {
        let accounts = install_phone_demo(&state, settings).await?;
        ui.say_note(&format!(
            "phone demo installed: flow {DEMO_FLOW}; demo accounts and their PINs are in {} (readable by you only)",
            accounts.display()
        ));
    }
    ui.say_note(&format!(
        "call {call_id} to flow {} in {} (caller {})",
        args.flow,
        settings.server.data_dir.display(),
        args.ani
    ));
    let mut line = Line::Local {
        state,
        call_id: call_id.to_owned(),
        data_dir: settings.server.data_dir.clone(),
    };
    let outcome = converse(&mut line, args, script, ui).await;
    finish(&mut line, outcome, ui).await
}

// ---------------------------------------------------------------- the dialogue

/// Keys for one prompt; `None` is silence (no input).
type Keys = Option<Secret<String>>;

/// `--digits`: comma-separated entries of keys (0-9, *, #); empty entries are silence.
/// Errors name the entry by position, never its content (it may be a PIN).
fn parse_digits(text: &str) -> anyhow::Result<VecDeque<Keys>> {
    let mut out = VecDeque::new();
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if !entry.chars().all(is_key) {
            bail!(
                "--digits entry #{} holds something that is not a phone key (0-9, * and #)",
                i + 1
            );
        }
        out.push_back((!entry.is_empty()).then(|| Secret::new(entry.to_owned())));
    }
    Ok(out)
}

fn is_key(c: char) -> bool {
    c.is_ascii_digit() || c == '*' || c == '#'
}

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
    Local {
        state: AppState,
        call_id: String,
        data_dir: PathBuf,
    },
    Remote {
        remote: Remote,
        call_id: String,
    },
}

impl Line {
    async fn turn(
        &mut self,
        args: &CallArgs,
        turn: Option<u32>,
        keys: Option<Keys>,
    ) -> anyhow::Result<Turn> {
        match self {
            Line::Local {
                state,
                call_id,
                data_dir,
            } => {
                let req = TurnRequest {
                    platform: Platform::Api,
                    flow_id: args.flow.clone(),
                    call_id: call_id.clone(),
                    ani: args.ani.clone(),
                    dnis: args.dnis.clone(),
                    turn,
                    token: None,
                    input: keys.map(|k| k.map_or(Input::NoInput, Input::Digits)),
                    call_secret: None,
                };
                let r = session::turn(state, req)
                    .await
                    .map_err(|e| local_error(e, &args.flow, data_dir))?;
                Ok(local_turn(&r))
            }
            Line::Remote { remote, call_id } => remote.turn(args, call_id, turn, keys).await,
        }
    }

    /// Close the session (a caller who hangs up while asked for a secret after a failure is
    /// charged that attempt).
    async fn hangup(&mut self) -> anyhow::Result<()> {
        match self {
            Line::Local { state, call_id, .. } => {
                session::hangup(state, &CallKey::new(Platform::Api, call_id.clone()))
                    .await
                    .context("cannot close the call session")?;
                Ok(())
            }
            Line::Remote { remote, call_id } => remote.hangup(call_id).await,
        }
    }
}

fn local_error(e: CallError, flow: &str, data_dir: &std::path::Path) -> anyhow::Error {
    match e {
        CallError::UnknownFlow => anyhow::anyhow!(
            "no flow `{flow}` in {} (deploy it, or run `ivrauth call --demo --flow {DEMO_FLOW}` for the phone demo)",
            data_dir.display()
        ),
        CallError::FlowNotCallable(m) => anyhow::anyhow!("flow `{flow}` cannot take calls: {m}"),
        other => anyhow::anyhow!("the call failed: {other}"),
    }
}

/// A turn of the in-process call.
fn local_turn(r: &TurnResponse) -> Turn {
    let (verbs, prompt) = match &r.answer {
        TurnAnswer::Ask { verbs, prompt } => (verbs, Some(prompt)),
        TurnAnswer::End { verbs, .. } => (verbs, None),
    };
    let shown = verbs
        .iter()
        .chain(prompt.map(|p| p.say.iter()).into_iter().flatten())
        .filter_map(shown_verb)
        .collect();
    let next = match &r.answer {
        TurnAnswer::Ask { prompt, .. } => Next::Ask(Ask {
            secure: prompt.secure,
            menu: prompt.kind == PromptKind::Menu,
            choices: prompt.choices.clone(),
            min_digits: prompt.min_digits,
            max_digits: prompt.max_digits,
            finish_on_key: prompt.finish_on_key.clone(),
        }),
        TurnAnswer::End {
            end, attributes, ..
        } => {
            let mut o = Outcome {
                verified: attributes.verified,
                factors: attributes.factors.clone(),
                failure_reason: attributes.failure_reason.clone(),
                ..Outcome::default()
            };
            match end {
                CallEnd::End {
                    end_node,
                    status_code,
                } => {
                    o.kind = "end";
                    o.end_node = Some(end_node.clone());
                    o.status_code = *status_code;
                }
                CallEnd::Transfer {
                    node_id,
                    queue,
                    target,
                    reason,
                } => {
                    o.kind = "transfer";
                    o.end_node = Some(node_id.clone());
                    o.queue.clone_from(queue);
                    o.target.clone_from(target);
                    o.reason.clone_from(reason);
                }
                CallEnd::Hangup { node_id } => {
                    o.kind = "hangup";
                    o.end_node = Some(node_id.clone());
                }
            }
            Next::End(o)
        }
    };
    Turn {
        shown,
        next_turn: r.next_turn,
        next,
    }
}

fn shown_verb(v: &Verb) -> Option<Shown> {
    match v {
        Verb::Say { text, .. } => Some(Shown::Say(text.clone())),
        Verb::Pause { seconds } => Some(Shown::Note(format!("({seconds} s of silence)"))),
        Verb::Play { url } => Some(Shown::Note(format!("(plays {})", redacted_url(url)))),
        Verb::RecordingPause => Some(Shown::Note("(call recording paused)".to_owned())),
        Verb::RecordingResume => Some(Shown::Note("(call recording resumed)".to_owned())),
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
    match line {
        Line::Local { state, call_id, .. } => {
            let key = CallKey::new(Platform::Api, call_id.clone()).to_string();
            let records = state
                .store
                .read_audit()
                .await
                .context("cannot read the audit log")?;
            let trail: Vec<_> = records
                .iter()
                .filter(|r| r.trace_id.as_deref() == Some(key.as_str()))
                .collect();
            writeln!(out, "audit trail ({key}, {} records):", trail.len())?;
            for r in trail {
                writeln!(
                    out,
                    "  {}  {:<20} {:<8} {}",
                    r.time.to_rfc3339(),
                    r.event,
                    r.outcome,
                    r.detail
                )?;
            }
        }
        Line::Remote { call_id, .. } => {
            writeln!(
                out,
                "audit trail: in the server's audit log (trace id api:{call_id}); `ivrauth audit` there"
            )?;
        }
    }
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

// ---------------------------------------------------------------- the terminal

/// Where the dialogue is shown, and the spoken texts so far.
struct Ui {
    json: bool,
    /// Nothing but the JSON (scripted `--json`).
    quiet: bool,
    prompts: Vec<String>,
}

impl Ui {
    fn new(json: bool, scripted: bool) -> Self {
        Ui {
            json,
            quiet: json && scripted,
            prompts: Vec::new(),
        }
    }

    /// The dialogue goes to stdout, or to stderr when stdout is the JSON's.
    fn write(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{text}");
            let _ = err.flush();
        } else {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{text}");
            let _ = out.flush();
        }
    }

    fn ivr_says(&mut self, text: &str) {
        self.prompts.push(text.to_owned());
        self.write(&format!("ivr: {text}\n"));
    }

    fn say_note(&self, text: &str) {
        self.write(&format!("  {text}\n"));
    }

    fn hint(&self, ask: &Ask) {
        let mut parts = Vec::new();
        if ask.menu {
            parts.push(format!("menu: {}", ask.choices.join(", ")));
        } else if ask.min_digits == ask.max_digits && ask.max_digits > 0 {
            parts.push(format!("{} keys", ask.max_digits));
        } else if ask.max_digits > 0 {
            parts.push(format!("{}-{} keys", ask.min_digits, ask.max_digits));
        }
        if !ask.finish_on_key.is_empty() && !ask.menu {
            parts.push(format!("end with {}", ask.finish_on_key));
        }
        if ask.secure {
            parts.push("secure: masked, never shown".to_owned());
        }
        self.write(&format!("  [{}]\n", parts.join("; ")));
    }

    /// A scripted answer, as the transcript shows it.
    fn scripted(&self, keys: &Keys, secure: bool) {
        self.write(&format!("you> {}\n", shown_keys(keys, secure)));
    }
}

/// Keys as the transcript shows them: secure ones never.
fn shown_keys(keys: &Keys, secure: bool) -> String {
    match keys {
        None => "(silence)".to_owned(),
        Some(_) if secure => "********".to_owned(),
        Some(k) => k.expose().clone(),
    }
}

/// Read the caller's keys for `ask` from the terminal or standard input. `Err(why)`: the
/// caller hung up (end of input, or Ctrl-C while typing a secret).
async fn read_keys(ask: &Ask, ui: &Ui) -> anyhow::Result<Result<Keys, &'static str>> {
    let stdin_tty = std::io::stdin().is_terminal();
    loop {
        ui.write("you> ");
        let ask2 = ask.clone();
        let json = ui.json;
        let read = tokio::task::spawn_blocking(move || read_entry(&ask2, stdin_tty, json))
            .await
            .context("the terminal reader failed")?
            .context("cannot read the keys")?;
        match read {
            Entry::HungUp(why) => {
                ui.write("\n");
                return Ok(Err(why));
            }
            Entry::NotKeys => {
                ui.say_note("only 0-9, * and # are keys; try again");
            }
            Entry::Keys(k) => {
                if !stdin_tty {
                    // Nothing echoed the line: show it (masked) in the transcript.
                    ui.write(&format!("{}\n", shown_keys(&k, ask.secure)));
                }
                return Ok(Ok(k));
            }
        }
    }
}

enum Entry {
    Keys(Keys),
    NotKeys,
    /// Why.
    HungUp(&'static str),
}

/// One entry, blocking. A secure entry on a terminal is read key by key in raw mode,
/// echoing `*` (on stderr's terminal when stdout is the JSON's); anything else is a line (a
/// secure one on a terminal that cannot go raw is read without echo).
fn read_entry(ask: &Ask, stdin_tty: bool, json: bool) -> std::io::Result<Entry> {
    if ask.secure && stdin_tty {
        let (out, err) = (console::Term::stdout(), console::Term::stderr());
        let term = if out.is_term() && !json {
            Some(out)
        } else if err.is_term() {
            Some(err)
        } else {
            None
        };
        return match term {
            Some(term) => read_masked(&term, ask),
            None => {
                let mut line = rpassword::read_password()?;
                let entry = entry_from(&line);
                line.zeroize();
                Ok(entry)
            }
        };
    }
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line)?;
    if n == 0 {
        return Ok(Entry::HungUp("end of input"));
    }
    let entry = entry_from(&line);
    line.zeroize();
    Ok(entry)
}

fn entry_from(line: &str) -> Entry {
    let keys: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if keys.is_empty() {
        Entry::Keys(None)
    } else if keys.chars().all(is_key) {
        Entry::Keys(Some(Secret::new(keys)))
    } else {
        let mut keys = keys;
        keys.zeroize();
        Entry::NotKeys
    }
}

/// A secret typed key by key, each echoed as `*`; Enter, the finish key or the most digits
/// the prompt takes end it; Backspace takes a key back; Ctrl-C hangs up.
fn read_masked(term: &console::Term, ask: &Ask) -> std::io::Result<Entry> {
    use console::Key;
    let finish = ask.finish_on_key.chars().next();
    let mut keys = String::new();
    let result = loop {
        match term.read_key_raw() {
            Err(e) => break Err(e),
            Ok(Key::Enter) => break Ok(()),
            Ok(Key::CtrlC) => {
                keys.zeroize();
                term.write_line("")?;
                return Ok(Entry::HungUp("Ctrl-C"));
            }
            Ok(Key::Backspace) => {
                if keys.pop().is_some() {
                    term.clear_chars(1)?;
                }
            }
            Ok(Key::Char(c)) if is_key(c) => {
                keys.push(c);
                term.write_str("*")?;
                let digits = keys.chars().filter(|k| Some(*k) != finish).count();
                if Some(c) == finish || (ask.max_digits > 0 && digits >= ask.max_digits as usize) {
                    break Ok(());
                }
            }
            Ok(_) => {}
        }
    };
    term.write_line("")?;
    if let Err(e) = result {
        keys.zeroize();
        return Err(e);
    }
    Ok(if keys.is_empty() {
        Entry::Keys(None)
    } else {
        Entry::Keys(Some(Secret::new(keys)))
    })
}

// ---------------------------------------------------------------- the phone demo

/// Install the phone demo into the data directory: the `demo-pin` flow (a new version only
/// when its document changed) and the demo accounts that do not exist yet, then write
/// `demo-accounts.txt`. Unlike `serve --demo` it creates no API client (so a server running
/// on the same directory keeps its demo secret).
async fn install_phone_demo(state: &AppState, settings: &Settings) -> anyhow::Result<PathBuf> {
    let now = state.clock.now();
    // Only the phone demo is installed; the identity endpoint URL matters to other flows.
    let flows = ivrauth_server::http::demo::demo_flows("http://127.0.0.1:8080")
        .map_err(|e| anyhow::anyhow!("cannot build the demo flows: {e}"))?;
    let (id, doc) = flows
        .into_iter()
        .find(|(id, _)| *id == DEMO_FLOW)
        .context("internal: the demo flows have no demo-pin")?;
    let text = doc.to_string();
    let name = doc["name"].as_str().unwrap_or(id).to_owned();
    let store = &state.store;
    match store.get_flow(id, None).await? {
        Some(existing) if existing.document == text => {}
        Some(_) => {
            store.update_flow(id, &name, &text, "demo", now).await?;
        }
        None => {
            store.create_flow(id, &name, &text, "demo", now).await?;
        }
    }
    let params = settings.identity.hash();
    let mut created = Vec::new();
    for (number, pin, name, phone, email) in ivrauth_server::http::demo::DEMO_ACCOUNTS {
        if store.get_account(number).await?.is_some() {
            continue;
        }
        let account = AccountNumber::parse(number)
            .map_err(|e| anyhow::anyhow!("demo account {number}: {e}"))?;
        let pin = Secret::new((*pin).to_owned());
        let hash =
            tokio::task::spawn_blocking(move || ivrauth_store::directory::hash_pin(&pin, params))
                .await
                .context("the hashing thread failed")?
                .map_err(|e| anyhow::anyhow!("cannot hash a demo PIN: {e}"))?;
        store
            .create_account(&AccountRecord {
                account,
                name: (*name).to_owned(),
                greeting: None,
                phone: Some((*phone).to_owned()),
                email: Some((*email).to_owned()),
                phone_verified: true,
                email_verified: false,
                disabled: false,
                pin_hash: Some(hash),
                pin_history: Vec::new(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        created.push(*number);
    }
    let event = ivrauth_core::audit::AuditEvent {
        id: uuid::Uuid::new_v4().to_string(),
        event: "demo.installed".to_owned(),
        outcome: "success".to_owned(),
        actor: "cli".to_owned(),
        subject: "demo".to_owned(),
        trace_id: None,
        detail: json!({ "flows": [DEMO_FLOW], "accountsCreated": created }),
    };
    store
        .append_audit(&event, now)
        .await
        .context("cannot write the audit record")?;
    crate::serve::write_demo_accounts(&settings.server.data_dir)
}

// ---------------------------------------------------------------- a server

/// A server's decision API, with a bearer token.
struct Remote {
    http: reqwest::Client,
    base: String,
    token: Secret<String>,
}

/// The decision API's flat answer (`ApiTurnResponse`), the fields used here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ApiTurn {
    turn: u32,
    action: String,
    prompt: String,
    min_digits: u32,
    max_digits: u32,
    finish_on_key: String,
    secure: bool,
    choices: String,
    recording: String,
    queue: String,
    target: String,
    reason: String,
    end_node: String,
    /// `0` (or `null`) when there is none.
    status_code: Option<u16>,
    verified: bool,
    factors: String,
    failure_reason: String,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Remote {
    async fn connect(args: &CallArgs, server: &str) -> anyhow::Result<Remote> {
        check_transport(server, args.insecure)?;
        let (Some(id), Some(secret)) = (&args.client_id, &args.client_secret) else {
            bail!(
                "--server needs API client credentials: set IVRAUTH_CLIENT_ID and \
                 IVRAUTH_CLIENT_SECRET (a client with the scope call:turn; see `ivrauth client create`)"
            );
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        let base = server.trim_end_matches('/').to_owned();
        let shown = redacted_url(&base);
        let res = http
            .post(format!("{base}/auth/v3/oauth/token"))
            .basic_auth(id, Some(secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the server at {shown}: {}", reqwest_cause(&e))
            })?;
        let status = res.status();
        if !status.is_success() {
            bail!(
                "the server at {shown} refused the client credentials ({status}): check IVRAUTH_CLIENT_ID and IVRAUTH_CLIENT_SECRET"
            );
        }
        let token: TokenResponse = res
            .json()
            .await
            .with_context(|| format!("{shown} did not answer like an ivrauth server"))?;
        Ok(Remote {
            http,
            base,
            token: Secret::new(token.access_token),
        })
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let shown = redacted_url(&self.base);
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the server at {shown}: {}", reqwest_cause(&e))
            })?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn turn(
        &self,
        args: &CallArgs,
        call_id: &str,
        turn: Option<u32>,
        keys: Option<Keys>,
    ) -> anyhow::Result<Turn> {
        let mut body = json!({"flowId": args.flow, "ani": args.ani, "dnis": args.dnis});
        if let Some(t) = turn {
            body["turn"] = json!(t);
        }
        if let Some(k) = &keys {
            body["input"] = json!(k.as_ref().map_or("", |s| s.expose().as_str()));
        }
        let path = format!("/api/v2/calls/{}/turns", enc(call_id));
        let sent = self.post(&path, &body).await;
        // The keys were in the request body: do not keep them around.
        if let Some(Value::String(mut s)) = body.get_mut("input").map(Value::take) {
            s.zeroize();
        }
        let (status, resp) = sent?;
        if status != 200 {
            bail!("{}", server_error(status, &resp, &args.flow));
        }
        let r: ApiTurn =
            serde_json::from_value(resp).context("unexpected answer from the server")?;
        let mut shown = Vec::new();
        match r.recording.as_str() {
            "pause" => shown.push(Shown::Note("(call recording paused)".to_owned())),
            "resume" => shown.push(Shown::Note("(call recording resumed)".to_owned())),
            _ => {}
        }
        if !r.prompt.is_empty() {
            shown.push(Shown::Say(r.prompt.clone()));
        }
        let end = |kind: &'static str| Outcome {
            kind,
            end_node: non_empty(&r.end_node),
            status_code: r.status_code.filter(|s| *s != 0),
            queue: non_empty(&r.queue),
            target: non_empty(&r.target),
            reason: non_empty(&r.reason),
            verified: r.verified,
            factors: split_list(&r.factors),
            failure_reason: non_empty(&r.failure_reason),
            caller_hangup: None,
        };
        let next = match r.action.as_str() {
            "collect" => Next::Ask(Ask {
                secure: r.secure,
                menu: !r.choices.is_empty(),
                choices: split_list(&r.choices),
                min_digits: r.min_digits,
                max_digits: r.max_digits,
                finish_on_key: r.finish_on_key.clone(),
            }),
            "say" => Next::End(end("end")),
            "transfer" => Next::End(end("transfer")),
            "hangup" => Next::End(end("hangup")),
            other => bail!("the server answered an unknown action {other:?}"),
        };
        Ok(Turn {
            shown,
            next_turn: r.turn,
            next,
        })
    }

    async fn hangup(&self, call_id: &str) -> anyhow::Result<()> {
        let path = format!("/api/v2/calls/{}/hangup", enc(call_id));
        let (status, resp) = self.post(&path, &json!({})).await?;
        if status != 200 {
            bail!(
                "cannot close the call session: {}",
                server_error(status, &resp, "")
            );
        }
        Ok(())
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The innermost cause of a request failure ("Connection refused"), without the URL.
fn reqwest_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// A refusal from the server, in words.
fn server_error(status: u16, body: &Value, flow: &str) -> String {
    let detail = serde_json::from_value::<ErrorBody>(body.clone())
        .map(|e| format!("{}: {}", e.code, e.message))
        .unwrap_or_else(|_| "no details".to_owned());
    let hint = match status {
        401 => " (the access token was refused)",
        403 => " (the API client needs the scope call:turn)",
        404 if !flow.is_empty() => " (is the flow deployed on that server?)",
        _ => "",
    };
    format!("the server answered {status}{hint}: {detail}")
}

/// Refuse to send credentials (and keys) to `server` unless it is https or plain http to a
/// loopback address, or `insecure` accepts plain http.
fn check_transport(server: &str, insecure: bool) -> anyhow::Result<()> {
    let shown = redacted_url(server);
    let scheme = url::Url::parse(server).map(|u| u.scheme().to_owned());
    match scheme.as_deref() {
        Ok("https") => Ok(()),
        Ok("http") if secure_transport(server) => Ok(()),
        Ok("http") if insecure => {
            eprintln!(
                "warning: --insecure: sending credentials and keys to {shown} over plain http"
            );
            Ok(())
        }
        Ok("http") => bail!(
            "refusing to send the client credentials and the caller's keys to {shown} over plain \
             http; use an https:// --server URL (plain http is allowed to loopback addresses \
             only), or pass --insecure if you trust the network"
        ),
        _ => bail!("--server must be an http(s) URL such as https://ivrauth.example.com"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn digits_parse_into_entries_and_silences() {
        let d = parse_digits("10001#, 2468# ,,9").unwrap();
        let shown: Vec<String> = d.iter().map(|k| shown_keys(k, false)).collect();
        assert_eq!(shown, ["10001#", "2468#", "(silence)", "9"]);
        assert_eq!(parse_digits("").unwrap().len(), 1);
        assert_eq!(parse_digits(",,,").unwrap().len(), 4);
    }

    #[test]
    fn bad_digits_name_the_entry_not_its_content() {
        let err = parse_digits("1,24x68").unwrap_err().to_string();
        assert!(err.contains("#2"), "{err}");
        assert!(!err.contains("24x68"), "{err}");
    }

    #[test]
    fn secure_keys_are_never_shown() {
        let k = Some(Secret::new("2468#".to_owned()));
        assert_eq!(shown_keys(&k, true), "********");
        assert!(matches!(entry_from(" 12 34#\n"), Entry::Keys(Some(k)) if k.expose() == "1234#"));
        assert!(matches!(entry_from("\n"), Entry::Keys(None)));
        assert!(matches!(entry_from("12a\n"), Entry::NotKeys));
    }

    #[test]
    fn transport_rules() {
        assert!(check_transport("https://ivr.example.com", false).is_ok());
        assert!(check_transport("http://127.0.0.1:8080", false).is_ok());
        assert!(check_transport("http://ivr.example.com", false).is_err());
        assert!(check_transport("http://ivr.example.com", true).is_ok());
        assert!(check_transport("ftp://ivr.example.com", true).is_err());
    }
}
