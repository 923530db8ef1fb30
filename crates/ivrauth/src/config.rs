//! Configuration: one `Deserialize` struct per section of `config.example.toml`, its
//! defaults in its `Default`, each key documented on its field. Loading and layering
//! (defaults < file < `IVRAUTH_*` < flags) and the rendering of problems are in [`load`];
//! how each kind of value is read is in `fields`.
//!
//! Adding an option is adding a field (with `deserialize_with` saying how it is read, and
//! a doc comment), its default, and its documented line in `config.example.toml` (a test
//! checks the file and the structs list the same keys). Its environment variable follows
//! from its section and name (see [`load::env_name`]).
//!
//! Secrets (`bind_password`, `client_secret`, ...) are held as [`Secret`] from the moment
//! they are read, and no problem message ever contains one. A provider section
//! (`[identity.ldap]`, `[identity.oauth2]`, `[identity.http]`) is checked whenever it is
//! present, selected or not, by building the provider from it (which contacts nothing;
//! `serve` checks the provider's health). Session keys are checked (base64, 32 bytes each)
//! while loading, and a problem names the entry by its position, never its content.

mod fields;
pub mod load;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ivrauth_connect::oauth2::Algorithm;
use ivrauth_connect::{
    HttpIdentity, HttpIdentityConfig, LdapConfig, LdapDirectory, OAuth2Config, OAuth2Directory,
    ProfilePointers, TokenValidation,
};
use ivrauth_core::identity::{AccountRules, HashParams, IdentityError, LockoutPolicy};
use ivrauth_core::secret::Secret;
use ivrauth_server::app::seal::{SealError, SessionKeys};
use ivrauth_server::app::simulate::SimulateConfig;
use ivrauth_server::app::turn::DEFAULT_MAX_TURNS;
use ivrauth_server::calls::jambonz::JambonzConfig;
use ivrauth_server::calls::twilio::{TwilioConfig, TwilioRest};
use ivrauth_server::calls::vxml::access::Cidr;
use ivrauth_server::calls::vxml::VoiceXmlConfig;
use ivrauth_server::calls::PlatformConfig;
use ivrauth_server::CallsConfig;
use ivrauth_server::{ServeLimits, ServerConfig};
use serde::{Deserialize, Deserializer};

pub use load::{load, process_env, Flags};

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

/// Default of `[twilio] rest_base_url`.
pub const DEFAULT_TWILIO_REST_BASE_URL: &str = "https://api.twilio.com";

/// Everything the binary can be configured with: one field per section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub http: HttpSettings,
    pub identity: IdentitySettings,
    pub simulate: SimulateSettings,
    pub calls: CallsSettings,
    pub twilio: TwilioSettings,
    pub jambonz: JambonzSettings,
    pub voicexml: VoiceXmlSettings,
}

impl Settings {
    /// The HTTP server's part of the settings.
    pub fn server_config(&self, demo: bool) -> ServerConfig {
        ServerConfig {
            token_ttl_secs: self.auth.token_ttl_secs,
            rate_limit_per_sec: self.auth.rate_limit_per_sec,
            rate_limit_burst: self.auth.rate_limit_burst,
            max_body_bytes: self.server.max_body_bytes,
            demo,
            public_base_url: self.server.public_url.clone(),
            simulate: self.simulate.to_config(),
            limits: self.server.limits(),
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

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to listen on (port 0: any free port). Flag: `--listen`.
    #[serde(deserialize_with = "fields::address")]
    pub listen: SocketAddr,
    /// The store's and the generated keys' directory. Flag: `--data-dir`.
    #[serde(deserialize_with = "fields::path")]
    pub data_dir: PathBuf,
    /// The URL clients reach this server at, when it differs from the listen address.
    #[serde(deserialize_with = "fields::public_url")]
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes (1 KiB to 1 GiB).
    #[serde(deserialize_with = "fields::between::<_, _, 1024, 1_073_741_824>")]
    pub max_body_bytes: usize,
    /// Seconds a request's head may take to arrive whole (1 to 3600).
    #[serde(deserialize_with = "fields::limit::<_, _, 3600>")]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may take after its head (1 to 3600).
    #[serde(deserialize_with = "fields::limit::<_, _, 3600>")]
    pub body_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request (1 to 3600).
    #[serde(deserialize_with = "fields::limit::<_, _, 3600>")]
    pub idle_timeout_secs: u64,
    /// Connections open at once (1 to 1000000).
    #[serde(deserialize_with = "fields::limit::<_, _, 1_000_000>")]
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let server = ServerConfig::default();
        let limits = server.limits;
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            max_body_bytes: server.max_body_bytes,
            header_read_timeout_secs: limits.header_read_timeout.as_secs(),
            body_timeout_secs: limits.body_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            max_connections: limits.max_connections,
        }
    }
}

