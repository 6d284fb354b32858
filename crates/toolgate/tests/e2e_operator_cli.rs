//! The operator's command line (SPEC 2.3, issue 5): `toolgate grant create|list|rotate|revoke`
//! and `toolgate policy apply|show|versions|diff`, both ways: through a running gateway's
//! admin API (`--url`, `--admin-token`, or their environment variables), and directly on a
//! state directory (`--config`). The same script run both ways prints the same; a change made
//! through the API decides the very next call; a change made directly on the state directory
//! of a running gateway reaches it within about a second.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How an operator command reaches the grants and policies.
enum Via<'a> {
    Api(&'a Gateway),
    Direct(&'a Path),
}

fn run(via: &Via, args: &[&str], cwd: &Path) -> CliRun {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match via {
        Via::Api(gw) => all.extend([
            "--url".into(),
            gw.base(),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
        ]),
        Via::Direct(config) => all.extend(["--config".into(), config.display().to_string()]),
    }
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    toolgate_cli(&all, &[], cwd)
}

/// Replaces what differs between two runs of the same script (grant ids, in the order they
/// first appear; tokens; times) with placeholders.
struct Normalizer {
    ids: Vec<String>,
}

impl Normalizer {
    fn text(&mut self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = find_token_or_id(rest) {
            out.push_str(&rest[..at.0]);
            let word = &rest[at.0..at.0 + at.1];
            if word.starts_with("g_") {
                let n = match self.ids.iter().position(|i| i == word) {
                    Some(n) => n,
                    None => {
                        self.ids.push(word.to_string());
                        self.ids.len() - 1
                    }
                };
                out.push_str(&format!("<grant {n}>"));
            } else {
                out.push_str("<token>");
            }
            rest = &rest[at.0 + at.1..];
        }
        out.push_str(rest);
        // Times: `created_at=N` (versions) and `"..._at": N` (JSON).
        let mut lines = Vec::new();
        for line in out.lines() {
            let mut l = line.to_string();
            for key in ["created_at", "rotated_at", "revoked_at"] {
                for sep in ["=", "\": "] {
                    let pat = format!("{key}{sep}");
                    if let Some(i) = l.find(&pat) {
                        let start = i + pat.len();
                        let end = l[start..]
                            .find(|c: char| !c.is_ascii_digit())
                            .map_or(l.len(), |e| start + e);
                        if end > start {
                            l.replace_range(start..end, "<t>");
                        }
                    }
                }
            }
            lines.push(l);
        }
        lines.join("\n")
    }
}

/// (start, length) of the first grant id (`g_` + 12 hex) or token (`tg_` + 43) in `s`.
fn find_token_or_id(s: &str) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if (i == 0 || !word(b[i - 1])) && s[i..].starts_with("tg_") {
            let len = s[i..].bytes().take_while(|c| word(*c)).count();
            if len == 46 {
                return Some((i, len));
            }
        }
        if (i == 0 || !word(b[i - 1])) && s[i..].starts_with("g_") {
            let len = s[i..].bytes().take_while(|c| word(*c)).count();
            if len == 14 && s[i + 2..i + 14].bytes().all(|c| c.is_ascii_hexdigit()) {
                return Some((i, len));
            }
        }
        i += 1;
    }
    None
}

