//! Loading: built-in defaults (the structs' `Default`) < the config file (`--config FILE`,
//! or `ivrauth.toml` in the working directory when present) < `IVRAUTH_*` environment
//! variables < command-line flags. The file and the environment are `figment` providers
//! merged in that order; the flags are applied last.
//!
//! Every problem is collected, so start-up reports all of them at once: serde stops at the
//! first bad value, so each one found is recorded, its key dropped from the layer that
//! gave it, and the extraction run again. Problems are rendered here from figment's error
//! kinds, never from serde's messages (which quote the value): a problem names its key
//! (`bad.toml: [server] listen: ...`) or variable (`environment: IVRAUTH_LISTEN: ...`) and
//! never contains a value.
//!
//! Environment variables: every key has one, `IVRAUTH_` + its section's prefix
//! ([`ENV_PREFIXES`]) + the key in capitals (`[calls] session_keys` is
//! `IVRAUTH_CALL_SESSION_KEYS`). A list-valued key's variable is comma-separated. Other
//! `IVRAUTH_*` names are warned about, except those of the `flow` commands.
//!
//! The checks across keys (a previous secret needs a current one, a provider section is
//! complete, ...) are written by hand below, and are skipped for a section that had a bad
//! key, so that one mistake is reported once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use figment::error::{Actual, Kind};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{ProviderKind, Settings};

/// The config file looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "ivrauth.toml";

/// `IVRAUTH_*` variables that are not configuration but are read by `ivrauth flow` commands
/// (through their flags); they are ignored here without a warning.
const FLOW_COMMAND_VARS: &[&str] = &[
    "IVRAUTH_SERVER",
    "IVRAUTH_CLIENT_ID",
    "IVRAUTH_CLIENT_SECRET",
];

/// Each section's environment prefix (after `IVRAUTH_`). The names documented before
/// the configuration moved to serde all follow it (`[server]` and `[auth]` keys have none:
/// `IVRAUTH_LISTEN`, `IVRAUTH_TOKEN_TTL_SECS`).
pub const ENV_PREFIXES: &[(&str, &str)] = &[
    ("server", ""),
    ("auth", ""),
    ("http", "HTTP_"),
    ("identity", "IDENTITY_"),
    ("identity.lockout", "IDENTITY_LOCKOUT_"),
    ("identity.ldap", "LDAP_"),
    ("identity.oauth2", "OAUTH2_"),
    ("identity.oauth2.pointers", "OAUTH2_POINTERS_"),
    ("identity.oauth2.jwt", "OAUTH2_JWT_"),
    ("identity.oauth2.introspection", "OAUTH2_INTROSPECTION_"),
    ("identity.http", "HTTP_IDENTITY_"),
    ("simulate", "SIMULATE_"),
    ("calls", "CALL_"),
    ("twilio", "TWILIO_"),
    ("jambonz", "JAMBONZ_"),
    ("voicexml", "VOICEXML_"),
];

/// The environment variable of `[section] key`.
pub fn env_name(section: &str, key: &str) -> Option<String> {
    ENV_PREFIXES
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, prefix)| format!("IVRAUTH_{prefix}{}", key.to_ascii_uppercase()))
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

/// One key of the configuration, as the structs define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Dotted section: `identity.oauth2.jwt`.
    pub section: String,
    pub name: String,
    /// Takes a list (a comma-separated environment variable).
    pub list: bool,
}

/// Every key of [`Settings`], found by asking serde: a struct refusing an unknown field
/// lists its fields, and a field that is itself a struct does the same one level down.
pub fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        walk(&mut Vec::new(), &mut keys);
        keys
    })
}

/// Every section of [`Settings`], dotted.
#[cfg(test)]
pub fn sections() -> Vec<String> {
    let mut out = Vec::new();
    collect_sections(&mut Vec::new(), &mut out);
    out
}

const PROBE: &str = "__probe__";

fn probe(path: &[String], leaf: Value) -> Result<Settings, Box<figment::Error>> {
    let mut dict = Dict::new();
    insert(&mut dict, path, leaf);
    Figment::from(Layer {
        name: "probe",
        dict: &dict,
    })
    .extract()
    .map_err(Box::new)
}

