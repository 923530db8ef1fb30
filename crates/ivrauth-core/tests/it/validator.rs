//! One failing case per validator rule, each built by editing the seed's flow, plus the
//! seed itself (valid, with the two warnings its key/id mix deserves).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use ivrauth_core::flow::{validate, Report};

fn seed() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed-auth-flow.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn report(doc: &Value) -> Report {
    let doc = ivrauth_proto::flow::document_from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    validate(&doc)
}

/// Assert that `doc` has an error with `code` at `path`, whose message contains `quote`.
#[track_caller]
fn has_error(doc: &Value, code: &str, path: &str, quote: &str) {
    let r = report(doc);
    let found = r
        .errors
        .iter()
        .any(|d| d.code == code && d.path == path && d.message.contains(quote));
    assert!(
        found,
        "expected {code} at {path} quoting {quote:?}; got {:#?}",
        r.errors
    );
}

fn edit(f: impl FnOnce(&mut Value)) -> Value {
    let mut d = seed();
    f(&mut d);
    d
}

#[test]
fn seed_flow_is_valid_with_key_id_warnings() {
    let r = report(&seed());
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let codes: Vec<(&str, Option<&str>)> = r
        .warnings
        .iter()
        .map(|w| (w.code.as_str(), w.node_id.as_deref()))
        .collect();
    assert!(
        codes.contains(&("node_key_differs_from_id", Some("http_auth_provider"))),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("node_key_differs_from_id", Some("check_auth_response"))),
        "{codes:?}"
    );
    assert_eq!(r.warnings.len(), 2, "{:#?}", r.warnings);
}

#[test]
fn nodes_as_array_are_accepted() {
    let d = edit(|d| {
        let nodes: Vec<Value> = d["nodes"].as_object().unwrap().values().cloned().collect();
        d["nodes"] = Value::Array(nodes);
        // In array form the key is the id, so edges use ids.
        for e in d["edges"].as_array_mut().unwrap() {
            for end in ["source", "target"] {
                let v = e[end]
                    .as_str()
                    .unwrap()
                    .replace("http_auth", "http_auth_provider")
                    .replace("check_auth", "check_auth_response");
                e[end] = json!(v);
            }
        }
    });
    let r = report(&d);
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
}

#[test]
fn missing_start_node() {
    has_error(
        &edit(|d| {
            d.as_object_mut().unwrap().remove("startNode");
        }),
        "missing_start_node",
        "/startNode",
        "startNode",
    );
}

#[test]
fn unknown_start_node() {
    has_error(
        &edit(|d| d["startNode"] = json!("begin")),
        "unknown_start_node",
        "/startNode",
        "`begin`",
    );
}

#[test]
fn unknown_edge_source_and_target() {
    let d = edit(|d| {
        d["edges"][1]["source"] = json!("http_oops");
        d["edges"][6]["target"] = json!("end_sucess");
    });
    has_error(&d, "unknown_edge_source", "/edges/1/source", "`http_oops`");
    has_error(
        &d,
        "unknown_edge_target",
        "/edges/6/target",
        "`end_sucess` matches no node, did you mean `end_success`?",
    );
}

#[test]
fn duplicate_ids() {
    has_error(
        &edit(|d| d["nodes"]["handle_reset"]["id"] = json!("bind_session")),
        "duplicate_node_id",
        "/nodes/handle_reset/id",
        "`bind_session`",
    );
}

#[test]
fn unknown_node_type() {
    has_error(
        &edit(|d| d["nodes"]["http_auth"]["type"] = json!("htpp")),
        "unknown_node_type",
        "/nodes/http_auth/type",
        "did you mean `http`?",
    );
}

#[test]
fn unreachable_node() {
    let d = edit(|d| {
        d["nodes"]["orphan"] = json!({"id": "orphan", "type": "end", "properties": {}});
    });
    has_error(&d, "unreachable_node", "/nodes/orphan", "`orphan`");
}

#[test]
fn no_path_to_end() {
    let d = edit(|d| {
        d["nodes"]["spin"] =
            json!({"id": "spin", "type": "setProperties", "properties": {"properties": []}});
        d["edges"][3]["target"] = json!("spin");
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"source": "spin", "target": "spin"}));
    });
    has_error(&d, "no_path_to_end", "/nodes/spin", "`spin`");
}

