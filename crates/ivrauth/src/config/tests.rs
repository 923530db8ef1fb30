//! The loading rules, tested through `load` with files and environments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ivrauth_connect::{ProfilePointers, TokenValidation};
use ivrauth_core::identity::{HashParams, LockoutPolicy};
use ivrauth_server::app::seal::SessionKeys;
use ivrauth_server::app::simulate::SimulateConfig;
use ivrauth_server::ServeLimits;

use super::load::{ConfigErrors, Flags, DEFAULT_CONFIG_FILE};
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
    let (settings, warnings) = load(&flags_for(&example), Path::new("/nonexistent"), &[]).unwrap();
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
    assert_eq!(s.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(s.server.data_dir, PathBuf::from("/flag"));
    assert_eq!(s.auth.token_ttl_secs, 120);
    assert_eq!(s.auth.rate_limit_burst, 7);
    assert_eq!(
        s.http.allowed_hosts,
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
fn connection_limits_are_configurable_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    std::fs::write(
        &path,
        "[server]\nheader_read_timeout_secs = 5\nbody_timeout_secs = 20\nidle_timeout_secs = 90\n",
    )
    .unwrap();
    let (s, _) = load(
        &flags_for(&path),
        dir.path(),
        &env(&[("IVRAUTH_MAX_CONNECTIONS", "10000")]),
    )
    .unwrap();
    assert_eq!(
        s.server.limits(),
        ServeLimits {
            header_read_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            max_connections: 10_000,
        }
    );
    assert_eq!(s.server_config(false).limits, s.server.limits());

    std::fs::write(
        &path,
        "[server]\nheader_read_timeout_secs = 0\nbody_timeout_secs = 0\nidle_timeout_secs = 0\nmax_connections = 0\n",
    )
    .unwrap();
    let errors = load(&flags_for(&path), dir.path(), &[]).unwrap_err();
    assert_eq!(errors.0.len(), 4, "{errors}");
    for key in [
        "header_read_timeout_secs",
        "body_timeout_secs",
        "idle_timeout_secs",
        "max_connections",
    ] {
        let needle = format!("[server] {key}: must be at least 1");
        assert!(
            errors.0.iter().any(|p| p.contains(&needle)),
            "{needle} missing from {errors}"
        );
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
        vec!["ignoring unknown environment variable IVRAUTH_HTTP_DEFAULT_TIMEOUT_MS".to_owned()]
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
    assert_eq!(s.http.allowed_hosts, None);
    let errors = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[("IVRAUTH_HTTP_ALLOWED_HOSTS", "https://x.example/")]),
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 1);
}

#[test]
fn allowed_hosts_take_cidr_ranges_and_name_a_range_with_host_bits() {
    let (s, _) = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[(
            "IVRAUTH_HTTP_ALLOWED_HOSTS",
            "10.0.0.0/8, fd00::/8, api.example",
        )]),
    )
    .unwrap();
    assert_eq!(
        s.http.allowed_hosts,
        Some(vec![
            "10.0.0.0/8".to_owned(),
            "fd00::/8".to_owned(),
            "api.example".to_owned()
        ])
    );
    let errors = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[("IVRAUTH_HTTP_ALLOWED_HOSTS", "10.1.2.3/8,x.example:8080")]),
    )
    .unwrap_err();
    let text = errors.0.join("\n");
    assert!(text.contains("write 10.0.0.0/8"), "{text}");
    assert!(text.contains("\"x.example:8080\""), "{text}");
}

/// `config.example.toml` with its commented-out `key = value` lines and section headers
/// switched on (the provider sections are documented that way).
fn example_uncommented() -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let uncommented = line.strip_prefix("# ").filter(|rest| {
            rest.starts_with("[identity.")
                || rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
        });
        out.push_str(uncommented.unwrap_or(line));
        out.push('\n');
    }
    out
}

fn load_text(text: &str, e: &[(String, String)]) -> Result<(Settings, Vec<String>), ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ivrauth.toml");
    std::fs::write(&path, text).unwrap();
    load(&flags_for(&path), dir.path(), e)
}

#[test]
fn identity_defaults_are_the_documented_ones() {
    let id = Settings::default().identity;
    assert_eq!(id.provider, ProviderKind::Builtin);
    assert_eq!(id.min_verify_ms, 300);
    assert_eq!(
        id.hash(),
        HashParams {
            m_kib: 19_456,
            t: 2,
            p: 1
        }
    );
    assert_eq!(id.hash_pool_size, None);
    let l = id.lockout.policy();
    assert_eq!(
        (
            l.max_failures,
            l.base_lock_secs,
            l.max_lock_secs,
            l.permanent
        ),
        (5, 900, 86_400, false)
    );
    assert_eq!(
        (
            l.per_call_failures,
            l.per_ani_failures_per_hour,
            l.per_ani_accounts_per_hour,
            l.withheld_failures_per_hour,
            l.withheld_accounts_per_hour
        ),
        (3, 20, 10, 10, 5)
    );
    assert!(id.ldap.is_none() && id.oauth2.is_none() && id.http.is_none());
}

#[test]
fn every_documented_provider_section_loads() {
    // The example documents each provider section commented out; switched on (with a
    // loopback LDAP URL, so no system CA roots are needed, and no CA file), they load.
    let text = example_uncommented()
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("ldaps://ldap.example.com", "ldap://127.0.0.1:389");
    let (s, warnings) = load_text(&text, &[]).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let id = &s.identity;
    let ldap = id.ldap.as_ref().unwrap();
    assert!(ldap.to_config().is_ok());
    let oauth2 = id.oauth2.as_ref().unwrap();
    assert!(oauth2.jwt.is_some() && oauth2.introspection.is_some());
    assert!(oauth2.to_config().is_ok());
    assert!(id.http.as_ref().unwrap().to_config().is_ok());
}

