//! Peers started by tests: server-everything and the recorder over HTTP, and the SDK client
//! drivers run to completion.

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde_json::Value;

use super::process::{Spawned, free_port, poll_until};
use super::{
    DRIVER_DEADLINE, START_DEADLINE, everything_js, node_bin, python, python_with_sdk, recorder_py,
    repo_root, ts_client_mjs,
};

/// server-everything over Streamable HTTP on a free port.
pub struct EverythingHttp {
    pub process: Spawned,
    pub port: u16,
}

impl EverythingHttp {
    pub fn start() -> EverythingHttp {
        let (node, js) = (node_bin(), everything_js());
        let mut last_log = String::new();
        // The port is picked free and then handed over; if another process took it meanwhile
        // the server exits, and another port is tried.
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&node);
            cmd.arg(&js)
                .arg("streamableHttp")
                .env("PORT", port.to_string());
            let mut process = Spawned::start("server-everything", cmd);
            let up = poll_until(START_DEADLINE, || {
                TcpStream::connect(("127.0.0.1", port)).is_ok() || process.try_status().is_some()
            });
            if up && process.try_status().is_none() {
                return EverythingHttp { process, port };
            }
            last_log = format!("{}{}", process.stdout(), process.stderr());
        }
        panic!("server-everything (streamableHttp) did not start listening: {last_log}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// The recorder over HTTP (`recorder.py --http`), on a port it picked itself.
pub struct RecorderHttp {
    pub process: Spawned,
    pub port: u16,
    pub record_file: PathBuf,
}

impl RecorderHttp {
    pub fn start(record_file: &Path) -> RecorderHttp {
        RecorderHttp::start_with_env(record_file, &[])
    }

    /// Like `start`, with more variables in its environment (`RECORDER_PAGE_SIZE`...).
    pub fn start_with_env(record_file: &Path, env: &[(&str, &str)]) -> RecorderHttp {
        let env = [("RECORD_FILE", record_file.as_os_str())]
            .into_iter()
            .chain(env.iter().map(|&(k, v)| (k, OsStr::new(v))));
        let (process, port) = start_python_http(python(), &recorder_py(), env);
        RecorderHttp {
            process,
            port,
            record_file: record_file.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// Starts a Python MCP server over Streamable HTTP (`python script --http`, `PORT=0` so that it
/// picks its own port, then `env`, which may set `PORT`) and waits for its `listening PORT`
/// line: the process and the port it listens on at 127.0.0.1.
pub fn start_python_http<K, V>(
    python: &str,
    script: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> (Spawned, u16)
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let name = format!(
        "{} --http",
        script.file_stem().unwrap_or_default().to_string_lossy()
    );
    let mut cmd = Command::new(python);
    cmd.arg(script).arg("--http").env("PORT", "0").envs(env);
    let mut process = Spawned::start(&name, cmd);
    let mut port = None;
    poll_until(START_DEADLINE, || {
        port = process.stdout().lines().find_map(|l| {
            l.strip_prefix("listening ")
                .and_then(|p| p.trim().parse().ok())
        });
        port.is_some() || process.try_status().is_some()
    });
    let port = port.unwrap_or_else(|| {
        panic!(
            "{name} did not start: {}{}",
            process.stdout(),
            process.stderr()
        )
    });
    (process, port)
}

/// A throwaway certificate authority and a server certificate it signed for `localhost` and
/// `127.0.0.1`, made with the `openssl` command in `dir` (PEM files).
pub struct TestTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestTls {
    pub fn make(dir: &Path) -> TestTls {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl is needed for the TLS tests: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=toolgate test CA",
        ];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        let mut csr = vec!["req", "-new", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        run(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        TestTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// One SDK driver run: its JSON output line, parsed.
pub struct DriverRun {
    pub out: Value,
    pub stderr: String,
    pub status: ExitStatus,
}

/// Runs a driver (`py_client.py` / `ts-client.mjs`) to completion within `DRIVER_DEADLINE`.
pub fn run_driver(name: &str, cmd: Command) -> DriverRun {
    let mut p = Spawned::start(name, cmd);
    let Some(status) = p.wait_for(DRIVER_DEADLINE) else {
        let (out, err) = (p.stdout(), p.stderr());
        p.kill();
        panic!("{name} did not finish within {DRIVER_DEADLINE:?}\nstdout:\n{out}\nstderr:\n{err}");
    };
    let stdout = p.stdout();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{name} printed no JSON ({status})\nstdout:\n{stdout}\nstderr:\n{}",
                p.stderr()
            )
        });
    let out = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{name} printed bad JSON ({e}): {line}"));
    DriverRun {
        out,
        stderr: p.stderr(),
        status,
    }
}

/// `python3 fixtures/clients/py_client.py --url URL --token T --mode MODE --scenario S ...`
pub fn py_client(url: &str, token: &str, mode: &str, scenario: &str, extra: &[&str]) -> DriverRun {
    let py = python_with_sdk();
    let mut cmd = Command::new(py);
    cmd.arg(repo_root().join("fixtures/clients/py_client.py"))
        .args([
            "--url",
            url,
            "--token",
            token,
            "--mode",
            mode,
            "--scenario",
            scenario,
        ])
        .args(extra);
    run_driver(&format!("py_client ({mode})"), cmd)
}

/// `node fixtures/node/ts-client.mjs --url URL --token T --scenario S ...`
pub fn ts_client(url: &str, token: &str, scenario: &str, extra: &[&str]) -> DriverRun {
    let script = ts_client_mjs();
    let mut cmd = Command::new(node_bin());
    cmd.arg(script)
        .args(["--url", url, "--token", token, "--scenario", scenario])
        .args(extra)
        .current_dir(repo_root().join("fixtures/node"));
    run_driver("ts-client", cmd)
}