#[test]
fn condition_edge_naming_no_condition() {
    has_error(
        &edit(|d| d["edges"][2]["condition"] = json!("auth_sucess")),
        "unknown_condition",
        "/edges/2/condition",
        "did you mean `auth_success`?",
    );
    has_error(
        &edit(|d| d["edges"][0]["condition"] = json!("x")),
        "unknown_condition",
        "/edges/0/condition",
        "not a condition node",
    );
}

#[test]
fn cel_syntax_error() {
    has_error(
        &edit(|d| {
            d["nodes"]["check_auth"]["properties"]["conditions"][0]["expression"] =
                json!("{{http_auth_provider.statusCode}} == = 200")
        }),
        "cel_syntax",
        "/nodes/check_auth/properties/conditions/0/expression",
        "auth_success",
    );
}

#[test]
fn unknown_variable() {
    has_error(
        &edit(|d| d["nodes"]["audit_log"]["properties"]["message"] = json!("user={{usernme}}")),
        "unknown_variable",
        "/nodes/audit_log/properties/message",
        "did you mean `username`?",
    );
    has_error(
        &edit(|d| {
            d["nodes"]["check_auth"]["properties"]["conditions"][0]["expression"] =
                json!("{{http_auth_provider.status}} == 200")
        }),
        "unknown_variable",
        "/nodes/check_auth/properties/conditions/0/expression",
        "no output `status`",
    );
}

#[test]
fn secure_value_in_log() {
    has_error(
        &edit(|d| d["nodes"]["audit_log"]["properties"]["message"] = json!("pw={{password}}")),
        "secure_value_logged",
        "/nodes/audit_log/properties/message",
        "`password`",
    );
}

#[test]
fn derived_secure_value_in_log() {
    // Taint flows through setProperties and templates: secureNewPassword → masked → log.
    let d = edit(|d| {
        d["nodes"]["handle_reset"]["properties"]["properties"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "hint", "value": "pw starts {{secureNewPassword}}"}));
        d["nodes"]["audit_log"]["properties"]["message"] = json!("hint={{hint}}");
    });
    has_error(
        &d,
        "secure_value_logged",
        "/nodes/audit_log/properties/message",
        "`hint`",
    );
}

#[test]
fn secure_value_output_in_log() {
    let d = edit(|d| {
        d["nodes"]["http_auth"]["properties"]["secureOutput"] = json!(["body.token"]);
        d["nodes"]["audit_log"]["properties"]["message"] = json!("token={{session.authToken}}");
    });
    has_error(
        &d,
        "secure_value_logged",
        "/nodes/audit_log/properties/message",
        "`session.authToken`",
    );
}

#[test]
fn secure_value_to_plain_http() {
    has_error(
        &edit(|d| {
            d["nodes"]["http_auth"]["properties"]["url"] = json!("http://idp.example.com/api/auth")
        }),
        "secure_value_insecure_url",
        "/nodes/http_auth/properties/url",
        "`password`",
    );
    // Loopback over plain http is allowed for local testing; https anywhere is fine.
    for ok in [
        "http://127.0.0.1:3999/api/auth",
        "http://[::1]:3999/x",
        "https://idp.example.com/api/auth",
    ] {
        let r = report(&edit(|d| {
            d["nodes"]["http_auth"]["properties"]["url"] = json!(ok)
        }));
        assert!(r.errors.is_empty(), "{ok}: {:#?}", r.errors);
    }
    // A host that is not literal cannot be proven loopback.
    has_error(
        &edit(|d| {
            d["nodes"]["http_auth"]["properties"]["url"] = json!("{{contact.idpUrl}}/api/auth")
        }),
        "secure_value_insecure_url",
        "/nodes/http_auth/properties/url",
        "literal",
    );
}

#[test]
fn secure_value_in_url() {
    has_error(
        &edit(|d| {
            d["nodes"]["http_auth"]["properties"]["url"] =
                json!("https://idp.example.com/auth?pw={{password}}")
        }),
        "secure_value_in_url",
        "/nodes/http_auth/properties/url",
        "`password`",
    );
}

