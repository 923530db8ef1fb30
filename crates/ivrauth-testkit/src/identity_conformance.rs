//! One conformance suite for every identity provider: the same fixture (account `10001`,
//! "Ada Lovelace", secret `2468`, phone `+15550100001`, email `ada@example.test`; no account
//! `99999`) and the same expectations, whichever directory is behind the port. The test
//! peers (`slapd`, the OAuth2 server) and the built-in directory tests seed that fixture.

use ivrauth_core::identity::{
    AccountNumber, AccountStatus, IdentityProvider, RejectReason, Verification,
};
use ivrauth_core::Secret;

use crate::{err, Result};

pub const ACCOUNT: &str = "10001";
pub const SECRET: &str = "2468";
pub const NAME: &str = "Ada Lovelace";
pub const PHONE: &str = "+15550100001";
pub const EMAIL: &str = "ada@example.test";
pub const UNKNOWN: &str = "99999";

fn account(s: &str) -> Result<AccountNumber> {
    AccountNumber::parse(s).map_err(|e| err("account number", e))
}

fn check(cond: bool, what: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(err("conformance", what))
    }
}

/// Lookup of the fixture account and of an unknown one.
pub async fn lookup(p: &dyn IdentityProvider) -> Result<()> {
    let profile = p
        .lookup(&account(ACCOUNT)?)
        .await
        .map_err(|e| err("lookup", e))?
        .ok_or_else(|| err("lookup", "the fixture account was not found"))?;
    check(
        profile.account.as_str() == ACCOUNT,
        "profile account number",
    )?;
    check(profile.name.as_deref() == Some(NAME), "profile name")?;
    check(
        profile.greeting.as_deref() == Some("Ada"),
        "profile greeting",
    )?;
    check(profile.phone.as_deref() == Some(PHONE), "profile phone")?;
    check(profile.email.as_deref() == Some(EMAIL), "profile email")?;
    check(profile.status == AccountStatus::Active, "profile status")?;
    let none = p
        .lookup(&account(UNKNOWN)?)
        .await
        .map_err(|e| err("lookup unknown", e))?;
    check(none.is_none(), "an unknown account is None")
}

/// The four verification outcomes every provider must tell apart (for the audit).
pub async fn verify(p: &dyn IdentityProvider) -> Result<()> {
    let secret = |s: &str| Secret::new(s.to_owned());
    let v = |a: &'static str, s: &'static str| async move {
        p.verify(&account(a)?, &secret(s))
            .await
            .map_err(|e| err("verify", e))
    };
    check(
        v(ACCOUNT, SECRET).await? == Verification::Verified,
        "the right secret verifies",
    )?;
    check(
        v(ACCOUNT, "0000").await? == Verification::Rejected(RejectReason::WrongSecret),
        "a wrong secret is WrongSecret",
    )?;
    check(
        v(UNKNOWN, SECRET).await? == Verification::Rejected(RejectReason::UnknownAccount),
        "an unknown account is UnknownAccount",
    )?;
    check(
        v(ACCOUNT, "").await? == Verification::Rejected(RejectReason::EmptySecret),
        "an empty secret is EmptySecret",
    )
}

/// The start-up check passes.
pub async fn health(p: &dyn IdentityProvider) -> Result<()> {
    p.health().await.map_err(|e| err("health", e))
}

/// Everything above.
pub async fn all(p: &dyn IdentityProvider) -> Result<()> {
    health(p).await?;
    lookup(p).await?;
    verify(p).await
}
