//! A real `redis-server` of the test's own: on a free loopback port, no persistence, killed on
//! drop, and restartable on the same port (the fault tests kill it mid-load).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{START_DEADLINE, Spawned, free_port, poll_until};

/// Where `redis-server` is: on PATH, else `/usr/bin/redis-server`; a clear failure otherwise.
pub fn redis_server_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    let bin = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
    assert!(
        bin.is_file(),
        "redis-server is not installed (the counter tests start their own): \
         run `apt-get install redis-server` (it is not on PATH nor at /usr/bin/redis-server)"
    );
    bin
}

/// A `redis-server` on 127.0.0.1, started by this test.
pub struct RedisServer {
    process: Option<Spawned>,
    pub port: u16,
    /// Output of the servers killed so far (for failure messages).
    old_logs: String,
}

impl RedisServer {
    /// Starts one on a free port (another one is tried if the port was taken meanwhile).
    pub fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match spawn_on(port) {
                Ok(process) => {
                    return RedisServer {
                        process: Some(process),
                        port,
                        old_logs: String::new(),
                    };
                }
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// A server that is not running yet (`restart` starts it on `port`).
    pub fn not_started(port: u16) -> RedisServer {
        RedisServer {
            process: None,
            port,
            old_logs: String::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, no goodbye: what a crashed Redis looks like to its clients.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
            self.old_logs.push_str(&p.stdout());
            self.old_logs.push_str(&p.stderr());
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        // The port was just released by the killed server; give a slow machine a few tries.
        let mut last = String::new();
        for _ in 0..5 {
            match spawn_on(self.port) {
                Ok(p) => {
                    self.process = Some(p);
                    return;
                }
                Err(log) => {
                    last = log;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!(
            "redis-server did not start again on port {}: {last}",
            self.port
        );
    }

    /// Sends `sig` to the server (SIGSTOP / SIGCONT: a Redis that hangs, then wakes up).
    pub fn signal(&self, sig: i32) {
        if let Some(p) = &self.process {
            crate::common::signal(p.pid(), sig);
        }
    }

    pub fn log(&self) -> String {
        let current = self
            .process
            .as_ref()
            .map(|p| format!("{}{}", p.stdout(), p.stderr()))
            .unwrap_or_default();
        format!("{}{current}", self.old_logs)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server log (port {}) ----\n{}---- end of redis-server log ----",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

fn spawn_on(port: u16) -> Result<Spawned, String> {
    let mut cmd = Command::new(redis_server_bin());
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"]);
    let mut p = Spawned::start("redis-server", cmd);
    // Its own "ready" line, not just a PING answer: another test's server could hold the port.
    let ready = |p: &Spawned| p.stdout().contains("Ready to accept connections");
    let up = poll_until(START_DEADLINE, || ready(&p) || p.try_status().is_some());
    if up && p.try_status().is_none() && ready(&p) && ping(port) {
        Ok(p)
    } else {
        p.kill();
        Err(format!(
            "port {port}: exit {:?}\n{}{}",
            p.try_status(),
            p.stdout(),
            p.stderr()
        ))
    }
}

/// `PING` in RESP, answered `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
