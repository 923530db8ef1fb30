#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `ivrauth call` end to end: the real binary, against temporary data directories, and
//! against a real `ivrauth serve --demo` on a free port.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const ACCOUNT_PROMPT: &str = "Please enter your account number, followed by the pound key.";
const PIN_PROMPT: &str = "Please enter your PIN, followed by the pound key.";
const MENU: &str = "Press 1 for account balance, 2 for payments, or 9 to exit.";
const SORRY: &str = "Sorry, that did not match. Please try again.";
const HOLD: &str = "Please hold while we transfer you to an agent.";
const BALANCE: &str = "This is a demo: your balance is one hundred dollars.";
/// The demo directory gives Ada Lovelace the greeting "Ada" (the first word of the name).
const WELCOME_ADA: &str = "Welcome, Ada.";

/// The demo PINs (`ivrauth_server::http::demo::DEMO_ACCOUNTS`).
const DEMO_PINS: [&str; 3] = ["2468", "1357", "864209"];

/// The binary with a clean environment: no `IVRAUTH_*` variables, run in `cwd`, quiet logs.
use crate::support::ivrauth;

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

use crate::support::stderr;

/// `ivrauth call --demo --json --digits DIGITS` in `dir/data`; the parsed JSON.
fn demo_call_json(dir: &Path, digits: &str) -> Value {
    let out = ivrauth(dir)
        .args([
            "call",
            "--demo",
            "--flow",
            "demo-pin",
            "--json",
            "--digits",
            digits,
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["outcome", "prompts"]
    );
    for pin in DEMO_PINS {
        assert!(!has_token(&text, pin), "PIN in {text}");
        assert!(!has_token(&stderr(&out), pin), "PIN in {}", stderr(&out));
    }
    v
}

fn prompts(v: &Value) -> Vec<&str> {
    v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect()
}

/// Whether `needle` (digits) occurs in `hay` as a number of its own: not inside a longer
/// number, decimal, identifier or UUID (so `elapsed=1.2468ms` or a random id does not count,
/// but `pin=2468`, `"2468#"` or `2468` alone does).
fn has_token(hay: &str, needle: &str) -> bool {
    let glued =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !glued(before) && !glued(after)
    })
}

#[test]
fn the_right_pin_reaches_the_menu_and_the_flow_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let v = demo_call_json(dir.path(), "10001#,2468#,1,9");
    assert_eq!(
        v["outcome"],
        json!({"type": "hangup", "endNode": "hangup", "statusCode": null, "queue": null})
    );
    assert_eq!(
        prompts(&v),
        [
            ACCOUNT_PROMPT,
            PIN_PROMPT,
            WELCOME_ADA,
            MENU,
            BALANCE,
            MENU,
            "Goodbye."
        ]
    );
}

#[test]
fn three_wrong_pins_transfer_to_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let v = demo_call_json(dir.path(), "10001#,1111#,2222#,3333#");
    assert_eq!(
        v["outcome"],
        json!({"type": "transfer", "endNode": "agent", "statusCode": null, "queue": "agents"})
    );
    assert_eq!(
        prompts(&v),
        [
            ACCOUNT_PROMPT,
            PIN_PROMPT,
            SORRY,
            PIN_PROMPT,
            SORRY,
            PIN_PROMPT,
            HOLD
        ]
    );
}

#[test]
fn silence_reprompts_then_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let v = demo_call_json(dir.path(), ",,,");
    assert_eq!(v["outcome"]["type"], "transfer");
    assert_eq!(v["outcome"]["queue"], "agents");
    assert_eq!(
        prompts(&v),
        [ACCOUNT_PROMPT, ACCOUNT_PROMPT, ACCOUNT_PROMPT, HOLD]
    );
}

#[test]
fn the_caller_hangs_up_when_the_digits_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let v = demo_call_json(dir.path(), "10001#");
    assert_eq!(
        v["outcome"],
        json!({"type": "hangup", "endNode": null, "statusCode": null, "queue": null})
    );
    assert_eq!(prompts(&v), [ACCOUNT_PROMPT, PIN_PROMPT]);

    // The human form says who hung up, and the session was closed (audited).
    let out = ivrauth(dir.path())
        .args([
            "call",
            "--flow",
            "demo-pin",
            "--digits",
            "10001#",
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("outcome: the caller hung up (the --digits list ran out)"),
        "{text}"
    );
    assert!(text.contains("call.closed"), "{text}");
}