/// The fields of the struct at `path`, if it is one.
fn fields_at(path: &[String]) -> Option<&'static [&'static str]> {
    let mut p = path.to_vec();
    p.push(PROBE.to_owned());
    match probe(&p, Value::from(0)) {
        Err(e) if e.path == p => match e.kind {
            Kind::UnknownField(_, expected) => Some(expected),
            _ => None,
        },
        _ => None,
    }
}

fn walk(path: &mut Vec<String>, keys: &mut Vec<Key>) {
    for field in fields_at(path).unwrap_or_default() {
        path.push((*field).to_owned());
        if fields_at(path).is_some() {
            walk(path, keys);
        } else {
            let scalar = matches!(
                probe(path, Value::from(Vec::<Value>::new())),
                Err(e) if e.path == *path && matches!(e.kind, Kind::InvalidType(Actual::Seq, _))
            );
            keys.push(Key {
                section: path[..path.len() - 1].join("."),
                name: (*field).to_owned(),
                list: !scalar,
            });
        }
        path.pop();
    }
}

#[cfg(test)]
fn collect_sections(path: &mut Vec<String>, out: &mut Vec<String>) {
    for field in fields_at(path).unwrap_or_default() {
        path.push((*field).to_owned());
        if fields_at(path).is_some() {
            out.push(path.join("."));
            collect_sections(path, out);
        }
        path.pop();
    }
}

/// The keys by environment variable.
fn env_keys() -> &'static BTreeMap<String, &'static Key> {
    static ENV: OnceLock<BTreeMap<String, &'static Key>> = OnceLock::new();
    ENV.get_or_init(|| {
        keys()
            .iter()
            .filter_map(|k| Some((env_name(&k.section, &k.name)?, k)))
            .collect()
    })
}

/// One layer's values, as a figment provider.
struct Layer<'a> {
    name: &'a str,
    dict: &'a Dict,
}

impl Provider for Layer<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.to_owned())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

fn find<'a>(dict: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = dict.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        find(value.as_dict()?, rest)
    }
}

/// Remove `path` from `dict`; whether it was there.
fn remove(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

/// The file's values, or the problem reading it.
fn read_file(path: &Path, origin: &str) -> Result<Dict, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{origin}: cannot read the config file: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{origin}: not valid TOML: {}", e.message()))?;
    Value::serialize(&table)
        .ok()
        .and_then(|v| v.into_dict())
        .ok_or_else(|| format!("{origin}: not a table of sections"))
}

/// The environment's values, the variable of each, and warnings for unknown names.
fn read_env(env: &[(String, String)]) -> (Dict, Vec<String>) {
    let mut dict = Dict::new();
    let mut warnings = Vec::new();
    for (name, value) in env {
        if !name.starts_with("IVRAUTH_") || FLOW_COMMAND_VARS.contains(&name.as_str()) {
            continue;
        }
        let Some(key) = env_keys().get(name) else {
            warnings.push(format!("ignoring unknown environment variable {name}"));
            continue;
        };
        let value = if key.list {
            Value::from(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Value::from)
                    .collect::<Vec<_>>(),
            )
        } else {
            Value::from(value.as_str())
        };
        let mut path: Vec<String> = key.section.split('.').map(str::to_owned).collect();
        path.push(key.name.clone());
        insert(&mut dict, &path, value);
    }
    (dict, warnings)
}

/// What a problem says, never quoting the value.
fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.clone(),
        Kind::InvalidType(_, expected)
        | Kind::InvalidValue(_, expected)
        | Kind::InvalidLength(_, expected) => format!("expected {expected}"),
        Kind::UnknownVariant(_, expected) => format!("expected one of {}", expected.join(", ")),
        Kind::MissingField(name) => format!("`{name}` is missing"),
        Kind::DuplicateField(name) => format!("`{name}` is given twice"),
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => "out of range".to_owned(),
        Kind::Unsupported(_) | Kind::UnsupportedKey(..) => "unsupported value".to_owned(),
        Kind::UnknownField(name, _) => format!("unknown key `{name}`"),
    }
}

/// What is being loaded, and every problem found so far.
struct Loading {
    file: Option<(String, Dict)>,
    env: Dict,
    problems: Vec<String>,
    /// The environment's, reported after the file's.
    env_problems: Vec<String>,
    /// Sections with a key that could not be read: their cross-checks are skipped.
    bad_sections: HashSet<String>,
}

