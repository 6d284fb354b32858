//! `approval` never fails open (issue 25, point 8): until approvals are enforced (SPEC 6), a
//! policy with an `approval` is refused everywhere a policy comes in, with the approval's JSON
//! pointer and what to do about it: `toolgate policy check`, a policy file at start
//! (`check-config` and `serve` exit 2), a policy file edited under a running gateway (the
//! previous version stays in force), and the admin API's and `toolgate policy apply`'s new
//! versions (nothing stored, the version in force still decides).
//!
//! Every policy with an approval here would let the probe call through if the approval were
//! ignored, so a policy that slipped in would show in `decided_by` as `allowed`.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// What the refusal says (crates/policy/src/document.rs, `APPROVAL_NOT_ENFORCED`), in part.
const NOT_ENFORCED: &str = "approval is not enforced by this version of toolgate yet";
const WHAT_TO_DO: &str = "remove the field, or use deny_if to block the call";

/// `probe_policy` with `echo` allowed outright but for an approval (and one under `all_tools`
/// when `all_tools`): ignoring the approval would forward the probe.
fn approval_policy(all_tools: bool) -> String {
    let mut doc = json!({
        "version": "1",
        "default": "deny",
        "tools": {
            "echo": {"approval": {"timeout": "15m", "mode": "hold"}},
            "pid": {}
        }
    });
    if all_tools {
        doc["all_tools"] = json!({"approval": {"mode": "retry"}});
    }
    doc.to_string()
}

/// The `error: POINTER: SENTENCE` lines of `toolgate policy check|apply`, as (pointer, sentence).
fn error_lines(stdout: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(|l| l.split_once(": ").unwrap_or((l, "")))
        .collect();
    out.sort_unstable();
    out
}

fn assert_refusal_sentence(sentence: &str, context: &str) {
    assert!(
        sentence.starts_with(NOT_ENFORCED) && sentence.contains(WHAT_TO_DO),
        "not the approval refusal: {sentence:?}; {context}"
    );
}

#[test]
fn policy_check_refuses_an_approval_with_its_pointer() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("approval.json"), approval_policy(true)).unwrap();
    let out = toolgate_cli(
        &["policy", "check", "approval.json"],
        &[("NO_COLOR", "1")],
        dir.path(),
    );
    let context = format!("{out:#?}");
    assert_eq!(out.code, Some(1), "exit code; {context}");
    let errors = error_lines(&out.stdout);
    assert_eq!(
        errors.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        ["/all_tools/approval", "/tools/echo/approval"],
        "{context}"
    );
    for (_, sentence) in &errors {
        assert_refusal_sentence(sentence, &context);
    }
    assert!(
        out.stdout.contains("approval.json: 2 error(s)"),
        "{context}"
    );

    // Beside other errors: all of them, in one run.
    let mut doc: Value = serde_json::from_str(&approval_policy(false)).unwrap();
    doc["default"] = json!("maybe");
    doc["tools"]["echo"]["approval"]["mode"] = json!("later");
    std::fs::write(dir.path().join("more.json"), doc.to_string()).unwrap();
    let out = toolgate_cli(
        &["policy", "check", "more.json"],
        &[("NO_COLOR", "1")],
        dir.path(),
    );
    let context = format!("{out:#?}");
    assert_eq!(out.code, Some(1), "exit code; {context}");
    assert_eq!(
        error_lines(&out.stdout)
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>(),
        [
            "/default",
            "/tools/echo/approval",
            "/tools/echo/approval/mode"
        ],
        "{context}"
    );
}

