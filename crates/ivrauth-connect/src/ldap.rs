//! An LDAP directory (OpenLDAP, 389-ds, Active Directory, ...) as an [`IdentityProvider`].
//!
//! [`LdapDirectory`] finds a caller's entry by searching under `base_dn` with a configured
//! filter such as `(employeeNumber={account})`, binding as a service account; it verifies a
//! secret by binding as the entry's DN with it; it changes a secret with the Password Modify
//! extended operation (RFC 3062) as the service account; and its health check is a service
//! bind plus a base search. It speaks `ldap://` (optionally upgraded with StartTLS) or
//! `ldaps://`, with rustls (no native TLS); plain `ldap://` without StartTLS is accepted only
//! to a loopback host, as passwords cross the connection.
//!
//! Rules it keeps:
//! - An empty secret is refused (`Rejected(EmptySecret)`) before any connection: an LDAP
//!   simple bind with a DN and an empty password is an *unauthenticated* bind, which many
//!   servers answer with success.
//! - The account number is escaped per RFC 4515 ([`escape_filter_value`]) before it goes
//!   into the filter, although [`AccountNumber`] already refuses every special character.
//! - A filter matching several entries is treated as not found (with a warning that names
//!   neither the account nor the filter value).
//! - Every call is bounded by [`LdapConfig::timeout`] as a whole (connect, TLS, binds,
//!   searches), and the connect by it too.
//! - Secrets are only exposed where they are handed to `ldap3`; nothing logged or returned
//!   contains them. Errors (`Unavailable`) carry the operation, the result code and the
//!   server's diagnostic text, for operators.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use ivrauth_core::identity::{
    default_greeting, AccountNumber, AccountStatus, IdentityError, IdentityProvider, Profile,
    RejectReason, Verification,
};
use ivrauth_core::secret::Secret;

/// The placeholder in [`LdapConfig::filter`] replaced by the escaped account number.
pub const ACCOUNT_PLACEHOLDER: &str = "{account}";

/// LDAP result code `invalidCredentials`.
const INVALID_CREDENTIALS: u32 = 49;
/// `constraintViolation`: password-policy lockout on some servers (389-ds, ppolicy).
const CONSTRAINT_VIOLATION: u32 = 19;
/// `unwillingToPerform`: an inactivated or expired account on some servers.
const UNWILLING_TO_PERFORM: u32 = 53;
/// LDAP result code `sizeLimitExceeded` (we ask for at most two entries).
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// How to reach and read a directory.
#[derive(Clone, Debug)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything else is sent.
    pub starttls: bool,
    /// The service account that searches (and changes secrets).
    pub bind_dn: String,
    pub bind_password: Secret<String>,
    /// Where accounts are searched (subtree).
    pub base_dn: String,
    /// Search filter with an `{account}` placeholder, e.g. `(employeeNumber={account})`.
    pub filter: String,
    /// The display name attribute (default `cn`).
    pub name_attr: String,
    /// The greeting attribute (default `givenName`); without it, or when the entry lacks
    /// it, the first word of the name.
    pub greeting_attr: Option<String>,
    /// Default `telephoneNumber`.
    pub phone_attr: String,
    /// Default `mail`.
    pub email_attr: String,
    /// Bound on each call as a whole (default 5 s).
    pub timeout: Duration,
    /// PEM file of the CA(s) to trust for TLS instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

impl LdapConfig {
    /// A config with the defaults named on each field: filter `(employeeNumber={account})`,
    /// no StartTLS, system CA roots, 5 s timeout.
    pub fn new(
        url: impl Into<String>,
        bind_dn: impl Into<String>,
        bind_password: Secret<String>,
        base_dn: impl Into<String>,
    ) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            starttls: false,
            bind_dn: bind_dn.into(),
            bind_password,
            base_dn: base_dn.into(),
            filter: "(employeeNumber={account})".to_owned(),
            name_attr: "cn".to_owned(),
            greeting_attr: Some("givenName".to_owned()),
            phone_attr: "telephoneNumber".to_owned(),
            email_attr: "mail".to_owned(),
            timeout: Duration::from_secs(5),
            tls_ca_file: None,
        }
    }
}

