#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Security properties of the outbound adapters, each test named after the property it
//! proves: outbound requests cannot reach link-local or cloud metadata addresses, by IP
//! literal or by a name that resolves (or re-resolves) there, unless an allow-list entry
//! names the address; loopback and private addresses stay reachable by default.
//!
//! Names are made to resolve where a test needs them with a scripted [`HostLookup`], never
//! by editing the system's hosts file; servers are real, on 127.0.0.1:0.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use ivrauth_connect::http_identity::{HttpIdentity, HttpIdentityConfig};
use ivrauth_connect::{HostLookup, HttpConfig, HttpExecutor, RecordingSleeper, SystemClock};
use ivrauth_core::http::{HttpFailure, HttpFailureKind, HttpRequest, HttpResult};
use ivrauth_core::identity::{AccountNumber, IdentityError, IdentityProvider};
use ivrauth_core::secret::Secret;
use tokio::net::TcpListener;

/// Answers each name with its scripted answers in turn (the last one repeats) and records
/// every name asked; unknown names do not resolve.
#[derive(Default)]
struct ScriptedLookup {
    answers: HashMap<String, Vec<Vec<IpAddr>>>,
    asked: Mutex<Vec<String>>,
}

impl ScriptedLookup {
    fn with(mut self, name: &str, answers: &[&[&str]]) -> Self {
        let answers = answers
            .iter()
            .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect();
        self.answers.insert(name.to_owned(), answers);
        self
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl HostLookup for ScriptedLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        let n = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(host.to_owned());
            asked.iter().filter(|h| *h == host).count() - 1
        };
        match self.answers.get(host) {
            Some(answers) => Ok(answers[n.min(answers.len() - 1)].clone()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such name in the script",
            )),
        }
    }
}

fn executor(allowed_hosts: Option<&[&str]>, lookup: Arc<ScriptedLookup>) -> HttpExecutor {
    let config = HttpConfig {
        allowed_hosts: allowed_hosts.map(|l| l.iter().map(|h| (*h).to_owned()).collect()),
        ..HttpConfig::default()
    };
    HttpExecutor::with_lookup(
        config,
        Arc::new(RecordingSleeper::new()),
        Arc::new(SystemClock),
        lookup,
    )
    .unwrap()
}

fn get(url: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".to_owned(),
        url: url.to_owned(),
        headers: vec![],
        body: None,
        // Short, so that a request the guard wrongly let through fails the test quickly.
        timeout_ms: 2_000,
        carries_secret: false,
    }
}

