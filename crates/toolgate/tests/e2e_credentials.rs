//! Credentials stay where they belong (SPEC 2.1): the gateway's own environment (grant tokens,
//! the admin token, anything else) never reaches a stdio child, the agent's `Authorization`
//! and `Cookie` never reach an HTTP upstream, the server's configured credentials are added
//! by the gateway and never shown to the agent, nor is the upstream's session id.

mod common;

use common::*;
use serde_json::{Value, json};

const TOK_A: &str = "tg-e2e-cred-grant-a-2c4e6a";
const TOK_B: &str = "tg-e2e-cred-grant-b-8d0f1b";
const ADMIN: &str = "tg-e2e-admin-token-c0ffee";
const GATEWAY_SECRET: &str = "gateway-only-secret-5e5e5e";

/// The stdio child gets its configured env and a minimal set, never the gateway's own
/// environment (grant tokens, the admin token, anything else); nor does a token travel in
/// what the child reads.
#[test]
fn gateway_secrets_never_reach_a_stdio_child() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let toml = format!(
        "{}{}{}",
        recorder_server_toml("rec", &record, &[("VISIBLE", "configured-visible-value")]),
        grant_toml("a", "rec", "TOK_A"),
        grant_toml("b", "rec", "TOK_B"),
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[
            ("TOK_A", TOK_A),
            ("TOK_B", TOK_B),
            ("TOOLGATE_ADMIN_TOKEN", ADMIN),
            ("SOME_GATEWAY_SECRET", GATEWAY_SECRET),
        ],
    );
    let s = McpSession::open(&gw, "rec", Some(TOK_A));
    let text = tool_text(&s.call_tool("env", json!({})));
    let env: serde_json::Map<String, Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("env tool output ({e}): {text}"));
    assert_eq!(
        env.get("VISIBLE").and_then(Value::as_str),
        Some("configured-visible-value"),
        "configured env missing: {text}"
    );
    assert!(env.contains_key("PATH"), "PATH missing: {text}");
    for key in [
        "TOK_A",
        "TOK_B",
        "TOOLGATE_ADMIN_TOKEN",
        "SOME_GATEWAY_SECRET",
    ] {
        assert!(!env.contains_key(key), "{key} reached the child: {text}");
    }
    for secret in [TOK_A, TOK_B, ADMIN, GATEWAY_SECRET] {
        assert!(
            !text.contains(secret),
            "a gateway secret reached the child: {text}"
        );
    }
    let record = recorded_text(&record);
    for secret in [TOK_A, TOK_B, ADMIN] {
        assert!(
            !record.contains(secret),
            "a token reached the child's stdin: {record}"
        );
    }
    assert!(
        !record.to_ascii_lowercase().contains("authorization"),
        "{record}"
    );
}

