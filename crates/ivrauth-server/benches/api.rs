//! Simulations per second through the real HTTP API (token check, flow cache, engine, one
//! outbound HTTP call to a local identity endpoint, audit and run records written durably to
//! SQLite), reported beside the bare loopback HTTP request rate of this machine measured in
//! the same run with the same client and concurrency.
//!
//! `cargo bench -p ivrauth-server --bench api` (optionally `-- REQUESTS CONCURRENCY`).
//! Bounded: a fixed number of requests, all to 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ivrauth_testkit::identity::IdentityServer;
use ivrauth_testkit::TestServer;

async fn drive(
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn() -> reqwest::RequestBuilder + Send + Sync>,
) -> Duration {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let res = make().send().await.unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                let _ = res.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(4_000);
    let concurrency = args.get(1).copied().unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Bare loopback: a handler that does nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
            axum::serve(listener, app).await.unwrap();
        });

        let idp = IdentityServer::start("testuser", "correctpassword", "eyJ.mock").await.unwrap();
        let server = TestServer::builder()
            .config(|c| {
                c.rate_limit_per_sec = u32::MAX;
                c.rate_limit_burst = u32::MAX;
            })
            .start()
            .await
            .unwrap();
        let (id, secret) = server.create_client("bench", &["flow:write", "flow:simulate"]).await.unwrap();
        let token = server.token(&id, &secret, None).await.unwrap();
        let mut flow: Value = serde_json::from_str(include_str!("../../../examples/seed-auth-flow.json")).unwrap();
        flow["nodes"]["http_auth"]["properties"]["url"] = json!(idp.url());
        let created: Value = server
            .http()
            .post(server.url("/api/v2/flows"))
            .bearer_auth(&token)
            .json(&flow)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let body = json!({"flowId": created["id"], "input": {"username": "testuser", "password": "correctpassword"}});

        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
        let bare_client = client.clone();
        let bare_url = format!("http://{bare_addr}/");
        let sim_url = server.url("/api/v2/flows/simulate");

        // Warm up both paths (connections, flow cache).
        let _ = drive(200, concurrency, Arc::new({ let c = bare_client.clone(); let u = bare_url.clone(); move || c.get(&u) })).await;
        let mk_sim: Arc<dyn Fn() -> reqwest::RequestBuilder + Send + Sync> = Arc::new({
            let c = client.clone();
            move || c.post(&sim_url).bearer_auth(&token).json(&body)
        });
        let _ = drive(200, concurrency, mk_sim.clone()).await;

        let bare = drive(n, concurrency, Arc::new(move || bare_client.get(&bare_url))).await;
        let sims = drive(n, concurrency, mk_sim).await;
        let bare_rate = n as f64 / bare.as_secs_f64();
        let sim_rate = n as f64 / sims.as_secs_f64();
        println!("requests per measurement: {n}, concurrency: {concurrency}, cores: {}", std::thread::available_parallelism().map_or(0, |p| p.get()));
        println!("bare loopback HTTP:            {bare_rate:>9.0} requests/s");
        println!("simulations through the API:   {sim_rate:>9.0} simulations/s ({:.1}% of bare loopback)", 100.0 * sim_rate / bare_rate);
        println!("identity endpoint requests:    {}", idp.requests());
    });
}
