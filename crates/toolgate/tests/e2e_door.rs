//! The door (SPEC 2.1): every refusal the gateway makes, with its HTTP status, its JSON-RPC
//! error and, for 401, `WWW-Authenticate`, and proof from the upstream's side that nothing of a
//! refused request reached the server.
//!
//! The proof: one session is opened on the recorder (which writes down every line it gets),
//! every refused request carries that session's id and a body the recorder would write down,
//! and after each one a ping carrying the case's name goes through. In the end the record
//! must be exactly initialize, notifications/initialized and those pings, in order.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

const TOK_A: &str = "tg-e2e-door-grant-a-7d1e44";
const TOK_B: &str = "tg-e2e-door-grant-b-90ac2f";
const TOK_O: &str = "tg-e2e-door-grant-o-3b5a61";
const MAX_BODY: usize = 4096;

struct Door {
    gw: Gateway,
    record: PathBuf,
    other_record: PathBuf,
}

/// Two recorder servers, `rec` (grants a and b) and `other` (grant o), a 4 KiB body limit.
fn door() -> Door {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let other_record = dir.path().join("other.jsonl");
    let toml = format!(
        "max_body_bytes = {MAX_BODY}\n\n{}{}{}{}{}",
        // The server has `delete-everything`; the policy does not name it (default deny).
        recorder_server_toml(
            "rec",
            &record,
            &[("RECORDER_EXTRA_TOOLS", "delete-everything")]
        ),
        recorder_server_toml("other", &other_record, &[]),
        grant_toml("a", "rec", "TOK_A"),
        grant_toml("b", "rec", "TOK_B"),
        grant_toml("o", "other", "TOK_O"),
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("TOK_A", TOK_A), ("TOK_B", TOK_B), ("TOK_O", TOK_O)],
    );
    Door {
        gw,
        record,
        other_record,
    }
}

/// The pings that went through after each case, in order.
struct Ledger<'s, 'g> {
    session: &'s McpSession<'g>,
    cases: Vec<String>,
}

impl<'s, 'g> Ledger<'s, 'g> {
    fn new(session: &'s McpSession<'g>) -> Self {
        Ledger {
            session,
            cases: Vec::new(),
        }
    }

    /// Marks the end of a case: a ping naming it goes through to the upstream.
    fn mark(&mut self, case: &str) {
        self.session.marked_ping(case);
        self.cases.push(case.to_string());
    }

    /// The record holds the handshake and the pings, nothing else.
    fn verify(&self, record: &std::path::Path) {
        let rec = recorded(record);
        let mut expected = vec!["initialize".to_string(), "notifications/initialized".into()];
        expected.extend(self.cases.iter().map(|_| "ping".to_string()));
        assert_eq!(
            methods(&rec),
            expected,
            "something besides the handshake and the marker pings reached the upstream:\n{}",
            recorded_text(record)
        );
        let markers: Vec<&str> = rec.iter().filter_map(marker).collect();
        assert_eq!(markers, self.cases, "marker pings out of order");
    }
}