#[test]
fn identity_keys_reach_the_settings() {
    let (s, _) = load_text(
        r#"
[identity]
provider = "http"
min_verify_ms = 0
hash_m_kib = 1024
hash_t = 1
hash_p = 2
hash_pool_size = 3

[identity.lockout]
max_failures = 7
lock_base_secs = 60
lock_max_secs = 600
permanent = true
per_call_failures = 2
per_ani_failures_per_hour = 30
per_ani_accounts_per_hour = 11
withheld_failures_per_hour = 4
withheld_accounts_per_hour = 1

[identity.http]
url = "http://127.0.0.1:3999/token"
timeout_ms = 250
"#,
        &[],
    )
    .unwrap();
    let id = s.identity;
    assert_eq!(id.provider, ProviderKind::Http);
    assert_eq!(id.min_verify_duration(), Duration::ZERO);
    assert_eq!(
        id.hash(),
        HashParams {
            m_kib: 1024,
            t: 1,
            p: 2
        }
    );
    assert_eq!(id.hash_pool_size, Some(3));
    assert_eq!(
        id.lockout.policy(),
        LockoutPolicy {
            max_failures: 7,
            base_lock_secs: 60,
            max_lock_secs: 600,
            permanent: true,
            per_call_failures: 2,
            per_ani_failures_per_hour: 30,
            per_ani_accounts_per_hour: 11,
            withheld_failures_per_hour: 4,
            withheld_accounts_per_hour: 1,
        }
    );
    let http = id.http.unwrap().to_config().unwrap();
    assert_eq!(http.url, "http://127.0.0.1:3999/token");
    assert_eq!(http.health_url, None);
    assert_eq!(http.timeout, Duration::from_millis(250));
}

#[test]
fn identity_problems_are_reported_together() {
    let errors = load_text(
        r#"
[identity]
provider = "kerberos"
hash_t = 0
colour = "blue"

[identity.lockout]
max_failures = "five"

[identity.ldap]
bind_dn = "cn=svc,dc=example,dc=com"
bind_password = "pw"
base_dn = "dc=example,dc=com"

[identity.oauth2]
token_url = "https://idp.example.com/token"
client_id = "svc"
client_secret = "s"
user_search_url_template = "https://idp.example.com/users?q={account}"

[identity.oauth2.jwt]
jwks_url = "https://idp.example.com/jwks"
issuer = "https://idp.example.com/"
audience = "ivrauth"
algorithms = ["HS256"]

[identity.http]
timeout_ms = 100

[identity.kerberos]
realm = "X"
"#,
        &env(&[("IVRAUTH_IDENTITY_MIN_VERIFY_MS", "soon")]),
    )
    .unwrap_err();
    let text = errors.to_string();
    for needle in [
        "[identity] provider: unknown provider \"kerberos\"",
        "[identity] hash_t: must be between 1 and 100",
        "[identity] unknown key `colour`",
        "[identity.lockout] max_failures: expected an integer",
        "[identity.ldap] url is required (or IVRAUTH_LDAP_URL)",
        "[identity.oauth2.jwt] algorithms: HS256 is symmetric",
        "[identity.http] url is required (or IVRAUTH_HTTP_IDENTITY_URL)",
        "unknown section [identity.kerberos]",
        "environment: IVRAUTH_IDENTITY_MIN_VERIFY_MS: expected an integer",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(errors.0.len(), 9, "{text}");
}

#[test]
fn the_selected_provider_needs_its_section() {
    for (name, section) in [
        ("ldap", "identity.ldap"),
        ("oauth2", "identity.oauth2"),
        ("http", "identity.http"),
    ] {
        let errors = load_text(&format!("[identity]\nprovider = \"{name}\"\n"), &[]).unwrap_err();
        assert_eq!(
            errors.0,
            vec![format!(
                "[identity] provider = \"{name}\" needs an [{section}] section"
            )]
        );
    }
    // An empty section is present, and checked.
    let errors = load_text("[identity]\nprovider = \"ldap\"\n[identity.ldap]\n", &[]).unwrap_err();
    assert_eq!(errors.0.len(), 4, "{errors}");
    assert!(errors.0.iter().all(|p| p.ends_with(")")), "{errors}");
    // The connector's own checks run too: plain ldap:// to a remote host is refused.
    let errors = load_text(
        "[identity.ldap]\nurl = \"ldap://ldap.example.com\"\nbind_dn = \"cn=a\"\nbind_password = \"p\"\nbase_dn = \"dc=x\"\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert!(
        errors.0[0].starts_with("[identity.ldap] plain ldap://"),
        "{errors}"
    );
}

#[test]
fn providers_can_be_configured_from_the_environment() {
    let (s, warnings) = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[
            ("IVRAUTH_IDENTITY_PROVIDER", "ldap"),
            ("IVRAUTH_LDAP_URL", "ldap://127.0.0.1:3389"),
            ("IVRAUTH_LDAP_BIND_DN", "cn=admin,dc=example,dc=com"),
            ("IVRAUTH_LDAP_BIND_PASSWORD", "from-env"),
            ("IVRAUTH_LDAP_BASE_DN", "dc=example,dc=com"),
            ("IVRAUTH_IDENTITY_HASH_POOL_SIZE", "2"),
        ]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.identity.provider, ProviderKind::Ldap);
    assert_eq!(s.identity.hash_pool_size, Some(2));
    let c = s.identity.ldap.unwrap().to_config().unwrap();
    assert_eq!(c.bind_password.expose(), "from-env");
    assert_eq!(c.filter, "(employeeNumber={account})");
    assert_eq!(c.timeout, Duration::from_secs(5));

    // The environment overrides the file's secrets.
    let (s, _) = load_text(
        r#"
[identity.oauth2]
token_url = "https://idp.example.com/oauth/token"
client_id = "mgmt"
client_secret = "from-file"
user_search_url_template = "https://idp.example.com/api/v2/users?q=n:{account}"
token_validation = "introspection"

[identity.oauth2.introspection]
url = "https://idp.example.com/introspect"

[identity.oauth2.pointers]
login_name = "/0/email"
blocked = ""
"#,
        &env(&[
            ("IVRAUTH_OAUTH2_CLIENT_SECRET", "mgmt-env"),
            ("IVRAUTH_OAUTH2_LOGIN_CLIENT_SECRET", "login-env"),
        ]),
    )
    .unwrap();
    let c = s.identity.oauth2.unwrap().to_config().unwrap();
    assert_eq!(c.client_secret.expose(), "mgmt-env");
    assert_eq!(c.login_client_id, "mgmt");
    assert_eq!(c.login_client_secret.expose(), "login-env");
    assert_eq!(c.pointers.login_name, "/0/email");
    assert_eq!(c.pointers.blocked, None);
    assert_eq!(c.pointers.user_id, ProfilePointers::default().user_id);
    assert_eq!(
        c.timeout,
        Duration::from_millis(DEFAULT_PROVIDER_TIMEOUT_MS)
    );
    match c.token_validation {
        TokenValidation::Introspection {
            url,
            client_id,
            client_secret,
        } => {
            assert_eq!(url, "https://idp.example.com/introspect");
            assert_eq!(client_id, "mgmt");
            assert_eq!(client_secret.expose(), "mgmt-env");
        }
        TokenValidation::Jwt { .. } => panic!("expected introspection"),
    }
}

