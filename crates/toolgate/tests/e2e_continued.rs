//! Calls that span several requests, through the real gateway (issue 25 points 4 and 5):
//!
//! - Multi round-trip requests (stateless 2026-07-28): an `input_required` result reaches the
//!   agent byte for byte as the server wrote it; the call is counted once, by its first round,
//!   and the retry with `inputResponses` and the `requestState` carries that count on (a limit
//!   of one a minute lets the call and its retry through, and refuses the next call, retried
//!   or not). A retry is decided again: another grant's retry on that state, a made-up state,
//!   the state on another tool, a state used once already are refused with -32602, and a
//!   retry whose arguments hit a `deny_if` is denied by the rule.
//! - Tasks (2025-11-25 sessions, and the 2026-07-28 `resultType: "task"` form): another
//!   grant's `tasks/get`, `tasks/result` and `tasks/cancel` on a task get -32602 `unknown
//!   taskId`, `tasks/list` shows each grant only its own tasks, and a task's outcome settles
//!   its call's limit: failed, cancelled, or a JSON-RPC error from `tasks/result` give it back
//!   (the next job starts at once), completed keeps it (the next job is rate-limited).
//!
//! The server is `fixtures/servers/continued_server.py`. It keeps its request states and tasks
//! in one file shared by all its processes (the gateway starts a stdio child per session, or
//! per grant when stateless), so it would answer another grant's request on them: a refusal
//! seen here is the gateway's. It writes down every message it receives and every answer it
//! writes, so each refusal is also proven from its side (nothing new in its record).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Gateway, Resp, Spawned, poll_until, python, repo_root, summary, toml_str};
use serde_json::value::RawValue;
use serde_json::{Value, json};

const TOKEN_A: &str = "tg-e2e-continued-a-71c2e9";
const TOKEN_B: &str = "tg-e2e-continued-b-0d58f3";
const SERVER: &str = "cont";
const STATELESS: &str = "2026-07-28";
const SESSIONS: &str = "2025-11-25";

/// Each grant's policy (one file each, the same text): default deny; `ask` and `job` one call
/// a minute per grant, `ask` denied on a question containing "forbidden"; `echo` allowed.
const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "ask": {
      "deny_if": [{"conditions": [{"path": "args.question", "op": "contains", "value": "forbidden"}],
                   "on_deny": "That question is forbidden."}],
      "limits": [{"counter": "asks", "window": "minute", "max": 1, "scope": "grant"}]
    },
    "job": {
      "limits": [{"counter": "jobs", "window": "minute", "max": 1, "scope": "grant"}]
    },
    "echo": {}
  }
}"#;

const UNKNOWN_TASK: &str = "Invalid params: unknown taskId";
const UNBOUND_STATE: &str =
    "Invalid params: requestState was not issued to this grant for this tool";

#[derive(Clone, Copy, Debug)]
enum Transport {
    Stdio,
    Http,
}

/// A gateway with grants `a` and `b` on the server `cont`, each with its own policy file.
struct Setup {
    gw: Gateway,
    record: PathBuf,
    answers: PathBuf,
    // Dropped after the gateway (fields drop in order): the HTTP server, when there is one.
    _http: Option<Spawned>,
}

fn server_py() -> PathBuf {
    let p = repo_root().join("fixtures/servers/continued_server.py");
    assert!(
        p.exists(),
        "fixtures/servers/continued_server.py is missing"
    );
    p
}

