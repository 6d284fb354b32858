//! What the README and `examples/` show users works as shown, so neither can rot:
//!
//! - the Python snippet of "Point an agent at it", taken from README.md at test time, run with
//!   python3 (the MCP SDK in its default mode) against the quickstart config with its token
//!   grant uncommented; its output must be the output the README prints;
//! - the Coroot example (`examples/coroot.toml` and `examples/coroot-policy.json`, unchanged)
//!   in front of the real `mcp-coroot` and the fake Coroot API: `toolgate policy check
//!   --server coroot` says what the README says, and an agent (by hand, and the Python SDK
//!   at 2026-07-28) sees what the README's "Second example: Coroot" lists.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

// Shared helpers

fn repo_text(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn repo_json(rel: &str) -> Value {
    serde_json::from_str(&repo_text(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// The README section under `## {title}`, up to the next `## ` heading.
fn readme_section(title: &str) -> String {
    let readme = repo_text("README.md");
    let heading = format!("\n## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"))
        + heading.len();
    let rest = &readme[start..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The first fenced block of `lang` in `text` at or after byte `from`: its body and the byte
/// where the block ends.
fn fenced_block(text: &str, lang: &str, from: usize) -> Option<(String, usize)> {
    let open = format!("```{lang}\n");
    let start = text[from..].find(&open)? + from + open.len();
    let len = text[start..].find("\n```")?;
    Some((text[start..start + len + 1].to_string(), start + len + 4))
}

/// Replaces the one line of `text` that starts with `prefix` by `line`.
fn replace_line(text: &str, prefix: &str, line: &str) -> String {
    let hits = text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(hits, 1, "expected one line starting {prefix:?} in:\n{text}");
    text.lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

// The README's Python snippet

const QUICKSTART_URL: &str = "http://127.0.0.1:8080/mcp/everything";
const QUICKSTART_TOKEN: &str = "tg-e2e-readme-quickstart-7d41c2";

/// `examples/quickstart.toml` as the README tells a user to change it (its token grant
/// uncommented), with server-everything started from the installed test peers instead of
/// `npx`, and its policy next to it.
fn quickstart_gateway() -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        repo_root().join("examples/quickstart-policy.json"),
        dir.path().join("quickstart-policy.json"),
    )
    .expect("copy the quickstart policy");
    let mut toml = repo_text("examples/quickstart.toml");
    for line in [
        "[grants.my-agent]",
        "server = \"everything\"",
        "token_env = \"QUICKSTART_TOKEN\"",
    ] {
        let commented = format!("# {line}");
        toml = replace_line(&toml, &commented, line);
    }
    toml = replace_line(
        &toml,
        "command = ",
        &format!("command = {}", toml_str(&node_bin().display().to_string())),
    );
    toml = replace_line(
        &toml,
        "args = ",
        &format!(
            "args = [{}, \"stdio\"]",
            toml_str(&everything_js().display().to_string())
        ),
    );
    Gateway::start_in(dir, &toml, &[("QUICKSTART_TOKEN", QUICKSTART_TOKEN)])
}

#[test]
fn readme_python_snippet_runs_through_the_gateway() {
    let section = readme_section("Point an agent at it");
    let (snippet, end) = fenced_block(&section, "python", 0)
        .expect("a ```python block in the README's \"Point an agent at it\"");
    let (printed, _) = fenced_block(&section, "text", end)
        .expect("a ```text block after the Python snippet: what it prints");
    assert_eq!(
        snippet.matches(QUICKSTART_URL).count(),
        1,
        "the snippet should name the quickstart's URL once:\n{snippet}"
    );
    assert!(
        snippet.contains("os.environ[\"QUICKSTART_TOKEN\"]"),
        "the snippet should take the quickstart grant's token from QUICKSTART_TOKEN:\n{snippet}"
    );

    let gw = quickstart_gateway();
    let script = gw.dir.path().join("readme_snippet.py");
    std::fs::write(
        &script,
        snippet.replace(QUICKSTART_URL, &gw.mcp_url("everything")),
    )
    .expect("write the snippet");
    let mut cmd = std::process::Command::new(python_with_sdk());
    cmd.arg(&script)
        .current_dir(gw.dir.path())
        .env("QUICKSTART_TOKEN", QUICKSTART_TOKEN);
    let mut run = Spawned::start("README snippet", cmd);
    let status = run.wait_for(DRIVER_DEADLINE);
    let (out, err) = (run.stdout(), run.stderr());
    let context = format!("README snippet ({status:?})\nstdout:\n{out}\nstderr:\n{err}");
    assert!(status.is_some_and(|s| s.success()), "{context}");

    // The tools line: the README shows its beginning, then `…`.
    let (want_tools, want_rest) = printed
        .split_once('\n')
        .expect("the README's output has more than the tools line");
    let (got_tools, got_rest) = out.split_once('\n').unwrap_or((&out, ""));
    let shown = want_tools.trim_end_matches('…').trim_end_matches(", ");
    assert!(
        got_tools.starts_with(shown),
        "the README shows the tools line as {want_tools:?}; {context}"
    );
    let listed: Vec<&str> = got_tools
        .trim_start_matches("tools: ")
        .split(", ")
        .collect();
    assert!(listed.contains(&"echo"), "{context}");
    assert!(
        !listed.contains(&"get-env"),
        "get-env is hidden by the quickstart's policy; {context}"
    );
    // The calls, their is_error and the gateway's decision: exactly as the README prints them.
    assert_eq!(got_rest, want_rest, "{context}");
}

// The Coroot example

const COROOT_TOKEN: &str = "tg-e2e-readme-coroot-agent-19f0b4";

/// The example's policy, split by what it does with each tool.
struct CorootPolicy {
    allowed: BTreeSet<String>,
    hidden: BTreeSet<String>,
    all: BTreeSet<String>,
}

impl CorootPolicy {
    fn load() -> CorootPolicy {
        let policy = repo_json("examples/coroot-policy.json");
        assert_eq!(policy["default"], "deny", "{policy}");
        let names = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
                .unwrap_or_else(|| v.as_object().unwrap().keys().cloned().collect())
        };
        CorootPolicy {
            allowed: names(&policy["tools"]),
            hidden: names(&policy["hide"]),
            all: coroot_tool_names().into_iter().collect(),
        }
    }

    /// The tools neither allowed nor hidden: listed, and denied by the default.
    fn denied(&self) -> BTreeSet<String> {
        let named: BTreeSet<String> = self.allowed.union(&self.hidden).cloned().collect();
        self.all.difference(&named).cloned().collect()
    }
}

/// The policy is the one the README describes: the read tools (every tool whose Coroot
/// requests are all GETs) allowed, create_api_key limited, the delete_* tools hidden.
#[test]
fn coroot_example_policy_is_what_the_readme_says() {
    let p = CorootPolicy::load();
    let endpoints = coroot_endpoints();
    let reads: BTreeSet<String> = p
        .all
        .iter()
        .filter(|t| endpoints[t.as_str()].iter().all(|e| e.method == "GET"))
        .cloned()
        .collect();
    let mut want_allowed = reads.clone();
    want_allowed.insert("create_api_key".to_string());
    assert_eq!(
        p.allowed, want_allowed,
        "allowed: the reads and create_api_key"
    );
    let deletes: BTreeSet<String> = p
        .all
        .iter()
        .filter(|t| t.starts_with("delete_"))
        .cloned()
        .collect();
    assert_eq!(p.hidden, deletes, "hidden: the delete_* tools");
    assert_eq!(p.hidden.len(), 6, "the README says six delete_* tools");
    assert_eq!(p.denied().len(), 21, "the README says 21 write tools");
    assert!(p.denied().iter().all(|t| !reads.contains(t)));
    let policy = repo_json("examples/coroot-policy.json");
    assert_eq!(
        policy["tools"]["create_api_key"],
        json!({"limits": [{"counter": "create_api_key_rate", "window": "minute",
                           "max": 30, "scope": "grant"}]})
    );
}

/// The environment the README tells a user to set, for the fake Coroot API, with the
/// directory of mcp-coroot first on PATH (the real script, not a pyenv shim).
fn coroot_env(fake: &FakeCoroot) -> Vec<(String, String)> {
    let scripts = mcp_coroot_bin()
        .parent()
        .expect("mcp-coroot's folder")
        .display()
        .to_string();
    let path = format!("{scripts}:{}", std::env::var("PATH").unwrap_or_default());
    [
        ("COROOT_BASE_URL", fake.url()),
        ("COROOT_USERNAME", "admin".to_string()),
        ("COROOT_PASSWORD", "secret".to_string()),
        ("COROOT_AGENT_TOKEN", COROOT_TOKEN.to_string()),
        ("PATH", path),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Copies the example's two files into `dir`, unchanged; returns the config's path.
fn copy_coroot_example(dir: &Path) -> PathBuf {
    for file in ["coroot.toml", "coroot-policy.json"] {
        std::fs::copy(repo_root().join("examples").join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("copy examples/{file}: {e}"));
    }
    dir.join("coroot.toml")
}

/// `toolgate policy check examples/coroot-policy.json --server coroot --config
/// examples/coroot.toml`: valid, and its only warnings are the write tools left to the
/// default deny (no tool named that mcp-coroot does not have).
#[test]
fn coroot_example_passes_policy_check_against_mcp_coroot() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_coroot_example(dir.path());
    let fake = FakeCoroot::start(&dir.path().join("fake-coroot.jsonl"));
    let env = coroot_env(&fake);
    let run = toolgate_cli(
        &[
            "policy",
            "check",
            "coroot-policy.json",
            "--server",
            "coroot",
            "--config",
            "coroot.toml",
        ],
        &env_refs(&env),
        dir.path(),
    );
    run.ok();
    let denied = CorootPolicy::load().denied();
    let warnings: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .collect();
    let want: Vec<String> = denied
        .iter()
        .map(|t| {
            format!("/tools: the server's tool \"{t}\" is not mentioned by the policy (denied by default)")
        })
        .collect();
    let mut got: Vec<&str> = warnings.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "coroot-policy.json: valid ({} warning(s))",
            denied.len()
        )),
        "{run:#?}"
    );
}

/// What the README's "Second example: Coroot" says an agent sees, through a gateway started
/// on `examples/coroot.toml` as it is.
#[test]
fn coroot_example_as_an_agent_sees_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = copy_coroot_example(dir.path());
    let fake = FakeCoroot::start(&dir.path().join("fake-coroot.jsonl"));
    let env = coroot_env(&fake);
    let example = std::fs::read_to_string(&config).expect("read the example");
    let gw = Gateway::start_in(dir, &example, &env_refs(&env));
    let p = CorootPolicy::load();
    let endpoints = coroot_endpoints();
    let s = McpSession::open(&gw, "coroot", Some(COROOT_TOKEN));

    // tools/list: everything but the delete_* tools (55 of 61).
    let listed = s.request("tools/list", json!({}));
    assert!(
        listed["result"]["nextCursor"].is_null(),
        "one page: {listed}"
    );
    let names: BTreeSet<String> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list: {listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = p.all.difference(&p.hidden).cloned().collect();
    assert_eq!(names, want);
    assert_eq!(names.len(), 55, "the README says 55 tools");

    // Reads: they reach Coroot, and its answer comes back with no decision in it.
    for tool in [
        "list_projects",
        "get_project_status",
        "get_application_logs",
    ] {
        assert!(
            p.allowed.contains(tool),
            "{tool} is a read the example allows"
        );
        let args = coroot_sample_args(tool);
        let before = fake.requests().len();
        let resp = s.call_tool(tool, args);
        assert_eq!(resp["result"]["isError"], false, "{tool}: {resp}");
        let answer: Value = serde_json::from_str(&tool_text(&resp))
            .unwrap_or_else(|e| panic!("{tool}: not mcp-coroot's JSON answer ({e}): {resp}"));
        assert_eq!(answer["success"], true, "{tool}: {resp}");
        assert!(
            resp["result"]["_meta"].get("toolgate/decision").is_none(),
            "{tool}: {resp}"
        );
        let new = fake.requests()[before..].to_vec();
        for e in &endpoints[tool] {
            assert!(
                new.iter().any(|l| e.matches(l)),
                "{tool}: no {} {} in the fake's log: {new:#?}",
                e.method,
                e.path
            );
        }
    }

    // A write: denied by the default, and Coroot never called.
    let before = fake.requests().len();
    let resp = s.call_tool("update_dashboard", coroot_sample_args("update_dashboard"));
    assert_eq!(
        resp["result"],
        json!({"isError": true,
               "content": [{"type": "text",
                            "text": "[POLICY DENIED] Tool \"update_dashboard\" is not permitted by policy"}],
               "_meta": {"toolgate/decision":
                         {"outcome": "deny", "rule": "(default deny)", "policy_version": 1}}}),
        "{resp}"
    );
    assert_eq!(
        fake.requests().len(),
        before,
        "update_dashboard reached Coroot"
    );

    // A hidden tool: answered as an unknown one, and Coroot never called.
    let resp = s.call_tool("delete_project", coroot_sample_args("delete_project"));
    assert_eq!(
        resp["error"],
        json!({"code": -32602, "message": "Unknown tool: delete_project"}),
        "{resp}"
    );
    assert_eq!(
        fake.requests().len(),
        before,
        "delete_project reached Coroot"
    );

    // create_api_key: 30 a minute for this grant, then refused with when to retry.
    let args = coroot_sample_args("create_api_key");
    for n in 1..=30 {
        let resp = s.call_tool("create_api_key", args.clone());
        assert_eq!(
            resp["result"]["isError"], false,
            "create_api_key #{n}: {resp}"
        );
    }
    let resp = s.call_tool("create_api_key", args.clone());
    let text = tool_text(&resp);
    assert!(
        text.starts_with(
            "[POLICY DENIED] Rate limit of 30 per minute reached for counter create_api_key_rate; retry in "
        ),
        "create_api_key #31: {resp}"
    );
    let decision = &resp["result"]["_meta"]["toolgate/decision"];
    assert_eq!(resp["result"]["isError"], true, "{resp}");
    assert_eq!(decision["outcome"], "deny", "{resp}");
    assert_eq!(
        decision["rule"], "/tools/create_api_key/limits/create_api_key_rate",
        "{resp}"
    );
    assert_eq!(decision["counter"], "create_api_key_rate", "{resp}");
    assert!(
        decision["retry_after_s"].as_u64().is_some_and(|s| s <= 60),
        "{resp}"
    );
    let created = fake
        .requests()
        .iter()
        .filter(|l| endpoints["create_api_key"][0].matches(l) && l["body"]["action"] == "generate")
        .count();
    assert_eq!(created, 30, "API keys created at Coroot");
}

/// The same through the Python SDK in its default mode, which speaks 2026-07-28 with
/// mcp-coroot (fastmcp 4.2.3): a read, a write denied by the default, a hidden tool.
#[test]
fn coroot_example_through_the_python_sdk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = copy_coroot_example(dir.path());
    let fake = FakeCoroot::start(&dir.path().join("fake-coroot.jsonl"));
    let env = coroot_env(&fake);
    let example = std::fs::read_to_string(&config).expect("read the example");
    let gw = Gateway::start_in(dir, &example, &env_refs(&env));
    let calls = json!([
        {"tool": "list_projects", "args": coroot_sample_args("list_projects")},
        {"tool": "update_dashboard", "args": coroot_sample_args("update_dashboard")},
        {"tool": "delete_project", "args": coroot_sample_args("delete_project")},
    ]);
    let run = py_client(
        &gw.mcp_url("coroot"),
        COROOT_TOKEN,
        "auto",
        "calls",
        &["--calls", &calls.to_string()],
    );
    let out = &run.out;
    let context = || format!("{out:#}\n---- driver stderr ----\n{}", run.stderr);
    assert_eq!(out["protocol_version"], "2026-07-28", "{}", context());
    let got = &out["calls"];
    assert_eq!(got[0]["outcome"], "result", "{}", context());
    assert_eq!(got[0]["is_error"], false, "{}", context());
    assert_eq!(got[1]["outcome"], "result", "{}", context());
    assert_eq!(got[1]["is_error"], true, "{}", context());
    assert_eq!(
        got[1]["text"],
        "[POLICY DENIED] Tool \"update_dashboard\" is not permitted by policy",
        "{}",
        context()
    );
    assert_eq!(
        got[1]["meta"]["toolgate/decision"]["rule"],
        "(default deny)",
        "{}",
        context()
    );
    assert_eq!(got[2]["outcome"], "mcp_error", "{}", context());
    assert_eq!(got[2]["code"], -32602, "{}", context());
    assert_eq!(
        got[2]["message"],
        "Unknown tool: delete_project",
        "{}",
        context()
    );
    let dashboards = coroot_endpoints()["update_dashboard"].clone();
    assert!(
        !fake
            .requests()
            .iter()
            .any(|l| dashboards.iter().any(|e| e.matches(l))),
        "update_dashboard reached Coroot"
    );
}