#[test]
fn secrets_appear_in_no_problem_and_no_debug_output() {
    const CANARY: &str = "Canary-Secret-5b1e";
    let file = format!(
        r#"
[identity.ldap]
url = "ldap://ldap.example.com"
bind_dn = "cn=a"
bind_password = "{CANARY}"
base_dn = "dc=x"
filter = "(uid=x)"

[identity.oauth2]
token_url = "http://idp.example.com/token"
client_id = "a"
client_secret = "{CANARY}"
login_client_secret = "{CANARY}"
user_search_url_template = "https://idp.example.com/users"
token_validation = "introspection"

[identity.oauth2.introspection]
url = "https://idp.example.com/introspect"
client_secret = "{CANARY}"
"#
    );
    let e = env(&[
        ("IVRAUTH_LDAP_BIND_PASSWORD", CANARY),
        ("IVRAUTH_OAUTH2_CLIENT_SECRET", CANARY),
        ("IVRAUTH_OAUTH2_LOGIN_CLIENT_SECRET", CANARY),
    ]);
    let errors = load_text(&file, &e).unwrap_err();
    assert!(errors.0.len() >= 2, "{errors}");
    assert!(!errors.to_string().contains(CANARY), "{errors}");
    // Secrets of the wrong type or empty.
    let errors = load_text(
        &format!("[identity.ldap]\nbind_password = [\"{CANARY}\"]\n[identity.oauth2]\nclient_secret = \"\"\n"),
        &[],
    )
    .unwrap_err();
    assert!(!errors.to_string().contains(CANARY), "{errors}");
    assert!(errors
        .to_string()
        .contains("bind_password: expected a string"));
    assert!(errors
        .to_string()
        .contains("client_secret: must not be empty"));
    // A loaded configuration prints no secret either.
    let (s, _) = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[
            ("IVRAUTH_LDAP_URL", "ldap://127.0.0.1"),
            ("IVRAUTH_LDAP_BIND_DN", "cn=a"),
            ("IVRAUTH_LDAP_BIND_PASSWORD", CANARY),
            ("IVRAUTH_LDAP_BASE_DN", "dc=x"),
        ]),
    )
    .unwrap();
    assert!(!format!("{s:?}").contains(CANARY));
    let directory = s.identity.ldap.unwrap().directory().unwrap();
    assert!(!format!("{directory:?}").contains(CANARY));
}

#[test]
fn cross_key_checks() {
    let errors = load_text(
        "[identity]\nhash_m_kib = 8\nhash_p = 2\n[identity.lockout]\nlock_base_secs = 600\nlock_max_secs = 60\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        errors.0,
        vec![
            "[identity.lockout] lock_max_secs must not be less than lock_base_secs".to_owned(),
            "[identity] hash_m_kib must be at least 8 × hash_p".to_owned(),
        ]
    );
}

