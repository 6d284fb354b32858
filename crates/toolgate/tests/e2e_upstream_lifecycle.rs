//! Upstream lifecycles: stdio children that die mid-call and come back, HTTP upstreams that
//! die mid-call, one child per session, what a child's environment holds, request timeouts
//! (stdio and HTTP), graceful shutdown on SIGTERM, and a session served by several of the
//! gateway's threads.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const TOK: &str = "tg-e2e-lifecycle-token-4a9b";

/// A gateway with the stdio recorder as `rec`; `top` goes before the tables.
fn recorder_gateway(top: &str) -> (Gateway, std::path::PathBuf) {
    recorder_gateway_with(top, &[], &[])
}

/// The same, with more environment for the gateway (`env`) and for the recorder (`child_env`).
fn recorder_gateway_with(
    top: &str,
    env: &[(&str, &str)],
    child_env: &[(&str, &str)],
) -> (Gateway, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let toml = format!(
        "{top}\n{}{}",
        recorder_server_toml("rec", &record, child_env),
        grant_toml("a", "rec", "TOK")
    );
    let env: Vec<_> = [("TOK", TOK)]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    (Gateway::start_in(dir, &toml, &env), record)
}

/// A stdio child of a gateway that has exited is gone within 10 s.
fn assert_child_ended(child: i32) {
    assert!(
        poll_until(Duration::from_secs(10), || process_gone(child)),
        "the stdio child {child} outlived the gateway"
    );
}

fn pid_of(s: &McpSession) -> i32 {
    let text = tool_text(&s.call_tool("pid", json!({})));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid tool said {text:?}"))
}

fn error_code(resp: &Value) -> Option<i64> {
    resp["error"]["code"].as_i64()
}

#[test]
fn stdio_child_dying_mid_call_fails_that_call_and_the_next_call_restarts_it() {
    let (gw, record) = recorder_gateway("");
    let s = McpSession::open(&gw, "rec", Some(TOK));
    let first_pid = pid_of(&s);

    let t0 = Instant::now();
    let resp = s.call_tool("exit", json!({}));
    let took = t0.elapsed();
    assert_eq!(
        error_code(&resp),
        Some(-32603),
        "the dead child's call: {resp}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the error took {took:?}: the call should fail as soon as the child is gone"
    );
    assert!(
        poll_until(Duration::from_secs(10), || process_gone(first_pid)),
        "the child {first_pid} is still there after `exit`"
    );

    let resp = s.call_tool("echo", json!({"message": "after the restart"}));
    assert_eq!(tool_text(&resp), "Echo: after the restart", "{resp}");
    let second_pid = pid_of(&s);
    assert_ne!(
        first_pid, second_pid,
        "the same child answered after it exited"
    );

    let rec = recorded(&record);
    assert_eq!(
        methods(&rec),
        [
            "initialize",
            "notifications/initialized",
            "tools/call", // pid
            "tools/call", // exit
            "initialize", // replayed into the new child
            "notifications/initialized",
            "tools/call", // echo
            "tools/call", // pid
        ],
        "what the children got:\n{}",
        recorded_text(&record)
    );
    assert_eq!(rec[3]["params"]["name"], "exit");
    assert_eq!(
        rec[4]["params"], rec[0]["params"],
        "the replayed initialize is not the agent's"
    );
    assert_eq!(rec[6]["params"]["name"], "echo");
}

#[test]
fn http_upstream_dying_before_its_answer_gives_a_json_rpc_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("http.jsonl");
    let mut peer = RecorderHttp::start(&record);
    let toml = format!(
        "{}{}",
        http_server_toml("remote", &peer.url(), RECORDER_TOOLS, ""),
        grant_toml("a", "remote", "TOK")
    );
    let gw = Gateway::start_in(dir, &toml, &[("TOK", TOK)]);
    let s = McpSession::open(&gw, "remote", Some(TOK));

    let t0 = Instant::now();
    let resp = s.call_tool("exit", json!({}));
    assert_eq!(error_code(&resp), Some(-32603), "{resp}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        peer.process.wait_for(Duration::from_secs(10)).is_some(),
        "the recorder did not exit"
    );

    // With the upstream gone, the next call is an error too, not a hang.
    let resp = s.call_tool("echo", json!({"message": "anyone there?"}));
    assert_eq!(error_code(&resp), Some(-32603), "{resp}");
}