fn setup(transport: Transport) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("record.jsonl");
    let answers = dir.path().join("answers.jsonl");
    let state = dir.path().join("server-state.json");
    for file in ["a.json", "b.json"] {
        std::fs::write(dir.path().join(file), POLICY).expect("write policy");
    }
    let files = [
        ("RECORD_FILE", &record),
        ("ANSWER_FILE", &answers),
        ("STATE_FILE", &state),
    ];
    let (server, http) = match transport {
        Transport::Stdio => {
            let env: Vec<String> = files
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(&v.display().to_string())))
                .collect();
            let toml = format!(
                "[servers.{SERVER}]\ncommand = {}\nargs = [{}]\nenv = {{ {} }}\n\n",
                toml_str(python()),
                toml_str(&server_py().display().to_string()),
                env.join(", ")
            );
            (toml, None)
        }
        Transport::Http => {
            let (process, port) = common::start_python_http(python(), &server_py(), files);
            let url = format!("http://127.0.0.1:{port}/mcp");
            (
                format!("[servers.{SERVER}]\nurl = {}\n\n", toml_str(&url)),
                Some(process),
            )
        }
    };
    let toml = format!(
        "{server}[grants.a]\nserver = \"{SERVER}\"\ntoken_env = \"TOKEN_A\"\npolicy = \"a.json\"\n\n\
         [grants.b]\nserver = \"{SERVER}\"\ntoken_env = \"TOKEN_B\"\npolicy = \"b.json\"\n\n"
    );
    let gw = Gateway::start_in(dir, &toml, &[("TOKEN_A", TOKEN_A), ("TOKEN_B", TOKEN_B)]);
    Setup {
        gw,
        record,
        answers,
        _http: http,
    }
}

impl Setup {
    /// What reached the server so far, one line per message (`common::summary_line`), without
    /// the bodiless HTTP requests (GET streams, DELETE).
    fn record(&self) -> Vec<String> {
        summary(&self.record)
            .into_iter()
            .filter(|l| !l.starts_with("http "))
            .collect()
    }

    /// Every message the server received, whole (the bodies of HTTP requests).
    fn received(&self) -> Vec<Value> {
        common::recorded(&self.record)
            .into_iter()
            .filter_map(|e| match e.get("http") {
                Some(_) => serde_json::from_str(e["body"].as_str().unwrap_or("")).ok(),
                None => Some(e),
            })
            .collect()
    }

    /// The answers the server wrote, each exactly as written.
    fn answers_written(&self) -> Vec<String> {
        std::fs::read_to_string(&self.answers)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A stateless (2026-07-28) request of `token`: no session; the version, method and name
    /// in headers and the version and client capabilities in `params._meta`.
    fn stateless(&self, token: &str, id: u64, method: &str, mut params: Value) -> Resp {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
            "io.modelcontextprotocol/clientInfo": {"name": "e2e-continued", "version": "1"},
        });
        let mut req = self
            .gw
            .post(SERVER)
            .token(token)
            .header("mcp-protocol-version", STATELESS)
            .header("mcp-method", method);
        if method == "tools/call" {
            let name = params["name"].as_str().expect("a tool name").to_string();
            req = req.header("mcp-name", &name);
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let r = req.json(&body).send();
        assert_eq!(r.status, 200, "stateless {method}: {}", r.text());
        assert_eq!(r.response()["id"], json!(id), "{method}: {}", r.text());
        r
    }
}

/// An agent session under 2025-11-25, opened by hand.
struct Session<'g> {
    gw: &'g Gateway,
    token: &'static str,
    id: String,
    next: std::cell::Cell<u64>,
}

