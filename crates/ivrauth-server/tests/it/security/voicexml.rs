//! VoiceXML requests are authenticated: refused without a configured credential, admitted
//! by HTTP Basic on the start URL and/or a source-address allow-list, later turns bound by
//! the per-call secret, which the server keeps only as a digest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use ivrauth_core::identity::LockoutPolicy;
use ivrauth_core::ports::CallStore as _;
use ivrauth_core::secret::Secret;
use ivrauth_server::calls::vxml::VoiceXmlConfig;
use ivrauth_testkit::TestServer;
use reqwest::StatusCode;

const USER: &str = "cvp";
const PASSWORD: &str = "voicexml-basic-password-for-tests";
const ACCOUNT_PROMPT: &str = "Please enter your account number, followed by the pound key.";
const PIN_PROMPT: &str = "Please enter your PIN, followed by the pound key.";
const MENU_PROMPT: &str = "Press 1 for account balance, 2 for payments, or 9 to exit.";
const START: &str = "/voice/vxml/demo-pin";

/// A server with the built-in directory and the demo flows and accounts, its VoiceXML
/// front-end configured by `voicexml`.
async fn server(voicexml: impl FnOnce(&mut VoiceXmlConfig)) -> TestServer {
    let server = TestServer::builder()
        .identity(|store, clock| {
            crate::security::support::service(store, clock, LockoutPolicy::default())
        })
        .calls(|c| voicexml(&mut c.platforms.voicexml))
        .start()
        .await
        .unwrap();
    ivrauth_server::http::demo::install(server.state(), server.base_url())
        .await
        .unwrap();
    server
}

fn basic(v: &mut VoiceXmlConfig) {
    v.basic_username = Some(USER.to_owned());
    v.basic_passwords = vec![Secret::new(PASSWORD.to_owned())];
}

/// A client whose connections come from `source` (a loopback address).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    doc: String,
}

async fn answer(req: reqwest::RequestBuilder) -> Answer {
    let res = req.send().await.unwrap();
    Answer {
        status: res.status(),
        headers: res.headers().clone(),
        doc: res.text().await.unwrap(),
    }
}

/// The start request as a platform sends it: a form POST with the caller's number.
fn start(
    client: &reqwest::Client,
    server: &TestServer,
    credentials: Option<(&str, &str)>,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(server.url(START))
        .form(&[("ani", "+15550100777"), ("dnis", "+15550100000")]);
    if let Some((user, password)) = credentials {
        req = req.basic_auth(user, Some(password));
    }
    req
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
}

/// The `next` of the `<submit>` inside `<parent>` (`filled`, `noinput`, `catch`).
fn submit_in(doc: &str, parent: &str) -> String {
    let start = doc
        .find(&format!("<{parent}"))
        .unwrap_or_else(|| panic!("no <{parent}> in {doc}"));
    let rest = &doc[start..];
    let sub = rest.find("<submit").unwrap();
    let rest = &rest[sub..];
    let at = rest.find("next=\"").unwrap() + 6;
    let end = rest[at..].find('"').unwrap() + at;
    unescape(&rest[at..end])
}

/// The value of query parameter `name` in `url`.
fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    let (_, v) = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"));
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

/// `url` with query parameter `name` set to `value` (already encoded).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={value}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

async fn keys(client: &reqwest::Client, url: &str, digits: &str) -> Answer {
    answer(client.post(url).form(&[("digits", digits)])).await
}

/// The call went on: the answer asks the next question (or says `expected`).
fn went_on(a: &Answer, expected: &str) {
    assert_eq!(a.status, StatusCode::OK, "{}", a.doc);
    assert!(a.doc.contains(expected), "{expected:?} not in {}", a.doc);
}

/// The answer is a refusal: no question, and the call is over.
fn refused(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "{}", a.doc);
    for prompt in [ACCOUNT_PROMPT, PIN_PROMPT, MENU_PROMPT] {
        assert!(!a.doc.contains(prompt), "{}", a.doc);
    }
    assert!(!a.doc.contains("<submit"), "{}", a.doc);
}

