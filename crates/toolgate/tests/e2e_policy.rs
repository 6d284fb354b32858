//! The policy engine through the real gateway (SPEC 3 and 4): denials with the tool result of
//! SPEC 3, grants without a policy, hidden tools gone from every `tools/list` page and unknown
//! at call time (over stdio and HTTP), and policy files edited while a session is open.
//! Bypass attempts (name variants, malformed calls) are in e2e_policy_bypass.rs.
//!
//! Every refusal is proven from the upstream's side: the recorder writes down every message
//! it receives, each refused call is followed by a ping carrying the case's name, and in the
//! end the whole record must be exactly the handshake, those pings and the allowed calls.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

enum Outcome {
    Deny(&'static str, &'static str),
    Allow(&'static str),
}

#[test]
fn rules_deny_with_the_spec_result_and_denied_calls_never_reach_the_server() {
    use Outcome::*;
    let p = policy_setup(RULES, &[RULES_TOOLS]);
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    let cases = [
        (
            "deny_if with on_deny",
            "refund",
            json!({"amount": 500, "reason": "broken"}),
            Deny(
                "/tools/refund/deny_if/0",
                "Refund exceeds the policy limit.",
            ),
        ),
        (
            "deny_if without on_deny",
            "refund",
            json!({"amount": 5, "reason": "broken", "currency": "XBT"}),
            Deny(
                "/tools/refund/deny_if/1",
                "Denied by rule /tools/refund/deny_if/1",
            ),
        ),
        (
            "a number as a string is no way around gt",
            "refund",
            json!({"amount": "500", "reason": "broken"}),
            Deny(
                "/tools/refund/deny_if/0",
                "Refund exceeds the policy limit.",
            ),
        ),
        (
            "require failing, with on_deny",
            "refund",
            json!({"amount": 5}),
            Deny("/tools/refund/require/0", "A refund needs a reason."),
        ),
        (
            "an allowed refund",
            "refund",
            json!({"amount": 50, "reason": "broken"}),
            Allow(r#"refund: {"amount": 50, "reason": "broken"}"#),
        ),
        (
            "require failing, without on_deny (regex is a full match)",
            "transfer",
            json!({"to": "acct-12 and acct-666"}),
            Deny(
                "/tools/transfer/require/0",
                "Denied by rule /tools/transfer/require/0",
            ),
        ),
        (
            "require failing on a missing argument",
            "transfer",
            json!({}),
            Deny(
                "/tools/transfer/require/0",
                "Denied by rule /tools/transfer/require/0",
            ),
        ),
        (
            "an allowed transfer",
            "transfer",
            json!({"to": "acct-12"}),
            Allow(r#"transfer: {"to": "acct-12"}"#),
        ),
        (
            "default deny of a tool the server has",
            "wipe",
            json!({}),
            Deny(
                "(default deny)",
                r#"Tool "wipe" is not permitted by policy"#,
            ),
        ),
        (
            "default deny of a core recorder tool",
            "exit",
            json!({}),
            Deny(
                "(default deny)",
                r#"Tool "exit" is not permitted by policy"#,
            ),
        ),
        (
            "a listed tool with no rules",
            "echo",
            json!({"message": "allowed"}),
            Allow("Echo: allowed"),
        ),
    ];
    let mut expected = handshake();
    let mut sent_arguments = Vec::new();
    for (i, (case, tool, args, outcome)) in cases.into_iter().enumerate() {
        // String and number ids alike are echoed.
        let id = if i % 2 == 0 {
            json!(format!("case-{i}"))
        } else {
            json!(700 + i)
        };
        let resp = call_with_id(&s, &id, tool, args.clone());
        match outcome {
            Deny(rule, text) => {
                assert_eq!(resp, denial(&id, rule, text, 1), "{case}");
                s.marked_ping(case);
                expected.push(ping(case));
            }
            Allow(text) => {
                assert_eq!(resp["result"]["isError"], false, "{case}: {resp}");
                assert_eq!(tool_text(&resp), text, "{case}: {resp}");
                expected.push(call(tool));
                sent_arguments.push(args);
            }
        }
    }
    assert_record(&p.record, &expected, "rules");
    let reached: Vec<Value> = recorded(&p.record)
        .into_iter()
        .filter(|m| m["method"] == "tools/call")
        .map(|m| m["params"]["arguments"].clone())
        .collect();
    assert_eq!(reached, sent_arguments, "allowed calls' arguments upstream");
}

#[test]
fn a_grant_without_any_policy_has_every_call_denied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let toml = format!(
        "{}{}[grants.own]\nserver = \"rec\"\ntoken_env = \"OWN\"\npolicy = \"{ALLOW_ALL}\"\n\n",
        recorder_server_toml_with("rec", &record, &[], None),
        grant_toml("bare", "rec", "BARE"),
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("BARE", POLICY_TOKEN), ("OWN", POLICY_OPEN_TOKEN)],
    );
    let bare = McpSession::open(&gw, "rec", Some(POLICY_TOKEN));
    let mut expected = handshake();
    for tool in ["echo", "exit", "no-such-tool"] {
        let resp = bare.call_tool(tool, json!({"message": "no policy"}));
        assert_eq!(resp["result"]["isError"], true, "{tool}: {resp}");
        let text = tool_text(&resp);
        assert!(text.starts_with("[POLICY DENIED] "), "{tool}: {resp}");
        let decision = &resp["result"]["_meta"]["toolgate/decision"];
        assert_eq!(decision["outcome"], "deny", "{tool}: {resp}");
        assert_eq!(decision["rule"], "(no policy)", "{tool}: {resp}");
        let case = format!("no policy: {tool}");
        bare.marked_ping(&case);
        expected.push(ping(&case));
    }
    // The same server through a grant that has its own policy: the call goes through.
    let own = McpSession::open(&gw, "rec", Some(POLICY_OPEN_TOKEN));
    expected.extend(handshake());
    assert_eq!(
        tool_text(&own.call_tool("echo", json!({"message": "own policy"}))),
        "Echo: own policy"
    );
    expected.push(call("echo"));
    assert_record(&record, &expected, "no policy");
}

/// One tools/list page: its text, the raw `tools` array, each tool's raw text, nextCursor.
struct Page {
    text: String,
    tools_raw: String,
    tools: Vec<String>,
    names: Vec<String>,
    next: Option<Value>,
}

fn list_page(s: &McpSession, id: u64, cursor: &Option<Value>, marker: &str) -> Page {
    let mut params = json!({"_meta": {"e2e-marker": marker}});
    if let Some(c) = cursor {
        params["cursor"] = c.clone();
    }
    let r = s
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params}))
        .send();
    assert_eq!(r.status, 200, "tools/list: {}", r.text());
    let text = r.response_text();
    let top: HashMap<String, Box<RawValue>> = serde_json::from_str(&text).expect("a response");
    let result = top
        .get("result")
        .unwrap_or_else(|| panic!("tools/list failed: {text}"));
    let result: HashMap<String, Box<RawValue>> =
        serde_json::from_str(result.get()).expect("result is an object");
    let tools_raw = result["tools"].get().to_string();
    let tools: Vec<Box<RawValue>> = serde_json::from_str(&tools_raw).expect("tools is a list");
    let names = tools
        .iter()
        .map(|t| serde_json::from_str::<Value>(t.get()).unwrap()["name"].to_string())
        .map(|n| serde_json::from_str::<String>(&n).unwrap())
        .collect();
    let next = result
        .get("nextCursor")
        .map(|c| serde_json::from_str(c.get()).unwrap());
    Page {
        text,
        tools_raw,
        tools: tools.iter().map(|t| t.get().to_string()).collect(),
        names,
        next,
    }
}