/// reqwest, which toolgate used before, sent upstream traffic through a proxy named in the
/// environment; toolgate connects directly now, and says so at start when a proxy would have
/// applied (naming the proxy's address, never its password).
#[test]
fn http_upstream_is_reached_directly_with_a_proxy_in_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("http.jsonl");
    let peer = RecorderHttp::start(&record);
    let toml = format!(
        "{}{}",
        http_server_toml("remote", &peer.url(), RECORDER_TOOLS, ""),
        grant_toml("a", "remote", "TOK")
    );
    // Port 9 (discard) on loopback: nothing listens there, so a call sent through the proxy
    // would fail.
    let proxy = "http://squid-user:proxy-secret-77@127.0.0.1:9";
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("TOK", TOK), ("HTTP_PROXY", proxy), ("ALL_PROXY", proxy)],
    );
    let s = McpSession::open(&gw, "remote", Some(TOK));
    let resp = s.call_tool("echo", json!({"message": "direct"}));
    assert!(resp.get("result").is_some(), "{resp}");
    assert!(resp.to_string().contains("direct"), "{resp}");
    let log = gw.log();
    let warning = log
        .lines()
        .find(|l| l.contains("names a proxy"))
        .unwrap_or_else(|| panic!("no warning about the proxy in the log:\n{log}"));
    assert!(
        warning.contains("127.0.0.1:9") && warning.contains("remote"),
        "{warning}"
    );
    assert!(
        !log.contains("proxy-secret-77"),
        "the proxy's password is in the log:\n{log}"
    );
}

/// An https upstream whose certificate chains to a CA the gateway trusts (here through
/// `SSL_CERT_FILE`, which the platform verifier reads on Linux) is reached; with the same CA
/// not trusted, the call fails closed and nothing reaches the server.
#[test]
fn https_upstreams_are_verified_against_the_trusted_roots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = TestTls::make(dir.path());
    let record = dir.path().join("https.jsonl");
    let cert = tls.cert.display().to_string();
    let key = tls.key.display().to_string();
    let peer = RecorderHttp::start_with_env(&record, &[("TLS_CERT", &cert), ("TLS_KEY", &key)]);
    let url = format!("https://localhost:{}/mcp", peer.port);
    let toml = format!(
        "{}{}",
        http_server_toml("secure", &url, RECORDER_TOOLS, ""),
        grant_toml("a", "secure", "TOK")
    );
    let ca = tls.ca.display().to_string();

    let trusting = Gateway::start(&toml, &[("TOK", TOK), ("SSL_CERT_FILE", &ca)]);
    let s = McpSession::open(&trusting, "secure", Some(TOK));
    let resp = s.call_tool("echo", json!({"message": "over tls"}));
    assert!(resp.to_string().contains("over tls"), "{resp}");
    drop(s);
    drop(trusting);
    let reached = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(reached.contains("over tls"), "{reached}");

    // The default roots do not include the test CA.
    let doubting = Gateway::start(&toml, &[("TOK", TOK)]);
    let r = doubting
        .post("secure")
        .token(TOK)
        .json(&initialize_body(1))
        .send();
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(error_code(&body), Some(-32603), "{} {}", r.status, r.text());
    let log = doubting.log();
    assert!(
        log.contains("upstream request failed") && log.to_lowercase().contains("certificate"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&record).unwrap_or_default(),
        reached,
        "a request reached the server over a connection the gateway should not trust"
    );
}

/// An https upstream that accepts the TCP connection and then says nothing (a stalled TLS
/// handshake): the connect deadline covers the handshake too, so the agent gets a JSON-RPC
/// error in about 10 s instead of waiting forever.
#[test]
fn a_stalled_tls_handshake_fails_the_call_at_the_connect_deadline() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and hold connections open without a byte of TLS.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let toml = format!(
        "{}{}",
        http_server_toml(
            "silent",
            &format!("https://127.0.0.1:{port}/mcp"),
            RECORDER_TOOLS,
            ""
        ),
        grant_toml("a", "silent", "TOK")
    );
    let gw = Gateway::start(&toml, &[("TOK", TOK)]);
    let t0 = Instant::now();
    let r = gw
        .post("silent")
        .token(TOK)
        .json(&initialize_body(1))
        .send();
    let took = t0.elapsed();
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(error_code(&body), Some(-32603), "{} {}", r.status, r.text());
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(30),
        "took {took:?}"
    );
    gw.log_with_line("the connect timeout", |l| {
        l.contains("connecting took over 10 s")
    });
}

