//! The operator's side (SPEC 2.3, issue 5): the admin API with its token, the `toolgate`
//! operator commands run as processes, a gateway stopped and started again on the same state
//! directory, and a policy whose every version says who decided a call.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::gateway::{ALLOW_ALL, Gateway, grant_toml, recorder_server_toml_with};
use super::http::{Req, Resp};
use super::mcp::McpSession;
use super::process::Spawned;
use super::toolgate_bin;

/// The admin token the admin tests' gateways get from `TOOLGATE_ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "tga_e2e-admin-token-4f0c9d7e21";
/// The config grants of `admin_setup`: `agent` (the server's policy), `open` (allow-all.json).
pub const AGENT_TOKEN: &str = "tg-e2e-admin-agent-6a21f0";
pub const OPEN_TOKEN: &str = "tg-e2e-admin-open-93be4c";
pub const ADMIN_PREFIX: &str = "/admin/api/v1";
/// The server policy file of `admin_setup`.
pub const SERVER_POLICY_FILE: &str = "server-policy.json";
/// How long a change made on the state directory by another process may take to be seen by
/// a running gateway (it polls every second; a loaded CI machine is slower).
pub const PICKUP_DEADLINE: Duration = Duration::from_secs(5);

/// A policy that lets `echo` through except with the message `probe`, which it denies with
/// `name` as its on_deny text: `decided_by` then tells which document decided a call.
/// Everything else but `pid` is denied by default.
pub fn probe_policy(name: &str) -> String {
    json!({
        "version": "1",
        "default": "deny",
        "tools": {
            "echo": {"deny_if": [{
                "conditions": [{"path": "args.message", "op": "eq", "value": "probe"}],
                "on_deny": name
            }]},
            "pid": {}
        }
    })
    .to_string()
}

/// Calls `echo` with the message `probe` and says what decided it: `NAME@VERSION` for a
/// denial by `probe_policy(NAME)` in version VERSION (checked whole against SPEC 3's
/// denial), `allowed` when it went through.
pub fn decided_by(s: &McpSession) -> String {
    let id = json!(s.next_id());
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"message": "probe"}}});
    let r = s.post().json(&body).send();
    assert_eq!(r.status, 200, "probe call: {}", r.text());
    let resp = r.response();
    if resp["result"]["isError"] == json!(false) {
        assert_eq!(
            resp["result"]["content"][0]["text"], "Echo: probe",
            "{resp}"
        );
        return "allowed".into();
    }
    let decision = &resp["result"]["_meta"]["toolgate/decision"];
    let version = decision["policy_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("a denial without a policy_version: {resp}"));
    let text = resp["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.strip_prefix("[POLICY DENIED] "))
        .unwrap_or_else(|| panic!("not a policy denial: {resp}"))
        .to_string();
    assert_eq!(
        resp,
        super::policy::denial(&id, "/tools/echo/deny_if/0", &text, version),
        "the denial of SPEC 3"
    );
    format!("{text}@{version}")
}

/// The recorder `rec` behind `server-policy.json` (`probe_policy("server file")`), with the
/// config grants `agent` (no policy of its own) and `open` (allow-all.json), and the admin
/// token `ADMIN_TOKEN`. `extra_toml` goes after them (more servers or grants).
pub struct AdminSetup {
    pub gw: Gateway,
    pub record: PathBuf,
}

pub fn admin_setup(extra_toml: &str, extra_env: &[(&str, &str)]) -> AdminSetup {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    std::fs::write(
        dir.path().join(SERVER_POLICY_FILE),
        probe_policy("server file"),
    )
    .expect("write policy");
    let gw = Gateway::start_in(dir, &admin_toml(&record, extra_toml), &admin_env(extra_env));
    AdminSetup { gw, record }
}

/// The config of `admin_setup` (after the listen and state_dir lines).
pub fn admin_toml(record: &Path, extra_toml: &str) -> String {
    format!(
        "{}{}[grants.open]\nserver = \"rec\"\ntoken_env = \"OPEN_TOKEN\"\npolicy = \"{ALLOW_ALL}\"\n\n{extra_toml}",
        recorder_server_toml_with("rec", record, &[], Some(SERVER_POLICY_FILE)),
        grant_toml("agent", "rec", "AGENT_TOKEN"),
    )
}

/// The environment of `admin_setup`'s gateway.
pub fn admin_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("AGENT_TOKEN", AGENT_TOKEN),
        ("OPEN_TOKEN", OPEN_TOKEN),
        ("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    env.extend_from_slice(extra);
    env
}

impl Gateway {
    /// A request to the admin API (`path` after `/admin/api/v1`), with the admin token.
    pub fn admin(&self, method: &str, path: &str) -> Req {
        self.request(method, &format!("{ADMIN_PREFIX}{path}"))
            .token(ADMIN_TOKEN)
    }

    /// Kills the gateway and everything it started, and hands its folder (config, state
    /// directory) back, so that a test can start another gateway on it. Stop it gracefully
    /// first (`sigterm` + `wait_exit`) to test a clean stop.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let spare = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, spare)
    }

    /// The state directory (`state_dir` of the config).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// The JSON body of an admin API answer, checking the status and the content type.
pub fn admin_json(case: &str, r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{case}: status; body {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{case}: not JSON: {r:?}"
    );
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {}", r.text()))
}

/// Asserts an admin API refusal: status, `{"error": {"code": CODE, "message": ...}}`, and
/// `WWW-Authenticate: Bearer ...` on 401. Returns the body.
pub fn assert_admin_error(case: &str, r: &Resp, status: u16, code: &str) -> Value {
    let v = admin_json(case, r, status);
    assert_eq!(v["error"]["code"], code, "{case}: error code; {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{case}: no message: {v}"
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

/// What an operator command printed, and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// The JSON it printed (`--json`), checking it exited 0.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Its stdout as JSON lines (`--json` on a listing), checking it exited 0.
    pub fn records(&self) -> Vec<Value> {
        assert_eq!(self.code, Some(0), "{self:#?}");
        json_lines(&self.stdout, "toolgate output")
    }

    /// Asserts it exited 0.
    pub fn ok(&self) -> &CliRun {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }
}

/// Runs `toolgate ARGS` in `cwd` with only PATH, HOME and `env` in its environment (no
/// `TOOLGATE_*` from the test's own), bounded to 30 s.
pub fn toolgate_cli(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> CliRun {
    let mut p = Spawned::start(
        "toolgate (operator command)",
        toolgate_command(args, env, cwd),
    );
    let status = p
        .wait_for(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("toolgate {args:?} did not finish in 30 s"));
    CliRun {
        code: status.code(),
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// The `Command` of `toolgate ARGS` in `cwd` with only PATH, HOME, LANG and `env` in its
/// environment, to run to completion (`toolgate_cli`) or in the background.
pub fn toolgate_command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new(toolgate_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("NO_COLOR", "1");
    for key in ["PATH", "HOME", "LANG"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// JSON lines (blank lines skipped), each of which must be an object.
pub fn json_lines(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: a line that is not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "{what}: a line that is not an object: {l}");
            v
        })
        .collect()
}
