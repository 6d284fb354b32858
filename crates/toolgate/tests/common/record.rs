//! What reached an upstream, as one short line per message, so a test can compare the whole
//! record with what it expects (and a refused call shows up as a line that should not be
//! there). Works on the recorder's stdio record (one JSON-RPC message per line) and on its
//! HTTP record (`{"http": METHOD, "headers": {...}, "body": TEXT}` per request).

use std::path::Path;

use serde_json::{Value, json};

use super::mcp::recorded;

/// The id prefix of the gateway's own `tools/list` requests (the upstream listing it checks
/// a call of a tool the policy does not name against).
pub const GATEWAY_LIST_ID: &str = "toolgate-tools-";

/// One line for one received message:
/// `initialize`, `notifications/initialized`, `ping "MARKER"` (or `ping`), `call "NAME"`
/// (the name as JSON, so odd characters stay visible), `list "MARKER"` (a test's tools/list,
/// marked like its pings), `gateway-list` (an unmarked tools/list: the gateway's own),
/// `<response>`, `http GET` / `http DELETE` (an HTTP request without a body), `<not JSON>`;
/// any other method by its name.
pub fn summary_line(entry: &Value) -> String {
    if let Some(verb) = entry.get("http").and_then(Value::as_str) {
        let body = entry["body"].as_str().unwrap_or("");
        if body.trim().is_empty() {
            return format!("http {verb}");
        }
        return match serde_json::from_str::<Value>(body) {
            Ok(m) => message_line(&m),
            Err(_) => "<not JSON>".into(),
        };
    }
    message_line(entry)
}

fn message_line(m: &Value) -> String {
    let Some(method) = m.get("method").and_then(Value::as_str) else {
        return "<response>".into();
    };
    match method {
        "ping" => match m["params"]["_meta"]["e2e-marker"].as_str() {
            Some(marker) => ping(marker),
            None => "ping".into(),
        },
        "tools/call" => format!("call {}", m["params"]["name"]),
        // A stdio upstream sees the ids the gateway maps requests to, not the agent's: tests
        // mark their own listings, and any other is the gateway's.
        "tools/list" => match m["params"]["_meta"]["e2e-marker"].as_str() {
            Some(marker) => format!("list {}", json!(marker)),
            None => "gateway-list".into(),
        },
        other => other.into(),
    }
}

/// The summary line of a marked ping (`McpSession::marked_ping`).
pub fn ping(marker: &str) -> String {
    format!("ping {}", json!(marker))
}

/// The summary line of a marked tools/list.
pub fn list(marker: &str) -> String {
    format!("list {}", json!(marker))
}

/// The ids of the gateway's own tools/list requests (unmarked ones) in the record.
pub fn gateway_list_ids(path: &Path) -> Vec<Value> {
    recorded(path)
        .iter()
        .map(|e| match e["body"].as_str() {
            Some(body) => serde_json::from_str(body).unwrap_or(Value::Null),
            None => e.clone(),
        })
        .filter(|m| summary_line(m) == "gateway-list")
        .map(|m| m["id"].clone())
        .collect()
}

/// The summary line of a tools/call of `name`.
pub fn call(name: &str) -> String {
    format!("call {}", json!(name))
}

/// The summary of a whole record file.
pub fn summary(path: &Path) -> Vec<String> {
    recorded(path).iter().map(summary_line).collect()
}

/// How many `tools/list` requests of the gateway's own the upstream received.
pub fn gateway_lists(path: &Path) -> usize {
    summary(path)
        .iter()
        .filter(|l| *l == "gateway-list")
        .count()
}

/// Waits until the record holds at least `n` entries (a notification is relayed after its
/// 202, so the next session's handshake could otherwise overtake it in the record).
pub fn wait_for_record(path: &Path, n: usize) {
    let reached = super::poll_until(std::time::Duration::from_secs(10), || {
        summary(path).len() >= n
    });
    assert!(
        reached,
        "the record never reached {n} entries: {:#?}",
        summary(path)
    );
}

/// Asserts the record is exactly `expected`, leaving out the gateway's own listings and
/// bodiless HTTP requests (GET streams, DELETE), whose number is the gateway's business.
pub fn assert_record(path: &Path, expected: &[String], what: &str) {
    let got: Vec<String> = summary(path)
        .into_iter()
        .filter(|l| l != "gateway-list" && !l.starts_with("http "))
        .collect();
    if got != expected {
        let (mut i, n) = (0, got.len().min(expected.len()));
        while i < n && got[i] == expected[i] {
            i += 1;
        }
        panic!(
            "{what}: the upstream's record differs from what was expected, first at entry {i}\n\
             expected: {expected:#?}\ngot: {got:#?}\nraw record:\n{}",
            std::fs::read_to_string(path).unwrap_or_default()
        );
    }
}

/// The handshake every session starts with.
pub fn handshake() -> Vec<String> {
    vec!["initialize".into(), "notifications/initialized".into()]
}