#[test]
fn url_placeholders_in_scheme_host_or_port_are_refused() {
    for (url, quote) in [
        ("{{contact.idpUrl}}/api/auth", "`{{contact.idpUrl}}`"),
        (
            "https://{{username}}.example.com/api/auth",
            "`{{username}}`",
        ),
        (
            "https://idp.example.com:{{username}}/api/auth",
            "`{{username}}`",
        ),
        (
            "https://{{username}}@idp.example.com/api/auth",
            "`{{username}}`",
        ),
        ("{{username}}://idp.example.com/api/auth", "`{{username}}`"),
        ("https://idp.example.com{{username}}", "`{{username}}`"),
    ] {
        has_error(
            &edit(|d| d["nodes"]["http_auth"]["properties"]["url"] = json!(url)),
            "url_placeholder_position",
            "/nodes/http_auth/properties/url",
            quote,
        );
    }
    // In the path, the query or the fragment a placeholder is encoded, not refused.
    for url in [
        "https://idp.example.com/u/{{username}}/auth",
        "https://idp.example.com/auth?user={{username}}&x={{flow.traceId}}",
        "https://idp.example.com?user={{username}}",
        "https://idp.example.com/auth#{{username}}",
    ] {
        let r = report(&edit(|d| {
            d["nodes"]["http_auth"]["properties"]["url"] = json!(url)
        }));
        assert!(
            !r.errors
                .iter()
                .any(|e| e.code == "url_placeholder_position"),
            "{url}: {:#?}",
            r.errors
        );
    }
}

#[test]
fn follow_redirects_with_secret() {
    has_error(
        &edit(|d| d["nodes"]["http_auth"]["properties"]["followRedirects"] = json!(true)),
        "secure_value_follow_redirects",
        "/nodes/http_auth/properties/followRedirects",
        "`password`",
    );
}

#[test]
fn unknown_fields_with_hints() {
    let d = edit(|d| {
        d["startnode"] = json!("start");
        d["nodes"]["http_auth"]["properties"]["timout"] = json!(5000);
        d["edges"][0]["conditon"] = json!("x");
        d["nodes"]["end_success"]["status"] = json!(1);
    });
    has_error(
        &d,
        "unknown_field",
        "/startnode",
        "did you mean `startNode`?",
    );
    has_error(
        &d,
        "unknown_field",
        "/nodes/http_auth/properties/timout",
        "did you mean `timeout`?",
    );
    has_error(
        &d,
        "unknown_field",
        "/edges/0/conditon",
        "did you mean `condition`?",
    );
    has_error(&d, "unknown_field", "/nodes/end_success/status", "`status`");
    // Free-form places accept anything.
    let d = edit(|d| {
        d["metadata"]["anything"] = json!({"goes": true});
        d["inputSchema"]["properties"]["username"]["examples"] = json!(["a"]);
        d["nodes"]["http_auth"]["properties"]["headers"]["X-Custom"] = json!("1");
        d["nodes"]["http_auth"]["properties"]["body"]["extra"] = json!({"nested": "{{username}}"});
    });
    assert!(report(&d).errors.is_empty(), "{:#?}", report(&d).errors);
}

#[test]
fn format_version() {
    assert!(report(&edit(|d| d["formatVersion"] = json!(1)))
        .errors
        .is_empty());
    has_error(
        &edit(|d| d["formatVersion"] = json!(9)),
        "unsupported_format_version",
        "/formatVersion",
        "9",
    );
}

#[test]
fn warnings_are_not_errors() {
    let d = edit(|d| {
        d["nodes"]["http_auth"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("timeout");
    });
    let r = report(&d);
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.code == "http_without_timeout"
            && w.node_id.as_deref() == Some("http_auth_provider")));
}

#[test]
fn every_problem_in_one_pass() {
    let d = edit(|d| {
        d["startNode"] = json!("begin");
        d["nodes"]["http_auth"]["type"] = json!("htpp");
        d["edges"][6]["target"] = json!("nowhere");
        d["nodes"]["audit_log"]["properties"]["message"] = json!("pw={{password}}");
    });
    let codes: Vec<String> = report(&d).errors.into_iter().map(|e| e.code).collect();
    for want in [
        "unknown_start_node",
        "unknown_node_type",
        "unknown_edge_target",
        "secure_value_logged",
    ] {
        assert!(
            codes.iter().any(|c| c == want),
            "{want} missing from {codes:?}"
        );
    }
}