impl<'g> Session<'g> {
    fn open(gw: &'g Gateway, token: &'static str) -> Session<'g> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": SESSIONS,
            "capabilities": {"tasks": {"list": {}, "cancel": {}}},
            "clientInfo": {"name": "e2e-continued", "version": "1"}}});
        let r = gw.post(SERVER).token(token).json(&init).send();
        assert_eq!(r.status, 200, "initialize: {}", r.text());
        assert_eq!(
            r.response()["result"]["protocolVersion"],
            SESSIONS,
            "initialize: {}",
            r.text()
        );
        let id = r.header("mcp-session-id").expect("a session id");
        let s = Session {
            gw,
            token,
            id,
            next: std::cell::Cell::new(100),
        };
        let r = s
            .post()
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send();
        assert_eq!(r.status, 202, "notifications/initialized: {}", r.text());
        s
    }

    fn post(&self) -> common::Req {
        self.gw
            .post(SERVER)
            .token(self.token)
            .session(&self.id)
            .header("mcp-protocol-version", SESSIONS)
    }

    /// A request and its JSON-RPC response (HTTP 200, the same id).
    fn request(&self, method: &str, params: Value) -> Value {
        let id = self.next.get();
        self.next.set(id + 1);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let r = self.post().json(&body).send();
        assert_eq!(r.status, 200, "{method} {params}: {}", r.text());
        let resp = r.response();
        assert_eq!(resp["id"], json!(id), "{method}: answer to another id");
        resp
    }

    /// `job` as a task: the answer.
    fn job(&self, arguments: Value) -> Value {
        self.request(
            "tools/call",
            json!({"name": "job", "arguments": arguments, "task": {"ttl": 60000}}),
        )
    }

    /// `job` as a task that must be created: its task id.
    fn new_job(&self, arguments: Value, case: &str) -> String {
        let resp = self.job(arguments);
        let task = &resp["result"]["task"];
        assert_eq!(
            task["status"], "working",
            "{case}: a task is created: {resp}"
        );
        task["taskId"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no taskId: {resp}"))
            .to_string()
    }

    fn task_request(&self, method: &str, task: &str) -> Value {
        self.request(method, json!({"taskId": task}))
    }

    /// `tasks/get` until the task is no longer working (10 s at most): its final status.
    fn wait_for_end(&self, task: &str) -> String {
        let mut status = String::new();
        let ended = poll_until(Duration::from_secs(10), || {
            let resp = self.task_request("tasks/get", task);
            status = resp["result"]["status"].as_str().unwrap_or("").to_string();
            assert!(!status.is_empty(), "tasks/get {task}: {resp}");
            status != "working"
        });
        assert!(ended, "task {task} still working after 10 s");
        status
    }
}

/// The members of a JSON object, each as its raw text, in order of appearance.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

fn raw_members(text: &str) -> Vec<(String, String)> {
    let members: Members =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"));
    members
        .0
        .into_iter()
        .map(|(k, v)| (k, v.get().to_string()))
        .collect()
}

/// Asserts a JSON-RPC error with `code` and exactly `message`.
fn assert_rpc_error(resp: &Value, code: i64, message: &str, case: &str) {
    assert_eq!(
        resp["error"],
        json!({"code": code, "message": message}),
        "{case}: {resp}"
    );
}

/// Asserts a denial by the gateway naming `rule` (and `counter`, for a rate limit).
fn assert_denied(resp: &Value, rule: &str, counter: Option<&str>, case: &str) {
    let result = &resp["result"];
    assert_eq!(result["isError"], json!(true), "{case}: {resp}");
    let decision = &result["_meta"]["toolgate/decision"];
    assert_eq!(decision["outcome"], "deny", "{case}: {resp}");
    assert_eq!(decision["rule"], rule, "{case}: {resp}");
    match counter {
        Some(c) => {
            assert_eq!(decision["counter"], c, "{case}: {resp}");
            assert!(
                decision["retry_after_s"].as_u64().is_some_and(|s| s > 30),
                "{case}: a retry about a minute away: {resp}"
            );
        }
        None => assert!(decision.get("counter").is_none(), "{case}: {resp}"),
    }
}

fn assert_rate_limited(resp: &Value, tool: &str, counter: &str, case: &str) {
    let rule = format!("/tools/{tool}/limits/{counter}");
    assert_denied(resp, &rule, Some(counter), case);
}

/// Asserts the server received nothing since `before` was read.
fn assert_nothing_reached(s: &Setup, before: &[String], case: &str) {
    let now = s.record();
    assert_eq!(
        now,
        before,
        "{case}: the server received something: {:#?}",
        &now[before.len().min(now.len())..]
    );
}