impl ServerSettings {
    /// The connection timeouts and cap.
    pub fn limits(&self) -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Lifetime of issued access tokens, in seconds.
    #[serde(deserialize_with = "fields::between::<_, _, 1, { i64::MAX as u64 / 1000 }>")]
    pub token_ttl_secs: u64,
    /// Sustained requests per second each API client may make.
    #[serde(deserialize_with = "fields::between::<_, _, 1, { u32::MAX as u64 }>")]
    pub rate_limit_per_sec: u32,
    /// Requests a client may make in a burst before the sustained rate applies.
    #[serde(deserialize_with = "fields::between::<_, _, 1, { u32::MAX as u64 }>")]
    pub rate_limit_burst: u32,
    /// How long the previous secret keeps working after `client rotate-secret`, in seconds
    /// (read by that command only).
    #[serde(deserialize_with = "fields::between::<_, _, 0, { i64::MAX as u64 / 1000 }>")]
    pub secret_rotation_overlap_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        let server = ServerConfig::default();
        AuthSettings {
            token_ttl_secs: server.token_ttl_secs,
            rate_limit_per_sec: server.rate_limit_per_sec,
            rate_limit_burst: server.rate_limit_burst,
            secret_rotation_overlap_secs: DEFAULT_SECRET_ROTATION_OVERLAP_SECS,
        }
    }
}

/// `[http]`: flow `http` nodes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// `None` (`["*"]`): flows may call any host; `Some(list)`: only these (empty: none).
    #[serde(deserialize_with = "fields::allowed_hosts")]
    pub allowed_hosts: Option<Vec<String>>,
}

/// `[simulate]`. Each limit ends a run at once, with HTTP 200 and the limit named in
/// `outcome.error.code`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulateSettings {
    /// Nodes one run may execute, all its prompts together (`step_limit_exceeded`).
    #[serde(deserialize_with = "fields::between::<_, _, 1, 100_000>")]
    pub max_steps: u32,
    /// Prompts one run may answer with no input (`no_input_limit_exceeded`).
    #[serde(deserialize_with = "fields::between::<_, _, 0, 100_000>")]
    pub max_no_input: u32,
    /// Trace entries one run may hold (`trace_limit_exceeded`).
    #[serde(deserialize_with = "fields::between::<_, _, 1, 100_000>")]
    pub max_trace_entries: u32,
    /// Wall time of one run, in seconds (`time_limit_exceeded`).
    #[serde(deserialize_with = "fields::between::<_, _, 1, 600>")]
    pub max_duration_secs: u64,
    /// What identity actions in simulations reach (`live`, `demo`, `off`).
    pub identity: SimulateIdentityMode,
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

impl<'de> Deserialize<'de> for SimulateIdentityMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::one_of(d, &Self::ALL, Self::name, "mode")
    }
}

