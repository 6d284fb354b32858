//! The end-to-end harness: starts the real `toolgate` binary and real peers, talks HTTP to the
//! gateway, and cleans every process up, also when a test panics.
//!
//! One file per concern:
//!
//! - `gateway`: `Gateway`, the binary on `127.0.0.1:0` with a config written to a temp folder
//!   (the port is read from its log), and the TOML pieces configs are built from. Dropping it
//!   kills the gateway and every process it started.
//! - `http`: `Req` / `Resp` / `SseReader`, blocking HTTP on one shared tokio runtime, so tests
//!   stay plain `#[test]` functions and still run in parallel threads.
//! - `mcp`: `McpSession`, an agent session opened by hand (initialize + initialized), and what
//!   the recorder fixture wrote down.
//! - `process`: `Spawned`, any other process (peers, SDK drivers) in its own process group,
//!   killed on drop; polling with deadlines.
//! - `peers`: `EverythingHttp`, `RecorderHttp` (plain or HTTPS), `TestTls` (a throwaway CA and
//!   server certificate), and the SDK drivers run to completion.
//! - `policy`: the recorder behind a policy file of the test's, and the exact refusals.
//! - `record`: what reached the recorder, one short line per message, compared whole.
//! - `stdio`: `StdioClient`, MCP by hand over `toolgate run`'s stdin/stdout (local mode).
//! - `admin`: the admin API with its token, operator commands run as processes, a gateway
//!   restarted on its state directory, and `probe_policy` / `decided_by` (which version decided).
//! - `coroot`: the real `mcp-coroot` server and `FakeCoroot`, the fake Coroot API it calls.
//! - here: where the peers are, checked; a missing peer fails the test with what to install
//!   (nothing is skipped).
//!
//! Nothing here reads outside the repository at run time.

#![allow(dead_code)]

mod admin;
mod coroot;
mod gateway;
mod http;
mod mcp;
mod peers;
mod policy;
mod process;
mod record;
mod stdio;

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use {
    admin::*, coroot::*, gateway::*, http::*, mcp::*, peers::*, policy::*, process::*, record::*,
    stdio::*,
};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a gateway or a peer gets to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one HTTP request may take (a loaded 2-core CI machine is slow, not this slow).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one SDK driver run may take; the drivers stop themselves at 55 s.
pub const DRIVER_DEADLINE: Duration = Duration::from_secs(75);
/// Poll interval while waiting for something with a deadline.
pub(crate) const POLL: Duration = Duration::from_millis(20);

// Paths, and whether the peers are installed

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root exists")
}

pub fn toolgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_toolgate"))
}

/// The recorder fixture; it needs only `python3` (no packages).
pub fn recorder_py() -> PathBuf {
    static PYTHON_RUNS: OnceLock<bool> = OnceLock::new();
    let runs = *PYTHON_RUNS.get_or_init(|| {
        Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        runs,
        "python3 is needed for fixtures/servers/recorder.py: install Python 3"
    );
    let p = repo_root().join("fixtures/servers/recorder.py");
    assert!(p.exists(), "fixtures/servers/recorder.py is missing");
    p
}

const NODE_HELP: &str = "the Node test peers are not installed: run `npm ci` in fixtures/node \
     (it installs node 22, @modelcontextprotocol/server-everything and @modelcontextprotocol/sdk \
     into fixtures/node/node_modules)";

/// The Node binary the peers were installed for (`fixtures/node/node_modules/.bin/node`).
pub fn node_bin() -> PathBuf {
    let p = repo_root().join("fixtures/node/node_modules/.bin/node");
    assert!(p.exists(), "{NODE_HELP}: {} not found", p.display());
    p
}

pub fn everything_js() -> PathBuf {
    let p = repo_root()
        .join("fixtures/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(p.exists(), "{NODE_HELP}: {} not found", p.display());
    p
}

pub fn ts_client_mjs() -> PathBuf {
    let root = repo_root();
    let sdk = root.join("fixtures/node/node_modules/@modelcontextprotocol/sdk");
    assert!(sdk.exists(), "{NODE_HELP}: {} not found", sdk.display());
    root.join("fixtures/node/ts-client.mjs")
}

/// `python3` with the MCP Python SDK the driver needs; checked once per test binary.
pub fn python_with_sdk() -> &'static str {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import mcp, mcp_types, httpx2, anyio"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run python3: {e}")),
        }
    });
    if let Err(why) = r {
        panic!(
            "the Python MCP SDK is not installed for python3: run `pip install -r fixtures/requirements.txt` \
             (fixtures/clients/py_client.py needs it): {why}"
        );
    }
    "python3"
}

pub fn python() -> &'static str {
    "python3"
}
