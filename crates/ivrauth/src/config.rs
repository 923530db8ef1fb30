//! Configuration layering: built-in defaults < the config file (`--config FILE`, or
//! `ivrauth.toml` in the working directory when present) < `IVRAUTH_*` environment variables
//! < command-line flags.
//!
//! Every problem in the file and the environment is collected, so start-up reports all of
//! them at once. `config.example.toml` at the repository root documents every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ivrauth_server::ServerConfig;

/// The config file looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "ivrauth.toml";

/// Default of `[auth] secret_rotation_overlap_secs`: a day. Only `ivrauth client
/// rotate-secret` reads it (the server just honours the expiry stored with the client).
pub const DEFAULT_SECRET_ROTATION_OVERLAP_SECS: u64 = 86_400;

/// `IVRAUTH_*` variables that are not configuration but are read by `ivrauth flow` commands
/// (through their flags); they are ignored here without a warning.
const FLOW_COMMAND_VARS: &[&str] = &[
    "IVRAUTH_SERVER",
    "IVRAUTH_CLIENT_ID",
    "IVRAUTH_CLIENT_SECRET",
];

/// Everything the binary can be configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub token_ttl_secs: u64,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// How long the previous secret keeps working after `client rotate-secret` (read by that
    /// command only).
    pub secret_rotation_overlap_secs: u64,
    /// `None`: flows may call any host; `Some(list)`: only these (empty: none).
    pub http_allowed_hosts: Option<Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        let server = ServerConfig::default();
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            max_body_bytes: server.max_body_bytes,
            token_ttl_secs: server.token_ttl_secs,
            rate_limit_per_sec: server.rate_limit_per_sec,
            rate_limit_burst: server.rate_limit_burst,
            secret_rotation_overlap_secs: DEFAULT_SECRET_ROTATION_OVERLAP_SECS,
            http_allowed_hosts: None,
        }
    }
}

impl Settings {
    /// The HTTP server's part of the settings.
    pub fn server_config(&self, demo: bool) -> ServerConfig {
        ServerConfig {
            token_ttl_secs: self.token_ttl_secs,
            rate_limit_per_sec: self.rate_limit_per_sec,
            rate_limit_burst: self.rate_limit_burst,
            max_body_bytes: self.max_body_bytes,
            demo,
            public_base_url: self.public_url.clone(),
        }
    }
}

/// Values given on the command line (the top layer).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// All the problems found while loading the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Listen,
    DataDir,
    PublicUrl,
    MaxBodyBytes,
    TokenTtlSecs,
    RateLimitPerSec,
    RateLimitBurst,
    SecretRotationOverlapSecs,
    HttpAllowedHosts,
}

/// (section, key, environment variable, key).
const KEYS: &[(&str, &str, &str, Key)] = &[
    ("server", "listen", "IVRAUTH_LISTEN", Key::Listen),
    ("server", "data_dir", "IVRAUTH_DATA_DIR", Key::DataDir),
    ("server", "public_url", "IVRAUTH_PUBLIC_URL", Key::PublicUrl),
    (
        "server",
        "max_body_bytes",
        "IVRAUTH_MAX_BODY_BYTES",
        Key::MaxBodyBytes,
    ),
    (
        "auth",
        "token_ttl_secs",
        "IVRAUTH_TOKEN_TTL_SECS",
        Key::TokenTtlSecs,
    ),
    (
        "auth",
        "rate_limit_per_sec",
        "IVRAUTH_RATE_LIMIT_PER_SEC",
        Key::RateLimitPerSec,
    ),
    (
        "auth",
        "rate_limit_burst",
        "IVRAUTH_RATE_LIMIT_BURST",
        Key::RateLimitBurst,
    ),
    (
        "auth",
        "secret_rotation_overlap_secs",
        "IVRAUTH_SECRET_ROTATION_OVERLAP_SECS",
        Key::SecretRotationOverlapSecs,
    ),
    (
        "http",
        "allowed_hosts",
        "IVRAUTH_HTTP_ALLOWED_HOSTS",
        Key::HttpAllowedHosts,
    ),
];