/// Base64 of 32 bytes of `byte`.
fn key(byte: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

#[test]
fn calls_defaults_are_the_documented_ones() {
    let s = Settings::default();
    assert_eq!(s.calls.idle_timeout_secs, 1800);
    assert!(s.calls.session_keys.is_empty());
    assert!(s.calls.configured_keys().is_none());
    assert_eq!(s.calls.public_url, None);
    let t = &s.twilio;
    assert_eq!(t.auth_token, None);
    assert_eq!(t.previous_auth_token, None);
    assert!(t.account_sids.is_empty());
    assert!(!t.skip_signature_check);
    assert_eq!(t.workflow_sid, None);
    assert_eq!(t.rest_base_url, "https://api.twilio.com");
    assert!(t.rest().is_none());
    assert!(!t.accepts_requests());
    assert_eq!(s.jambonz, JambonzSettings::default());
    assert!(!s.jambonz.accepts_requests());

    let c = s.calls_config(SessionKeys::generate());
    assert_eq!(c.idle_secs, 1800);
    assert_eq!(c.max_turns, 200);
    assert_eq!(c.keys.key_count(), 1);
    assert!(c.platforms.public_url.is_none());
    assert!(c.platforms.twilio.auth_tokens.is_empty());
    assert!(c.platforms.twilio.rest.is_none());
    assert!(c.platforms.jambonz.secrets.is_empty());
}

#[test]
fn simulate_defaults_are_the_documented_ones() {
    let c = Settings::default().server_config(false).simulate;
    assert_eq!(
        c,
        SimulateConfig {
            max_steps: 1000,
            max_no_input: 20,
            max_trace_entries: 1000,
            max_duration_ms: 10_000,
        }
    );
}

#[test]
fn run_limits_reach_the_server_config() {
    let (s, warnings) = load_text(
        "[simulate]\nmax_steps = 50\nmax_no_input = 0\nmax_trace_entries = 40\n[calls]\nmax_turns = 30\n",
        &env(&[("IVRAUTH_SIMULATE_MAX_DURATION_SECS", "3")]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        s.server_config(false).simulate,
        SimulateConfig {
            max_steps: 50,
            max_no_input: 0,
            max_trace_entries: 40,
            max_duration_ms: 3_000,
        }
    );
    assert_eq!(s.calls_config(SessionKeys::generate()).max_turns, 30);

    let text = load_text(
        "[simulate]\nmax_steps = 0\nmax_duration_secs = 601\nmax_turns = 5\n[calls]\nmax_turns = \"many\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "[simulate] max_steps: must be between 1 and 100000",
        "[simulate] max_duration_secs: must be between 1 and 600",
        "[simulate] unknown key `max_turns`",
        "[calls] max_turns: expected an integer",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

#[test]
fn simulate_identity_modes_and_account_rules() {
    let (s, _) = load_text("", &[]).unwrap();
    assert_eq!(s.simulate.identity, SimulateIdentityMode::Live);
    assert!(s.identity.account_rules().fold_case);
    assert!(!s.identity.account_rules().strip_separators);
    let (s, _) = load_text(
        "[simulate]\nidentity = \"demo\"\n[identity]\naccount_fold_case = false\naccount_strip_separators = true\nlookups_per_caller_per_hour = 7\n",
        &env(&[("IVRAUTH_SIMULATE_IDENTITY", "off")]),
    )
    .unwrap();
    assert_eq!(s.simulate.identity, SimulateIdentityMode::Off);
    assert!(!s.identity.account_rules().fold_case);
    assert!(s.identity.account_rules().strip_separators);
    assert_eq!(s.identity.lookups_per_caller_per_hour, 7);
    let text = load_text("[simulate]\nidentity = \"dmeo\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("[simulate] identity: unknown mode \"dmeo\""),
        "{text}"
    );
}

#[test]
fn calls_keys_reach_the_server_config() {
    let (s, warnings) = load_text(
        &format!(
            r#"
[calls]
idle_timeout_secs = 600
session_keys = ["{}", "{}"]
public_url = "https://ivr.example.com/"

[twilio]
auth_token = "tok-new"
previous_auth_token = "tok-old"
account_sids = ["AC123", "AC456"]
workflow_sid = "WW1"
rest_base_url = "http://127.0.0.1:9999/"
rest_username = "AC123"
rest_password = "rest-pw"

[jambonz]
webhook_secret = "wh-new"
previous_webhook_secret = "wh-old"
"#,
            key(1),
            key(2)
        ),
        &[],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.calls.idle_timeout_secs, 600);
    assert_eq!(
        s.calls.public_url.as_deref(),
        Some("https://ivr.example.com")
    );
    let ring = s.calls.configured_keys().unwrap().unwrap();
    assert_eq!(ring.key_count(), 2);
    assert!(s.twilio.accepts_requests() && s.jambonz.accepts_requests());

    let c = s.calls_config(ring);
    assert_eq!(c.idle_secs, 600);
    assert_eq!(
        c.platforms.public_url.as_deref(),
        Some("https://ivr.example.com")
    );
    let t = &c.platforms.twilio;
    let tokens: Vec<&str> = t.auth_tokens.iter().map(|x| x.expose().as_str()).collect();
    assert_eq!(tokens, ["tok-new", "tok-old"]);
    assert_eq!(t.account_sids, ["AC123", "AC456"]);
    assert_eq!(t.workflow_sid.as_deref(), Some("WW1"));
    assert!(!t.skip_signature_check);
    let rest = t.rest.as_ref().unwrap();
    assert_eq!(rest.base_url, "http://127.0.0.1:9999");
    assert_eq!(rest.username, "AC123");
    assert_eq!(rest.password.expose(), "rest-pw");
    let j = &c.platforms.jambonz;
    let secrets: Vec<&str> = j.secrets.iter().map(|x| x.expose().as_str()).collect();
    assert_eq!(secrets, ["wh-new", "wh-old"]);
    assert!(!j.skip_signature_check);
}

#[test]
fn calls_from_the_environment() {
    let (s, warnings) = load_text(
        &format!(
            "[calls]\nsession_keys = [\"{}\"]\n[twilio]\nauth_token = \"from-file\"\n",
            key(9)
        ),
        &env(&[
            (
                "IVRAUTH_CALL_SESSION_KEYS",
                &format!("{}, {}", key(3), key(4)),
            ),
            ("IVRAUTH_CALL_IDLE_TIMEOUT_SECS", "90"),
            ("IVRAUTH_CALL_PUBLIC_URL", "https://calls.example.com"),
            ("IVRAUTH_TWILIO_AUTH_TOKEN", "from-env"),
            ("IVRAUTH_TWILIO_SKIP_SIGNATURE_CHECK", "true"),
            ("IVRAUTH_TWILIO_REST_USERNAME", "SK1"),
            ("IVRAUTH_TWILIO_REST_PASSWORD", "rest-env"),
            ("IVRAUTH_JAMBONZ_WEBHOOK_SECRET", "wh-env"),
            ("IVRAUTH_JAMBONZ_SKIP_SIGNATURE_CHECK", "yes"),
        ]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.calls.idle_timeout_secs, 90);
    assert_eq!(
        s.calls.public_url.as_deref(),
        Some("https://calls.example.com")
    );
    // The environment's list replaces the file's.
    let exposed: Vec<&str> = s
        .calls
        .session_keys
        .iter()
        .map(|k| k.expose().as_str())
        .collect();
    assert_eq!(exposed, [key(3).as_str(), key(4).as_str()]);
    assert_eq!(s.twilio.auth_token.as_ref().unwrap().expose(), "from-env");
    assert!(s.twilio.skip_signature_check);
    assert_eq!(s.twilio.rest().unwrap().password.expose(), "rest-env");
    assert_eq!(
        s.jambonz.webhook_secret.as_ref().unwrap().expose(),
        "wh-env"
    );
    assert!(s.jambonz.skip_signature_check);
}

#[test]
fn session_key_rotation_opens_what_the_old_ring_sealed() {
    let aad = b"api\0flow\0call";
    let old = |keys: &[String]| {
        let (s, _) = load(
            &Flags::default(),
            Path::new("/nonexistent"),
            &env(&[("IVRAUTH_CALL_SESSION_KEYS", &keys.join(","))]),
        )
        .unwrap();
        s.calls.configured_keys().unwrap().unwrap()
    };
    let before = old(&[key(1)]);
    let token = before.seal(b"state", aad).unwrap();
    // New key first: it seals, the old one still opens.
    let during = old(&[key(2), key(1)]);
    assert_eq!(during.open(&token, aad).unwrap(), b"state");
    let fresh = during.seal(b"next", aad).unwrap();
    assert!(before.open(&fresh, aad).is_err());
    let after = old(&[key(2)]);
    assert!(after.open(&token, aad).is_err());
    assert_eq!(after.open(&fresh, aad).unwrap(), b"next");
}

#[test]
fn bad_session_keys_name_the_entry_never_its_content() {
    const CANARY: &str = "c2VjcmV0LWNhbmFyeS1rZXk="; // 17 bytes
    let errors = load_text(
        &format!("[calls]\nsession_keys = [\"{}\", \"{CANARY}\"]\n", key(1)),
        &[],
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(
        text.contains("[calls] session_keys: entry #2 of 2 decodes to 17 bytes, not 32"),
        "{text}"
    );
    assert!(!text.contains(CANARY), "{text}");

    let errors = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[(
            "IVRAUTH_CALL_SESSION_KEYS",
            &format!("not*base64*canary,{}", key(1)),
        )]),
    )
    .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("environment: IVRAUTH_CALL_SESSION_KEYS: entry #1 of 2 is not base64"),
        "{text}"
    );
    assert!(!text.contains("canary"), "{text}");

    for (value, needle) in [
        ("[]", "must list at least one key"),
        ("\"one\"", "expected a list of strings"),
        (
            &format!("[\"{}\", \"{}\"]", key(5), key(5)),
            "entry #2 of 2 repeats an earlier entry",
        ),
    ] {
        let errors = load_text(&format!("[calls]\nsession_keys = {value}\n"), &[]).unwrap_err();
        assert!(errors.to_string().contains(needle), "{errors}");
    }
    // Secrets never show in a loaded configuration's Debug output either.
    let (s, _) = load_text(
        &format!(
            "[calls]\nsession_keys = [\"{}\"]\n[twilio]\nauth_token = \"Canary-Tok\"\n",
            key(7)
        ),
        &[],
    )
    .unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains(&key(7)) && !shown.contains("Canary-Tok"),
        "{shown}"
    );
}

#[test]
fn calls_problems_name_their_keys() {
    let errors = load_text(
        r#"
[calls]
idle_timeout_secs = 0
public_url = "ftp://x"
colour = "blue"

[twilio]
previous_auth_token = "old"
rest_username = "AC1"
rest_base_url = "http://api.twilio.example"
skip_signature_check = "maybe"

[jambonz]
previous_webhook_secret = "old"
"#,
        &[],
    )
    .unwrap_err();
    let text = errors.to_string();
    for needle in [
        "[calls] idle_timeout_secs: must be between 1 and 86400",
        "[calls] public_url: expected a https or http URL",
        "[calls] unknown key `colour`",
        "[twilio] rest_base_url: must be https",
        "[twilio] skip_signature_check: expected true or false",
        "[jambonz] previous_webhook_secret is set but webhook_secret is not",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    // [twilio] had a bad key: its cross-checks are skipped (one mistake, one problem).
    assert!(!text.contains("rest_password is not"), "{text}");
    assert_eq!(errors.0.len(), 6, "{text}");

    let errors = load_text(
        "[twilio]\nprevious_auth_token = \"old\"\nrest_username = \"AC1\"\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        errors.0,
        vec![
            "[twilio] previous_auth_token is set but auth_token is not (or IVRAUTH_TWILIO_AUTH_TOKEN): during a rotation, auth_token is the new token".to_owned(),
            "[twilio] rest_username is set but rest_password is not (or IVRAUTH_TWILIO_REST_PASSWORD): set both, or neither".to_owned(),
        ]
    );
    let errors = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[("IVRAUTH_TWILIO_REST_PASSWORD", "Canary-Pw")]),
    )
    .unwrap_err();
    assert!(errors
        .to_string()
        .contains("rest_password is set but rest_username is not"));
    assert!(!errors.to_string().contains("Canary-Pw"));
}

