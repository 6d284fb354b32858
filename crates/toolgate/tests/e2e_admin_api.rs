//! The admin HTTP API (SPEC 2.3, issue 5) through the real gateway: every endpoint, and every
//! refusal: no or wrong admin token, a grant token, a foreign Host or Origin, unknown ids, an
//! invalid policy (its errors listed, the old version still deciding calls), revoked and
//! rotated tokens in the middle of an open MCP session, config grants that cannot be rotated.
//!
//! Which policy version decided a call is read off the call itself: every policy here denies
//! `echo` with the message `probe` under its own name (`probe_policy`, `decided_by`), and the
//! denial carries the version that made it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const GRANT_TOKEN_LEN: usize = 3 + 43; // `tg_` and 32 bytes in unpadded base64url

/// Creates a grant through the API; returns (id, token).
fn create_grant(gw: &Gateway, server: &str, label: &str) -> (String, String) {
    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": server, "label": label}))
        .send();
    let v = admin_json("create a grant", &r, 201);
    (
        v["grant"]["id"].as_str().expect("grant id").to_string(),
        v["token"].as_str().expect("token").to_string(),
    )
}

fn grant_list(gw: &Gateway) -> Value {
    admin_json("list grants", &gw.admin("GET", "/grants").send(), 200)
}

fn put_policy(gw: &Gateway, query: &str, document: &str) -> Resp {
    gw.admin("PUT", &format!("/servers/rec/policy{query}"))
        .header("content-type", "application/json")
        .body(document)
        .send()
}

fn apply(gw: &Gateway, query: &str, document: &str) -> Value {
    admin_json("apply a policy", &put_policy(gw, query, document), 201)
}

fn versions(gw: &Gateway, query: &str) -> Vec<u64> {
    let r = gw
        .admin("GET", &format!("/servers/rec/policy/versions{query}"))
        .send();
    admin_json("policy versions", &r, 200)
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect()
}

fn pointers(problems: &Value) -> Vec<String> {
    let mut out: Vec<String> = problems
        .as_array()
        .unwrap_or_else(|| panic!("problems is not a list: {problems}"))
        .iter()
        .map(|p| {
            assert!(
                p["message"].as_str().is_some_and(|m| m.len() > 5),
                "a problem without a message: {p}"
            );
            p["pointer"].as_str().expect("pointer").to_string()
        })
        .collect();
    out.sort();
    out
}

/// Every guarded endpoint, as (method, path, body).
fn guarded_endpoints(grant_id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", "/servers".into(), None),
        ("GET", "/servers/rec".into(), None),
        ("GET", "/servers/rec/tools".into(), None),
        ("GET", "/servers/rec/policy".into(), None),
        (
            "PUT",
            "/servers/rec/policy".into(),
            Some(json!({"version": "1", "default": "allow"})),
        ),
        ("GET", "/servers/rec/policy/versions".into(), None),
        ("GET", "/servers/rec/policy/versions/1".into(), None),
        ("GET", "/grants".into(), None),
        (
            "POST",
            "/grants".into(),
            Some(json!({"server": "rec", "label": "sneaky"})),
        ),
        ("GET", format!("/grants/{grant_id}"), None),
        ("POST", format!("/grants/{grant_id}/rotate"), None),
        ("POST", format!("/grants/{grant_id}/revoke"), None),
        (
            "POST",
            "/policies/validate".into(),
            Some(json!({"version": "1", "default": "allow"})),
        ),
        ("GET", "/audit".into(), None),
    ]
}

