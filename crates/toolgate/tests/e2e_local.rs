//! Local mode (SPEC 2.2): `toolgate run --policy P.json -- COMMAND...` and
//! `toolgate run --policy P.json --upstream URL`, stdio MCP servers for a local client with
//! the policy in front: driven by the official Python SDK against server-everything, and by
//! hand against the recorder, which shows what reached the server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// server-everything's 17 tools, two hidden, and `echo` denied when it says "forbidden".
const EVERYTHING_POLICY: &str = r#"{
  "version": "1",
  "default": "allow",
  "hide": ["get-env", "gzip-file-as-resource"],
  "tools": {
    "echo": {"deny_if": [{"conditions": [{"path": "args.message", "op": "contains", "value": "forbidden"}],
                          "on_deny": "Forbidden words."}]}
  }
}"#;

fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("policy.json");
    std::fs::write(&path, text).expect("write policy");
    path
}

/// `py_client.py --stdio '[toolgate, run, ARGS...]' --mode legacy --scenario S EXTRA...`
fn py_stdio(run_args: &[&str], scenario: &str, extra: &[&str]) -> DriverRun {
    let mut argv = vec![toolgate_bin().display().to_string(), "run".to_string()];
    argv.extend(run_args.iter().map(|a| a.to_string()));
    let mut cmd = Command::new(python_with_sdk());
    cmd.arg(repo_root().join("fixtures/clients/py_client.py"))
        .arg("--stdio")
        .arg(serde_json::to_string(&argv).expect("argv"))
        .args(["--mode", "legacy", "--scenario", scenario])
        .args(extra)
        .env("NO_COLOR", "1");
    run_driver("py_client --stdio", cmd)
}

fn everything_stdio_args(policy: &Path) -> Vec<String> {
    vec![
        "--policy".into(),
        policy.display().to_string(),
        "--".into(),
        node_bin().display().to_string(),
        everything_js().display().to_string(),
        "stdio".into(),
    ]
}

fn assert_policy_in_full_scenario(who: &str, run: &DriverRun) {
    let out = &run.out;
    let context = || format!("{who}: {out:#}\n---- driver stderr ----\n{}", run.stderr);
    assert_eq!(out["ok"], true, "{}", context());
    let names: Vec<&str> = out["tools"]["names"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(names.len(), 15, "17 tools less the 2 hidden; {}", context());
    for hidden in ["get-env", "gzip-file-as-resource"] {
        assert!(!names.contains(&hidden), "{hidden} listed; {}", context());
    }
    // echo has a rule, and this call does not trip it.
    assert_eq!(out["echo"], "Echo: hi from py", "{}", context());
    assert!(
        out["progress"]["count"].as_u64().unwrap_or(0) >= 1,
        "progress notifications; {}",
        context()
    );
    assert_eq!(
        out["sampling"]["answer_seen_in_result"],
        true,
        "sampling; {}",
        context()
    );
}

#[test]
fn python_sdk_through_local_mode_sees_the_policy_and_keeps_progress_and_sampling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = write_policy(dir.path(), EVERYTHING_POLICY);
    let args = everything_stdio_args(&policy);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = py_stdio(&args, "full", &[]);
    assert_policy_in_full_scenario("local mode, stdio server", &run);
}

#[test]
fn python_sdk_gets_the_denial_as_a_tool_result_in_local_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = write_policy(dir.path(), EVERYTHING_POLICY);
    let args = everything_stdio_args(&policy);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = py_stdio(
        &args,
        "call",
        &[
            "--tool",
            "echo",
            "--args",
            r#"{"message": "forbidden words"}"#,
        ],
    );
    let out = &run.out;
    let context = format!("{out:#}\n---- driver stderr ----\n{}", run.stderr);
    assert_eq!(out["call"]["is_error"], true, "{context}");
    assert_eq!(
        out["call"]["text"], "[POLICY DENIED] Forbidden words.",
        "{context}"
    );
    assert_eq!(out["kind"], "tool_error", "{context}");
}

#[test]
fn python_sdk_through_local_mode_in_front_of_an_http_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = write_policy(dir.path(), EVERYTHING_POLICY);
    let everything = EverythingHttp::start();
    let url = everything.url();
    let policy = policy.display().to_string();
    let run = py_stdio(&["--policy", &policy, "--upstream", &url], "full", &[]);
    assert_policy_in_full_scenario("local mode, --upstream", &run);
}

/// The recorder's five tools: `exit` hidden, `echo` denied on "secret", `slow` not listed.
const RECORDER_POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["exit"],
  "tools": {
    "echo": {"deny_if": [{"conditions": [{"path": "args.message", "op": "contains", "value": "secret"}],
                          "on_deny": "No secrets."}]},
    "env": {},
    "pid": {}
  }
}"#;

fn recorder_run(dir: &Path, policy: &str, record: &Path) -> StdioClient {
    let policy = write_policy(dir, policy);
    let recorder = recorder_py();
    toolgate_run(
        &[
            "--policy",
            policy.to_str().expect("utf-8 path"),
            "--",
            python(),
            recorder.to_str().expect("utf-8 path"),
        ],
        &[
            ("RECORD_FILE", record.to_str().expect("utf-8 path")),
            ("TOOLGATE_E2E_INHERITED", "inherited-by-the-server"),
        ],
        dir,
    )
}