/// `[calls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsSettings {
    /// A call session idle for longer is over (its sealed state no longer opens, and the
    /// periodic expiry closes its row); 1 to 86400 seconds.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 86_400>")]
    pub idle_timeout_secs: u64,
    /// Turns one call may take; the next one ends the call (`turn_limit_exceeded`).
    #[serde(deserialize_with = "fields::between::<_, _, 1, 100_000>")]
    pub max_turns: u32,
    /// The session keys, base64 of 32 bytes each (checked while loading): the first seals,
    /// all open, so keys rotate by putting the new one first. Empty: `serve` generates a
    /// key once and keeps it in `DATA_DIR/call-session.key`.
    #[serde(deserialize_with = "fields::session_keys")]
    pub session_keys: Vec<Secret<String>>,
    /// The URL telephony platforms reach this server at (`https://ivr.example.com`), for
    /// callback URLs and Twilio's signed URL. `None`: `[server] public_url`, else rebuilt
    /// from each request's `Host` header.
    #[serde(deserialize_with = "fields::optional_base_url")]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioSettings {
    /// The account's auth token, which signs Twilio's requests. With neither a token nor
    /// `skip_signature_check`, every Twilio request is refused (403).
    #[serde(deserialize_with = "fields::secret")]
    pub auth_token: Option<Secret<String>>,
    /// The previous auth token, accepted too while a rotation is under way.
    #[serde(deserialize_with = "fields::secret")]
    pub previous_auth_token: Option<Secret<String>>,
    /// If not empty, only requests from these Account SIDs are served.
    #[serde(deserialize_with = "fields::account_sids")]
    pub account_sids: Vec<String>,
    /// Development only: accept unsigned requests (`serve` warns loudly).
    #[serde(deserialize_with = "fields::boolean")]
    pub skip_signature_check: bool,
    /// TaskRouter workflow for `<Enqueue>` with `<Task>` attributes.
    #[serde(deserialize_with = "fields::optional_trimmed")]
    pub workflow_sid: Option<String>,
    /// Twilio's REST API (pauses call recording in secure segments); https, or http to a
    /// loopback address.
    #[serde(deserialize_with = "fields::rest_base_url")]
    pub rest_base_url: String,
    /// The REST API's user: the Account SID or an API key SID.
    #[serde(deserialize_with = "fields::some_trimmed")]
    pub rest_username: Option<String>,
    /// The REST API's password (the auth token or the API key's secret).
    #[serde(deserialize_with = "fields::secret")]
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
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JambonzSettings {
    /// The webhook secret jambonz signs its requests with. With neither a secret nor
    /// `skip_signature_check`, every jambonz request is refused (403).
    #[serde(deserialize_with = "fields::secret")]
    pub webhook_secret: Option<Secret<String>>,
    /// The previous secret, accepted too while a rotation is under way.
    #[serde(deserialize_with = "fields::secret")]
    pub previous_webhook_secret: Option<Secret<String>>,
    /// Development only: accept unsigned requests (`serve` warns loudly).
    #[serde(deserialize_with = "fields::boolean")]
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
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceXmlSettings {
    /// The HTTP Basic user name start requests must present (with `basic_password`).
    #[serde(deserialize_with = "fields::basic_username")]
    pub basic_username: Option<String>,
    /// The HTTP Basic password start requests must present.
    #[serde(deserialize_with = "fields::secret")]
    pub basic_password: Option<Secret<String>>,
    /// The previous password, accepted too while a rotation is under way.
    #[serde(deserialize_with = "fields::secret")]
    pub previous_basic_password: Option<Secret<String>>,
    /// Source addresses (CIDR ranges) every VoiceXML request must come from; empty: any.
    #[serde(deserialize_with = "fields::cidrs")]
    pub allowed_sources: Vec<Cidr>,
    /// Proxies whose `X-Forwarded-For` is believed; empty: the header is ignored.
    #[serde(deserialize_with = "fields::cidrs")]
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
            ProviderKind::Ldap => Some(LdapSettings::SECTION),
            ProviderKind::OAuth2 => Some(OAuth2Settings::SECTION),
            ProviderKind::Http => Some(HttpIdentitySettings::SECTION),
        }
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::one_of(d, &Self::ALL, Self::name, "provider")
    }
}

