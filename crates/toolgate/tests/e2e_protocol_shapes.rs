//! Every answer the gateway writes itself, checked against the JSON Schema of the protocol
//! revision of the request it answers (issue 25, point 1): 2025-03-26, 2025-06-18, 2025-11-25
//! and the stateless 2026-07-28.
//!
//! For each revision one gateway is started in front of the recorder fixture and each shape is
//! provoked through it: a denial by a rule, the default-deny denial (a tool the upstream lists
//! and the policy does not name), the denial of a grant without a policy, the rate-limit denial
//! (its counter and `retry_after_s` in `_meta`), a hidden tool and two unknown ones (-32602),
//! invalid params, a filtered `tools/list` (with and without the upstream's TTL), a header/body
//! mismatch, a batch, malformed JSON, no token, another server's token, an unknown session, a
//! call timing out upstream, an upstream that cannot be reached and one that exits mid-call.
//! Approval-required answers are not written by the gateway yet (approvals are refused when a
//! policy is loaded, e2e_approval_refused.rs); when they are, they belong here.
//!
//! The schemas are the specification repository's `schema/<version>/schema.json`, trimmed to the
//! definitions needed (tests/fixtures/mcp-schema/, README there) and compiled into the test, so
//! nothing is read or fetched at run time. Every answer is validated as a whole (the JSON-RPC
//! result or error response of its revision) and, for results, its `result` against
//! `CallToolResult` / `ListToolsResult`; under 2026-07-28 a filtered list must also be
//! `cacheScope: "private"` with the upstream's `ttlMs` (0 when it gave none), and the header
//! mismatch must be the spec's `HeaderMismatchError`. Every error code must be a standard
//! JSON-RPC one, or ours in -32000..-32019 (-32020..-32099 is the spec's), or -32020 for a
//! header mismatch (that one is the spec's own). A failure names the shape, the revision and
//! the schema's complaint.
//!
//! One allowance, kept narrow: an answer to a message whose id the gateway never read (refused
//! before or while parsing it). 2026-07-28 makes the id optional, and the gateway leaves it
//! out there; that revision gets no allowance. Before it, `id` is a required string or
//! integer and there is no valid way to answer a message without one: the gateway writes
//! `"id": null`, as JSON-RPC 2.0 (section 5) requires, and for those shapes and revisions
//! only, schema errors at `/id` with a null id are reported as a note instead of failing;
//! anything else in them is checked like every other shape.

mod common;

use std::cell::Cell;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};

const VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];
const STATELESS: &str = "2026-07-28";

/// Seconds the gateway waits for an upstream answer; the `slow` call sleeps longer.
const TIMEOUT_SECS: u64 = 1;
/// The TTL the `rec` upstream gives its lists under 2026-07-28 (RECORDER_LIST_TTL_MS).
const UPSTREAM_TTL_MS: u64 = 60_000;

/// `rec`'s policy: one rule, one limit, a hidden tool, the rest default-denied.
const REC_POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["env"],
  "tools": {
    "echo": {"deny_if": [{"conditions": [{"path": "args.message", "op": "eq", "value": "forbidden"}],
                          "on_deny": "No forbidden messages."}]},
    "slow": {},
    "exit": {},
    "pid": {"limits": [{"counter": "pid_calls", "window": "minute", "max": 1, "scope": "grant"}]}
  }
}"#;
/// `bare`'s policy: everything allowed but a hidden tool.
const BARE_POLICY: &str = r#"{"version": "1", "default": "allow", "hide": ["env"]}"#;

const TOKENS: [(&str, &str); 4] = [
    ("TOK_REC", "tg-e2e-shapes-rec-41c9"),
    ("TOK_BARE", "tg-e2e-shapes-bare-7a02"),
    ("TOK_NOPOL", "tg-e2e-shapes-nopol-e513"),
    ("TOK_DOWN", "tg-e2e-shapes-down-90bd"),
];

