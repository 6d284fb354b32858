//! Every answer of a policy decision, as the official SDK clients take it, in every protocol
//! version they speak: the Python SDK 2.x in its default `auto` mode (which probes
//! `server/discover` and speaks the stateless 2026-07-28 when the server does) and pinned to
//! each of 2025-03-26, 2025-06-18, 2025-11-25 and 2026-07-28, and the TypeScript SDK 1.x
//! (2025-11-25), against `fixtures/servers/sdk2_server.py` (a server on the Python SDK 2.x,
//! speaking all of those versions) over stdio and over Streamable HTTP, and against the real
//! `mcp-coroot`.
//!
//! One gateway per upstream serves the whole client matrix: server `deny` (default deny:
//! `echo` allowed, `add` 2 a minute, `create_refund` denied over 1000, `delete_project`
//! hidden, `list_things` not named) and server `allow` (default allow, `delete_project`
//! hidden), with a grant of its own for every client run so that each run starts with a
//! fresh `add` counter. Each client run is one driver process making all of its calls
//! (`--scenario calls`), which reports for each call what the SDK made of the answer.
//!
//! Asserted for every call: the SDK took the answer without raising anything but an
//! `MCPError` for a JSON-RPC error (a result it cannot validate, such as one without
//! `resultType` under 2026-07-28, fails the case), and the answer is the one SPEC 3 says:
//! the upstream's text when allowed; the denial with `_meta["toolgate/decision"]` (outcome,
//! rule, counter and retry for a limit) when refused; JSON-RPC -32602 `Unknown tool: NAME`
//! for a hidden tool and for a name the upstream does not list, under both defaults, so the
//! two cannot be told apart. A test collects every wrong case of its matrix before failing,
//! and names them all; where the SDK could not take an answer, the line also shows the
//! answer (from the validation error) and whether it was otherwise the right one.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

/// Default deny; what each tool of sdk2_server.py meets is in the module's doc.
const DENY_POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["delete_project"],
  "tools": {
    "echo": {},
    "add": {"limits": [{"counter": "add_rate", "window": "minute", "max": 2, "scope": "grant"}]},
    "create_refund": {
      "deny_if": [{"conditions": [{"path": "args.amount", "op": "gt", "value": 1000}],
                   "on_deny": "Refund exceeds the policy limit."}]
    }
  }
}"#;

/// Default allow, one tool hidden.
const ALLOW_POLICY: &str = r#"{"version": "1", "default": "allow", "hide": ["delete_project"]}"#;

/// The SDK clients of the matrix.
#[derive(Clone, Copy, Debug)]
enum Sdk {
    /// Python SDK 2.x, `mode="auto"` (server/discover first).
    PyAuto,
    /// Python SDK 2.x pinned to one protocol version (`--protocol`).
    PyPinned(&'static str),
    /// TypeScript SDK 1.x (initialize at 2025-11-25).
    Ts,
}

const CLIENTS: [Sdk; 6] = [
    Sdk::PyAuto,
    Sdk::PyPinned("2025-03-26"),
    Sdk::PyPinned("2025-06-18"),
    Sdk::PyPinned("2025-11-25"),
    Sdk::PyPinned("2026-07-28"),
    Sdk::Ts,
];

impl Sdk {
    fn label(self) -> String {
        match self {
            Sdk::PyAuto => "python auto".to_string(),
            Sdk::PyPinned(v) => format!("python {v}"),
            Sdk::Ts => "typescript".to_string(),
        }
    }

    /// The protocol version the client must end up speaking through the gateway: the
    /// pinned one, the newest the TS SDK offers, and for `auto` the stateless 2026-07-28,
    /// which sdk2_server.py speaks (the gateway claims no version its upstream lacks, and
    /// hides none that it has).
    fn expected_protocol(self) -> &'static str {
        match self {
            Sdk::PyAuto => "2026-07-28",
            Sdk::PyPinned(v) => v,
            Sdk::Ts => "2025-11-25",
        }
    }

    /// Runs the `calls` scenario with `calls` through the gateway.
    fn run(self, url: &str, token: &str, calls: &[Call]) -> DriverRun {
        let calls = calls_json(calls);
        match self {
            Sdk::PyAuto => py_client(url, token, "auto", "calls", &["--calls", &calls]),
            Sdk::PyPinned(v) => py_client(
                url,
                token,
                "legacy",
                "calls",
                &["--protocol", v, "--calls", &calls],
            ),
            Sdk::Ts => ts_client(url, token, "calls", &["--calls", &calls]),
        }
    }
}

