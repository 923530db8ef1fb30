//! Configuration layering: built-in defaults < the config file (`--config FILE`, or
//! `ivrauth.toml` in the working directory when present) < `IVRAUTH_*` environment variables
//! < command-line flags.
//!
//! Every problem in the file and the environment is collected, so start-up reports all of
//! them at once. `config.example.toml` at the repository root documents every key.
//!
//! The `[identity]` sections choose and configure the directory `identity.*` actions use.
//! A provider section (`[identity.ldap]`, `[identity.oauth2]`, `[identity.http]`) is checked
//! whenever it is present, selected or not, by building the provider from it (which contacts
//! nothing; `serve` checks the provider's health). Secrets (`bind_password`,
//! `client_secret`, ...) are held as [`Secret`] from the moment they are read, and no
//! problem message ever contains one.
//!
//! `[simulate]` bounds simulation runs and chooses what their identity actions reach
//! ([`SimulateSettings`]).
//!
//! `[calls]`, `[twilio]`, `[jambonz]` and `[voicexml]` configure call sessions and the
//! telephony front-ends ([`CallsSettings`], [`TwilioSettings`], [`JambonzSettings`],
//! [`VoiceXmlSettings`]); session keys are checked (base64, 32 bytes each) while loading, and
//! a problem names the entry by its position, never its content.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use ivrauth_connect::oauth2::Algorithm;
use ivrauth_connect::{
    HttpConfig, HttpIdentity, HttpIdentityConfig, LdapConfig, LdapDirectory, OAuth2Config,
    OAuth2Directory, ProfilePointers, TokenValidation,
};
use ivrauth_core::identity::{AccountRules, HashParams, IdentityError, LockoutPolicy};
use ivrauth_core::secret::Secret;
use ivrauth_server::calls::access::Cidr;
use ivrauth_server::calls::seal::{SealError, SessionKeys};
use ivrauth_server::calls::session::{CallsConfig, DEFAULT_MAX_TURNS};
use ivrauth_server::calls::web::{
    JambonzConfig, PlatformConfig, TwilioConfig, TwilioRest, VoiceXmlConfig,
};
use ivrauth_server::runtime::SimulateConfig;
use ivrauth_server::{ServeLimits, ServerConfig};

/// The config file looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "ivrauth.toml";

/// Default of `[auth] secret_rotation_overlap_secs`: a day. Only `ivrauth client
/// rotate-secret` reads it (the server just honours the expiry stored with the client).
pub const DEFAULT_SECRET_ROTATION_OVERLAP_SECS: u64 = 86_400;

/// Default of `[identity] min_verify_ms`: every verification takes at least this long.
pub const DEFAULT_MIN_VERIFY_MS: u64 = 300;

/// Default `timeout_ms` of the OAuth2 and HTTP identity providers (LDAP's default comes
/// from [`LdapConfig::new`], also 5 s).
pub const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 5_000;

/// Default of `[calls] idle_timeout_secs`: a call session idle for half an hour is over.
pub const DEFAULT_CALL_IDLE_TIMEOUT_SECS: u64 = 1_800;

/// Longest `[calls] idle_timeout_secs`: a day.
const MAX_CALL_IDLE_TIMEOUT_SECS: u64 = 86_400;

/// Most `[simulate] max_steps` and `max_trace_entries`.
const MAX_SIMULATE_STEPS: u32 = 100_000;

/// Most `[simulate] max_duration_secs`.
const MAX_SIMULATE_DURATION_SECS: u64 = 600;

/// Most `[calls] max_turns`.
const MAX_CALL_TURNS: u32 = 100_000;

/// Default of `[twilio] rest_base_url`.
pub const DEFAULT_TWILIO_REST_BASE_URL: &str = "https://api.twilio.com";

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
    /// `[server]` connection timeouts and cap.
    pub limits: ServeLimits,
    /// How long the previous secret keeps working after `client rotate-secret` (read by that
    /// command only).
    pub secret_rotation_overlap_secs: u64,
    /// `None`: flows may call any host; `Some(list)`: only these (empty: none).
    pub http_allowed_hosts: Option<Vec<String>>,
    /// The `[identity]` sections.
    pub identity: IdentitySettings,
    /// `[simulate]`: simulation runs.
    pub simulate: SimulateSettings,
    /// `[calls]`: call sessions.
    pub calls: CallsSettings,
    /// `[twilio]`: the Twilio front-end.
    pub twilio: TwilioSettings,
    /// `[jambonz]`: the jambonz front-end.
    pub jambonz: JambonzSettings,
    /// `[voicexml]`: who may reach the VoiceXML front-end.
    pub voicexml: VoiceXmlSettings,
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
            limits: server.limits,
            secret_rotation_overlap_secs: DEFAULT_SECRET_ROTATION_OVERLAP_SECS,
            http_allowed_hosts: None,
            identity: IdentitySettings::default(),
            simulate: SimulateSettings::default(),
            calls: CallsSettings::default(),
            twilio: TwilioSettings::default(),
            jambonz: JambonzSettings::default(),
            voicexml: VoiceXmlSettings::default(),
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
            simulate: self.simulate.to_config(),
            limits: self.limits,
        }
    }

    /// The call sessions' settings for the server, sealing with `keys` (the configured
    /// `[calls] session_keys`, or the data directory's generated key: see `serve`).
    pub fn calls_config(&self, keys: SessionKeys) -> CallsConfig {
        let twilio = &self.twilio;
        let jambonz = &self.jambonz;
        CallsConfig {
            keys,
            idle_secs: i64::try_from(self.calls.idle_timeout_secs).unwrap_or(i64::MAX),
            max_turns: self.calls.max_turns,
            platforms: PlatformConfig {
                public_url: self.calls.public_url.clone(),
                twilio: TwilioConfig {
                    auth_tokens: twilio
                        .auth_token
                        .iter()
                        .chain(&twilio.previous_auth_token)
                        .cloned()
                        .collect(),
                    skip_signature_check: twilio.skip_signature_check,
                    account_sids: twilio.account_sids.clone(),
                    workflow_sid: twilio.workflow_sid.clone(),
                    rest: twilio.rest(),
                },
                jambonz: JambonzConfig {
                    secrets: jambonz
                        .webhook_secret
                        .iter()
                        .chain(&jambonz.previous_webhook_secret)
                        .cloned()
                        .collect(),
                    skip_signature_check: jambonz.skip_signature_check,
                },
                voicexml: self.voicexml.config(),
            },
        }
    }
}

/// `[simulate]`. Each limit ends a run at once, with HTTP 200 and the limit named in
/// `outcome.error.code`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateSettings {
    /// Nodes one run may execute, all its prompts together (`step_limit_exceeded`).
    pub max_steps: u32,
    /// Prompts one run may answer with no input (`no_input_limit_exceeded`).
    pub max_no_input: u32,
    /// Trace entries one run may hold (`trace_limit_exceeded`).
    pub max_trace_entries: u32,
    /// Wall time of one run, in seconds (`time_limit_exceeded`).
    pub max_duration_secs: u64,
    /// What identity actions in simulations reach (`live`, `demo`, `off`).
    pub identity: SimulateIdentityMode,
}

/// `[simulate] identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimulateIdentityMode {
    /// The configured directory, limited per client as if the client were one caller.
    #[default]
    Live,
    /// Only the built-in demo accounts, never the live directory.
    Demo,
    /// Refused (403) like a missing `identity:simulate` scope.
    Off,
}

impl SimulateIdentityMode {
    const ALL: [SimulateIdentityMode; 3] = [
        SimulateIdentityMode::Live,
        SimulateIdentityMode::Demo,
        SimulateIdentityMode::Off,
    ];
    pub fn name(self) -> &'static str {
        match self {
            SimulateIdentityMode::Live => "live",
            SimulateIdentityMode::Demo => "demo",
            SimulateIdentityMode::Off => "off",
        }
    }
}