/// `[identity]` and its sub-sections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySettings {
    /// The directory `identity.*` actions use.
    pub provider: ProviderKind,
    /// Every verification is padded to at least this long, in milliseconds (0: no padding).
    #[serde(deserialize_with = "fields::between::<_, _, 0, 60_000>")]
    pub min_verify_ms: u64,
    /// Account numbers: lowercase letters (`AB12` and `ab12` are one account).
    #[serde(deserialize_with = "fields::boolean")]
    pub account_fold_case: bool,
    /// Account numbers: remove spaces, `-` and `.`.
    #[serde(deserialize_with = "fields::boolean")]
    pub account_strip_separators: bool,
    /// `identity.lookup` allowance per caller key (or simulating client) and hour.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 1_000_000>")]
    pub lookups_per_caller_per_hour: u32,
    /// argon2id memory of new PIN hashes, in KiB (argon2 needs 8 KiB per lane at least;
    /// 4 GiB is far beyond any sane setting).
    #[serde(deserialize_with = "fields::between::<_, _, 8, 4_194_304>")]
    pub hash_m_kib: u32,
    /// argon2id passes of new PIN hashes.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 100>")]
    pub hash_t: u32,
    /// argon2id lanes of new PIN hashes.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 64>")]
    pub hash_p: u32,
    /// Hashes computed at once by the server; `None`: one per core.
    #[serde(deserialize_with = "fields::some_between::<_, _, 1, 1024>")]
    pub hash_pool_size: Option<usize>,
    /// How far past the padding (`min_verify_ms`) a queued verification may still be
    /// answered, in milliseconds.
    #[serde(deserialize_with = "fields::between::<_, _, 0, 60_000>")]
    pub hash_queue_margin_ms: u64,
    /// Verifications that may wait for a hash at once; `None`: 32 per pooled hash.
    #[serde(deserialize_with = "fields::some_between::<_, _, 1, 1_000_000>")]
    pub hash_queue_max_waiting: Option<usize>,
    /// `[identity.lockout]`.
    pub lockout: LockoutSettings,
    /// Present when the file has an `[identity.ldap]` section or an `IVRAUTH_LDAP_*`
    /// variable is set; likewise for the other two.
    pub ldap: Option<LdapSettings>,
    pub oauth2: Option<OAuth2Settings>,
    pub http: Option<HttpIdentitySettings>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        let hash = HashParams::default();
        let rules = AccountRules::default();
        IdentitySettings {
            provider: ProviderKind::Builtin,
            min_verify_ms: DEFAULT_MIN_VERIFY_MS,
            account_fold_case: rules.fold_case,
            account_strip_separators: rules.strip_separators,
            lookups_per_caller_per_hour: ivrauth_server::app::identity::DEFAULT_LOOKUPS_PER_HOUR,
            hash_m_kib: hash.m_kib,
            hash_t: hash.t,
            hash_p: hash.p,
            hash_pool_size: None,
            hash_queue_margin_ms: u64::try_from(
                ivrauth_store::hashpool::DEFAULT_MARGIN.as_millis(),
            )
            .unwrap_or(u64::MAX),
            hash_queue_max_waiting: None,
            lockout: LockoutSettings::default(),
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

    /// argon2id parameters of new PIN hashes (built-in directory and `ivrauth account`).
    pub fn hash(&self) -> HashParams {
        HashParams {
            m_kib: self.hash_m_kib,
            t: self.hash_t,
            p: self.hash_p,
        }
    }

    /// How account numbers are normalised.
    pub fn account_rules(&self) -> AccountRules {
        AccountRules {
            fold_case: self.account_fold_case,
            strip_separators: self.account_strip_separators,
        }
    }
}

/// `[identity.lockout]`: [`LockoutPolicy`] under the file's names.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutSettings {
    /// Consecutive failed verifications that lock an account.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 1000>")]
    pub max_failures: u32,
    /// First lock period in seconds (up to a year); each further lock doubles it.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 31_622_400>")]
    pub lock_base_secs: i64,
    /// Longest lock period in seconds (up to a year).
    #[serde(deserialize_with = "fields::between::<_, _, 1, 31_622_400>")]
    pub lock_max_secs: i64,
    /// Lock until an operator unlocks, instead of for a period.
    #[serde(deserialize_with = "fields::boolean")]
    pub permanent: bool,
    /// Failed secrets allowed in one call.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 100>")]
    pub per_call_failures: u32,
    /// Failures allowed per caller number per hour.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 1_000_000>")]
    pub per_ani_failures_per_hour: u32,
    /// Distinct accounts a caller number may try per hour.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 1_000_000>")]
    pub per_ani_accounts_per_hour: u32,
    /// Failures per hour of all calls with a withheld caller number together.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 1_000_000>")]
    pub withheld_failures_per_hour: u32,
    /// Distinct accounts per hour of all calls with a withheld caller number together.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 1_000_000>")]
    pub withheld_accounts_per_hour: u32,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        let p = LockoutPolicy::default();
        LockoutSettings {
            max_failures: p.max_failures,
            lock_base_secs: p.base_lock_secs,
            lock_max_secs: p.max_lock_secs,
            permanent: p.permanent,
            per_call_failures: p.per_call_failures,
            per_ani_failures_per_hour: p.per_ani_failures_per_hour,
            per_ani_accounts_per_hour: p.per_ani_accounts_per_hour,
            withheld_failures_per_hour: p.withheld_failures_per_hour,
            withheld_accounts_per_hour: p.withheld_accounts_per_hour,
        }
    }
}