fn json_of(r: &Resp) -> Value {
    r.response()
}

// Multi round-trip requests --------------------------------------------------------------

fn multi_round_trip(transport: Transport) {
    let s = setup(transport);
    let question = "Which colour \u{2014} caf\u{e9} or cr\u{e8}me?";
    let ask = |token, id, args: Value, more: Value| {
        let mut params = json!({"name": "ask", "arguments": args});
        if let Value::Object(m) = more {
            params.as_object_mut().unwrap().extend(m);
        }
        s.stateless(token, id, "tools/call", params)
    };
    let responses = json!({"q1": {"action": "accept", "content": {"answer": "cr\u{e8}me"}}});

    // A asks: the server's input_required answer reaches A byte for byte.
    let r = ask(TOKEN_A, 7, json!({"question": question}), json!({}));
    let got = r.response_text();
    let resp: Value = serde_json::from_str(&got).expect("JSON");
    let result = &resp["result"];
    assert_eq!(result["resultType"], "input_required", "{got}");
    assert_eq!(
        result["inputRequests"]["q1"]["params"]["message"], question,
        "{got}"
    );
    let state = result["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestState: {got}"))
        .to_string();
    let written: Vec<String> = s
        .answers_written()
        .into_iter()
        .filter(|a| a.contains(&state))
        .collect();
    assert_eq!(written.len(), 1, "the server's answer with {state}");
    let server_wrote = raw_members(&written[0]);
    let agent_got = raw_members(&got);
    let names = |m: &[(String, String)]| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&agent_got), names(&server_wrote), "members, in order");
    for ((k, server), (_, agent)) in server_wrote.iter().zip(&agent_got) {
        if k == "id" {
            assert_eq!(agent, "7", "the agent's own id comes back");
        } else {
            assert_eq!(
                agent, server,
                "`{k}` of the input_required answer is not byte for byte the server's"
            );
        }
    }
    // Whole: the server's bytes with only the id put back to the agent's (stdio upstreams see
    // ids of the gateway's).
    let upstream_id = &server_wrote.iter().find(|(k, _)| k == "id").expect("id").1;
    let expected = written[0].replacen(&format!(r#""id": {upstream_id}"#), r#""id": 7"#, 1);
    assert_eq!(got, expected, "the input_required answer, byte for byte");
    // The server writes it with spaces and \u escapes, as no re-serializer would.
    assert!(
        got.contains(r#""resultType": "input_required""#) && got.contains(r"caf\u00e9"),
        "the input_required answer was written again, not relayed: {got}"
    );
    let after_ask = s.record();
    assert_eq!(
        after_ask.last().map(String::as_str),
        Some(r#"call "ask""#),
        "A's ask reached the server: {after_ask:#?}"
    );

    // B resumes A's call with A's state: refused, and the server never sees it.
    let r = ask(
        TOKEN_B,
        8,
        json!({"question": question}),
        json!({"inputResponses": responses, "requestState": state}),
    );
    assert_rpc_error(
        &json_of(&r),
        -32602,
        UNBOUND_STATE,
        "B retries on A's state",
    );
    assert_nothing_reached(&s, &after_ask, "B retries on A's state");
    assert!(
        !s.received()
            .iter()
            .any(|m| m["params"]["requestState"] == json!(state)),
        "a retry on A's state reached the server"
    );

    // A retries on a state nobody issued: refused.
    let r = ask(
        TOKEN_A,
        9,
        json!({"question": question}),
        json!({"inputResponses": responses, "requestState": "rs-made-up-by-the-agent"}),
    );
    assert_rpc_error(&json_of(&r), -32602, UNBOUND_STATE, "a made-up state");
    assert_nothing_reached(&s, &after_ask, "a made-up state");

    // A carries its `ask` state over to another tool: refused (states bind to their tool).
    let r = s.stateless(
        TOKEN_A,
        10,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "hi"},
               "inputResponses": responses, "requestState": state}),
    );
    assert_rpc_error(&json_of(&r), -32602, UNBOUND_STATE, "A's state on echo");
    assert_nothing_reached(&s, &after_ask, "A's state on echo");

    // The retry is decided again: arguments that now hit the deny_if are denied by the rule,
    // valid state or not.
    let r = ask(
        TOKEN_A,
        11,
        json!({"question": "a forbidden question"}),
        json!({"inputResponses": responses, "requestState": state}),
    );
    let resp = json_of(&r);
    assert_denied(
        &resp,
        "/tools/ask/deny_if/0",
        None,
        "a retry hitting deny_if",
    );
    assert_eq!(
        resp["result"]["content"][0]["text"], "[POLICY DENIED] That question is forbidden.",
        "{resp}"
    );
    assert_nothing_reached(&s, &after_ask, "a retry hitting deny_if");

    // A's own retry completes the call. It carries on the count of the call's first round, so
    // it fits in the limit of one.
    let r = ask(
        TOKEN_A,
        12,
        json!({"question": question}),
        json!({"inputResponses": responses, "requestState": state}),
    );
    let resp = json_of(&r);
    assert_eq!(
        resp["result"],
        json!({"resultType": "complete", "content": [{"type": "text",
               "text": format!("answered: {question} -> cr\u{e8}me")}]}),
        "A's retry completes the call: {resp}"
    );
    let mut expected = after_ask.clone();
    expected.push(r#"call "ask""#.into());
    assert_eq!(
        s.record(),
        expected,
        "only A's good retry reached the server"
    );

    // A state resumes once.
    let r = ask(
        TOKEN_A,
        15,
        json!({"question": question}),
        json!({"inputResponses": responses, "requestState": state}),
    );
    assert_rpc_error(&json_of(&r), -32602, UNBOUND_STATE, "a state used up");
    assert_eq!(
        s.record(),
        expected,
        "the used-up state never reached the server"
    );

    // The logical call was counted once: A's next call is refused.
    let r = ask(TOKEN_A, 13, json!({"question": "another one?"}), json!({}));
    assert_rate_limited(&json_of(&r), "ask", "asks", "A's second logical ask");
    assert_eq!(
        s.record(),
        expected,
        "the rate-limited ask never reached the server"
    );

    // B's refused retry took none of B's quota: B's own call goes on.
    let r = ask(TOKEN_B, 14, json!({"question": "B's own?"}), json!({}));
    assert_eq!(
        json_of(&r)["result"]["resultType"],
        "input_required",
        "{}",
        r.text()
    );
    // An unfinished call counts too: a grant cannot ask again and again without retrying.
    let r = ask(TOKEN_B, 16, json!({"question": "B again?"}), json!({}));
    assert_rate_limited(&json_of(&r), "ask", "asks", "B's second ask, never retried");
}

#[test]
fn multi_round_trip_retries_are_bound_decided_again_and_counted_once_stdio() {
    multi_round_trip(Transport::Stdio);
}

#[test]
fn multi_round_trip_retries_are_bound_decided_again_and_counted_once_http() {
    multi_round_trip(Transport::Http);
}

// Tasks ---------------------------------------------------------------------------------------

fn task_ids(list: &Value) -> Vec<String> {
    list["result"]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("not a task list: {list}"))
        .iter()
        .map(|t| t["taskId"].as_str().expect("taskId").to_string())
        .collect()
}