#[test]
fn authentication_and_rebinding_refusals_reach_nothing() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let mut ledger = Ledger::new(&s);
    let post = |case: &str| {
        d.gw.post("rec")
            .session(&s.id)
            .header("mcp-protocol-version", PROTOCOL)
            .body(call_body(7, "echo", case))
    };

    let case = "no token";
    assert_refused(case, &post(case).send(), 401, -32600);
    ledger.mark(case);

    let case = "unknown token";
    assert_refused(
        case,
        &post(case).token("tg-not-a-grant-token").send(),
        401,
        -32600,
    );
    ledger.mark(case);

    let case = "a prefix of a real token";
    assert_refused(
        case,
        &post(case).token(&TOK_A[..TOK_A.len() - 1]).send(),
        401,
        -32600,
    );
    ledger.mark(case);

    let case = "token without the Bearer scheme";
    assert_refused(
        case,
        &post(case).header("authorization", TOK_A).send(),
        401,
        -32600,
    );
    ledger.mark(case);

    let case = "token as Basic credentials";
    let basic = format!("Basic {}", base64(&format!("a:{TOK_A}")));
    assert_refused(
        case,
        &post(case).header("authorization", &basic).send(),
        401,
        -32600,
    );
    ledger.mark(case);

    let case = "token of another server";
    assert_refused(case, &post(case).token(TOK_O).send(), 403, -32600);
    ledger.mark(case);

    let case = "Host of a rebinding page";
    let r = post(case)
        .token(TOK_A)
        .header("host", "evil.example.com")
        .send();
    assert_refused(case, &r, 403, -32600);
    ledger.mark(case);

    let case = "Host of a rebinding page with the gateway's port";
    let host = format!("evil.example.com:{}", d.gw.port);
    assert_refused(
        case,
        &post(case).token(TOK_A).header("host", &host).send(),
        403,
        -32600,
    );
    ledger.mark(case);

    let case = "foreign Origin";
    let r = post(case)
        .token(TOK_A)
        .header("origin", "http://evil.example.com")
        .send();
    assert_refused(case, &r, 403, -32600);
    ledger.mark(case);

    let case = "null Origin";
    assert_refused(
        case,
        &post(case).token(TOK_A).header("origin", "null").send(),
        403,
        -32600,
    );
    ledger.mark(case);

    // The other verbs go through the same door: a stranger cannot end or read the session.
    let case = "DELETE without a token";
    let r = d.gw.request("DELETE", "/mcp/rec").session(&s.id).send();
    assert_refused(case, &r, 401, -32600);
    ledger.mark(case);

    let case = "DELETE with another server's token";
    let r =
        d.gw.request("DELETE", "/mcp/rec")
            .session(&s.id)
            .token(TOK_O)
            .send();
    assert_refused(case, &r, 403, -32600);
    ledger.mark(case);

    let case = "GET stream without a token";
    let r =
        d.gw.request("GET", "/mcp/rec")
            .session(&s.id)
            .header("accept", "text/event-stream")
            .send();
    assert_refused(case, &r, 401, -32600);
    ledger.mark(case);

    // The positive control: a loopback Origin is accepted and reaches the server.
    let case = "loopback Origin accepted";
    let r = s
        .post()
        .header("origin", &format!("http://localhost:{}", d.gw.port))
        .json(&json!({"jsonrpc": "2.0", "id": 8, "method": "ping",
                      "params": {"_meta": {"e2e-marker": case}}}))
        .send();
    assert_eq!(r.status, 200, "{case}: {}", r.text());
    assert!(r.response().get("result").is_some(), "{case}: {}", r.text());
    ledger.cases.push(case.to_string());

    ledger.verify(&d.record);
    assert_eq!(
        recorded(&d.other_record),
        Vec::<Value>::new(),
        "the other server got something"
    );
}

#[test]
fn session_refusals_reach_nothing() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let mut ledger = Ledger::new(&s);

    let case = "session of grant a used with grant b's token";
    let r =
        d.gw.post("rec")
            .token(TOK_B)
            .session(&s.id)
            .body(call_body(11, "echo", case))
            .send();
    let v = assert_refused(case, &r, 403, -32600);
    assert_eq!(v["id"], 11, "{case}: the id is echoed: {v}");
    ledger.mark(case);

    let case = "GET stream of grant a's session with grant b's token";
    let r =
        d.gw.request("GET", "/mcp/rec")
            .token(TOK_B)
            .session(&s.id)
            .header("accept", "text/event-stream")
            .send();
    assert_refused(case, &r, 403, -32600);
    ledger.mark(case);

    let case = "DELETE of grant a's session with grant b's token";
    let r =
        d.gw.request("DELETE", "/mcp/rec")
            .token(TOK_B)
            .session(&s.id)
            .send();
    assert_refused(case, &r, 403, -32600);
    ledger.mark(case); // the session survived: this ping went through it

    let case = "unknown session";
    let r =
        d.gw.post("rec")
            .token(TOK_A)
            .session("0123456789abcdef0123456789abcdef")
            .body(call_body(12, "echo", case))
            .send();
    assert_refused(case, &r, 404, -32600);
    ledger.mark(case);

    let case = "initialize with a session id";
    let r =
        d.gw.post("rec")
            .token(TOK_A)
            .session(&s.id)
            .json(&initialize_body(13))
            .send();
    assert_refused(case, &r, 400, -32600);
    ledger.mark(case);

    let case = "tools/call without a session";
    let r =
        d.gw.post("rec")
            .token(TOK_A)
            .body(call_body(14, "echo", case))
            .send();
    assert_refused(case, &r, 400, -32600);
    ledger.mark(case);

    let case = "tools/call without a session, 2025-06-18 header";
    let r =
        d.gw.post("rec")
            .token(TOK_A)
            .header("mcp-protocol-version", PROTOCOL)
            .body(call_body(15, "echo", case))
            .send();
    assert_refused(case, &r, 400, -32600);
    ledger.mark(case);

    // Ending the session: afterwards its id is unknown on every verb.
    let r = s.delete();
    assert!(
        (200..300).contains(&r.status),
        "DELETE of the own session: {r:?}"
    );
    let case = "ping on the ended session";
    let r = s
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 16, "method": "ping",
                      "params": {"_meta": {"e2e-marker": case}}}))
        .send();
    assert_refused(case, &r, 404, -32600);
    let r =
        d.gw.request("GET", "/mcp/rec")
            .token(TOK_A)
            .session(&s.id)
            .header("accept", "text/event-stream")
            .send();
    assert_refused("GET stream of the ended session", &r, 404, -32600);
    let r = s.delete();
    assert_refused("DELETE of the ended session", &r, 404, -32600);

    ledger.verify(&d.record);
}