fn token(var: &str) -> &'static str {
    TOKENS
        .iter()
        .find(|(v, _)| *v == var)
        .map(|(_, t)| *t)
        .expect("a token of TOKENS")
}

// The schemas

const SCHEMAS: [(&str, &str); 4] = [
    (
        "2025-03-26",
        include_str!("fixtures/mcp-schema/2025-03-26.json"),
    ),
    (
        "2025-06-18",
        include_str!("fixtures/mcp-schema/2025-06-18.json"),
    ),
    (
        "2025-11-25",
        include_str!("fixtures/mcp-schema/2025-11-25.json"),
    ),
    (
        "2026-07-28",
        include_str!("fixtures/mcp-schema/2026-07-28.json"),
    ),
];

/// One revision's schema excerpt.
struct Schema {
    version: &'static str,
    doc: Value,
}

/// One complaint of a schema: where in the answer, and what.
struct SchemaError {
    at: String,
    what: String,
}

impl Schema {
    fn of(version: &'static str) -> Schema {
        let text = SCHEMAS
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("no schema fixture for {version}"));
        let doc = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("fixtures/mcp-schema/{version}.json is not JSON: {e}"));
        Schema { version, doc }
    }

    /// `definitions` (draft-07) or `$defs` (2020-12), as the revision's file has it.
    fn defs_key(&self) -> &'static str {
        if self.doc.get("$defs").is_some() {
            "$defs"
        } else {
            "definitions"
        }
    }

    fn result_response(&self) -> &'static str {
        if self.version >= STATELESS {
            "JSONRPCResultResponse"
        } else {
            "JSONRPCResponse"
        }
    }

    fn error_response(&self) -> &'static str {
        if self.version >= STATELESS {
            "JSONRPCErrorResponse"
        } else {
            "JSONRPCError"
        }
    }

    /// What definition `def` says about `instance`; empty when it is valid.
    fn check(&self, def: &str, instance: &Value) -> Vec<SchemaError> {
        let key = self.defs_key();
        assert!(
            self.doc[key].get(def).is_some(),
            "fixtures/mcp-schema/{}.json has no definition {def}",
            self.version
        );
        let mut root = self.doc.clone();
        root["$ref"] = json!(format!("#/{key}/{def}"));
        let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| {
            panic!(
                "fixtures/mcp-schema/{}.json does not compile for {def}: {e}",
                self.version
            )
        });
        validator
            .iter_errors(instance)
            .map(|e| SchemaError {
                at: e.instance_path().as_str().to_string(),
                what: e.to_string(),
            })
            .collect()
    }
}

// What each shape must be

#[derive(Clone, Copy)]
enum Expect {
    /// A tool result with `isError: true` and the gateway's decision in `_meta`.
    Denial,
    /// A denial naming its counter and when to retry.
    Limited,
    /// A `tools/list` result without the hidden tool; under 2026-07-28 private, with this TTL.
    FilteredList { ttl_ms: u64 },
    /// A JSON-RPC error with this code.
    Error(i64),
}

/// The findings of one revision's run.
struct Findings {
    schema: Schema,
    failures: Vec<String>,
    notes: Vec<String>,
    codes: Vec<(&'static str, i64)>,
    shapes: Vec<&'static str>,
}

impl Findings {
    fn new(version: &'static str) -> Findings {
        Findings {
            schema: Schema::of(version),
            failures: Vec::new(),
            notes: Vec::new(),
            codes: Vec::new(),
            shapes: Vec::new(),
        }
    }

    fn version(&self) -> &'static str {
        self.schema.version
    }

    fn fail(&mut self, shape: &str, why: String, answer: &Value) {
        self.failures.push(format!(
            "{} / {shape}: {why}\n    answer: {answer}",
            self.version()
        ));
    }