#[test]
fn the_admin_api_takes_the_admin_token_and_nothing_else() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let (grant_id, grant_token) = create_grant(gw, "rec", "ci-runner");
    let before = grant_list(gw);

    let presented: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        (
            "a wrong admin token",
            Some(format!("Bearer {ADMIN_TOKEN}x")),
        ),
        (
            "a prefix of the admin token",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        ),
        (
            "a config grant's token",
            Some(format!("Bearer {AGENT_TOKEN}")),
        ),
        (
            "a stored grant's token",
            Some(format!("Bearer {grant_token}")),
        ),
        (
            "the admin token, not as Bearer",
            Some(format!("Basic {ADMIN_TOKEN}")),
        ),
        ("an empty Bearer", Some("Bearer ".into())),
    ];
    for (method, path, body) in guarded_endpoints(&grant_id) {
        for (who, authorization) in &presented {
            let case = format!("{method} {path} with {who}");
            let mut req = gw.request(method, &format!("{ADMIN_PREFIX}{path}"));
            if let Some(a) = authorization {
                req = req.header("authorization", a);
            }
            if let Some(b) = &body {
                req = req.header("content-type", "application/json").json(b);
            }
            assert_admin_error(&case, &req.send(), 401, "unauthorized");
        }
        // The right token from a page of another site, or to another Host: 403.
        let case = format!("{method} {path} with a foreign Origin");
        let r = gw
            .admin(method, &path)
            .header("origin", "http://evil.example")
            .send();
        assert_admin_error(&case, &r, 403, "forbidden");
        let case = format!("{method} {path} to a foreign Host");
        let r = gw
            .admin(method, &path)
            .header("host", &format!("evil.example:{}", gw.port))
            .send();
        assert_admin_error(&case, &r, 403, "forbidden");
    }
    assert_eq!(
        grant_list(gw),
        before,
        "a refused request changed the grants"
    );
    assert_eq!(
        versions(gw, ""),
        Vec::<u64>::new(),
        "a refused PUT stored a policy"
    );
    // Nothing was rotated or revoked: the grant's token still works.
    let s = McpSession::open(gw, "rec", Some(&grant_token));
    assert_eq!(decided_by(&s), "server file@1");

    // The admin token is no grant token either.
    let r = gw
        .post("rec")
        .token(ADMIN_TOKEN)
        .json(&initialize_body(1))
        .send();
    assert_refused("the admin token on /mcp/rec", &r, 401, -32600);

    // The right token, the localhost name: fine.
    let r = gw
        .admin("GET", "/servers")
        .header("host", &format!("localhost:{}", gw.port))
        .send();
    admin_json("Host localhost", &r, 200);

    // The OpenAPI document is public, and describes every endpoint.
    let r = gw
        .request("GET", &format!("{ADMIN_PREFIX}/openapi.json"))
        .send();
    let doc = admin_json("openapi.json without a token", &r, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut expected = vec![
        "GET /servers",
        "GET /servers/{server}",
        "GET /servers/{server}/tools",
        "GET /servers/{server}/policy",
        "PUT /servers/{server}/policy",
        "GET /servers/{server}/policy/versions",
        "GET /servers/{server}/policy/versions/{version}",
        "GET /grants",
        "POST /grants",
        "GET /grants/{id}",
        "POST /grants/{id}/rotate",
        "POST /grants/{id}/revoke",
        "POST /policies/validate",
        "GET /audit",
    ];
    expected.sort();
    assert_eq!(documented, expected, "the documented operations");
    // Unknown admin paths: 404 in the API's error shape (behind the token or not).
    let r = gw.admin("GET", "/nothing-here").send();
    assert_admin_error("an unknown admin path", &r, 404, "not_found");
}

