#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `OAuth2Directory` against a real authlib server (`ivrauth_testkit::oauth2_server`), in
//! JWT and in opaque-token (introspection) mode, and `validate_jwt` on tokens crafted here
//! with a test RSA key.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ivrauth_connect::oauth2::{
    quote_query_value, user_search_url, validate_jwt, Algorithm, JwkSet, JwtRejection,
    OAuth2Config, OAuth2Directory, TokenValidation, JWT_LEEWAY_SECS,
};
use ivrauth_core::identity::{
    AccountNumber, AccountStatus, IdentityError, IdentityProvider, RejectReason, Verification,
};
use ivrauth_core::secret::Secret;
use ivrauth_testkit::oauth2_server::{self as srv, OAuth2Server};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

/// A 2048-bit RSA key made for these tests only (openssl genpkey); it protects nothing.
const TEST_KEY_PEM: &str = "
-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCqZYOeNKtaJwwW
5HMqb8iYPnxypmQx9p/V6BSEcqSM4QPHD5brD2YSLt36uLBgsy6sU4Q1dYe1clTz
wxHjimhtrhHecMyuIQZaXn2MrmoJHbM6oiA7vqaOWqKbBETiYy4c+d6x0S2xEgSH
1Ck86nL1Zcxrp9IJg2KRdDUWxukP1dzoXK72PNcVld79qQZMW2iGuamZ6ov4bxX5
eByrvVCg7FjvaoKO42p0CldJ329NcgGL6nrS3ParhsgljD2swq8I7Qt6MWMIPLWz
HYtZl0zw6FSg2VQD3ftIN3DOKl6Lerz8V3+uhkDgGozFbYVInbJQPYQ/rUzWCqum
NeKY0/anAgMBAAECggEAP6Dtr6+aRu1q0ceYC8I3RUacIRHqO1ANaoqh0r2ena7O
wtAa+obDBkozARNjZZCzfo0nQvEy7noVp/rxXKcMDNzh9k7n16QkY62CM3zTwriw
+1WcNMMiHelRbBKBiIohp5dU5dCnP8ZrI6+BgKpJqEJNveuqfnvt3EPpKSq4z/zf
4YSoafcgOizsOc2F5A7DLXsG7zQFexBcU7JOtCWYajt9/PvrfryclF0/31Mkz44d
Iws4qbJrXe35XLsjT4g4oYlnm7UbBCHT5ZTg0ndgamEeu+jOohGZzSC/pL4Ruz4Z
Hik4XXJB3bg0pI7pd5P/dGV7ejun77HNABij3XQ3eQKBgQDUjc5JeXVYRNZH8oSj
Sh3BWbLqR3TARRJqrdgo5gI1VNS9Oi2S+bZsyvkaQPDt1Bm/+psOQl3pLVSeRb+Q
xiaz5C8otoyLZSY6ly9fPcI65Z00JJlj0Q8eL9HpH1jLqH/wOZi8Dm98UYxxCvf1
M1VangwyTVI0+PFO1muEDQdoyQKBgQDNOcLvpWcvzWzw3gxwrMJrBNrkRFgHHdvo
xGnRrRe/AmMPIb4poKvEKc8pKfoW70jx4aUUXEk18N+Os/VotKID4XlEZfCUskid
FMxqo6mmNlrKZ11PwNNaSBYlX4TYO5QbwIzUYwyiIYBX6/wlHKW1mmJ8n8sOymHi
ete+ZuSL7wKBgCqonyst3jgt8JeV+7rN6DTi7L6KQstH0Y9pfoWOzAiqEtw7beQe
i9c/0UjMmc4RkG1wPWhaN4DR4Ta2puDGdAQMms5f/MsJLOf7ab2CppWteaR6Z/KZ
haA4Vrej2+1bzvmGhbnQZ92afEY/vk4O1GWQbMA3tnT9NWjuLbvd5YvJAoGAXi5v
44LIxAtGP5PnqZ3e6zYjLjafH0T4su3QkkUZbLMvurYFix0NNszpIT7+YqAVncur
8pgXkQWl0tuLeC3NXHKRMG6H5fWblVsCJL5PENRI/jJJhFw9omUKpMQdNw7Afavz
9VQvbAhr2e2WnYF0Gs9q+z5p9bOzEDjH4b1ejUkCgYAwWMo8BLkk92rRevufpGz1
CICatTXlknQQijXAcnbC5elFydklEkWTNRS8WD8Ek/7tZh6tbpSAXnPsc3Sc4v9H
q94VTYqfGN13RgWa0EV1BZwBxH1zs+xv2D2KA8Wudcpg1SIUo59mOl6LWwoUsJEc
i5eWQmp7nahH+6Gsly2ZMQ==
-----END PRIVATE KEY-----
";