impl Loading {
    /// Record `e` and drop its key from the layer that gave it; `false` when that key
    /// cannot be found (nothing more can be learned).
    fn record(&mut self, e: &figment::Error) -> bool {
        let mut path = e.path.clone();
        // Entries of a list: the problem is the key's.
        while path.len() > 1 && path.last().is_some_and(|p| p.parse::<usize>().is_ok()) {
            path.pop();
        }
        let Some((name, section)) = path.split_last() else {
            self.problems.push(describe(&e.kind));
            return false;
        };
        let section = section.join(".");
        let dotted = path.join(".");
        if find(&self.env, &path).is_some() {
            let var = env_name(&section, name).unwrap_or_else(|| dotted.clone());
            self.env_problems
                .push(format!("environment: {var}: {}", describe(&e.kind)));
            self.bad_sections.insert(section);
            return remove(&mut self.env, &path);
        }
        let Some((origin, dict)) = &mut self.file else {
            self.problems.push(describe(&e.kind));
            return false;
        };
        let is_table = find(dict, &path).is_some_and(|v| v.as_dict().is_some());
        let problem = match &e.kind {
            Kind::UnknownField(..) if is_table => format!("{origin}: unknown section [{dotted}]"),
            Kind::UnknownField(..) if section.is_empty() => format!(
                "{origin}: unknown key `{name}` (keys belong in [server], [auth], [http], [identity], [simulate], [calls], [twilio], [jambonz] or [voicexml])"
            ),
            Kind::UnknownField(..) => format!("{origin}: [{section}] unknown key `{name}`"),
            Kind::InvalidType(_, expected) if expected.starts_with("struct ") => {
                format!("{origin}: `{dotted}` must be a [{dotted}] section")
            }
            kind => format!("{origin}: [{section}] {name}: {}", describe(kind)),
        };
        self.problems.push(problem);
        self.bad_sections.insert(section);
        remove(dict, &path)
    }

    /// The settings from every layer, recording each bad value.
    fn extract(&mut self) -> Settings {
        // Each round drops one key, so this ends; the bound is a second guard.
        for _ in 0..10_000 {
            let empty = Dict::new();
            let (origin, file) = match &self.file {
                Some((origin, dict)) => (origin.as_str(), dict),
                None => ("", &empty),
            };
            let figment = Figment::new()
                .merge(Layer {
                    name: origin,
                    dict: file,
                })
                .merge(Layer {
                    name: "environment",
                    dict: &self.env,
                });
            match figment.extract::<Settings>() {
                Ok(settings) => {
                    self.problems.append(&mut self.env_problems);
                    return settings;
                }
                Err(e) => {
                    if !self.record(&e) {
                        break;
                    }
                }
            }
        }
        self.problems.append(&mut self.env_problems);
        Settings::default()
    }

    fn section_ok(&self, prefix: &str) -> bool {
        !self.bad_sections.iter().any(|s| s.starts_with(prefix))
    }

    /// Checks across keys of `[twilio]`, `[jambonz]` and `[voicexml]`: a previous secret
    /// needs a current one, and the Twilio REST API and VoiceXML's Basic credentials need
    /// both their user name and password.
    fn check_calls(&mut self, settings: &Settings) {
        let t = &settings.twilio;
        let mut problems = Vec::new();
        if self.section_ok("twilio") {
            if t.previous_auth_token.is_some() && t.auth_token.is_none() {
                problems.push(
                    "[twilio] previous_auth_token is set but auth_token is not (or IVRAUTH_TWILIO_AUTH_TOKEN): during a rotation, auth_token is the new token".to_owned(),
                );
            }
            match (&t.rest_username, &t.rest_password) {
                (Some(_), None) => problems.push(
                    "[twilio] rest_username is set but rest_password is not (or IVRAUTH_TWILIO_REST_PASSWORD): set both, or neither".to_owned(),
                ),
                (None, Some(_)) => problems.push(
                    "[twilio] rest_password is set but rest_username is not (or IVRAUTH_TWILIO_REST_USERNAME): set both, or neither".to_owned(),
                ),
                _ => {}
            }
        }
        let j = &settings.jambonz;
        if self.section_ok("jambonz")
            && j.previous_webhook_secret.is_some()
            && j.webhook_secret.is_none()
        {
            problems.push(
                "[jambonz] previous_webhook_secret is set but webhook_secret is not (or IVRAUTH_JAMBONZ_WEBHOOK_SECRET): during a rotation, webhook_secret is the new secret".to_owned(),
            );
        }
        let v = &settings.voicexml;
        if self.section_ok("voicexml") {
            match (&v.basic_username, &v.basic_password) {
                (Some(_), None) => problems.push(
                    "[voicexml] basic_username is set but basic_password is not (or IVRAUTH_VOICEXML_BASIC_PASSWORD): set both, or neither".to_owned(),
                ),
                (None, Some(_)) => problems.push(
                    "[voicexml] basic_password is set but basic_username is not (or IVRAUTH_VOICEXML_BASIC_USERNAME): set both, or neither".to_owned(),
                ),
                _ => {}
            }
            if v.previous_basic_password.is_some() && v.basic_password.is_none() {
                problems.push(
                    "[voicexml] previous_basic_password is set but basic_password is not (or IVRAUTH_VOICEXML_BASIC_PASSWORD): during a rotation, basic_password is the new password".to_owned(),
                );
            }
        }
        self.problems.extend(problems);
    }