impl Default for SimulateSettings {
    fn default() -> Self {
        let c = SimulateConfig::default();
        SimulateSettings {
            max_steps: c.max_steps,
            max_no_input: c.max_no_input,
            max_trace_entries: c.max_trace_entries,
            max_duration_secs: c.max_duration_ms / 1000,
            identity: SimulateIdentityMode::Live,
        }
    }
}

impl SimulateSettings {
    /// The server's part of the section.
    pub fn to_config(&self) -> SimulateConfig {
        SimulateConfig {
            max_steps: self.max_steps,
            max_no_input: self.max_no_input,
            max_trace_entries: self.max_trace_entries,
            max_duration_ms: self.max_duration_secs.saturating_mul(1000),
        }
    }
}

/// `[calls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsSettings {
    /// A call session idle for longer is over (its sealed state no longer opens, and the
    /// periodic expiry closes its row).
    pub idle_timeout_secs: u64,
    /// Turns one call may take; the next one ends the call (`turn_limit_exceeded`).
    pub max_turns: u32,
    /// The session keys, base64 of 32 bytes each (checked while loading): the first seals,
    /// all open, so keys rotate by putting the new one first. Empty: `serve` generates a
    /// key once and keeps it in `DATA_DIR/call-session.key`.
    pub session_keys: Vec<Secret<String>>,
    /// The URL telephony platforms reach this server at (`https://ivr.example.com`), for
    /// callback URLs and Twilio's signed URL. `None`: `[server] public_url`, else rebuilt
    /// from each request's `Host` header.
    pub public_url: Option<String>,
}

impl Default for CallsSettings {
    fn default() -> Self {
        CallsSettings {
            idle_timeout_secs: DEFAULT_CALL_IDLE_TIMEOUT_SECS,
            max_turns: DEFAULT_MAX_TURNS,
            session_keys: Vec::new(),
            public_url: None,
        }
    }
}

impl CallsSettings {
    /// The configured key ring, `None` when no key is configured. Loading already checked
    /// the keys, so an error here means the settings were built by hand.
    pub fn configured_keys(&self) -> Option<Result<SessionKeys, SealError>> {
        if self.session_keys.is_empty() {
            return None;
        }
        let texts: Vec<&str> = self
            .session_keys
            .iter()
            .map(|k| k.expose().as_str())
            .collect();
        Some(SessionKeys::from_base64(&texts))
    }
}

/// `[twilio]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioSettings {
    /// The account's auth token, which signs Twilio's requests. With neither a token nor
    /// `skip_signature_check`, every Twilio request is refused (403).
    pub auth_token: Option<Secret<String>>,
    /// The previous auth token, accepted too while a rotation is under way.
    pub previous_auth_token: Option<Secret<String>>,
    /// If not empty, only requests from these Account SIDs are served.
    pub account_sids: Vec<String>,
    /// Development only: accept unsigned requests (`serve` warns loudly).
    pub skip_signature_check: bool,
    /// TaskRouter workflow for `<Enqueue>` with `<Task>` attributes.
    pub workflow_sid: Option<String>,
    /// Twilio's REST API (pauses call recording in secure segments).
    pub rest_base_url: String,
    /// The REST API's user: the Account SID or an API key SID.
    pub rest_username: Option<String>,
    pub rest_password: Option<Secret<String>>,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        TwilioSettings {
            auth_token: None,
            previous_auth_token: None,
            account_sids: Vec::new(),
            skip_signature_check: false,
            workflow_sid: None,
            rest_base_url: DEFAULT_TWILIO_REST_BASE_URL.to_owned(),
            rest_username: None,
            rest_password: None,
        }
    }
}

impl TwilioSettings {
    /// The REST API, when both its user name and password are set.
    pub fn rest(&self) -> Option<TwilioRest> {
        match (&self.rest_username, &self.rest_password) {
            (Some(username), Some(password)) => Some(TwilioRest {
                base_url: self.rest_base_url.clone(),
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }

    /// Whether Twilio's requests can be accepted at all.
    pub fn accepts_requests(&self) -> bool {
        self.auth_token.is_some() || self.skip_signature_check
    }
}

/// `[jambonz]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JambonzSettings {
    /// The webhook secret jambonz signs its requests with. With neither a secret nor
    /// `skip_signature_check`, every jambonz request is refused (403).
    pub webhook_secret: Option<Secret<String>>,
    /// The previous secret, accepted too while a rotation is under way.
    pub previous_webhook_secret: Option<Secret<String>>,
    /// Development only: accept unsigned requests (`serve` warns loudly).
    pub skip_signature_check: bool,
}

impl JambonzSettings {
    /// Whether jambonz's requests can be accepted at all.
    pub fn accepts_requests(&self) -> bool {
        self.webhook_secret.is_some() || self.skip_signature_check
    }
}

/// `[voicexml]`: the credentials VoiceXML platforms present. With none, every VoiceXML
/// request is refused (403); with both Basic credentials and an allow-list, a start request
/// must pass both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VoiceXmlSettings {
    /// The HTTP Basic user name start requests must present (with `basic_password`).
    pub basic_username: Option<String>,
    pub basic_password: Option<Secret<String>>,
    /// The previous password, accepted too while a rotation is under way.
    pub previous_basic_password: Option<Secret<String>>,
    /// Source addresses (CIDR ranges) every VoiceXML request must come from; empty: any.
    pub allowed_sources: Vec<Cidr>,
    /// Proxies whose `X-Forwarded-For` is believed; empty: the header is ignored.
    pub trusted_proxies: Vec<Cidr>,
}

impl VoiceXmlSettings {
    /// The server's part of these settings.
    pub fn config(&self) -> VoiceXmlConfig {
        VoiceXmlConfig {
            basic_username: self.basic_username.clone(),
            basic_passwords: self
                .basic_password
                .iter()
                .chain(&self.previous_basic_password)
                .cloned()
                .collect(),
            allowed_sources: self.allowed_sources.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// Whether VoiceXML requests can be accepted at all.
    pub fn accepts_requests(&self) -> bool {
        self.config().accepts_requests()
    }
}

/// Which directory `identity.*` actions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderKind {
    /// Accounts and PIN hashes in the store (`ivrauth account ...`).
    #[default]
    Builtin,
    Ldap,
    OAuth2,
    Http,
}

impl ProviderKind {
    const ALL: [ProviderKind; 4] = [
        ProviderKind::Builtin,
        ProviderKind::Ldap,
        ProviderKind::OAuth2,
        ProviderKind::Http,
    ];

    /// The name in the config (and the provider's `kind()`).
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Builtin => "builtin",
            ProviderKind::Ldap => "ldap",
            ProviderKind::OAuth2 => "oauth2",
            ProviderKind::Http => "http",
        }
    }

    /// For people: "the LDAP directory".
    pub fn describe(self) -> &'static str {
        match self {
            ProviderKind::Builtin => "built-in directory",
            ProviderKind::Ldap => "LDAP directory",
            ProviderKind::OAuth2 => "OAuth2 provider",
            ProviderKind::Http => "HTTP identity endpoint",
        }
    }

    /// Its section, for the providers that have one.
    fn section(self) -> Option<&'static str> {
        match self {
            ProviderKind::Builtin => None,
            ProviderKind::Ldap => Some("identity.ldap"),
            ProviderKind::OAuth2 => Some("identity.oauth2"),
            ProviderKind::Http => Some("identity.http"),
        }
    }
}