/// A config whose server `a` (or grant `g`) has the policy file `policy.json`.
fn config_with_policy(dir: &Path, on_grant: bool, policy: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("policy.json"), policy).unwrap();
    std::fs::write(
        dir.join(ALLOW_ALL),
        r#"{"version": "1", "default": "allow"}"#,
    )
    .unwrap();
    let (server_policy, grant_policy) = if on_grant {
        (ALLOW_ALL, "policy.json")
    } else {
        ("policy.json", ALLOW_ALL)
    };
    let file = dir.join("toolgate.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
             [servers.a]\ncommand = \"mcp-server\"\npolicy = \"{server_policy}\"\n\
             [grants.g]\nserver = \"a\"\nanonymous = true\npolicy = \"{grant_policy}\"\n"
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_gateway_whose_policy_file_has_an_approval_does_not_start() {
    for (on_grant, key) in [(false, "servers.a.policy"), (true, "grants.g.policy")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = config_with_policy(dir.path(), on_grant, &approval_policy(true));
        let path = file.to_str().unwrap();
        for cmd in ["check-config", "serve"] {
            let out = toolgate_cli(&[cmd, "--config", path], &[], dir.path());
            let ctx = format!("{cmd}, policy on {key}: {out:#?}");
            assert_eq!(out.code, Some(2), "{ctx}");
            let first = out
                .stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            let prefix = format!("toolgate: {path}: {key}: ");
            assert!(first.starts_with(&prefix), "not {prefix:?}...; {ctx}");
            for needle in [
                "policy.json",
                "/all_tools/approval",
                "/tools/echo/approval",
                NOT_ENFORCED,
                WHAT_TO_DO,
            ] {
                assert!(first.contains(needle), "does not say {needle:?}; {ctx}");
            }
            assert!(!out.stderr.contains("listening on"), "it started; {ctx}");
            assert!(!out.stderr.contains("panicked"), "{ctx}");
        }
    }
}

const RELOADED: &str = "policy reloaded";
const REFUSED: &str = "policy edit refused, the previous version stays in force";

#[test]
fn a_policy_file_edited_to_ask_for_an_approval_is_refused_and_the_old_version_stays() {
    let p = policy_setup(&probe_policy("file v1"), &[]);
    let s = McpSession::open(&p.gw, "rec", Some(POLICY_TOKEN));
    assert_eq!(decided_by(&s), "file v1@1");

    let count = |what: &str| p.gw.log().matches(what).count();
    let refused_before = count(REFUSED);
    std::fs::write(&p.policy, approval_policy(true)).expect("edit policy");
    let log = p.gw.log_when("the edit refused", |log| {
        log.matches(REFUSED).count() > refused_before
    });
    let line = log.lines().rfind(|l| l.contains(REFUSED)).unwrap();
    for needle in ["/all_tools/approval", "/tools/echo/approval", NOT_ENFORCED] {
        assert!(
            line.contains(needle),
            "the refusal does not say {needle:?}: {line}"
        );
    }
    assert_eq!(
        decided_by(&s),
        "file v1@1",
        "the approval edit replaced the version in force"
    );
    assert_eq!(count(RELOADED), 0, "{}", p.gw.log());

    // The file is still watched: a valid edit is the next version.
    std::fs::write(&p.policy, probe_policy("file v2")).expect("edit policy");
    p.gw.log_when("the valid edit applied", |log| log.contains(RELOADED));
    assert_eq!(decided_by(&s), "file v2@2");
}

#[test]
fn the_admin_api_refuses_an_approval_and_stores_nothing() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let put = |query: &str, document: &str| {
        gw.admin("PUT", &format!("/servers/rec/policy{query}"))
            .header("content-type", "application/json")
            .body(document.to_string())
            .send()
    };
    let versions = |query: &str| -> Vec<u64> {
        let r = gw
            .admin("GET", &format!("/servers/rec/policy/versions{query}"))
            .send();
        admin_json("versions", &r, 200)
            .as_array()
            .expect("a list")
            .iter()
            .map(|v| v["version"].as_u64().expect("version"))
            .collect()
    };
    let assert_refused = |case: &str, problems: &Value, want: &[&str]| {
        let list = problems.as_array().expect("problems");
        let mut got: Vec<&str> = list
            .iter()
            .map(|p| p["pointer"].as_str().expect("pointer"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "{case}: {problems}");
        for p in list {
            assert_refusal_sentence(p["message"].as_str().expect("message"), case);
        }
    };

    let r = put("", &probe_policy("stored v1"));
    assert_eq!(admin_json("apply v1", &r, 201)["version"], 1);
    assert_eq!(decided_by(&s), "stored v1@1");

    // The server's policy.
    for (all_tools, want) in [
        (false, &["/tools/echo/approval"][..]),
        (true, &["/all_tools/approval", "/tools/echo/approval"][..]),
    ] {
        let case = format!("server policy, all_tools {all_tools}");
        let v = assert_admin_error(
            &case,
            &put("", &approval_policy(all_tools)),
            422,
            "invalid_policy",
        );
        assert_refused(&case, &v["error"]["problems"], want);
        assert_eq!(versions(""), vec![1], "{case}: stored");
        assert_eq!(
            decided_by(&s),
            "stored v1@1",
            "{case}: the version in force"
        );
    }

    // One grant's policy, and a grant created with one.
    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": "rec", "label": "mine"}))
        .send();
    let created = admin_json("create a grant", &r, 201);
    let id = created["grant"]["id"]
        .as_str()
        .expect("grant id")
        .to_string();
    let token = created["token"].as_str().expect("token").to_string();
    let query = format!("?grant={id}");
    let v = assert_admin_error(
        "grant policy",
        &put(&query, &approval_policy(false)),
        422,
        "invalid_policy",
    );
    assert_refused(
        "grant policy",
        &v["error"]["problems"],
        &["/tools/echo/approval"],
    );
    assert_eq!(versions(&query), Vec::<u64>::new());
    let mine = McpSession::open(gw, "rec", Some(&token));
    assert_eq!(
        decided_by(&mine),
        "stored v1@1",
        "the grant has the server's"
    );

    let grants_before = admin_json("grants", &gw.admin("GET", "/grants").send(), 200);
    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": "rec", "label": "with approval", "policy": serde_json::from_str::<Value>(&approval_policy(false)).unwrap()}))
        .send();
    let v = assert_admin_error("a grant with an approval policy", &r, 422, "invalid_policy");
    assert_refused(
        "a grant with an approval policy",
        &v["error"]["problems"],
        &["/tools/echo/approval"],
    );
    let grants_after = admin_json("grants", &gw.admin("GET", "/grants").send(), 200);
    assert_eq!(grants_before, grants_after, "a grant was created");

    // Validation only.
    let r = gw
        .admin("POST", "/policies/validate")
        .body(approval_policy(true))
        .send();
    let v = admin_json("validate", &r, 200);
    assert_eq!(v["valid"], false, "{v}");
    assert_refused(
        "validate",
        &v["errors"],
        &["/all_tools/approval", "/tools/echo/approval"],
    );

    // `toolgate policy apply`, through the API and directly on the state directory.
    let cwd = gw.dir.path();
    std::fs::write(cwd.join("approval.json"), approval_policy(true)).unwrap();
    let base = gw.base();
    let config = gw.config_path.display().to_string();
    let ways: [(&str, Vec<&str>); 2] = [
        (
            "through the API",
            vec!["--url", &base, "--admin-token", ADMIN_TOKEN],
        ),
        ("directly", vec!["--config", &config]),
    ];
    for (how, extra) in ways {
        let mut args = vec!["policy", "apply", "approval.json", "--server", "rec"];
        args.extend(extra);
        let out = toolgate_cli(&args, &[], cwd);
        let context = format!("{how}: {out:#?}");
        assert_eq!(out.code, Some(1), "{context}");
        let errors = error_lines(&out.stdout);
        assert_eq!(
            errors.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            ["/all_tools/approval", "/tools/echo/approval"],
            "{context}"
        );
        for (_, sentence) in &errors {
            assert_refusal_sentence(sentence, &context);
        }
        assert!(out.stderr.contains("nothing was stored"), "{context}");
        assert_eq!(versions(""), vec![1], "{context}");
        assert_eq!(decided_by(&s), "stored v1@1", "{context}");
    }
}