fn tasks_belong_to_their_grant(transport: Transport) {
    let s = setup(transport);
    let a = Session::open(&s.gw, TOKEN_A);
    let b = Session::open(&s.gw, TOKEN_B);
    let mine = a.new_job(json!({"seconds": 0.5}), "A's job");
    // The task holds A's count: no second job while it runs.
    assert_rate_limited(
        &a.job(json!({"seconds": 0.5})),
        "job",
        "jobs",
        "A's second job while the first runs",
    );

    let before = s.record();
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let case = format!("B's {method} on A's task");
        assert_rpc_error(&b.task_request(method, &mine), -32602, UNKNOWN_TASK, &case);
        assert_nothing_reached(&s, &before, &case);
    }
    assert!(
        !s.received().iter().any(|m| m["method"]
            .as_str()
            .is_some_and(|m| m.starts_with("tasks/"))),
        "a task request of B reached the server"
    );

    // Each grant lists only its own tasks (the server lists every task to everyone).
    let theirs = b.new_job(json!({"seconds": 30}), "B's job");
    assert_eq!(
        task_ids(&b.request("tasks/list", json!({}))),
        [theirs.as_str()]
    );
    assert_eq!(
        task_ids(&a.request("tasks/list", json!({}))),
        [mine.as_str()]
    );
    let lists = s.record().iter().filter(|l| *l == "tasks/list").count();
    assert_eq!(lists, 2, "both lists came from the server");

    // A's own task answers A.
    assert_eq!(a.wait_for_end(&mine), "completed");
    let resp = a.task_request("tasks/result", &mine);
    assert_eq!(
        resp["result"]["content"][0]["text"], "job done after 0.5 s",
        "{resp}"
    );
    // B's task is B's: A cannot cancel it, B can.
    assert_rpc_error(
        &a.task_request("tasks/cancel", &theirs),
        -32602,
        UNKNOWN_TASK,
        "A's cancel of B's task",
    );
    assert_eq!(
        b.task_request("tasks/cancel", &theirs)["result"]["status"],
        "cancelled"
    );

    let mut expected = vec![
        "initialize".to_string(),
        "notifications/initialized".into(),
        "initialize".into(),
        "notifications/initialized".into(),
        r#"call "job""#.into(),
        r#"call "job""#.into(),
        "tasks/list".into(),
        "tasks/list".into(),
    ];
    let got = s.record();
    // Then A's tasks/get polls (one or more), A's tasks/result, B's tasks/cancel.
    let polls = got.len().saturating_sub(expected.len() + 2);
    assert!(polls >= 1, "A polled its task: {got:#?}");
    expected.extend(std::iter::repeat_n("tasks/get".to_string(), polls));
    expected.push("tasks/result".into());
    expected.push("tasks/cancel".into());
    assert_eq!(got, expected, "what reached the server");
    let cancels: Vec<Value> = s
        .received()
        .into_iter()
        .filter(|m| m["method"] == "tasks/cancel")
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(
        cancels[0]["params"]["taskId"],
        json!(theirs),
        "B's own cancel"
    );
}

