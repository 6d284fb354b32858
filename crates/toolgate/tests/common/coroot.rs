//! The Coroot peers: the real third-party `mcp-coroot` MCP server (PyPI), run by the gateway
//! over stdio against `fixtures/servers/fake_coroot.py`, our fake of the Coroot HTTP API,
//! whose request log shows from the upstream side which tool calls reached Coroot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::gateway::toml_str;
use super::process::{Spawned, poll_until};
use super::{START_DEADLINE, python, repo_root};

const COROOT_HELP: &str = "the Coroot MCP server is not installed for python3: run \
     `pip install -r fixtures/requirements.txt` (it pins mcp-coroot and fastmcp)";

/// The `mcp-coroot` console script of the `python3` on PATH (next to its other scripts, so
/// no pyenv shim sits in between); checked once per test binary.
pub fn mcp_coroot_bin() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let out = Command::new(python())
            .args([
                "-c",
                "import mcp_coroot, sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let scripts = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let bin = Path::new(&scripts).join("mcp-coroot");
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} not found", bin.display()))
        }
    });
    match found {
        Ok(p) => p.clone(),
        Err(why) => panic!("{COROOT_HELP}: {why}"),
    }
}

/// The fake Coroot API on a port it picked itself, logging every request to `log`.
pub struct FakeCoroot {
    pub process: Spawned,
    pub port: u16,
    pub log: PathBuf,
}

impl FakeCoroot {
    pub fn start(log: &Path) -> FakeCoroot {
        let script = repo_root().join("fixtures/servers/fake_coroot.py");
        assert!(
            script.exists(),
            "fixtures/servers/fake_coroot.py is missing"
        );
        let mut cmd = Command::new(python());
        cmd.arg(script).args(["--port", "0", "--log"]).arg(log);
        let mut process = Spawned::start("fake_coroot", cmd);
        const MARK: &str = "listening on http://127.0.0.1:";
        let mut port = None;
        poll_until(START_DEADLINE, || {
            port = process.stdout().lines().find_map(|l| {
                l.trim()
                    .strip_prefix(MARK)
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
            });
            port.is_some() || process.try_status().is_some()
        });
        let port = port.unwrap_or_else(|| {
            panic!(
                "fake_coroot.py did not start: {}{}",
                process.stdout(),
                process.stderr()
            )
        });
        FakeCoroot {
            process,
            port,
            log: log.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request the fake received so far, one JSON object each.
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("fake_coroot log line is not JSON ({e}): {l}"))
            })
            .collect()
    }
}

/// `[servers.NAME]`: mcp-coroot over stdio against the fake at `base_url`, started in
/// `workdir` (it reads `./.env`: give it an empty folder), with `policy` if any.
pub fn coroot_server_toml(
    name: &str,
    base_url: &str,
    workdir: &Path,
    policy: Option<&str>,
) -> String {
    let env = [
        ("COROOT_BASE_URL", base_url),
        ("COROOT_USERNAME", "admin"),
        ("COROOT_PASSWORD", "secret"),
        // fastmcp would print a banner and ask PyPI for a newer version.
        ("FASTMCP_CHECK_FOR_UPDATES", "off"),
        ("FASTMCP_SHOW_SERVER_BANNER", "false"),
    ]
    .iter()
    .map(|(k, v)| format!("{k} = {}", toml_str(v)))
    .collect::<Vec<_>>()
    .join(", ");
    let policy = policy
        .map(|p| format!("policy = {}\n", toml_str(p)))
        .unwrap_or_default();
    format!(
        "[servers.{name}]\ncommand = {}\nenv = {{ {env} }}\ncwd = {}\n{policy}\n",
        toml_str(&mcp_coroot_bin().display().to_string()),
        toml_str(&workdir.display().to_string()),
    )
}

/// One HTTP request a tool makes: `GET /api/project/{project_id}` (fixtures/servers/
/// coroot_endpoints.json); `{...}` stands for one raw (percent-encoded) path segment.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
}

impl Endpoint {
    /// Whether a logged request is this endpoint, made with the session cookie.
    pub fn matches(&self, logged: &Value) -> bool {
        self.matches_call(logged, &Value::Null)
    }

    /// Like `matches`, and a `{name}` segment must also equal the call's argument `name`
    /// when that is a plain string (`prod` in `/api/project/prod/...`).
    pub fn matches_call(&self, logged: &Value, args: &Value) -> bool {
        let raw = logged["raw_path"].as_str().unwrap_or("");
        let (want, got): (Vec<&str>, Vec<&str>) =
            (self.path.split('/').collect(), raw.split('/').collect());
        logged["method"] == self.method.as_str()
            && logged["cookie_ok"] == true
            && want.len() == got.len()
            && want.iter().zip(&got).all(|(w, g)| {
                match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    Some(name) => match args[name].as_str() {
                        Some(value) => value == *g,
                        None => !g.is_empty(),
                    },
                    None => w == g,
                }
            })
    }
}

/// The HTTP requests each tool makes, from fixtures/servers/coroot_endpoints.json.
pub fn coroot_endpoints() -> HashMap<String, Vec<Endpoint>> {
    let path = repo_root().join("fixtures/servers/coroot_endpoints.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let list: Vec<Value> = serde_json::from_str(&text).expect("coroot_endpoints.json is JSON");
    list.iter()
        .map(|e| {
            let tool = e["tool"].as_str().expect("tool name").to_string();
            let endpoints = e["http"]
                .as_array()
                .expect("http list")
                .iter()
                .map(|spec| {
                    let mut words = spec.as_str().expect("endpoint spec").split_whitespace();
                    Endpoint {
                        method: words.next().expect("method").to_string(),
                        path: words.next().expect("path").to_string(),
                    }
                })
                .collect();
            (tool, endpoints)
        })
        .collect()
}

/// The 61 tool names mcp-coroot lists (fixtures/servers/coroot_tools.json).
pub fn coroot_tool_names() -> Vec<String> {
    let path = repo_root().join("fixtures/servers/coroot_tools.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let tools: Vec<Value> = serde_json::from_str(&text).expect("coroot_tools.json is JSON");
    tools
        .iter()
        .map(|t| t["name"].as_str().expect("tool name").to_string())
        .collect()
}

/// Arguments that make mcp-coroot send its request (the values of
/// fixtures/servers/check_coroot.py), for the tools the policy examples call. A case's own
/// arguments are laid over these: the decision depends on them, the rest only has to pass
/// the tool's input schema.
pub fn coroot_sample_args(tool: &str) -> Value {
    let app = "default/Deployment/web";
    match tool {
        "list_projects" | "get_current_user" | "health_check" => json!({}),
        "get_project" | "get_project_status" => json!({"project_id": "p1"}),
        "delete_project" => json!({"project_id": "new-project"}),
        "get_application_logs" => json!({"project_id": "p1", "app_id": app, "query": "timeout"}),
        "update_dashboard" => {
            json!({"project_id": "p1", "dashboard_id": "d1", "dashboard": {"name": "Overview v2"}})
        }
        "create_api_key" => json!({"project_id": "p1", "name": "ci-key", "description": "for CI"}),
        "delete_api_key" => json!({"project_id": "p1", "key": "ck_default_0123456789abcdef"}),
        other => panic!("no sample arguments for the Coroot tool {other:?}: add them here"),
    }
}
