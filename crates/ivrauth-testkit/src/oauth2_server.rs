//! A real OAuth2 authorization server for tests: `oauth2/server.py` beside this crate's
//! `src/` (authlib 1.9 + Flask 3), run as a child process on a free loopback port.
//!
//! It speaks the password and client_credentials grants, issues RS256 JWT access tokens
//! (JWKS at `/jwks.json`, issuer = [`OAuth2Server::base_url`], `aud` = client id) or opaque
//! ones, answers RFC 7662 introspection at `/introspect`, and has an Auth0-like management
//! API: `GET /api/v2/users?q=<query>` (a small Lucene-like query language, see the script)
//! and `PATCH /api/v2/users/<user_id>` with `{"password": ...}`. `GET /test/stats` counts the
//! tokens it issued per client and grant.
//!
//! The Python packages live in a virtual environment created on first use (once per test
//! process, and reused across processes) under the Cargo target directory, or a temporary
//! directory when that cannot be found: `python3 -m venv` must work
//! (`scripts/install-test-deps` sees to that) and PyPI must be reachable the first time.
//! Each [`OAuth2Server::start`] starts a fresh server (fresh signing key, fresh counters,
//! the passwords below); dropping it kills the process.
//!
//! Users (login name = account number): `10001`/`2468` Ada Lovelace, `10002`/`1357` Grace
//! Hopper, `10003`/`8642` Katherine Johnson, and `10009`/`1111`, blocked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{err, Result, TestkitError};

/// The management client: client_credentials, scopes `users:read users:write`.
pub const MGMT_CLIENT_ID: &str = "ivrauth-mgmt";
pub const MGMT_CLIENT_SECRET: &str = "mgmt-secret";
/// The login client: the password grant.
pub const LOGIN_CLIENT_ID: &str = "ivrauth-login";
pub const LOGIN_CLIENT_SECRET: &str = "login-secret";
/// A second management client, so a test can count its token requests alone.
pub const PROBE_CLIENT_ID: &str = "ivrauth-mgmt-probe";
pub const PROBE_CLIENT_SECRET: &str = "probe-secret";
/// A management client whose tokens expire after 2 seconds (scope `users:read`).
pub const SHORT_CLIENT_ID: &str = "ivrauth-mgmt-short";
pub const SHORT_CLIENT_SECRET: &str = "short-secret";
/// A client_credentials client without the `users:read` scope.
pub const NOSCOPE_CLIENT_ID: &str = "ivrauth-noscope";
pub const NOSCOPE_CLIENT_SECRET: &str = "noscope-secret";

/// The Python requirements, also the name of the venv directory (change both together).
const REQUIREMENTS: [&str; 2] = ["authlib==1.9.*", "flask==3.*"];
const VENV_NAME: &str = "oauth2-venv-authlib1.9-flask3";
const START_DEADLINE: Duration = Duration::from_secs(30);

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A running server; killed when dropped.
pub struct OAuth2Server {
    base_url: String,
    child: Child,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl OAuth2Server {
    /// Start a server issuing JWT access tokens, or opaque ones when `opaque`.
    pub async fn start(opaque: bool) -> Result<OAuth2Server> {
        let python = tokio::task::spawn_blocking(venv_python)
            .await
            .map_err(|e| err("venv task", e))??;
        let dir = tempfile::TempDir::new().map_err(|e| err("temp dir", e))?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| err("log file", e))?;
        let mut cmd = Command::new(&python);
        cmd.arg(script_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if opaque {
            cmd.arg("--opaque");
        }
        let mut child = cmd.spawn().map_err(|e| err("start oauth2 server", e))?;
        let stdout = child.stdout.take();
        // From here on, `server` owns the child: an early return kills it.
        let mut server = OAuth2Server {
            base_url: String::new(),
            child,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let Some(stdout) = stdout else {
            return Err(TestkitError("oauth2 server has no stdout".into()));
        };
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(START_DEADLINE, first_line).await {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(e))) => return Err(server.failed(&log_path, &e.to_string())),
            Ok(Err(e)) => return Err(server.failed(&log_path, &e.to_string())),
            Err(_) => return Err(server.failed(&log_path, "no LISTENING line in time")),
        };
        let Some(port) = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            return Err(server.failed(&log_path, &format!("unexpected output {line:?}")));
        };
        server.base_url = format!("http://127.0.0.1:{port}");
        // Poll until the JWKS answers (it should at once: the socket is already listening).
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let ok = server
                .http
                .get(server.url("/jwks.json"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(server.failed(&log_path, "/jwks.json did not answer in time"));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(server.failed(&log_path, &format!("exited with {status}")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn failed(&mut self, log_path: &Path, what: &str) -> TestkitError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        TestkitError(format!("oauth2 server: {what}\n{tail}"))
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash; also the token issuer.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn token_url(&self) -> String {
        self.url("/token")
    }

    pub fn jwks_url(&self) -> String {
        self.url("/jwks.json")
    }

    pub fn introspection_url(&self) -> String {
        self.url("/introspect")
    }

    /// How many tokens the server issued to `client_id` through `grant_type`.
    pub async fn tokens_issued(&self, client_id: &str, grant_type: &str) -> Result<u64> {
        let stats: Value = self
            .http
            .get(self.url("/test/stats"))
            .send()
            .await
            .map_err(|e| err("stats request", e))?
            .json()
            .await
            .map_err(|e| err("stats response", e))?;
        Ok(stats
            .pointer("/tokens_issued")
            .and_then(|t| t.get(format!("{client_id} {grant_type}")))
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }

    /// A management token (client_credentials) for `client_id`.
    pub async fn client_token(&self, client_id: &str, secret: &str) -> Result<String> {
        let res = self
            .http
            .post(self.token_url())
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| err("token request", e))?;
        let status = res.status();
        let body: Value = res.json().await.map_err(|e| err("token response", e))?;
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| TestkitError(format!("token endpoint answered {status}: {body}")))
    }
}

impl Drop for OAuth2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oauth2/server.py")
}

/// The venv's python, creating the venv on first use.
fn venv_python() -> Result<PathBuf> {
    let mut cached = VENV.lock().map_err(|_| TestkitError("venv lock".into()))?;
    if let Some(p) = cached.as_ref() {
        return Ok(p.clone());
    }
    let base = venv_parent()?;
    let venv = base.join(VENV_NAME);
    let python = venv.join("bin/python");
    if !python.exists() {
        create_venv(&base, &venv)?;
    }
    *cached = Some(python.clone());
    Ok(python)
}

/// `<target>/testkit` when the test binary runs from `<target>/<profile>/deps`, else a
/// directory under the system temp dir.
fn venv_parent() -> Result<PathBuf> {
    let from_target = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        if deps.file_name()? != "deps" {
            return None;
        }
        Some(deps.parent()?.parent()?.join("testkit"))
    });
    let dir = from_target.unwrap_or_else(|| std::env::temp_dir().join("ivrauth-testkit"));
    std::fs::create_dir_all(&dir).map_err(|e| err("venv parent dir", e))?;
    Ok(dir)
}