/// The transcript shows the account number but never the PIN, in any output, at any log
/// level; the audit trail is the call's.
#[test]
fn secure_digits_appear_in_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A second account with a PIN that cannot occur by chance.
    const CANARY_PIN: &str = "73915046";
    let out = ivrauth(d)
        .args([
            "call",
            "--demo",
            "--flow",
            "demo-pin",
            "--digits",
            "",
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut add = ivrauth(d);
    add.args([
        "account",
        "add",
        "20002",
        "--name",
        "Canary Caller",
        "--data-dir",
        "data",
    ]);
    let added = crate::support::with_stdin(add, &format!("{CANARY_PIN}\n"));
    assert!(added.status.success(), "{}", stderr(&added));

    for (account, pin, greeting) in [
        ("10001", "2468", WELCOME_ADA),
        ("20002", CANARY_PIN, "Welcome, Canary."),
    ] {
        for level in ["warn", "trace"] {
            let out = ivrauth(d)
                .env("RUST_LOG", level)
                .args([
                    "call",
                    "--flow",
                    "demo-pin",
                    "--digits",
                    &format!("{account}#,{pin}#,9"),
                    "--data-dir",
                    "data",
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let (text, err) = (stdout(&out), stderr(&out));
            assert!(text.contains(greeting), "{text}");
            assert!(text.contains(&format!("you> {account}#")), "{text}");
            assert!(text.contains("you> ********"), "{text}");
            assert!(text.contains("caller verified: yes (pin)"), "{text}");
            // The trail: the verification, the end of the call and the closed session, all
            // under the call's trace id.
            let call_key = text
                .lines()
                .find_map(|l| l.strip_prefix("audit trail ("))
                .and_then(|l| l.split(',').next())
                .unwrap()
                .to_owned();
            assert!(call_key.starts_with("api:cli-"), "{text}");
            for event in ["identity.verify", "call.ended", "call.closed"] {
                assert!(text.contains(event), "{event} missing from {text}");
            }
            if level == "trace" {
                assert!(err.lines().count() > 10, "trace logging is on: {err}");
            }
            for (name, output) in [("stdout", &text), ("stderr", &err)] {
                assert!(!output.contains(&format!("{pin}#")), "{name}: {output}");
                assert!(!has_token(output, pin), "PIN in {name} ({level}): {output}");
            }
            assert!(!text.contains(CANARY_PIN) && !err.contains(CANARY_PIN));
        }
    }
    // Nor does the database hold it.
    for entry in std::fs::read_dir(d.join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes
            .windows(CANARY_PIN.len())
            .any(|w| w == CANARY_PIN.as_bytes()));
    }
}

/// Keys typed on standard input (not a terminal): a line per prompt; with --json the
/// dialogue goes to stderr, masked, and stdout holds only the JSON.
#[test]
fn keys_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ivrauth(dir.path())
        .args([
            "call",
            "--demo",
            "--flow",
            "demo-pin",
            "--json",
            "--data-dir",
            "data",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // An empty line is a silent turn; end of input hangs up.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\n10001#\n2468#\n9\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["outcome"]["type"], "hangup");
    assert_eq!(v["outcome"]["endNode"], "hangup");
    assert_eq!(
        prompts(&v),
        [
            ACCOUNT_PROMPT,
            ACCOUNT_PROMPT,
            PIN_PROMPT,
            WELCOME_ADA,
            MENU,
            "Goodbye."
        ]
    );
    let err = stderr(&out);
    assert!(err.contains("ivr: Welcome, Ada."), "{err}");
    assert!(
        err.contains("********") && err.contains("(silence)"),
        "{err}"
    );
    assert!(!has_token(&err, "2468"), "{err}");
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No database: nothing is created.
    let out = ivrauth(d)
        .args(["call", "--flow", "demo-pin", "--data-dir", "data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no ivrauth database"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("data").exists());

    let out = ivrauth(d)
        .args([
            "call",
            "--demo",
            "--flow",
            "nope",
            "--digits",
            "1",
            "--json",
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).contains("no flow `nope`"), "{}", stderr(&out));

    // A --digits entry that is not keys is refused without being echoed.
    let out = ivrauth(d)
        .args([
            "call",
            "--flow",
            "demo-pin",
            "--digits",
            "10001#,24x68",
            "--data-dir",
            "data",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("entry #2"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("24x68"));

    // Nothing listens on port 1.
    let out = ivrauth(d)
        .args([
            "call",
            "--flow",
            "demo-pin",
            "--server",
            "http://127.0.0.1:1",
            "--digits",
            "1",
        ])
        .env("IVRAUTH_CLIENT_ID", "demo")
        .env("IVRAUTH_CLIENT_SECRET", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the server"),
        "{}",
        stderr(&out)
    );

    // No credentials.
    let out = ivrauth(d)
        .args([
            "call",
            "--flow",
            "demo-pin",
            "--server",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("IVRAUTH_CLIENT_SECRET"),
        "{}",
        stderr(&out)
    );
}

/// `ivrauth serve --demo` on a free port, its stdout collected line by line.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    url: String,
    secret: String,
    stderr_file: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let stderr_file = dir.join("serve.err");
        let mut child = ivrauth(dir)
            .env("RUST_LOG", "info")
            .args([
                "serve",
                "--demo",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                "data",
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                // The last line: how to start the demo call through VoiceXML.
                let done = line.contains("curl") && line.contains("/voice/vxml/demo-pin");
                collected.lock().unwrap().push(line);
                if done {
                    let _ = tx.send(());
                }
            }
        });
        let mut server = Server {
            child,
            lines,
            url: String::new(),
            secret: String::new(),
            stderr_file,
        };
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            panic!("the demo server did not start: {:?}", server.stdout());
        }
        let text = server.stdout();
        server.url = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("ivrauth listening on "))
            .unwrap()
            .to_owned();
        server.secret = text
            .lines()
            .find_map(|l| l.split("secret (shown once per start): ").nth(1))
            .unwrap()
            .trim()
            .to_owned();
        server
    }

    fn stdout(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn call(&self, dir: &Path, args: &[&str], secret: &str) -> Output {
        ivrauth(dir)
            .args(["call", "--server", &self.url])
            .args(args)
            .env("IVRAUTH_CLIENT_ID", "demo")
            .env("IVRAUTH_CLIENT_SECRET", secret)
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn calls_through_a_running_demo_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d);

    // The start-up output says where the demo accounts are, and how to call; never a PIN.
    let text = server.stdout();
    let accounts = d.join("data").join("demo-accounts.txt");
    assert!(text.contains("demo-accounts.txt"), "{text}");
    assert!(
        text.contains("call --flow demo-pin --data-dir data"),
        "{text}"
    );
    for pin in DEMO_PINS {
        assert!(!has_token(&text, pin), "PIN {pin} in {text}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&accounts).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = std::fs::metadata(d.join("data").join("call-session.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }
    let listed = std::fs::read_to_string(&accounts).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["10001", "2468"])),
        "{listed}"
    );

    // The right PIN, through the decision API.
    let out = server.call(
        d,
        &[
            "--flow",
            "demo-pin",
            "--json",
            "--digits",
            "10001#,2468#,1,9",
        ],
        &server.secret,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        v["outcome"],
        json!({"type": "hangup", "endNode": "hangup", "statusCode": null, "queue": null})
    );
    // The decision API speaks a turn's texts as one prompt.
    assert_eq!(
        prompts(&v),
        [
            ACCOUNT_PROMPT.to_owned(),
            PIN_PROMPT.to_owned(),
            format!("{WELCOME_ADA} {MENU}"),
            format!("{BALANCE} {MENU}"),
            "Goodbye.".to_owned()
        ]
    );
    assert!(!has_token(&stderr(&out), "2468"));

    // Three wrong PINs: a transfer, in human form.
    let out = server.call(
        d,
        &["--flow", "demo-pin", "--digits", "10002#,1111#,2222#,3333#"],
        &server.secret,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("outcome: transfer to queue agents"), "{text}");
    assert!(
        text.contains("caller verified: no (max_attempts)"),
        "{text}"
    );
    assert!(text.contains("in the server's audit log"), "{text}");

    // Bad credentials, an unknown flow.
    let out = server.call(d, &["--flow", "demo-pin", "--digits", "1"], "wrong-secret");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the client credentials"),
        "{}",
        stderr(&out)
    );
    let out = server.call(d, &["--flow", "nope", "--digits", "1"], &server.secret);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    // The server printed and logged no PIN either.
    let logged = std::fs::read_to_string(&server.stderr_file).unwrap();
    for pin in DEMO_PINS {
        assert!(!has_token(&server.stdout(), pin));
        assert!(!has_token(&logged, pin), "PIN {pin} in the log: {logged}");
    }
}

