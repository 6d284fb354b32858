//! The audit tests' gateway: the stdio recorder `rec` behind a policy that has a rule of
//! every kind (a deny_if on `echo`, `pid` hidden, a limit of one `slow` per hour, default
//! allow so that made-up names reach the "is it listed" check), a second server `other`, and
//! the grants `agent` and `second` (on `rec`) and `elsewhere` (on `other`).

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{
    ALLOW_ALL, Gateway, McpSession, Req, Resp, grant_toml, recorder_server_toml_with,
};

pub const AGENT_TOKEN: &str = "tg_e2e_audit_agent_7d41c9e2b6a0f3";
pub const SECOND_TOKEN: &str = "tg_e2e_audit_second_2f8a6c0e91d3b7";
pub const ELSEWHERE_TOKEN: &str = "tg_e2e_audit_elsewhere_5b93e0d17c2a";
pub const ADMIN_TOKEN: &str = "tga_e2e_audit_admin_0c7f31a9d2e6b5";
pub const POLICY_FILE: &str = "audit-policy.json";
/// The largest body the gateway reads (set in the config).
pub const MAX_BODY: usize = 16 * 1024;

pub const POLICY: &str = r#"{
  "version": "1",
  "default": "allow",
  "hide": ["pid"],
  "tools": {
    "echo": {"deny_if": [{"conditions": [{"path": "args.message", "op": "eq", "value": "forbidden"}],
                          "on_deny": "Not this message."}]},
    "slow": {"limits": [{"counter": "slow_once", "window": "hour", "max": 1, "scope": "grant"}]},
    "exit": {},
    "env": {}
  }
}"#;

pub struct AuditSetup {
    pub gw: Gateway,
    /// What reached the recorder `rec` (outside the state directory).
    pub record: PathBuf,
}

/// The gateway, with `audit_toml` as the inside of its `[audit]` table and `env` added.
pub fn audit_setup(audit_toml: &str, env: &[(&str, &str)]) -> AuditSetup {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    std::fs::write(dir.path().join(POLICY_FILE), POLICY).expect("write policy");
    let toml = format!(
        "max_body_bytes = {MAX_BODY}\n\n{}{}{}{}{}[audit]\n{audit_toml}\n",
        recorder_server_toml_with("rec", &record, &[], Some(POLICY_FILE)),
        recorder_server_toml_with(
            "other",
            &dir.path().join("other.jsonl"),
            &[],
            Some(ALLOW_ALL)
        ),
        grant_toml("agent", "rec", "AGENT_TOKEN"),
        grant_toml("second", "rec", "SECOND_TOKEN"),
        grant_toml("elsewhere", "other", "ELSEWHERE_TOKEN"),
    );
    let mut all_env = vec![
        ("AGENT_TOKEN", AGENT_TOKEN),
        ("SECOND_TOKEN", SECOND_TOKEN),
        ("ELSEWHERE_TOKEN", ELSEWHERE_TOKEN),
        ("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    all_env.extend_from_slice(env);
    let gw = Gateway::start_in(dir, &toml, &all_env);
    AuditSetup { gw, record }
}

/// One answer and the request id the gateway gave it (`x-request-id`, required).
pub struct Answered {
    pub resp: Resp,
    pub request_id: String,
}

impl Answered {
    pub fn json(&self) -> Value {
        self.resp.response()
    }
}

/// Sends `req` and reads the answer, which must carry `x-request-id`.
pub fn send(req: Req, case: &str) -> Answered {
    let resp = req.send();
    let request_id = resp
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{case}: no x-request-id on the answer: {resp:?}"));
    Answered { resp, request_id }
}

/// A tools/call on the session; the answer must be HTTP 200.
pub fn call(s: &McpSession, name: &str, arguments: Value, case: &str) -> Answered {
    let id = s.next_id();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}});
    let a = send(s.post().json(&body), case);
    assert_eq!(a.resp.status, 200, "{case}: {}", a.resp.text());
    assert_eq!(a.json()["id"], json!(id), "{case}: {}", a.resp.text());
    a
}

/// A request (not a notification) on the session, answered with a result.
pub fn request(s: &McpSession, method: &str, params: Value, case: &str) -> Answered {
    let id = s.next_id();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let a = send(s.post().json(&body), case);
    assert_eq!(a.resp.status, 200, "{case}: {}", a.resp.text());
    assert!(
        a.json().get("result").is_some(),
        "{case}: {}",
        a.resp.text()
    );
    a
}

/// A tools/call body with id 1.
pub fn call_body(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}