/// Walks every page with both sessions (same ids, so the upstream's answers are the same
/// bytes); checks the filtered page is the unfiltered one with exactly the hidden tools cut
/// out, byte for byte, and the same nextCursor. Returns the filtered names page by page.
fn walk_pages(
    filtered: &McpSession,
    unfiltered: &McpSession,
    hidden: impl Fn(&str) -> bool,
    expected: &mut Vec<String>,
) -> Vec<Vec<String>> {
    let mut cursor = None;
    let mut pages = Vec::new();
    for n in 0..20u64 {
        let marker = format!("page {n}");
        let agent = list_page(filtered, 500 + n, &cursor, &marker);
        let open = list_page(unfiltered, 500 + n, &cursor, &marker);
        expected.extend([list(&marker), list(&marker)]);
        let kept: Vec<&String> = open
            .names
            .iter()
            .zip(&open.tools)
            .filter(|(name, _)| !hidden(name))
            .map(|(_, raw)| raw)
            .collect();
        let kept_raw: Vec<&str> = kept.iter().map(|s| s.as_str()).collect();
        let want = open
            .text
            .replacen(&open.tools_raw, &format!("[{}]", kept_raw.join(",")), 1);
        assert_eq!(
            agent.text, want,
            "page {n}: the filtered page is not the upstream's page minus the hidden tools"
        );
        assert_eq!(agent.next, open.next, "page {n}: nextCursor");
        pages.push(agent.names);
        match agent.next {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
    }
    panic!("more than 20 pages");
}

#[test]
fn hidden_tools_leave_every_page_and_answer_as_unknown() {
    // 7 tools, 2 a page: [echo slow] [exit env] [pid delete_project] [wipe]
    let p = policy_setup(
        r#"{"version": "1", "default": "allow", "hide": ["exit", "env", "delete_project"]}"#,
        &[
            ("RECORDER_EXTRA_TOOLS", "delete_project,wipe"),
            ("RECORDER_PAGE_SIZE", "2"),
        ],
    );
    let agent = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    wait_for_record(&p.record, 2);
    let open = McpSession::open(&p.gw, "rec", Some(POLICY_OPEN_TOKEN));
    wait_for_record(&p.record, 4);
    let mut expected = handshake();
    expected.extend(handshake());
    let hidden = ["exit", "env", "delete_project"];
    let pages = walk_pages(&agent, &open, |name| hidden.contains(&name), &mut expected);
    assert_eq!(
        pages,
        [vec!["echo", "slow"], vec![], vec!["pid"], vec!["wipe"]],
        "the agent's pages (an emptied page keeps its nextCursor)"
    );

    for (i, name) in hidden.iter().chain(&["nonexistent"]).enumerate() {
        let id = json!(900 + i);
        let resp = call_with_id(&agent, &id, name, json!({"project_id": "p1"}));
        assert_eq!(resp, unknown_tool(&id, name), "{name}");
        let case = format!("call of {name}");
        agent.marked_ping(&case);
        expected.push(ping(&case));
    }
    // The server has the tool; only this grant's policy hides it.
    let resp = open.call_tool("delete_project", json!({"project_id": "p1"}));
    assert_eq!(tool_text(&resp), r#"delete_project: {"project_id": "p1"}"#);
    expected.push(call("delete_project"));
    assert_record(&p.record, &expected, "hidden tools");
}

#[test]
fn under_default_deny_a_hidden_name_and_a_missing_one_answer_alike() {
    // SPEC 3: only a tool the upstream lists gets the `(default deny)` denial; a hidden tool,
    // a name the server does not have and a look-alike of a listed one all get the
    // unknown-tool error, so the answers never tell an agent which names are hidden.
    let p = policy_setup(
        r#"{"version": "1", "default": "deny", "hide": ["wipe"], "tools": {"echo": {}}}"#,
        &[("RECORDER_EXTRA_TOOLS", "wipe,refund")],
    );
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    let mut expected = handshake();
    for (i, name) in ["wipe", "nonexistent", "Refund", "refund "]
        .iter()
        .enumerate()
    {
        let id = json!(800 + i);
        let resp = call_with_id(&s, &id, name, json!({}));
        assert_eq!(resp, unknown_tool(&id, name), "{name:?}");
        let case = format!("unknown {name}");
        s.marked_ping(&case);
        expected.push(ping(&case));
    }
    let id = json!("listed");
    let resp = call_with_id(&s, &id, "refund", json!({}));
    assert_eq!(
        resp,
        denial(
            &id,
            "(default deny)",
            r#"Tool "refund" is not permitted by policy"#,
            1
        )
    );
    s.marked_ping("listed refund");
    expected.push(ping("listed refund"));
    assert_eq!(
        tool_text(&s.call_tool("echo", json!({"message": "named"}))),
        "Echo: named"
    );
    expected.push(call("echo"));
    assert_record(&p.record, &expected, "default deny");
}

#[test]
fn hide_star_and_deny_if_in_front_of_an_http_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec-http.jsonl");
    // 6 tools, 2 a page: [echo slow] [exit env] [pid wipe]
    let upstream = RecorderHttp::start_with_env(
        &record,
        &[
            ("RECORDER_PAGE_SIZE", "2"),
            ("RECORDER_EXTRA_TOOLS", "wipe"),
        ],
    );
    std::fs::write(
        dir.path().join(POLICY_FILE),
        r#"{"version": "1", "default": "deny", "hide": ["*"], "tools": {
             "echo": {"deny_if": [{"conditions": [{"path": "args.message", "op": "contains", "value": "secret"}],
                                   "on_deny": "No secrets."}]},
             "pid": {}}}"#,
    )
    .expect("write policy");
    let toml = format!(
        "{}{}[grants.open]\nserver = \"rec\"\ntoken_env = \"OPEN\"\npolicy = \"{ALLOW_ALL}\"\n\n",
        http_server_toml("rec", &upstream.url(), POLICY_FILE, ""),
        grant_toml("agent", "rec", "TOKEN"),
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("TOKEN", POLICY_TOKEN), ("OPEN", POLICY_OPEN_TOKEN)],
    );
    let agent = McpSession::open(&gw, "rec", Some(POLICY_TOKEN));
    let open = McpSession::open(&gw, "rec", Some(POLICY_OPEN_TOKEN));
    let mut expected = handshake();
    expected.extend(handshake());
    let pages = walk_pages(
        &agent,
        &open,
        |name| !["echo", "pid"].contains(&name),
        &mut expected,
    );
    assert_eq!(
        pages,
        [vec!["echo"], vec![], vec!["pid"]],
        "the agent's pages"
    );

    let id = json!("secret-1");
    let resp = call_with_id(&agent, &id, "echo", json!({"message": "the secret plan"}));
    assert_eq!(resp, denial(&id, "/tools/echo/deny_if/0", "No secrets.", 1));
    agent.marked_ping("denied echo");
    expected.push(ping("denied echo"));
    for name in ["slow", "wipe", "Echo", "exit"] {
        let id = json!(format!("hidden-{name}"));
        assert_eq!(
            call_with_id(&agent, &id, name, json!({})),
            unknown_tool(&id, name),
            "{name}"
        );
        let case = format!("hidden {name}");
        agent.marked_ping(&case);
        expected.push(ping(&case));
    }
    assert_eq!(
        tool_text(&agent.call_tool("echo", json!({"message": "hello"}))),
        "Echo: hello"
    );
    expected.push(call("echo"));
    let pid = tool_text(&agent.call_tool("pid", json!({})));
    assert_eq!(
        pid,
        upstream.process.pid().to_string(),
        "pid answered upstream"
    );
    expected.push(call("pid"));
    // Through the grant with its own allow-all policy, a tool the policy does not name is
    // checked against the server's own listing first, fetched with the gateway's own ids.
    assert_eq!(
        tool_text(&open.call_tool("wipe", json!({"n": 1}))),
        r#"wipe: {"n": 1}"#
    );
    expected.push(call("wipe"));
    assert_record(&record, &expected, "hide * over HTTP");
    let ids = gateway_list_ids(&record);
    assert!(
        !ids.is_empty()
            && ids.iter().all(|id| id
                .as_str()
                .is_some_and(|id| id.starts_with(GATEWAY_LIST_ID))),
        "the gateway's own listings: ids {ids:?}"
    );
}