#[test]
fn servers_and_their_tools_listed_live_from_the_upstream() {
    let dir_toml = "[servers.broken]\ncommand = \"python3\"\nargs = [\"-c\", \"import sys; sys.exit(3)\"]\n\n\
                    [servers.away]\nurl = \"http://127.0.0.1:9/mcp\"\n\n";
    let a = admin_setup(dir_toml, &[]);
    let gw = &a.gw;

    let servers = admin_json("servers", &gw.admin("GET", "/servers").send(), 200);
    let mut by_name: Vec<(String, String, Value)> = servers
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_string(),
                s["transport"].as_str().expect("transport").to_string(),
                s["policy_file"].clone(),
            )
        })
        .collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_name.len(), 3, "{servers}");
    assert_eq!(
        (by_name[0].0.as_str(), by_name[0].1.as_str(), &by_name[0].2),
        ("away", "http", &Value::Null)
    );
    assert_eq!(
        (by_name[1].0.as_str(), by_name[1].1.as_str(), &by_name[1].2),
        ("broken", "stdio", &Value::Null)
    );
    assert_eq!(
        (by_name[2].0.as_str(), by_name[2].1.as_str()),
        ("rec", "stdio")
    );
    assert!(
        by_name[2]
            .2
            .as_str()
            .is_some_and(|p| p.ends_with(SERVER_POLICY_FILE)),
        "{servers}"
    );
    let one = admin_json("one server", &gw.admin("GET", "/servers/rec").send(), 200);
    assert!(
        servers.as_array().unwrap().contains(&one),
        "GET /servers/rec {one} is not in {servers}"
    );
    assert_admin_error(
        "an unknown server",
        &gw.admin("GET", "/servers/nope").send(),
        404,
        "not_found",
    );

    // Live: each GET asks the upstream again (the recorder writes down every tools/list).
    assert_eq!(gateway_lists(&a.record), 0, "listed before anyone asked");
    for round in 1..=2 {
        let r = gw.admin("GET", "/servers/rec/tools").send();
        let v = admin_json("tools", &r, 200);
        assert_eq!(
            v,
            json!({"server": "rec", "tools": ["echo", "slow", "exit", "env", "pid"]})
        );
        assert_eq!(
            gateway_lists(&a.record),
            round,
            "GET /tools #{round} did not ask the upstream"
        );
    }
    assert_admin_error(
        "tools of an unknown server",
        &gw.admin("GET", "/servers/nope/tools").send(),
        404,
        "not_found",
    );
    for server in ["broken", "away"] {
        let r = gw
            .admin("GET", &format!("/servers/{server}/tools"))
            .timeout(Duration::from_secs(60))
            .send();
        assert_admin_error(
            &format!("tools of {server}, which cannot be reached"),
            &r,
            502,
            "upstream",
        );
    }
}

/// The admin setup with a second server, `other` (allow-all), beside `rec`.
fn admin_with_a_second_server() -> AdminSetup {
    let other = recorder_server_toml_with(
        "other",
        std::path::Path::new("/dev/null"),
        &[],
        Some(ALLOW_ALL),
    );
    admin_setup(&other, &[])
}