/// Over HTTP: the agent's Authorization and Cookie never reach the upstream, the server's own
/// configured header does, the upstream's session id never reaches the agent, refused
/// messages are not forwarded, and the agent's DELETE ends the upstream session.
#[test]
fn http_upstream_gets_its_own_credentials_never_the_agents() {
    const TOK_R: &str = "tg-e2e-door-grant-r-51be0a";
    const UPSTREAM_KEY: &str = "upstream-key-value-9f8e7d";
    const COOKIE: &str = "agent_session=agent-cookie-secret-1a2b";
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("http.jsonl");
    let peer = RecorderHttp::start(&record);
    let toml = format!(
        "{}{}",
        http_server_toml(
            "remote",
            &peer.url(),
            RECORDER_TOOLS,
            "X-Upstream-Key = \"${UPSTREAM_KEY}\""
        ),
        grant_toml("r", "remote", "TOK_R")
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("TOK_R", TOK_R), ("UPSTREAM_KEY", UPSTREAM_KEY)],
    );
    let mut answers = Vec::new();
    let post = || {
        gw.post("remote")
            .token(TOK_R)
            .header("cookie", COOKIE)
            .header("mcp-protocol-version", PROTOCOL)
    };

    let r = post().json(&initialize_body(1)).send();
    assert_eq!(r.status, 200, "initialize: {}", r.text());
    let sid = r
        .header("mcp-session-id")
        .expect("a session id for the agent");
    answers.push(r);
    let steps = [
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"message": "over http"}}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    ];
    for body in &steps {
        let r = post().session(&sid).json(body).send();
        assert!(
            r.status == 200 || r.status == 202,
            "{body}: {r:?} {}",
            r.text()
        );
        answers.push(r);
    }
    assert_eq!(tool_text(&answers[2].response()), "Echo: over http");

    // Refused before the upstream, on the HTTP path too.
    let r = post()
        .session(&sid)
        .body(format!("[{}]", call_body(4, "echo", "batch")))
        .send();
    assert_refused("batch to an HTTP server", &r, 400, -32600);
    let r = post()
        .session(&sid)
        .header("mcp-name", "echo")
        .body(call_body(5, "exit", "name mismatch"))
        .send();
    assert_refused("Mcp-Name mismatch to an HTTP server", &r, 400, -32020);
    let r = post()
        .session(&sid)
        .body(r#"{"jsonrpc":"2.0","id":6,"method":"ping","method":"tools/call","params":{"name":"exit"}}"#)
        .send();
    assert_refused("duplicate key to an HTTP server", &r, 400, -32600);
    let r = gw
        .post("remote")
        .token(TOK_B)
        .session(&sid)
        .body(call_body(7, "echo", "bad token"))
        .send();
    assert_refused("unknown token to an HTTP server", &r, 401, -32600);

    let r = gw
        .request("DELETE", "/mcp/remote")
        .token(TOK_R)
        .session(&sid)
        .send();
    assert!((200..300).contains(&r.status), "DELETE: {r:?}");
    answers.push(r);

    let rec = recorded(&record);
    let seen: Vec<(String, String)> = rec
        .iter()
        .map(|e| {
            let method = serde_json::from_str::<Value>(e["body"].as_str().unwrap_or(""))
                .ok()
                .and_then(|b| b["method"].as_str().map(str::to_string))
                .unwrap_or_default();
            (e["http"].as_str().unwrap_or("").to_string(), method)
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("POST", "initialize"),
        ("POST", "notifications/initialized"),
        ("POST", "tools/call"),
        ("POST", "ping"),
        ("DELETE", ""),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // The gateway may also try the upstream's GET stream; only these may carry a body.
    let without_gets: Vec<_> = seen.iter().filter(|(m, _)| m != "GET").cloned().collect();
    assert_eq!(
        without_gets,
        expected,
        "what reached the upstream:\n{}",
        recorded_text(&record)
    );

    let mut upstream_ids = Vec::new();
    for e in &rec {
        let h = e["headers"].as_object().expect("recorded headers");
        assert!(
            !h.contains_key("authorization"),
            "Authorization forwarded: {e}"
        );
        assert!(!h.contains_key("cookie"), "Cookie forwarded: {e}");
        assert_eq!(
            h.get("x-upstream-key").and_then(Value::as_str),
            Some(UPSTREAM_KEY),
            "the server's configured header is missing: {e}"
        );
        if let Some(id) = h.get("mcp-session-id").and_then(Value::as_str) {
            upstream_ids.push(id.to_string());
        }
    }
    let text = recorded_text(&record);
    assert!(
        !text.contains(TOK_R),
        "the grant token reached the upstream: {text}"
    );
    assert!(
        !text.contains("agent-cookie-secret"),
        "the cookie reached the upstream: {text}"
    );

    // Every message after initialize carried the upstream's own session id...
    assert_eq!(upstream_ids.len(), rec.len() - 1, "{text}");
    assert!(
        upstream_ids.iter().all(|i| i == &upstream_ids[0]),
        "{upstream_ids:?}"
    );
    let upstream_id = &upstream_ids[0];
    assert!(
        upstream_id.starts_with("upstream-session-"),
        "{upstream_id}"
    );
    // ...and the agent never saw it.
    assert_ne!(&sid, upstream_id);
    for a in &answers {
        let shown = format!("{:?} {}", a.headers, a.text());
        assert!(
            !shown.contains(upstream_id.as_str()),
            "upstream session id shown: {shown}"
        );
        assert!(
            !shown.contains(UPSTREAM_KEY),
            "upstream credential shown: {shown}"
        );
    }
    drop(gw);
    drop(peer);
}

/// Credentials written into a server's URL go to the upstream as a Basic `Authorization`
/// header (what reqwest, browsers and curl do) and never in the request line; the agent's own
/// Authorization still never crosses.
#[test]
fn credentials_in_a_server_url_reach_it_as_basic_auth_only() {
    const TOK_U: &str = "tg-e2e-url-credentials-7c1d";
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("http.jsonl");
    let peer = RecorderHttp::start(&record);
    let url = format!("http://svc%40acct:s3cr%3At@127.0.0.1:{}/mcp", peer.port);
    let toml = format!(
        "{}{}",
        http_server_toml("remote", &url, RECORDER_TOOLS, ""),
        grant_toml("u", "remote", "TOK_U")
    );
    let gw = Gateway::start_in(dir, &toml, &[("TOK_U", TOK_U)]);
    let s = McpSession::open(&gw, "remote", Some(TOK_U));
    assert_eq!(
        tool_text(&s.call_tool("echo", json!({"message": "with url credentials"}))),
        "Echo: with url credentials"
    );
    let rec = recorded(&record);
    assert!(!rec.is_empty());
    // base64("svc@acct:s3cr:t")
    let expected = "Basic c3ZjQGFjY3Q6czNjcjp0";
    for e in &rec {
        let h = e["headers"].as_object().expect("recorded headers");
        assert_eq!(
            h.get("authorization").and_then(Value::as_str),
            Some(expected),
            "{e}"
        );
        let host = h.get("host").and_then(Value::as_str).unwrap_or("");
        assert_eq!(host, format!("127.0.0.1:{}", peer.port), "{e}");
    }
    let text = recorded_text(&record);
    assert!(
        !text.contains(TOK_U),
        "the agent's token reached the upstream"
    );
    assert!(
        !gw.log().contains("s3cr"),
        "the URL's password is in the log:\n{}",
        gw.log()
    );
}