#[test]
fn message_refusals_reach_nothing() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let mut ledger = Ledger::new(&s);
    let post = || s.post();

    let big = call_body(20, "echo", &"x".repeat(MAX_BODY * 2));
    let case = "body over max_body_bytes";
    assert_refused(case, &post().body(big.clone()).send(), 413, -32600);
    ledger.mark(case);

    let case = "body over max_body_bytes, chunked";
    assert_refused(case, &post().body(big).chunked().send(), 413, -32600);
    ledger.mark(case);

    let case = "malformed JSON";
    let r = post()
        .body(r#"{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"echo""#)
        .send();
    assert_refused(case, &r, 400, -32700);
    ledger.mark(case);

    let case = "not JSON at all";
    assert_refused(
        case,
        &post().body("tools/call echo please").send(),
        400,
        -32700,
    );
    ledger.mark(case);

    let case = "batch with a tools/call";
    let batch = format!("[{}]", call_body(22, "exit", case));
    assert_refused(case, &post().body(batch).send(), 400, -32600);
    ledger.mark(case);

    let case = "batch after whitespace";
    let batch = format!(
        " \n\t[{},{}]",
        call_body(23, "echo", case),
        call_body(24, "exit", case)
    );
    assert_refused(case, &post().body(batch).send(), 400, -32600);
    ledger.mark(case);

    let case = "duplicate method key";
    let body = r#"{"jsonrpc":"2.0","id":25,"method":"ping","method":"tools/call","params":{"name":"exit"}}"#;
    assert_refused(case, &post().body(body).send(), 400, -32600);
    ledger.mark(case);

    let case = "duplicate params key";
    let body = r#"{"jsonrpc":"2.0","id":26,"method":"tools/call","params":{"name":"echo","arguments":{}},"params":{"name":"exit","arguments":{}}}"#;
    assert_refused(case, &post().body(body).send(), 400, -32600);
    ledger.mark(case);

    let case = "duplicate id key";
    let body = r#"{"jsonrpc":"2.0","id":27,"id":28,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    assert_refused(case, &post().body(body).send(), 400, -32600);
    ledger.mark(case);

    // A duplicate inside params is refused too, as invalid params or as an invalid request.
    let case = "duplicate name in tools/call params";
    let body = r#"{"jsonrpc":"2.0","id":29,"method":"tools/call","params":{"name":"echo","name":"exit","arguments":{}}}"#;
    let r = post().body(body).send();
    match r.status {
        200 => {
            let v = assert_refused(case, &r, 200, -32602);
            assert_eq!(v["id"], 29, "{case}: {v}");
        }
        _ => {
            assert_refused(case, &r, 400, -32600);
        }
    }
    ledger.mark(case);

    for (case, body) in [
        (
            "tools/call without params",
            json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call"}),
        ),
        (
            "tools/call without params.name",
            json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"arguments": {}}}),
        ),
        (
            "tools/call with an empty name",
            json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"name": "", "arguments": {}}}),
        ),
        (
            "tools/call with a non-string name",
            json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"name": 5, "arguments": {}}}),
        ),
        (
            "tools/call with array arguments",
            json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"name": "echo", "arguments": ["x"]}}),
        ),
        (
            "tools/call with string arguments",
            json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"name": "echo", "arguments": "{}"}}),
        ),
    ] {
        let v = assert_refused(case, &post().json(&body).send(), 200, -32602);
        assert_eq!(v["id"], 30, "{case}: the id is echoed: {v}");
        ledger.mark(case);
    }

    let case = "Mcp-Method disagrees with the body";
    let r = post()
        .header("mcp-method", "ping")
        .body(call_body(31, "exit", case))
        .send();
    let v = assert_refused(case, &r, 400, -32020);
    assert_eq!(v["id"], 31, "{case}: {v}");
    ledger.mark(case);

    let case = "Mcp-Name echo, body name exit";
    let r = post()
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(call_body(32, "exit", case))
        .send();
    let v = assert_refused(case, &r, 400, -32020);
    assert_eq!(v["id"], 32, "{case}: {v}");
    ledger.mark(case);

    let case = "Mcp-Name echo, body name exit spelled with an escape";
    let body = r#"{"jsonrpc":"2.0","id":33,"method":"tools/call","params":{"name":"ex\u0069t","arguments":{}}}"#;
    let r = post().header("mcp-name", "echo").body(body).send();
    assert_refused(case, &r, 400, -32020);
    ledger.mark(case);

    let case = "Mcp-Name on a method without a name";
    let body = json!({"jsonrpc": "2.0", "id": 34, "method": "tools/list"});
    let r = post().header("mcp-name", "echo").json(&body).send();
    assert_refused(case, &r, 400, -32020);
    ledger.mark(case);

    for (case, body) in [
        (
            "jsonrpc 1.0",
            r#"{"jsonrpc":"1.0","id":35,"method":"tools/call","params":{"name":"echo"}}"#,
        ),
        (
            "object id",
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/call","params":{"name":"echo"}}"#,
        ),
        ("a JSON string", r#""tools/call""#),
    ] {
        assert_refused(case, &post().body(body).send(), 400, -32600);
        ledger.mark(case);
    }

    let case = "text/plain body";
    let r = post()
        .header("content-type", "text/plain")
        .body(call_body(36, "echo", case))
        .send();
    assert_eq!(r.status, 415, "{case}: {}", r.text());
    ledger.mark(case);

    ledger.verify(&d.record);
}

