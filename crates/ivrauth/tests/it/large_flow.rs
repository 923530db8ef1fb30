#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `ivrauth flow validate` on very large documents: a 100,000-node flow is refused quickly
//! with a clear message; a flow at the node limit is validated.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use ivrauth_core::flow::MAX_NODES;

/// A straight chain start → n1 → … → end with `n` nodes in all.
fn chain(n: usize) -> String {
    let mut nodes = String::new();
    let mut edges = String::new();
    for i in 0..n {
        let (ty, props) = match i {
            0 => ("start", "{}".to_owned()),
            i if i == n - 1 => ("end", r#"{"statusCode": 200}"#.to_owned()),
            i => (
                "setProperties",
                format!(
                    r#"{{"properties": [{{"name": "p{i}", "value": "{{{{p{}}}}}x"}}]}}"#,
                    i.saturating_sub(1).max(1)
                ),
            ),
        };
        if i > 0 {
            nodes.push(',');
            edges.push(',');
            write!(edges, r#"{{"source": "n{}", "target": "n{i}"}}"#, i - 1).unwrap();
        }
        write!(
            nodes,
            r#""n{i}": {{"id": "n{i}", "type": "{ty}", "properties": {props}}}"#
        )
        .unwrap();
    }
    let edges = edges.trim_start_matches(',');
    format!(r#"{{"name": "chain", "startNode": "n0", "nodes": {{{nodes}}}, "edges": [{edges}]}}"#)
}

fn validate(dir: &Path, name: &str, doc: &str) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, doc).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ivrauth"))
        .args(["flow", "validate"])
        .arg(&file)
        .output()
        .unwrap()
}

#[test]
fn a_100000_node_flow_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), "huge.json", &chain(100_000));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("too_many_nodes") && stdout.contains("100000"),
        "{stdout}"
    );
}

#[test]
fn a_flow_at_the_node_limit_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), "limit.json", &chain(MAX_NODES));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn a_huge_number_of_problems_is_capped() {
    // Every edge targets a missing node: the report stops at the cap instead of growing
    // (and hinting) without bound.
    let doc = chain(MAX_NODES).replace(r#""target": "n"#, r#""target": "missing"#);
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), "broken.json", &doc);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("too_many_problems"),
        "{}",
        &stdout[stdout.len().saturating_sub(500)..]
    );
    assert!(stdout.lines().count() <= ivrauth_core::flow::MAX_ERRORS + 10);
}