/// A value before it is checked: from the file (typed) or the environment (text).
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn string(&self) -> Result<String, String> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(v) => Err(format!("expected a string, found {}", v.type_str())),
            Raw::Env(s) => Ok((*s).to_owned()),
        }
    }

    /// An integer in `min..=max`.
    fn integer(&self, min: u64, max: u64) -> Result<u64, String> {
        let n: i128 = match self {
            Raw::Toml(toml::Value::Integer(i)) => i128::from(*i),
            Raw::Toml(v) => return Err(format!("expected an integer, found {}", v.type_str())),
            Raw::Env(s) => s
                .trim()
                .parse::<i128>()
                .map_err(|_| "expected an integer".to_owned())?,
        };
        if n < i128::from(min) || n > i128::from(max) {
            return Err(format!("must be between {min} and {max}"));
        }
        u64::try_from(n).map_err(|_| format!("must be between {min} and {max}"))
    }

    fn string_list(&self) -> Result<Vec<String>, String> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "expected a list of strings, found a {} in it",
                        other.type_str()
                    )),
                })
                .collect(),
            Raw::Toml(v) => Err(format!(
                "expected a list of strings, found {}",
                v.type_str()
            )),
            Raw::Env(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect()),
        }
    }
}

fn apply(settings: &mut Settings, key: Key, raw: &Raw<'_>) -> Result<(), String> {
    const U32_MAX: u64 = u32::MAX as u64;
    const I64_MAX: u64 = i64::MAX as u64;
    match key {
        Key::Listen => {
            let s = raw.string()?;
            settings.listen = s
                .trim()
                .parse()
                .map_err(|_| "expected an address such as 127.0.0.1:8080".to_owned())?;
        }
        Key::DataDir => {
            let s = raw.string()?;
            if s.trim().is_empty() {
                return Err("must not be empty".to_owned());
            }
            settings.data_dir = PathBuf::from(s);
        }
        Key::PublicUrl => {
            let s = raw.string()?;
            let s = s.trim();
            if s.is_empty() {
                settings.public_url = None;
            } else {
                let u = url::Url::parse(s).map_err(|_| "expected an http(s) URL".to_owned())?;
                if u.scheme() != "http" && u.scheme() != "https" {
                    return Err("expected an http(s) URL".to_owned());
                }
                settings.public_url = Some(s.trim_end_matches('/').to_owned());
            }
        }
        Key::MaxBodyBytes => {
            let n = raw.integer(1024, 1024 * 1024 * 1024)?;
            settings.max_body_bytes = usize::try_from(n).map_err(|_| "too large".to_owned())?;
        }
        Key::TokenTtlSecs => settings.token_ttl_secs = raw.integer(1, I64_MAX / 1000)?,
        Key::RateLimitPerSec => {
            settings.rate_limit_per_sec =
                u32::try_from(raw.integer(1, U32_MAX)?).unwrap_or(u32::MAX)
        }
        Key::RateLimitBurst => {
            settings.rate_limit_burst = u32::try_from(raw.integer(1, U32_MAX)?).unwrap_or(u32::MAX)
        }
        Key::SecretRotationOverlapSecs => {
            settings.secret_rotation_overlap_secs = raw.integer(0, I64_MAX / 1000)?
        }
        Key::HttpAllowedHosts => {
            let hosts = raw.string_list()?;
            if hosts.iter().any(|h| h == "*") {
                if hosts.len() > 1 {
                    return Err("\"*\" (any host) cannot be combined with other entries".to_owned());
                }
                settings.http_allowed_hosts = None;
            } else {
                let bad: Vec<&String> = hosts
                    .iter()
                    .filter(|h| {
                        h.is_empty()
                            || h.contains("://")
                            || h.contains('/')
                            || h.chars().any(char::is_whitespace)
                    })
                    .collect();
                if !bad.is_empty() {
                    return Err(format!(
                        "entries must be host names, IP addresses or *.domain patterns (no scheme, port or path): {}",
                        bad.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ")
                    ));
                }
                settings.http_allowed_hosts = Some(hosts);
            }
        }
    }
    Ok(())
}