#[test]
fn grants_are_issued_listed_and_read_and_their_tokens_shown_only_once() {
    let a = admin_with_a_second_server();
    let gw = &a.gw;

    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": "rec", "label": "ci-runner"}))
        .send();
    let issued = admin_json("create", &r, 201);
    let token = issued["token"].as_str().expect("token").to_string();
    assert!(
        token.starts_with("tg_")
            && token.len() == GRANT_TOKEN_LEN
            && token[3..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "not a tg_ token of 256 bits: {token:?}"
    );
    let grant = issued["grant"].clone();
    let id = grant["id"].as_str().expect("id").to_string();
    assert_eq!(
        grant,
        json!({"id": id, "label": "ci-runner", "server": "rec", "source": "store",
               "status": "active", "created_at": grant["created_at"], "rotated_at": null,
               "revoked_at": null}),
    );
    assert!(
        grant["created_at"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000)
    );

    let (id2, token2) = create_grant(gw, "rec", "ci-runner");
    assert_ne!(
        (&id, &token),
        (&id2, &token2),
        "two grants, one id or token"
    );
    let (id_other, token_other) = create_grant(gw, "other", "elsewhere");

    // Listed, config grants too; never a token.
    let list = grant_list(gw);
    let ids: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|g| g["id"].as_str().expect("id"))
        .collect();
    for want in ["config:agent", "config:open", &id, &id2, &id_other] {
        assert!(ids.contains(&want), "{want} is not listed: {list}");
    }
    let text = list.to_string();
    for t in [&token, &token2, &token_other] {
        assert!(!text.contains(t.as_str()), "the list shows a token: {text}");
    }
    assert!(!text.contains("tg_"), "the list shows a token: {text}");
    let config_agent = list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "config:agent")
        .unwrap();
    assert_eq!(
        config_agent,
        &json!({"id": "config:agent", "label": "agent", "server": "rec", "source": "config",
                "status": "active", "created_at": null, "rotated_at": null, "revoked_at": null})
    );

    // Read one by one.
    let r = gw.admin("GET", &format!("/grants/{id}")).send();
    assert_eq!(admin_json("get a grant", &r, 200), grant);
    let r = gw.admin("GET", "/grants/config:open").send();
    assert_eq!(
        admin_json("get a config grant", &r, 200)["source"],
        "config"
    );

    // The tokens work at once, each for its own server only.
    let s = McpSession::open(gw, "rec", Some(&token));
    assert_eq!(decided_by(&s), "server file@1");
    let s2 = McpSession::open(gw, "rec", Some(&token2));
    assert_eq!(decided_by(&s2), "server file@1");
    let r = gw
        .post("rec")
        .token(&token_other)
        .json(&initialize_body(1))
        .send();
    assert_refused("a grant of `other` on `rec`", &r, 403, -32600);
    let r = s
        .post()
        .token(&token_other)
        .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        .send();
    assert_refused("another grant's token on the session", &r, 403, -32600);

    // Refused creations store nothing.
    let before = grant_list(gw);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "an unknown server",
            json!({"server": "nope", "label": "x"}).to_string(),
            404,
            "not_found",
        ),
        (
            "an empty label",
            json!({"server": "rec", "label": ""}).to_string(),
            400,
            "invalid",
        ),
        (
            "a blank label",
            json!({"server": "rec", "label": "   "}).to_string(),
            400,
            "invalid",
        ),
        (
            "a label of 65 characters",
            json!({"server": "rec", "label": "x".repeat(65)}).to_string(),
            400,
            "invalid",
        ),
        (
            "a label with a control character",
            json!({"server": "rec", "label": "a\nb"}).to_string(),
            400,
            "invalid",
        ),
        (
            "no label",
            json!({"server": "rec"}).to_string(),
            400,
            "invalid",
        ),
        (
            "an unknown field",
            json!({"server": "rec", "label": "x", "token": "tg_mine"}).to_string(),
            400,
            "invalid",
        ),
        (
            "a key written twice",
            r#"{"server": "rec", "label": "x", "label": "y"}"#.into(),
            400,
            "invalid",
        ),
        ("not JSON", "{\"server\": ".into(), 400, "invalid"),
        ("a list", "[]".into(), 400, "invalid"),
        (
            "an invalid policy",
            json!({"server": "rec", "label": "x", "policy": {"version": "1", "default": "maybe"}})
                .to_string(),
            422,
            "invalid_policy",
        ),
    ];
    for (case, body, status, code) in cases {
        let r = gw
            .admin("POST", "/grants")
            .header("content-type", "application/json")
            .body(body)
            .send();
        let v = assert_admin_error(case, &r, status, code);
        if status == 422 {
            assert_eq!(pointers(&v["error"]["problems"]), vec!["/default"], "{v}");
        }
    }
    assert_eq!(grant_list(gw), before, "a refused creation stored a grant");

    // A label of 64 characters is fine.
    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": "rec", "label": "é".repeat(64)}))
        .send();
    admin_json("a label of 64 characters", &r, 201);

    // Unknown ids.
    for (method, path) in [
        ("GET", "/grants/g_000000000000"),
        ("POST", "/grants/g_000000000000/rotate"),
        ("POST", "/grants/g_000000000000/revoke"),
        ("GET", "/grants/config:nobody"),
        ("POST", "/grants/config:nobody/rotate"),
        ("POST", "/grants/config:nobody/revoke"),
    ] {
        assert_admin_error(
            &format!("{method} {path}"),
            &gw.admin(method, path).send(),
            404,
            "not_found",
        );
    }

    // Config grants cannot be rotated or revoked here, and keep working.
    for action in ["rotate", "revoke"] {
        let r = gw
            .admin("POST", &format!("/grants/config:agent/{action}"))
            .send();
        let v = assert_admin_error(&format!("{action} a config grant"), &r, 409, "conflict");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("config"),
            "{v}"
        );
    }
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    assert_eq!(decided_by(&s), "server file@1");
}

