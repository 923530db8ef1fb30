//! The crate graph is the architecture: the domain core and the contracts must never be able
//! to compile against a runtime, a web framework, a database driver or an HTTP client.
//! This reads `cargo metadata` and fails on a forbidden edge, direct or transitive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

const FORBIDDEN: &[&str] = &[
    "tokio", "axum", "hyper", "sqlx", "reqwest", "mio", "ldap3", "lettre",
];

fn normal_deps_closure(meta: &Value, root: &str) -> BTreeSet<String> {
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let by_id: HashMap<&str, &Value> = nodes
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let root_id = name_of
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        for dep in by_id[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(name_of[pkg].to_owned()) {
                stack.push(pkg);
            }
        }
    }
    seen
}

#[test]
fn core_and_proto_do_no_io() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    for krate in ["ivrauth-core", "ivrauth-proto"] {
        let deps = normal_deps_closure(&meta, krate);
        assert!(
            deps.len() > 3,
            "{krate}: the dependency walk found too little: {deps:?}"
        );
        let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
        assert!(
            bad.is_empty(),
            "{krate} depends (perhaps transitively) on {bad:?}"
        );
        for inner in [
            "ivrauth-store",
            "ivrauth-connect",
            "ivrauth-server",
            "ivrauth",
        ] {
            assert!(!deps.contains(inner), "{krate} must not depend on {inner}");
        }
    }
    // The server is the only crate that knows HTTP frameworks.
    for krate in ["ivrauth-store", "ivrauth-connect"] {
        let deps = normal_deps_closure(&meta, krate);
        assert!(!deps.contains("axum"), "{krate} must not depend on axum");
        assert!(
            !deps.contains("ivrauth-server"),
            "{krate} must not depend on the server"
        );
    }
}
