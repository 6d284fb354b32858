//! Bad configuration through the real binary (`serve` and `check-config`): exit code 2, one
//! line naming the file and the key, no panic, no secret.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `toolgate ARGS` with only PATH, HOME and `env`; bounded in time.
fn toolgate(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Outcome {
    let mut cmd = Command::new(toolgate_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("NO_COLOR", "1");
    for key in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Spawned::start("toolgate", cmd);
    let status = p.wait_for(Duration::from_secs(20)).unwrap_or_else(|| {
        let log = p.stderr();
        p.kill();
        panic!("toolgate {args:?} did not exit within 20 s (it should refuse at once): {log}")
    });
    Outcome {
        code: status.code(),
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// One bad config: its text, the environment, and what its error line must contain.
struct Bad {
    what: &'static str,
    toml: String,
    env: Vec<(&'static str, &'static str)>,
    must_contain: Vec<&'static str>,
    must_not_contain: Vec<&'static str>,
}

fn bad(what: &'static str, toml: &str, must_contain: &[&'static str]) -> Bad {
    Bad {
        what,
        toml: toml.to_string(),
        env: Vec::new(),
        must_contain: must_contain.to_vec(),
        must_not_contain: Vec::new(),
    }
}

fn bad_configs() -> Vec<Bad> {
    const SERVER: &str = "[servers.a]\ncommand = \"mcp-server\"\n";
    vec![
        bad("unknown top-level key", "lisen = \"127.0.0.1:0\"\n", &["lisen"]),
        bad(
            "unknown server key",
            &format!("{SERVER}argz = []\n"),
            &["argz", "line 3"],
        ),
        bad("bad listen address", "listen = \"localhost\"\n", &["listen:"]),
        bad("zero body limit", "max_body_bytes = 0\n", &["max_body_bytes:"]),
        bad("TOML syntax error", "[servers.a\ncommand = \"x\"\n", &["line 1"]),
        bad(
            "grant token variable not set",
            &format!("{SERVER}[grants.g]\nserver = \"a\"\ntoken_env = \"E2E_UNSET_TOKEN_VAR\"\n"),
            &["grants.g.token_env:", "E2E_UNSET_TOKEN_VAR", "not set"],
        ),
        bad(
            "missing ${VAR} in a server's env",
            &format!("{SERVER}env = {{ KEY = \"${{E2E_UNSET_ENV_VAR}}\" }}\n"),
            &["servers.a.env.KEY:", "E2E_UNSET_ENV_VAR"],
        ),
        bad(
            "missing ${VAR} in an HTTP server's header",
            "[servers.r]\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { X-Key = \"Bearer ${E2E_UNSET_HEADER_VAR}\" }\n",
            &["servers.r.headers.X-Key:", "E2E_UNSET_HEADER_VAR"],
        ),
        bad(
            "anonymous grant while listening on all interfaces",
            &format!("listen = \"0.0.0.0:0\"\n{SERVER}[grants.g]\nserver = \"a\"\nanonymous = true\n"),
            &["grants.g.anonymous:", "loopback"],
        ),
        bad(
            "grant for an unknown server",
            &format!("{SERVER}[grants.g]\nserver = \"nope\"\nanonymous = true\n"),
            &["grants.g.server:", "nope"],
        ),
        bad(
            "server with both command and url",
            "[servers.a]\ncommand = \"x\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            &["servers.a:", "not both"],
        ),
        bad(
            "server with neither command nor url",
            "[servers.a]\nargs = []\n",
            &["servers.a:"],
        ),
        bad(
            "non-HTTP url",
            "[servers.a]\nurl = \"ftp://127.0.0.1/mcp\"\n",
            &["servers.a.url:"],
        ),
        Bad {
            what: "two grants with the same token",
            toml: format!(
                "{SERVER}[grants.g]\nserver = \"a\"\ntoken_env = \"TOKEN_ONE\"\n[grants.h]\nserver = \"a\"\ntoken_env = \"TOKEN_TWO\"\n"
            ),
            env: vec![
                ("TOKEN_ONE", "tg-e2e-shared-token-1234"),
                ("TOKEN_TWO", "tg-e2e-shared-token-1234"),
            ],
            must_contain: vec!["grants.h.token_env:"],
            must_not_contain: vec!["tg-e2e-shared-token-1234"],
        },
        Bad {
            what: "empty token",
            toml: format!("{SERVER}[grants.g]\nserver = \"a\"\ntoken_env = \"EMPTY_TOKEN\"\n"),
            env: vec![("EMPTY_TOKEN", "")],
            must_contain: vec!["grants.g.token_env:", "EMPTY_TOKEN", "empty"],
            must_not_contain: vec![],
        },
        Bad {
            what: "a header value that is not a header value",
            toml: "[servers.r]\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { X-Key = \"${HEADER_SECRET}\" }\n".into(),
            env: vec![("HEADER_SECRET", "upstream-secret\nvalue-77")],
            must_contain: vec!["servers.r.headers.X-Key:"],
            must_not_contain: vec!["upstream-secret", "value-77"],
        },
    ]
}

fn assert_one_line_error(what: &str, out: &Outcome, file: &Path, bad: &Bad) {
    let ctx = format!(
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.code, out.stdout, out.stderr
    );
    assert_eq!(out.code, Some(2), "{ctx}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line; {ctx}");
    let prefix = format!("toolgate: {}: ", file.display());
    assert!(
        lines[0].starts_with(&prefix),
        "does not start with {prefix:?}; {ctx}"
    );
    for needle in &bad.must_contain {
        assert!(lines[0].contains(needle), "does not name {needle:?}; {ctx}");
    }
    for secret in &bad.must_not_contain {
        assert!(!out.stderr.contains(secret), "shows {secret:?}; {ctx}");
    }
    for panic_text in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!out.stderr.contains(panic_text), "panic text; {ctx}");
    }
    assert!(!out.stdout.contains("ok ("), "{ctx}");
}

#[test]
fn bad_configs_are_one_line_naming_the_key_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, b) in bad_configs().iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, &b.toml).unwrap();
        let path = file.to_str().unwrap();
        let check = toolgate(&["check-config", "--config", path], &b.env, dir.path());
        assert_one_line_error(&format!("check-config, {}", b.what), &check, &file, b);
        let serve = toolgate(&["serve", "--config", path], &b.env, dir.path());
        assert_one_line_error(&format!("serve, {}", b.what), &serve, &file, b);
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("absent.toml");
    for cmd in ["check-config", "serve"] {
        let out = toolgate(&[cmd, "--config", file.to_str().unwrap()], &[], dir.path());
        assert_eq!(out.code, Some(2), "{cmd}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{cmd}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("absent.toml"), "{cmd}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{cmd}: {}", out.stderr);
    }
}

