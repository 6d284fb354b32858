//! The HTTP surface around the MCP endpoint: `/healthz`, the trailing-slash form of
//! `/mcp/{server}/`, unknown servers, and anonymous grants on loopback.

mod common;

use common::*;
use serde_json::json;

const TOK: &str = "tg-e2e-endpoint-token-77aa";

fn gateway() -> (Gateway, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let anon_record = dir.path().join("anon.jsonl");
    let toml = format!(
        "{}{}{}[grants.anyone]\nserver = \"open\"\nanonymous = true\n\n",
        recorder_server_toml("rec", &record, &[]),
        recorder_server_toml("open", &anon_record, &[]),
        grant_toml("a", "rec", "TOK"),
    );
    (Gateway::start_in(dir, &toml, &[("TOK", TOK)]), record)
}

#[test]
fn healthz_answers_200() {
    let (gw, _) = gateway();
    let r = gw.request("GET", "/healthz").send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), "ok");
}

/// `POST /mcp/{server}` skips the router when the path is plain (server.rs, `Routes`); with a
/// percent-escape it goes through the router, which decodes it: the same endpoint either way.
#[test]
fn a_percent_escaped_server_name_is_the_same_endpoint() {
    let (gw, _) = gateway();
    let escaped = "r%65c";
    let r = gw.post(escaped).token(TOK).json(&initialize_body(1)).send();
    assert_eq!(r.status, 200, "initialize on {escaped}: {}", r.text());
    let sid = r.header("mcp-session-id").expect("session id");
    for server in [escaped, "rec"] {
        let r = gw
            .post(server)
            .token(TOK)
            .session(&sid)
            .header("mcp-protocol-version", PROTOCOL)
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
            .send();
        assert_eq!(r.status, 200, "ping on {server}: {}", r.text());
    }
    let unknown = |server: &str| {
        let r = gw.post(server).token(TOK).json(&initialize_body(1)).send();
        (r.status, r.text())
    };
    let (status, text) = unknown("n%6fne");
    assert_eq!(status, 403, "another grant's server, escaped: {text}");
    assert_eq!((status, text), unknown("none"));
}

#[test]
fn trailing_slash_is_the_same_endpoint() {
    let (gw, record) = gateway();
    let slash = "/mcp/rec/";
    let r = gw
        .request("POST", slash)
        .token(TOK)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&initialize_body(1))
        .send();
    assert_eq!(r.status, 200, "initialize on {slash}: {}", r.text());
    let sid = r.header("mcp-session-id").expect("session id");
    let post = |body: serde_json::Value| {
        gw.request("POST", slash)
            .token(TOK)
            .session(&sid)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .json(&body)
            .send()
    };
    let r = post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert_eq!(r.status, 202, "{}", r.text());
    let r = post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"message": "slash"}}}));
    assert_eq!(tool_text(&r.response()), "Echo: slash");

    // The session is one and the same with and without the slash.
    let r = gw
        .post("rec")
        .token(TOK)
        .session(&sid)
        .json(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .send();
    assert_eq!(
        r.status,
        200,
        "the slash session on the plain path: {}",
        r.text()
    );

    let r = gw.request("DELETE", slash).token(TOK).session(&sid).send();
    assert!((200..300).contains(&r.status), "DELETE on {slash}: {r:?}");
    let r = post(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}));
    assert_eq!(r.status, 404, "after DELETE on {slash}: {}", r.text());

    let m = methods(&recorded(&record));
    assert_eq!(m.iter().filter(|m| *m == "tools/call").count(), 1, "{m:?}");
}

#[test]
fn unknown_server_is_refused_without_a_hint() {
    let (gw, _) = gateway();
    let r = gw.post("nope").token(TOK).json(&initialize_body(1)).send();
    assert!(
        r.status == 403 || r.status == 404,
        "unknown server: {} {}",
        r.status,
        r.text()
    );
    let r = gw.post("nope").json(&initialize_body(1)).send();
    assert_eq!(r.status, 401, "unknown server, no token: {}", r.text());
}

#[test]
fn anonymous_grant_on_loopback_needs_no_token_and_a_wrong_token_is_still_refused() {
    let (gw, _) = gateway();
    let s = McpSession::open(&gw, "open", None);
    let resp = s.call_tool("echo", json!({"message": "anonymous"}));
    assert_eq!(tool_text(&resp), "Echo: anonymous");
    let r = gw
        .post("open")
        .token("tg-wrong-token")
        .json(&initialize_body(1))
        .send();
    assert_eq!(
        r.status,
        401,
        "a wrong token fell back to anonymous: {}",
        r.text()
    );
    // The anonymous grant is for its server only.
    let r = gw.post("rec").json(&initialize_body(1)).send();
    assert_eq!(
        r.status,
        401,
        "anonymous reached another server: {}",
        r.text()
    );
}