#[test]
fn a_revoked_grant_is_refused_at_once_even_on_its_open_session() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let (id, token) = create_grant(gw, "rec", "laptop");
    let s = McpSession::open(gw, "rec", Some(&token));
    let bystander = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    assert_eq!(decided_by(&s), "server file@1");

    let r = gw.admin("POST", &format!("/grants/{id}/revoke")).send();
    let v = admin_json("revoke", &r, 200);
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["status"], "revoked", "{v}");
    assert!(v["revoked_at"].as_i64().is_some(), "{v}");

    // The very next request on the open session: 401, and it never reached the server.
    let r = s
        .post()
        .body(call_body(7, "echo", "after the revoke"))
        .send();
    assert_refused("the open session's next call", &r, 401, -32600);
    let r = s
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}))
        .send();
    assert_refused("the open session's next ping", &r, 401, -32600);
    let r =
        s.gw.request("GET", "/mcp/rec")
            .token(&token)
            .session(&s.id)
            .header("accept", "text/event-stream")
            .send();
    assert_refused("the open session's GET stream", &r, 401, -32600);
    assert_refused("the open session's DELETE", &s.delete(), 401, -32600);
    let r = gw
        .post("rec")
        .token(&token)
        .json(&initialize_body(1))
        .send();
    assert_refused("a new session", &r, 401, -32600);
    assert!(
        !recorded_text(&a.record).contains("after the revoke"),
        "a revoked grant's call reached the server"
    );

    // Others are not touched.
    assert_eq!(decided_by(&bystander), "server file@1");

    // Read back; a revoked grant cannot be revoked or rotated again.
    let r = gw.admin("GET", &format!("/grants/{id}")).send();
    assert_eq!(admin_json("get", &r, 200), v);
    for action in ["revoke", "rotate"] {
        let r = gw.admin("POST", &format!("/grants/{id}/{action}")).send();
        assert_admin_error(&format!("{action} a revoked grant"), &r, 409, "conflict");
    }
    let r = gw
        .post("rec")
        .token(&token)
        .json(&initialize_body(1))
        .send();
    assert_refused("after the refused rotate", &r, 401, -32600);
}

#[test]
fn a_rotated_token_is_dead_at_once_and_the_new_one_works_on_the_same_session() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let (id, old) = create_grant(gw, "rec", "ci");
    let s = McpSession::open(gw, "rec", Some(&old));
    assert_eq!(decided_by(&s), "server file@1");

    let r = gw.admin("POST", &format!("/grants/{id}/rotate")).send();
    let v = admin_json("rotate", &r, 200);
    let new = v["token"].as_str().expect("token").to_string();
    assert!(
        new.starts_with("tg_") && new.len() == GRANT_TOKEN_LEN,
        "{v}"
    );
    assert_ne!(new, old);
    assert_eq!(v["grant"]["id"], json!(id));
    assert_eq!(v["grant"]["status"], "active");
    assert!(v["grant"]["rotated_at"].as_i64().is_some(), "{v}");

    // The old token, on the open session and on a new one: 401 from the next request on.
    let r = s.post().body(call_body(7, "echo", "old token")).send();
    assert_refused("the old token on the open session", &r, 401, -32600);
    let r = gw.post("rec").token(&old).json(&initialize_body(1)).send();
    assert_refused("the old token, a new session", &r, 401, -32600);
    assert!(!recorded_text(&a.record).contains("old token"));

    // The session belongs to the grant, not to the token: the new token carries on with it.
    let r = s
        .post()
        .token(&new)
        .body(call_body(9, "echo", "new token, same session"))
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tool_text(&r.response()), "Echo: new token, same session");
    let fresh = McpSession::open(gw, "rec", Some(&new));
    assert_eq!(decided_by(&fresh), "server file@1");

    // Again: the second token dies, the third works.
    let r = gw.admin("POST", &format!("/grants/{id}/rotate")).send();
    let third = admin_json("rotate again", &r, 200)["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_refused(
        "the second token",
        &fresh
            .post()
            .json(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
            .send(),
        401,
        -32600,
    );
    let s3 = McpSession::open(gw, "rec", Some(&third));
    assert_eq!(decided_by(&s3), "server file@1");
}