/// The policy's own refusal: a tool the server has and the policy does not allow is answered
/// by the gateway as a tool result the agent can read, and never reaches the server. (A name
/// the server does not have gets -32602 Unknown tool instead, as a hidden one does: SPEC 3.)
#[test]
fn a_denied_call_never_reaches_the_upstream() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let mut ledger = Ledger::new(&s);
    let case = "tool outside the policy";
    let resp = s.call_tool("delete-everything", json!({}));
    assert_eq!(resp["result"]["isError"], true, "{case}: {resp}");
    let text = tool_text(&resp);
    assert!(text.starts_with("[POLICY DENIED]"), "{case}: {resp}");
    ledger.mark(case);
    // To tell a tool the server has from a name it does not, the gateway asks the server for
    // its tool list itself; nothing else reaches it, and the call never does.
    let rec = recorded(&d.record);
    assert_eq!(
        methods(&rec),
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "ping"
        ],
        "{}",
        recorded_text(&d.record)
    );
    let markers: Vec<&str> = rec.iter().filter_map(marker).collect();
    assert_eq!(markers, [case]);
}

/// `"id": null` is not an id (MCP ids are strings or integers): such a tools/call must be
/// refused like any other malformed request, not relayed as if it were a notification, which
/// would carry a tools/call past the policy step to the server.
#[test]
fn tools_call_with_a_null_id_is_refused_not_forwarded() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let mut ledger = Ledger::new(&s);
    let case = "tools/call with a null id";
    let body = r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo","arguments":{"message":"null id"}}}"#;
    let r = s.post().body(body).send();
    ledger.mark(case);
    ledger.verify(&d.record);
    assert_refused(case, &r, 400, -32600);
}

/// A `tools/call` without an id is a notification by JSON-RPC's shape, but tools/call is a
/// request method: relayed, it reaches the server without the policy ever deciding on it (a
/// lenient server, or one that dispatches on `method` alone, runs the tool). Whatever the
/// gateway answers, the message must not reach the upstream.
#[test]
fn tools_call_without_an_id_never_reaches_the_upstream() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let mut ledger = Ledger::new(&s);
    let case = "tools/call without an id";
    let body = json!({"jsonrpc": "2.0", "method": "tools/call",
                      "params": {"name": "exit", "arguments": {}}});
    let r = s.post().json(&body).send();
    ledger.mark(case);
    ledger.verify(&d.record);
    assert!(
        r.status >= 400,
        "{case}: accepted with {}: {}",
        r.status,
        r.text()
    );
}

/// RFC 4648 base64, for a Basic credential.
fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Media types are read without case and with their parameters: a call sent as
/// `Application/JSON; charset=utf-8` is served like any other (a case-sensitive check answers
/// 415). The `Accept` list is mixed case too; `media::names`' unit tests cover its reading.
#[test]
fn media_types_are_read_without_case() {
    let d = door();
    let s = McpSession::open(&d.gw, "rec", Some(TOK_A));
    let r = s
        .post()
        .header("content-type", "Application/JSON; charset=utf-8")
        .header("accept", "Application/Json, Text/Event-Stream")
        .body(call_body(s.next_id(), "echo", "case"))
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = r.response();
    assert_eq!(tool_text(&resp), "Echo: case", "{resp}");
}