/// Writes `text` to `path` the way editors do: a temporary file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).expect("write temp policy");
    std::fs::rename(&tmp, path).expect("rename over the policy");
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

const RELOADED: &str = "policy reloaded";
const REFUSED: &str = "policy edit refused, the previous version stays in force";

/// Waits until the gateway's log holds more than `before` lines with `what`.
fn wait_for_log(gw: &Gateway, what: &str, before: usize) -> String {
    gw.log_when(&format!("new {what:?}"), |log| count(log, what) > before)
}

#[test]
fn policy_edits_apply_to_the_next_call_on_the_same_session() {
    let p = policy_setup(
        r#"{"version": "1", "default": "deny", "tools": {"echo": {}}}"#,
        &[],
    );
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    let mut expected = handshake();
    assert_eq!(
        tool_text(&s.call_tool("echo", json!({"message": "two"}))),
        "Echo: two"
    );
    expected.push(call("echo"));

    // Version 2, written in place.
    std::fs::write(
        &p.policy,
        r#"{"version": "1", "default": "deny", "tools": {"echo": {"deny_if": [
             {"conditions": [{"path": "args.message", "op": "eq", "value": "two"}], "on_deny": "Not two."}]}}}"#,
    )
    .expect("edit policy");
    wait_for_log(&p.gw, RELOADED, 0);
    let id = json!("after-v2");
    assert_eq!(
        call_with_id(&s, &id, "echo", json!({"message": "two"})),
        denial(&id, "/tools/echo/deny_if/0", "Not two.", 2),
        "the valid edit applies on the same session"
    );
    s.marked_ping("denied by version 2");
    expected.push(ping("denied by version 2"));
    assert_eq!(
        tool_text(&s.call_tool("echo", json!({"message": "three"}))),
        "Echo: three"
    );
    expected.push(call("echo"));

    // An invalid edit: refused, logged with its error, version 2 stays in force.
    let refused_before = count(&p.gw.log(), REFUSED);
    std::fs::write(
        &p.policy,
        r#"{"version": "1", "default": "sometimes", "tools": {"echo": {}}}"#,
    )
    .expect("edit policy");
    let log = wait_for_log(&p.gw, REFUSED, refused_before);
    let line = log.lines().rfind(|l| l.contains(REFUSED)).unwrap();
    assert!(
        line.contains("/default"),
        "the refusal names the error: {line}"
    );
    let id = json!("after-invalid");
    assert_eq!(
        call_with_id(&s, &id, "echo", json!({"message": "two"})),
        denial(&id, "/tools/echo/deny_if/0", "Not two.", 2),
        "the invalid edit changed the decision"
    );
    s.marked_ping("still version 2");
    expected.push(ping("still version 2"));

    // Version 3, replaced by a rename as editors do: echo is no longer listed.
    let reloaded_before = count(&p.gw.log(), RELOADED);
    replace_file(
        &p.policy,
        r#"{"version": "1", "default": "deny", "tools": {"pid": {}}}"#,
    );
    wait_for_log(&p.gw, RELOADED, reloaded_before);
    let id = json!("after-v3");
    assert_eq!(
        call_with_id(&s, &id, "echo", json!({"message": "three"})),
        denial(
            &id,
            "(default deny)",
            r#"Tool "echo" is not permitted by policy"#,
            3
        ),
    );
    s.marked_ping("default deny in version 3");
    expected.push(ping("default deny in version 3"));
    // One initialize in the whole record: the session was never reopened.
    assert_record(&p.record, &expected, "hot reload");
}