#[test]
fn shapes_and_limits() {
    has_error(
        &edit(|d| d["nodes"]["http_auth"]["properties"]["timeout"] = json!(0)),
        "invalid_timeout",
        "/nodes/http_auth/properties/timeout",
        "milliseconds",
    );
    has_error(
        &edit(|d| d["nodes"]["http_auth"]["properties"]["method"] = json!("FETCH")),
        "invalid_method",
        "/nodes/http_auth/properties/method",
        "`FETCH`",
    );
    has_error(
        &edit(|d| d["nodes"]["audit_log"]["properties"]["message"] = json!("{{user")),
        "invalid_template",
        "/nodes/audit_log/properties/message",
        "unclosed",
    );
    has_error(
        &edit(|d| d["nodes"]["audit_log"]["properties"] = json!({"message": 5})),
        "invalid_properties",
        "/nodes/audit_log/properties/message",
        "invalid type",
    );
    has_error(
        &edit(|d| {
            d.as_object_mut().unwrap().remove("name");
        }),
        "missing_field",
        "/name",
        "name",
    );
    has_error(
        &edit(|d| d["endNodes"] = json!(["end_success", "audit_log"])),
        "end_node_not_end",
        "/endNodes/1",
        "`audit_log`",
    );
    has_error(
        &edit(|d| {
            d["nodes"]["bind_session"]["properties"]["properties"][2]["name"] =
                json!("flow.traceId")
        }),
        "reserved_name",
        "/nodes/bind_session/properties/properties/2/name",
        "flow.traceId",
    );
    has_error(
        &edit(|d| {
            d["edges"]
                .as_array_mut()
                .unwrap()
                .push(json!({"source": "start", "target": "end_failure"}))
        }),
        "ambiguous_edges",
        "/edges/7",
        "`start`",
    );
}

#[test]
fn taint_flows_against_document_order_and_through_parents() {
    // `copy` reads `stash` before (in document order) `stash` is set from the password; a
    // loop makes that order real at run time, so the log of `copy` must still be refused.
    let d = json!({
        "name": "taint order", "startNode": "s",
        "inputSchema": {"type": "object", "properties": {"pin": {"type": "string", "x-secure": true}}},
        "nodes": {
            "s": {"type": "start"},
            "a": {"type": "setProperties", "properties": {"properties": [{"name": "copy", "value": "{{session}}"}]}},
            "b": {"type": "setProperties", "properties": {"properties": [{"name": "session.stash", "value": "x{{pin}}"}]}},
            "l": {"type": "log", "properties": {"message": "copy={{copy}}"}},
            "e": {"type": "end"}
        },
        "edges": [{"source": "s", "target": "a"}, {"source": "a", "target": "b"}, {"source": "b", "target": "l"}, {"source": "l", "target": "e"}]
    });
    has_error(
        &d,
        "secure_value_logged",
        "/nodes/l/properties/message",
        "`copy`",
    );
}

#[test]
fn url_authority_tricks_do_not_pass_as_loopback() {
    // WHATWG URL parsing reads `\` as `/`: the host here is evil.example, not localhost.
    for url in [
        "http://evil.example\\@localhost/x",
        "http://evil.example\\@localhost:3999/{{username}}",
        "http://localhost.evil.example/x",
        "http://127.0.0.1.evil.example/x",
    ] {
        has_error(
            &edit(|d| d["nodes"]["http_auth"]["properties"]["url"] = json!(url)),
            "secure_value_insecure_url",
            "/nodes/http_auth/properties/url",
            "not loopback",
        );
    }
    let r = report(&edit(|d| {
        d["nodes"]["http_auth"]["properties"]["url"] = json!("http://localhost:3999/u/{{username}}")
    }));
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
}

#[test]
fn secure_literals_are_refused() {
    has_error(
        &edit(|d| {
            d["nodes"]["handle_reset"]["properties"]["properties"][1]["value"] = json!("hunter2")
        }),
        "secure_literal",
        "/nodes/handle_reset/properties/properties/1/value",
        "`secureNewPassword`",
    );
}

