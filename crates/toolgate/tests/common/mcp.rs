//! MCP by hand: sessions opened with initialize + initialized, requests on them, and what the
//! recorder fixture wrote down.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::gateway::Gateway;
use super::http::{Req, Resp};

pub const PROTOCOL: &str = "2025-06-18";

/// An agent session on the gateway, opened with initialize + notifications/initialized.
pub struct McpSession<'g> {
    pub gw: &'g Gateway,
    pub server: String,
    pub token: Option<String>,
    pub id: String,
    next_id: AtomicU64,
}

pub fn initialize_body(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "toolgate-e2e", "version": "0.1.0"}
        }
    })
}

impl<'g> McpSession<'g> {
    pub fn open(gw: &'g Gateway, server: &str, token: Option<&str>) -> McpSession<'g> {
        let mut req = gw.post(server).json(&initialize_body(1));
        if let Some(t) = token {
            req = req.token(t);
        }
        let r = req.send();
        assert_eq!(r.status, 200, "initialize: {}", r.text());
        assert!(
            r.response().get("result").is_some(),
            "initialize failed: {}",
            r.text()
        );
        let id = r
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize answer has no Mcp-Session-Id: {r:?}"));
        let s = McpSession {
            gw,
            server: server.to_string(),
            token: token.map(str::to_string),
            id,
            next_id: AtomicU64::new(100),
        };
        let r = s
            .post()
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send();
        assert_eq!(r.status, 202, "notifications/initialized: {}", r.text());
        s
    }

    /// A POST on this session (token, session id and protocol version set).
    pub fn post(&self) -> Req {
        let mut req = self
            .gw
            .post(&self.server)
            .session(&self.id)
            .header("mcp-protocol-version", PROTOCOL);
        if let Some(t) = &self.token {
            req = req.token(t);
        }
        req
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request and returns its JSON-RPC response (checking the id came back).
    pub fn request(&self, method: &str, params: Value) -> Value {
        let id = self.next_id();
        let r = self
            .post()
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .send();
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let resp = r.response();
        assert_eq!(
            resp["id"],
            json!(id),
            "{method}: answer to another id: {resp}"
        );
        resp
    }

    pub fn call_tool(&self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// A ping carrying `marker` in `params._meta`, so the upstream's record shows which it was.
    pub fn marked_ping(&self, marker: &str) {
        let resp = self.request("ping", json!({"_meta": {"e2e-marker": marker}}));
        assert!(resp.get("result").is_some(), "ping {marker}: {resp}");
    }

    pub fn delete(&self) -> Resp {
        let mut req = self
            .gw
            .request("DELETE", &format!("/mcp/{}", self.server))
            .session(&self.id);
        if let Some(t) = &self.token {
            req = req.token(t);
        }
        req.send()
    }
}

/// The text of a tools/call response's first content item.
pub fn tool_text(resp: &Value) -> String {
    resp["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text tool result: {resp}"))
        .to_string()
}

/// The recorder's record: one JSON value per line received (an empty list when no file yet).
pub fn recorded(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("record line is not JSON ({e}): {l}"))
        })
        .collect()
}

pub fn recorded_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `method` of each recorded message (`<response>` for responses).
pub fn methods(record: &[Value]) -> Vec<String> {
    record
        .iter()
        .map(|m| {
            m["method"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "<response>".to_string())
        })
        .collect()
}

/// The `e2e-marker` of a recorded ping, if it is one.
pub fn marker(m: &Value) -> Option<&str> {
    m["params"]["_meta"]["e2e-marker"].as_str()
}

/// Asserts a refusal by the gateway: status, a JSON (not SSE) JSON-RPC error body with
/// `code` and a message, and `WWW-Authenticate: Bearer ...` on 401.
pub fn assert_refused(case: &str, r: &Resp, status: u16, code: i64) -> Value {
    assert_eq!(r.status, status, "{case}: status; body {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{case}: refusal is not JSON: {r:?}"
    );
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{case}: refusal body is not JSON ({e}): {}", r.text()));
    assert_eq!(v["jsonrpc"], "2.0", "{case}: {v}");
    assert_eq!(v["error"]["code"], code, "{case}: JSON-RPC code; {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: no error message: {v}"
    );
    assert!(
        v.get("id").is_some(),
        "{case}: error without an id member: {v}"
    );
    if status == 401 {
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.to_ascii_lowercase().starts_with("bearer"),
            "{case}: 401 without `WWW-Authenticate: Bearer ...`: {:?}",
            r.headers
        );
    }
    v
}

/// A tools/call the recorder would write down (and answer) if it got it.
pub fn call_body(id: u64, tool: &str, case: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {"message": case}}})
    .to_string()
}