/// `stderr` without the INFO lines of the log (the first command on a fresh state directory
/// logs its migration; a gateway's store was migrated by the gateway).
fn without_info(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !(l.starts_with("20") && l.contains(" INFO ")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A grant list (JSON or text) in the order of its labels: grants made in the same second are
/// listed in the order of their random ids.
fn in_label_order(stdout: &str) -> String {
    if let Ok(Value::Array(mut grants)) = serde_json::from_str::<Value>(stdout) {
        if grants.iter().all(|g| g.get("label").is_some()) {
            grants.sort_by_key(|g| g["label"].as_str().unwrap_or_default().to_string());
            return serde_json::to_string_pretty(&grants).unwrap() + "\n";
        }
        return stdout.to_string();
    }
    match stdout.split_once('\n') {
        Some((header, rest)) if header.starts_with("ID ") => {
            let mut lines: Vec<&str> = rest.lines().collect();
            lines.sort_by_key(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "));
            format!("{header}\n{}\n", lines.join("\n"))
        }
        _ => stdout.to_string(),
    }
}

fn id_and_token(out: &CliRun) -> (String, String) {
    let v = out.json();
    (
        v["grant"]["id"].as_str().expect("id").to_string(),
        v["token"].as_str().expect("token").to_string(),
    )
}

/// The operator's script, run one way; each step's name and what it printed.
fn script(via: &Via, cwd: &Path) -> Vec<(String, CliRun)> {
    let mut steps: Vec<(String, CliRun)> = Vec::new();
    let mut step = |name: &str, args: &[&str]| -> CliRun {
        let out = run(via, args, cwd);
        steps.push((
            name.to_string(),
            CliRun {
                code: out.code,
                stdout: out.stdout.clone(),
                stderr: out.stderr.clone(),
            },
        ));
        out
    };
    let created = step(
        "create",
        &[
            "grant", "create", "--server", "rec", "--label", "ci", "--json",
        ],
    );
    let (id, _) = id_and_token(&created);
    step(
        "create with a policy, text",
        &[
            "grant",
            "create",
            "--server",
            "rec",
            "--label",
            "with policy",
            "--policy",
            "own.json",
        ],
    );
    step("list", &["grant", "list", "--json"]);
    step("list, text", &["grant", "list"]);
    step(
        "apply v1",
        &["policy", "apply", "v1.json", "--server", "rec"],
    );
    step(
        "apply invalid",
        &["policy", "apply", "bad.json", "--server", "rec"],
    );
    step(
        "apply v2",
        &["policy", "apply", "v2.json", "--server", "rec", "--json"],
    );
    step("show", &["policy", "show", "--server", "rec"]);
    step(
        "show v1",
        &[
            "policy",
            "show",
            "--server",
            "rec",
            "--version",
            "1",
            "--json",
        ],
    );
    step("versions", &["policy", "versions", "--server", "rec"]);
    step(
        "versions, JSON",
        &["policy", "versions", "--server", "rec", "--json"],
    );
    step("diff", &["policy", "diff", "1", "2", "--server", "rec"]);
    step(
        "diff, same",
        &["policy", "diff", "2", "2", "--server", "rec"],
    );
    step(
        "apply for a grant",
        &[
            "policy", "apply", "v1.json", "--server", "rec", "--grant", &id,
        ],
    );
    step(
        "show for a grant",
        &[
            "policy", "show", "--server", "rec", "--grant", &id, "--json",
        ],
    );
    step(
        "versions of config:agent (none)",
        &[
            "policy",
            "versions",
            "--server",
            "rec",
            "--grant",
            "config:agent",
        ],
    );
    step("rotate", &["grant", "rotate", &id, "--json"]);
    step("rotate, text", &["grant", "rotate", &id]);
    step("revoke", &["grant", "revoke", &id]);
    step("revoke again", &["grant", "revoke", &id]);
    step("rotate a revoked grant", &["grant", "rotate", &id]);
    step(
        "rotate a config grant",
        &["grant", "rotate", "config:agent"],
    );
    step("revoke a config grant", &["grant", "revoke", "config:open"]);
    step(
        "rotate an unknown grant",
        &["grant", "rotate", "g_000000000000"],
    );
    step("revoke an unknown grant", &["grant", "revoke", "nobody"]);
    step(
        "create on an unknown server",
        &["grant", "create", "--server", "nope", "--label", "x"],
    );
    step(
        "create with an empty label",
        &["grant", "create", "--server", "rec", "--label", ""],
    );
    step(
        "create with an invalid policy",
        &[
            "grant", "create", "--server", "rec", "--label", "x", "--policy", "bad.json",
        ],
    );
    step(
        "apply an invalid policy (a key written twice)",
        &["policy", "apply", "dup.json", "--server", "rec"],
    );
    step(
        "show an unknown version",
        &["policy", "show", "--server", "rec", "--version", "9"],
    );
    step(
        "show on an unknown server",
        &["policy", "show", "--server", "nope"],
    );
    step(
        "show a grant without a policy",
        &[
            "policy",
            "show",
            "--server",
            "rec",
            "--grant",
            "config:open",
        ],
    );
    step(
        "apply for an unknown grant",
        &[
            "policy",
            "apply",
            "v1.json",
            "--server",
            "rec",
            "--grant",
            "g_000000000000",
        ],
    );
    step(
        "diff with an unknown version",
        &["policy", "diff", "1", "9", "--server", "rec"],
    );
    step("list at the end", &["grant", "list", "--json"]);
    steps
}

fn write_policies(dir: &Path) {
    std::fs::write(dir.join("v1.json"), probe_policy("cli v1")).unwrap();
    std::fs::write(dir.join("v2.json"), probe_policy("cli v2")).unwrap();
    std::fs::write(dir.join("own.json"), probe_policy("own")).unwrap();
    // Strict JSON: which `default` would be meant?
    std::fs::write(
        dir.join("dup.json"),
        r#"{"version": "1", "default": "deny", "default": "allow"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.json"),
        r#"{"version": "1", "default": "maybe", "tools": {"echo": {"deny_if": 5}}}"#,
    )
    .unwrap();
}

#[test]
fn the_same_script_prints_the_same_through_the_api_and_on_the_state_directory() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let cwd = gw.dir.path();
    write_policies(cwd);
    // The same config, on a state directory of its own that no gateway runs on.
    let config = std::fs::read_to_string(&gw.config_path).unwrap();
    let direct_state = cwd.join("direct-state");
    let direct_config = cwd.join("direct.toml");
    let state_line = config.lines().find(|l| l.starts_with("state_dir")).unwrap();
    std::fs::write(
        &direct_config,
        config.replace(
            state_line,
            &format!(
                "state_dir = {}",
                toml_str(&direct_state.display().to_string())
            ),
        ),
    )
    .unwrap();

    let through_api = script(&Via::Api(gw), cwd);
    let direct = script(&Via::Direct(&direct_config), cwd);
    assert!(
        direct_state.join("toolgate.db").exists(),
        "the direct run did not work on its own state directory"
    );

    let (mut na, mut nd) = (Normalizer { ids: vec![] }, Normalizer { ids: vec![] });
    let mut differences = Vec::new();
    for ((name, api), (_, dir)) in through_api.iter().zip(&direct) {
        let a = (
            api.code,
            na.text(&in_label_order(&api.stdout)),
            na.text(&without_info(&api.stderr)),
        );
        let d = (
            dir.code,
            nd.text(&in_label_order(&dir.stdout)),
            nd.text(&without_info(&dir.stderr)),
        );
        if a != d {
            differences.push(format!(
                "step {name:?}:\n  through the API: {a:#?}\n  directly:        {d:#?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the two ways differ:\n{}",
        differences.join("\n")
    );

    // And what they printed is right (one way is enough now that both are the same).
    let by_name = |n: &str| &through_api.iter().find(|(name, _)| name == n).unwrap().1;
    let codes: Vec<(&str, Option<i32>)> = through_api
        .iter()
        .map(|(n, r)| (n.as_str(), r.code))
        .collect();
    for (name, code) in &codes {
        let failing = name.contains("invalid")
            || name.contains("unknown")
            || name.contains("again")
            || name.contains("a revoked")
            || name.contains("a config grant")
            || name.contains("empty label")
            || name.contains("without a policy");
        assert_eq!(
            *code,
            Some(if failing { 1 } else { 0 }),
            "step {name:?}: {:#?}",
            by_name(name)
        );
        let r = by_name(name);
        if failing {
            assert_eq!(
                r.stderr.lines().count(),
                1,
                "step {name:?}: not one line on stderr: {r:#?}"
            );
            assert!(r.stderr.starts_with("toolgate: "), "step {name:?}: {r:#?}");
        } else {
            assert_eq!(r.stderr, "", "step {name:?}: {r:#?}");
        }
    }
    let created = by_name("create with a policy, text");
    let tokens: Vec<&str> = created
        .stdout
        .split_whitespace()
        .filter(|w| w.starts_with("tg_"))
        .collect();
    assert_eq!(tokens.len(), 1, "the token, once: {created:#?}");
    for list in ["list", "list, text", "list at the end"] {
        assert!(
            !by_name(list).stdout.contains("tg_"),
            "{list} shows a token: {:#?}",
            by_name(list)
        );
    }
    let text_list = &by_name("list, text").stdout;
    for want in ["config:agent", "config:open", "ci", "with policy"] {
        assert!(text_list.contains(want), "{want} not in {text_list}");
    }
    let invalid = by_name("apply invalid");
    let mut pointers: Vec<&str> = invalid
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(|l| l.split_once(": ").expect("POINTER: message").0)
        .collect();
    pointers.sort();
    assert_eq!(
        pointers,
        ["/default", "/tools/echo/deny_if"],
        "{invalid:#?}"
    );
    assert!(
        invalid.stderr.contains("nothing was stored"),
        "{invalid:#?}"
    );
    let versions: Value = serde_json::from_str(&by_name("versions, JSON").stdout).unwrap();
    assert_eq!(
        versions
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2],
        "the invalid apply made a version"
    );
    let shown: Value = serde_json::from_str(&by_name("show").stdout).unwrap();
    assert_eq!(
        shown,
        serde_json::from_str::<Value>(&probe_policy("cli v2")).unwrap()
    );
    let diff = &by_name("diff").stdout;
    assert!(
        diff.contains("-") && diff.contains("\"cli v1\"") && diff.contains("\"cli v2\""),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with('-') && l.contains("cli v1"))
            && diff
                .lines()
                .any(|l| l.starts_with('+') && l.contains("cli v2")),
        "{diff}"
    );
    assert_eq!(by_name("diff, same").stdout, "no difference\n");
    let end: Value =
        serde_json::from_str(&in_label_order(&by_name("list at the end").stdout)).unwrap();
    let statuses: Vec<(String, String)> = end
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["label"].as_str().unwrap().to_string(),
                g["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("agent".to_string(), "active".to_string()),
            ("ci".into(), "revoked".into()),
            ("open".into(), "active".into()),
            ("with policy".into(), "active".into()),
        ]
    );

    // The gateway serves what the API run made: the grant created with a policy decides by it.
    let with_policy = end.as_array().unwrap()[3]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw
        .admin("GET", &format!("/servers/rec/policy?grant={with_policy}"))
        .send();
    assert_eq!(admin_json("its policy", &r, 200)["version"], 1);
    let agent = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    assert_eq!(decided_by(&agent), "cli v2@2");
}

/// `grant create --policy FILE --url ...` must read the file as strictly as the gateway and the
/// direct way do: a key written twice is refused, not silently resolved to its last value.
#[test]
fn a_grants_policy_with_a_key_written_twice_is_refused_through_the_api_too() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let cwd = gw.dir.path();
    write_policies(cwd);
    let before = admin_json("grants", &gw.admin("GET", "/grants").send(), 200);
    for via in [Via::Direct(&gw.config_path), Via::Api(gw)] {
        let how = match via {
            Via::Api(_) => "through the API",
            Via::Direct(_) => "directly",
        };
        let out = run(
            &via,
            &[
                "grant", "create", "--server", "rec", "--label", "dup", "--policy", "dup.json",
            ],
            cwd,
        );
        assert_eq!(out.code, Some(1), "{how}: {out:#?}");
        assert!(
            out.stdout.contains("error: /default:") && out.stdout.contains("twice"),
            "{how}: {out:#?}"
        );
    }
    let after = admin_json("grants", &gw.admin("GET", "/grants").send(), 200);
    assert_eq!(
        before, after,
        "a grant was created with an ambiguous policy"
    );
}

#[test]
fn through_the_api_a_change_decides_the_very_next_call() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let cwd = gw.dir.path();
    write_policies(cwd);
    let api = Via::Api(gw);
    let agent = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    assert_eq!(decided_by(&agent), "server file@1");

    let out = run(
        &api,
        &["policy", "apply", "v1.json", "--server", "rec"],
        cwd,
    );
    out.ok();
    assert!(out.stdout.contains("stored version 1"), "{out:#?}");
    assert_eq!(decided_by(&agent), "cli v1@1", "the very next call");

    let out = run(
        &api,
        &["policy", "apply", "bad.json", "--server", "rec"],
        cwd,
    );
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("error: /"))
            .count(),
        2,
        "{out:#?}"
    );
    assert_eq!(decided_by(&agent), "cli v1@1", "the old version stays");

    run(
        &api,
        &["policy", "apply", "v2.json", "--server", "rec"],
        cwd,
    )
    .ok();
    assert_eq!(decided_by(&agent), "cli v2@2");

    // A grant made through the API works at once, with its own policy.
    let out = run(
        &api,
        &[
            "grant", "create", "--server", "rec", "--label", "mine", "--policy", "own.json",
            "--json",
        ],
        cwd,
    );
    let (id, token) = id_and_token(&out);
    let s = McpSession::open(gw, "rec", Some(&token));
    assert_eq!(decided_by(&s), "own@1");

    // Rotated: the old token dead on the open session, the new one carries on.
    let out = run(&api, &["grant", "rotate", &id, "--json"], cwd);
    let (_, new) = id_and_token(&out);
    let r = s
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send();
    assert_refused("the old token after rotate", &r, 401, -32600);
    let s2 = McpSession::open(gw, "rec", Some(&new));
    assert_eq!(decided_by(&s2), "own@1");

    // Revoked: the open session's next request is refused.
    run(&api, &["grant", "revoke", &id], cwd).ok();
    let r = s2
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
        .send();
    assert_refused("the open session after revoke", &r, 401, -32600);

    // TOOLGATE_URL and TOOLGATE_ADMIN_TOKEN stand for --url and --admin-token.
    let base = gw.base();
    let out = toolgate_cli(
        &["grant", "list", "--json"],
        &[
            ("TOOLGATE_URL", &base),
            ("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        cwd,
    );
    let list = out.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == json!(id) && g["status"] == "revoked"),
        "{list}"
    );
    let out = toolgate_cli(
        &["policy", "versions", "--server", "rec", "--json"],
        &[
            ("TOOLGATE_URL", &base),
            ("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        cwd,
    );
    assert_eq!(out.json().as_array().unwrap().len(), 2);
}

/// Polls `cond` until PICKUP_DEADLINE; returns how long it took, or panics with `what`.
fn within_pickup(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < PICKUP_DEADLINE,
            "{what}: not seen by the running gateway {PICKUP_DEADLINE:?} after the command"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

#[test]
fn changes_made_on_the_state_directory_reach_the_running_gateway_within_a_second() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let cwd = gw.dir.path();
    write_policies(cwd);
    let direct = Via::Direct(&gw.config_path);
    let agent = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    assert_eq!(decided_by(&agent), "server file@1");
    let mut took = Vec::new();

    let out = run(
        &direct,
        &[
            "grant", "create", "--server", "rec", "--label", "direct", "--json",
        ],
        cwd,
    );
    let (id, token) = id_and_token(&out);
    took.push(within_pickup("a grant created directly", || {
        gw.post("rec")
            .token(&token)
            .json(&initialize_body(1))
            .send()
            .status
            == 200
    }));
    let s = McpSession::open(gw, "rec", Some(&token));
    assert_eq!(decided_by(&s), "server file@1");

    run(
        &direct,
        &["policy", "apply", "v1.json", "--server", "rec"],
        cwd,
    )
    .ok();
    took.push(within_pickup("a policy applied directly", || {
        decided_by(&agent) == "cli v1@1"
    }));
    assert_eq!(decided_by(&s), "cli v1@1");

    // Refused directly too; nothing reaches the gateway (give it two polls to show).
    let out = run(
        &direct,
        &["policy", "apply", "bad.json", "--server", "rec"],
        cwd,
    );
    assert_eq!(out.code, Some(1), "{out:#?}");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(decided_by(&agent), "cli v1@1");

    run(
        &direct,
        &[
            "policy", "apply", "own.json", "--server", "rec", "--grant", &id,
        ],
        cwd,
    )
    .ok();
    took.push(within_pickup("a grant's policy applied directly", || {
        decided_by(&s) == "own@1"
    }));
    assert_eq!(decided_by(&agent), "cli v1@1");

    let out = run(&direct, &["grant", "rotate", &id, "--json"], cwd);
    let (_, new) = id_and_token(&out);
    let ping = |s: &McpSession, token: &str| {
        s.post()
            .token(token)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
    };
    took.push(within_pickup("a rotation made directly", || {
        ping(&s, &token).status == 401
    }));
    assert_eq!(ping(&s, &new).status, 200, "the new token on the session");

    run(&direct, &["grant", "revoke", &id], cwd).ok();
    took.push(within_pickup("a revocation made directly", || {
        ping(&s, &new).status == 401
    }));
    assert_refused("after the direct revoke", &ping(&s, &new), 401, -32600);
    // The admin API reads the same store.
    let r = gw.admin("GET", &format!("/grants/{id}")).send();
    assert_eq!(admin_json("the grant", &r, 200)["status"], "revoked");
    eprintln!("direct changes seen by the gateway after {took:?}");
}

#[test]
fn refusals_are_one_line_on_stderr_and_a_non_zero_exit() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let cwd = gw.dir.path();
    write_policies(cwd);
    let base = gw.base();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let before = admin_json("grants", &gw.admin("GET", "/grants").send(), 200);
    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        (
            "a wrong admin token",
            vec![
                "grant",
                "create",
                "--server",
                "rec",
                "--label",
                "x",
                "--url",
                &base,
                "--admin-token",
                "tga_wrong",
            ],
            1,
            "admin token",
        ),
        (
            "a grant token as the admin token",
            vec![
                "grant",
                "list",
                "--url",
                &base,
                "--admin-token",
                AGENT_TOKEN,
            ],
            1,
            "admin token",
        ),
        (
            "a wrong admin token on policy apply",
            vec![
                "policy",
                "apply",
                "v1.json",
                "--server",
                "rec",
                "--url",
                &base,
                "--admin-token",
                "tga_wrong",
            ],
            1,
            "admin token",
        ),
        (
            "--url without an admin token",
            vec!["grant", "list", "--url", &base],
            2,
            "admin token",
        ),
        (
            "nothing listening at --url",
            vec![
                "grant",
                "list",
                "--url",
                &dead,
                "--admin-token",
                ADMIN_TOKEN,
            ],
            1,
            "cannot reach",
        ),
        (
            "a missing policy file",
            vec![
                "policy",
                "apply",
                "missing.json",
                "--server",
                "rec",
                "--url",
                &base,
                "--admin-token",
                ADMIN_TOKEN,
            ],
            2,
            "missing.json",
        ),
        (
            "a missing config file",
            vec!["grant", "list", "--config", "missing.toml"],
            2,
            "missing.toml",
        ),
    ];
    for (case, args, code, mentions) in cases {
        let out = toolgate_cli(&args, &[], cwd);
        assert_eq!(out.code, Some(code), "{case}: {out:#?}");
        assert_eq!(out.stdout, "", "{case}: {out:#?}");
        assert_eq!(out.stderr.lines().count(), 1, "{case}: {out:#?}");
        assert!(
            out.stderr.starts_with("toolgate: ") && out.stderr.contains(mentions),
            "{case}: {out:#?}"
        );
    }
    let after = admin_json("grants", &gw.admin("GET", "/grants").send(), 200);
    assert_eq!(before, after, "a refused command changed the grants");
    let r = gw.admin("GET", "/servers/rec/policy/versions").send();
    assert_eq!(admin_json("versions", &r, 200), json!([]));
}