    /// Validates `answer` against `def`; `id_unread` marks the answers to messages whose id
    /// the gateway never read (the one allowance, see the top of the file).
    fn validate(&mut self, shape: &str, def: &str, answer: &Value, id_unread: bool) {
        let errors = self.schema.check(def, answer);
        let (tolerated, errors): (Vec<_>, Vec<_>) = errors.into_iter().partition(|e| {
            id_unread
                && self.version() != "2026-07-28"
                && e.at == "/id"
                && answer.get("id") == Some(&Value::Null)
        });
        for e in errors {
            let at = if e.at.is_empty() { "/" } else { &e.at };
            self.fail(
                shape,
                format!(
                    "not a valid {def} of {}: at {at}: {}",
                    self.version(),
                    e.what
                ),
                answer,
            );
        }
        if !tolerated.is_empty() {
            self.notes.push(format!(
                "{} / {shape}: \"id\": null (the id was never read) is outside the {def} of {}: {}",
                self.version(),
                self.version(),
                tolerated
                    .iter()
                    .map(|e| e.what.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }

    /// Checks one answer the gateway wrote.
    fn shape(&mut self, shape: &'static str, resp: &Resp, expect: Expect, id_unread: bool) {
        self.shapes.push(shape);
        let answer: Value = match serde_json::from_slice::<Value>(&resp.body) {
            Ok(v) if !resp.is_sse() => v,
            _ => {
                let messages = resp.messages();
                match messages.into_iter().rfind(is_response) {
                    Some(v) => v,
                    None => {
                        self.failures.push(format!(
                            "{} / {shape}: no JSON-RPC response in the answer (HTTP {}): {}",
                            self.version(),
                            resp.status,
                            resp.text()
                        ));
                        return;
                    }
                }
            }
        };
        let stateless = self.version() >= STATELESS;
        match expect {
            Expect::Denial | Expect::Limited => {
                let envelope = self.schema.result_response();
                self.validate(shape, envelope, &answer, id_unread);
                self.validate(shape, "CallToolResult", &answer["result"], false);
                let result = &answer["result"];
                if result["isError"] != json!(true) {
                    self.fail(shape, "a denial without isError: true".into(), &answer);
                }
                let decision = &result["_meta"]["toolgate/decision"];
                if decision["outcome"] != json!("deny") || !decision["rule"].is_string() {
                    self.fail(
                        shape,
                        "no toolgate/decision with outcome deny and a rule in _meta".into(),
                        &answer,
                    );
                }
                if matches!(expect, Expect::Limited)
                    && (!decision["counter"].is_string() || !decision["retry_after_s"].is_u64())
                {
                    self.fail(
                        shape,
                        "a rate-limit denial without counter and retry_after_s in its decision"
                            .into(),
                        &answer,
                    );
                }
                if stateless && result["resultType"] != json!("complete") {
                    self.fail(
                        shape,
                        "a 2026-07-28 result without resultType \"complete\"".into(),
                        &answer,
                    );
                }
            }
            Expect::FilteredList { ttl_ms } => {
                let envelope = self.schema.result_response();
                self.validate(shape, envelope, &answer, id_unread);
                self.validate(shape, "ListToolsResult", &answer["result"], false);
                if stateless {
                    self.validate(shape, "ListToolsResultResponse", &answer, id_unread);
                }
                let result = &answer["result"];
                let names: Vec<&str> = result["tools"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
                    .unwrap_or_default();
                if names.contains(&"env") || !names.contains(&"echo") {
                    self.fail(
                        shape,
                        format!("not the list with the hidden tool taken out: {names:?}"),
                        &answer,
                    );
                }
                if stateless {
                    if result["cacheScope"] != json!("private") {
                        self.fail(
                            shape,
                            "a filtered 2026-07-28 list must say cacheScope \"private\"".into(),
                            &answer,
                        );
                    }
                    if result["ttlMs"] != json!(ttl_ms) {
                        self.fail(
                            shape,
                            format!("ttlMs must be the upstream's ({ttl_ms}, 0 when none)"),
                            &answer,
                        );
                    }
                }
            }
            Expect::Error(code) => {
                let envelope = self.schema.error_response();
                self.validate(shape, envelope, &answer, id_unread);
                if code == HEADER_MISMATCH && stateless {
                    self.validate(shape, "HeaderMismatchError", &answer, id_unread);
                }
                match answer["error"]["code"].as_i64() {
                    Some(c) if c == code => {}
                    other => self.fail(
                        shape,
                        format!("error code {other:?}, expected {code}"),
                        &answer,
                    ),
                }
            }
        }
        if let Some(code) = answer["error"]["code"].as_i64() {
            self.codes.push((shape, code));
            if !code_is_ours_to_write(code, shape) {
                self.fail(
                    shape,
                    format!(
                        "error code {code} is neither a standard JSON-RPC code, nor one of ours \
                         (-32000..-32019), nor -32020 for a header mismatch"
                    ),
                    &answer,
                );
            }
        }
    }
}

const HEADER_MISMATCH: i64 = -32020;
const HEADER_MISMATCH_SHAPE: &str = "header mismatch";

/// Standard JSON-RPC codes, the implementation range MCP leaves to servers (-32000..-32019),
/// and the spec's -32020 for the one case it is defined for.
fn code_is_ours_to_write(code: i64, shape: &str) -> bool {
    matches!(code, -32700 | -32603..=-32600 | -32019..=-32000)
        || (code == HEADER_MISMATCH && shape == HEADER_MISMATCH_SHAPE)
}

// An agent of one revision

struct Agent<'g> {
    gw: &'g Gateway,
    version: &'static str,
    server: &'static str,
    token: &'static str,
    session: Option<String>,
    next_id: Cell<u64>,
}

impl<'g> Agent<'g> {
    fn new(
        gw: &'g Gateway,
        version: &'static str,
        server: &'static str,
        token: &'static str,
    ) -> Agent<'g> {
        Agent {
            gw,
            version,
            server,
            token,
            session: None,
            next_id: Cell::new(1),
        }
    }

    fn stateless(&self) -> bool {
        self.version >= STATELESS
    }

    fn id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Opens a session at this revision (nothing under 2026-07-28); the initialize answer
    /// when it did not open one.
    fn connect(mut self) -> Result<Agent<'g>, Box<Resp>> {
        if self.stateless() {
            return Ok(self);
        }
        let body = json!({"jsonrpc": "2.0", "id": self.id(), "method": "initialize",
            "params": {"protocolVersion": self.version, "capabilities": {},
                       "clientInfo": {"name": "toolgate-e2e-shapes", "version": "0.1.0"}}});
        let r = self
            .gw
            .post(self.server)
            .token(self.token)
            .json(&body)
            .send();
        let Some(id) = r.header("mcp-session-id") else {
            return Err(Box::new(r));
        };
        self.session = Some(id);
        let r = self
            .post(None, None)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send();
        assert_eq!(
            r.status,
            202,
            "{}: notifications/initialized: {}",
            self.version,
            r.text()
        );
        Ok(self)
    }

    /// A POST with this agent's token, session and protocol headers.
    fn post(&self, method: Option<&str>, name: Option<&str>) -> Req {
        let mut req = self.gw.post(self.server).token(self.token);
        if let Some(s) = &self.session {
            req = req.session(s);
        }
        // 2025-03-26 predates the header; later clients send it on every request.
        if self.version != "2025-03-26" {
            req = req.header("mcp-protocol-version", self.version);
        }
        if self.stateless() {
            if let Some(m) = method {
                req = req.header("mcp-method", m);
            }
            if let Some(n) = name {
                req = req.header("mcp-name", n);
            }
        }
        req
    }

    /// A request body; under 2026-07-28 with the per-request `_meta` the revision requires.
    fn body(&self, method: &str, params: Value) -> Value {
        let mut params = params;
        if self.stateless() {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": self.version,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "toolgate-e2e-shapes", "version": "0.1.0"},
            });
        }
        json!({"jsonrpc": "2.0", "id": self.id(), "method": method, "params": params})
    }