/// `[identity]` and its sub-sections.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySettings {
    pub provider: ProviderKind,
    /// Every verification is padded to at least this long (0: no padding).
    pub min_verify_ms: u64,
    /// argon2id parameters of new PIN hashes (built-in directory and `ivrauth account`).
    pub hash: HashParams,
    /// Hashes computed at once by the server; `None`: one per core.
    pub hash_pool_size: Option<usize>,
    pub lockout: LockoutPolicy,
    /// How account numbers are normalised (`account_fold_case`, `account_strip_separators`).
    pub account_rules: AccountRules,
    /// `identity.lookup` allowance per caller key (or simulating client) and hour.
    pub lookups_per_caller_per_hour: u32,
    /// Present when the file has an `[identity.ldap]` section or an `IVRAUTH_LDAP_*`
    /// variable is set; likewise for the other two.
    pub ldap: Option<LdapSettings>,
    pub oauth2: Option<OAuth2Settings>,
    pub http: Option<HttpIdentitySettings>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            provider: ProviderKind::Builtin,
            min_verify_ms: DEFAULT_MIN_VERIFY_MS,
            hash: HashParams::default(),
            hash_pool_size: None,
            lockout: LockoutPolicy::default(),
            account_rules: AccountRules::default(),
            lookups_per_caller_per_hour: ivrauth_server::identity::DEFAULT_LOOKUPS_PER_HOUR,
            ldap: None,
            oauth2: None,
            http: None,
        }
    }
}

impl IdentitySettings {
    pub fn min_verify_duration(&self) -> Duration {
        Duration::from_millis(self.min_verify_ms)
    }
}

/// A required key that is not set: its section and name.
type Missing = (&'static str, &'static str);

/// `[identity.ldap]`: [`LdapConfig`], with the required keys optional until checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LdapSettings {
    pub url: Option<String>,
    pub starttls: bool,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret<String>>,
    pub base_dn: Option<String>,
    pub filter: String,
    pub name_attr: String,
    pub greeting_attr: Option<String>,
    pub phone_attr: String,
    pub email_attr: String,
    pub timeout_ms: u64,
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for LdapSettings {
    /// The connector's own defaults.
    fn default() -> Self {
        let d = LdapConfig::new("", "", Secret::new(String::new()), "");
        LdapSettings {
            url: None,
            starttls: d.starttls,
            bind_dn: None,
            bind_password: None,
            base_dn: None,
            filter: d.filter.clone(),
            name_attr: d.name_attr.clone(),
            greeting_attr: d.greeting_attr.clone(),
            phone_attr: d.phone_attr.clone(),
            email_attr: d.email_attr.clone(),
            timeout_ms: u64::try_from(d.timeout.as_millis()).unwrap_or(u64::MAX),
            tls_ca_file: None,
        }
    }
}

impl LdapSettings {
    const SECTION: &'static str = "identity.ldap";

    /// The connector's config, or the required keys that are missing.
    pub fn to_config(&self) -> Result<LdapConfig, Vec<Missing>> {
        let s = Self::SECTION;
        let mut missing = Vec::new();
        let url = required(&self.url, (s, "url"), &mut missing);
        let bind_dn = required(&self.bind_dn, (s, "bind_dn"), &mut missing);
        let bind_password = required(&self.bind_password, (s, "bind_password"), &mut missing);
        let base_dn = required(&self.base_dn, (s, "base_dn"), &mut missing);
        let (Some(url), Some(bind_dn), Some(bind_password), Some(base_dn)) =
            (url, bind_dn, bind_password, base_dn)
        else {
            return Err(missing);
        };
        let mut c = LdapConfig::new(url, bind_dn, bind_password, base_dn);
        c.starttls = self.starttls;
        c.filter.clone_from(&self.filter);
        c.name_attr.clone_from(&self.name_attr);
        c.greeting_attr.clone_from(&self.greeting_attr);
        c.phone_attr.clone_from(&self.phone_attr);
        c.email_attr.clone_from(&self.email_attr);
        c.timeout = Duration::from_millis(self.timeout_ms);
        c.tls_ca_file.clone_from(&self.tls_ca_file);
        Ok(c)
    }

    /// The directory (checked, not contacted), or every problem.
    pub fn directory(&self) -> Result<LdapDirectory, Vec<String>> {
        let config = self.to_config().map_err(missing_problems)?;
        // LdapConfigError's text names the section's keys and never a secret.
        LdapDirectory::new(config).map_err(|e| vec![format!("[{}] {}", Self::SECTION, e.0)])
    }
}

/// How `[identity.oauth2]` checks access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenValidationKind {
    /// `[identity.oauth2.jwt]`.
    #[default]
    Jwt,
    /// `[identity.oauth2.introspection]`.
    Introspection,
}

/// `[identity.oauth2]`: [`OAuth2Config`], with the required keys optional until checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Settings {
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    pub mgmt_scope: Option<String>,
    pub audience: Option<String>,
    pub user_search_url_template: Option<String>,
    pub user_update_url_template: Option<String>,
    /// Default: `client_id`.
    pub login_client_id: Option<String>,
    /// Default: `client_secret`.
    pub login_client_secret: Option<Secret<String>>,
    pub login_scope: Option<String>,
    pub token_validation: TokenValidationKind,
    pub timeout_ms: u64,
    /// `[identity.oauth2.pointers]`, defaulting to the connector's (Auth0's answer).
    pub pointers: ProfilePointers,
    pub jwt: Option<JwtSettings>,
    pub introspection: Option<IntrospectionSettings>,
}

impl Default for OAuth2Settings {
    fn default() -> Self {
        OAuth2Settings {
            token_url: None,
            client_id: None,
            client_secret: None,
            mgmt_scope: None,
            audience: None,
            user_search_url_template: None,
            user_update_url_template: None,
            login_client_id: None,
            login_client_secret: None,
            login_scope: None,
            token_validation: TokenValidationKind::Jwt,
            timeout_ms: DEFAULT_PROVIDER_TIMEOUT_MS,
            pointers: ProfilePointers::default(),
            jwt: None,
            introspection: None,
        }
    }
}

/// `[identity.oauth2.jwt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            jwks_url: None,
            issuer: None,
            audience: None,
            algorithms: vec![Algorithm::RS256],
        }
    }
}

/// `[identity.oauth2.introspection]`; the client defaults to the management client.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntrospectionSettings {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
}

impl OAuth2Settings {
    const SECTION: &'static str = "identity.oauth2";
    const JWT: &'static str = "identity.oauth2.jwt";
    const INTROSPECTION: &'static str = "identity.oauth2.introspection";

    /// The connector's config, or the required keys that are missing.
    pub fn to_config(&self) -> Result<OAuth2Config, Vec<Missing>> {
        let s = Self::SECTION;
        let mut missing = Vec::new();
        let token_url = required(&self.token_url, (s, "token_url"), &mut missing);
        let client_id = required(&self.client_id, (s, "client_id"), &mut missing);
        let client_secret = required(&self.client_secret, (s, "client_secret"), &mut missing);
        let search = required(
            &self.user_search_url_template,
            (s, "user_search_url_template"),
            &mut missing,
        );
        let validation = match self.token_validation {
            TokenValidationKind::Jwt => {
                let j = self.jwt.clone().unwrap_or_default();
                let jwks_url = required(&j.jwks_url, (Self::JWT, "jwks_url"), &mut missing);
                let issuer = required(&j.issuer, (Self::JWT, "issuer"), &mut missing);
                let audience = required(&j.audience, (Self::JWT, "audience"), &mut missing);
                match (jwks_url, issuer, audience) {
                    (Some(jwks_url), Some(issuer), Some(audience)) => Some(TokenValidation::Jwt {
                        jwks_url,
                        issuer,
                        audience,
                        algorithms: j.algorithms,
                    }),
                    _ => None,
                }
            }
            TokenValidationKind::Introspection => {
                let i = self.introspection.clone().unwrap_or_default();
                let url = required(&i.url, (Self::INTROSPECTION, "url"), &mut missing);
                match (url, client_id.clone(), client_secret.clone()) {
                    (Some(url), Some(id), Some(secret)) => Some(TokenValidation::Introspection {
                        url,
                        client_id: i.client_id.unwrap_or(id),
                        client_secret: i.client_secret.unwrap_or(secret),
                    }),
                    _ => None,
                }
            }
        };
        let (Some(token_url), Some(client_id), Some(client_secret), Some(search), Some(validation)) =
            (token_url, client_id, client_secret, search, validation)
        else {
            return Err(missing);
        };
        Ok(OAuth2Config {
            token_url,
            login_client_id: self
                .login_client_id
                .clone()
                .unwrap_or_else(|| client_id.clone()),
            login_client_secret: self
                .login_client_secret
                .clone()
                .unwrap_or_else(|| client_secret.clone()),
            client_id,
            client_secret,
            mgmt_scope: self.mgmt_scope.clone(),
            audience: self.audience.clone(),
            user_search_url_template: search,
            user_update_url_template: self.user_update_url_template.clone(),
            pointers: self.pointers.clone(),
            login_scope: self.login_scope.clone(),
            token_validation: validation,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }

    /// The provider (checked, not contacted), or every problem.
    pub fn directory(&self) -> Result<OAuth2Directory, Vec<String>> {
        let config = self.to_config().map_err(missing_problems)?;
        OAuth2Directory::new(config).map_err(|e| vec![provider_problem(Self::SECTION, &e)])
    }
}

/// `[identity.http]`: [`HttpIdentityConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpIdentitySettings {
    pub url: Option<String>,
    pub health_url: Option<String>,
    pub timeout_ms: u64,
}

impl Default for HttpIdentitySettings {
    fn default() -> Self {
        HttpIdentitySettings {
            url: None,
            health_url: None,
            timeout_ms: DEFAULT_PROVIDER_TIMEOUT_MS,
        }
    }
}

impl HttpIdentitySettings {
    const SECTION: &'static str = "identity.http";

