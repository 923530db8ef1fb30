//! The call in-process: turns run against the data directory with the very state `serve`
//! builds (same store, identity provider, lockout, session keys), through the decision API's
//! platform ([`Platform::Api`]); and `--demo`, which installs the phone demo first.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use ivrauth_core::call::CallKey;
use ivrauth_core::http::redacted_url;
use ivrauth_core::ivr::{CallEnd, Input, PromptKind, Verb};
use ivrauth_server::app::turn::{self as session, CallError, Platform, TurnRequest, TurnResponse};
use ivrauth_server::calls::TurnAnswer;
use ivrauth_server::AppState;
use ivrauth_store::SqliteStore;

use super::terminal::Ui;
use super::{converse, finish, Ask, CallArgs, Keys, Line, Next, Outcome, Shown, Turn, DEMO_FLOW};
use crate::config::Settings;
use crate::table::Table;

/// The call in-process, against `sqlite` (installing the phone demo first with `--demo`).
pub(super) async fn call(
    args: &CallArgs,
    settings: &Settings,
    sqlite: &SqliteStore,
    script: Option<VecDeque<Keys>>,
    ui: &mut Ui,
    call_id: &str,
) -> anyhow::Result<ExitCode> {
    let (state, _keys) = crate::serve::app_state(settings, false, sqlite).await?;
    if args.demo {
        // The server's own set-up, with the configured hashing parameters; no API client is
        // created, so a server running on the same directory keeps its demo secret.
        ivrauth_server::http::demo::install_phone_demo(&state, settings.identity.hash(), "cli")
            .await
            .map_err(|e| anyhow::anyhow!("cannot install the phone demo: {e}"))?;
        let accounts = crate::serve::write_demo_accounts(&settings.server.data_dir)?;
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
    let mut line = Line::Local(Local {
        state,
        call_id: call_id.to_owned(),
        data_dir: settings.server.data_dir.clone(),
    });
    let outcome = converse(&mut line, args, script, ui).await;
    finish(&mut line, outcome, ui).await
}

/// A call hosted by this process.
pub(super) struct Local {
    state: AppState,
    call_id: String,
    data_dir: PathBuf,
}

impl Local {
    pub(super) async fn turn(
        &mut self,
        args: &CallArgs,
        turn: Option<u32>,
        keys: Option<Keys>,
    ) -> anyhow::Result<Turn> {
        let req = TurnRequest {
            platform: Platform::Api,
            flow_id: args.flow.clone(),
            call_id: self.call_id.clone(),
            ani: args.ani.clone(),
            dnis: args.dnis.clone(),
            turn,
            token: None,
            input: keys.map(|k| k.map_or(Input::NoInput, Input::Digits)),
            call_secret: None,
        };
        let r = session::turn(&self.state, req)
            .await
            .map_err(|e| local_error(e, &args.flow, &self.data_dir))?;
        Ok(local_turn(&r))
    }

    pub(super) async fn hangup(&mut self) -> anyhow::Result<()> {
        session::hangup(
            &self.state,
            &CallKey::new(Platform::Api, self.call_id.clone()),
        )
        .await
        .context("cannot close the call session")?;
        Ok(())
    }

    /// The audit records written for this call (its trace id is the call's key).
    pub(super) async fn write_trail(&self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        let key = CallKey::new(Platform::Api, self.call_id.clone()).to_string();
        let records = self
            .state
            .store
            .read_audit()
            .await
            .context("cannot read the audit log")?;
        let trail: Vec<_> = records
            .iter()
            .filter(|r| r.trace_id.as_deref() == Some(key.as_str()))
            .collect();
        writeln!(out, "audit trail ({key}, {} records):", trail.len())?;
        let mut table = Table::headless(&[]);
        for r in trail {
            table.row([
                r.time.to_rfc3339(),
                r.event.clone(),
                r.outcome.clone(),
                r.detail.to_string(),
            ]);
        }
        table.write_indented(out, "  ")?;
        Ok(())
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
