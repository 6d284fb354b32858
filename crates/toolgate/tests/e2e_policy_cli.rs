//! `toolgate policy check FILE [--server NAME --config FILE]`: every error with its JSON
//! pointer and exit 1; warnings and exit 0 for a valid policy; with `--server`, the server is
//! started and asked for its tools (every page), and the policy is compared with them.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn policy_check(args: &[&str], cwd: &Path) -> CliRun {
    let args: Vec<&str> = ["policy", "check"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    toolgate_cli(&args, &[("NO_COLOR", "1")], cwd)
}

fn examples() -> PathBuf {
    repo_root().join("crates/policy/tests/fixtures")
}

/// Lines of `out` starting with `prefix` (`error: ` or `warning: `), without it.
fn lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

/// The JSON pointer of an `error: POINTER: SENTENCE` line, checking there is a sentence.
fn pointer_of(line: &str) -> &str {
    let (pointer, sentence) = line
        .split_once(": ")
        .unwrap_or_else(|| panic!("not `POINTER: SENTENCE`: {line:?}"));
    assert!(
        pointer.starts_with('/') && sentence.trim().len() > 10,
        "not `POINTER: SENTENCE`: {line:?}"
    );
    pointer
}

#[test]
fn every_error_of_an_invalid_policy_is_reported_with_its_pointer() {
    let dir = examples().join("invalid");
    let out = policy_check(&["errors.json"], &dir);
    let context = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "exit code; {context}");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("errors.expected.json")).expect("errors.expected.json"),
    )
    .expect("errors.expected.json is JSON");
    let mut expected: Vec<&str> = expected["errors"]
        .as_array()
        .expect("errors list")
        .iter()
        .map(|p| p.as_str().expect("a pointer"))
        .collect();
    let mut reported: Vec<&str> = lines(&out.stdout, "error: ")
        .into_iter()
        .map(pointer_of)
        .collect();
    expected.sort_unstable();
    reported.sort_unstable();
    assert_eq!(
        reported, expected,
        "the pointers reported, all in one run; {context}"
    );
    assert!(lines(&out.stdout, "warning: ").is_empty(), "{context}");
}

#[test]
fn a_tool_named_twice_is_an_error_not_a_silent_choice() {
    let out = policy_check(&["duplicate-key.json"], &examples().join("invalid"));
    let context = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "exit code; {context}");
    let errors = lines(&out.stdout, "error: ");
    assert_eq!(
        errors.iter().map(|l| pointer_of(l)).collect::<Vec<_>>(),
        ["/tools/a"],
        "{context}"
    );
}

#[test]
fn a_valid_policy_exits_0_with_its_warnings() {
    let out = policy_check(&["refunds.json"], &examples());
    let context = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0), "exit code; {context}");
    assert!(lines(&out.stdout, "error: ").is_empty(), "{context}");
    let warnings = lines(&out.stdout, "warning: ");
    assert_eq!(warnings.len(), 1, "{context}");
    // deny_if on args.amount, which no require makes present: a call without it passes.
    let w = warnings[0];
    assert!(
        w.starts_with("/tools/create_refund/deny_if/0") && w.contains("args.amount"),
        "the deny_if-without-require warning: {context}"
    );
    for clean in ["hide-all.json", "coroot-seed.json"] {
        let out = policy_check(&[clean], &examples());
        assert_eq!(out.code, Some(0), "{clean}: {}{}", out.stdout, out.stderr);
        assert!(
            lines(&out.stdout, "error: ").is_empty(),
            "{clean}: {}",
            out.stdout
        );
    }
}

#[test]
fn with_a_server_the_policy_is_compared_with_its_tools_on_every_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    // 5 tools, 2 a page: [echo slow] [exit env] [pid]
    let toml = recorder_server_toml_with("rec", &record, &[("RECORDER_PAGE_SIZE", "2")], None);
    std::fs::write(dir.path().join("toolgate.toml"), toml).expect("write config");
    std::fs::write(
        dir.path().join("p.json"),
        r#"{"version": "1", "default": "deny", "hide": ["slow"],
            "tools": {"echo": {}, "env": {}, "ecoh": {}}}"#,
    )
    .expect("write policy");
    let out = policy_check(
        &["p.json", "--server", "rec", "--config", "toolgate.toml"],
        dir.path(),
    );
    let context = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0), "exit code; {context}");
    let warnings = lines(&out.stdout, "warning: ");
    let about = |tool: &str| {
        let quoted = format!("\"{tool}\"");
        warnings
            .iter()
            .filter(|w| w.contains(&quoted))
            .copied()
            .collect::<Vec<_>>()
    };
    // The typo: a tool the server does not have.
    assert!(
        about("ecoh").len() == 1 && about("ecoh")[0].starts_with("/tools/ecoh: "),
        "the policy's tool the server lacks; {context}"
    );
    // The server's tools the policy never mentions.
    for tool in ["exit", "pid"] {
        assert_eq!(about(tool).len(), 1, "unmentioned {tool}; {context}");
    }
    // Tools the policy names or hides, on any page, are not warned about.
    for tool in ["echo", "env", "slow"] {
        assert!(about(tool).is_empty(), "{tool}; {context}");
    }
    assert_eq!(warnings.len(), 3, "{context}");
    // The server really was asked, page after page.
    let asked = summary(&record);
    assert_eq!(
        asked,
        [
            "initialize",
            "notifications/initialized",
            "gateway-list",
            "gateway-list",
            "gateway-list"
        ],
        "what the server received"
    );
}

#[test]
fn with_a_server_that_cannot_start_the_check_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("toolgate.toml"),
        "[servers.gone]\ncommand = \"/nonexistent/mcp-server\"\n",
    )
    .expect("write config");
    std::fs::write(
        dir.path().join("p.json"),
        r#"{"version": "1", "default": "deny"}"#,
    )
    .expect("write policy");
    for server in ["gone", "not-configured"] {
        let out = policy_check(
            &["p.json", "--server", server, "--config", "toolgate.toml"],
            dir.path(),
        );
        assert_eq!(out.code, Some(2), "{server}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(server),
            "{server}: the error names the server: {}",
            out.stderr
        );
    }
}