/// What one call must get.
#[derive(Clone, Debug)]
enum Expect {
    /// Allowed: the upstream's result, this text.
    Text(String),
    /// Allowed: the upstream's result, a text containing this.
    TextContaining(String),
    /// Denied by `rule` with this text (after `[POLICY DENIED] `).
    Denied { rule: String, text: String },
    /// Denied by the limit `counter` (`max` a minute), rule `/tools/TOOL/limits/COUNTER`.
    Limited {
        rule: String,
        counter: String,
        max: u64,
    },
    /// JSON-RPC -32602 `Unknown tool: NAME` (hidden, or not listed by the upstream).
    UnknownTool,
}

#[derive(Clone, Debug)]
struct Call {
    tool: &'static str,
    args: Value,
    expect: Expect,
}

fn call(tool: &'static str, args: Value, expect: Expect) -> Call {
    Call { tool, args, expect }
}

fn text(t: &str) -> Expect {
    Expect::Text(t.to_string())
}

fn denied(rule: &str, text: &str) -> Expect {
    Expect::Denied {
        rule: rule.to_string(),
        text: text.to_string(),
    }
}

fn calls_json(calls: &[Call]) -> String {
    let list: Vec<Value> = calls
        .iter()
        .map(|c| json!({"tool": c.tool, "args": c.args}))
        .collect();
    Value::Array(list).to_string()
}

/// The calls against server `deny`, in order (the third `add` is over its limit).
fn deny_calls() -> Vec<Call> {
    let add_limited = Expect::Limited {
        rule: "/tools/add/limits/add_rate".to_string(),
        counter: "add_rate".to_string(),
        max: 2,
    };
    vec![
        call("echo", json!({"message": "hello"}), text("Echo: hello")),
        call(
            "list_things",
            json!({}),
            denied(
                "(default deny)",
                "Tool \"list_things\" is not permitted by policy",
            ),
        ),
        call(
            "create_refund",
            json!({"amount": 5000, "reason": "duplicate charge"}),
            denied(
                "/tools/create_refund/deny_if/0",
                "Refund exceeds the policy limit.",
            ),
        ),
        call(
            "create_refund",
            json!({"amount": 20, "reason": "late delivery"}),
            text("Refunded 20: late delivery"),
        ),
        call("add", json!({"a": 1, "b": 2}), text("1 + 2 = 3")),
        call("add", json!({"a": 2, "b": 3}), text("2 + 3 = 5")),
        call("add", json!({"a": 3, "b": 4}), add_limited),
        call("delete_project", json!({"id": "p1"}), Expect::UnknownTool),
        call("no_such_tool", json!({}), Expect::UnknownTool),
    ]
}

/// The calls against server `allow`: a tool no rule names is allowed, made-up and hidden
/// names are unknown.
fn allow_calls() -> Vec<Call> {
    vec![
        call("list_things", json!({}), text("thing-1, thing-2, thing-3")),
        call("echo", json!({"message": "open"}), text("Echo: open")),
        call("delete_project", json!({"id": "p1"}), Expect::UnknownTool),
        call("no_such_tool", json!({}), Expect::UnknownTool),
    ]
}