    /// Checks across keys and layers: lockout periods, hash parameters, the selected
    /// provider's section, and every provider section present (by building the provider).
    fn check_identity(&mut self, settings: &Settings) {
        let id = &settings.identity;
        let mut problems = Vec::new();
        if self.section_ok("identity.lockout")
            && id.lockout.lock_max_secs < id.lockout.lock_base_secs
        {
            problems.push(
                "[identity.lockout] lock_max_secs must not be less than lock_base_secs".to_owned(),
            );
        }
        if !self.bad_sections.contains("identity")
            && u64::from(id.hash_m_kib) < 8 * u64::from(id.hash_p)
        {
            problems.push("[identity] hash_m_kib must be at least 8 × hash_p".to_owned());
        }
        let present = match id.provider {
            ProviderKind::Builtin => true,
            ProviderKind::Ldap => id.ldap.is_some(),
            ProviderKind::OAuth2 => id.oauth2.is_some(),
            ProviderKind::Http => id.http.is_some(),
        };
        if !present {
            let section = id.provider.section().unwrap_or("identity");
            problems.push(format!(
                "[identity] provider = \"{}\" needs an [{section}] section",
                id.provider.name()
            ));
        }
        if let Some(l) = id
            .ldap
            .as_ref()
            .filter(|_| self.section_ok("identity.ldap"))
        {
            problems.extend(l.directory().err().unwrap_or_default());
        }
        if let Some(o) = id
            .oauth2
            .as_ref()
            .filter(|_| self.section_ok("identity.oauth2"))
        {
            problems.extend(o.directory().err().unwrap_or_default());
        }
        if let Some(h) = id
            .http
            .as_ref()
            .filter(|_| self.section_ok("identity.http"))
        {
            problems.extend(h.directory().err().unwrap_or_default());
        }
        self.problems.extend(problems);
    }
}

/// Load the settings: defaults, then the file, then `env`, then `flags`. `cwd` is where
/// `ivrauth.toml` is looked for. Returns the settings and warnings, or every problem.
pub fn load(
    flags: &Flags,
    cwd: &Path,
    env: &[(String, String)],
) -> Result<(Settings, Vec<String>), ConfigErrors> {
    let mut problems = Vec::new();
    let path = match &flags.config {
        Some(path) => Some(path.clone()),
        None => {
            let p = cwd.join(DEFAULT_CONFIG_FILE);
            p.is_file().then_some(p)
        }
    };
    let file = path.and_then(|path| {
        let origin = path.display().to_string();
        match read_file(&path, &origin) {
            Ok(dict) => Some((origin, dict)),
            Err(problem) => {
                problems.push(problem);
                None
            }
        }
    });
    let (env, warnings) = read_env(env);
    let mut loading = Loading {
        file,
        env,
        problems,
        env_problems: Vec::new(),
        bad_sections: HashSet::new(),
    };
    // The file alone first, so that a bad value in it is reported even where a variable
    // overrides it; then the variables over what is left of the file.
    let env = std::mem::take(&mut loading.env);
    loading.extract();
    loading.env = env;
    let mut settings = loading.extract();
    loading.check_identity(&settings);
    loading.check_calls(&settings);

    if let Some(listen) = flags.listen {
        settings.server.listen = listen;
    }
    if let Some(dir) = &flags.data_dir {
        settings.server.data_dir = dir.clone();
    }

    if loading.problems.is_empty() {
        Ok((settings, warnings))
    } else {
        Err(ConfigErrors(loading.problems))
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