#[test]
fn local_mode_keeps_denied_and_hidden_calls_from_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let mut c = recorder_run(dir.path(), RECORDER_POLICY, &record);
    c.initialize();
    let mut expected = handshake();

    let listed = c.request("tools/list", json!({"_meta": {"e2e-marker": "list"}}));
    expected.push(list("list"));
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list: {listed}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "slow", "env", "pid"], "exit is hidden");

    let resp = c.call_tool("echo", json!({"message": "a secret"}));
    let id = resp["id"].clone();
    assert_eq!(resp, denial(&id, "/tools/echo/deny_if/0", "No secrets.", 1));
    c.marked_ping("denied echo");
    expected.push(ping("denied echo"));

    // Reaching the recorder, `exit` would end it (and toolgate with it).
    let resp = c.call_tool("exit", json!({}));
    assert_eq!(resp["error"]["code"], -32602, "{resp}");
    assert_eq!(resp["error"]["message"], "Unknown tool: exit", "{resp}");
    c.marked_ping("hidden exit");
    expected.push(ping("hidden exit"));

    let resp = c.call_tool("slow", json!({"seconds": 0}));
    let id = resp["id"].clone();
    assert_eq!(
        resp,
        denial(
            &id,
            "(default deny)",
            r#"Tool "slow" is not permitted by policy"#,
            1
        )
    );
    c.marked_ping("default deny");
    expected.push(ping("default deny"));

    let resp = c.call_tool("echo", json!({"message": "hello"}));
    assert_eq!(
        resp["result"]["content"][0]["text"], "Echo: hello",
        "{resp}"
    );
    expected.push(call("echo"));
    // Local mode passes its whole environment to the server it starts.
    let resp = c.call_tool("env", json!({}));
    expected.push(call("env"));
    let env: Value = serde_json::from_str(resp["result"]["content"][0]["text"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("env tool: {e}: {resp}"));
    assert_eq!(env["TOOLGATE_E2E_INHERITED"], "inherited-by-the-server");
    assert_record(&record, &expected, "local mode");

    // The client goes away: the server's stdin closes, it exits 0, and so does toolgate.
    c.close_stdin();
    let status = c.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "toolgate run after stdin closed; log:\n{}",
        c.stderr()
    );
}

#[test]
fn local_mode_exits_with_the_servers_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let mut c = recorder_run(
        dir.path(),
        r#"{"version": "1", "default": "deny", "tools": {"exit": {}, "pid": {}}}"#,
        &record,
    );
    c.initialize();
    let pid = c.call_tool("pid", json!({}))["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.parse::<i32>().ok())
        .expect("the server's pid");
    // recorder.py's `exit` tool ends the process at once with code 3.
    // The client keeps its end of stdin open: toolgate must go when its server goes.
    c.send(&json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                   "params": {"name": "exit", "arguments": {}}}));
    assert!(
        poll_until(Duration::from_secs(10), || process_gone(pid)),
        "the server {pid} did not exit"
    );
    let status = c.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(3)),
        "toolgate run's exit status after the server exited with 3 (None: still running \
         10 s later); log:\n{}",
        c.stderr()
    );
}

#[test]
fn sigterm_to_local_mode_ends_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let mut c = recorder_run(dir.path(), RECORDER_POLICY, &record);
    c.initialize();
    let pid = c.call_tool("pid", json!({}))["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.parse::<i32>().ok())
        .expect("the server's pid");
    assert!(!process_gone(pid), "the server {pid} is not running");
    // The client keeps its end of stdin open, as a desktop client does until it is told.
    c.signal(libc::SIGTERM);
    assert!(
        poll_until(Duration::from_secs(10), || process_gone(pid)),
        "the server {pid} is still running 10 s after SIGTERM to toolgate run; log:\n{}",
        c.stderr()
    );
    let status = c.wait_exit(Duration::from_secs(10));
    // The server died of the SIGTERM passed on: its status, as a shell reports it, is 128 + 15.
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(143)),
        "toolgate run's exit status after SIGTERM (None: still running 10 s later); log:\n{}",
        c.stderr()
    );
}

#[test]
fn local_mode_in_front_of_an_http_server_sends_its_headers_and_keeps_denials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec-http.jsonl");
    let upstream = RecorderHttp::start(&record);
    let policy = write_policy(dir.path(), RECORDER_POLICY);
    let mut c = toolgate_run(
        &[
            "--policy",
            policy.to_str().expect("utf-8 path"),
            "--upstream",
            &upstream.url(),
            "--header",
            "X-Upstream-Key: local-key-7f2e",
        ],
        &[],
        dir.path(),
    );
    c.initialize();
    let mut expected = handshake();
    let resp = c.call_tool("echo", json!({"message": "top secret"}));
    let id = resp["id"].clone();
    assert_eq!(resp, denial(&id, "/tools/echo/deny_if/0", "No secrets.", 1));
    c.marked_ping("denied echo");
    expected.push(ping("denied echo"));
    let resp = c.call_tool("exit", json!({}));
    assert_eq!(resp["error"]["message"], "Unknown tool: exit", "{resp}");
    c.marked_ping("hidden exit");
    expected.push(ping("hidden exit"));
    let resp = c.call_tool("echo", json!({"message": "hello"}));
    assert_eq!(
        resp["result"]["content"][0]["text"], "Echo: hello",
        "{resp}"
    );
    expected.push(call("echo"));
    assert_record(&record, &expected, "local mode, --upstream");
    for entry in recorded(&record) {
        if entry["http"] == "POST" {
            assert_eq!(
                entry["headers"]["x-upstream-key"], "local-key-7f2e",
                "the configured header on every request: {entry}"
            );
        }
    }
}
