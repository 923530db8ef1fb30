//! The server's layers as a failing test, as `ivrauth-core/tests/architecture.rs` does for
//! the crates: the application services (`src/app/`) know no HTTP (no axum, hyper, tower,
//! status codes, nor the HTTP and telephony modules), the REST layer (`src/http/`) knows
//! no telephony platform, no platform file (`src/calls/`) reaches into another, and no
//! two modules of one tree import each other, directly or round a circle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files of `dir`, recursively, with their code (comment lines dropped, so that
/// documentation may name what the code must not use).
fn code_of(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned();
                out.insert(name, code.join("\n"));
            }
        }
    }
    out
}

/// Whether `code` names `path` as a path prefix (`path::`, `path;`, `path,`, `path}`,
/// `path as`).
fn names(code: &str, path: &str) -> bool {
    code.match_indices(path).any(|(i, _)| {
        let before = code[..i].chars().last();
        let after = &code[i + path.len()..];
        let starts_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let ends_path = after.starts_with("::")
            || after.starts_with(';')
            || after.starts_with(',')
            || after.starts_with('}')
            || after.starts_with(" as ");
        starts_word && ends_path
    })
}

/// Whether `code` has `word` as a whole word (or path).
fn mentions(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(i, _)| {
        !code[..i].chars().last().is_some_and(ident)
            && !code[i + word.len()..].chars().next().is_some_and(ident)
    })
}

/// Edges between the sibling modules of one tree (`tree` is `app`, `http` or `calls`).
fn edges(tree: &str, files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: Vec<&String> = files.keys().filter(|m| *m != "mod").collect();
    let mut graph = BTreeMap::new();
    for (from, code) in files.iter().filter(|(m, _)| *m != "mod") {
        let to: BTreeSet<String> = modules
            .iter()
            .filter(|m| **m != from)
            .filter(|m| {
                names(code, &format!("super::{m}")) || names(code, &format!("crate::{tree}::{m}"))
            })
            .map(|m| (*m).clone())
            .collect();
        graph.insert(from.clone(), to);
    }
    graph
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn application_services_know_no_http() {
    let files = code_of(&src().join("app"));
    assert!(
        files.len() >= 8,
        "the walk of src/app found too little: {:?}",
        files.keys()
    );
    let forbidden = [
        "axum",
        "hyper",
        "tower",
        "tower_http",
        "crate::http",
        "crate::calls",
        "StatusCode",
        "ApiError",
    ];
    let mut found = Vec::new();
    for (file, code) in &files {
        for word in forbidden {
            if mentions(code, word) {
                found.push(format!("src/app/{file}.rs uses {word}"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_rest_layer_knows_no_telephony_platform() {
    let files = code_of(&src().join("http"));
    assert!(files.len() >= 6, "{:?}", files.keys());
    let found: Vec<&String> = files
        .iter()
        .filter(|(_, code)| names(code, "crate::calls"))
        .map(|(f, _)| f)
        .collect();
    assert!(
        found.is_empty(),
        "src/http files using crate::calls: {found:?}"
    );
}

#[test]
fn no_platform_reaches_into_another() {
    let files = code_of(&src().join("calls"));
    let platforms = ["twilio", "jambonz", "vxml", "decision_api"];
    for p in platforms {
        assert!(files.contains_key(p), "no src/calls/{p}.rs");
    }
    let graph = edges("calls", &files);
    for p in platforms {
        let reached: Vec<&String> = graph[p]
            .iter()
            .filter(|m| platforms.contains(&m.as_str()))
            .collect();
        assert!(
            reached.is_empty(),
            "src/calls/{p}.rs reaches into {reached:?}"
        );
    }
}

#[test]
fn no_import_circles_between_modules() {
    for tree in ["app", "http", "calls"] {
        let files = code_of(&src().join(tree));
        let graph = edges(tree, &files);
        // The walk sees the edges it must: e.g. turns use the engine host.
        if tree == "app" {
            assert!(graph["turn"].contains("host"), "{graph:?}");
            assert!(graph["simulate"].contains("host"), "{graph:?}");
        }
        assert_eq!(circle(&graph), None, "an import circle in src/{tree}");
    }
    // The trees themselves: the application layer is below both HTTP faces.
    let app = code_of(&src().join("app"));
    let http = code_of(&src().join("http"));
    let uses =
        |files: &BTreeMap<String, String>, path: &str| files.values().any(|code| names(code, path));
    assert!(
        uses(&http, "crate::app"),
        "the REST layer should use the services"
    );
    assert!(!uses(&app, "crate::http") && !uses(&app, "crate::calls"));
}

#[test]
fn the_circle_finder_finds_circles() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(circle(&graph).is_some());
    graph.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(circle(&graph), None);
    assert!(names("use super::auth::{x};", "super::auth"));
    assert!(!names("use super::authority;", "super::auth"));
    assert!(mentions("fn f() -> Result<(), ApiError> {", "ApiError"));
    assert!(!mentions("ApiErrorBody", "ApiError"));
}

/// Routes are registered with `utoipa_axum`'s `routes!(handler)`, which adds the handler's
/// OpenAPI operation with it, so none can be served undocumented: no `.route(`,
/// `.route_service(` or `.nest(` anywhere in the server's source outside its unit tests.
/// (Test probes mounted with `router_with` are the tests' own.)
#[test]
fn every_route_is_registered_with_its_operation() {
    let files = code_of(&src());
    let mut registered = 0;
    for (file, code) in &files {
        // Unit-test modules close a file; they may mount probes of their own.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        for forbidden in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !code.contains(forbidden),
                "src/{file}.rs registers a route without its OpenAPI operation (`{forbidden}`); use `.routes(routes!(handler))`"
            );
        }
        registered += code.matches("routes!(").count();
    }
    // The walk found the registrations (twelve groups today).
    assert!(registered >= 12, "found {registered} routes! registrations");
}