/// Build the venv in a scratch directory and rename it into place, so a half-built venv is
/// never used and concurrent test processes do not trip over each other.
fn create_venv(base: &Path, venv: &Path) -> Result<()> {
    let scratch = base.join(format!("{VENV_NAME}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let run = |cmd: &mut Command, what: &str| -> Result<()> {
        let out = cmd.output().map_err(|e| err(what, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let result = run(
        Command::new("python3").arg("-m").arg("venv").arg(&scratch),
        "python3 -m venv (run scripts/install-test-deps)",
    )
    .and_then(|()| {
        run(
            Command::new(scratch.join("bin/python"))
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(REQUIREMENTS),
            "pip install authlib flask",
        )
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    if std::fs::rename(&scratch, venv).is_err() {
        // Another process finished first: use theirs.
        let _ = std::fs::remove_dir_all(&scratch);
        if !venv.join("bin/python").exists() {
            return Err(TestkitError("could not move the venv into place".into()));
        }
    }
    Ok(())
}

/// The `OAuth2Directory` configuration that fits this server at `base` (JWT validation, or
/// introspection when `opaque`).
pub fn oauth2_config(base: &str, opaque: bool) -> ivrauth_connect::oauth2::OAuth2Config {
    use ivrauth_connect::oauth2::{Algorithm, OAuth2Config, ProfilePointers, TokenValidation};
    use ivrauth_core::Secret;
    let secret = |s: &str| Secret::new(s.to_owned());
    let token_validation = if opaque {
        TokenValidation::Introspection {
            url: format!("{base}/introspect"),
            client_id: MGMT_CLIENT_ID.into(),
            client_secret: secret(MGMT_CLIENT_SECRET),
        }
    } else {
        TokenValidation::Jwt {
            jwks_url: format!("{base}/jwks.json"),
            issuer: base.to_owned(),
            audience: LOGIN_CLIENT_ID.into(),
            algorithms: vec![Algorithm::RS256],
        }
    };
    OAuth2Config {
        token_url: format!("{base}/token"),
        client_id: MGMT_CLIENT_ID.into(),
        client_secret: secret(MGMT_CLIENT_SECRET),
        mgmt_scope: Some("users:read users:write".into()),
        audience: None,
        user_search_url_template: format!(
            "{base}/api/v2/users?q=app_metadata.account_number:{{account}}"
        ),
        user_update_url_template: Some(format!("{base}/api/v2/users/{{user_id}}")),
        pointers: ProfilePointers::default(),
        login_client_id: LOGIN_CLIENT_ID.into(),
        login_client_secret: secret(LOGIN_CLIENT_SECRET),
        login_scope: Some("openid".into()),
        token_validation,
        timeout: std::time::Duration::from_secs(10),
    }
}