#[tokio::test]
async fn voicexml_without_credential_is_refused() {
    let server = server(|_| {}).await;
    let client = server.http();
    // The start URL, by POST and by GET, with or without Basic credentials.
    refused(
        &answer(start(client, &server, None)).await,
        StatusCode::FORBIDDEN,
    );
    refused(
        &answer(start(client, &server, Some((USER, PASSWORD)))).await,
        StatusCode::FORBIDDEN,
    );
    refused(
        &answer(client.get(server.url(START))).await,
        StatusCode::FORBIDDEN,
    );
    // A later URL too, even one carrying a session.
    let later = server.url(&format!("{START}?t=2&s=x&c=y&k=z"));
    refused(&keys(client, &later, "10001").await, StatusCode::FORBIDDEN);
    let a = answer(client.post(format!("{later}&ev=hangup"))).await;
    refused(&a, StatusCode::FORBIDDEN);
    // The refusal is a VoiceXML document that ends the call.
    assert!(a.doc.contains("<disconnect"), "{}", a.doc);

    // The same server with a credential configured takes calls (the refusal above was the
    // missing credential, not something else about the request).
    let server = crate::security::voicexml::server(basic).await;
    went_on(
        &answer(start(server.http(), &server, Some((USER, PASSWORD)))).await,
        ACCOUNT_PROMPT,
    );
}

#[tokio::test]
async fn voicexml_with_basic_credential_completes_the_demo_call() {
    let server = server(basic).await;
    let client = server.http();
    let a = answer(start(client, &server, Some((USER, PASSWORD)))).await;
    went_on(&a, ACCOUNT_PROMPT);
    // Later URLs need no Basic credentials: the per-call secret in them carries the call.
    let a = keys(client, &submit_in(&a.doc, "filled"), "10001").await;
    went_on(&a, PIN_PROMPT);
    let a = keys(client, &submit_in(&a.doc, "filled"), "2468").await;
    went_on(&a, "Welcome, Ada.");
    assert!(a.doc.contains(MENU_PROMPT), "{}", a.doc);
    let a = keys(client, &submit_in(&a.doc, "filled"), "9").await;
    went_on(&a, "Goodbye.");
    assert!(a.doc.contains("<disconnect"), "{}", a.doc);
    assert!(!a.doc.contains("<submit"), "{}", a.doc);

    // A platform that fetches the start document with GET and Basic works the same.
    let a = answer(
        client
            .get(server.url(START))
            .basic_auth(USER, Some(PASSWORD)),
    )
    .await;
    went_on(&a, ACCOUNT_PROMPT);
}

#[tokio::test]
async fn voicexml_wrong_basic_credential_is_refused() {
    let server = server(|v| {
        basic(v);
        // During a rotation the previous password works too.
        v.basic_passwords
            .push(Secret::new("previous-password".to_owned()));
    })
    .await;
    let client = server.http();
    let challenged = |a: &Answer| {
        refused(a, StatusCode::UNAUTHORIZED);
        let challenge = a.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
    };
    // No credentials: a challenge, so clients that wait for one send them.
    challenged(&answer(start(client, &server, None)).await);
    challenged(&answer(start(client, &server, Some((USER, "wrong")))).await);
    challenged(&answer(start(client, &server, Some(("avaya", PASSWORD)))).await);
    challenged(&answer(start(client, &server, Some((USER, "")))).await);
    challenged(
        &answer(
            client
                .post(server.url(START))
                .header("authorization", "Basic !!not-base64"),
        )
        .await,
    );
    challenged(&answer(client.post(server.url(START)).bearer_auth(PASSWORD)).await);
    went_on(
        &answer(start(client, &server, Some((USER, "previous-password")))).await,
        ACCOUNT_PROMPT,
    );
    went_on(
        &answer(start(client, &server, Some((USER, PASSWORD)))).await,
        ACCOUNT_PROMPT,
    );
}