    pub fn to_config(&self) -> Result<HttpIdentityConfig, Vec<Missing>> {
        let mut missing = Vec::new();
        let Some(url) = required(&self.url, (Self::SECTION, "url"), &mut missing) else {
            return Err(missing);
        };
        Ok(HttpIdentityConfig {
            url,
            health_url: self.health_url.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }

    /// The provider (checked, not contacted), or every problem.
    pub fn directory(&self) -> Result<HttpIdentity, Vec<String>> {
        let config = self.to_config().map_err(missing_problems)?;
        HttpIdentity::new(config).map_err(|e| vec![provider_problem(Self::SECTION, &e)])
    }
}

/// `value`, or record `key` as missing.
fn required<T: Clone>(value: &Option<T>, key: Missing, missing: &mut Vec<Missing>) -> Option<T> {
    if value.is_none() {
        missing.push(key);
    }
    value.clone()
}

/// "[identity.ldap] url is required (or IVRAUTH_LDAP_URL)" for each missing key.
fn missing_problems(missing: Vec<Missing>) -> Vec<String> {
    missing
        .into_iter()
        .map(|(section, key)| {
            let env = spec(section, key)
                .and_then(|s| s.env)
                .map(|e| format!(" (or {e})"))
                .unwrap_or_default();
            format!("[{section}] {key} is required{env}")
        })
        .collect()
}

/// A connector's refusal of its configuration, without the "unavailable" prefix (the
/// connectors' messages name keys, never secrets).
fn provider_problem(section: &str, e: &IdentityError) -> String {
    match e {
        IdentityError::Unavailable(text) => format!("[{section}] {text}"),
        other => format!("[{section}] {other}"),
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

    /// A string that is not blank.
    fn text(&self) -> Result<String, String> {
        let s = self.string()?;
        if s.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(s)
    }

    /// A string; blank means "not set".
    fn optional_text(&self) -> Result<Option<String>, String> {
        let s = self.string()?;
        Ok((!s.trim().is_empty()).then_some(s))
    }

    /// A secret that is not empty. Problems never contain the value.
    fn secret(&self) -> Result<Secret<String>, String> {
        match self {
            Raw::Toml(toml::Value::String(s)) if !s.is_empty() => Ok(Secret::new(s.clone())),
            Raw::Env(s) if !s.is_empty() => Ok(Secret::new((*s).to_owned())),
            Raw::Toml(toml::Value::String(_)) | Raw::Env(_) => Err("must not be empty".to_owned()),
            Raw::Toml(v) => Err(format!("expected a string, found {}", v.type_str())),
        }
    }

    /// An absolute URL with one of `schemes`.
    fn url(&self, schemes: &[&str]) -> Result<String, String> {
        let s = self.text()?;
        let wanted = schemes.join(" or ");
        match url::Url::parse(s.trim()) {
            Ok(u) if schemes.contains(&u.scheme()) && u.has_host() => Ok(s.trim().to_owned()),
            _ => Err(format!("expected a {wanted} URL")),
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

    /// A limit in `1..=max`; 0 is refused by name (it would switch the limit off).
    fn limit(&self, max: u64) -> Result<u64, String> {
        match self.integer(0, max)? {
            0 => Err(format!(
                "must be at least 1: a limit of 0 would leave the server without it (largest: {max})"
            )),
            n => Ok(n),
        }
    }

    /// A connection timeout in whole seconds, `1..=3600`.
    fn limit_secs(&self) -> Result<Duration, String> {
        self.limit(MAX_CONNECTION_TIMEOUT_SECS)
            .map(Duration::from_secs)
    }

    fn u32_in(&self, min: u32, max: u32) -> Result<u32, String> {
        let n = self.integer(u64::from(min), u64::from(max))?;
        u32::try_from(n).map_err(|_| format!("must be between {min} and {max}"))
    }

    fn boolean(&self) -> Result<bool, String> {
        match self {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(v) => Err(format!("expected true or false, found {}", v.type_str())),
            Raw::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("expected true or false".to_owned()),
            },
        }
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

    /// A list of IP addresses and CIDR ranges; every bad entry is named.
    fn cidr_list(&self) -> Result<Vec<Cidr>, String> {
        let mut ranges = Vec::new();
        let mut bad = Vec::new();
        for entry in self.string_list()? {
            match entry.parse::<Cidr>() {
                Ok(c) => ranges.push(c),
                Err(e) => bad.push(e.to_string()),
            }
        }
        if bad.is_empty() {
            Ok(ranges)
        } else {
            Err(bad.join("; "))
        }
    }

    /// A JSON pointer; `required` ones may not be empty, others are unset by "".
    fn pointer(&self, required: bool) -> Result<Option<String>, String> {
        let s = self.string()?;
        let s = s.trim();
        if s.is_empty() {
            return if required {
                Err("must not be empty".to_owned())
            } else {
                Ok(None)
            };
        }
        if !s.starts_with('/') {
            return Err("expected a JSON pointer such as /0/name".to_owned());
        }
        Ok(Some(s.to_owned()))
    }
}

/// How one key is read.
type Apply = fn(&mut Settings, &Raw<'_>) -> Result<(), String>;

/// One configuration key: its section (dotted for sub-sections), name, environment
/// variable (if any) and how it is applied.
struct Spec {
    section: &'static str,
    key: &'static str,
    env: Option<&'static str>,
    apply: Apply,
}

const U32_MAX: u32 = u32::MAX;
const I64_MAX: u64 = i64::MAX as u64;
/// Longest provider timeout and verification padding: five minutes, one minute.
const MAX_TIMEOUT_MS: u64 = 300_000;
const MAX_MIN_VERIFY_MS: u64 = 60_000;
/// Connection timeouts up to an hour; connections up to a million.
const MAX_CONNECTION_TIMEOUT_SECS: u64 = 3600;
const MAX_CONNECTIONS: u64 = 1_000_000;
/// Lock periods up to a year.
const MAX_LOCK_SECS: u64 = 366 * 86_400;

fn ldap(s: &mut Settings) -> &mut LdapSettings {
    s.identity.ldap.get_or_insert_with(LdapSettings::default)
}

fn oauth2(s: &mut Settings) -> &mut OAuth2Settings {
    s.identity
        .oauth2
        .get_or_insert_with(OAuth2Settings::default)
}

fn jwt(s: &mut Settings) -> &mut JwtSettings {
    oauth2(s).jwt.get_or_insert_with(JwtSettings::default)
}

fn introspection(s: &mut Settings) -> &mut IntrospectionSettings {
    oauth2(s)
        .introspection
        .get_or_insert_with(IntrospectionSettings::default)
}

fn http_identity(s: &mut Settings) -> &mut HttpIdentitySettings {
    s.identity
        .http
        .get_or_insert_with(HttpIdentitySettings::default)
}

/// A section present in the file counts even when empty (it is then checked).
fn touch(settings: &mut Settings, section: &str) {
    match section {
        "identity.ldap" => {
            ldap(settings);
        }
        "identity.oauth2" | "identity.oauth2.pointers" => {
            oauth2(settings);
        }
        "identity.oauth2.jwt" => {
            jwt(settings);
        }
        "identity.oauth2.introspection" => {
            introspection(settings);
        }
        "identity.http" => {
            http_identity(settings);
        }
        _ => {}
    }
}

static KEYS: &[Spec] = &[
    // [server]
    Spec {
        section: "server",
        key: "listen",
        env: Some("IVRAUTH_LISTEN"),
        apply: |s, raw| {
            s.listen = raw
                .string()?
                .trim()
                .parse()
                .map_err(|_| "expected an address such as 127.0.0.1:8080".to_owned())?;
            Ok(())
        },
    },
    Spec {
        section: "server",
        key: "data_dir",
        env: Some("IVRAUTH_DATA_DIR"),
        apply: |s, raw| {
            s.data_dir = PathBuf::from(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "server",
        key: "public_url",
        env: Some("IVRAUTH_PUBLIC_URL"),
        apply: apply_public_url,
    },
    Spec {
        section: "server",
        key: "max_body_bytes",
        env: Some("IVRAUTH_MAX_BODY_BYTES"),
        apply: |s, raw| {
            let n = raw.integer(1024, 1024 * 1024 * 1024)?;
            s.max_body_bytes = usize::try_from(n).map_err(|_| "too large".to_owned())?;
            Ok(())
        },
    },
    Spec {
        section: "server",
        key: "header_read_timeout_secs",
        env: Some("IVRAUTH_HEADER_READ_TIMEOUT_SECS"),
        apply: |s, raw| {
            s.limits.header_read_timeout = raw.limit_secs()?;
            Ok(())
        },
    },
    Spec {
        section: "server",
        key: "body_timeout_secs",
        env: Some("IVRAUTH_BODY_TIMEOUT_SECS"),
        apply: |s, raw| {
            s.limits.body_timeout = raw.limit_secs()?;
            Ok(())
        },
    },
    Spec {
        section: "server",
        key: "idle_timeout_secs",
        env: Some("IVRAUTH_IDLE_TIMEOUT_SECS"),
        apply: |s, raw| {
            s.limits.idle_timeout = raw.limit_secs()?;
            Ok(())
        },
    },
    Spec {
        section: "server",
        key: "max_connections",
        env: Some("IVRAUTH_MAX_CONNECTIONS"),
        apply: |s, raw| {
            let n = raw.limit(MAX_CONNECTIONS)?;
            s.limits.max_connections = usize::try_from(n).map_err(|_| "too large".to_owned())?;
            Ok(())
        },
    },
    // [auth]
    Spec {
        section: "auth",
        key: "token_ttl_secs",
        env: Some("IVRAUTH_TOKEN_TTL_SECS"),
        apply: |s, raw| {
            s.token_ttl_secs = raw.integer(1, I64_MAX / 1000)?;
            Ok(())
        },
    },
    Spec {
        section: "auth",
        key: "rate_limit_per_sec",
        env: Some("IVRAUTH_RATE_LIMIT_PER_SEC"),
        apply: |s, raw| {
            s.rate_limit_per_sec = raw.u32_in(1, U32_MAX)?;
            Ok(())
        },
    },
    Spec {
        section: "auth",
        key: "rate_limit_burst",
        env: Some("IVRAUTH_RATE_LIMIT_BURST"),
        apply: |s, raw| {
            s.rate_limit_burst = raw.u32_in(1, U32_MAX)?;
            Ok(())
        },
    },
    Spec {
        section: "auth",
        key: "secret_rotation_overlap_secs",
        env: Some("IVRAUTH_SECRET_ROTATION_OVERLAP_SECS"),
        apply: |s, raw| {
            s.secret_rotation_overlap_secs = raw.integer(0, I64_MAX / 1000)?;
            Ok(())
        },
    },
    // [http]
    Spec {
        section: "http",
        key: "allowed_hosts",
        env: Some("IVRAUTH_HTTP_ALLOWED_HOSTS"),
        apply: apply_allowed_hosts,
    },
    // [identity]
    Spec {
        section: "identity",
        key: "provider",
        env: Some("IVRAUTH_IDENTITY_PROVIDER"),
        apply: |s, raw| {
            let name = raw.string()?;
            let name = name.trim();
            s.identity.provider = ProviderKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown provider {name:?} (expected one of {})",
                        ProviderKind::ALL
                            .iter()
                            .map(|k| format!("\"{}\"", k.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "min_verify_ms",
        env: Some("IVRAUTH_IDENTITY_MIN_VERIFY_MS"),
        apply: |s, raw| {
            s.identity.min_verify_ms = raw.integer(0, MAX_MIN_VERIFY_MS)?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "account_fold_case",
        env: Some("IVRAUTH_IDENTITY_ACCOUNT_FOLD_CASE"),
        apply: |s, raw| {
            s.identity.account_rules.fold_case = raw.boolean()?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "account_strip_separators",
        env: Some("IVRAUTH_IDENTITY_ACCOUNT_STRIP_SEPARATORS"),
        apply: |s, raw| {
            s.identity.account_rules.strip_separators = raw.boolean()?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "lookups_per_caller_per_hour",
        env: Some("IVRAUTH_IDENTITY_LOOKUPS_PER_CALLER_PER_HOUR"),
        apply: |s, raw| {
            s.identity.lookups_per_caller_per_hour = raw.u32_in(1, 1_000_000)?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "hash_m_kib",
        env: Some("IVRAUTH_IDENTITY_HASH_M_KIB"),
        apply: |s, raw| {
            // argon2 needs 8 KiB per lane at least; 4 GiB is far beyond any sane setting.
            s.identity.hash.m_kib = raw.u32_in(8, 4 * 1024 * 1024)?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "hash_t",
        env: Some("IVRAUTH_IDENTITY_HASH_T"),
        apply: |s, raw| {
            s.identity.hash.t = raw.u32_in(1, 100)?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "hash_p",
        env: Some("IVRAUTH_IDENTITY_HASH_P"),
        apply: |s, raw| {
            s.identity.hash.p = raw.u32_in(1, 64)?;
            Ok(())
        },
    },
    Spec {
        section: "identity",
        key: "hash_pool_size",
        env: Some("IVRAUTH_IDENTITY_HASH_POOL_SIZE"),
        apply: |s, raw| {
            let n = raw.integer(1, 1024)?;
            s.identity.hash_pool_size = Some(usize::try_from(n).map_err(|_| "too large")?);
            Ok(())
        },
    },
    // [identity.lockout]
    Spec {
        section: "identity.lockout",
        key: "max_failures",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.max_failures = raw.u32_in(1, 1000)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "lock_base_secs",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.base_lock_secs =
                i64::try_from(raw.integer(1, MAX_LOCK_SECS)?).unwrap_or(i64::MAX);
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "lock_max_secs",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.max_lock_secs =
                i64::try_from(raw.integer(1, MAX_LOCK_SECS)?).unwrap_or(i64::MAX);
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "permanent",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.permanent = raw.boolean()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "per_call_failures",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.per_call_failures = raw.u32_in(1, 100)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "per_ani_failures_per_hour",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.per_ani_failures_per_hour = raw.u32_in(1, 1_000_000)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "per_ani_accounts_per_hour",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.per_ani_accounts_per_hour = raw.u32_in(1, 1_000_000)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "withheld_failures_per_hour",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.withheld_failures_per_hour = raw.u32_in(1, 1_000_000)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.lockout",
        key: "withheld_accounts_per_hour",
        env: None,
        apply: |s, raw| {
            s.identity.lockout.withheld_accounts_per_hour = raw.u32_in(1, 1_000_000)?;
            Ok(())
        },
    },
    // [identity.ldap]
    Spec {
        section: "identity.ldap",
        key: "url",
        env: Some("IVRAUTH_LDAP_URL"),
        apply: |s, raw| {
            ldap(s).url = Some(raw.url(&["ldap", "ldaps"])?);
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "starttls",
        env: None,
        apply: |s, raw| {
            ldap(s).starttls = raw.boolean()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "bind_dn",
        env: Some("IVRAUTH_LDAP_BIND_DN"),
        apply: |s, raw| {
            ldap(s).bind_dn = Some(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "bind_password",
        env: Some("IVRAUTH_LDAP_BIND_PASSWORD"),
        apply: |s, raw| {
            ldap(s).bind_password = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "base_dn",
        env: Some("IVRAUTH_LDAP_BASE_DN"),
        apply: |s, raw| {
            ldap(s).base_dn = Some(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "filter",
        env: None,
        apply: |s, raw| {
            ldap(s).filter = raw.text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "name_attr",
        env: None,
        apply: |s, raw| {
            ldap(s).name_attr = raw.text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "greeting_attr",
        env: None,
        apply: |s, raw| {
            ldap(s).greeting_attr = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "phone_attr",
        env: None,
        apply: |s, raw| {
            ldap(s).phone_attr = raw.text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "email_attr",
        env: None,
        apply: |s, raw| {
            ldap(s).email_attr = raw.text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "timeout_ms",
        env: None,
        apply: |s, raw| {
            ldap(s).timeout_ms = raw.integer(1, MAX_TIMEOUT_MS)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.ldap",
        key: "tls_ca_file",
        env: None,
        apply: |s, raw| {
            ldap(s).tls_ca_file = raw.optional_text()?.map(PathBuf::from);
            Ok(())
        },
    },
    // [identity.oauth2]
    Spec {
        section: "identity.oauth2",
        key: "token_url",
        env: None,
        apply: |s, raw| {
            oauth2(s).token_url = Some(raw.url(&["https", "http"])?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "client_id",
        env: None,
        apply: |s, raw| {
            oauth2(s).client_id = Some(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "client_secret",
        env: Some("IVRAUTH_OAUTH2_CLIENT_SECRET"),
        apply: |s, raw| {
            oauth2(s).client_secret = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "mgmt_scope",
        env: None,
        apply: |s, raw| {
            oauth2(s).mgmt_scope = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "audience",
        env: None,
        apply: |s, raw| {
            oauth2(s).audience = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "user_search_url_template",
        env: None,
        apply: |s, raw| {
            oauth2(s).user_search_url_template = Some(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "user_update_url_template",
        env: None,
        apply: |s, raw| {
            oauth2(s).user_update_url_template = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "login_client_id",
        env: None,
        apply: |s, raw| {
            oauth2(s).login_client_id = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "login_client_secret",
        env: Some("IVRAUTH_OAUTH2_LOGIN_CLIENT_SECRET"),
        apply: |s, raw| {
            oauth2(s).login_client_secret = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "login_scope",
        env: None,
        apply: |s, raw| {
            oauth2(s).login_scope = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "token_validation",
        env: None,
        apply: |s, raw| {
            oauth2(s).token_validation = match raw.string()?.trim() {
                "jwt" => TokenValidationKind::Jwt,
                "introspection" => TokenValidationKind::Introspection,
                other => {
                    return Err(format!(
                        "unknown token validation {other:?} (expected \"jwt\" or \"introspection\")"
                    ))
                }
            };
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2",
        key: "timeout_ms",
        env: None,
        apply: |s, raw| {
            oauth2(s).timeout_ms = raw.integer(1, MAX_TIMEOUT_MS)?;
            Ok(())
        },
    },
    // [identity.oauth2.jwt]
    Spec {
        section: "identity.oauth2.jwt",
        key: "jwks_url",
        env: None,
        apply: |s, raw| {
            jwt(s).jwks_url = Some(raw.url(&["https", "http"])?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.jwt",
        key: "issuer",
        env: None,
        apply: |s, raw| {
            jwt(s).issuer = Some(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.jwt",
        key: "audience",
        env: None,
        apply: |s, raw| {
            jwt(s).audience = Some(raw.text()?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.jwt",
        key: "algorithms",
        env: None,
        apply: apply_algorithms,
    },
    // [identity.oauth2.introspection]
    Spec {
        section: "identity.oauth2.introspection",
        key: "url",
        env: None,
        apply: |s, raw| {
            introspection(s).url = Some(raw.url(&["https", "http"])?);
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.introspection",
        key: "client_id",
        env: None,
        apply: |s, raw| {
            introspection(s).client_id = raw.optional_text()?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.introspection",
        key: "client_secret",
        env: Some("IVRAUTH_OAUTH2_INTROSPECTION_CLIENT_SECRET"),
        apply: |s, raw| {
            introspection(s).client_secret = Some(raw.secret()?);
            Ok(())
        },
    },
    // [identity.oauth2.pointers]
    Spec {
        section: "identity.oauth2.pointers",
        key: "login_name",
        env: None,
        apply: |s, raw| {
            if let Some(p) = raw.pointer(true)? {
                oauth2(s).pointers.login_name = p;
            }
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "user_id",
        env: None,
        apply: |s, raw| {
            if let Some(p) = raw.pointer(true)? {
                oauth2(s).pointers.user_id = p;
            }
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "account",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.account = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "name",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.name = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "greeting",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.greeting = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "phone",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.phone = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "email",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.email = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "phone_verified",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.phone_verified = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "email_verified",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.email_verified = raw.pointer(false)?;
            Ok(())
        },
    },
    Spec {
        section: "identity.oauth2.pointers",
        key: "blocked",
        env: None,
        apply: |s, raw| {
            oauth2(s).pointers.blocked = raw.pointer(false)?;
            Ok(())
        },
    },
    // [identity.http]
    Spec {
        section: "identity.http",
        key: "url",
        env: Some("IVRAUTH_HTTP_IDENTITY_URL"),
        apply: |s, raw| {
            http_identity(s).url = Some(raw.url(&["https", "http"])?);
            Ok(())
        },
    },
    Spec {
        section: "identity.http",
        key: "health_url",
        env: None,
        apply: |s, raw| {
            http_identity(s).health_url = match raw.optional_text()? {
                None => None,
                Some(_) => Some(raw.url(&["https", "http"])?),
            };
            Ok(())
        },
    },
    Spec {
        section: "identity.http",
        key: "timeout_ms",
        env: None,
        apply: |s, raw| {
            http_identity(s).timeout_ms = raw.integer(1, MAX_TIMEOUT_MS)?;
            Ok(())
        },
    },
    // [simulate]
    Spec {
        section: "simulate",
        key: "max_steps",
        env: Some("IVRAUTH_SIMULATE_MAX_STEPS"),
        apply: |s, raw| {
            s.simulate.max_steps = raw.u32_in(1, MAX_SIMULATE_STEPS)?;
            Ok(())
        },
    },
    Spec {
        section: "simulate",
        key: "max_no_input",
        env: Some("IVRAUTH_SIMULATE_MAX_NO_INPUT"),
        apply: |s, raw| {
            s.simulate.max_no_input = raw.u32_in(0, MAX_SIMULATE_STEPS)?;
            Ok(())
        },
    },
    Spec {
        section: "simulate",
        key: "max_trace_entries",
        env: Some("IVRAUTH_SIMULATE_MAX_TRACE_ENTRIES"),
        apply: |s, raw| {
            s.simulate.max_trace_entries = raw.u32_in(1, MAX_SIMULATE_STEPS)?;
            Ok(())
        },
    },
    Spec {
        section: "simulate",
        key: "max_duration_secs",
        env: Some("IVRAUTH_SIMULATE_MAX_DURATION_SECS"),
        apply: |s, raw| {
            s.simulate.max_duration_secs = raw.integer(1, MAX_SIMULATE_DURATION_SECS)?;
            Ok(())
        },
    },
    Spec {
        section: "simulate",
        key: "identity",
        env: Some("IVRAUTH_SIMULATE_IDENTITY"),
        apply: |s, raw| {
            let name = raw.string()?;
            let name = name.trim();
            s.simulate.identity = SimulateIdentityMode::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .ok_or_else(|| {
                    format!("unknown mode {name:?} (expected \"live\", \"demo\" or \"off\")")
                })?;
            Ok(())
        },
    },
    // [calls]
    Spec {
        section: "calls",
        key: "max_turns",
        env: Some("IVRAUTH_CALL_MAX_TURNS"),
        apply: |s, raw| {
            s.calls.max_turns = raw.u32_in(1, MAX_CALL_TURNS)?;
            Ok(())
        },
    },
    Spec {
        section: "calls",
        key: "idle_timeout_secs",
        env: Some("IVRAUTH_CALL_IDLE_TIMEOUT_SECS"),
        apply: |s, raw| {
            s.calls.idle_timeout_secs = raw.integer(1, MAX_CALL_IDLE_TIMEOUT_SECS)?;
            Ok(())
        },
    },
    Spec {
        section: "calls",
        key: "session_keys",
        env: Some("IVRAUTH_CALL_SESSION_KEYS"),
        apply: apply_session_keys,
    },
    Spec {
        section: "calls",
        key: "public_url",
        env: Some("IVRAUTH_CALL_PUBLIC_URL"),
        apply: |s, raw| {
            s.calls.public_url = match raw.optional_text()? {
                None => None,
                Some(_) => Some(
                    raw.url(&["https", "http"])?
                        .trim_end_matches('/')
                        .to_owned(),
                ),
            };
            Ok(())
        },
    },
    // [twilio]
    Spec {
        section: "twilio",
        key: "auth_token",
        env: Some("IVRAUTH_TWILIO_AUTH_TOKEN"),
        apply: |s, raw| {
            s.twilio.auth_token = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "previous_auth_token",
        env: Some("IVRAUTH_TWILIO_PREVIOUS_AUTH_TOKEN"),
        apply: |s, raw| {
            s.twilio.previous_auth_token = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "account_sids",
        env: Some("IVRAUTH_TWILIO_ACCOUNT_SIDS"),
        apply: |s, raw| {
            let sids = raw.string_list()?;
            if sids
                .iter()
                .any(|sid| sid.trim().is_empty() || sid.chars().any(char::is_whitespace))
            {
                return Err("entries must be Account SIDs (AC...), without spaces".to_owned());
            }
            s.twilio.account_sids = sids;
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "skip_signature_check",
        env: Some("IVRAUTH_TWILIO_SKIP_SIGNATURE_CHECK"),
        apply: |s, raw| {
            s.twilio.skip_signature_check = raw.boolean()?;
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "workflow_sid",
        env: Some("IVRAUTH_TWILIO_WORKFLOW_SID"),
        apply: |s, raw| {
            s.twilio.workflow_sid = raw.optional_text()?.map(|t| t.trim().to_owned());
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "rest_base_url",
        env: None,
        apply: |s, raw| {
            let url = raw.url(&["https", "http"])?;
            if !ivrauth_core::http::secure_transport(&url) {
                return Err(
                    "must be https (plain http only to a loopback address): the REST password is sent to it"
                        .to_owned(),
                );
            }
            s.twilio.rest_base_url = url.trim_end_matches('/').to_owned();
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "rest_username",
        env: Some("IVRAUTH_TWILIO_REST_USERNAME"),
        apply: |s, raw| {
            s.twilio.rest_username = Some(raw.text()?.trim().to_owned());
            Ok(())
        },
    },
    Spec {
        section: "twilio",
        key: "rest_password",
        env: Some("IVRAUTH_TWILIO_REST_PASSWORD"),
        apply: |s, raw| {
            s.twilio.rest_password = Some(raw.secret()?);
            Ok(())
        },
    },
    // [jambonz]
    Spec {
        section: "jambonz",
        key: "webhook_secret",
        env: Some("IVRAUTH_JAMBONZ_WEBHOOK_SECRET"),
        apply: |s, raw| {
            s.jambonz.webhook_secret = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "jambonz",
        key: "previous_webhook_secret",
        env: Some("IVRAUTH_JAMBONZ_PREVIOUS_WEBHOOK_SECRET"),
        apply: |s, raw| {
            s.jambonz.previous_webhook_secret = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "jambonz",
        key: "skip_signature_check",
        env: Some("IVRAUTH_JAMBONZ_SKIP_SIGNATURE_CHECK"),
        apply: |s, raw| {
            s.jambonz.skip_signature_check = raw.boolean()?;
            Ok(())
        },
    },
    // [voicexml]
    Spec {
        section: "voicexml",
        key: "basic_username",
        env: Some("IVRAUTH_VOICEXML_BASIC_USERNAME"),
        apply: |s, raw| {
            let user = raw.text()?;
            if user.contains(':') {
                return Err("must not contain `:` (HTTP Basic separates the user name from the password with it)".to_owned());
            }
            s.voicexml.basic_username = Some(user);
            Ok(())
        },
    },
    Spec {
        section: "voicexml",
        key: "basic_password",
        env: Some("IVRAUTH_VOICEXML_BASIC_PASSWORD"),
        apply: |s, raw| {
            s.voicexml.basic_password = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "voicexml",
        key: "previous_basic_password",
        env: Some("IVRAUTH_VOICEXML_PREVIOUS_BASIC_PASSWORD"),
        apply: |s, raw| {
            s.voicexml.previous_basic_password = Some(raw.secret()?);
            Ok(())
        },
    },
    Spec {
        section: "voicexml",
        key: "allowed_sources",
        env: Some("IVRAUTH_VOICEXML_ALLOWED_SOURCES"),
        apply: |s, raw| {
            s.voicexml.allowed_sources = raw.cidr_list()?;
            Ok(())
        },
    },
    Spec {
        section: "voicexml",
        key: "trusted_proxies",
        env: Some("IVRAUTH_VOICEXML_TRUSTED_PROXIES"),
        apply: |s, raw| {
            s.voicexml.trusted_proxies = raw.cidr_list()?;
            Ok(())
        },
    },
];

fn spec(section: &str, key: &str) -> Option<&'static Spec> {
    KEYS.iter().find(|s| s.section == section && s.key == key)
}

fn is_section(name: &str) -> bool {
    KEYS.iter().any(|s| s.section == name)
}

fn apply_public_url(settings: &mut Settings, raw: &Raw<'_>) -> Result<(), String> {
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
    Ok(())
}

/// `[calls] session_keys`: every entry must decode to 32 bytes. Problems name the entry by
/// its position (from 1), never its content.
fn apply_session_keys(settings: &mut Settings, raw: &Raw<'_>) -> Result<(), String> {
    let entries: Vec<Secret<String>> = raw.string_list()?.into_iter().map(Secret::new).collect();
    let count = entries.len();
    let texts: Vec<&str> = entries.iter().map(|k| k.expose().as_str()).collect();
    match SessionKeys::from_base64(&texts) {
        Ok(_) => {
            settings.calls.session_keys = entries;
            Ok(())
        }
        Err(e) => Err(session_key_problem(&e, count)),
    }
}

fn session_key_problem(e: &SealError, count: usize) -> String {
    const HINT: &str =
        "each entry is 32 random bytes in base64, such as the output of `openssl rand -base64 32`";
    match *e {
        SealError::NoKeys => format!(
            "must list at least one key (leave the key out to use a key generated in the data directory); {HINT}"
        ),
        SealError::KeyEncoding { index } => format!(
            "entry #{} of {count} is not base64; {HINT}",
            index + 1
        ),
        SealError::KeyLength { index, len } => format!(
            "entry #{} of {count} decodes to {len} bytes, not 32; {HINT}",
            index + 1
        ),
        SealError::DuplicateKey { index } => format!(
            "entry #{} of {count} repeats an earlier entry",
            index + 1
        ),
        other => other.to_string(),
    }
}

fn apply_allowed_hosts(settings: &mut Settings, raw: &Raw<'_>) -> Result<(), String> {
    let hosts = raw.string_list()?;
    if hosts.iter().any(|h| h == "*") {
        if hosts.len() > 1 {
            return Err("\"*\" (any host) cannot be combined with other entries".to_owned());
        }
        settings.http_allowed_hosts = None;
    } else {
        let bad: Vec<String> = hosts
            .iter()
            .filter_map(|h| HttpConfig::check_allowed_host(h).err())
            .map(|e| e.to_string())
            .collect();
        if !bad.is_empty() {
            return Err(bad.join("; "));
        }
        settings.http_allowed_hosts = Some(hosts);
    }
    Ok(())
}

fn apply_algorithms(settings: &mut Settings, raw: &Raw<'_>) -> Result<(), String> {
    let names = raw.string_list()?;
    if names.is_empty() {
        return Err("must list at least one algorithm".to_owned());
    }
    let mut algorithms = Vec::new();
    for name in &names {
        let alg =
            Algorithm::from_str(name.trim()).map_err(|_| format!("unknown algorithm {name:?}"))?;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(format!(
                "{name} is symmetric; only RS*, PS*, ES* and EdDSA are accepted"
            ));
        }
        algorithms.push(alg);
    }
    jwt(settings).algorithms = algorithms;
    Ok(())
}

/// What is being loaded, and every problem found so far.
struct Loading {
    settings: Settings,
    problems: Vec<String>,
    /// Sections with a key that could not be applied: their cross-checks are skipped, so one
    /// mistake is reported once.
    bad_sections: HashSet<&'static str>,
}

impl Loading {
    fn apply(&mut self, spec: &'static Spec, raw: &Raw<'_>, name: impl FnOnce(String) -> String) {
        if let Err(e) = (spec.apply)(&mut self.settings, raw) {
            self.problems.push(name(e));
            self.bad_sections.insert(spec.section);
        }
    }

    /// Apply one table of a TOML document at `path` ("" for the document itself); problems
    /// are named `origin: [section] key: ...`.
    fn apply_table(&mut self, path: &str, table: &toml::Table, origin: &str) {
        for (name, value) in table {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if is_section(&child) {
                match value.as_table() {
                    Some(t) => {
                        touch(&mut self.settings, &child);
                        self.apply_table(&child, t, origin);
                    }
                    None => self
                        .problems
                        .push(format!("{origin}: `{child}` must be a [{child}] section")),
                }
            } else if let Some(spec) = spec(path, name) {
                self.apply(spec, &Raw::Toml(value), |e| {
                    format!("{origin}: [{path}] {name}: {e}")
                });
            } else if value.is_table() {
                self.problems
                    .push(format!("{origin}: unknown section [{child}]"));
            } else if path.is_empty() {
                self.problems.push(format!(
                    "{origin}: unknown key `{name}` (keys belong in [server], [auth], [http], [identity], [simulate], [calls], [twilio], [jambonz] or [voicexml])"
                ));
            } else {
                self.problems
                    .push(format!("{origin}: [{path}] unknown key `{name}`"));
            }
        }
    }

    fn apply_file(&mut self, text: &str, origin: &str) {
        match text.parse::<toml::Table>() {
            Ok(table) => self.apply_table("", &table, origin),
            Err(e) => self
                .problems
                .push(format!("{origin}: not valid TOML: {}", e.message())),
        }
    }

    /// Apply `IVRAUTH_*` variables from `env`. Unknown `IVRAUTH_*` names are returned as
    /// warnings (other tools may share the prefix), except those of the `flow` commands
    /// (`IVRAUTH_SERVER`, `IVRAUTH_CLIENT_ID`, `IVRAUTH_CLIENT_SECRET`), which users export.
    fn apply_env(&mut self, env: &[(String, String)]) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, value) in env {
            if !name.starts_with("IVRAUTH_") || FLOW_COMMAND_VARS.contains(&name.as_str()) {
                continue;
            }
            match KEYS.iter().find(|s| s.env == Some(name.as_str())) {
                Some(spec) => self.apply(spec, &Raw::Env(value), |e| {
                    format!("environment: {name}: {e}")
                }),
                None => warnings.push(format!("ignoring unknown environment variable {name}")),
            }
        }
        warnings
    }

    fn section_ok(&self, prefix: &str) -> bool {
        !self.bad_sections.iter().any(|s| s.starts_with(prefix))
    }

    /// Checks across keys of `[twilio]`, `[jambonz]` and `[voicexml]`: a previous secret
    /// needs a current one, and the Twilio REST API and VoiceXML's Basic credentials need
    /// both their user name and password.
    fn check_calls(&mut self) {
        let t = &self.settings.twilio;
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
        let j = &self.settings.jambonz;
        if self.section_ok("jambonz")
            && j.previous_webhook_secret.is_some()
            && j.webhook_secret.is_none()
        {
            problems.push(
                "[jambonz] previous_webhook_secret is set but webhook_secret is not (or IVRAUTH_JAMBONZ_WEBHOOK_SECRET): during a rotation, webhook_secret is the new secret".to_owned(),
            );
        }
        let v = &self.settings.voicexml;
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
    fn check_identity(&mut self) {
        let id = &self.settings.identity;
        let mut problems = Vec::new();
        if self.section_ok("identity.lockout")
            && id.lockout.max_lock_secs < id.lockout.base_lock_secs
        {
            problems.push(
                "[identity.lockout] lock_max_secs must not be less than lock_base_secs".to_owned(),
            );
        }
        if !self.bad_sections.contains("identity")
            && u64::from(id.hash.m_kib) < 8 * u64::from(id.hash.p)
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
    let mut loading = Loading {
        settings: Settings::default(),
        problems: Vec::new(),
        bad_sections: HashSet::new(),
    };

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
            Ok(text) => loading.apply_file(&text, &origin),
            Err(e) => loading
                .problems
                .push(format!("{origin}: cannot read the config file: {e}")),
        }
    }

    let warnings = loading.apply_env(env);
    loading.check_identity();
    loading.check_calls();

    let Loading {
        mut settings,
        problems,
        ..
    } = loading;
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
            s.limits,
            ServeLimits {
                header_read_timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(20),
                idle_timeout: Duration::from_secs(90),
                max_connections: 10_000,
            }
        );
        assert_eq!(s.server_config(false).limits, s.limits);

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
            s.http_allowed_hosts,
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

    fn load_text(
        text: &str,
        e: &[(String, String)],
    ) -> Result<(Settings, Vec<String>), ConfigErrors> {
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
            id.hash,
            HashParams {
                m_kib: 19_456,
                t: 2,
                p: 1
            }
        );
        assert_eq!(id.hash_pool_size, None);
        let l = id.lockout;
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
            id.hash,
            HashParams {
                m_kib: 1024,
                t: 1,
                p: 2
            }
        );
        assert_eq!(id.hash_pool_size, Some(3));
        assert_eq!(
            id.lockout,
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
            let errors =
                load_text(&format!("[identity]\nprovider = \"{name}\"\n"), &[]).unwrap_err();
            assert_eq!(
                errors.0,
                vec![format!(
                    "[identity] provider = \"{name}\" needs an [{section}] section"
                )]
            );
        }
        // An empty section is present, and checked.
        let errors =
            load_text("[identity]\nprovider = \"ldap\"\n[identity.ldap]\n", &[]).unwrap_err();
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
        assert!(s.identity.account_rules.fold_case);
        assert!(!s.identity.account_rules.strip_separators);
        let (s, _) = load_text(
            "[simulate]\nidentity = \"demo\"\n[identity]\naccount_fold_case = false\naccount_strip_separators = true\nlookups_per_caller_per_hour = 7\n",
            &env(&[("IVRAUTH_SIMULATE_IDENTITY", "off")]),
        )
        .unwrap();
        assert_eq!(s.simulate.identity, SimulateIdentityMode::Off);
        assert!(!s.identity.account_rules.fold_case);
        assert!(s.identity.account_rules.strip_separators);
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
            &format!("[voicexml]\nbasic_password = \"{CANARY}\"\nprevious_basic_password = \"{CANARY}\"\n"),
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
}