/// What is wrong with one reported call (`got`, the driver's record), if anything.
fn check_call(c: &Call, got: &Value) -> Option<String> {
    let outcome = got["outcome"].as_str().unwrap_or("<none>");
    if outcome == "exception" {
        let what = match got["validation"].as_array() {
            Some(lines) => lines
                .iter()
                .map(|l| l.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join("; "),
            None => got["exception"].as_str().unwrap_or("?").to_string(),
        };
        let mut why = format!(
            "the SDK could not take the answer ({}: {what})",
            got["exception_type"].as_str().unwrap_or("?")
        );
        // What the gateway answered, judged as if the SDK had taken it.
        let raw = &got["raw"];
        if raw.is_object() {
            let as_taken = json!({
                "outcome": "result",
                "is_error": raw["isError"].as_bool().unwrap_or(false),
                "text": raw["content"][0]["text"],
                "meta": raw["_meta"],
            });
            match check_call(c, &as_taken) {
                Some(also) => write!(why, "; and the answer itself is wrong: {also}").unwrap(),
                None => why.push_str("; the answer is otherwise the right one"),
            }
            write!(why, "; the answer: {raw}").unwrap();
        }
        return Some(why);
    }
    let decision = &got["meta"]["toolgate/decision"];
    let is_error = got["is_error"].as_bool();
    let got_text = got["text"].as_str().unwrap_or("");
    match &c.expect {
        Expect::UnknownTool => {
            let want = format!("Unknown tool: {}", c.tool);
            let message = got["message"].as_str().unwrap_or("");
            // The TS SDK's McpError prefixes its message with `MCP error CODE: `.
            let message = message
                .strip_prefix("MCP error -32602: ")
                .unwrap_or(message);
            if outcome != "mcp_error" || got["code"] != -32602 || message != want {
                return Some(format!("want JSON-RPC error -32602 {want:?}"));
            }
        }
        Expect::Text(want) => {
            if outcome != "result" || is_error != Some(false) || got_text != want {
                return Some(format!("want the upstream's result {want:?}"));
            }
        }
        Expect::TextContaining(part) => {
            if outcome != "result"
                || is_error != Some(false)
                || !got_text.contains(part.as_str())
                || !decision.is_null()
            {
                return Some(format!(
                    "want the upstream's result, with {part:?} in its text"
                ));
            }
        }
        Expect::Denied { rule, text } => {
            let want = format!("[POLICY DENIED] {text}");
            let version_ok = decision["policy_version"].as_u64().is_some_and(|v| v >= 1);
            if outcome != "result"
                || is_error != Some(true)
                || got_text != want
                || decision["outcome"] != "deny"
                || decision["rule"] != rule.as_str()
                || !version_ok
            {
                return Some(format!(
                    "want the denial {want:?} with _meta toolgate/decision \
                     {{outcome: deny, rule: {rule}, policy_version}}"
                ));
            }
        }
        Expect::Limited { rule, counter, max } => {
            let retry = decision["retry_after_s"].as_u64().unwrap_or(0);
            let want = format!(
                "[POLICY DENIED] Rate limit of {max} per minute reached for counter {counter}; \
                 retry in {retry} s"
            );
            if outcome != "result"
                || is_error != Some(true)
                || !(1..=60).contains(&retry)
                || got_text != want
                || decision["outcome"] != "deny"
                || decision["rule"] != rule.as_str()
                || decision["counter"] != counter.as_str()
            {
                return Some(format!(
                    "want the rate-limit denial with _meta toolgate/decision {{outcome: deny, \
                     rule: {rule}, counter: {counter}, retry_after_s: 1..=60}} and its text"
                ));
            }
        }
    }
    None
}

/// Checks one client run: it connected at the version it must speak, and every call got
/// its answer. Each wrong thing is one line of `failures`.
fn check_run(case: &str, sdk: Sdk, run: &DriverRun, calls: &[Call], failures: &mut Vec<String>) {
    let out = &run.out;
    let stderr_tail = || {
        let lines: Vec<&str> = run.stderr.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    if out["ok"] != true || out["calls"].as_array().is_none() {
        failures.push(format!(
            "{case}: the client run failed: {out}\n  driver stderr (end):\n{}",
            stderr_tail()
        ));
        return;
    }
    let version = out["protocol_version"].as_str().unwrap_or("<none>");
    if version != sdk.expected_protocol() {
        failures.push(format!(
            "{case}: connected at protocol {version}, want {}",
            sdk.expected_protocol()
        ));
    }
    let got = out["calls"].as_array().expect("checked above");
    if got.len() != calls.len() {
        failures.push(format!(
            "{case}: {} calls reported, {} made: {out}",
            got.len(),
            calls.len()
        ));
        return;
    }
    for (i, (c, g)) in calls.iter().zip(got).enumerate() {
        if let Some(why) = check_call(c, g) {
            let got = if g["outcome"] == "exception" {
                String::new()
            } else {
                format!("; got {g}")
            };
            failures.push(format!(
                "{case} [protocol {version}], call {i} {} {}: {why}{got}",
                c.tool, c.args
            ));
        }
    }
}

fn sdk2_server_py() -> PathBuf {
    let p = repo_root().join("fixtures/servers/sdk2_server.py");
    assert!(p.exists(), "fixtures/servers/sdk2_server.py is missing");
    p
}

/// sdk2_server.py over Streamable HTTP, on a port it picked itself.
struct Sdk2Http {
    _process: Spawned,
    port: u16,
}

impl Sdk2Http {
    fn start() -> Sdk2Http {
        let no_env = std::iter::empty::<(&str, &str)>();
        let (process, port) = start_python_http(python_with_sdk(), &sdk2_server_py(), no_env);
        Sdk2Http {
            _process: process,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

enum Upstream {
    Stdio,
    Http(Sdk2Http),
}

/// The token of client run `i` on `server`.
fn token(server: &str, i: usize) -> String {
    format!("tg-e2e-sdkv-{server}-{i}-5e0d71")
}

/// A gateway with servers `deny` and `allow` in front of sdk2_server.py, and a grant per
/// client run on each (`token(server, i)`).
fn matrix_gateway(upstream: &Upstream) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("deny.json"), DENY_POLICY).expect("write policy");
    std::fs::write(dir.path().join("allow.json"), ALLOW_POLICY).expect("write policy");
    let mut toml = String::new();
    let mut env: Vec<(String, String)> = Vec::new();
    for server in ["deny", "allow"] {
        let policy = format!("{server}.json");
        match upstream {
            Upstream::Stdio => write!(
                toml,
                "[servers.{server}]\ncommand = {}\nargs = [{}]\npolicy = {}\n\n",
                toml_str(python_with_sdk()),
                toml_str(&sdk2_server_py().display().to_string()),
                toml_str(&policy)
            )
            .unwrap(),
            Upstream::Http(peer) => {
                toml.push_str(&http_server_toml(server, &peer.url(), &policy, ""))
            }
        }
        for i in 0..CLIENTS.len() {
            let var = format!("TOKEN_{}_{i}", server.to_uppercase());
            toml.push_str(&grant_toml(&format!("{server}-{i}"), server, &var));
            env.push((var, token(server, i)));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_in(dir, &toml, &env)
}

/// Every client of the matrix against both servers of one gateway; fails naming every
/// wrong case.
fn run_matrix(what: &str, upstream: Upstream) {
    let gw = matrix_gateway(&upstream);
    let (deny, allow) = (deny_calls(), allow_calls());
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, sdk) in CLIENTS.into_iter().enumerate() {
        for (server, calls) in [("deny", &deny), ("allow", &allow)] {
            let run = sdk.run(&gw.mcp_url(server), &token(server, i), calls);
            let case = format!("{} -> {server} ({what})", sdk.label());
            check_run(&case, sdk, &run, calls, &mut failures);
            runs += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers in {runs} client runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn sdk_clients_in_every_version_through_the_gateway_to_sdk2_stdio_server() {
    run_matrix("sdk2_server.py over stdio", Upstream::Stdio);
}

#[test]
fn sdk_clients_in_every_version_through_the_gateway_to_sdk2_http_server() {
    run_matrix(
        "sdk2_server.py over HTTP",
        Upstream::Http(Sdk2Http::start()),
    );
}

/// mcp-coroot behind a policy that allows only `create_api_key`, 30 a minute: the Python
/// SDK in auto mode gets the default-deny denial, 30 keys, the rate-limit denial and the
/// unknown-tool error, each parsed without error; only the 30 allowed calls reach Coroot.
#[test]
fn python_sdk_auto_through_the_gateway_to_mcp_coroot() {
    const TOKEN: &str = "tg-e2e-sdkv-coroot-2b7f04";
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("coroot.json"),
        r#"{"version": "1", "default": "deny", "tools": {"create_api_key": {"limits": [
             {"counter": "create_api_key_rate", "window": "minute", "max": 30, "scope": "grant"}]}}}"#,
    )
    .expect("write policy");
    // mcp-coroot reads ./.env: it runs in an empty folder of its own.
    let workdir = dir.path().join("coroot-cwd");
    std::fs::create_dir(&workdir).expect("mcp-coroot's folder");
    let fake = FakeCoroot::start(&dir.path().join("fake-coroot.jsonl"));
    let toml = format!(
        "{}{}",
        coroot_server_toml("coroot", &fake.url(), &workdir, Some("coroot.json")),
        grant_toml("agent", "coroot", "TOKEN")
    );
    let gw = Gateway::start_in(dir, &toml, &[("TOKEN", TOKEN)]);

    let key_args = coroot_sample_args("create_api_key");
    let mut calls = vec![call(
        "list_projects",
        json!({}),
        denied(
            "(default deny)",
            "Tool \"list_projects\" is not permitted by policy",
        ),
    )];
    // Allowed: mcp-coroot's own answer, a new key (`{"success":true,...,"key":"ck_..."}`).
    let allowed = Expect::TextContaining("\"key\":\"ck_".to_string());
    calls.extend((0..30).map(|_| call("create_api_key", key_args.clone(), allowed.clone())));
    calls.push(call(
        "create_api_key",
        key_args.clone(),
        Expect::Limited {
            rule: "/tools/create_api_key/limits/create_api_key_rate".to_string(),
            counter: "create_api_key_rate".to_string(),
            max: 30,
        },
    ));
    calls.push(call("no_such_tool", json!({}), Expect::UnknownTool));

    let run = Sdk::PyAuto.run(&gw.mcp_url("coroot"), TOKEN, &calls);
    let mut failures = Vec::new();
    check_run(
        "python auto -> coroot (mcp-coroot)",
        Sdk::PyAuto,
        &run,
        &calls,
        &mut failures,
    );
    let generated = fake
        .requests()
        .iter()
        .filter(|l| {
            l["method"] == "POST"
                && l["raw_path"] == "/api/project/p1/api_keys"
                && l["body"]["action"] == "generate"
        })
        .count();
    if generated != 30 {
        failures.push(format!(
            "Coroot got {generated} create_api_key requests, want the 30 allowed ones"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