#[test]
fn voicexml_keys_reach_the_server_config() {
    // By default no credential is configured: VoiceXML requests are refused.
    assert!(!Settings::default().voicexml.accepts_requests());
    let (s, warnings) = load_text(
        r#"
[voicexml]
basic_username = "cvp"
basic_password = "pw-new"
previous_basic_password = "pw-old"
allowed_sources = ["10.20.0.0/16", "192.0.2.7", "2001:db8:20::/48"]
trusted_proxies = ["127.0.0.1"]
"#,
        &[],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(s.voicexml.accepts_requests());
    let v = s.voicexml.config();
    assert_eq!(v.basic_username.as_deref(), Some("cvp"));
    let passwords: Vec<&str> = v
        .basic_passwords
        .iter()
        .map(|p| p.expose().as_str())
        .collect();
    assert_eq!(passwords, ["pw-new", "pw-old"]);
    let sources: Vec<String> = v.allowed_sources.iter().map(ToString::to_string).collect();
    assert_eq!(
        sources,
        ["10.20.0.0/16", "192.0.2.7/32", "2001:db8:20::/48"]
    );
    assert_eq!(v.trusted_proxies.len(), 1);
    assert!(v.accepts_requests());

    // From the environment; an allow-list alone is a credential.
    let (s, _) = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[("IVRAUTH_VOICEXML_ALLOWED_SOURCES", "10.0.0.0/8, 127.0.0.1")]),
    )
    .unwrap();
    assert_eq!(s.voicexml.allowed_sources.len(), 2);
    assert!(s.voicexml.basic_username.is_none());
    assert!(s
        .calls_config(SessionKeys::generate())
        .platforms
        .voicexml
        .accepts_requests());
}

