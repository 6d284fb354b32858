//! MCP over a child's stdin/stdout, by hand: for `toolgate run` (local mode), which is a stdio
//! MCP server. The process runs in a group of its own and is killed, with everything it
//! started, when the client is dropped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::mcp::PROTOCOL;
use super::process::{PROXY_VARS, descendants, poll_until, signal};
use super::{REQUEST_TIMEOUT, toolgate_bin};

pub struct StdioClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Messages read while waiting for another one (notifications, other answers).
    pub skipped: VecDeque<Value>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
    status: Option<ExitStatus>,
}

/// `toolgate run ARGS...` with `env` added to the test's own environment (local mode passes
/// its whole environment to the server it starts).
pub fn toolgate_run(args: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> StdioClient {
    let mut cmd = Command::new(toolgate_bin());
    cmd.arg("run")
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("TOOLGATE_LOG", "info")
        .envs(env.iter().copied());
    StdioClient::start(cmd)
}

impl StdioClient {
    pub fn start(mut cmd: Command) -> StdioClient {
        use std::os::unix::process::CommandExt;
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
        std::thread::spawn(move || {
            let mut line = String::new();
            while out.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        StdioClient {
            child,
            stdin,
            lines,
            skipped: VecDeque::new(),
            stderr,
            next_id: 1,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Writes one line (a newline is added).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let written = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush());
        if let Err(e) = written {
            panic!("writing to toolgate run: {e}; its log:\n{}", self.stderr());
        }
    }

    pub fn send(&mut self, message: &Value) {
        self.send_line(&message.to_string());
    }

    /// The next message on stdout, if one comes within `wait`.
    pub fn recv(&mut self, wait: Duration) -> Option<Value> {
        if let Some(m) = self.skipped.pop_front() {
            return Some(m);
        }
        self.read(wait)
    }

    fn read(&mut self, wait: Duration) -> Option<Value> {
        match self.lines.recv_timeout(wait) {
            Ok(line) => Some(serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("toolgate run wrote a line that is not JSON ({e}): {line:?}")
            })),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for the response with `id`; other messages are kept in `skipped`.
    pub fn response(&mut self, id: &Value) -> Value {
        if let Some(i) = self.skipped.iter().position(|m| is_answer(m, id)) {
            return self.skipped.remove(i).expect("index is in range");
        }
        let end = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.read(left) {
                Some(m) if is_answer(&m, id) => return m,
                Some(m) => self.skipped.push_back(m),
                None => panic!(
                    "no answer to id {id} from toolgate run within {REQUEST_TIMEOUT:?} \
                     (exit status {:?}); its log:\n{}",
                    self.try_status(),
                    self.stderr()
                ),
            }
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id)
    }

    /// initialize + notifications/initialized; returns the initialize result.
    pub fn initialize(&mut self) -> Value {
        let resp = self.request(
            "initialize",
            json!({"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "toolgate-e2e-local", "version": "0.1.0"}}),
        );
        assert!(resp.get("result").is_some(), "initialize failed: {resp}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        resp
    }

    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// A ping with `marker` in `params._meta`, as `McpSession::marked_ping`.
    pub fn marked_ping(&mut self, marker: &str) {
        let resp = self.request("ping", json!({"_meta": {"e2e-marker": marker}}));
        assert!(resp.get("result").is_some(), "ping {marker}: {resp}");
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        poll_until(deadline, || self.try_status().is_some());
        self.status
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }
}

fn is_answer(m: &Value, id: &Value) -> bool {
    m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some())
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- toolgate run log ----\n{}---- end of toolgate run log ----",
                self.stderr()
            );
        }
        let family = descendants(self.pid());
        if self.try_status().is_none() {
            signal(-self.pid(), libc::SIGKILL);
            signal(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        for p in family {
            // The server toolgate started runs in a group of its own.
            signal(-p, libc::SIGKILL);
            signal(p, libc::SIGKILL);
        }
    }
}