#[test]
fn tasks_are_relayed_only_for_the_grant_that_created_them_stdio() {
    tasks_belong_to_their_grant(Transport::Stdio);
}

#[test]
fn tasks_are_relayed_only_for_the_grant_that_created_them_http() {
    tasks_belong_to_their_grant(Transport::Http);
}

fn task_outcomes_settle_limits(transport: Transport) {
    let s = setup(transport);
    let a = Session::open(&s.gw, TOKEN_A);
    let limited = |case: &str| assert_rate_limited(&a.job(json!({})), "job", "jobs", case);

    // Failed, as tasks/get reports it: the count comes back.
    let t1 = a.new_job(json!({"seconds": 0.3, "fail": true}), "a job that fails");
    limited("while the failing job runs");
    assert_eq!(a.wait_for_end(&t1), "failed");
    // Cancelled: the count comes back.
    let t2 = a.new_job(json!({"seconds": 30}), "the job right after a failed one");
    limited("while the long job runs");
    let resp = a.task_request("tasks/cancel", &t2);
    assert_eq!(resp["result"]["status"], "cancelled", "{resp}");
    // A JSON-RPC error from tasks/result: the count comes back.
    let t3 = a.new_job(
        json!({"seconds": 0.3, "fail": true}),
        "the job right after a cancelled one",
    );
    let resp = a.task_request("tasks/result", &t3);
    assert_rpc_error(&resp, -32603, "job failed", "tasks/result of a failed job");
    // Completed: the count stays.
    let t4 = a.new_job(
        json!({"seconds": 0.3}),
        "the job right after tasks/result failed",
    );
    let resp = a.task_request("tasks/result", &t4);
    assert_eq!(
        resp["result"]["content"][0]["text"], "job done after 0.3 s",
        "{resp}"
    );
    assert_eq!(a.wait_for_end(&t4), "completed");
    limited("the job after a completed one");
    let calls = s.record().iter().filter(|l| *l == r#"call "job""#).count();
    assert_eq!(
        calls, 4,
        "the four admitted jobs reached the server, no more"
    );
}

#[test]
fn a_tasks_outcome_settles_its_limit_stdio() {
    task_outcomes_settle_limits(Transport::Stdio);
}

#[test]
fn a_tasks_outcome_settles_its_limit_http() {
    task_outcomes_settle_limits(Transport::Http);
}

/// The 2026-07-28 form: `resultType: "task"` with `taskId`, stateless requests.
#[test]
fn stateless_tasks_belong_to_their_grant_and_settle_their_limit_stdio() {
    let s = setup(Transport::Stdio);
    let job = |token, id, arguments: Value| {
        let params = json!({"name": "job", "arguments": arguments, "task": {"ttl": 60000}});
        json_of(&s.stateless(token, id, "tools/call", params))
    };
    let task = |token, id, method: &str, task: &str| {
        json_of(&s.stateless(token, id, method, json!({"taskId": task})))
    };
    let resp = job(TOKEN_A, 1, json!({"seconds": 0.3, "fail": true}));
    assert_eq!(resp["result"]["resultType"], "task", "{resp}");
    assert_eq!(resp["result"]["status"], "working", "{resp}");
    let t1 = resp["result"]["taskId"]
        .as_str()
        .expect("taskId")
        .to_string();
    assert_rate_limited(&job(TOKEN_A, 2, json!({})), "job", "jobs", "while it runs");

    let before = s.record();
    for (i, method) in ["tasks/get", "tasks/result", "tasks/cancel"]
        .into_iter()
        .enumerate()
    {
        let case = format!("B's stateless {method} on A's task");
        assert_rpc_error(
            &task(TOKEN_B, 3 + i as u64, method, &t1),
            -32602,
            UNKNOWN_TASK,
            &case,
        );
        assert_nothing_reached(&s, &before, &case);
    }
    let list = json_of(&s.stateless(TOKEN_B, 6, "tasks/list", json!({})));
    assert_eq!(task_ids(&list), Vec::<String>::new(), "B's list: {list}");
    let list = json_of(&s.stateless(TOKEN_A, 7, "tasks/list", json!({})));
    assert_eq!(task_ids(&list), [t1.as_str()], "A's list: {list}");

    let mut status = String::new();
    let ended = poll_until(Duration::from_secs(10), || {
        status = task(TOKEN_A, 8, "tasks/get", &t1)["result"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        status != "working"
    });
    assert!(ended && status == "failed", "A's failing task: {status}");
    // The failed task gave its count back: A's next job starts at once, and keeps it.
    let resp = job(TOKEN_A, 9, json!({"seconds": 0.2}));
    assert_eq!(resp["result"]["resultType"], "task", "{resp}");
    let t2 = resp["result"]["taskId"]
        .as_str()
        .expect("taskId")
        .to_string();
    let resp = task(TOKEN_A, 10, "tasks/result", &t2);
    assert_eq!(
        resp["result"]["content"][0]["text"], "job done after 0.2 s",
        "{resp}"
    );
    assert_rate_limited(
        &job(TOKEN_A, 11, json!({})),
        "job",
        "jobs",
        "after completed",
    );
}