impl LockoutSettings {
    /// The core's policy.
    pub fn policy(&self) -> LockoutPolicy {
        LockoutPolicy {
            max_failures: self.max_failures,
            base_lock_secs: self.lock_base_secs,
            max_lock_secs: self.lock_max_secs,
            permanent: self.permanent,
            per_call_failures: self.per_call_failures,
            per_ani_failures_per_hour: self.per_ani_failures_per_hour,
            per_ani_accounts_per_hour: self.per_ani_accounts_per_hour,
            withheld_failures_per_hour: self.withheld_failures_per_hour,
            withheld_accounts_per_hour: self.withheld_accounts_per_hour,
        }
    }
}

/// A required key that is not set: its section and name.
type Missing = (&'static str, &'static str);

/// `[identity.ldap]`: [`LdapConfig`], with the required keys optional until checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapSettings {
    /// Required: `ldaps://host[:port]`, or `ldap://` with `starttls` (or to loopback).
    #[serde(deserialize_with = "fields::ldap_url")]
    pub url: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS first.
    #[serde(deserialize_with = "fields::boolean")]
    pub starttls: bool,
    /// Required: the service account that searches and changes secrets.
    #[serde(deserialize_with = "fields::some_text")]
    pub bind_dn: Option<String>,
    /// Required: the service account's password.
    #[serde(deserialize_with = "fields::secret")]
    pub bind_password: Option<Secret<String>>,
    /// Required: where accounts are searched.
    #[serde(deserialize_with = "fields::some_text")]
    pub base_dn: Option<String>,
    /// The search filter; `{account}` is replaced by the account number, escaped.
    #[serde(deserialize_with = "fields::text")]
    pub filter: String,
    /// Attribute of the caller's name.
    #[serde(deserialize_with = "fields::text")]
    pub name_attr: String,
    /// Attribute of the greeting; blank: the first word of the name.
    #[serde(deserialize_with = "fields::optional_text")]
    pub greeting_attr: Option<String>,
    /// Attribute of the phone number.
    #[serde(deserialize_with = "fields::text")]
    pub phone_attr: String,
    /// Attribute of the e-mail address.
    #[serde(deserialize_with = "fields::text")]
    pub email_attr: String,
    /// Bound on each operation as a whole, in milliseconds.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 300_000>")]
    pub timeout_ms: u64,
    /// PEM file of the CA certificates to trust; `None`: the system's roots.
    #[serde(deserialize_with = "fields::optional_path")]
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
    pub(crate) const SECTION: &'static str = "identity.ldap";

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

impl TokenValidationKind {
    fn name(self) -> &'static str {
        match self {
            TokenValidationKind::Jwt => "jwt",
            TokenValidationKind::Introspection => "introspection",
        }
    }
}

impl<'de> Deserialize<'de> for TokenValidationKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::one_of(
            d,
            &[TokenValidationKind::Jwt, TokenValidationKind::Introspection],
            Self::name,
            "token validation",
        )
    }
}

/// `[identity.oauth2]`: [`OAuth2Config`], with the required keys optional until checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuth2Settings {
    /// Required: the token endpoint, for the management and the login client.
    #[serde(deserialize_with = "fields::web_url")]
    pub token_url: Option<String>,
    /// Required: the management client.
    #[serde(deserialize_with = "fields::some_text")]
    pub client_id: Option<String>,
    /// Required: the management client's secret.
    #[serde(deserialize_with = "fields::secret")]
    pub client_secret: Option<Secret<String>>,
    /// `scope` asked for with the management token.
    #[serde(deserialize_with = "fields::optional_text")]
    pub mgmt_scope: Option<String>,
    /// `audience` asked for with the management token.
    #[serde(deserialize_with = "fields::optional_text")]
    pub audience: Option<String>,
    /// Required: the user search URL (`{account}` is replaced).
    #[serde(deserialize_with = "fields::some_text")]
    pub user_search_url_template: Option<String>,
    /// The user update URL for PIN changes (`{user_id}` is replaced).
    #[serde(deserialize_with = "fields::optional_text")]
    pub user_update_url_template: Option<String>,
    /// The client of the password grant. Default: `client_id`.
    #[serde(deserialize_with = "fields::optional_text")]
    pub login_client_id: Option<String>,
    /// Its secret. Default: `client_secret`.
    #[serde(deserialize_with = "fields::secret")]
    pub login_client_secret: Option<Secret<String>>,
    /// `scope` asked for in the password grant.
    #[serde(deserialize_with = "fields::optional_text")]
    pub login_scope: Option<String>,
    /// How the password grant's access token is checked.
    pub token_validation: TokenValidationKind,
    /// Timeout of each request, connection included, in milliseconds.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 300_000>")]
    pub timeout_ms: u64,
    /// `[identity.oauth2.pointers]`, defaulting to the connector's (Auth0's answer).
    pub pointers: PointerSettings,
    /// `[identity.oauth2.jwt]`.
    pub jwt: Option<JwtSettings>,
    /// `[identity.oauth2.introspection]`.
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
            pointers: PointerSettings::default(),
            jwt: None,
            introspection: None,
        }
    }
}