/// server-everything over HTTP streams progress for a long call; killed mid-stream, the agent
/// must get a JSON-RPC error for its call, not a stream that just ends (a client then waits
/// for an answer that never comes, or resumes against a dead server).
#[test]
fn http_upstream_killed_mid_stream_answers_the_call_with_a_json_rpc_error() {
    let mut peer = EverythingHttp::start();
    let toml = format!(
        "{}{}",
        http_server_toml("ev", &peer.url(), ALLOW_ALL, ""),
        grant_toml("a", "ev", "TOK")
    );
    let gw = Gateway::start(&toml, &[("TOK", TOK)]);
    let s = McpSession::open(&gw, "ev", Some(TOK));

    let mut stream = s
        .post()
        .json(
            &json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {
            "name": "trigger-long-running-operation",
            "arguments": {"duration": 30, "steps": 30},
            "_meta": {"progressToken": "e2e-progress"}}}),
        )
        .stream();
    assert_eq!(stream.status, 200);
    match stream.next(Duration::from_secs(20)) {
        Next::Message(m) => assert_eq!(m["method"], "notifications/progress", "{m}"),
        other => panic!("no progress before the kill: {other:?}"),
    }
    peer.process.kill();

    let t0 = Instant::now();
    let answer = loop {
        match stream.next(Duration::from_secs(20)) {
            Next::Message(m) if is_response(&m) => break m,
            Next::Message(_) => continue,
            Next::End(why) => panic!(
                "the agent's stream ended {:?} after the upstream died, without any answer to \
                 request 41 ({why:?})",
                t0.elapsed()
            ),
            Next::TimedOut => panic!("no answer 20 s after the upstream died: the call hangs"),
        }
    };
    assert_eq!(answer["id"], 41, "{answer}");
    assert_eq!(error_code(&answer), Some(-32603), "{answer}");
}

#[test]
fn each_session_gets_its_own_child() {
    let (gw, _record) = recorder_gateway("");
    let one = McpSession::open(&gw, "rec", Some(TOK));
    let two = McpSession::open(&gw, "rec", Some(TOK));
    assert_ne!(one.id, two.id, "two sessions share an id");
    assert!(
        one.id.len() >= 32,
        "session id too short to be unguessable: {}",
        one.id
    );
    let (pid_one, pid_two) = (pid_of(&one), pid_of(&two));
    assert_ne!(pid_one, pid_two, "two sessions share a child");
    let family = descendants(gw.pid());
    assert!(
        family.contains(&pid_one) && family.contains(&pid_two),
        "children {pid_one} and {pid_two} are not the gateway's ({family:?})"
    );

    let r = one.delete();
    assert!((200..300).contains(&r.status), "DELETE: {r:?}");
    assert!(
        poll_until(Duration::from_secs(15), || process_gone(pid_one)),
        "the ended session's child {pid_one} is still running"
    );
    assert!(!process_gone(pid_two), "the other session's child went too");
    let resp = two.call_tool("echo", json!({"message": "still here"}));
    assert_eq!(tool_text(&resp), "Echo: still here");
    assert_eq!(pid_of(&two), pid_two);
}

/// Ending a session ends its child the way MCP's stdio transport says: stdin is closed first
/// and the server gets to exit on its own; SIGTERM is only for a server that does not.
#[test]
fn ending_a_session_closes_its_childs_stdin_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("events.txt");
    let toml = format!(
        "{}{}",
        recorder_server_toml(
            "rec",
            &dir.path().join("rec.jsonl"),
            &[("EVENTS_FILE", events.to_str().unwrap())]
        ),
        grant_toml("a", "rec", "TOK")
    );
    let gw = Gateway::start_in(dir, &toml, &[("TOK", TOK)]);
    let s = McpSession::open(&gw, "rec", Some(TOK));
    let pid = pid_of(&s);
    let r = s.delete();
    assert!((200..300).contains(&r.status), "DELETE: {r:?}");
    assert!(
        poll_until(Duration::from_secs(15), || process_gone(pid)),
        "the ended session's child {pid} is still running"
    );
    let seen = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(
        seen.contains(&format!("stdin-closed {pid}")),
        "the child {pid} ended without ever seeing its stdin close (it was signalled); \
         events: {seen:?}"
    );
}

