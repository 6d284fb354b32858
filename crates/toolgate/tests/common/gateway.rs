//! The gateway under test: `toolgate serve` on `127.0.0.1:0`, and the TOML pieces tests
//! build its config from.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::http::Req;
use super::process::{Spawned, descendants, poll_until, signal};
use super::{START_DEADLINE, everything_js, node_bin, recorder_py, toolgate_bin};

/// A running `toolgate serve`. Dropping it kills it and everything it started.
pub struct Gateway {
    process: Spawned,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Gateway {
    /// Starts the gateway on `127.0.0.1:0` with `toml` after the `listen` and `state_dir`
    /// lines (so it may set other top-level keys first, then tables). `env` is the gateway's
    /// whole environment besides PATH and HOME.
    pub fn start(toml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        Gateway::start_in(dir, toml, env)
    }

    /// Like `start`, in a folder the test already made (for record files next to the config).
    pub fn start_in(dir: tempfile::TempDir, toml: &str, env: &[(&str, &str)]) -> Gateway {
        for (file, text) in POLICY_FILES {
            std::fs::write(dir.path().join(file), text).expect("write policy");
        }
        let config_path = dir.path().join("toolgate.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = {}\n{toml}",
            toml_str(&dir.path().join("state").display().to_string())
        );
        std::fs::write(&config_path, text).expect("write config");
        let mut cmd = Command::new(toolgate_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env_clear()
            .env("NO_COLOR", "1")
            .env("TOOLGATE_LOG", "info");
        for key in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = Spawned::start("toolgate", cmd);
        let mut port = None;
        let started = poll_until(START_DEADLINE, || {
            port = listening_port(&process.stderr());
            port.is_some() || process.try_status().is_some()
        });
        let Some(port) = port else {
            let why = if started {
                "exited"
            } else {
                "did not start listening"
            };
            panic!(
                "toolgate {why} ({:?}); its log:\n{}",
                process.try_status(),
                process.stderr()
            );
        };
        Gateway {
            process,
            port,
            dir,
            config_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The MCP endpoint of `server`.
    pub fn mcp_url(&self, server: &str) -> String {
        self.url(&format!("/mcp/{server}"))
    }

    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// The log, once it satisfies `cond` (`what` names the wait in the failure). The gateway
    /// may answer a call before its log line about that call has come through the pipe, so a
    /// test that looks for one waits for it (10 s) rather than reading the log once.
    pub fn log_when(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut log = String::new();
        let seen = poll_until(Duration::from_secs(10), || {
            log = self.log();
            cond(&log)
        });
        assert!(seen, "no {what} in the gateway log within 10 s:\n{log}");
        log
    }

    /// The log, once a line of it satisfies `line` (see `log_when`).
    pub fn log_with_line(&self, what: &str, line: impl Fn(&str) -> bool) -> String {
        self.log_when(what, |log| log.lines().any(&line))
    }

    /// A POST to `/mcp/{server}` with the MCP content headers set.
    pub fn post(&self, server: &str) -> Req {
        Req::new(reqwest::Method::POST, &self.mcp_url(server))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
    }

    pub fn request(&self, method: &str, path: &str) -> Req {
        Req::new(method.parse().expect("HTTP method"), &self.url(path))
    }

    pub fn sigterm(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.process.wait_for(deadline)
    }

    /// Kills the gateway and every process it started.
    pub fn kill(&mut self) {
        let family = descendants(self.pid());
        self.process.kill();
        for p in family {
            // The gateway starts each stdio server in a group of its own.
            signal(-p, libc::SIGKILL);
            signal(p, libc::SIGKILL);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- toolgate log (port {}) ----\n{}---- end of toolgate log ----",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

fn listening_port(log: &str) -> Option<u16> {
    const MARK: &str = "listening on http://127.0.0.1:";
    let at = log.find(MARK)? + MARK.len();
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Policy files every test gateway finds next to its config (relative paths in the config
/// are relative to its folder).
///
/// `recorder-tools.json` names every recorder tool, so the gateway never needs to ask the
/// recorder for its tools/list (which would show up in the record); `allow-all.json` lets
/// everything through (the policy step still runs on every call).
pub const POLICY_FILES: &[(&str, &str)] = &[
    (ALLOW_ALL, r#"{"version": "1", "default": "allow"}"#),
    (
        RECORDER_TOOLS,
        r#"{"version": "1", "default": "deny",
            "tools": {"echo": {}, "slow": {}, "exit": {}, "env": {}, "pid": {}}}"#,
    ),
];
pub const ALLOW_ALL: &str = "allow-all.json";
pub const RECORDER_TOOLS: &str = "recorder-tools.json";

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// `[servers.NAME]` for the stdio recorder writing to `record_file`, plus `extra_env` entries,
/// with the policy that names the recorder's tools.
pub fn recorder_server_toml(name: &str, record_file: &Path, extra_env: &[(&str, &str)]) -> String {
    recorder_server_toml_with(name, record_file, extra_env, Some(RECORDER_TOOLS))
}

/// Like `recorder_server_toml`, with the server's `policy` file (relative to the config's
/// folder), or none.
pub fn recorder_server_toml_with(
    name: &str,
    record_file: &Path,
    extra_env: &[(&str, &str)],
    policy: Option<&str>,
) -> String {
    let mut env = format!(
        "RECORD_FILE = {}",
        toml_str(&record_file.display().to_string())
    );
    for (k, v) in extra_env {
        env.push_str(&format!(", {k} = {}", toml_str(v)));
    }
    let policy = policy
        .map(|p| format!("policy = {}\n", toml_str(p)))
        .unwrap_or_default();
    format!(
        "[servers.{name}]\ncommand = \"python3\"\nargs = [{}]\nenv = {{ {env} }}\n{policy}\n",
        toml_str(&recorder_py().display().to_string())
    )
}

/// `[servers.NAME]` for a Streamable HTTP server at `url` with `policy` (a file of
/// `POLICY_FILES`) and `headers` (a TOML inline table's inside, may be empty).
pub fn http_server_toml(name: &str, url: &str, policy: &str, headers: &str) -> String {
    format!(
        "[servers.{name}]\nurl = {}\nheaders = {{ {headers} }}\npolicy = \"{policy}\"\n\n",
        toml_str(url)
    )
}

/// `[servers.NAME]` for server-everything over stdio, everything allowed.
pub fn everything_stdio_toml(name: &str, extra_env: &[(&str, &str)]) -> String {
    let env: Vec<String> = extra_env
        .iter()
        .map(|(k, v)| format!("{k} = {}", toml_str(v)))
        .collect();
    format!(
        "[servers.{name}]\ncommand = {}\nargs = [{}, \"stdio\"]\nenv = {{ {} }}\npolicy = \"{ALLOW_ALL}\"\n\n",
        toml_str(&node_bin().display().to_string()),
        toml_str(&everything_js().display().to_string()),
        env.join(", ")
    )
}

/// `[grants.NAME]` with a token from `env_var`.
pub fn grant_toml(name: &str, server: &str, env_var: &str) -> String {
    format!("[grants.{name}]\nserver = \"{server}\"\ntoken_env = \"{env_var}\"\n\n")
}