/// Why an [`LdapConfig`] was refused by [`LdapDirectory::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfigError(pub String);

impl fmt::Display for LdapConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid LDAP configuration: {}", self.0)
    }
}

impl std::error::Error for LdapConfigError {}

fn config_err(msg: impl Into<String>) -> LdapConfigError {
    LdapConfigError(msg.into())
}

/// Escape a value for use inside an LDAP search filter (RFC 4515): `*`, `(`, `)`, `\` and
/// NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`, and every non-ASCII byte of the UTF-8
/// encoding becomes `\XX` (lowercase hex).
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => push_hex(&mut out, b),
            b if !b.is_ascii() => push_hex(&mut out, b),
            b => out.push(char::from(b)),
        }
    }
    out
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// `template` with every `{account}` replaced by `value`, escaped.
pub fn render_filter(template: &str, value: &str) -> String {
    template.replace(ACCOUNT_PLACEHOLDER, &escape_filter_value(value))
}

/// An LDAP directory as an identity provider (`kind() == "ldap"`).
pub struct LdapDirectory {
    config: LdapConfig,
    /// The rustls config for `ldaps://` or StartTLS (None for plain loopback `ldap://`).
    tls: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl LdapDirectory {
    /// Check the config (URL scheme, transport security, filter syntax and placeholder,
    /// non-empty service credentials and base, a timeout) and load the TLS trust roots.
    /// Nothing is contacted: [`IdentityProvider::health`] does that.
    pub fn new(config: LdapConfig) -> Result<LdapDirectory, LdapConfigError> {
        let url = url::Url::parse(&config.url)
            .map_err(|e| config_err(format!("url {:?}: {e}", config.url)))?;
        let tls_url = match url.scheme() {
            "ldaps" => true,
            "ldap" => false,
            other => {
                return Err(config_err(format!(
                    "url scheme must be ldap or ldaps, not {other:?}"
                )))
            }
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(config_err("url has no host"));
        };
        if tls_url && config.starttls {
            return Err(config_err(
                "starttls is for ldap:// urls; ldaps:// is TLS already",
            ));
        }
        let tls = tls_url || config.starttls;
        if !tls && !is_loopback(host) {
            return Err(config_err(
                "plain ldap:// sends passwords in clear text: use ldaps:// or starttls \
                 (plain is allowed to loopback hosts only)",
            ));
        }
        if config.bind_dn.trim().is_empty() || config.bind_password.expose().is_empty() {
            return Err(config_err(
                "bind_dn and bind_password are required (an empty password binds anonymously)",
            ));
        }
        if config.base_dn.trim().is_empty() {
            return Err(config_err("base_dn is empty"));
        }
        if !config.filter.contains(ACCOUNT_PLACEHOLDER) {
            return Err(config_err(format!(
                "filter {:?} has no {ACCOUNT_PLACEHOLDER} placeholder",
                config.filter
            )));
        }
        if ldap3::parse_filter(render_filter(&config.filter, "0")).is_err() {
            return Err(config_err(format!(
                "filter {:?} is not a valid LDAP filter",
                config.filter
            )));
        }
        for (what, attr) in [
            ("name_attr", &config.name_attr),
            ("phone_attr", &config.phone_attr),
            ("email_attr", &config.email_attr),
        ] {
            if attr.trim().is_empty() {
                return Err(config_err(format!("{what} is empty")));
            }
        }
        if config.timeout.is_zero() {
            return Err(config_err("timeout must be positive"));
        }
        let tls = if tls {
            Some(tls_config(config.tls_ca_file.as_ref())?)
        } else {
            None
        };
        Ok(LdapDirectory { config, tls })
    }

    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// The DNs the configured filter matches for `value` (escaped here; at most two, which
    /// is enough to tell one from several). For diagnostics and tests: unlike
    /// [`IdentityProvider::lookup`] it takes any string, not just an [`AccountNumber`].
    pub async fn find_dns(&self, value: &str) -> Result<Vec<String>, IdentityError> {
        let filter = render_filter(&self.config.filter, value);
        self.bounded("search", async {
            let mut ldap = self.service_connection().await?;
            let entries = self.search(&mut ldap, &filter, &["1.1"]).await;
            close(ldap).await;
            Ok(entries?.into_iter().map(|e| e.dn).collect())
        })
        .await
    }

    /// Run `op` within the configured timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, IdentityError>>,
    ) -> Result<T, IdentityError> {
        tokio::time::timeout(self.config.timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(IdentityError::Unavailable(format!(
                    "LDAP {what} timed out after {:?}",
                    self.config.timeout
                )))
            })
    }

    /// A new connection (TLS set up, StartTLS done), not yet bound.
    async fn connect(&self) -> Result<Ldap, IdentityError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| unavailable(format!("connect to {}", self.config.url), e))?;
        // The connection's driver ends when every `Ldap` handle is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended with an error");
            }
        });
        Ok(ldap)
    }

    /// A new connection bound as the service account.
    async fn service_connection(&self) -> Result<Ldap, IdentityError> {
        let mut ldap = self.connect().await?;
        let res = ldap
            .simple_bind(&self.config.bind_dn, self.config.bind_password.expose())
            .await
            .map_err(|e| unavailable("service bind", e))?;
        if res.rc != 0 {
            close(ldap).await;
            return Err(IdentityError::Unavailable(format!(
                "service bind as {:?} refused: result {} {}",
                self.config.bind_dn, res.rc, res.text
            )));
        }
        Ok(ldap)
    }

    /// Subtree search under `base_dn`; at most two entries.
    async fn search(
        &self,
        ldap: &mut Ldap,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, IdentityError> {
        let time_limit = i32::try_from(self.config.timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let res = ldap
            .with_search_options(SearchOptions::new().sizelimit(2).timelimit(time_limit))
            .search(&self.config.base_dn, Scope::Subtree, filter, attrs.to_vec())
            .await
            .map_err(|e| unavailable("search", e))?;
        let ldap3::SearchResult(entries, result) = res;
        if result.rc != 0 && result.rc != SIZE_LIMIT_EXCEEDED {
            return Err(IdentityError::Unavailable(format!(
                "search under {:?} failed: result {} {}",
                self.config.base_dn, result.rc, result.text
            )));
        }
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }

    /// The single entry for `account`, with `attrs`; None when there is none or several.
    async fn find_entry(
        &self,
        ldap: &mut Ldap,
        account: &AccountNumber,
        attrs: &[&str],
    ) -> Result<Option<SearchEntry>, IdentityError> {
        let filter = render_filter(&self.config.filter, account.as_str());
        let mut entries = self.search(ldap, &filter, attrs).await?;
        if entries.len() > 1 {
            tracing::warn!(
                base_dn = %self.config.base_dn,
                "the LDAP account filter matched several entries; treating the account as not found"
            );
            return Ok(None);
        }
        Ok(entries.pop())
    }

    fn profile(&self, account: &AccountNumber, entry: &SearchEntry) -> Profile {
        let name = first_value(entry, &self.config.name_attr);
        let greeting = self
            .config
            .greeting_attr
            .as_deref()
            .and_then(|a| first_value(entry, a))
            .or_else(|| name.as_deref().and_then(default_greeting));
        Profile {
            account: account.clone(),
            name,
            greeting,
            phone: first_value(entry, &self.config.phone_attr),
            email: first_value(entry, &self.config.email_attr),
            phone_verified: false,
            email_verified: false,
            status: AccountStatus::Active,
        }
    }

    fn profile_attrs(&self) -> Vec<&str> {
        let mut attrs = vec![
            self.config.name_attr.as_str(),
            self.config.phone_attr.as_str(),
            self.config.email_attr.as_str(),
        ];
        if let Some(g) = &self.config.greeting_attr {
            attrs.push(g);
        }
        attrs
    }
}

#[async_trait]
impl IdentityProvider for LdapDirectory {
    fn kind(&self) -> &'static str {
        "ldap"
    }

    async fn lookup(&self, account: &AccountNumber) -> Result<Option<Profile>, IdentityError> {
        self.bounded("lookup", async {
            let mut ldap = self.service_connection().await?;
            let attrs = self.profile_attrs();
            let entry = self.find_entry(&mut ldap, account, &attrs).await;
            close(ldap).await;
            Ok(entry?.map(|e| self.profile(account, &e)))
        })
        .await
    }

    async fn verify(
        &self,
        account: &AccountNumber,
        secret: &Secret<String>,
    ) -> Result<Verification, IdentityError> {
        // Before any connection: an empty password would be an unauthenticated bind.
        if secret.expose().is_empty() {
            return Ok(Verification::Rejected(RejectReason::EmptySecret));
        }
        self.bounded("verify", async {
            let mut ldap = self.service_connection().await?;
            let entry = match self.find_entry(&mut ldap, account, &["1.1"]).await {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    close(ldap).await;
                    return Ok(Verification::Rejected(RejectReason::UnknownAccount));
                }
                Err(e) => {
                    close(ldap).await;
                    return Err(e);
                }
            };
            // Rebind on the same connection as the account itself.
            let res = ldap.simple_bind(&entry.dn, secret.expose()).await;
            close(ldap).await;
            let res = res.map_err(|e| unavailable("bind", e))?;
            match res.rc {
                0 => Ok(Verification::Verified),
                INVALID_CREDENTIALS => Ok(Verification::Rejected(RejectReason::WrongSecret)),
                // Per-account refusals are rejections, not outages: a caller must not be able
                // to tell a locked or disabled account from a wrong PIN by the flow's output.
                CONSTRAINT_VIOLATION => Ok(Verification::Rejected(RejectReason::Locked)),
                UNWILLING_TO_PERFORM => Ok(Verification::Rejected(RejectReason::Disabled)),
                rc => Err(IdentityError::Unavailable(format!(
                    "bind as the account's entry failed: result {rc} {}",
                    res.text
                ))),
            }
        })
        .await
    }

    async fn change_secret(
        &self,
        account: &AccountNumber,
        new_secret: &Secret<String>,
    ) -> Result<(), IdentityError> {
        if new_secret.expose().is_empty() {
            return Err(IdentityError::InvalidSecret(
                "the new secret is empty".to_owned(),
            ));
        }
        self.bounded("change_secret", async {
            let mut ldap = self.service_connection().await?;
            let entry = match self.find_entry(&mut ldap, account, &["1.1"]).await {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    close(ldap).await;
                    return Err(IdentityError::Unavailable(format!(
                        "no single LDAP entry for account {account}"
                    )));
                }
                Err(e) => {
                    close(ldap).await;
                    return Err(e);
                }
            };
            let res = ldap
                .extended(PasswordModify {
                    user_id: Some(&entry.dn),
                    old_pass: None,
                    new_pass: Some(new_secret.expose()),
                })
                .await;
            close(ldap).await;
            let ldap3::result::ExopResult(_, result) =
                res.map_err(|e| unavailable("password modify", e))?;
            if result.rc != 0 {
                return Err(IdentityError::Unavailable(format!(
                    "password modify refused: result {} {}",
                    result.rc, result.text
                )));
            }
            Ok(())
        })
        .await
    }

    async fn health(&self) -> Result<(), IdentityError> {
        self.bounded("health check", async {
            let mut ldap = self.service_connection().await?;
            let res = ldap
                .search(
                    &self.config.base_dn,
                    Scope::Base,
                    "(objectClass=*)",
                    vec!["1.1"],
                )
                .await;
            close(ldap).await;
            let ldap3::SearchResult(entries, result) =
                res.map_err(|e| unavailable("base search", e))?;
            if result.rc != 0 || entries.is_empty() {
                return Err(IdentityError::Unavailable(format!(
                    "base {:?} not readable: result {} {}",
                    self.config.base_dn, result.rc, result.text
                )));
            }
            Ok(())
        })
        .await
    }
}