/// `GET url` over plain HTTP/1.1 (loopback), with an `Authorization` header when given:
/// the status and the body.
fn http_get(url: &str, authorization: Option<&str>) -> (u16, String) {
    use std::io::Read as _;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_demo_prints_a_voicexml_credential_that_starts_the_demo_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let text = server.stdout();
    let password = text
        .lines()
        .find_map(|l| {
            l.split("user demo-voicexml, password (shown once per start): ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no VoiceXML credentials in {text}"))
        .trim()
        .to_owned();
    let url = format!("{}/voice/vxml/demo-pin", server.url);
    assert!(
        text.contains(&format!("curl -s -u demo-voicexml:{password} {url}")),
        "{text}"
    );
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let (status, doc) = http_get(&url, Some(&basic("demo-voicexml", &password)));
    assert_eq!(status, 200, "{doc}");
    assert!(doc.contains(ACCOUNT_PROMPT), "{doc}");
    // Without them, or with the demo client's secret, a challenge and no call.
    for auth in [None, Some(basic("demo-voicexml", &server.secret))] {
        let (status, doc) = http_get(&url, auth.as_deref());
        assert_eq!(status, 401, "{doc}");
        assert!(!doc.contains(ACCOUNT_PROMPT), "{doc}");
    }
    // The password is not logged.
    let logged = std::fs::read_to_string(&server.stderr_file).unwrap();
    assert!(logged.contains("VoiceXML requests accepted"), "{logged}");
    assert!(!logged.contains(&password), "{logged}");
}
