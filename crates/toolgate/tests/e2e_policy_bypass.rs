//! Ways around the policy that must not work, through the real gateway: tool-name variants
//! (case, whitespace, unicode look-alikes, NUL, JSON escapes) under `default: allow`,
//! duplicate keys, arguments that are not an object, calls without a name, batches.
//!
//! As in e2e_policy.rs, the recorder's record proves what reached the server: each refused
//! call is followed by a marked ping, and the whole record is compared in the end.

mod common;

use common::*;
use serde_json::json;

#[test]
fn name_variants_under_default_allow_are_unknown_and_never_reach_the_server() {
    let p = policy_setup(
        r#"{"version": "1", "default": "allow", "hide": ["exit"],
            "tools": {"env": {"deny_if": [{"conditions": [], "on_deny": "env is off"}]}}}"#,
        &[],
    );
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    let mut expected = handshake();
    // The controls: the exact names decide as the policy says.
    assert_eq!(
        tool_text(&s.call_tool("echo", json!({"message": "exact"}))),
        "Echo: exact"
    );
    expected.push(call("echo"));
    let id = json!("env-exact");
    assert_eq!(
        call_with_id(&s, &id, "env", json!({})),
        denial(&id, "/tools/env/deny_if/0", "env is off", 1)
    );
    let id = json!("exit-exact");
    assert_eq!(
        call_with_id(&s, &id, "exit", json!({})),
        unknown_tool(&id, "exit")
    );
    s.marked_ping("exact env and exit");
    expected.push(ping("exact env and exit"));
    let variants = [
        "Echo",
        "ECHO",
        " echo",
        "echo ",
        "echo\n",
        "\techo",
        "\u{0435}cho",  // Cyrillic e
        "\u{ff45}cho",  // fullwidth e
        "ec\u{200b}ho", // zero-width space
        "echo\u{0}",    // NUL
        "\u{0}echo",
        "e\u{301}cho", // combining accent
        "Exit",
        "exit ",
        "exit\u{0}",
        "\u{0435}xit",
        "EXIT",
        "Env",
        "env ",
        "env\u{0}",
        "\u{0435}nv",
    ];
    for (i, name) in variants.iter().enumerate() {
        let id = json!(1000 + i);
        let resp = call_with_id(&s, &id, name, json!({"message": "variant"}));
        assert_eq!(resp, unknown_tool(&id, name), "variant {name:?}");
        let case = format!("variant {i}: {name:?}");
        s.marked_ping(&case);
        expected.push(ping(&case));
    }
    // The same names spelled with JSON escapes are the same names, here as upstream.
    for (case, body, name) in [
        (
            "exit spelled with an escape",
            r#"{"jsonrpc":"2.0","id":"esc-1","method":"tools/call","params":{"name":"\u0065xit","arguments":{}}}"#,
            "exit",
        ),
        (
            "Echo spelled with an escape",
            r#"{"jsonrpc":"2.0","id":"esc-1","method":"tools/call","params":{"name":"\u0045cho","arguments":{}}}"#,
            "Echo",
        ),
    ] {
        let r = s.post().body(body).send();
        assert_eq!(r.response(), unknown_tool(&json!("esc-1"), name), "{case}");
        s.marked_ping(case);
        expected.push(ping(case));
    }
    assert_record(&p.record, &expected, "name variants");
    // The gateway asked the server for its tools itself, and only with its own ids.
    assert!(
        gateway_lists(&p.record) >= 1,
        "the gateway never checked a name against the server's tools/list"
    );
}

