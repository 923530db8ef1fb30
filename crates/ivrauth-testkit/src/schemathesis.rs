//! Schemathesis (PyPI `schemathesis`, pinned in [`REQUIREMENT`]), the OpenAPI-driven
//! fuzzer, run against a real server: [`run`] gives it the server's own `/openapi.json`,
//! every check (`--checks all`) and a bearer token, and returns its exit status and output.
//!
//! It lives in a venv built on first use under `<target>/testkit/`, by the same plumbing as
//! the Twilio venv of [`crate::telephony`] (PyPI must be reachable the first time).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::telephony::{python_venv, Installed};
use crate::{err, Result};

/// The schemathesis release the venv holds (change `VENV`, its directory name, with it).
pub const REQUIREMENT: &str = "schemathesis==4.32.5";
const VENV: &str = "schemathesis-venv-4.32.5";

static PYTHON: Installed = std::sync::Mutex::new(None);

/// What a schemathesis run answered.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit code (0: no check failed).
    pub code: Option<i32>,
    /// Standard output and error, for the test's failure message.
    pub output: String,
}

/// `st run {base_url}/openapi.json --checks all` with `Authorization: Bearer {token}`,
/// `--max-examples {max_examples}`, a fixed seed, and `config` (a `schemathesis.toml`, for
/// per-operation settings) written into `dir`. Blocking: call it from `spawn_blocking`.
pub fn run(
    base_url: &str,
    token: &str,
    max_examples: u32,
    config: &str,
    dir: &Path,
) -> Result<Outcome> {
    let python = python_venv(&PYTHON, VENV, &[REQUIREMENT])?;
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, config).map_err(|e| err("write schemathesis.toml", e))?;
    // `python -m`: the venv's scripts name the scratch directory it was built in.
    let out = Command::new(python)
        .args(["-m", "schemathesis.cli"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(format!("{base_url}/openapi.json"))
        .args(["--checks", "all"])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--seed", "1"])
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err("run st", e))?;
    Ok(Outcome {
        code: out.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}
