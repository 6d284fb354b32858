//! What the counter tests share: a gateway in front of the recorder with a policy of limits,
//! calls fired all at once, each answer sorted into what it is (done, rate-limited, refused
//! because the store is down, a JSON-RPC error), the exact denial of SPEC 3 checked, and the
//! calls the upstream really received counted from its record.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    Gateway, InFlight, McpSession, grant_toml, recorded, recorder_py, summary_line, toml_str,
};

pub const ALICE: &str = "tg-e2e-counters-alice-3b1c07";
pub const BOB: &str = "tg-e2e-counters-bob-9e42d1";
/// The policy file every counter gateway uses (written next to its config).
pub const POLICY: &str = "limits.json";
/// The rule a call refused because the counter store is down names.
pub const STORE_DOWN_RULE: &str = "(counter store unavailable)";

/// The recorder with one more tool, `fail`, answering a tool result with `isError: true`
/// (the recorder itself has none): loaded as a module, its `call_tool` wrapped, then served
/// over stdio as usual (same record file, same other tools).
const RECORDER_WITH_FAIL: &str = r#"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("recorder", sys.argv[1])
rec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rec)
plain = rec.call_tool
def call_tool(msg_id, params):
    if params.get("name") == "fail":
        return rec.result(msg_id, {"content": [{"type": "text", "text": "failed on purpose"}],
                                   "isError": True})
    return plain(msg_id, params)
rec.call_tool = call_tool
rec.serve_stdio()
"#;

/// `[counters]` for the embedded store (the default, spelled out).
pub fn embedded() -> String {
    "[counters]\nbackend = \"embedded\"\n\n".to_string()
}

/// `[counters]` for Redis at `url`, with `on_error` (`deny` or `allow`).
pub fn redis(url: &str, on_error: &str) -> String {
    format!(
        "[counters]\nbackend = \"redis\"\nurl = {}\non_error = \"{on_error}\"\n\n",
        toml_str(url)
    )
}

/// A gateway in front of the stdio recorder `rec` (one child per session, all writing to
/// `record`), whose policy is `policy`; grants `alice` and `bob` on it.
pub struct Setup {
    pub gw: Gateway,
    pub record: PathBuf,
}

/// Starts a gateway with `counters` (a `[counters]` table) and `policy`. `extra_tools` are
/// more recorder tools (`RECORDER_EXTRA_TOOLS`), may be empty.
pub fn setup(counters: &str, policy: &str, extra_tools: &str) -> Setup {
    setup_in(
        tempfile::tempdir().expect("temp dir"),
        counters,
        policy,
        extra_tools,
    )
}

/// Like `setup`, in a folder the test chose (a restart reuses the state folder in it).
pub fn setup_in(dir: tempfile::TempDir, counters: &str, policy: &str, extra_tools: &str) -> Setup {
    let record = dir.path().join("rec.jsonl");
    std::fs::write(dir.path().join(POLICY), policy).expect("write policy");
    let wrapper = dir.path().join("recorder_with_fail.py");
    std::fs::write(&wrapper, RECORDER_WITH_FAIL).expect("write recorder wrapper");
    let toml = format!(
        "{counters}[servers.rec]\ncommand = \"python3\"\nargs = [{}, {}]\n\
         env = {{ RECORD_FILE = {}, RECORDER_EXTRA_TOOLS = {} }}\npolicy = \"{POLICY}\"\n\n{}{}",
        toml_str(&wrapper.display().to_string()),
        toml_str(&recorder_py().display().to_string()),
        toml_str(&record.display().to_string()),
        toml_str(extra_tools),
        grant_toml("alice", "rec", "ALICE"),
        grant_toml("bob", "rec", "BOB"),
    );
    let gw = Gateway::start_in(dir, &toml, &[("ALICE", ALICE), ("BOB", BOB)]);
    Setup { gw, record }
}