#[test]
fn listen_flag_on_all_interfaces_refuses_an_anonymous_grant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("anon.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[servers.a]\ncommand = \"x\"\n[grants.g]\nserver = \"a\"\nanonymous = true\n",
    )
    .unwrap();
    let out = toolgate(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("anonymous"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("listening on"),
        "it started: {}",
        out.stderr
    );
}

#[test]
fn a_good_config_checks_ok() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("good.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[servers.a]\ncommand = \"mcp-server\"\nenv = { K = \"${E2E_SET}\" }\n\
         [servers.r]\nurl = \"http://127.0.0.1:9/mcp\"\n[grants.g]\nserver = \"a\"\ntoken_env = \"E2E_TOKEN\"\n",
    )
    .unwrap();
    let out = toolgate(
        &["check-config", "--config", file.to_str().unwrap()],
        &[("E2E_SET", "v"), ("E2E_TOKEN", "tg-e2e-good-token-0001")],
        dir.path(),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("ok (2 servers, 1 grants)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("tg-e2e-good-token-0001"));
}

#[test]
fn a_taken_port_is_a_clear_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("taken.toml");
    std::fs::write(&file, format!("listen = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = toolgate(
        &["serve", "--config", file.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.code.is_some(), "killed by a signal: {}", out.stderr);
    let last = out.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("toolgate: ") && last.contains(&port.to_string()),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    drop(taken);
}

/// A policy file the config points at is part of the config: `check-config` must refuse what
/// `serve` would refuse, and both say which key and which file, with the config-error code.
fn assert_policy_config_error(what: &str, policy_text: Option<&str>, must_contain: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.json");
    if let Some(text) = policy_text {
        std::fs::write(&policy, text).unwrap();
    }
    let file = dir.path().join("toolgate.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[servers.a]\ncommand = \"mcp-server\"\npolicy = \"policy.json\"\n\
         [grants.g]\nserver = \"a\"\nanonymous = true\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    for cmd in ["check-config", "serve"] {
        let out = toolgate(&[cmd, "--config", path], &[], dir.path());
        let ctx = format!(
            "{cmd}, {what}: exit {:?}\nstdout: {}\nstderr: {}",
            out.code, out.stdout, out.stderr
        );
        assert_eq!(out.code, Some(2), "{ctx}");
        let first = out
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let prefix = format!("toolgate: {path}: servers.a.policy: ");
        assert!(
            first.starts_with(&prefix),
            "first line does not start with {prefix:?}; {ctx}"
        );
        assert!(
            first.contains("policy.json"),
            "the file is not named; {ctx}"
        );
        for needle in must_contain {
            assert!(
                out.stderr.contains(needle),
                "does not say {needle:?}; {ctx}"
            );
        }
        assert!(!out.stderr.contains("panicked"), "{ctx}");
        assert!(!out.stderr.contains("listening on"), "it started; {ctx}");
    }
}

#[test]
fn a_missing_policy_file_is_a_config_error() {
    assert_policy_config_error("missing policy file", None, &[]);
}

#[test]
fn an_invalid_policy_file_is_a_config_error() {
    assert_policy_config_error(
        "invalid policy file",
        Some(r#"{"version": "1", "default": "maybe"}"#),
        &["/default"],
    );
}

/// The allocator's settings in the binary (`main.rs`, `_rjem_malloc_conf`) reach jemalloc: a
/// symbol under the wrong name would be ignored without a word, and a call's malloc and free
/// cost would go back up (docs/performance.md). jemalloc says what it set when asked to.
#[test]
fn the_binary_sizes_jemallocs_thread_caches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = toolgate(
        &["--version"],
        &[("_RJEM_MALLOC_CONF", "confirm_conf:true")],
        dir.path(),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for set in [
        "Set conf value: tcache_nslots_small_min:128",
        "Set conf value: tcache_gc_incr_bytes:16777216",
    ] {
        assert!(out.stderr.contains(set), "no '{set}' in: {}", out.stderr);
    }
}
