//! Third-party checkers for the telephony front-ends: the platforms' own code, run as child
//! processes, so tests prove ivrauth against the real thing rather than against itself.
//!
//! - Twilio: [`twilio_signature`] and [`twilio_validate`] run `RequestValidator` from Twilio's
//!   official Python helper library (PyPI `twilio`, pinned in [`TWILIO_REQUIREMENT`]) through
//!   `tools/twilio_signature.py`, in a venv built on first use.
//! - jambonz: [`jambonz_sign`] makes a `Jambonz-Signature` header value in Rust, exactly as
//!   jambonz's feature server does (`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`);
//!   [`jambonz_verify_with_node_client`] checks one with the webhook verifier of the npm
//!   package `@jambonz/node-client` (`WebhookResponse.verifyJambonzSignature`), and
//!   [`validate_jambonz_verbs`] checks a verb array with `@jambonz/verb-specifications`'
//!   `validate(logger, verbs)`, both through `tools/jambonz-check.js` in node. The npm
//!   packages are pinned by `tools/package.json` + `tools/package-lock.json` and installed with
//!   `npm ci` into a directory named after a hash of those two files.
//! - VoiceXML: [`validate_vxml`] runs `xmllint --noout --nonet --schema` against the W3C
//!   VoiceXML 2.1 schema set shipped in `data/vxml21-schema/` (all imports resolve locally).
//!
//! Installs go under `<target>/testkit/` (beside the authlib venv of
//! [`crate::oauth2_server`]), once per test process and reused across processes: each is
//! built in a scratch directory and renamed into place when complete, so concurrent test
//! processes never see a half-built one. The first use needs PyPI (Twilio) or the npm
//! registry (jambonz); `python3 -m venv`, `node`, `npm` and `xmllint` must be installed
//! (`scripts/install-test-deps` sees to that).
//!
//! The verdict-returning checkers answer `Result<Result<(), String>>`: the outer error means
//! the tool could not run (missing program, registry unreachable); the inner one is the
//! tool's own rejection, with its message. Tests write `.unwrap().unwrap()` for a document that
//! must pass and `.unwrap().unwrap_err()` for one that must fail, so a broken tool never
//! passes for a rejection.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{err, Result, TestkitError};

/// The Twilio helper library the venv holds (change `TWILIO_VENV`, its directory name, with it).
pub const TWILIO_REQUIREMENT: &str = "twilio==9.13.0";
const TWILIO_VENV: &str = "twilio-venv-9.13.0";

/// The header jambonz signs webhooks with.
pub const JAMBONZ_SIGNATURE_HEADER: &str = "Jambonz-Signature";
/// How old (in seconds) `@jambonz/node-client`'s verifier lets a signature's `t` be: it
/// refuses when `now - t > 300`, and puts no bound on timestamps in the future.
pub const JAMBONZ_NODE_CLIENT_TOLERANCE_SECS: i64 = 300;

/// The outcome of the first install attempt in this process, success or failure: a registry
/// that is down fails every later test at once rather than once per test.
pub(crate) type Installed = Mutex<Option<std::result::Result<PathBuf, String>>>;

static TWILIO_PYTHON: Installed = Mutex::new(None);
static JAMBONZ_TOOLS: Installed = Mutex::new(None);

// ----------------------------------------------------------------------------------------
// Twilio

/// The `X-Twilio-Signature` Twilio's own library computes for a request to `url` with the
/// form `params` (`RequestValidator(auth_token).compute_signature(url, params)`; a repeated
/// name is passed with all its values).
pub fn twilio_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
) -> Result<String> {
    let out = run_twilio(json!({
        "op": "compute",
        "token": auth_token,
        "url": url,
        "params": params,
    }))?;
    out.get("signature")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TestkitError(format!("twilio_signature.py answered {out}")))
}