/// A server on 127.0.0.1 answering every request 200 and closing the connection (so that
/// every request connects, and resolves, anew); returns its port and the request count.
async fn server() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(any(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async {
            Response::builder()
                .status(200)
                .header("connection", "close")
                .body(Body::from("ok"))
                .unwrap()
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr.port(), hits)
}

fn refused(r: &HttpResult) -> &HttpFailure {
    match r {
        HttpResult::Failed(f) if f.kind == HttpFailureKind::DisallowedHost => f,
        other => panic!("expected a disallowed_host failure, got {other:?}"),
    }
}

fn status(r: &HttpResult) -> u16 {
    match r {
        HttpResult::Response(resp) => resp.status,
        HttpResult::Failed(f) => panic!("expected a response, got {f:?}"),
    }
}

#[tokio::test]
async fn link_local_metadata_address_is_refused() {
    let lookup = Arc::new(ScriptedLookup::default());
    let exec = executor(None, lookup.clone());
    let r = exec
        .execute(&get(
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        ))
        .await;
    let f = refused(&r);
    assert!(
        f.message
            .contains("host 169.254.169.254 is a link-local address"),
        "{}",
        f.message
    );
    assert!(f.message.contains("allow-list entry"), "{}", f.message);

    // The other metadata endpoints and spellings of the same address.
    for (url, class) in [
        ("http://[fe80::a9fe:a9fe]/", "link-local"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://100.100.100.200/latest/meta-data/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ("http://2852039166/", "link-local"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
    ] {
        let r = exec.execute(&get(url)).await;
        let f = refused(&r);
        assert!(f.message.contains(class), "{url}: {}", f.message);
    }
    assert!(lookup.asked().is_empty(), "{:?}", lookup.asked());
}

#[tokio::test]
async fn name_resolving_to_link_local_is_refused() {
    let lookup = Arc::new(
        ScriptedLookup::default()
            .with("metadata.internal.test", &[&["169.254.169.254"]])
            .with("imds6.internal.test", &[&["fd00:ec2::254"]])
            .with("mapped.internal.test", &[&["::ffff:169.254.169.254"]]),
    );
    for allowed in [None, Some(&["*.internal.test"][..])] {
        let exec = executor(allowed, lookup.clone());
        let r = exec
            .execute(&get("http://metadata.internal.test/latest/meta-data/"))
            .await;
        let f = refused(&r);
        assert!(
            f.message
                .contains("host metadata.internal.test resolves to a link-local address"),
            "{}",
            f.message
        );
        // The address a name resolved to is not told.
        assert!(!f.message.contains("169.254.169.254"), "{}", f.message);

        let r = exec.execute(&get("http://imds6.internal.test/")).await;
        assert!(refused(&r).message.contains("cloud metadata"), "{r:?}");
        let r = exec.execute(&get("http://mapped.internal.test/")).await;
        assert!(refused(&r).message.contains("link-local"), "{r:?}");
    }
    // Refused at connect time: the executor's own resolver looked each name up.
    assert_eq!(
        lookup
            .asked()
            .iter()
            .filter(|h| *h == "metadata.internal.test")
            .count(),
        2
    );
}

#[tokio::test]
async fn name_re_resolving_to_a_refused_address_is_refused() {
    let (port, hits) = server().await;
    // First answer loopback, then the metadata address (DNS rebinding).
    let lookup = Arc::new(
        ScriptedLookup::default().with("rebind.test", &[&["127.0.0.1"], &["169.254.169.254"]]),
    );
    let exec = executor(None, lookup.clone());
    let url = format!("http://rebind.test:{port}/x");
    assert_eq!(status(&exec.execute(&get(&url)).await), 200);
    let r = exec.execute(&get(&url)).await;
    assert!(
        refused(&r).message.contains("resolves to a link-local"),
        "{r:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(lookup.asked(), vec!["rebind.test", "rebind.test"]);
}

#[tokio::test]
async fn name_with_some_refused_addresses_is_reached_through_the_others() {
    let (port, hits) = server().await;
    let lookup = Arc::new(
        ScriptedLookup::default().with("mixed.test", &[&["169.254.169.254", "127.0.0.1"]]),
    );
    let exec = executor(None, lookup);
    let r = exec
        .execute(&get(&format!("http://mixed.test:{port}/x")))
        .await;
    assert_eq!(status(&r), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// `0.0.0.0` is a refused address that, on Linux, reaches the local host: it lets a test
/// show a refused range opened by an entry with a real connection.
#[tokio::test]
async fn explicit_allow_list_entry_opens_a_refused_range() {
    let (port, hits) = server().await;
    let lookup = Arc::new(ScriptedLookup::default().with("zero.test", &[&["0.0.0.0"]]));
    let literal = format!("http://0.0.0.0:{port}/x");
    let named = format!("http://zero.test:{port}/x");

    // Shut by default, by a name entry alone, and by a range wider than the refused one.
    for allowed in [
        None,
        Some(&["zero.test"][..]),
        Some(&["zero.test", "0.0.0.0/0"][..]),
    ] {
        let exec = executor(allowed, lookup.clone());
        let r = exec.execute(&get(&literal)).await;
        assert!(refused(&r).message.contains("unspecified"), "{allowed:?}");
        let r = exec.execute(&get(&named)).await;
        assert!(refused(&r).message.contains("unspecified"), "{allowed:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Open when an entry names the address or a range inside the refused one.
    let exec = executor(Some(&["0.0.0.0"]), lookup.clone());
    assert_eq!(status(&exec.execute(&get(&literal)).await), 200);
    assert_eq!(status(&exec.execute(&get(&named)).await), 200);
    let exec = executor(Some(&["zero.test", "0.0.0.0/8"]), lookup);
    assert_eq!(status(&exec.execute(&get(&named)).await), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn loopback_and_private_still_allowed_by_default() {
    let (port, hits) = server().await;
    let lookup = Arc::new(
        ScriptedLookup::default()
            .with("localhost", &[&["127.0.0.1"]])
            .with("private.test", &[&["10.255.255.1"]]),
    );
    let exec = executor(None, lookup.clone());
    assert_eq!(
        status(
            &exec
                .execute(&get(&format!("http://127.0.0.1:{port}/x")))
                .await
        ),
        200
    );
    assert_eq!(
        status(
            &exec
                .execute(&get(&format!("http://localhost:{port}/x")))
                .await
        ),
        200
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Private (RFC 1918) addresses are tried, not refused: whatever becomes of the
    // connection, it is not a disallowed host.
    for url in ["http://10.255.255.1:9/x", "http://private.test:9/x"] {
        let mut req = get(url);
        req.timeout_ms = 200;
        match exec.execute(&req).await {
            HttpResult::Failed(f) => assert_ne!(f.kind, HttpFailureKind::DisallowedHost, "{f:?}"),
            HttpResult::Response(_) => {}
        }
    }
    assert!(lookup.asked().contains(&"private.test".to_owned()));
}

#[tokio::test]
async fn cidr_entries_match_the_addresses_a_name_resolves_to() {
    let (port, hits) = server().await;
    let lookup = Arc::new(ScriptedLookup::default().with("svc.corp.test", &[&["127.0.0.1"]]));
    let url = format!("http://svc.corp.test:{port}/x");

    let exec = executor(Some(&["127.0.0.0/8"]), lookup.clone());
    assert_eq!(status(&exec.execute(&get(&url)).await), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let exec = executor(Some(&["10.0.0.0/8"]), lookup.clone());
    let r = exec.execute(&get(&url)).await;
    assert!(
        refused(&r)
            .message
            .contains("host svc.corp.test is not on the allow-list"),
        "{r:?}"
    );
    // A name no entry could allow is refused before it is looked up.
    let exec = executor(Some(&["api.example.com"]), lookup.clone());
    let r = exec.execute(&get(&url)).await;
    assert!(
        refused(&r).message.contains("not on the allow-list"),
        "{r:?}"
    );
    assert_eq!(lookup.asked().len(), 2);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A range with host bits set is refused when the executor is built, with the fix.
    let config = HttpConfig {
        allowed_hosts: Some(vec!["10.1.2.3/8".to_owned()]),
        ..HttpConfig::default()
    };
    let err = HttpExecutor::new(
        config,
        Arc::new(RecordingSleeper::new()),
        Arc::new(SystemClock),
    )
    .unwrap_err();
    assert!(err.to_string().contains("write 10.0.0.0/8"), "{err}");
}

#[tokio::test]
async fn identity_provider_cannot_reach_a_metadata_address() {
    let p = HttpIdentity::new(HttpIdentityConfig {
        url: "https://169.254.169.254/api/auth".to_owned(),
        health_url: Some("http://[fd00:ec2::254]/latest/meta-data/".to_owned()),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let verify = p
        .verify(
            &AccountNumber::parse("10001").unwrap(),
            &Secret::new("2468".to_owned()),
        )
        .await;
    match verify {
        Err(IdentityError::Unavailable(m)) => {
            assert!(m.contains("link-local"), "{m}");
            assert!(!m.contains("2468"), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match p.health().await {
        Err(IdentityError::Unavailable(m)) => assert!(m.contains("cloud metadata"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
