//! The call through a running server's decision API (`POST /api/v2/calls/{callId}/turns`
//! and `/hangup`, scope `call:turn`), with the CLI's API client and the decision API's own
//! wire types. The keys sent are wiped from memory once the request is out.

use anyhow::bail;
use zeroize::Zeroize as _;

use ivrauth_proto::calls::{ApiHangupResponse, ApiTurnRequest, ApiTurnResponse, TurnAction};

use super::{Ask, CallArgs, Keys, Next, Outcome, Shown, Turn};
use crate::api_client::{path_segment, Answer, ApiClient, Credentials};

/// A call through a server's decision API.
pub(super) struct Remote {
    api: ApiClient,
    call_id: String,
}

impl Remote {
    /// Fetch a token for the call `call_id` to `server`, with the credentials of `args`.
    pub(super) async fn connect(
        args: &CallArgs,
        server: &str,
        call_id: &str,
    ) -> anyhow::Result<Remote> {
        let (Some(id), Some(secret)) = (&args.client_id, &args.client_secret) else {
            bail!(
                "--server needs API client credentials: set IVRAUTH_CLIENT_ID and \
                 IVRAUTH_CLIENT_SECRET (a client with the scope call:turn; see `ivrauth client create`)"
            );
        };
        let api = ApiClient::connect(&Credentials {
            server,
            client_id: id,
            client_secret: secret,
            insecure: args.insecure,
            sends: "the client credentials and the caller's keys",
        })
        .await?;
        Ok(Remote {
            api,
            call_id: call_id.to_owned(),
        })
    }

    fn path(&self, what: &str) -> String {
        format!("/api/v2/calls/{}/{what}", path_segment(&self.call_id))
    }

    pub(super) async fn turn(
        &self,
        args: &CallArgs,
        turn: Option<u32>,
        keys: Option<Keys>,
    ) -> anyhow::Result<Turn> {
        let mut req = ApiTurnRequest {
            flow_id: args.flow.clone(),
            ani: args.ani.clone(),
            dnis: args.dnis.clone(),
            input: keys.map(|k| k.map_or_else(String::new, |s| s.expose().clone())),
            turn,
        };
        let sent = self.api.post(&self.path("turns"), &req).await;
        // The keys were in the request body: do not keep them around.
        if let Some(mut s) = req.input.take() {
            s.zeroize();
        }
        let answer = sent?;
        if answer.status != 200 {
            bail!("{}", refusal(&answer, &args.flow));
        }
        Ok(remote_turn(answer.parse()?))
    }

    pub(super) async fn hangup(&self) -> anyhow::Result<()> {
        let answer = self
            .api
            .post(&self.path("hangup"), &serde_json::json!({}))
            .await?;
        if answer.status != 200 {
            bail!("cannot close the call session: {}", refusal(&answer, ""));
        }
        let _closed: ApiHangupResponse = answer.parse()?;
        Ok(())
    }

    pub(super) fn write_trail(&self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        writeln!(
            out,
            "audit trail: in the server's audit log (trace id api:{}); `ivrauth audit` there",
            self.call_id
        )?;
        Ok(())
    }
}

/// A refusal of the decision API in words, with a hint for the usual causes.
fn refusal(answer: &Answer, flow: &str) -> String {
    let hint = match answer.status {
        401 => " (the access token was refused)",
        403 => " (the API client needs the scope call:turn)",
        404 if !flow.is_empty() => " (is the flow deployed on that server?)",
        _ => "",
    };
    answer.refusal().describe(hint)
}

/// A turn of the decision API's flat answer.
fn remote_turn(r: ApiTurnResponse) -> Turn {
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
        status_code: Some(r.status_code).filter(|s| *s != 0),
        queue: non_empty(&r.queue),
        target: non_empty(&r.target),
        reason: non_empty(&r.reason),
        verified: r.verified,
        factors: split_list(&r.factors),
        failure_reason: non_empty(&r.failure_reason),
        caller_hangup: None,
    };
    let next = match r.action {
        TurnAction::Collect => Next::Ask(Ask {
            secure: r.secure,
            menu: !r.choices.is_empty(),
            choices: split_list(&r.choices),
            min_digits: r.min_digits,
            max_digits: r.max_digits,
            finish_on_key: r.finish_on_key.clone(),
        }),
        TurnAction::Say => Next::End(end("end")),
        TurnAction::Transfer => Next::End(end("transfer")),
        TurnAction::Hangup => Next::End(end("hangup")),
    };
    Turn {
        shown,
        next_turn: r.turn,
        next,
    }
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