#[test]
fn policies_are_versioned_and_an_invalid_one_is_refused_with_every_error() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    assert_eq!(decided_by(&s), "server file@1");
    assert_admin_error(
        "no stored policy yet",
        &gw.admin("GET", "/servers/rec/policy").send(),
        404,
        "not_found",
    );
    assert_eq!(versions(gw, ""), Vec::<u64>::new());

    let v1 = apply(gw, "", &probe_policy("stored v1"));
    let doc1: Value = serde_json::from_str(&probe_policy("stored v1")).unwrap();
    assert_eq!(
        v1,
        json!({"server": "rec", "grant": null, "version": 1, "created_at": v1["created_at"],
               "document": doc1})
    );
    assert!(v1["created_at"].as_i64().is_some(), "{v1}");
    // The very next call is decided by it.
    assert_eq!(decided_by(&s), "stored v1@1");

    // Invalid uploads: every error with its pointer; nothing stored; v1 still decides.
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "three errors",
            json!({"version": "2", "default": "maybe", "tools": {"echo": {"deny_if": 5}}})
                .to_string(),
            vec!["/default", "/tools/echo/deny_if", "/version"],
        ),
        (
            "a bad operator",
            json!({"version": "1", "default": "deny", "tools": {"echo": {"deny_if": [
                {"conditions": [{"path": "args.x", "op": "near", "value": 1}]}]}}})
            .to_string(),
            vec!["/tools/echo/deny_if/0/conditions/0/op"],
        ),
        ("not JSON", "{\"version\": ".into(), vec![""]),
        ("a list", "[]".into(), vec![""]),
    ];
    for (case, body, want) in cases {
        let r = put_policy(gw, "", &body);
        let v = assert_admin_error(case, &r, 422, "invalid_policy");
        assert_eq!(pointers(&v["error"]["problems"]), want, "{case}: {v}");
        assert_eq!(decided_by(&s), "stored v1@1", "{case}: the old version");
    }
    let dup = put_policy(
        gw,
        "",
        r#"{"version": "1", "default": "deny", "default": "allow"}"#,
    );
    assert_admin_error("a key written twice", &dup, 422, "invalid_policy");
    assert_eq!(versions(gw, ""), vec![1], "a refused upload was stored");
    let r = gw.admin("GET", "/servers/rec/policy").send();
    assert_eq!(admin_json("the newest", &r, 200), v1);
    assert_eq!(decided_by(&s), "stored v1@1");

    // Version 2, in force from the next call; both readable.
    let v2 = apply(gw, "", &probe_policy("stored v2"));
    assert_eq!(v2["version"], 2, "{v2}");
    assert_eq!(decided_by(&s), "stored v2@2");
    assert_eq!(versions(gw, ""), vec![1, 2]);
    let r = gw.admin("GET", "/servers/rec/policy/versions").send();
    for v in admin_json("versions", &r, 200).as_array().unwrap() {
        assert!(v["created_at"].as_i64().is_some(), "{v}");
    }
    let r = gw.admin("GET", "/servers/rec/policy/versions/1").send();
    assert_eq!(admin_json("version 1", &r, 200), v1);
    let r = gw.admin("GET", "/servers/rec/policy").send();
    assert_eq!(admin_json("the newest", &r, 200), v2);

    for (path, status, code) in [
        ("/servers/rec/policy/versions/3", 404, "not_found"),
        ("/servers/rec/policy/versions/0", 404, "not_found"),
        ("/servers/rec/policy/versions/two", 400, "invalid"),
        ("/servers/rec/policy/versions/-1", 400, "invalid"),
        ("/servers/nope/policy", 404, "not_found"),
        ("/servers/nope/policy/versions", 404, "not_found"),
        ("/servers/nope/policy/versions/1", 404, "not_found"),
        ("/servers/rec/policy?grant=g_000000000000", 404, "not_found"),
        (
            "/servers/rec/policy/versions?grant=g_000000000000",
            404,
            "not_found",
        ),
    ] {
        assert_admin_error(path, &gw.admin("GET", path).send(), status, code);
    }
    let r = gw
        .admin("PUT", "/servers/nope/policy")
        .body(probe_policy("x"))
        .send();
    assert_admin_error("PUT on an unknown server", &r, 404, "not_found");
    let r = put_policy(gw, "?grant=g_000000000000", &probe_policy("x"));
    assert_admin_error("PUT for an unknown grant", &r, 404, "not_found");
    assert_eq!(versions(gw, ""), vec![1, 2]);
    assert_eq!(decided_by(&s), "stored v2@2");

    // Validation only: never stored.
    let r = gw
        .admin("POST", "/policies/validate")
        .body(probe_policy("checked"))
        .send();
    let v = admin_json("validate a valid policy", &r, 200);
    assert_eq!(
        (&v["valid"], &v["errors"]),
        (&json!(true), &json!([])),
        "{v}"
    );
    assert!(v["warnings"].is_array(), "{v}");
    let r = gw
        .admin("POST", "/policies/validate")
        .body(
            json!({"version": "1", "default": "maybe", "tools": {"echo": {"deny_if": 5}}})
                .to_string(),
        )
        .send();
    let v = admin_json("validate an invalid policy", &r, 200);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(
        pointers(&v["errors"]),
        vec!["/default", "/tools/echo/deny_if"]
    );
    assert_eq!(versions(gw, ""), vec![1, 2], "validation stored a version");
}