/// Whether Twilio's own `RequestValidator(auth_token).validate(url, params, signature)`
/// accepts `signature` (it tries `url` with and without its default port).
pub fn twilio_validate(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> Result<bool> {
    let out = run_twilio(json!({
        "op": "validate",
        "token": auth_token,
        "url": url,
        "params": params,
        "signature": signature,
    }))?;
    out.get("valid")
        .and_then(Value::as_bool)
        .ok_or_else(|| TestkitError(format!("twilio_signature.py answered {out}")))
}

fn run_twilio(request: Value) -> Result<Value> {
    let python = twilio_python()?;
    let out = run_with_stdin(
        Command::new(&python).arg(tools_dir().join("twilio_signature.py")),
        request.to_string().as_bytes(),
        "run twilio_signature.py",
    )?;
    parse_json_line(&out, "twilio_signature.py")
}

/// The Twilio venv's python, creating the venv on first use.
fn twilio_python() -> Result<PathBuf> {
    python_venv(&TWILIO_PYTHON, TWILIO_VENV, &[TWILIO_REQUIREMENT])
}

/// The python of the venv `name` under the install directory holding `requirements`
/// (pinned: the name must change with them), created on first use (`python3 -m venv`,
/// `pip install`) and reused across test processes; once per process under `slot`.
pub(crate) fn python_venv(slot: &Installed, name: &str, requirements: &[&str]) -> Result<PathBuf> {
    cached_install(slot, name, || {
        let venv = install_once(
            name,
            |dir| dir.join("bin/python").exists(),
            |scratch| {
                run_ok(
                    Command::new("python3").arg("-m").arg("venv").arg(scratch),
                    "python3 -m venv (run scripts/install-test-deps)",
                )?;
                run_ok(
                    Command::new(scratch.join("bin/python"))
                        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                        .args(requirements),
                    &format!(
                        "pip install {} (is PyPI reachable?)",
                        requirements.join(" ")
                    ),
                )
            },
        )?;
        Ok(venv.join("bin/python"))
    })
}

// ----------------------------------------------------------------------------------------
// jambonz

/// The `Jambonz-Signature` header value jambonz sends with `body` at unix time `t` (seconds):
/// `t=<t>,v1=<hex HMAC-SHA256 keyed with secret's UTF-8 bytes over "<t>.<body>">`.
pub fn jambonz_sign(secret: &str, body: &[u8], t: i64) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `@jambonz/node-client`'s own verifier accepts `header` for `body` (the raw request
/// bytes) under `secret`, at the current time. See [`jambonz_verify_with_node_client_detailed`]
/// for the verifier's reason when it refuses.
pub fn jambonz_verify_with_node_client(secret: &str, body: &[u8], header: &str) -> Result<bool> {
    Ok(jambonz_verify_with_node_client_detailed(secret, body, header)?.is_ok())
}

/// As [`jambonz_verify_with_node_client`], with the verifier's error message on refusal, e.g.
/// `No matching signatures found` or `timestamp outside of tolerance`.
pub fn jambonz_verify_with_node_client_detailed(
    secret: &str,
    body: &[u8],
    header: &str,
) -> Result<std::result::Result<(), String>> {
    run_jambonz(
        "verify",
        &json!({ "secret": secret, "body_hex": hex::encode(body), "header": header }),
    )
}

/// Validate a jambonz verb array (`[{"verb": "say", ...}, ...]`, or the `[{"say": {...}}]`
/// form) with `@jambonz/verb-specifications`' `validate(logger, verbs)`. The inner error is
/// the message it threw, e.g. `gather: unknown property digits`.
pub fn validate_jambonz_verbs(verbs: &Value) -> Result<std::result::Result<(), String>> {
    run_jambonz("validate", verbs)
}

fn run_jambonz(command: &str, input: &Value) -> Result<std::result::Result<(), String>> {
    let dir = jambonz_tools()?;
    let out = run_with_stdin(
        Command::new("node")
            .arg(tools_dir().join("jambonz-check.js"))
            .arg(&dir)
            .arg(command),
        input.to_string().as_bytes(),
        "run node (run scripts/install-test-deps)",
    )?;
    let answer = parse_json_line(&out, "jambonz-check.js")?;
    match answer.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(Ok(())),
        Some(false) => Ok(Err(answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned())),
        None => Err(TestkitError(format!("jambonz-check.js answered {answer}"))),
    }
}

/// The `npm ci` install of `tools/package-lock.json`, creating it on first use.
fn jambonz_tools() -> Result<PathBuf> {
    cached_install(&JAMBONZ_TOOLS, "jambonz npm tools", install_jambonz_tools)
}

fn install_jambonz_tools() -> Result<PathBuf> {
    let tools = tools_dir();
    let manifest = std::fs::read(tools.join("package.json")).map_err(|e| err("package.json", e))?;
    let lock =
        std::fs::read(tools.join("package-lock.json")).map_err(|e| err("package-lock.json", e))?;
    let mut hash = Sha256::new();
    hash.update(&manifest);
    hash.update([0]);
    hash.update(&lock);
    let name = format!("jambonz-npm-{}", &hex::encode(hash.finalize())[..16]);
    let installed = |dir: &Path| {
        let modules = dir.join("node_modules/@jambonz");
        modules.join("node-client/package.json").exists()
            && modules.join("verb-specifications/package.json").exists()
    };
    install_once(&name, installed, |scratch| {
        std::fs::create_dir_all(scratch).map_err(|e| err("npm scratch dir", e))?;
        std::fs::write(scratch.join("package.json"), &manifest)
            .map_err(|e| err("copy package.json", e))?;
        std::fs::write(scratch.join("package-lock.json"), &lock)
            .map_err(|e| err("copy package-lock.json", e))?;
        // No install scripts and no optional native add-ons (node-client's ws speed-ups): the
        // checkers are plain JavaScript and need no compiler.
        run_ok(
            Command::new("npm")
                .current_dir(scratch)
                .args(["ci", "--omit=optional", "--ignore-scripts", "--no-audit"])
                .args(["--no-fund", "--loglevel=error", "--fetch-retries=2"])
                .args([
                    "--fetch-retry-mintimeout=2000",
                    "--fetch-retry-maxtimeout=10000",
                ]),
            "npm ci for tools/package-lock.json (is npm installed and the npm registry \
             reachable? run scripts/install-test-deps)",
        )
    })
}