/// `[identity.oauth2.pointers]`: JSON pointers into the user search answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PointerSettings {
    /// Required: the password grant's `username`.
    #[serde(deserialize_with = "fields::pointer")]
    pub login_name: String,
    /// Required: the user id the update URL takes.
    #[serde(deserialize_with = "fields::pointer")]
    pub user_id: String,
    /// When set, the value there must equal the account number searched for.
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub account: Option<String>,
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub name: Option<String>,
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub greeting: Option<String>,
    /// Kept only when it is an E.164 number.
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub phone: Option<String>,
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub email: Option<String>,
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub phone_verified: Option<String>,
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub email_verified: Option<String>,
    /// `true` there disables the account.
    #[serde(deserialize_with = "fields::optional_pointer")]
    pub blocked: Option<String>,
}

impl Default for PointerSettings {
    fn default() -> Self {
        let p = ProfilePointers::default();
        PointerSettings {
            login_name: p.login_name,
            user_id: p.user_id,
            account: p.account,
            name: p.name,
            greeting: p.greeting,
            phone: p.phone,
            email: p.email,
            phone_verified: p.phone_verified,
            email_verified: p.email_verified,
            blocked: p.blocked,
        }
    }
}

impl PointerSettings {
    /// The connector's pointers.
    pub fn to_pointers(&self) -> ProfilePointers {
        ProfilePointers {
            login_name: self.login_name.clone(),
            user_id: self.user_id.clone(),
            account: self.account.clone(),
            name: self.name.clone(),
            greeting: self.greeting.clone(),
            phone: self.phone.clone(),
            email: self.email.clone(),
            phone_verified: self.phone_verified.clone(),
            email_verified: self.email_verified.clone(),
            blocked: self.blocked.clone(),
        }
    }
}

/// `[identity.oauth2.jwt]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// Required: the provider's key set.
    #[serde(deserialize_with = "fields::web_url")]
    pub jwks_url: Option<String>,
    /// Required: the tokens' `iss`.
    #[serde(deserialize_with = "fields::some_text")]
    pub issuer: Option<String>,
    /// Required: the tokens' `aud`.
    #[serde(deserialize_with = "fields::some_text")]
    pub audience: Option<String>,
    /// Accepted signature algorithms: asymmetric ones only.
    #[serde(deserialize_with = "fields::algorithms")]
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
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntrospectionSettings {
    /// Required: the RFC 7662 endpoint.
    #[serde(deserialize_with = "fields::web_url")]
    pub url: Option<String>,
    /// The client that authenticates to it.
    #[serde(deserialize_with = "fields::optional_text")]
    pub client_id: Option<String>,
    /// Its secret.
    #[serde(deserialize_with = "fields::secret")]
    pub client_secret: Option<Secret<String>>,
}

impl OAuth2Settings {
    pub(crate) const SECTION: &'static str = "identity.oauth2";
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
            pointers: self.pointers.to_pointers(),
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpIdentitySettings {
    /// Required: https, or http to a loopback host.
    #[serde(deserialize_with = "fields::web_url")]
    pub url: Option<String>,
    /// GET here must answer 2xx at start-up.
    #[serde(deserialize_with = "fields::optional_web_url")]
    pub health_url: Option<String>,
    /// Timeout of each request, connection included, in milliseconds.
    #[serde(deserialize_with = "fields::between::<_, _, 1, 300_000>")]
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
    pub(crate) const SECTION: &'static str = "identity.http";

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
            let env = load::env_name(section, key)
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