/// server-everything's `get-env` shows its whole environment: the configured variable is
/// there, nothing of the gateway's own environment is.
#[test]
fn stdio_child_environment_holds_no_gateway_secret() {
    const ADMIN: &str = "tg-e2e-admin-token-5150";
    const OTHER: &str = "tg-e2e-other-grant-token-8086";
    const AMBIENT: &str = "ambient-cloud-credential-6502";
    let toml = format!(
        "{}{}{}",
        everything_stdio_toml("ev", &[("VISIBLE", "configured-visible-value")]),
        grant_toml("a", "ev", "TOK"),
        grant_toml("other", "ev", "OTHER_TOKEN"),
    );
    let gw = Gateway::start(
        &toml,
        &[
            ("TOK", TOK),
            ("OTHER_TOKEN", OTHER),
            ("TOOLGATE_ADMIN_TOKEN", ADMIN),
            ("AWS_SECRET_ACCESS_KEY", AMBIENT),
        ],
    );
    let s = McpSession::open(&gw, "ev", Some(TOK));
    let resp = s.call_tool("get-env", json!({}));
    let text = resp["result"]["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|i| i["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default();
    assert!(
        text.contains("configured-visible-value"),
        "get-env did not show the configured variable (is this the environment?): {resp}"
    );
    assert!(text.contains("PATH"), "{text}");
    for (what, secret) in [
        ("the grant's token", TOK),
        ("another grant's token", OTHER),
        ("the admin token", ADMIN),
        ("the gateway's ambient environment", AMBIENT),
    ] {
        assert!(!text.contains(secret), "{what} reached the child: {text}");
    }
    for name in [
        "TOK",
        "OTHER_TOKEN",
        "TOOLGATE_ADMIN_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            !text.contains(&format!("\"{name}\"")),
            "{name} reached the child: {text}"
        );
    }
}

/// Under `request_timeout_secs = 1`, a 20 s call is answered with a timeout error within
/// 10 s, and the session goes on.
fn assert_a_slow_call_times_out(s: &McpSession) {
    let t0 = Instant::now();
    let resp = s.call_tool("slow", json!({"seconds": 20}));
    // -32001: the MCP SDKs' request timeout (delivered, not answered in time).
    assert_eq!(error_code(&resp), Some(-32001), "{resp}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    let resp = s.call_tool("echo", json!({"message": "later"}));
    assert_eq!(tool_text(&resp), "Echo: later");
}

#[test]
fn request_timeout_turns_a_silent_upstream_into_an_error() {
    let (gw, _record) = recorder_gateway("request_timeout_secs = 1");
    assert_a_slow_call_times_out(&McpSession::open(&gw, "rec", Some(TOK)));
}

/// The same for an HTTP server: `request_timeout_secs` bounds the wait for its answer.
#[test]
fn request_timeout_turns_a_silent_http_upstream_into_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("http.jsonl");
    let peer = RecorderHttp::start(&record);
    let toml = format!(
        "request_timeout_secs = 1\n{}{}",
        http_server_toml("remote", &peer.url(), RECORDER_TOOLS, ""),
        grant_toml("a", "remote", "TOK")
    );
    let gw = Gateway::start_in(dir, &toml, &[("TOK", TOK)]);
    assert_a_slow_call_times_out(&McpSession::open(&gw, "remote", Some(TOK)));
    gw.log_with_line("the request timeout", |l| {
        l.contains("upstream did not answer within 1 s")
    });
}

#[test]
fn sigterm_lets_the_call_in_flight_finish_then_exits_zero() {
    const GRACE: u64 = 10;
    let (mut gw, record) = recorder_gateway(&format!("shutdown_grace_secs = {GRACE}"));
    let s = McpSession::open(&gw, "rec", Some(TOK));
    let child = pid_of(&s);

    let id = s.next_id();
    let call = s
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {"seconds": 2}}}))
        .spawn();
    assert!(
        poll_until(Duration::from_secs(15), || recorded(&record)
            .iter()
            .any(|m| m["params"]["name"] == "slow")),
        "the slow call never reached the child"
    );
    let t0 = Instant::now();
    gw.sigterm();

    let r = call
        .wait()
        .unwrap_or_else(|e| panic!("the call in flight was cut: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = r.response();
    assert_eq!(resp["id"], json!(id));
    assert_eq!(tool_text(&resp), "slept 2", "{resp}");

    let status = gw
        .wait_exit(Duration::from_secs(GRACE + 5))
        .unwrap_or_else(|| panic!("the gateway did not exit {GRACE} s after SIGTERM"));
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(GRACE),
        "exit took {took:?}, over the grace"
    );
    assert_child_ended(child);
}

