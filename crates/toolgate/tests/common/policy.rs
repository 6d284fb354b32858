//! The policy tests' setup: the recorder behind a gateway with a policy file the test
//! writes (and may edit), and the exact answers SPEC 3 prescribes for refused calls.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::gateway::{ALLOW_ALL, Gateway, grant_toml, recorder_server_toml_with};
use super::mcp::McpSession;

pub const POLICY_TOKEN: &str = "tg-e2e-policy-agent-5c1d2e";
pub const POLICY_OPEN_TOKEN: &str = "tg-e2e-policy-open-8f3a90";
pub const POLICY_FILE: &str = "policy.json";

/// A gateway in front of the recorder `rec` whose policy is `policy.json`; grant `agent`
/// uses the server's policy, grant `open` has its own (allow-all.json).
pub struct PolicySetup {
    pub gw: Gateway,
    pub record: PathBuf,
    pub policy: PathBuf,
}

pub fn policy_setup(policy: &str, recorder_env: &[(&str, &str)]) -> PolicySetup {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let policy_path = dir.path().join(POLICY_FILE);
    std::fs::write(&policy_path, policy).expect("write policy");
    let toml = format!(
        "{}{}[grants.open]\nserver = \"rec\"\ntoken_env = \"OPEN\"\npolicy = \"{ALLOW_ALL}\"\n\n",
        recorder_server_toml_with("rec", &record, recorder_env, Some(POLICY_FILE)),
        grant_toml("agent", "rec", "TOKEN"),
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("TOKEN", POLICY_TOKEN), ("OPEN", POLICY_OPEN_TOKEN)],
    );
    PolicySetup {
        gw,
        record,
        policy: policy_path,
    }
}

/// Rules of every kind, on tools the recorder has (`RECORDER_EXTRA_TOOLS`).
pub const RULES: &str = r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "echo": {},
    "refund": {
      "require": [{"conditions": [{"path": "args.reason", "op": "exists", "value": true}],
                   "on_deny": "A refund needs a reason."}],
      "deny_if": [{"conditions": [{"path": "args.amount", "op": "gt", "value": 100}],
                   "on_deny": "Refund exceeds the policy limit."},
                  {"conditions": [{"path": "args.currency", "op": "eq", "value": "XBT"}]}]
    },
    "transfer": {
      "require": [{"conditions": [{"path": "args.to", "op": "regex", "value": "acct-[0-9]+"}]}]
    }
  }
}"#;
pub const RULES_TOOLS: (&str, &str) = ("RECORDER_EXTRA_TOOLS", "refund,transfer,wipe");

/// The denial of SPEC 3, exactly.
pub fn denial(id: &Value, rule: &str, text: &str, version: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "isError": true,
        "content": [{"type": "text", "text": format!("[POLICY DENIED] {text}")}],
        "_meta": {"toolgate/decision": {"outcome": "deny", "rule": rule, "policy_version": version}}
    }})
}

/// The answer to a call of a tool the agent may not know about, exactly.
pub fn unknown_tool(id: &Value, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id,
           "error": {"code": -32602, "message": format!("Unknown tool: {name}")}})
}

/// A tools/call with the given id; the JSON-RPC response.
pub fn call_with_id(s: &McpSession, id: &Value, name: &str, arguments: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}});
    let r = s.post().json(&body).send();
    assert_eq!(r.status, 200, "tools/call {name:?}: {}", r.text());
    r.response()
}