#[tokio::test]
async fn voicexml_source_allow_list() {
    // The server listens on 127.0.0.1; clients connect from 127.0.0.1 or 127.0.0.2.
    let here = client_from("127.0.0.1");
    let elsewhere = client_from("127.0.0.2");
    let server = server(|v| v.allowed_sources = vec!["127.0.0.1/32".parse().unwrap()]).await;
    // An allow-list alone admits its sources, without Basic credentials.
    let a = answer(start(&here, &server, None)).await;
    went_on(&a, ACCOUNT_PROMPT);
    let next = submit_in(&a.doc, "filled");
    refused(
        &answer(start(&elsewhere, &server, Some((USER, PASSWORD)))).await,
        StatusCode::FORBIDDEN,
    );
    // Every request must come from the list, later URLs too.
    refused(
        &keys(&elsewhere, &next, "10001").await,
        StatusCode::FORBIDDEN,
    );
    // X-Forwarded-For is not believed by default.
    refused(
        &answer(start(&elsewhere, &server, None).header("x-forwarded-for", "127.0.0.1")).await,
        StatusCode::FORBIDDEN,
    );
    went_on(&keys(&here, &next, "10001").await, PIN_PROMPT);

    // Behind a trusted proxy, the right-most forwarded address that is not a proxy counts.
    let server = crate::security::voicexml::server(|v| {
        v.allowed_sources = vec!["10.0.0.0/8".parse().unwrap()];
        v.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    refused(
        &answer(start(&here, &server, None)).await,
        StatusCode::FORBIDDEN,
    );
    went_on(
        &answer(start(&here, &server, None).header("x-forwarded-for", "10.1.2.3")).await,
        ACCOUNT_PROMPT,
    );
    refused(
        &answer(start(&here, &server, None).header("x-forwarded-for", "10.1.2.3, 192.0.2.1")).await,
        StatusCode::FORBIDDEN,
    );
    // Only from the trusted proxy: the same header from another peer is ignored.
    refused(
        &answer(start(&elsewhere, &server, None).header("x-forwarded-for", "10.1.2.3")).await,
        StatusCode::FORBIDDEN,
    );

    // Both configured: a start request needs both.
    let server = crate::security::voicexml::server(|v| {
        basic(v);
        v.allowed_sources = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    refused(
        &answer(start(&here, &server, None)).await,
        StatusCode::UNAUTHORIZED,
    );
    refused(
        &answer(start(&elsewhere, &server, Some((USER, PASSWORD)))).await,
        StatusCode::FORBIDDEN,
    );
    went_on(
        &answer(start(&here, &server, Some((USER, PASSWORD)))).await,
        ACCOUNT_PROMPT,
    );
}

#[tokio::test]
async fn voicexml_per_call_secret_binds_later_turns() {
    let server = server(basic).await;
    let client = server.http();
    let a = answer(start(client, &server, Some((USER, PASSWORD)))).await;
    let next = submit_in(&a.doc, "filled");
    let hangup = submit_in(&a.doc, "catch");
    let other = answer(start(client, &server, Some((USER, PASSWORD)))).await;
    let other_secret = param(&submit_in(&other.doc, "filled"), "k");
    let secret = param(&next, "k");
    assert_ne!(secret, other_secret);

    // A later URL with a wrong secret is refused, even with the Basic credentials: the
    // apology and a hang-up (200, as for any broken session), never the next question.
    let mut altered = secret.clone().into_bytes();
    altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for url in [
        with_param(&next, "k", &altered),
        with_param(&next, "k", &other_secret),
        with_param(&next, "k", ""),
    ] {
        let a = answer(
            client
                .post(&url)
                .basic_auth(USER, Some(PASSWORD))
                .form(&[("digits", "10001")]),
        )
        .await;
        refused(&a, StatusCode::OK);
        assert!(a.doc.contains("<disconnect"), "{}", a.doc);
    }
    // A hang-up with a wrong secret does not end the call.
    let a = answer(
        client
            .post(with_param(&hangup, "k", &other_secret))
            .basic_auth(USER, Some(PASSWORD)),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // The call's own URL still works.
    went_on(&keys(client, &next, "10001").await, PIN_PROMPT);
}

#[tokio::test]
async fn voicexml_call_secret_is_stored_hashed() {
    let server = server(basic).await;
    let client = server.http();
    let a = answer(start(client, &server, Some((USER, PASSWORD)))).await;
    let a = keys(client, &submit_in(&a.doc, "filled"), "10001").await;
    went_on(&a, PIN_PROMPT);
    // A wrong PIN: a durable turn, so the call's row is written.
    let pin_url = submit_in(&a.doc, "filled");
    let secret = param(&pin_url, "k");
    let call_id = param(&pin_url, "c");
    let first = keys(client, &pin_url, "1111").await;
    went_on(&first, PIN_PROMPT);
    // The platform retries that turn: the stored answer comes back, its URLs still
    // carrying the call's secret (from the retried request, not from the store).
    let again = keys(client, &pin_url, "1111").await;
    assert_eq!(again.doc, first.doc);
    assert_eq!(param(&submit_in(&again.doc, "filled"), "k"), secret);
    went_on(
        &keys(client, &submit_in(&again.doc, "filled"), "2468").await,
        "Welcome, Ada.",
    );

    let row = server
        .store()
        .load_call(&format!("vxml:{call_id}"))
        .await
        .unwrap()
        .expect("the durable turn wrote the call's row");
    assert!(row.last_answer.is_some());
    assert!(!row.last_answer.unwrap().contains(&secret));
    // No byte of the database files holds the secret.
    let mut searched = 0;
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        searched += bytes.len();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the call's secret is in {}",
            path.display()
        );
    }
    assert!(searched > 0);
}