#[test]
fn sigterm_ends_a_call_that_outlasts_the_grace() {
    let (mut gw, record) = recorder_gateway("shutdown_grace_secs = 1");
    let s = McpSession::open(&gw, "rec", Some(TOK));
    let child = pid_of(&s);
    let call = s
        .post()
        .json(&json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {"seconds": 60}}}))
        .timeout(Duration::from_secs(60))
        .spawn();
    assert!(
        poll_until(Duration::from_secs(15), || recorded(&record)
            .iter()
            .any(|m| m["params"]["name"] == "slow")),
        "the slow call never reached the child"
    );
    let t0 = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway did not exit after its grace");
    assert!(status.success(), "exit status {status}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    // The agent is not left hanging: its request ends, with an error or a closed connection.
    let t1 = Instant::now();
    let _ = call.wait();
    assert!(
        t1.elapsed() < Duration::from_secs(5),
        "the agent's request hung on"
    );
    assert_child_ended(child);
}

/// Thread per core: the gateway hands each new connection to the next of its threads, and the
/// test client opens a connection per request, so one session's requests are served by all
/// four threads in turn (each thread's CPU time grows while they are). Its stdio child,
/// started from one thread, answers on every other; two calls in flight at once both finish;
/// SIGTERM stops every thread and the child.
#[test]
fn one_session_is_served_by_every_thread_of_the_gateway() {
    let (mut gw, _record) = recorder_gateway_with("", &[("TOOLGATE_WORKER_THREADS", "4")], &[]);
    let names: Vec<String> = ["toolgate", "toolgate-1", "toolgate-2", "toolgate-3"]
        .map(String::from)
        .to_vec();
    // CPU time (ns) of each serving thread, from /proc/PID/task/TID/schedstat.
    let cpu = |gw: &Gateway| -> Vec<u64> {
        let mut by_name = std::collections::HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", gw.pid())).expect("threads") {
            let dir = task.expect("a thread").path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            by_name.insert(name.trim().to_string(), ns);
        }
        names
            .iter()
            .map(|n| {
                *by_name
                    .get(n)
                    .unwrap_or_else(|| panic!("no thread {n} among {:?}", by_name.keys()))
            })
            .collect()
    };

    let s = McpSession::open(&gw, "rec", Some(TOK));
    let child = pid_of(&s);
    let before = cpu(&gw);
    for i in 0..40 {
        let resp = s.call_tool("echo", json!({"message": format!("m{i}")}));
        assert_eq!(tool_text(&resp), format!("Echo: m{i}"), "{resp}");
    }
    let after = cpu(&gw);
    for (n, name) in names.iter().enumerate() {
        let used = after[n] - before[n];
        assert!(
            used > 1_000_000,
            "thread {name} used {used} ns over 40 calls: it served none of them"
        );
    }
    assert_eq!(
        pid_of(&s),
        child,
        "one child for the session, whichever thread serves"
    );

    let slow = |id: u64| {
        s.post()
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "slow", "arguments": {"seconds": 1}}}))
            .spawn()
    };
    let (a, b) = (slow(s.next_id()), slow(s.next_id()));
    for call in [a, b] {
        let resp = call.wait().expect("a slow call").response();
        assert_eq!(tool_text(&resp), "slept 1", "{resp}");
    }

    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert_child_ended(child);
}

/// A child's stderr goes to the gateway's log, and what it writes cannot drive the operator's
/// terminal: control characters (ESC, BEL) arrive escaped, not raw.
#[test]
fn a_childs_stderr_is_logged_with_control_characters_escaped() {
    let line = "evil \u{1b}[31mRED\u{1b}[0m \u{1b}]0;pwned\u{7} end";
    let (gw, _record) = recorder_gateway_with("", &[], &[("RECORDER_STDERR", line)]);
    let _s = McpSession::open(&gw, "rec", Some(TOK));
    assert!(
        poll_until(Duration::from_secs(10), || gw.log().contains("evil")),
        "the child's stderr line is not in the log:\n{}",
        gw.log()
    );
    let log = gw.log();
    let logged = log.lines().find(|l| l.contains("evil")).expect("the line");
    assert!(logged.contains("end"), "{logged:?}");
    assert!(
        !logged.contains('\u{1b}') && !logged.contains('\u{7}'),
        "control characters reached the log raw: {logged:?}"
    );
}