#[test]
fn a_grants_policy_comes_from_its_own_stored_version_then_its_file_then_the_servers() {
    let a = admin_with_a_second_server();
    let gw = &a.gw;
    let (id, token) = create_grant(gw, "rec", "stored");
    let (other_id, _) = create_grant(gw, "other", "elsewhere");
    let agent = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let open = McpSession::open(gw, "rec", Some(OPEN_TOKEN));
    let stored = McpSession::open(gw, "rec", Some(&token));
    let state = || [decided_by(&agent), decided_by(&open), decided_by(&stored)];

    assert_eq!(state(), ["server file@1", "allowed", "server file@1"]);
    // The server's stored policy beats its file, not a grant's own file.
    apply(gw, "", &probe_policy("server stored v1"));
    apply(gw, "", &probe_policy("server stored v2"));
    assert_eq!(
        state(),
        ["server stored v2@2", "allowed", "server stored v2@2"]
    );
    // A grant's own stored policy beats everything.
    let v = apply(
        gw,
        &format!("?grant={id}"),
        &probe_policy("stored grant v1"),
    );
    assert_eq!((&v["grant"], &v["version"]), (&json!(id), &json!(1)), "{v}");
    assert_eq!(
        state(),
        ["server stored v2@2", "allowed", "stored grant v1@1"]
    );
    apply(gw, "?grant=config:open", &probe_policy("open own v1"));
    assert_eq!(
        state(),
        ["server stored v2@2", "open own v1@1", "stored grant v1@1"]
    );
    apply(gw, "?grant=config:agent", &probe_policy("agent own v1"));
    apply(gw, "?grant=config:agent", &probe_policy("agent own v2"));
    assert_eq!(
        state(),
        ["agent own v2@2", "open own v1@1", "stored grant v1@1"]
    );
    // Another server's version goes on the server's own count.
    apply(gw, "", &probe_policy("server stored v3"));
    assert_eq!(
        state(),
        ["agent own v2@2", "open own v1@1", "stored grant v1@1"]
    );

    // Each scope has its own versions.
    assert_eq!(versions(gw, ""), vec![1, 2, 3]);
    assert_eq!(versions(gw, &format!("?grant={id}")), vec![1]);
    assert_eq!(versions(gw, "?grant=config:agent"), vec![1, 2]);
    assert_eq!(versions(gw, "?grant=config:open"), vec![1]);
    let r = gw
        .admin("GET", "/servers/rec/policy/versions/1?grant=config:agent")
        .send();
    let v = admin_json("agent's version 1", &r, 200);
    assert_eq!(v["grant"], "config:agent");
    assert_eq!(
        v["document"]["tools"]["echo"]["deny_if"][0]["on_deny"],
        "agent own v1"
    );

    // A grant of another server is no scope of this one.
    let r = put_policy(gw, &format!("?grant={other_id}"), &probe_policy("x"));
    assert_admin_error("a grant of another server", &r, 400, "invalid");
    let r = gw
        .admin("GET", &format!("/servers/rec/policy?grant={other_id}"))
        .send();
    assert_admin_error("a grant of another server", &r, 400, "invalid");

    // A grant created with a policy has it as its own version 1.
    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": "rec", "label": "with policy",
                      "policy": serde_json::from_str::<Value>(&probe_policy("born with")).unwrap()}))
        .send();
    let issued = admin_json("create with a policy", &r, 201);
    let born_id = issued["grant"]["id"].as_str().unwrap().to_string();
    let born = McpSession::open(gw, "rec", Some(issued["token"].as_str().unwrap()));
    assert_eq!(decided_by(&born), "born with@1");
    assert_eq!(versions(gw, &format!("?grant={born_id}")), vec![1]);
}