/// Apply a TOML document; problems are named `origin: [section] key: ...`.
fn apply_file(settings: &mut Settings, text: &str, origin: &str, problems: &mut Vec<String>) {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{origin}: not valid TOML: {}", e.message()));
            return;
        }
    };
    for (section, value) in &table {
        let known_section = KEYS.iter().any(|(s, ..)| s == section);
        match value.as_table() {
            Some(t) if known_section => {
                for (name, v) in t {
                    match KEYS.iter().find(|(s, k, ..)| s == section && k == name) {
                        Some((_, _, _, key)) => {
                            if let Err(e) = apply(settings, *key, &Raw::Toml(v)) {
                                problems.push(format!("{origin}: [{section}] {name}: {e}"));
                            }
                        }
                        None => {
                            problems.push(format!("{origin}: [{section}] unknown key `{name}`"))
                        }
                    }
                }
            }
            None if known_section => problems.push(format!(
                "{origin}: `{section}` must be a [{section}] section"
            )),
            Some(_) => problems.push(format!("{origin}: unknown section [{section}]")),
            None => problems.push(format!(
                "{origin}: unknown key `{section}` (keys belong in [server], [auth] or [http])"
            )),
        }
    }
}

/// Apply `IVRAUTH_*` variables from `env`. Unknown `IVRAUTH_*` names are returned as
/// warnings (other tools may share the prefix), except those of the `flow` commands
/// (`IVRAUTH_SERVER`, `IVRAUTH_CLIENT_ID`, `IVRAUTH_CLIENT_SECRET`), which users export.
fn apply_env(
    settings: &mut Settings,
    env: &[(String, String)],
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, value) in env {
        if !name.starts_with("IVRAUTH_") || FLOW_COMMAND_VARS.contains(&name.as_str()) {
            continue;
        }
        match KEYS.iter().find(|(.., var, _)| var == name) {
            Some((_, _, _, key)) => {
                if let Err(e) = apply(settings, *key, &Raw::Env(value)) {
                    problems.push(format!("environment: {name}: {e}"));
                }
            }
            None => warnings.push(format!("ignoring unknown environment variable {name}")),
        }
    }
    warnings
}

/// Load the settings: defaults, then the file, then `env`, then `flags`. `cwd` is where
/// `ivrauth.toml` is looked for. Returns the settings and warnings, or every problem.
pub fn load(
    flags: &Flags,
    cwd: &Path,
    env: &[(String, String)],
) -> Result<(Settings, Vec<String>), ConfigErrors> {
    let mut settings = Settings::default();
    let mut problems = Vec::new();

    let file = match &flags.config {
        Some(path) => Some(path.clone()),
        None => {
            let p = cwd.join(DEFAULT_CONFIG_FILE);
            p.is_file().then_some(p)
        }
    };
    if let Some(path) = file {
        let origin = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => apply_file(&mut settings, &text, &origin, &mut problems),
            Err(e) => problems.push(format!("{origin}: cannot read the config file: {e}")),
        }
    }

    let warnings = apply_env(&mut settings, env, &mut problems);

    if let Some(listen) = flags.listen {
        settings.listen = listen;
    }
    if let Some(dir) = &flags.data_dir {
        settings.data_dir = dir.clone();
    }

    if problems.is_empty() {
        Ok((settings, warnings))
    } else {
        Err(ConfigErrors(problems))
    }
}