#[test]
fn voicexml_problems_name_their_keys() {
    const CANARY: &str = "Canary-Vxml-Pw";
    let errors = load_text(
        &format!(
            "[voicexml]\nbasic_password = \"{CANARY}\"\nallowed_sources = [\"10.0.0.1/8\", \"ten\"]\n"
        ),
        &[],
    )
    .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("[voicexml] allowed_sources: `10.0.0.1/8` has bits set past its prefix length; did you mean `10.0.0.0/8`?; `ten` is not an IP address or CIDR range"),
        "{text}"
    );
    // The section had a bad key: its cross-checks are skipped.
    assert_eq!(errors.0.len(), 1, "{text}");
    assert!(!text.contains(CANARY));

    let errors = load_text(
        &format!(
            "[voicexml]\nbasic_password = \"{CANARY}\"\nprevious_basic_password = \"{CANARY}\"\n"
        ),
        &[],
    )
    .unwrap_err();
    assert!(errors.to_string().contains("[voicexml] basic_password is set but basic_username is not (or IVRAUTH_VOICEXML_BASIC_USERNAME): set both, or neither"));
    let errors = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[
            ("IVRAUTH_VOICEXML_BASIC_USERNAME", "a:b"),
            ("IVRAUTH_VOICEXML_PREVIOUS_BASIC_PASSWORD", CANARY),
        ]),
    )
    .unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("IVRAUTH_VOICEXML_BASIC_USERNAME: must not contain `:`"),
        "{errors}"
    );
    let errors = load_text(
        "[voicexml]\nbasic_username = \"cvp\"\nprevious_basic_password = \"x\"\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        errors.0,
        vec![
            "[voicexml] basic_username is set but basic_password is not (or IVRAUTH_VOICEXML_BASIC_PASSWORD): set both, or neither".to_owned(),
            "[voicexml] previous_basic_password is set but basic_password is not (or IVRAUTH_VOICEXML_BASIC_PASSWORD): during a rotation, basic_password is the new password".to_owned(),
        ]
    );
    assert!(!errors.to_string().contains(CANARY));
}