const ISS: &str = "https://idp.example.test";
const AUD: &str = "ivrauth-login";

fn account(s: &str) -> AccountNumber {
    AccountNumber::parse(s).unwrap()
}

fn secret(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn test_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(TEST_KEY_PEM.trim().as_bytes()).unwrap()
}

/// The public half of the test key as a one-key JWKS with kid `k1`.
fn test_keys() -> JwkSet {
    let mut jwk = Jwk::from_encoding_key(&test_key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    JwkSet { keys: vec![jwk] }
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &test_key()).unwrap()
}

fn good_claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "auth0|10001", "iat": now(), "exp": now() + 300})
}

fn check(token: &str) -> Result<(), JwtRejection> {
    validate_jwt(token, &test_keys(), ISS, AUD, &[Algorithm::RS256])
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

// ---- validate_jwt on crafted tokens ----

#[test]
fn jwt_signed_by_the_key_passes() {
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k1"), &good_claims())),
        Ok(())
    );
    // No kid: the only key of a one-key set is used.
    assert_eq!(check(&sign(Algorithm::RS256, None, &good_claims())), Ok(()));
    // `aud` as an array containing ours.
    let mut claims = good_claims();
    claims["aud"] = json!(["other", AUD]);
    assert_eq!(check(&sign(Algorithm::RS256, Some("k1"), &claims)), Ok(()));
}

#[test]
fn jwt_alg_none_is_always_refused() {
    let payload = b64(&good_claims());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({"alg": alg, "typ": "JWT", "kid": "k1"}));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(
                matches!(check(&token), Err(JwtRejection::Invalid(_))),
                "{alg}"
            );
        }
    }
    // A real signature with the header swapped for `none` does not help either.
    let real = sign(Algorithm::RS256, Some("k1"), &good_claims());
    let sig = real.rsplit('.').next().unwrap();
    let header = b64(&json!({"alg": "none", "kid": "k1"}));
    assert!(check(&format!("{header}.{payload}.{sig}")).is_err());
}

#[test]
fn jwt_wrong_issuer_or_audience_is_refused() {
    let mut claims = good_claims();
    claims["iss"] = json!("https://evil.example.test");
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k1"), &claims)),
        Err(JwtRejection::Invalid("wrong issuer"))
    );
    let mut claims = good_claims();
    claims["aud"] = json!("someone-else");
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k1"), &claims)),
        Err(JwtRejection::Invalid("wrong audience"))
    );
    for missing in ["iss", "aud", "exp"] {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(missing);
        assert!(
            check(&sign(Algorithm::RS256, Some("k1"), &claims)).is_err(),
            "without {missing}"
        );
    }
}

#[test]
fn jwt_expiry_has_at_most_thirty_seconds_of_leeway() {
    assert_eq!(JWT_LEEWAY_SECS, 30);
    let mut claims = good_claims();
    claims["exp"] = json!(now() - 10);
    assert_eq!(check(&sign(Algorithm::RS256, Some("k1"), &claims)), Ok(()));
    claims["exp"] = json!(now() - 45);
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k1"), &claims)),
        Err(JwtRejection::Invalid("the token has expired"))
    );
    let mut claims = good_claims();
    claims["nbf"] = json!(now() + 120);
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k1"), &claims)),
        Err(JwtRejection::Invalid("the token is not valid yet"))
    );
}