/// The process's `IVRAUTH_*` variables (values that are not UTF-8 are reported as such).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            if !k.starts_with("IVRAUTH_") || FLOW_COMMAND_VARS.contains(&k.as_str()) {
                return None;
            }
            Some((k, v.into_string().unwrap_or_else(|_| "\u{fffd}".to_owned())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn flags_for(path: &Path) -> Flags {
        Flags {
            config: Some(path.to_owned()),
            ..Flags::default()
        }
    }

    #[test]
    fn example_config_loads_and_matches_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml");
        let (settings, warnings) =
            load(&flags_for(&example), Path::new("/nonexistent"), &[]).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn no_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, _) = load(&Flags::default(), dir.path(), &[]).unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DEFAULT_CONFIG_FILE),
            "[server]\nlisten = \"127.0.0.1:9000\"\ndata_dir = \"/file\"\n[auth]\ntoken_ttl_secs = 60\nrate_limit_burst = 7\n",
        )
        .unwrap();
        let e = env(&[
            ("IVRAUTH_DATA_DIR", "/env"),
            ("IVRAUTH_TOKEN_TTL_SECS", "120"),
            ("IVRAUTH_HTTP_ALLOWED_HOSTS", "a.example, *.b.example"),
        ]);
        let flags = Flags {
            data_dir: Some(PathBuf::from("/flag")),
            ..Flags::default()
        };
        let (s, _) = load(&flags, dir.path(), &e).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("/flag"));
        assert_eq!(s.token_ttl_secs, 120);
        assert_eq!(s.rate_limit_burst, 7);
        assert_eq!(
            s.http_allowed_hosts,
            Some(vec!["a.example".to_owned(), "*.b.example".to_owned()])
        );
    }

    #[test]
    fn every_problem_is_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"nowhere\"\ncolour = \"blue\"\n[auth]\ntoken_ttl_secs = -5\nrate_limit_burst = \"many\"\n[extra]\nx = 1\n",
        )
        .unwrap();
        let e = env(&[
            ("IVRAUTH_RATE_LIMIT_PER_SEC", "fast"),
            ("IVRAUTH_SOMETHING", "x"),
        ]);
        let errors = load(&flags_for(&path), dir.path(), &e).unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 6, "{text}");
        for needle in [
            "listen",
            "colour",
            "token_ttl_secs",
            "rate_limit_burst",
            "[extra]",
            "IVRAUTH_RATE_LIMIT_PER_SEC",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn named_config_file_must_exist() {
        let errors = load(
            &flags_for(Path::new("/no/such/ivrauth.toml")),
            Path::new("/"),
            &[],
        )
        .unwrap_err();
        assert!(errors.to_string().contains("cannot read"));
    }

    #[test]
    fn http_default_timeout_is_not_an_option() {
        // Flows without a node timeout get the compiler's fixed default; the server never
        // had a setting for it, so none is accepted.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeout.toml");
        std::fs::write(&path, "[http]\ndefault_timeout_ms = 5000\n").unwrap();
        let errors = load(&flags_for(&path), dir.path(), &[]).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(
            errors.0[0].contains("unknown key `default_timeout_ms`"),
            "{errors}"
        );
        let (settings, warnings) = load(
            &Flags::default(),
            Path::new("/nonexistent"),
            &env(&[("IVRAUTH_HTTP_DEFAULT_TIMEOUT_MS", "100")]),
        )
        .unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(
            warnings,
            vec![
                "ignoring unknown environment variable IVRAUTH_HTTP_DEFAULT_TIMEOUT_MS".to_owned()
            ]
        );
    }

    #[test]
    fn flow_command_variables_are_not_warned_about() {
        let (settings, warnings) = load(
            &Flags::default(),
            Path::new("/nonexistent"),
            &env(&[
                ("IVRAUTH_SERVER", "https://ivrauth.example.com"),
                ("IVRAUTH_CLIENT_ID", "cli_x"),
                ("IVRAUTH_CLIENT_SECRET", "s3cret"),
                ("IVRAUTH_SERVR", "typo"),
            ]),
        )
        .unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(
            warnings,
            vec!["ignoring unknown environment variable IVRAUTH_SERVR".to_owned()]
        );
    }

    #[test]
    fn star_allows_any_host() {
        let (s, _) = load(
            &Flags::default(),
            Path::new("/nonexistent"),
            &env(&[("IVRAUTH_HTTP_ALLOWED_HOSTS", "*")]),
        )
        .unwrap();
        assert_eq!(s.http_allowed_hosts, None);
        let errors = load(
            &Flags::default(),
            Path::new("/nonexistent"),
            &env(&[("IVRAUTH_HTTP_ALLOWED_HOSTS", "https://x.example/")]),
        )
        .unwrap_err();
        assert_eq!(errors.0.len(), 1);
    }
}