/// Every environment variable documented before the configuration moved to serde: its
/// key, by section and name.
const DOCUMENTED_ENV: &[(&str, &str, &str)] = &[
    ("server", "listen", "IVRAUTH_LISTEN"),
    ("server", "data_dir", "IVRAUTH_DATA_DIR"),
    ("server", "public_url", "IVRAUTH_PUBLIC_URL"),
    ("server", "max_body_bytes", "IVRAUTH_MAX_BODY_BYTES"),
    (
        "server",
        "header_read_timeout_secs",
        "IVRAUTH_HEADER_READ_TIMEOUT_SECS",
    ),
    ("server", "body_timeout_secs", "IVRAUTH_BODY_TIMEOUT_SECS"),
    ("server", "idle_timeout_secs", "IVRAUTH_IDLE_TIMEOUT_SECS"),
    ("server", "max_connections", "IVRAUTH_MAX_CONNECTIONS"),
    ("auth", "token_ttl_secs", "IVRAUTH_TOKEN_TTL_SECS"),
    ("auth", "rate_limit_per_sec", "IVRAUTH_RATE_LIMIT_PER_SEC"),
    ("auth", "rate_limit_burst", "IVRAUTH_RATE_LIMIT_BURST"),
    (
        "auth",
        "secret_rotation_overlap_secs",
        "IVRAUTH_SECRET_ROTATION_OVERLAP_SECS",
    ),
    ("http", "allowed_hosts", "IVRAUTH_HTTP_ALLOWED_HOSTS"),
    ("identity", "provider", "IVRAUTH_IDENTITY_PROVIDER"),
    (
        "identity",
        "min_verify_ms",
        "IVRAUTH_IDENTITY_MIN_VERIFY_MS",
    ),
    (
        "identity",
        "account_fold_case",
        "IVRAUTH_IDENTITY_ACCOUNT_FOLD_CASE",
    ),
    (
        "identity",
        "account_strip_separators",
        "IVRAUTH_IDENTITY_ACCOUNT_STRIP_SEPARATORS",
    ),
    (
        "identity",
        "lookups_per_caller_per_hour",
        "IVRAUTH_IDENTITY_LOOKUPS_PER_CALLER_PER_HOUR",
    ),
    ("identity", "hash_m_kib", "IVRAUTH_IDENTITY_HASH_M_KIB"),
    ("identity", "hash_t", "IVRAUTH_IDENTITY_HASH_T"),
    ("identity", "hash_p", "IVRAUTH_IDENTITY_HASH_P"),
    (
        "identity",
        "hash_pool_size",
        "IVRAUTH_IDENTITY_HASH_POOL_SIZE",
    ),
    ("identity.ldap", "url", "IVRAUTH_LDAP_URL"),
    ("identity.ldap", "bind_dn", "IVRAUTH_LDAP_BIND_DN"),
    (
        "identity.ldap",
        "bind_password",
        "IVRAUTH_LDAP_BIND_PASSWORD",
    ),
    ("identity.ldap", "base_dn", "IVRAUTH_LDAP_BASE_DN"),
    (
        "identity.oauth2",
        "client_secret",
        "IVRAUTH_OAUTH2_CLIENT_SECRET",
    ),
    (
        "identity.oauth2",
        "login_client_secret",
        "IVRAUTH_OAUTH2_LOGIN_CLIENT_SECRET",
    ),
    (
        "identity.oauth2.introspection",
        "client_secret",
        "IVRAUTH_OAUTH2_INTROSPECTION_CLIENT_SECRET",
    ),
    ("identity.http", "url", "IVRAUTH_HTTP_IDENTITY_URL"),
    ("simulate", "max_steps", "IVRAUTH_SIMULATE_MAX_STEPS"),
    ("simulate", "max_no_input", "IVRAUTH_SIMULATE_MAX_NO_INPUT"),
    (
        "simulate",
        "max_trace_entries",
        "IVRAUTH_SIMULATE_MAX_TRACE_ENTRIES",
    ),
    (
        "simulate",
        "max_duration_secs",
        "IVRAUTH_SIMULATE_MAX_DURATION_SECS",
    ),
    ("simulate", "identity", "IVRAUTH_SIMULATE_IDENTITY"),
    ("calls", "max_turns", "IVRAUTH_CALL_MAX_TURNS"),
    (
        "calls",
        "idle_timeout_secs",
        "IVRAUTH_CALL_IDLE_TIMEOUT_SECS",
    ),
    ("calls", "session_keys", "IVRAUTH_CALL_SESSION_KEYS"),
    ("calls", "public_url", "IVRAUTH_CALL_PUBLIC_URL"),
    ("twilio", "auth_token", "IVRAUTH_TWILIO_AUTH_TOKEN"),
    (
        "twilio",
        "previous_auth_token",
        "IVRAUTH_TWILIO_PREVIOUS_AUTH_TOKEN",
    ),
    ("twilio", "account_sids", "IVRAUTH_TWILIO_ACCOUNT_SIDS"),
    (
        "twilio",
        "skip_signature_check",
        "IVRAUTH_TWILIO_SKIP_SIGNATURE_CHECK",
    ),
    ("twilio", "workflow_sid", "IVRAUTH_TWILIO_WORKFLOW_SID"),
    ("twilio", "rest_username", "IVRAUTH_TWILIO_REST_USERNAME"),
    ("twilio", "rest_password", "IVRAUTH_TWILIO_REST_PASSWORD"),
    (
        "jambonz",
        "webhook_secret",
        "IVRAUTH_JAMBONZ_WEBHOOK_SECRET",
    ),
    (
        "jambonz",
        "previous_webhook_secret",
        "IVRAUTH_JAMBONZ_PREVIOUS_WEBHOOK_SECRET",
    ),
    (
        "jambonz",
        "skip_signature_check",
        "IVRAUTH_JAMBONZ_SKIP_SIGNATURE_CHECK",
    ),
    (
        "voicexml",
        "basic_username",
        "IVRAUTH_VOICEXML_BASIC_USERNAME",
    ),
    (
        "voicexml",
        "basic_password",
        "IVRAUTH_VOICEXML_BASIC_PASSWORD",
    ),
    (
        "voicexml",
        "previous_basic_password",
        "IVRAUTH_VOICEXML_PREVIOUS_BASIC_PASSWORD",
    ),
    (
        "voicexml",
        "allowed_sources",
        "IVRAUTH_VOICEXML_ALLOWED_SOURCES",
    ),
    (
        "voicexml",
        "trusted_proxies",
        "IVRAUTH_VOICEXML_TRUSTED_PROXIES",
    ),
];

/// The variables that take comma-separated lists.
const LIST_ENV: &[&str] = &[
    "IVRAUTH_CALL_SESSION_KEYS",
    "IVRAUTH_HTTP_ALLOWED_HOSTS",
    "IVRAUTH_TWILIO_ACCOUNT_SIDS",
    "IVRAUTH_VOICEXML_ALLOWED_SOURCES",
    "IVRAUTH_VOICEXML_TRUSTED_PROXIES",
];