/// Every refusal of the admin API is JSON in the documented `Error` shape, also when the
/// request does not even parse: a query string that does not deserialize, a path segment that
/// is not UTF-8. (schemathesis finds the first: `GET /audit?x-schemathesis-unknown-property=42`
/// is answered `400 text/plain`.)
#[test]
fn malformed_requests_are_refused_in_the_documented_json_shape() {
    let a = admin_setup("", &[]);
    let gw = &a.gw;
    let cases = [
        ("GET", "/audit?x-unknown=42"),
        ("GET", "/audit?limit=-1"),
        ("GET", "/audit?after_seq=x"),
        ("GET", "/servers/rec/policy?grant=a&grant=b"),
        ("GET", "/servers/rec/policy/versions?grant=a&grant=b"),
        ("GET", "/servers/%FF"),
        ("GET", "/servers/%FF/tools"),
        ("GET", "/servers/%FF/policy"),
        ("GET", "/grants/%FF"),
        ("POST", "/grants/%FF/rotate"),
        ("POST", "/grants/%FF/revoke"),
    ];
    let mut wrong = Vec::new();
    for (method, path) in cases {
        let r = gw.admin(method, path).send();
        let json = r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"));
        let shaped = json
            && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| {
                v["error"]["code"] == "invalid" && v["error"]["message"].is_string()
            });
        if r.status != 400 || !shaped {
            wrong.push(format!(
                "{method} {path}: {} {:?} {}",
                r.status,
                r.header("content-type"),
                r.text()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "not 400 with {{\"error\": {{\"code\": \"invalid\", \"message\"}}}} as application/json:\n{}",
        wrong.join("\n")
    );
}

/// A revoked grant's GET stream (server-initiated messages) must end with the grant: if it
/// stays open, the revoked agent keeps receiving what the server sends, and the session is
/// never reaped (an open stream keeps a session from being idle).
#[test]
fn a_revoked_grants_open_stream_ends() {
    let toml = everything_stdio_toml("ev", &[]);
    let gw = Gateway::start(&toml, &[("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let r = gw
        .admin("POST", "/grants")
        .json(&json!({"server": "ev", "label": "streamer"}))
        .send();
    let issued = admin_json("create", &r, 201);
    let (id, token) = (
        issued["grant"]["id"].as_str().unwrap().to_string(),
        issued["token"].as_str().unwrap().to_string(),
    );
    let s = McpSession::open(&gw, "ev", Some(&token));
    let mut stream = gw
        .request("GET", "/mcp/ev")
        .token(&token)
        .session(&s.id)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .timeout(Duration::from_secs(120))
        .stream();
    assert_eq!(stream.status, 200, "GET stream");
    // server-everything sends a log message every 5 s once asked to.
    let resp = s.request("logging/setLevel", json!({"level": "debug"}));
    assert!(resp.get("result").is_some(), "{resp}");
    let resp = s.call_tool("toggle-simulated-logging", json!({}));
    assert!(resp.get("result").is_some(), "{resp}");
    let got_one = loop {
        match stream.next(Duration::from_secs(15)) {
            Next::Message(m) if m["method"] == "notifications/message" => break true,
            Next::Message(_) => continue,
            _ => break false,
        }
    };
    assert!(
        got_one,
        "no log message on the GET stream before the revoke"
    );

    let r = gw.admin("POST", &format!("/grants/{id}/revoke")).send();
    admin_json("revoke", &r, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let mut after = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            panic!(
                "the revoked grant's GET stream is still open 12 s after the revoke; \
                 it received {} message(s) meanwhile: {after:?}",
                after.len()
            );
        }
        match stream.next(left) {
            Next::Message(m) => after.push(m),
            Next::End(_) => break,
            Next::TimedOut => continue,
        }
    }
    assert!(
        after.iter().all(|m| m["method"] != "notifications/message"),
        "server messages reached the revoked grant before its stream ended: {after:?}"
    );
}