#[test]
fn secure_output_header_names_match_any_case() {
    let d = edit(|d| {
        d["nodes"]["http_auth"]["properties"]["secureOutput"] = json!(["headers.X-Token"]);
        d["nodes"]["audit_log"]["properties"]["message"] =
            json!("tok={{http_auth_provider.headers.x-token}}");
    });
    has_error(
        &d,
        "secure_value_logged",
        "/nodes/audit_log/properties/message",
        "x-token",
    );
}

#[test]
fn unreachable_nodes_are_reported_even_with_a_bad_edge() {
    let d = edit(|d| {
        d["edges"][6]["target"] = json!("end_sucess");
        d["nodes"]["orphan"] =
            json!({"id": "orphan", "type": "log", "properties": {"message": "x"}});
    });
    has_error(&d, "unknown_edge_target", "/edges/6/target", "end_sucess");
    has_error(&d, "unreachable_node", "/nodes/orphan", "`orphan`");
    // ...without blaming every node upstream of the mistyped edge.
    assert!(!report(&d).errors.iter().any(|e| e.code == "no_path_to_end"));
}

#[test]
fn hostile_conditions_are_reported() {
    let deep = format!(
        "{}{{{{http_auth_provider.statusCode}}}}{} == 200",
        "(".repeat(100),
        ")".repeat(100)
    );
    has_error(
        &edit(|d| {
            d["nodes"]["check_auth"]["properties"]["conditions"][0]["expression"] = json!(deep)
        }),
        "condition_too_complex",
        "/nodes/check_auth/properties/conditions/0/expression",
        "levels deep",
    );
}

fn action_flow(action: Value) -> Value {
    json!({
        "name": "actions", "startNode": "s",
        "inputSchema": {"type": "object", "properties": {
            "account": {"type": "string"}, "pin": {"type": "string", "x-secure": true}, "plain": {"type": "string"}
        }},
        "nodes": {
            "s": {"type": "start"},
            "v": {"type": "action", "properties": action},
            "l": {"type": "log", "properties": {"message": "verified={{v.verified}}"}},
            "e": {"type": "end"}
        },
        "edges": [{"source": "s", "target": "v"}, {"source": "v", "target": "l"}, {"source": "l", "target": "e"}]
    })
}

#[test]
fn action_nodes_are_checked_against_the_registry() {
    let ok = action_flow(
        json!({"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}"}}),
    );
    assert!(report(&ok).errors.is_empty(), "{:#?}", report(&ok).errors);
    has_error(
        &action_flow(json!({"action": "identity.verfy", "inputs": {}})),
        "unknown_action",
        "/nodes/v/properties/action",
        "did you mean `identity.verify`?",
    );
    has_error(
        &action_flow(
            json!({"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{pin}}", "pn": "1"}}),
        ),
        "unknown_field",
        "/nodes/v/properties/inputs/pn",
        "no input `pn`",
    );
    has_error(
        &action_flow(json!({"action": "identity.verify", "inputs": {"account": "{{account}}"}})),
        "missing_field",
        "/nodes/v/properties/inputs",
        "`secret`",
    );
    // A PIN from an input not marked secure would be shown and logged: refused.
    has_error(
        &action_flow(
            json!({"action": "identity.verify", "inputs": {"account": "{{account}}", "secret": "{{plain}}"}}),
        ),
        "insecure_secret_input",
        "/nodes/v/properties/inputs/secret",
        "`secret`",
    );
    // Outputs are the action's own.
    let mut bad_output = ok.clone();
    bad_output["nodes"]["l"]["properties"]["message"] = json!("x={{v.verifed}}");
    has_error(
        &bad_output,
        "unknown_variable",
        "/nodes/l/properties/message",
        "did you mean `verified`?",
    );
}

fn demo_pin() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/demo-pin-flow.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn edit_demo(f: impl FnOnce(&mut Value)) -> Value {
    let mut d = demo_pin();
    f(&mut d);
    d
}

fn add_node(d: &mut Value, id: &str, node: Value) {
    d["nodes"][id] = node;
}

/// Re-point the edge `source -> old` to go through `via` first.
fn insert_between(d: &mut Value, source: &str, old: &str, via: &str) {
    for e in d["edges"].as_array_mut().unwrap() {
        if e["source"] == source && e["target"] == old {
            e["target"] = json!(via);
        }
    }
    d["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": via, "target": old}));
}