/// A policy (default deny) whose `tools` are `tools` (a JSON object's inside).
pub fn policy(tools: &str) -> String {
    format!(r#"{{"version": "1", "default": "deny", "tools": {{ {tools} }}}}"#)
}

/// One limit, as a policy writes it.
pub fn limit(counter: &str, window: &str, max: u64, scope: &str) -> String {
    format!(r#"{{"counter": "{counter}", "window": "{window}", "max": {max}, "scope": "{scope}"}}"#)
}

/// `"TOOL": {"limits": [LIMITS]}`.
pub fn tool(name: &str, limits: &[String]) -> String {
    format!(r#""{name}": {{"limits": [{}]}}"#, limits.join(", "))
}

/// Opens `n` sessions of `token` on `rec`.
pub fn sessions<'g>(gw: &'g Gateway, token: &str, n: usize) -> Vec<McpSession<'g>> {
    (0..n)
        .map(|_| McpSession::open(gw, "rec", Some(token)))
        .collect()
}

/// A tools/call sent now, answered later.
pub struct Pending {
    id: u64,
    what: String,
    flight: InFlight,
}

/// Sends `tools/call TOOL {message: MESSAGE}` on `s` without waiting for the answer.
pub fn send(s: &McpSession<'_>, tool: &str, message: &str) -> Pending {
    send_args(s, tool, json!({"message": message}))
}

/// Sends `tools/call TOOL ARGUMENTS` on `s` without waiting for the answer.
pub fn send_args(s: &McpSession<'_>, tool: &str, arguments: Value) -> Pending {
    let id = s.next_id();
    let what = format!("tools/call {tool} {arguments}");
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": tool, "arguments": arguments}});
    Pending {
        id,
        what,
        flight: s.post().json(&body).spawn(),
    }
}

impl Pending {
    /// The JSON-RPC response (HTTP 200, the same id).
    pub fn answer(self) -> Value {
        let r = self
            .flight
            .wait()
            .unwrap_or_else(|e| panic!("{}: HTTP failed: {e}", self.what));
        assert_eq!(r.status, 200, "{}: {}", self.what, r.text());
        let resp = r.response();
        assert_eq!(
            resp["id"],
            json!(self.id),
            "{}: other id: {resp}",
            self.what
        );
        resp
    }
}

/// Sends every call at once, then collects the answers (in the order of `calls`).
pub fn fire(calls: &[(&McpSession<'_>, &str, String)]) -> Vec<Value> {
    let pending: Vec<Pending> = calls.iter().map(|(s, t, m)| send(s, t, m)).collect();
    pending.into_iter().map(Pending::answer).collect()
}

/// One call, waited for.
pub fn call(s: &McpSession<'_>, tool: &str, message: &str) -> Value {
    send(s, tool, message).answer()
}

/// One call, with when it was sent and when its answer was read (the gateway admitted it,
/// if it did, in between).
pub struct Timed {
    pub sent: Instant,
    pub answered: Instant,
    pub resp: Value,
}

pub fn timed_call(s: &McpSession<'_>, tool: &str, message: &str) -> Timed {
    let sent = Instant::now();
    let resp = call(s, tool, message);
    Timed {
        sent,
        answered: Instant::now(),
        resp,
    }
}

/// What an answer to a tools/call is.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The upstream's tool result (no decision of the gateway in it).
    Done { is_error: bool, text: String },
    /// Refused by a limit: the counter named in the decision.
    Limited { counter: String, rule: String },
    /// Refused because the counter store could not be asked.
    StoreDown,
    /// Another denial of the gateway.
    Denied { rule: String },
    /// A JSON-RPC error.
    RpcError { code: i64, message: String },
}

pub fn outcome(resp: &Value) -> Outcome {
    if let Some(err) = resp.get("error") {
        return Outcome::RpcError {
            code: err["code"].as_i64().unwrap_or(0),
            message: err["message"].as_str().unwrap_or("").to_string(),
        };
    }
    let result = &resp["result"];
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text tool result: {resp}"))
        .to_string();
    let decision = &result["_meta"]["toolgate/decision"];
    if decision.is_null() {
        return Outcome::Done {
            is_error: result["isError"] == json!(true),
            text,
        };
    }
    let rule = decision["rule"].as_str().unwrap_or("").to_string();
    if let Some(counter) = decision["counter"].as_str() {
        return Outcome::Limited {
            counter: counter.to_string(),
            rule,
        };
    }
    if rule == STORE_DOWN_RULE {
        return Outcome::StoreDown;
    }
    Outcome::Denied { rule }
}

/// A call the upstream completed without `isError`.
pub fn admitted(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Done {
            is_error: false,
            ..
        }
    )
}

pub fn is_done_ok(resp: &Value) -> bool {
    admitted(&outcome(resp))
}

/// Asserts `resp` is the echo of `message` by the upstream.
pub fn assert_echo(resp: &Value, message: &str, case: &str) {
    assert_eq!(
        outcome(resp),
        Outcome::Done {
            is_error: false,
            text: format!("Echo: {message}")
        },
        "{case}: {resp}"
    );
}

/// Asserts `resp` is exactly the rate-limit denial of SPEC 3 for `counter` (rule `rule`,
/// `max` per `window`, policy version 1), and returns its `retry_after_s`.
pub fn assert_limited(
    resp: &Value,
    counter: &str,
    rule: &str,
    max: u64,
    window: &str,
    case: &str,
) -> u64 {
    let result = &resp["result"];
    let decision = &result["_meta"]["toolgate/decision"];
    let retry = decision["retry_after_s"]
        .as_u64()
        .unwrap_or_else(|| panic!("{case}: no retry_after_s in the decision: {resp}"));
    let window_s = match window {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86400,
        other => panic!("unknown window {other}"),
    };
    assert!(
        (1..=window_s).contains(&retry),
        "{case}: retry_after_s {retry} is not within 1..={window_s}: {resp}"
    );
    let expected = json!({
        "isError": true,
        "content": [{"type": "text", "text": format!(
            "[POLICY DENIED] Rate limit of {max} per {window} reached for counter {counter}; retry in {retry} s")}],
        "_meta": {"toolgate/decision": {"outcome": "deny", "rule": rule, "policy_version": 1,
                                        "counter": counter, "retry_after_s": retry}}
    });
    assert_eq!(result, &expected, "{case}: not the rate-limit denial");
    retry
}

/// Asserts `resp` is the fail-closed denial of a call whose counters cannot be checked.
/// The messages of the racing calls that were admitted (sorted), each checked to be its own
/// echo; every other answer must be the `burst` limit's denial (max 30 a minute), with a
/// retry of about a minute since all 30 were admitted moments ago.
pub fn admitted_under_burst_of_30(
    answers: &[Value],
    calls: &[(&McpSession<'_>, &str, String)],
) -> Vec<String> {
    let mut admitted = Vec::new();
    for (resp, (_, _, message)) in answers.iter().zip(calls) {
        if is_done_ok(resp) {
            assert_echo(resp, message, "an admitted call");
            admitted.push(message.clone());
        } else {
            let rule = "/tools/echo/limits/burst";
            let retry = assert_limited(resp, "burst", rule, 30, "minute", message);
            assert!(
                retry >= 50,
                "{message}: retry_after_s {retry}, expected about 60"
            );
        }
    }
    admitted.sort();
    admitted
}

pub fn assert_store_down(resp: &Value, case: &str) {
    let result = &resp["result"];
    assert_eq!(result["isError"], json!(true), "{case}: {resp}");
    assert_eq!(
        result["_meta"]["toolgate/decision"],
        json!({"outcome": "deny", "rule": STORE_DOWN_RULE, "policy_version": 1}),
        "{case}: {resp}"
    );
    let text = result["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        text.starts_with("[POLICY DENIED] "),
        "{case}: denial text {text:?}"
    );
}

/// The tools/calls the upstream received, in order, as (tool, arguments), from a stdio or
/// HTTP record.
pub fn upstream_calls(record: &Path) -> Vec<(String, Value)> {
    recorded(record)
        .iter()
        .map(|e| match e["body"].as_str() {
            Some(body) => serde_json::from_str(body).unwrap_or(Value::Null),
            None => e.clone(),
        })
        .filter(|m| m["method"] == "tools/call")
        .map(|m| {
            (
                m["params"]["name"].as_str().unwrap_or("").to_string(),
                m["params"]["arguments"].clone(),
            )
        })
        .collect()
}

/// How many tools/call of `tool` the upstream received.
pub fn upstream_count(record: &Path, tool: &str) -> usize {
    upstream_calls(record)
        .iter()
        .filter(|(t, _)| t == tool)
        .count()
}

/// The sorted `message` arguments of the upstream's calls of `tool`.
pub fn upstream_messages(record: &Path, tool: &str) -> Vec<String> {
    let mut m: Vec<String> = upstream_calls(record)
        .into_iter()
        .filter(|(t, _)| t == tool)
        .map(|(_, a)| a["message"].as_str().unwrap_or("").to_string())
        .collect();
    m.sort();
    m
}

/// The record as summary lines (for failure messages).
pub fn record_summary(record: &Path) -> Vec<String> {
    recorded(record).iter().map(summary_line).collect()
}

/// Asserts the gateway's log shows no panic.
pub fn assert_no_panic(gw: &Gateway, what: &str) {
    let log = gw.log();
    assert!(
        !log.contains("panicked"),
        "{what}: the gateway panicked; its log:\n{log}"
    );
}

/// Waits for `cond` until `deadline`, checking every 20 ms; true when it held.
pub fn wait_for(deadline: Duration, cond: impl FnMut() -> bool) -> bool {
    crate::common::poll_until(deadline, cond)
}