    fn request(&self, method: &str, params: Value) -> Resp {
        let name = params["name"].as_str().map(str::to_string);
        let body = self.body(method, params);
        self.post(Some(method), name.as_deref()).json(&body).send()
    }

    fn call(&self, tool: &str, arguments: Value) -> Resp {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
    }
}

// The gateway

struct Setup {
    gw: Gateway,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rec.json"), REC_POLICY).expect("write policy");
    std::fs::write(dir.path().join("bare.json"), BARE_POLICY).expect("write policy");
    let ttl = UPSTREAM_TTL_MS.to_string();
    let typed = ("RECORDER_RESULT_TYPE", "1");
    // Nothing listens there: the port is bound once and let go.
    let down = format!("http://127.0.0.1:{}/mcp", free_port());
    let toml = format!(
        "request_timeout_secs = {TIMEOUT_SECS}\n{}{}{}{}{}{}{}{}",
        recorder_server_toml_with(
            "rec",
            &dir.path().join("rec.jsonl"),
            &[
                ("RECORDER_EXTRA_TOOLS", "unnamed"),
                typed,
                ("RECORDER_LIST_TTL_MS", &ttl),
            ],
            Some("rec.json"),
        ),
        recorder_server_toml_with(
            "bare",
            &dir.path().join("bare.jsonl"),
            &[typed],
            Some("bare.json"),
        ),
        recorder_server_toml_with("nopol", &dir.path().join("nopol.jsonl"), &[typed], None),
        http_server_toml("down", &down, RECORDER_TOOLS, ""),
        grant_toml("rec", "rec", "TOK_REC"),
        grant_toml("bare", "bare", "TOK_BARE"),
        grant_toml("nopol", "nopol", "TOK_NOPOL"),
        grant_toml("down", "down", "TOK_DOWN"),
    );
    let gw = Gateway::start_in(dir, &toml, &TOKENS);
    Setup { gw }
}