// ----------------------------------------------------------------------------------------
// VoiceXML

/// `data/vxml21-schema/vxml.xsd`: the W3C VoiceXML 2.1 schema, whose imports (SRGS, SSML,
/// `xml:`) all resolve to files beside it.
pub fn vxml_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/vxml21-schema/vxml.xsd")
}

/// Validate a VoiceXML 2.1 document with `xmllint --noout --nonet --schema vxml.xsd`. The
/// inner error is xmllint's report (a document that is not well-formed XML is refused too).
pub fn validate_vxml(document: &str) -> Result<std::result::Result<(), String>> {
    let schema = vxml_schema_path();
    if !schema.exists() {
        return Err(TestkitError(format!("{} is missing", schema.display())));
    }
    let out = run_with_stdin(
        Command::new("xmllint")
            .args(["--noout", "--nonet", "--schema"])
            .arg(&schema)
            .arg("-"),
        document.as_bytes(),
        "run xmllint (Debian package libxml2-utils; run scripts/install-test-deps)",
    )?;
    let report = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(0) => Ok(Ok(())),
        // 1: not well-formed; 3: valid XML that the schema refuses.
        Some(1 | 3) => Ok(Err(report)),
        _ => Err(TestkitError(format!(
            "xmllint failed ({}): {report}",
            out.status
        ))),
    }
}

// ----------------------------------------------------------------------------------------
// Plumbing

/// `install()`'s outcome, computed once per process under `slot`'s lock (which also keeps
/// this process's test threads from installing side by side).
fn cached_install(
    slot: &Installed,
    what: &str,
    install: impl FnOnce() -> Result<PathBuf>,
) -> Result<PathBuf> {
    let mut cached = slot
        .lock()
        .map_err(|_| TestkitError(format!("{what} lock")))?;
    let outcome = cached.get_or_insert_with(|| install().map_err(|e| e.0));
    outcome.clone().map_err(TestkitError)
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools")
}

/// `<target>/testkit` when the test binary runs from `<target>/<profile>/deps`, else a
/// directory under the system temp dir.
fn install_parent() -> Result<PathBuf> {
    let from_target = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        if deps.file_name()? != "deps" {
            return None;
        }
        Some(deps.parent()?.parent()?.join("testkit"))
    });
    let dir = from_target.unwrap_or_else(|| std::env::temp_dir().join("ivrauth-testkit"));
    std::fs::create_dir_all(&dir).map_err(|e| err("testkit install dir", e))?;
    Ok(dir)
}

/// `<install parent>/<name>`, built by `build` into a scratch directory and renamed into place
/// unless `complete` already holds for it. Callers hold their own process-wide lock, so only
/// other processes can race: whoever renames first wins, the others use theirs.
fn install_once(
    name: &str,
    complete: impl Fn(&Path) -> bool,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let base = install_parent()?;
    let dir = base.join(name);
    if complete(&dir) {
        return Ok(dir);
    }
    let scratch = base.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = build(&scratch) {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    if !complete(&scratch) {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(TestkitError(format!(
            "installing {name} left it incomplete"
        )));
    }
    if std::fs::rename(&scratch, &dir).is_err() {
        // Another process finished first (or left a broken one behind): use theirs if it is
        // whole, else replace it.
        if !complete(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&scratch, &dir).map_err(|e| err("move install into place", e))?;
        } else {
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
    Ok(dir)
}

/// Run `cmd`, failing with its output unless it exits 0.
fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(what, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(what, &out))
    }
}

/// Run `cmd` with `input` on its standard input; returns its output whatever its exit status.
fn run_with_stdin(cmd: &mut Command, input: &[u8], what: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(what, e))?;
    let stdin = child.stdin.take();
    let input = input.to_vec();
    // Feed stdin from a thread so a chatty child cannot block on a full stdout pipe.
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&input);
        }
    });
    let out = child.wait_with_output().map_err(|e| err(what, e))?;
    let _ = writer.join();
    Ok(out)
}

/// The one JSON line a tool script prints on success.
fn parse_json_line(out: &Output, tool: &str) -> Result<Value> {
    if !out.status.success() {
        return Err(failed(tool, out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        TestkitError(format!(
            "{tool} printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

fn failed(what: &str, out: &Output) -> TestkitError {
    TestkitError(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