#[test]
fn jwt_only_configured_asymmetric_algorithms() {
    // RS384 with the same key: not in the configured list.
    let token = sign(Algorithm::RS384, Some("k1"), &good_claims());
    assert!(matches!(check(&token), Err(JwtRejection::Invalid(_))));
    // Allowed by configuration, but the key says RS256.
    assert!(matches!(
        validate_jwt(
            &token,
            &test_keys(),
            ISS,
            AUD,
            &[Algorithm::RS256, Algorithm::RS384]
        ),
        Err(JwtRejection::Invalid(_))
    ));
    // HS256 keyed with the public key's bytes (the classic confusion): refused even when
    // someone lists HS256.
    let n = match &test_keys().keys[0].algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => p.n.clone(),
        _ => unreachable!(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &good_claims(),
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        validate_jwt(
            &hs,
            &test_keys(),
            ISS,
            AUD,
            &[Algorithm::HS256, Algorithm::RS256]
        ),
        Err(JwtRejection::Invalid(_))
    ));
}

#[test]
fn jwt_tampered_or_unknown_key_is_refused() {
    let token = sign(Algorithm::RS256, Some("k1"), &good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = good_claims();
    claims["sub"] = json!("auth0|10002");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(check(&forged), Err(JwtRejection::Invalid("bad signature")));
    assert_eq!(
        check(&sign(Algorithm::RS256, Some("k2"), &good_claims())),
        Err(JwtRejection::UnknownKey)
    );
    assert!(check("not.a.jwt").is_err());
    assert!(check("").is_err());
    // The rejection never contains the token.
    let rejection = check(&forged).unwrap_err().to_string();
    assert!(!rejection.contains(parts[2]));
}

// ---- query escaping ----

#[test]
fn account_numbers_are_quoted_and_percent_encoded() {
    assert_eq!(quote_query_value("10001"), "\"10001\"");
    assert_eq!(quote_query_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(quote_query_value("10001 OR *"), "\"10001 OR *\"");
    let t = "https://idp.example/api/v2/users?q=app_metadata.account_number:{account}";
    assert_eq!(
        user_search_url(t, "10001"),
        "https://idp.example/api/v2/users?q=app_metadata.account_number:%2210001%22"
    );
    assert_eq!(
        user_search_url(t, "1 OR x:*&q=\"#"),
        "https://idp.example/api/v2/users?q=app_metadata.account_number:\
         %221%20OR%20x%3A%2A%26q%3D%5C%22%23%22"
    );
    assert_eq!(
        user_search_url(t, "ACC-1.2_3~"),
        "https://idp.example/api/v2/users?q=app_metadata.account_number:%22ACC-1.2_3~%22"
    );
}

// ---- configuration ----

fn config_for(base: &str, opaque: bool) -> OAuth2Config {
    srv::oauth2_config(base, opaque)
}

fn directory(server: &OAuth2Server, opaque: bool) -> OAuth2Directory {
    OAuth2Directory::new(config_for(server.base_url(), opaque)).unwrap()
}

#[test]
fn configuration_is_checked() {
    let base = "https://idp.example.test";
    assert!(OAuth2Directory::new(config_for(base, false)).is_ok());
    assert!(OAuth2Directory::new(config_for("http://127.0.0.1:9", true)).is_ok());
    let bad = |f: &dyn Fn(&mut OAuth2Config)| {
        let mut c = config_for(base, false);
        f(&mut c);
        matches!(OAuth2Directory::new(c), Err(IdentityError::Unavailable(_)))
    };
    assert!(bad(
        &|c| c.token_url = "http://idp.example.test/token".into()
    ));
    assert!(bad(
        &|c| c.user_search_url_template = format!("{base}/users?q=x")
    ));
    assert!(bad(&|c| {
        c.user_search_url_template = "http://idp.example.test/users?q={account}".into()
    }));
    assert!(bad(
        &|c| c.user_update_url_template = Some(format!("{base}/users/"))
    ));
    assert!(bad(&|c| c.pointers.login_name = "0/username".into()));
    assert!(bad(&|c| c.timeout = Duration::ZERO));
    for algorithms in [
        vec![],
        vec![Algorithm::HS256],
        vec![Algorithm::RS256, Algorithm::HS512],
    ] {
        assert!(bad(&|c| {
            c.token_validation = TokenValidation::Jwt {
                jwks_url: format!("{base}/jwks.json"),
                issuer: base.into(),
                audience: "a".into(),
                algorithms: algorithms.clone(),
            }
        }));
    }
    // The config's Debug output masks the secrets.
    let shown = format!("{:?}", config_for(base, true));
    assert!(!shown.contains(srv::MGMT_CLIENT_SECRET), "{shown}");
    assert!(!shown.contains(srv::LOGIN_CLIENT_SECRET), "{shown}");
}

// ---- against the real server ----

#[tokio::test]
async fn lookup_known_and_unknown_accounts() {
    let server = OAuth2Server::start(false).await.unwrap();
    let dir = directory(&server, false);
    assert_eq!(dir.kind(), "oauth2");
    let ada = dir.lookup(&account("10001")).await.unwrap().unwrap();
    assert_eq!(ada.account, account("10001"));
    assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(ada.greeting.as_deref(), Some("Ada"));
    assert_eq!(ada.phone.as_deref(), Some("+15550100001"));
    assert_eq!(ada.email.as_deref(), Some("ada@example.test"));
    assert!(ada.phone_verified && ada.email_verified);
    assert_eq!(ada.status, AccountStatus::Active);
    let grace = dir.lookup(&account("10002")).await.unwrap().unwrap();
    assert_eq!(grace.name.as_deref(), Some("Grace Hopper"));
    assert!(!grace.phone_verified);
    assert_eq!(dir.lookup(&account("99999")).await.unwrap(), None);
    // A prefix is not a match.
    assert_eq!(dir.lookup(&account("1000")).await.unwrap(), None);
    let blocked = dir.lookup(&account("10009")).await.unwrap().unwrap();
    assert_eq!(blocked.status, AccountStatus::Disabled);
    assert_eq!(
        blocked.greeting.as_deref(),
        Some("Blocked"),
        "from the name"
    );
    assert_eq!(blocked.phone, None);
}

async fn verify_all_outcomes(opaque: bool) {
    let server = OAuth2Server::start(opaque).await.unwrap();
    let dir = directory(&server, opaque);
    let v = |a: &'static str, s: &'static str| {
        let dir = &dir;
        async move { dir.verify(&account(a), &secret(s)).await }
    };
    assert_eq!(v("10001", "2468").await, Ok(Verification::Verified));
    assert_eq!(v("10002", "1357").await, Ok(Verification::Verified));
    assert_eq!(
        v("10001", "1357").await,
        Ok(Verification::Rejected(RejectReason::WrongSecret))
    );
    assert_eq!(
        v("99999", "2468").await,
        Ok(Verification::Rejected(RejectReason::UnknownAccount))
    );
    assert_eq!(
        v("10009", "1111").await,
        Ok(Verification::Rejected(RejectReason::Disabled))
    );
    // The server issued tokens for the two right secrets only.
    assert_eq!(
        server
            .tokens_issued(srv::LOGIN_CLIENT_ID, "password")
            .await
            .unwrap(),
        2
    );
    // An empty secret is refused before any request.
    let fresh = directory(&server, opaque);
    assert_eq!(
        fresh.verify(&account("10001"), &secret("")).await,
        Ok(Verification::Rejected(RejectReason::EmptySecret))
    );
    assert_eq!(
        server
            .tokens_issued(srv::MGMT_CLIENT_ID, "client_credentials")
            .await
            .unwrap(),
        1,
        "only the first directory's management token"
    );
    assert!(dir.health().await.is_ok());
}

#[tokio::test]
async fn verify_with_jwt_access_tokens() {
    verify_all_outcomes(false).await;
}

#[tokio::test]
async fn verify_with_opaque_tokens_and_introspection() {
    verify_all_outcomes(true).await;
}

#[tokio::test]
async fn a_token_that_fails_validation_is_unavailable_not_verified() {
    let server = OAuth2Server::start(false).await.unwrap();
    let base = server.base_url().to_owned();
    let wrong = |issuer: &str, audience: &str| {
        let mut c = config_for(&base, false);
        c.token_validation = TokenValidation::Jwt {
            jwks_url: format!("{base}/jwks.json"),
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: vec![Algorithm::RS256],
        };
        OAuth2Directory::new(c).unwrap()
    };
    for dir in [
        wrong("https://other-issuer.example", srv::LOGIN_CLIENT_ID),
        wrong(&base, "another-audience"),
    ] {
        assert_eq!(
            dir.verify(&account("10001"), &secret("2468")).await,
            Err(IdentityError::Unavailable("token validation failed".into()))
        );
        // A wrong secret is still a wrong secret.
        assert_eq!(
            dir.verify(&account("10001"), &secret("0000")).await,
            Ok(Verification::Rejected(RejectReason::WrongSecret))
        );
    }
    // Only PS256 accepted, the server signs RS256.
    let mut c = config_for(&base, false);
    if let TokenValidation::Jwt { algorithms, .. } = &mut c.token_validation {
        *algorithms = vec![Algorithm::PS256];
    }
    let dir = OAuth2Directory::new(c).unwrap();
    assert_eq!(
        dir.verify(&account("10001"), &secret("2468")).await,
        Err(IdentityError::Unavailable("token validation failed".into()))
    );
    // An opaque token where a JWT is expected.
    let opaque = OAuth2Server::start(true).await.unwrap();
    let mut c = config_for(opaque.base_url(), false);
    if let TokenValidation::Jwt { jwks_url, .. } = &mut c.token_validation {
        jwks_url.clone_from(&format!("{base}/jwks.json"));
    }
    let dir = OAuth2Directory::new(c).unwrap();
    assert_eq!(
        dir.verify(&account("10001"), &secret("2468")).await,
        Err(IdentityError::Unavailable("token validation failed".into()))
    );
}

#[tokio::test]
async fn a_misconfigured_login_client_is_not_a_wrong_secret() {
    let server = OAuth2Server::start(false).await.unwrap();
    let mut c = config_for(server.base_url(), false);
    c.login_client_secret = secret("not-the-secret");
    let dir = OAuth2Directory::new(c).unwrap();
    let err = dir
        .verify(&account("10001"), &secret("2468"))
        .await
        .unwrap_err();
    let IdentityError::Unavailable(msg) = err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("invalid_client"), "{msg}");
    assert!(
        !msg.contains("not-the-secret") && !msg.contains("2468"),
        "{msg}"
    );
    // The management client without the search scope.
    let mut c = config_for(server.base_url(), false);
    c.client_id = srv::NOSCOPE_CLIENT_ID.into();
    c.client_secret = secret(srv::NOSCOPE_CLIENT_SECRET);
    c.mgmt_scope = None;
    let dir = OAuth2Directory::new(c).unwrap();
    assert!(matches!(
        dir.lookup(&account("10001")).await,
        Err(IdentityError::Unavailable(_))
    ));
    // A wrong management secret fails the health check.
    let mut c = config_for(server.base_url(), false);
    c.client_secret = secret("wrong");
    let dir = OAuth2Directory::new(c).unwrap();
    let err = dir.health().await.unwrap_err();
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[tokio::test]
async fn the_management_token_is_cached_and_refreshed_once() {
    let server = OAuth2Server::start(false).await.unwrap();
    let probe = |id: &str, secret_: &str| {
        let mut c = config_for(server.base_url(), false);
        c.client_id = id.into();
        c.client_secret = secret(secret_);
        c.mgmt_scope = Some("users:read".into());
        OAuth2Directory::new(c).unwrap()
    };
    let issued = |id: &'static str| {
        let server = &server;
        async move {
            server
                .tokens_issued(id, "client_credentials")
                .await
                .unwrap()
        }
    };
    let dir = probe(srv::PROBE_CLIENT_ID, srv::PROBE_CLIENT_SECRET);
    assert!(dir.lookup(&account("10001")).await.unwrap().is_some());
    assert!(dir.lookup(&account("10002")).await.unwrap().is_some());
    assert!(dir.lookup(&account("99999")).await.unwrap().is_none());
    assert_eq!(issued(srv::PROBE_CLIENT_ID).await, 1);

    // Many lookups at once on a fresh directory: still one token request (no stampede).
    let dir = Arc::new(probe(srv::PROBE_CLIENT_ID, srv::PROBE_CLIENT_SECRET));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.clone();
            tokio::spawn(async move { dir.lookup(&account("10001")).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    assert_eq!(issued(srv::PROBE_CLIENT_ID).await, 2);

    // Tokens that live 2 s are replaced after half their lifetime.
    let dir = probe(srv::SHORT_CLIENT_ID, srv::SHORT_CLIENT_SECRET);
    assert!(dir.lookup(&account("10001")).await.unwrap().is_some());
    assert!(dir.lookup(&account("10001")).await.unwrap().is_some());
    assert_eq!(issued(srv::SHORT_CLIENT_ID).await, 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(dir.lookup(&account("10001")).await.unwrap().is_some());
    assert_eq!(issued(srv::SHORT_CLIENT_ID).await, 2);
}

#[tokio::test]
async fn query_syntax_cannot_be_injected_through_the_account_number() {
    let server = OAuth2Server::start(false).await.unwrap();
    let dir = directory(&server, false);
    // The server's query language is real: unescaped, this input finds every user.
    let token = server
        .client_token(srv::MGMT_CLIENT_ID, srv::MGMT_CLIENT_SECRET)
        .await
        .unwrap();
    let all: Vec<Value> = reqwest::Client::new()
        .get(server.url("/api/v2/users"))
        .query(&[("q", "app_metadata.account_number:10001 OR username:*")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(all.len() >= 3, "{all:?}");
    // Through the directory (which quotes and escapes), it finds nothing.
    for input in [
        "10001 OR username:*",
        "10001\" OR username:*",
        "10001\\\" OR username:\"*",
        "*",
        "1000?",
    ] {
        assert_eq!(
            dir.search(input).await.unwrap(),
            Vec::<Value>::new(),
            "{input}"
        );
    }
    assert_eq!(dir.search("10001").await.unwrap().len(), 1);
}

#[tokio::test]
async fn change_secret_then_verify_with_the_new_one() {
    let server = OAuth2Server::start(false).await.unwrap();
    let dir = directory(&server, false);
    let k = account("10003");
    assert_eq!(
        dir.verify(&k, &secret("8642")).await,
        Ok(Verification::Verified)
    );
    dir.change_secret(&k, &secret("5791")).await.unwrap();
    assert_eq!(
        dir.verify(&k, &secret("5791")).await,
        Ok(Verification::Verified)
    );
    assert_eq!(
        dir.verify(&k, &secret("8642")).await,
        Ok(Verification::Rejected(RejectReason::WrongSecret))
    );
    // The server's password policy refuses "1".
    assert!(matches!(
        dir.change_secret(&k, &secret("1")).await,
        Err(IdentityError::InvalidSecret(_))
    ));
    assert!(matches!(
        dir.change_secret(&k, &secret("")).await,
        Err(IdentityError::InvalidSecret(_))
    ));
    assert!(matches!(
        dir.change_secret(&account("99999"), &secret("5791")).await,
        Err(IdentityError::Unavailable(_))
    ));
    // Without an update URL, changing is unsupported.
    let mut c = config_for(server.base_url(), false);
    c.user_update_url_template = None;
    let dir = OAuth2Directory::new(c).unwrap();
    assert!(matches!(
        dir.change_secret(&k, &secret("5791")).await,
        Err(IdentityError::Unsupported(_))
    ));
}

#[tokio::test]
async fn an_unreachable_provider_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = OAuth2Directory::new(config_for(&format!("http://127.0.0.1:{port}"), false)).unwrap();
    assert!(matches!(
        dir.lookup(&account("10001")).await,
        Err(IdentityError::Unavailable(_))
    ));
    assert!(matches!(
        dir.verify(&account("10001"), &secret("2468")).await,
        Err(IdentityError::Unavailable(_))
    ));
    assert!(dir.health().await.is_err());
}
