//! The state store through the real binary (issue 5): grants, policies and their versions
//! survive a restart; a gateway killed with SIGKILL right after a write leaves a state
//! directory that opens cleanly; a store written by a newer toolgate is refused clearly; the
//! admin token is generated once, printed once, and kept (like grant tokens) only as a hash.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// SIGTERM, a clean exit, and the gateway started again on the same folder.
fn restart(mut gw: Gateway, toml: &str, env: &[(&str, &str)]) -> Gateway {
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("the gateway did not exit within 30 s of SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    Gateway::start_in(gw.into_dir(), toml, env)
}

/// Runs a Python snippet with `sqlite3` on the store; its stdout.
fn sqlite(db: &Path, code: &str) -> String {
    let script = format!("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n{code}\n");
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).arg(db);
    let mut p = Spawned::start("python3 sqlite3", cmd);
    let status = p
        .wait_for(Duration::from_secs(30))
        .expect("python3 did not finish in 30 s");
    assert!(status.success(), "python3 sqlite3 failed: {}", p.stderr());
    p.stdout()
}

fn db(gw_dir: &Path) -> std::path::PathBuf {
    gw_dir.join("state/toolgate.db")
}

fn create(gw: &Gateway, body: Value) -> (String, String) {
    let r = gw.admin("POST", "/grants").json(&body).send();
    let v = admin_json("create", &r, 201);
    (
        v["grant"]["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn put(gw: &Gateway, query: &str, doc: &str) -> u64 {
    let r = gw
        .admin("PUT", &format!("/servers/rec/policy{query}"))
        .body(doc)
        .send();
    admin_json("apply", &r, 201)["version"].as_u64().unwrap()
}

fn get(gw: &Gateway, path: &str) -> Value {
    admin_json(path, &gw.admin("GET", path).send(), 200)
}

fn initialize_status(gw: &Gateway, token: &str) -> u16 {
    gw.post("rec")
        .token(token)
        .json(&initialize_body(1))
        .send()
        .status
}

#[test]
fn grants_policies_and_versions_survive_a_restart() {
    let a = admin_setup("", &[]);
    let gw = a.gw;
    let record = a.record;
    let (keep, keep_token) = create(
        &gw,
        json!({"server": "rec", "label": "keep",
               "policy": serde_json::from_str::<Value>(&probe_policy("keep own")).unwrap()}),
    );
    let (rot, old_token) = create(&gw, json!({"server": "rec", "label": "rotated"}));
    let (rev, rev_token) = create(&gw, json!({"server": "rec", "label": "revoked"}));
    let r = gw.admin("POST", &format!("/grants/{rot}/rotate")).send();
    let new_token = admin_json("rotate", &r, 200)["token"]
        .as_str()
        .unwrap()
        .to_string();
    admin_json(
        "revoke",
        &gw.admin("POST", &format!("/grants/{rev}/revoke")).send(),
        200,
    );
    assert_eq!(put(&gw, "", &probe_policy("server v1")), 1);
    assert_eq!(put(&gw, "", &probe_policy("server v2")), 2);
    assert_eq!(
        put(&gw, "?grant=config:agent", &probe_policy("agent v1")),
        1
    );

    let paths = [
        "/grants".to_string(),
        "/servers/rec/policy/versions".into(),
        "/servers/rec/policy/versions/1".into(),
        "/servers/rec/policy".into(),
        "/servers/rec/policy?grant=config:agent".into(),
        format!("/servers/rec/policy/versions?grant={keep}"),
        format!("/servers/rec/policy?grant={keep}"),
        format!("/grants/{rot}"),
        format!("/grants/{rev}"),
    ];
    let before: Vec<Value> = paths.iter().map(|p| get(&gw, p)).collect();
    let decisions = |gw: &Gateway| {
        [AGENT_TOKEN, OPEN_TOKEN, &keep_token, &new_token].map(|t| {
            let s = McpSession::open(gw, "rec", Some(t));
            decided_by(&s)
        })
    };
    let decided = decisions(&gw);
    assert_eq!(
        decided,
        ["agent v1@1", "allowed", "keep own@1", "server v2@2"]
    );

    let gw = restart(gw, &admin_toml(&record, ""), &admin_env(&[]));
    let after: Vec<Value> = paths.iter().map(|p| get(&gw, p)).collect();
    for ((path, b), a) in paths.iter().zip(&before).zip(&after) {
        assert_eq!(a, b, "GET {path} changed across the restart");
    }
    assert_eq!(decisions(&gw), decided, "decisions after the restart");
    assert_eq!(
        initialize_status(&gw, &old_token),
        401,
        "the rotated-out token"
    );
    assert_eq!(initialize_status(&gw, &rev_token), 401, "the revoked token");
    // Version numbers go on from where they were.
    assert_eq!(put(&gw, "", &probe_policy("server v3")), 3);
    let s = McpSession::open(&gw, "rec", Some(&new_token));
    assert_eq!(decided_by(&s), "server v3@3");
}

#[test]
fn a_state_directory_left_by_sigkill_right_after_a_write_opens_cleanly() {
    let a = admin_setup("", &[]);
    let (gw, record) = (a.gw, a.record);
    let mut tokens = Vec::new();
    // Several rounds: each write answered, then SIGKILL at once, then a start on what is left.
    let mut gw = Some(gw);
    for round in 1..=3u64 {
        let g = gw.take().unwrap();
        assert_eq!(put(&g, "", &probe_policy(&format!("round {round}"))), round);
        let (_, token) = create(
            &g,
            json!({"server": "rec", "label": format!("round {round}")}),
        );
        tokens.push(token);
        let dir = g.into_dir(); // SIGKILL, no time to checkpoint or close
        let next = Gateway::start_in(dir, &admin_toml(&record, ""), &admin_env(&[]));
        for (i, t) in tokens.iter().enumerate() {
            let s = McpSession::open(&next, "rec", Some(t));
            assert_eq!(
                decided_by(&s),
                format!("round {round}@{round}"),
                "round {round}: grant {i} after SIGKILL"
            );
        }
        let versions = get(&next, "/servers/rec/policy/versions");
        assert_eq!(
            versions.as_array().unwrap().len() as u64,
            round,
            "{versions}"
        );
        gw = Some(next);
    }
    let gw = gw.unwrap();
    let check = sqlite(
        &db(gw.dir.path()),
        "print(c.execute('PRAGMA integrity_check').fetchone()[0])",
    );
    assert_eq!(check.trim(), "ok");
}

#[test]
fn a_store_of_a_newer_schema_is_refused_and_left_alone() {
    let a = admin_setup("", &[]);
    let (mut gw, record) = (a.gw, a.record);
    let (_, token) = create(&gw, json!({"server": "rec", "label": "before"}));
    gw.sigterm();
    gw.wait_exit(Duration::from_secs(30))
        .expect("no exit after SIGTERM");
    let dir = gw.into_dir();
    let db = db(dir.path());
    sqlite(&db, "c.execute('PRAGMA user_version = 99')\nc.commit()");

    // The gateway: a clear error, a non-zero exit, never listening.
    let mut cmd = Command::new(toolgate_bin());
    cmd.args(["serve", "--config"])
        .arg(dir.path().join("toolgate.toml"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    for (k, v) in admin_env(&[]) {
        cmd.env(k, v);
    }
    let mut p = Spawned::start("toolgate serve (newer schema)", cmd);
    let status = p
        .wait_for(Duration::from_secs(30))
        .expect("toolgate serve kept running on a store of a newer schema");
    let log = p.stderr();
    assert!(!status.success(), "exit {status:?}; log:\n{log}");
    assert!(
        log.lines().any(|l| l.starts_with("toolgate: ")
            && l.contains("schema version 99, newer than this toolgate knows")),
        "no clear error line; log:\n{log}"
    );
    assert!(!log.contains("listening on"), "{log}");

    // The operator commands too.
    let config = dir.path().join("toolgate.toml");
    let out = toolgate_cli(
        &["grant", "list", "--config", config.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("schema version 99, newer than this toolgate knows"),
        "{out:#?}"
    );

    // Nothing was touched: back at version 1, everything is there.
    let v = sqlite(&db, "print(c.execute('PRAGMA user_version').fetchone()[0])");
    assert_eq!(v.trim(), "99", "the refused store was changed");
    sqlite(&db, "c.execute('PRAGMA user_version = 1')\nc.commit()");
    let gw = Gateway::start_in(dir, &admin_toml(&record, ""), &admin_env(&[]));
    assert_eq!(initialize_status(&gw, &token), 200);
}

#[test]
fn the_admin_token_is_printed_once_at_first_start_and_kept_only_as_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    std::fs::write(
        dir.path().join(SERVER_POLICY_FILE),
        probe_policy("server file"),
    )
    .unwrap();
    let toml = admin_toml(&record, "");
    let env = [("AGENT_TOKEN", AGENT_TOKEN), ("OPEN_TOKEN", OPEN_TOKEN)];
    let gw = Gateway::start_in(dir, &toml, &env);

    const MARK: &str = "admin token (shown once";
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(MARK)).collect();
    assert_eq!(lines.len(), 1, "the admin token line, once: {log}");
    let admin = lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("tga_"))
        .unwrap_or_else(|| panic!("no tga_ token in {:?}", lines[0]))
        .to_string();
    assert!(admin.len() >= 4 + 43, "a short admin token: {admin:?}");
    let with = |gw: &Gateway, token: &str| {
        gw.request("GET", &format!("{ADMIN_PREFIX}/grants"))
            .token(token)
            .send()
    };
    admin_json("the generated admin token", &with(&gw, &admin), 200);
    assert_admin_error(
        "another token",
        &with(&gw, ADMIN_TOKEN),
        401,
        "unauthorized",
    );

    // Grant tokens and the admin token: only their SHA-256 is in the store.
    let r = gw
        .request("POST", &format!("{ADMIN_PREFIX}/grants"))
        .token(&admin)
        .json(&json!({"server": "rec", "label": "hashed"}))
        .send();
    let grant_token = admin_json("create", &r, 201)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(
            "import sqlite3, sys, hashlib\n\
             c = sqlite3.connect(sys.argv[1])\n\
             for t in sys.argv[2:]:\n    \
                 h = hashlib.sha256(t.encode()).digest()\n    \
                 n = c.execute('SELECT (SELECT count(*) FROM grants WHERE token_hash = ?) + (SELECT count(*) FROM settings WHERE value = ?)', (h, h)).fetchone()[0]\n    \
                 print(n)\n",
        )
        .arg(db(gw.dir.path()))
        .arg(&admin)
        .arg(&grant_token);
    let mut p = Spawned::start("python3 sqlite3", cmd);
    assert!(
        p.wait_for(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        p.stderr()
    );
    assert_eq!(
        p.stdout().split_whitespace().collect::<Vec<_>>(),
        ["1", "1"],
        "each token's SHA-256 is stored once"
    );
    let state = gw.state_dir();
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for t in [&admin, &grant_token] {
                assert!(
                    !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                    "a token in clear in {}",
                    entry.path().display()
                );
            }
        }
    }

    // Not printed again; the same token still works.
    let gw = restart(gw, &toml, &env);
    assert!(
        !gw.log().contains(MARK) && !gw.log().contains(&admin),
        "printed again: {}",
        gw.log()
    );
    admin_json("the admin token after a restart", &with(&gw, &admin), 200);

    // TOOLGATE_ADMIN_TOKEN, when set, is the admin token.
    let mut with_env = env.to_vec();
    with_env.push(("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN));
    let gw = restart(gw, &toml, &with_env);
    assert!(!gw.log().contains(MARK), "{}", gw.log());
    admin_json("TOOLGATE_ADMIN_TOKEN", &with(&gw, ADMIN_TOKEN), 200);
    assert_admin_error(
        "the generated token while TOOLGATE_ADMIN_TOKEN is set",
        &with(&gw, &admin),
        401,
        "unauthorized",
    );
}
