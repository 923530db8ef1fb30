#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `LdapDirectory` against a real slapd (ivrauth-testkit's `Slapd`, which needs Debian's
//! `slapd` and `ldap-utils`: scripts/install-test-deps).

use std::time::Duration;

use ivrauth_connect::ldap::{escape_filter_value, render_filter};
use ivrauth_connect::{LdapConfig, LdapDirectory};
use ivrauth_core::identity::{
    AccountNumber, AccountStatus, IdentityError, IdentityProvider, RejectReason, Verification,
};
use ivrauth_core::secret::Secret;
use ivrauth_testkit::slapd::{Slapd, ADA, ALAN, GRACE, SEED_USERS};

const LOG_WAIT: Duration = Duration::from_secs(10);

fn secret(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

fn account(s: &str) -> AccountNumber {
    AccountNumber::parse(s).unwrap()
}

fn config(slapd: &Slapd) -> LdapConfig {
    LdapConfig::new(
        slapd.uri(),
        slapd.service_dn(),
        secret(slapd.service_password()),
        slapd.base_dn(),
    )
}

fn directory(slapd: &Slapd) -> LdapDirectory {
    LdapDirectory::new(config(slapd)).unwrap()
}

/// A plain ldap3 connection bound as `dn` (for checks that bypass the provider).
async fn raw_bind(slapd: &Slapd, dn: &str, pw: &str) -> (ldap3::Ldap, u32) {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(slapd.uri()).await.unwrap();
    tokio::spawn(conn.drive());
    let rc = ldap.simple_bind(dn, pw).await.unwrap().rc;
    (ldap, rc)
}

#[tokio::test]
async fn lookup_maps_a_known_account() {
    let slapd = Slapd::start().await.unwrap();
    let dir = directory(&slapd);
    assert_eq!(dir.kind(), "ldap");

    let ada = dir.lookup(&account(ADA.account)).await.unwrap().unwrap();
    assert_eq!(ada.account.as_str(), "10001");
    assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(ada.greeting.as_deref(), Some("Ada"));
    assert_eq!(ada.phone.as_deref(), Some("+15550100001"));
    assert_eq!(ada.email.as_deref(), Some("ada@example.test"));
    assert_eq!(ada.status, AccountStatus::Active);
    assert!(!ada.phone_verified && !ada.email_verified);

    // No givenName: the greeting is the first word of the name; no mail: no email.
    let alan = dir.lookup(&account(ALAN.account)).await.unwrap().unwrap();
    assert_eq!(alan.greeting.as_deref(), Some("Alan"));
    assert_eq!(alan.email, None);

    // Without a greeting attribute, the name's first word too.
    let dir = LdapDirectory::new(LdapConfig {
        greeting_attr: None,
        ..config(&slapd)
    })
    .unwrap();
    let grace = dir.lookup(&account(GRACE.account)).await.unwrap().unwrap();
    assert_eq!(grace.greeting.as_deref(), Some("Grace"));
}

#[tokio::test]
async fn lookup_of_an_unknown_account_is_none() {
    let slapd = Slapd::start().await.unwrap();
    let dir = directory(&slapd);
    assert_eq!(dir.lookup(&account("99999")).await.unwrap(), None);
}

#[tokio::test]
async fn verify_right_wrong_and_unknown() {
    let slapd = Slapd::start().await.unwrap();
    let dir = directory(&slapd);
    for u in SEED_USERS {
        assert_eq!(
            dir.verify(&account(u.account), &secret(u.password))
                .await
                .unwrap(),
            Verification::Verified,
            "{}",
            u.account
        );
    }
    let mark = slapd.log_mark().unwrap();
    assert_eq!(
        dir.verify(&account(ADA.account), &secret(GRACE.password))
            .await
            .unwrap(),
        Verification::Rejected(RejectReason::WrongSecret)
    );
    // The bind as Ada's entry reached slapd and was refused with invalidCredentials.
    let log = slapd.wait_for_log(mark, "err=49", LOG_WAIT).await.unwrap();
    assert!(log.contains(&format!("BIND dn=\"{}\"", ADA.dn)), "{log}");
    assert_eq!(
        dir.verify(&account("99999"), &secret("2468"))
            .await
            .unwrap(),
        Verification::Rejected(RejectReason::UnknownAccount)
    );
}

#[tokio::test]
async fn empty_secret_is_rejected_before_any_connection() {
    // A server on which "DN + empty password" succeeds (as anonymous), like AD by default.
    let slapd = Slapd::builder()
        .allow_bind_anon_dn(true)
        .start()
        .await
        .unwrap();
    let (_raw, rc) = raw_bind(&slapd, ADA.dn, "").await;
    assert_eq!(rc, 0, "this server accepts an empty-password bind");

    let dir = directory(&slapd);
    let mark = slapd.log_mark().unwrap();
    assert_eq!(
        dir.verify(&account(ADA.account), &secret(""))
            .await
            .unwrap(),
        Verification::Rejected(RejectReason::EmptySecret)
    );
    // A later call's connection and base search show up in the log; nothing came before.
    dir.health().await.unwrap();
    let log = slapd.wait_for_log(mark, "scope=0", LOG_WAIT).await.unwrap();
    assert_eq!(log.matches(" ACCEPT from ").count(), 1, "{log}");
    assert!(!log.contains(ADA.dn), "{log}");
}

#[tokio::test]
async fn filter_values_are_escaped() {
    assert_eq!(escape_filter_value("*)(uid=*"), r"\2a\29\28uid=\2a");
    assert_eq!(escape_filter_value(r"a\b"), r"a\5cb");
    assert_eq!(escape_filter_value("nul\0"), r"nul\00");
    assert_eq!(escape_filter_value("ü"), r"\c3\bc");
    // AccountNumber refuses these outright; the escaping is the second line of defence.
    assert!(AccountNumber::parse("*").is_err());

    let slapd = Slapd::start().await.unwrap();
    let dir = LdapDirectory::new(LdapConfig {
        filter: "(uid={account})".into(),
        ..config(&slapd)
    })
    .unwrap();
    // Sanity: the filter works, and unescaped, `*` would match every person.
    assert_eq!(dir.find_dns("ada").await.unwrap(), vec![ADA.dn.to_owned()]);
    let (mut raw, rc) = raw_bind(&slapd, slapd.service_dn(), slapd.service_password()).await;
    assert_eq!(rc, 0);
    let (all, _) = raw
        .search(
            slapd.base_dn(),
            ldap3::Scope::Subtree,
            &"(uid={account})".replace("{account}", "*"),
            vec!["1.1"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(all.len(), SEED_USERS.len());

    let mark = slapd.log_mark().unwrap();
    for evil in ["*", "*)(uid=*", "ada)(|(uid=*", "*)(objectClass=*"] {
        assert_eq!(
            dir.find_dns(evil).await.unwrap(),
            Vec::<String>::new(),
            "{evil}"
        );
    }
    assert_eq!(render_filter("(uid={account})", "*"), r"(uid=\2a)");
    let log = slapd.wait_for_log(mark, "SRCH", LOG_WAIT).await.unwrap();
    assert!(
        log.to_ascii_lowercase().contains(r#"filter="(uid=\2a)""#),
        "{log}"
    );
}

#[tokio::test]
async fn several_matching_entries_count_as_not_found() {
    let slapd = Slapd::start().await.unwrap();
    let dir = LdapDirectory::new(LdapConfig {
        filter: "(|(employeeNumber={account})(sn=Hopper))".into(),
        ..config(&slapd)
    })
    .unwrap();
    assert_eq!(dir.lookup(&account(ADA.account)).await.unwrap(), None);
    assert_eq!(
        dir.verify(&account(ADA.account), &secret(ADA.password))
            .await
            .unwrap(),
        Verification::Rejected(RejectReason::UnknownAccount)
    );
}

#[tokio::test]
async fn change_secret_then_verify() {
    let slapd = Slapd::start().await.unwrap();
    let dir = directory(&slapd);
    let ada = account(ADA.account);
    let mark = slapd.log_mark().unwrap();
    dir.change_secret(&ada, &secret("8642")).await.unwrap();
    // Password Modify extended operation (RFC 3062).
    let log = slapd
        .wait_for_log(mark, "oid=1.3.6.1.4.1.4203.1.11.1", LOG_WAIT)
        .await
        .unwrap();
    assert!(!log.contains("8642"), "{log}");
    assert_eq!(
        dir.verify(&ada, &secret("8642")).await.unwrap(),
        Verification::Verified
    );
    assert_eq!(
        dir.verify(&ada, &secret(ADA.password)).await.unwrap(),
        Verification::Rejected(RejectReason::WrongSecret)
    );
    // Others are untouched.
    assert_eq!(
        dir.verify(&account(GRACE.account), &secret(GRACE.password))
            .await
            .unwrap(),
        Verification::Verified
    );
    // Unknown accounts and empty secrets are errors, not silent successes.
    assert!(matches!(
        dir.change_secret(&account("99999"), &secret("1111")).await,
        Err(IdentityError::Unavailable(_))
    ));
    assert!(matches!(
        dir.change_secret(&ada, &secret("")).await,
        Err(IdentityError::InvalidSecret(_))
    ));
}

#[tokio::test]
async fn health_ok_and_wrong_service_password() {
    let slapd = Slapd::start().await.unwrap();
    directory(&slapd).health().await.unwrap();

    let bad = LdapDirectory::new(LdapConfig {
        bind_password: secret("not-the-password"),
        ..config(&slapd)
    })
    .unwrap();
    let e = bad.health().await.unwrap_err();
    let IdentityError::Unavailable(msg) = &e else {
        panic!("{e:?}")
    };
    assert!(msg.contains("49"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
    // Every other call fails the same way, without revealing anything about the account.
    assert!(matches!(
        bad.verify(&account(ADA.account), &secret(ADA.password))
            .await,
        Err(IdentityError::Unavailable(_))
    ));
    assert!(matches!(
        bad.lookup(&account(ADA.account)).await,
        Err(IdentityError::Unavailable(_))
    ));

    // A base that does not exist is a failed health check too.
    let missing = LdapDirectory::new(LdapConfig {
        base_dn: "ou=nowhere,dc=example,dc=test".into(),
        ..config(&slapd)
    })
    .unwrap();
    assert!(missing.health().await.is_err());
}

#[tokio::test]
async fn unreachable_and_silent_servers_are_unavailable_within_the_timeout() {
    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = LdapConfig::new(
        format!("ldap://127.0.0.1:{port}"),
        "cn=ivrauth,dc=example,dc=test",
        secret("x"),
        "dc=example,dc=test",
    );
    c.timeout = Duration::from_millis(500);
    let dir = LdapDirectory::new(c.clone()).unwrap();
    assert!(matches!(
        dir.verify(&account(ADA.account), &secret("2468")).await,
        Err(IdentityError::Unavailable(_))
    ));

    // Accepts connections but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    c.url = format!("ldap://{addr}");
    let dir = LdapDirectory::new(c).unwrap();
    let started = std::time::Instant::now();
    let e = dir.health().await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

fn tls_config(slapd: &Slapd, url: &str, starttls: bool) -> LdapConfig {
    LdapConfig {
        url: url.to_owned(),
        starttls,
        tls_ca_file: slapd.ca_cert_path().map(Into::into),
        ..config(slapd)
    }
}

#[tokio::test]
async fn ldaps_and_starttls_with_a_trusted_ca() {
    let slapd = Slapd::builder().tls(true).start().await.unwrap();
    let ldaps = slapd.ldaps_uri().unwrap().to_owned();

    let mark = slapd.log_mark().unwrap();
    let dir = LdapDirectory::new(tls_config(&slapd, &ldaps, false)).unwrap();
    dir.health().await.unwrap();
    assert_eq!(
        dir.verify(&account(ADA.account), &secret(ADA.password))
            .await
            .unwrap(),
        Verification::Verified
    );
    slapd
        .wait_for_log(mark, "TLS established", LOG_WAIT)
        .await
        .unwrap();

    let mark = slapd.log_mark().unwrap();
    let dir = LdapDirectory::new(tls_config(&slapd, slapd.uri(), true)).unwrap();
    assert_eq!(
        dir.verify(&account(GRACE.account), &secret("wrong"))
            .await
            .unwrap(),
        Verification::Rejected(RejectReason::WrongSecret)
    );
    // The StartTLS extended operation, then TLS, then the binds.
    let log = slapd.wait_for_log(mark, "err=49", LOG_WAIT).await.unwrap();
    let starttls = log.find("oid=1.3.6.1.4.1.1466.20037").expect(&log);
    let tls = log.find("TLS established").expect(&log);
    let bind = log.find("BIND dn=").expect(&log);
    assert!(starttls < tls && tls < bind, "{log}");
}

#[tokio::test]
async fn tls_with_an_untrusted_certificate_fails() {
    let slapd = Slapd::builder().tls(true).start().await.unwrap();
    let other = Slapd::builder().tls(true).start().await.unwrap();
    // Trust the other server's CA only.
    let mut c = tls_config(&slapd, slapd.ldaps_uri().unwrap(), false);
    c.tls_ca_file = other.ca_cert_path().map(Into::into);
    let dir = LdapDirectory::new(c.clone()).unwrap();
    let e = dir.health().await.unwrap_err();
    assert!(matches!(e, IdentityError::Unavailable(_)), "{e:?}");
    // StartTLS the same.
    c.url = slapd.uri().to_owned();
    c.starttls = true;
    let dir = LdapDirectory::new(c).unwrap();
    assert!(matches!(
        dir.verify(&account(ADA.account), &secret(ADA.password))
            .await,
        Err(IdentityError::Unavailable(_))
    ));
}