#[test]
fn documented_environment_variables_keep_their_names_and_formats() {
    let keys = load::keys();
    for (section, name, var) in DOCUMENTED_ENV {
        assert_eq!(
            load::env_name(section, name).as_deref(),
            Some(*var),
            "[{section}] {name}"
        );
        let key = keys
            .iter()
            .find(|k| k.section == *section && k.name == *name)
            .unwrap_or_else(|| panic!("[{section}] {name} is not a key"));
        assert_eq!(key.list, LIST_ENV.contains(var), "{var}");
    }
    // Each list variable splits on commas, whatever the key.
    let (s, warnings) = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[
            ("IVRAUTH_TWILIO_ACCOUNT_SIDS", "AC1, AC2,"),
            ("IVRAUTH_VOICEXML_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8"),
            ("IVRAUTH_IDENTITY_HASH_T", " 3 "),
            ("IVRAUTH_IDENTITY_ACCOUNT_FOLD_CASE", "0"),
        ]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.twilio.account_sids, ["AC1", "AC2"]);
    assert_eq!(s.voicexml.trusted_proxies.len(), 2);
    assert_eq!(s.identity.hash_t, 3);
    assert!(!s.identity.account_fold_case);
}

#[test]
fn every_key_has_one_environment_variable_of_its_own() {
    let keys = load::keys();
    assert!(keys.len() > 80, "the walk found only {} keys", keys.len());
    let mut seen = std::collections::BTreeMap::new();
    for k in keys {
        let var = load::env_name(&k.section, &k.name)
            .unwrap_or_else(|| panic!("section [{}] has no environment prefix", k.section));
        for ignored in [
            "IVRAUTH_SERVER",
            "IVRAUTH_CLIENT_ID",
            "IVRAUTH_CLIENT_SECRET",
        ] {
            assert_ne!(var, ignored);
        }
        if let Some(other) = seen.insert(var.clone(), (&k.section, &k.name)) {
            panic!("{var} names both {other:?} and [{}] {}", k.section, k.name);
        }
    }
    // A key without a documented variable has one too, by the same rule.
    let (s, _) = load(
        &Flags::default(),
        Path::new("/nonexistent"),
        &env(&[("IVRAUTH_IDENTITY_LOCKOUT_MAX_FAILURES", "9")]),
    )
    .unwrap();
    assert_eq!(s.identity.lockout.max_failures, 9);
}

/// The `(section, key)` pairs `config.example.toml` documents, set or commented out.
fn example_keys() -> std::collections::BTreeSet<(String, String)> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let mut section = String::new();
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
            {
                section = name.to_owned();
            }
        } else if let Some((key, _)) = line.split_once(" = ") {
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                keys.insert((section.clone(), key.to_owned()));
            }
        }
    }
    keys
}

#[test]
fn the_example_documents_exactly_the_keys_of_the_structs() {
    let documented = example_keys();
    let defined: std::collections::BTreeSet<(String, String)> = load::keys()
        .iter()
        .map(|k| (k.section.clone(), k.name.clone()))
        .collect();
    assert!(defined.contains(&("calls".to_owned(), "session_keys".to_owned())));
    let undocumented: Vec<_> = defined.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from config.example.toml: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "config.example.toml documents keys no struct has: {unknown:?}"
    );
    let sections = load::sections();
    for s in ["identity.oauth2.pointers", "identity.lockout", "voicexml"] {
        assert!(sections.iter().any(|x| x == s), "{s} not in {sections:?}");
    }
}

#[test]
fn type_problems_never_echo_the_value() {
    const CANARY: &str = "Canary-Value-77";
    let errors = load_text(
        &format!(
            "[server]
listen = [\"{CANARY}\"]
max_connections = \"{CANARY}\"
[twilio]
auth_token = 918273645
skip_signature_check = \"{CANARY}\"
[identity.oauth2.pointers]
name = \"{CANARY}\"
"
        ),
        &env(&[
            ("IVRAUTH_IDENTITY_HASH_T", CANARY),
            ("IVRAUTH_TWILIO_PREVIOUS_AUTH_TOKEN", ""),
        ]),
    )
    .unwrap_err();
    let text = errors.to_string();
    for needle in [
        "[server] listen: expected a string",
        "[server] max_connections: expected an integer",
        "[twilio] auth_token: expected a string",
        "[twilio] skip_signature_check: expected true or false",
        "[identity.oauth2.pointers] name: expected a JSON pointer",
        "environment: IVRAUTH_IDENTITY_HASH_T: expected an integer",
        "environment: IVRAUTH_TWILIO_PREVIOUS_AUTH_TOKEN: must not be empty",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(errors.0.len(), 7, "{text}");
    assert!(
        !text.contains(CANARY) && !text.contains("918273645"),
        "{text}"
    );
}

#[test]
fn a_section_given_as_a_value_is_named() {
    let errors = load_text(
        "server = 5
[identity]
ldap = \"x\"
",
        &[],
    )
    .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("`server` must be a [server] section"),
        "{text}"
    );
    assert!(
        text.contains("`identity.ldap` must be a [identity.ldap] section"),
        "{text}"
    );
    assert_eq!(errors.0.len(), 2, "{text}");
}

#[test]
fn a_bad_value_in_the_file_is_reported_even_where_a_variable_overrides_it() {
    let errors = load_text(
        "[auth]\ntoken_ttl_secs = -5\n",
        &env(&[("IVRAUTH_TOKEN_TTL_SECS", "120")]),
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert!(
        errors.0[0].ends_with(
            "ivrauth.toml: [auth] token_ttl_secs: must be between 1 and 9223372036854775"
        ),
        "{errors}"
    );
    // A good file value is overridden silently.
    let (s, _) = load_text(
        "[auth]\ntoken_ttl_secs = 5\n",
        &env(&[("IVRAUTH_TOKEN_TTL_SECS", "120")]),
    )
    .unwrap();
    assert_eq!(s.auth.token_ttl_secs, 120);
}