#[test]
fn demo_pin_flow_is_valid() {
    let r = report(&demo_pin());
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
}

#[test]
fn secure_collect_variable_may_not_be_logged() {
    let d = edit_demo(|d| {
        add_node(
            d,
            "log_pin",
            json!({"type": "log", "properties": {"message": "pin {{pin}}"}}),
        );
        insert_between(d, "ask_pin", "verify", "log_pin");
    });
    has_error(
        &d,
        "secure_value_logged",
        "/nodes/log_pin/properties/message",
        "pin",
    );
}

#[test]
fn collect_inside_secure_segment_is_secure_even_without_the_flag() {
    let d = edit_demo(|d| {
        d["nodes"]["ask_pin"]["properties"]["secure"] = json!(false);
        add_node(
            d,
            "log_pin",
            json!({"type": "log", "properties": {"message": "pin {{pin}}"}}),
        );
        insert_between(d, "ask_pin", "verify", "log_pin");
    });
    has_error(
        &d,
        "secure_value_logged",
        "/nodes/log_pin/properties/message",
        "pin",
    );
    // Outside the segment, the account number is not secret and may be logged.
    let d = edit_demo(|d| {
        add_node(
            d,
            "log_acct",
            json!({"type": "log", "properties": {"message": "acct {{account}}"}}),
        );
        insert_between(d, "ask_account", "secure_in", "log_acct");
    });
    let r = report(&d);
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
}

#[test]
fn a_prompt_may_not_speak_a_secret() {
    let d = edit_demo(|d| {
        d["nodes"]["sorry"]["properties"]["text"] = json!("You typed {{pin}}.");
    });
    has_error(
        &d,
        "secure_value_spoken",
        "/nodes/sorry/properties/text",
        "pin",
    );
}

#[test]
fn every_menu_choice_needs_an_edge_and_edges_name_choices() {
    let d = edit_demo(|d| {
        d["nodes"]["menu"]["properties"]["choices"] = json!(["1", "2", "3", "9"]);
    });
    has_error(&d, "menu_choice_without_edge", "/nodes/menu", "`3`");
    let d = edit_demo(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"source": "menu", "target": "balance", "condition": "4"}));
    });
    let r = report(&d);
    assert!(
        r.errors
            .iter()
            .any(|e| e.code == "unknown_condition" && e.message.contains("`4`")),
        "{:#?}",
        r.errors
    );
}

#[test]
fn input_nodes_need_a_failed_edge() {
    let d = edit_demo(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .retain(|e| !(e["source"] == "ask_account" && e["condition"] == "failed"));
    });
    has_error(&d, "missing_failed_edge", "/nodes/ask_account", "failed");
}

#[test]
fn ivr_node_properties_are_checked() {
    let d = edit_demo(|d| {
        d["nodes"]["ask_pin"]["properties"]["minDigits"] = json!(13);
        d["nodes"]["ask_pin"]["properties"]["finishOnKey"] = json!("x");
        d["nodes"]["ask_pin"]["properties"]["pattern"] = json!("(");
        d["nodes"]["menu"]["properties"]["choices"] = json!(["1", "2", "9", "12"]);
        d["nodes"]["agent"]["properties"] = json!({"reason": "x"});
    });
    has_error(
        &d,
        "out_of_range",
        "/nodes/ask_pin/properties/minDigits",
        "maxDigits",
    );
    has_error(
        &d,
        "invalid_key",
        "/nodes/ask_pin/properties/finishOnKey",
        "finishOnKey",
    );
    has_error(
        &d,
        "invalid_pattern",
        "/nodes/ask_pin/properties/pattern",
        "pattern",
    );
    has_error(
        &d,
        "invalid_key",
        "/nodes/menu/properties/choices/3",
        "`12`",
    );
    has_error(&d, "missing_field", "/nodes/agent/properties", "queue");
}

#[test]
fn transfer_and_hangup_end_the_flow() {
    let d = edit_demo(|d| {
        d["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"source": "agent", "target": "hangup"}));
    });
    let r = report(&d);
    assert!(
        r.errors.iter().any(|e| e.code == "edge_from_end_node"),
        "{:#?}",
        r.errors
    );
}