/// Unbind (best effort) and drop the handle, which ends the connection's driver.
async fn close(mut ldap: Ldap) {
    let _ = ldap.unbind().await;
}

fn unavailable(what: impl fmt::Display, e: ldap3::LdapError) -> IdentityError {
    IdentityError::Unavailable(format!("LDAP {what}: {e}"))
}

/// The first value of `attr` (case-insensitive name), trimmed; None when absent or blank.
fn first_value(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// rustls with the ring provider, trusting `ca_file`'s certificates or the system's roots.
fn tls_config(ca_file: Option<&PathBuf>) -> Result<Arc<ClientConfig>, LdapConfigError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| config_err(format!("tls_ca_file {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| config_err(format!("tls_ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| config_err(format!("tls_ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // Skip certificates rustls cannot use, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(config_err(
            "no trusted CA certificates for TLS (set tls_ca_file or install system roots)",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> LdapConfig {
        LdapConfig::new(
            url,
            "cn=svc,dc=example,dc=test",
            Secret::new("pw".to_owned()),
            "dc=example,dc=test",
        )
    }

    #[test]
    fn escapes_rfc4515_specials_and_non_ascii() {
        assert_eq!(escape_filter_value("*)(uid=*"), r"\2a\29\28uid=\2a");
        assert_eq!(escape_filter_value("a\\b\0c"), r"a\5cb\00c");
        assert_eq!(escape_filter_value("é"), r"\c3\a9");
        assert_eq!(escape_filter_value("10001"), "10001");
        assert_eq!(
            render_filter("(|(uid={account})(mail={account}))", "*"),
            r"(|(uid=\2a)(mail=\2a))"
        );
    }

    #[test]
    fn refuses_bad_configs() {
        assert!(LdapDirectory::new(config("ldap://127.0.0.1:389")).is_ok());
        assert!(LdapDirectory::new(config("ldap://localhost")).is_ok());
        assert!(LdapDirectory::new(config("ldap://[::1]:389")).is_ok());
        let bad = |c: LdapConfig| LdapDirectory::new(c).err().map(|e| e.to_string());
        assert!(bad(config("http://127.0.0.1")).is_some_and(|e| e.contains("scheme")));
        assert!(bad(config("ldap://ldap.example.com")).is_some_and(|e| e.contains("clear text")));
        assert!(bad(LdapConfig {
            starttls: true,
            ..config("ldaps://127.0.0.1")
        })
        .is_some_and(|e| e.contains("starttls")));
        assert!(bad(LdapConfig {
            filter: "(uid=x)".into(),
            ..config("ldap://127.0.0.1")
        })
        .is_some_and(|e| e.contains("placeholder")));
        assert!(bad(LdapConfig {
            filter: "(uid={account}".into(),
            ..config("ldap://127.0.0.1")
        })
        .is_some_and(|e| e.contains("not a valid")));
        assert!(bad(LdapConfig {
            bind_password: Secret::new(String::new()),
            ..config("ldap://127.0.0.1")
        })
        .is_some_and(|e| e.contains("bind_password")));
        assert!(bad(LdapConfig {
            timeout: Duration::ZERO,
            ..config("ldap://127.0.0.1")
        })
        .is_some_and(|e| e.contains("timeout")));
        assert!(bad(LdapConfig {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..config("ldaps://127.0.0.1")
        })
        .is_some_and(|e| e.contains("tls_ca_file")));
    }

    #[test]
    fn debug_masks_the_password() {
        let shown = format!("{:?}", config("ldap://127.0.0.1"));
        assert!(!shown.contains("\"pw\""), "{shown}");
        assert!(shown.contains("********"), "{shown}");
    }
}