#[test]
fn malformed_tools_calls_are_invalid_params_and_never_forwarded() {
    let p = policy_setup(RULES, &[RULES_TOOLS]);
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    let mut expected = handshake();
    let call = |params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{params}}}"#)
    };
    let invalid_params = [
        (
            "two names in params",
            call(r#"{"name":"echo","name":"refund","arguments":{"amount":1000}}"#),
        ),
        (
            "a second name spelled with an escape",
            call(r#"{"name":"echo","na\u006de":"refund","arguments":{"amount":1000}}"#),
        ),
        (
            "two amounts in arguments",
            call(r#"{"name":"refund","arguments":{"amount":1,"reason":"x","amount":1000}}"#),
        ),
        (
            "a second amount spelled with an escape",
            call(r#"{"name":"refund","arguments":{"amount":1,"reason":"x","\u0061mount":1000}}"#),
        ),
        (
            "a duplicate key nested in arguments",
            call(r#"{"name":"refund","arguments":{"amount":1,"reason":"x","meta":{"k":1,"k":2}}}"#),
        ),
        (
            "arguments an array",
            call(r#"{"name":"echo","arguments":["x"]}"#),
        ),
        (
            "arguments a string",
            call(r#"{"name":"refund","arguments":"{\"amount\":1000}"}"#),
        ),
        (
            "arguments a number",
            call(r#"{"name":"echo","arguments":5}"#),
        ),
        (
            "arguments true",
            call(r#"{"name":"echo","arguments":true}"#),
        ),
        (
            "no params",
            r#"{"jsonrpc":"2.0","id":41,"method":"tools/call"}"#.to_string(),
        ),
        ("params null", call("null")),
        ("params without a name", call(r#"{"arguments":{}}"#)),
        (
            "a uri that is not a string",
            call(r#"{"name":"echo","uri":5,"arguments":{}}"#),
        ),
        (
            "two _meta objects",
            call(r#"{"name":"echo","_meta":{},"_meta":{},"arguments":{}}"#),
        ),
        ("name null", call(r#"{"name":null,"arguments":{}}"#)),
        ("name a list", call(r#"{"name":["echo"],"arguments":{}}"#)),
        (
            "two arguments objects",
            call(
                r#"{"name":"refund","arguments":{"amount":1,"reason":"x"},"arguments":{"amount":1000,"reason":"x"}}"#,
            ),
        ),
    ];
    for (case, body) in &invalid_params {
        let r = s.post().body(body.clone()).send();
        let v = assert_refused(case, &r, 200, -32602);
        assert_eq!(v["id"], 41, "{case}: the id is echoed: {v}");
        s.marked_ping(case);
        expected.push(ping(case));
    }
    // `"arguments": null` is read as no arguments, here as by MCP servers: judged so, denied.
    let case = "arguments null is no arguments";
    let r = s
        .post()
        .body(call(r#"{"name":"refund","arguments":null}"#))
        .send();
    assert_eq!(
        r.response(),
        denial(
            &json!(41),
            "/tools/refund/require/0",
            "A refund needs a reason.",
            1
        ),
        "{case}"
    );
    s.marked_ping(case);
    expected.push(ping(case));
    for (case, body) in [
        (
            "a batch of one tools/call",
            format!(
                "[{}]",
                call(r#"{"name":"refund","arguments":{"amount":1000}}"#)
            ),
        ),
        (
            "a batch of a ping and a tools/call",
            format!(
                r#"[{{"jsonrpc":"2.0","id":42,"method":"ping"}},{}]"#,
                call(r#"{"name":"echo","arguments":{"message":"batched"}}"#)
            ),
        ),
    ] {
        assert_refused(case, &s.post().body(body).send(), 400, -32600);
        s.marked_ping(case);
        expected.push(ping(case));
    }
    assert_record(&p.record, &expected, "malformed calls");
}

/// MCP params are an object. A `tools/call` whose params are a JSON array must be refused,
/// not read positionally by the gateway (as name, uri, arguments, _meta) and then relayed
/// to a server that reads it some other way, or not at all.
#[test]
fn tools_call_with_params_as_a_list_is_refused_not_forwarded() {
    let p = policy_setup(RULES, &[RULES_TOOLS]);
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    let case = "params a list";
    let body = r#"{"jsonrpc":"2.0","id":43,"method":"tools/call","params":["echo",null,{"message":"positional"},null]}"#;
    let r = s.post().body(body).send();
    s.marked_ping(case);
    let mut expected = handshake();
    expected.push(ping(case));
    assert_record(&p.record, &expected, case);
    match r.status {
        200 => assert_refused(case, &r, 200, -32602),
        _ => assert_refused(case, &r, 400, -32600),
    };
}