/// Provokes every shape the gateway writes itself under `version` and checks each.
fn run(version: &'static str) {
    let started = Instant::now();
    let s = setup();
    let gw = &s.gw;
    let mut f = Findings::new(version);
    let stateless = version >= STATELESS;
    let agent = |server, var| {
        Agent::new(gw, version, server, token(var))
            .connect()
            .unwrap_or_else(|r| panic!("{version}: no session on {server}: {}", r.text()))
    };
    let rec = agent("rec", "TOK_REC");
    let bare = agent("bare", "TOK_BARE");
    let nopol = agent("nopol", "TOK_NOPOL");

    // Policy answers.
    let r = rec.call("echo", json!({"message": "forbidden"}));
    f.shape("denial by rule", &r, Expect::Denial, false);
    let r = rec.call("unnamed", json!({}));
    f.shape("default-deny denial", &r, Expect::Denial, false);
    let r = nopol.call("echo", json!({"message": "no policy"}));
    f.shape("no-policy denial", &r, Expect::Denial, false);
    let first = rec.call("pid", json!({}));
    assert!(
        first.response().get("result").is_some(),
        "{version}: the first pid call must reach the upstream: {}",
        first.text()
    );
    let r = rec.call("pid", json!({}));
    f.shape("rate-limit denial", &r, Expect::Limited, false);
    let r = rec.call("env", json!({}));
    f.shape("hidden tool", &r, Expect::Error(-32602), false);
    let r = rec.call("no_such_tool", json!({}));
    f.shape(
        "unknown tool (default deny)",
        &r,
        Expect::Error(-32602),
        false,
    );
    let r = bare.call("ghost", json!({}));
    f.shape(
        "unknown tool (default allow)",
        &r,
        Expect::Error(-32602),
        false,
    );
    let r = rec.request("tools/call", json!({"name": "echo", "arguments": [1, 2]}));
    f.shape("invalid params", &r, Expect::Error(-32602), false);

    // Lists the gateway rewrites.
    let r = rec.request("tools/list", json!({}));
    let ttl_ms = UPSTREAM_TTL_MS;
    f.shape(
        "filtered tools/list",
        &r,
        Expect::FilteredList { ttl_ms },
        false,
    );
    let r = bare.request("tools/list", json!({}));
    let ttl_ms = 0;
    f.shape(
        "filtered tools/list, no upstream TTL",
        &r,
        Expect::FilteredList { ttl_ms },
        false,
    );

    // Transport refusals.
    let body = rec.body("tools/call", json!({"name": "echo", "arguments": {}}));
    let r = rec
        .post(Some("tools/call"), Some("echo"))
        .header("mcp-name", "pid")
        .json(&body)
        .send();
    f.shape(
        HEADER_MISMATCH_SHAPE,
        &r,
        Expect::Error(HEADER_MISMATCH),
        false,
    );
    let batch = json!([
        rec.body("tools/call", json!({"name": "echo", "arguments": {}})),
        rec.body("tools/call", json!({"name": "pid", "arguments": {}})),
    ]);
    let r = rec.post(Some("tools/call"), None).json(&batch).send();
    f.shape("batch refusal", &r, Expect::Error(-32600), true);
    let r = rec
        .post(Some("tools/call"), Some("echo"))
        .body(r#"{"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": "#)
        .send();
    f.shape("malformed JSON", &r, Expect::Error(-32700), true);
    let body = rec.body("tools/call", json!({"name": "echo", "arguments": {}}));
    let r = rec
        .post(Some("tools/call"), Some("echo"))
        .without_header("authorization")
        .json(&body)
        .send();
    f.shape("no token", &r, Expect::Error(-32600), true);
    let r = rec
        .post(Some("tools/call"), Some("echo"))
        .token(token("TOK_BARE"))
        .json(&body)
        .send();
    f.shape("another server's token", &r, Expect::Error(-32600), true);
    if !stateless {
        let r = rec
            .post(Some("tools/call"), Some("echo"))
            .session("no-such-session")
            .json(&body)
            .send();
        f.shape("unknown session", &r, Expect::Error(-32600), false);
    }

    // Upstream failures.
    let r = rec.call("slow", json!({"seconds": TIMEOUT_SECS + 2}));
    f.shape("upstream timeout", &r, Expect::Error(-32001), false);
    let unreachable = Agent::new(gw, version, "down", token("TOK_DOWN"));
    let r = if stateless {
        unreachable.call("echo", json!({"message": "nobody there"}))
    } else {
        // No session can be opened: the initialize itself gets the gateway's error.
        match unreachable.connect() {
            Ok(_) => panic!("{version}: a session was opened on a server nobody listens for"),
            Err(r) => *r,
        }
    };
    f.shape("upstream unreachable", &r, Expect::Error(-32603), false);
    let r = rec.call("exit", json!({}));
    f.shape("upstream exited mid-call", &r, Expect::Error(-32603), false);

    // The refused calls never reached an upstream: every answer above but the upstream
    // failures is the gateway's own, not a relayed one that happens to look the same.
    for (server, reached) in [
        ("rec", &["pid", "slow", "exit"][..]),
        ("bare", &[]),
        ("nopol", &[]),
    ] {
        let record = recorded(&gw.dir.path().join(format!("{server}.jsonl")));
        let calls: Vec<&str> = record
            .iter()
            .filter(|m| m["method"] == "tools/call")
            .filter_map(|m| m["params"]["name"].as_str())
            .collect();
        assert!(
            calls.iter().all(|c| reached.contains(c)),
            "{version}: tools/call reached {server} for {calls:?}; only {reached:?} may"
        );
    }

    eprintln!(
        "{version}: {} shapes checked in {:.1} s; error codes {:?}",
        f.shapes.len(),
        started.elapsed().as_secs_f64(),
        f.codes
    );
    for note in &f.notes {
        eprintln!("note: {note}");
    }
    assert!(
        f.failures.is_empty(),
        "{} of the gateway's own answers do not fit the {version} schema:\n{}",
        f.failures.len(),
        f.failures.join("\n")
    );
}

#[test]
fn shapes_under_2025_03_26() {
    run(VERSIONS[0]);
}

#[test]
fn shapes_under_2025_06_18() {
    run(VERSIONS[1]);
}

#[test]
fn shapes_under_2025_11_25() {
    run(VERSIONS[2]);
}

#[test]
fn shapes_under_2026_07_28() {
    run(VERSIONS[3]);
}

/// The excerpts compile, and they do reject what the gateway must not write: a check that
/// passed everything would pass every drifted shape too.
#[test]
fn the_schemas_reject_drifted_shapes() {
    let denial = json!({"jsonrpc": "2.0", "id": 7, "result": {"isError": true,
        "content": [{"type": "text", "text": "[POLICY DENIED] no"}],
        "_meta": {"toolgate/decision": {"outcome": "deny", "rule": "(default deny)", "policy_version": 1}}}});
    let mut typed = denial.clone();
    typed["result"]["resultType"] = json!("complete");
    let error =
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "Unknown tool: x"}});
    let list = json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]});
    for version in VERSIONS {
        let s = Schema::of(version);
        let valid = |def: &str, v: &Value| s.check(def, v).is_empty();
        let stateless = version >= STATELESS;
        assert!(
            valid(s.result_response(), &typed),
            "{version}: typed denial"
        );
        assert_eq!(
            valid(s.result_response(), &denial),
            !stateless,
            "{version}: a denial without resultType"
        );
        assert!(valid(s.error_response(), &error), "{version}: error");
        let mut bad = error.clone();
        bad["error"]["code"] = json!("-32602");
        assert!(!valid(s.error_response(), &bad), "{version}: string code");
        let mut bad = error.clone();
        bad["jsonrpc"] = json!("1.0");
        assert!(!valid(s.error_response(), &bad), "{version}: jsonrpc 1.0");
        let mut bad = typed["result"].clone();
        bad["content"] = json!([{"type": "text"}]);
        assert!(
            !valid("CallToolResult", &bad),
            "{version}: text without text"
        );
        let mut cached = list.clone();
        cached["resultType"] = json!("complete");
        cached["ttlMs"] = json!(0);
        cached["cacheScope"] = json!("private");
        assert!(valid("ListToolsResult", &cached), "{version}: cached list");
        assert_eq!(
            valid("ListToolsResult", &list),
            !stateless,
            "{version}: a list without ttlMs/cacheScope/resultType"
        );
        let mut bad = cached.clone();
        bad["cacheScope"] = json!("shared");
        assert_eq!(
            valid("ListToolsResult", &bad),
            !stateless,
            "{version}: an unknown cacheScope"
        );
        if stateless {
            let mismatch = json!({"jsonrpc": "2.0", "id": 7,
                                  "error": {"code": -32020, "message": "Bad Request"}});
            assert!(
                valid("HeaderMismatchError", &mismatch),
                "{version}: mismatch"
            );
            let mut bad = mismatch.clone();
            bad["error"]["code"] = json!(-32600);
            assert!(!valid("HeaderMismatchError", &bad), "{version}: -32600");
            let mut no_id = error.clone();
            no_id.as_object_mut().expect("object").remove("id");
            assert!(valid(s.error_response(), &no_id), "{version}: id left out");
        }
    }
    for (code, shape, ok) in [
        (-32700, "x", true),
        (-32603, "x", true),
        (-32001, "x", true),
        (-32019, "x", true),
        (-32020, HEADER_MISMATCH_SHAPE, true),
        (-32020, "x", false),
        (-32042, "x", false),
        (-32099, "x", false),
        (-32604, "x", false),
        (1, "x", false),
    ] {
        assert_eq!(code_is_ours_to_write(code, shape), ok, "{code} for {shape}");
    }
}
