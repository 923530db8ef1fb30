#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The identity conformance suite against every real provider: the built-in directory on
//! SQLite, LDAP on a real `slapd`, OAuth2/OIDC on a real authlib server (JWT and opaque
//! tokens).

use std::sync::Arc;

use ivrauth_connect::ldap::{LdapConfig, LdapDirectory};
use ivrauth_connect::oauth2::OAuth2Directory;
use ivrauth_connect::SystemClock;
use ivrauth_core::identity::{AccountNumber, HashParams};
use ivrauth_core::ports::{AccountRecord, AccountStore as _, Store};
use ivrauth_core::time::Clock as _;
use ivrauth_core::Secret;
use ivrauth_store::directory::hash_pin;
use ivrauth_store::{BuiltinDirectory, HashPool, SqliteStore};
use ivrauth_testkit::identity_conformance::{self as suite, ACCOUNT, EMAIL, NAME, PHONE, SECRET};
use ivrauth_testkit::oauth2_server::{self as srv, OAuth2Server};
use ivrauth_testkit::slapd::Slapd;

fn secret(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

#[tokio::test]
async fn builtin_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let params = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let now = SystemClock.now();
    store
        .create_account(&AccountRecord {
            account: AccountNumber::parse(ACCOUNT).unwrap(),
            name: NAME.into(),
            greeting: None,
            phone: Some(PHONE.into()),
            email: Some(EMAIL.into()),
            phone_verified: true,
            email_verified: true,
            disabled: false,
            pin_hash: Some(hash_pin(&secret(SECRET), params).unwrap()),
            pin_history: Vec::new(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let p =
        BuiltinDirectory::new(dyn_store, params, HashPool::new(2), Arc::new(SystemClock)).unwrap();
    suite::all(&p).await.unwrap();
}

#[tokio::test]
async fn ldap_on_a_real_slapd() {
    let slapd = Slapd::start().await.unwrap();
    let config = LdapConfig::new(
        slapd.uri(),
        slapd.service_dn(),
        secret(slapd.service_password()),
        slapd.base_dn(),
    );
    let p = LdapDirectory::new(config).unwrap();
    suite::all(&p).await.unwrap();
}

fn oauth2(base: &str, opaque: bool) -> OAuth2Directory {
    OAuth2Directory::new(srv::oauth2_config(base, opaque)).unwrap()
}

#[tokio::test]
async fn oauth2_on_a_real_authlib_server_with_jwts() {
    let server = OAuth2Server::start(false).await.unwrap();
    suite::all(&oauth2(server.base_url(), false)).await.unwrap();
}

#[tokio::test]
async fn oauth2_on_a_real_authlib_server_with_opaque_tokens() {
    let server = OAuth2Server::start(true).await.unwrap();
    suite::all(&oauth2(server.base_url(), true)).await.unwrap();
}
