//! Processes: spawning in a group of one's own, waiting with deadlines, killing on drop,
//! finding what a process started.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::POLL;

/// A free TCP port on loopback, found by binding port 0. Another process may take it before
/// the caller binds it; callers that can ask the peer to bind 0 themselves do that instead.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) on a pid (or, negative, a process group) this harness started.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Whether a process is gone (no such pid, or a zombie nobody reaped yet).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Every live descendant of `pid`, from /proc (children, grandchildren...).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}

/// Waits for `cond` until `deadline` passes; true when it held.
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Collects a pipe's lines in the background; the thread ends when the pipe closes.
fn collect_lines(pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let out = buf.clone();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
    (buf, reader)
}

/// Variables no peer or driver should inherit: a proxy would swallow loopback requests.
pub(crate) const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NODE_OPTIONS",
];

/// A process in its own process group, killed with its group when dropped.
pub struct Spawned {
    pub name: String,
    child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Spawned {
    pub fn start(name: &str, mut cmd: Command) -> Spawned {
        use std::os::unix::process::CommandExt;
        // Unless the test set one on purpose (to see what the process does with it).
        let set: Vec<std::ffi::OsString> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.to_owned())
            .collect();
        for v in PROXY_VARS {
            if !set.iter().any(|k| k == v) {
                cmd.env_remove(v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} ({cmd:?})"));
        let (stdout, out_reader) = collect_lines(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_lines(child.stderr.take().unwrap());
        Spawned {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit and its output to be read to the end; None when the
    /// deadline passed first.
    pub fn wait_for(&mut self, deadline: Duration) -> Option<ExitStatus> {
        poll_until(deadline, || self.try_status().is_some());
        if self.status.is_some() {
            // The pipes close at exit (unless something the process started still holds
            // them): give the readers a moment to take the last bytes.
            poll_until(Duration::from_secs(10), || {
                self.readers.iter().all(JoinHandle::is_finished)
            });
        }
        self.status
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL to the whole group, then reap.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            signal(-self.pid(), libc::SIGKILL);
            signal(self.pid(), libc::SIGKILL);
            self.status = self.child.wait().ok();
        } else {
            // The leader is gone; whatever it left in its group goes too.
            signal(-self.pid(), libc::SIGKILL);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
