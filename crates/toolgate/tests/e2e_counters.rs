//! Counters and rate limits through the real gateway, embedded store (SPEC 3 and 5, issue 4):
//! 200 racing calls against `max: 30` admit exactly 30, each scope counts what it should, a
//! counter shared by two tools is one, a call's counters are taken all or none, a one-second
//! window refills and never admits more than `max` in a second, quota used before a restart
//! is still used after it, and a call that fails upstream with a JSON-RPC error (or never
//! reaches it) gives its quota back while an `isError` result keeps it, but one that timed
//! out upstream keeps it. Under the stateless protocol a session limit counts per grant.
//!
//! Every admission is proven twice: by the answer (the upstream's result, not a denial) and by
//! the recorder's record (the calls that really reached the upstream). The Redis store has
//! its own file, `e2e_counters_redis.rs`.

#[path = "counters_support/calls.rs"]
mod calls;
mod common;

use std::time::{Duration, Instant};

use calls::*;
use common::{Gateway, McpSession, RecorderHttp, grant_toml, http_server_toml};

/// 200 concurrent calls on four sessions of one grant against `max: 30`.
#[test]
fn two_hundred_racing_calls_admit_exactly_thirty() {
    let policy = policy(&tool("echo", &[limit("burst", "minute", 30, "grant")]));
    let p = setup(&embedded(), &policy, "");
    let sessions = sessions(&p.gw, ALICE, 4);
    let calls: Vec<_> = (0..200)
        .map(|i| (&sessions[i % 4], "echo", format!("race-{i:03}")))
        .collect();
    let answers = fire(&calls);

    let admitted = admitted_under_burst_of_30(&answers, &calls);
    assert_eq!(
        admitted.len(),
        30,
        "200 racing calls against max 30 must admit exactly 30"
    );
    assert_eq!(
        upstream_messages(&p.record, "echo"),
        admitted,
        "the upstream must have received exactly the 30 admitted calls"
    );
    assert_no_panic(&p.gw, "race");
}

/// Grant scope: each grant has its own 30, even when both race at once.
#[test]
fn grant_scope_gives_each_grant_its_own_quota() {
    let policy = policy(&tool("echo", &[limit("per_grant", "minute", 30, "grant")]));
    let p = setup(&embedded(), &policy, "");
    let alice = sessions(&p.gw, ALICE, 2);
    let bob = sessions(&p.gw, BOB, 2);
    let mut calls = Vec::new();
    for i in 0..35 {
        calls.push((&alice[i % 2], "echo", format!("alice-{i:02}")));
        calls.push((&bob[i % 2], "echo", format!("bob-{i:02}")));
    }
    let answers = fire(&calls);
    let (mut a, mut b) = (0, 0);
    for (resp, (_, _, message)) in answers.iter().zip(&calls) {
        if is_done_ok(resp) {
            assert_echo(resp, message, message);
            if message.starts_with("alice") {
                a += 1;
            } else {
                b += 1;
            }
        } else {
            assert_limited(
                resp,
                "per_grant",
                "/tools/echo/limits/per_grant",
                30,
                "minute",
                message,
            );
        }
    }
    assert_eq!((a, b), (30, 30), "admitted calls of (alice, bob)");
    let reached = upstream_messages(&p.record, "echo");
    let count = |who: &str| reached.iter().filter(|m| m.starts_with(who)).count();
    assert_eq!((count("alice"), count("bob")), (30, 30), "upstream calls");
}

/// Server scope: one 30 for every grant of the server.
#[test]
fn server_scope_shares_one_quota_across_grants() {
    let policy = policy(&tool("echo", &[limit("shared", "minute", 30, "server")]));
    let p = setup(&embedded(), &policy, "");
    let alice = McpSession::open(&p.gw, "rec", Some(ALICE));
    let bob = McpSession::open(&p.gw, "rec", Some(BOB));
    let first: Vec<_> = (0..20)
        .map(|i| (&alice, "echo", format!("alice-{i:02}")))
        .collect();
    for (resp, (_, _, m)) in fire(&first).iter().zip(&first) {
        assert_echo(resp, m, "alice's first 20 fit in 30");
    }
    let second: Vec<_> = (0..20)
        .map(|i| (&bob, "echo", format!("bob-{i:02}")))
        .collect();
    let answers = fire(&second);
    let admitted = answers.iter().filter(|r| is_done_ok(r)).count();
    assert_eq!(admitted, 10, "bob gets what alice left of the server's 30");
    for resp in answers.iter().filter(|r| !is_done_ok(r)) {
        assert_limited(
            resp,
            "shared",
            "/tools/echo/limits/shared",
            30,
            "minute",
            "bob",
        );
    }
    let resp = call(&alice, "echo", "alice-late");
    assert_limited(
        &resp,
        "shared",
        "/tools/echo/limits/shared",
        30,
        "minute",
        "alice after bob",
    );
    assert_eq!(upstream_count(&p.record, "echo"), 30, "upstream calls");
}

/// Session scope: two sessions of one grant each have their own quota; a new session
/// starts with a full one.
#[test]
fn session_scope_gives_each_session_its_own_quota() {
    let policy = policy(&tool(
        "echo",
        &[limit("per_session", "minute", 5, "session")],
    ));
    let p = setup(&embedded(), &policy, "");
    let s = sessions(&p.gw, ALICE, 2);
    let mut calls = Vec::new();
    for i in 0..7 {
        calls.push((&s[0], "echo", format!("s0-{i}")));
        calls.push((&s[1], "echo", format!("s1-{i}")));
    }
    let answers = fire(&calls);
    let ok = |prefix: &str| {
        answers
            .iter()
            .zip(&calls)
            .filter(|(r, (_, _, m))| m.starts_with(prefix) && is_done_ok(r))
            .count()
    };
    assert_eq!((ok("s0"), ok("s1")), (5, 5), "admitted per session");
    for (resp, (_, _, m)) in answers.iter().zip(&calls) {
        if !is_done_ok(resp) {
            let rule = "/tools/echo/limits/per_session";
            assert_limited(resp, "per_session", rule, 5, "minute", m);
        }
    }
    let third = McpSession::open(&p.gw, "rec", Some(ALICE));
    assert_echo(&call(&third, "echo", "s2-0"), "s2-0", "a new session");
    assert_eq!(upstream_count(&p.record, "echo"), 11, "upstream calls");
}

/// One counter name in two tools (same scope) is one counter; another grant has its own.
#[test]
fn a_counter_named_in_two_tools_is_one_counter() {
    let writes = limit("writes", "minute", 5, "grant");
    let policy = policy(&format!(
        "{}, {}",
        tool("write_a", std::slice::from_ref(&writes)),
        tool("write_b", &[writes])
    ));
    let p = setup(&embedded(), &policy, "write_a,write_b");
    let s = McpSession::open(&p.gw, "rec", Some(ALICE));
    for i in 0..3 {
        assert!(
            is_done_ok(&call(&s, "write_a", &format!("a{i}"))),
            "write_a {i}"
        );
    }
    for i in 0..2 {
        assert!(
            is_done_ok(&call(&s, "write_b", &format!("b{i}"))),
            "write_b {i}"
        );
    }
    let resp = call(&s, "write_b", "b2");
    assert_limited(
        &resp,
        "writes",
        "/tools/write_b/limits/writes",
        5,
        "minute",
        "write_b over",
    );
    let resp = call(&s, "write_a", "a3");
    assert_limited(
        &resp,
        "writes",
        "/tools/write_a/limits/writes",
        5,
        "minute",
        "write_a over",
    );
    let bob = McpSession::open(&p.gw, "rec", Some(BOB));
    assert!(
        is_done_ok(&call(&bob, "write_a", "bob")),
        "bob's own writes"
    );
    assert_eq!(
        upstream_count(&p.record, "write_a") + upstream_count(&p.record, "write_b"),
        6,
        "upstream calls: {:?}",
        record_summary(&p.record)
    );
}

/// A call's counters are reserved all or none: a call refused by one of its counters takes
/// nothing from the others. `a_cap` comes before `m_total` in any order of names, `z_cap`
/// after it, so a store that counted as it checked would be caught either way.
#[test]
fn a_call_refused_by_one_counter_takes_nothing_from_the_others() {
    let policy = format!(
        r#"{{"version": "1", "default": "deny",
            "all_tools": {{"limits": [{}]}},
            "tools": {{ {}, {}, "b": {{}} }}}}"#,
        limit("m_total", "minute", 6, "grant"),
        tool("a", &[limit("a_cap", "minute", 1, "grant")]),
        tool("z", &[limit("z_cap", "minute", 1, "grant")]),
    );
    let p = setup(&embedded(), &policy, "a,z,b");
    let s = McpSession::open(&p.gw, "rec", Some(ALICE));
    assert!(is_done_ok(&call(&s, "a", "a0")), "a0");
    assert!(is_done_ok(&call(&s, "z", "z0")), "z0");
    // Eight refusals by a_cap and z_cap: had they taken m_total, b would get nothing.
    let mut refused = Vec::new();
    for i in 0..4 {
        refused.push((&s, "a", format!("a-over-{i}")));
        refused.push((&s, "z", format!("z-over-{i}")));
    }
    for (resp, (_, t, m)) in fire(&refused).iter().zip(&refused) {
        let counter = format!("{t}_cap");
        let rule = format!("/tools/{t}/limits/{counter}");
        assert_limited(resp, &counter, &rule, 1, "minute", m);
    }
    for i in 0..4 {
        assert!(
            is_done_ok(&call(&s, "b", &format!("b{i}"))),
            "b {i} fits in m_total"
        );
    }
    let resp = call(&s, "b", "b-over");
    let rule = "/all_tools/limits/m_total";
    assert_limited(&resp, "m_total", rule, 6, "minute", "b over m_total");
    let reached: Vec<String> = upstream_calls(&p.record).into_iter().map(|c| c.0).collect();
    assert_eq!(reached, ["a", "z", "b", "b", "b", "b"], "upstream calls");
}

/// Admitted calls whose admission surely fell within less than one second of each other
/// (from the earliest send to the latest answer), more than `max` of them, are a breach.
fn assert_never_more_than(max: usize, admitted: &[(Instant, Instant)], what: &str) {
    let mut a = admitted.to_vec();
    a.sort_by_key(|(sent, _)| *sent);
    for i in 0..a.len() {
        // The max + 1 calls sent from the i-th on.
        let Some(group) = a.get(i..=i + max) else {
            break;
        };
        let latest = group.iter().map(|(_, answered)| *answered).max().unwrap();
        let span = latest.duration_since(group[0].0);
        assert!(
            span >= Duration::from_millis(990),
            "{what}: {} calls admitted within {span:?} against max {max} per second",
            max + 1
        );
    }
}

/// A one-second window: a burst gets exactly max, the quota is back a window later, and
/// under steady demand no second ever sees more than max.
#[test]
fn a_second_window_refills_and_never_admits_more_than_max_in_a_second() {
    const MAX: usize = 3;
    let policy = policy(&tool(
        "echo",
        &[limit("tick", "second", MAX as u64, "grant")],
    ));
    let p = setup(&embedded(), &policy, "");
    let s = sessions(&p.gw, ALICE, 2);
    let mut admitted: Vec<(Instant, Instant)> = Vec::new();

    let burst = |name: &str, admitted: &mut Vec<(Instant, Instant)>| -> usize {
        let calls: Vec<_> = (0..10)
            .map(|i| (&s[i % 2], "echo", format!("{name}-{i}")))
            .collect();
        let sent = Instant::now();
        let answers = fire(&calls);
        let answered = Instant::now();
        let mut ok = 0;
        for (resp, (_, _, m)) in answers.iter().zip(&calls) {
            if is_done_ok(resp) {
                ok += 1;
                admitted.push((sent, answered));
            } else {
                let retry = assert_limited(resp, "tick", "/tools/echo/limits/tick", 3, "second", m);
                assert_eq!(retry, 1, "{m}: retry_after_s of a one-second window");
            }
        }
        ok
    };
    let first = burst("first", &mut admitted);
    assert!(
        first >= MAX,
        "a burst gets the whole quota: {first} admitted"
    );
    assert_never_more_than(MAX, &admitted, "first burst");

    // Idle for a full window (counted from the last admitted answer): the quota is back.
    std::thread::sleep(Duration::from_millis(1100));
    let second = burst("second", &mut admitted);
    assert!(
        second >= MAX,
        "after an idle window the quota is back: {second} admitted"
    );
    assert_never_more_than(MAX, &admitted, "second burst");

    // Steady demand from two threads for 2.2 s, across several window edges.
    let until = Instant::now() + Duration::from_millis(2200);
    let steady: Vec<(Instant, Instant, bool)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let s = &s[w];
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut i = 0;
                    while Instant::now() < until {
                        let t = timed_call(s, "echo", &format!("steady-{w}-{i}"));
                        let ok = is_done_ok(&t.resp);
                        if !ok {
                            let m = "steady";
                            assert_limited(
                                &t.resp,
                                "tick",
                                "/tools/echo/limits/tick",
                                3,
                                "second",
                                m,
                            );
                        }
                        out.push((t.sent, t.answered, ok));
                        i += 1;
                        std::thread::sleep(Duration::from_millis(15));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let steady_ok: Vec<(Instant, Instant)> =
        steady.iter().filter(|c| c.2).map(|c| (c.0, c.1)).collect();
    assert!(
        steady_ok.len() >= MAX,
        "under 2.2 s of steady demand the window refilled at least once: {} admitted of {}",
        steady_ok.len(),
        steady.len()
    );
    admitted.extend(steady_ok);
    assert_never_more_than(MAX, &admitted, "steady demand");
    assert_eq!(
        upstream_count(&p.record, "echo"),
        admitted.len(),
        "the upstream received exactly the admitted calls"
    );
}

/// Quota used before a graceful restart (SIGTERM) is still used after it, and so is quota
/// used more than a snapshot interval before a crash (SIGKILL).
#[test]
fn quota_used_before_a_restart_is_still_used_after_it() {
    let policy = policy(&tool("echo", &[limit("daily", "day", 5, "grant")]));
    let restart = |gw: &mut Gateway| -> Setup {
        let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().expect("temp dir"));
        setup_in(dir, &embedded(), &policy, "")
    };
    let mut p = setup(&embedded(), &policy, "");
    {
        let s = McpSession::open(&p.gw, "rec", Some(ALICE));
        for i in 0..3 {
            assert_echo(
                &call(&s, "echo", &format!("before-{i}")),
                &format!("before-{i}"),
                "before",
            );
        }
    }
    p.gw.sigterm();
    let status = p.gw.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: the gateway should exit 0, got {status:?}"
    );
    let snapshot = p.gw.dir.path().join("state/counters.json");
    let saved = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert!(
        saved.contains("daily"),
        "{} should hold the counter after a graceful shutdown: {saved:?}",
        snapshot.display()
    );

    let mut q = restart(&mut p.gw);
    {
        let s = McpSession::open(&q.gw, "rec", Some(ALICE));
        for i in 0..2 {
            assert_echo(
                &call(&s, "echo", &format!("after-{i}")),
                &format!("after-{i}"),
                "after",
            );
        }
        let resp = call(&s, "echo", "after-over");
        let retry = assert_limited(
            &resp,
            "daily",
            "/tools/echo/limits/daily",
            5,
            "day",
            "after",
        );
        assert!(
            retry > 86_000,
            "the day's quota comes back in a day, not {retry} s"
        );
        // Bob's calls, then a crash once the snapshot had time to be written.
        let b = McpSession::open(&q.gw, "rec", Some(BOB));
        for i in 0..4 {
            assert!(
                is_done_ok(&call(&b, "echo", &format!("bob-{i}"))),
                "bob {i}"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(1600));
    q.gw.kill();

    let r = restart(&mut q.gw);
    let s = McpSession::open(&r.gw, "rec", Some(ALICE));
    let resp = call(&s, "echo", "alice-after-crash");
    assert_limited(
        &resp,
        "daily",
        "/tools/echo/limits/daily",
        5,
        "day",
        "alice after the crash",
    );
    let b = McpSession::open(&r.gw, "rec", Some(BOB));
    assert!(is_done_ok(&call(&b, "echo", "bob-4")), "bob's fifth call");
    let resp = call(&b, "echo", "bob-5");
    assert_limited(
        &resp,
        "daily",
        "/tools/echo/limits/daily",
        5,
        "day",
        "bob after the crash",
    );
    assert_eq!(
        upstream_count(&r.record, "echo"),
        10,
        "the upstream received 5 calls of each grant over three gateway lives"
    );
}

/// Settlement: JSON-RPC errors from the upstream (an unknown tool, a child dying mid-call)
/// give the quota back; a tool result with `isError: true` keeps it.
#[test]
fn an_upstream_json_rpc_error_gives_quota_back_and_an_is_error_result_keeps_it() {
    let calls_limit = [limit("calls", "minute", 2, "grant")];
    let policy = policy(&format!(
        "{}, {}, {}, {}",
        tool("echo", &calls_limit),
        tool("nosuch", &calls_limit),
        tool("exit", &calls_limit),
        tool("fail", &calls_limit),
    ));
    let p = setup(&embedded(), &policy, "");
    let s = McpSession::open(&p.gw, "rec", Some(ALICE));
    // The recorder answers a tool it does not have with JSON-RPC -32602: three of them, more
    // than the quota of 2.
    for i in 0..3 {
        let resp = call(&s, "nosuch", &format!("n{i}"));
        assert_eq!(
            outcome(&resp),
            Outcome::RpcError {
                code: -32602,
                message: "Unknown tool: nosuch".into()
            },
            "nosuch {i}: the upstream's own error"
        );
    }
    // The child exits mid-call: the gateway answers a JSON-RPC error.
    let resp = call(&s, "exit", "bye");
    assert!(
        matches!(outcome(&resp), Outcome::RpcError { code: -32603, .. }),
        "exit: {resp}"
    );
    for i in 0..2 {
        let m = format!("e{i}");
        assert_echo(&call(&s, "echo", &m), &m, "the errors took no quota");
    }
    let resp = call(&s, "echo", "e2");
    assert_limited(
        &resp,
        "calls",
        "/tools/echo/limits/calls",
        2,
        "minute",
        "echo over",
    );

    // isError results are completed calls.
    let b = McpSession::open(&p.gw, "rec", Some(BOB));
    for i in 0..2 {
        let resp = call(&b, "fail", &format!("f{i}"));
        assert_eq!(
            outcome(&resp),
            Outcome::Done {
                is_error: true,
                text: "failed on purpose".into()
            },
            "fail {i}: the upstream's isError result, relayed"
        );
    }
    let resp = call(&b, "echo", "bob-echo");
    assert_limited(
        &resp,
        "calls",
        "/tools/echo/limits/calls",
        2,
        "minute",
        "isError kept the quota",
    );

    let reached: Vec<String> = upstream_calls(&p.record).into_iter().map(|c| c.0).collect();
    assert_eq!(
        reached,
        [
            "nosuch", "nosuch", "nosuch", "exit", "echo", "echo", "fail", "fail"
        ],
        "the calls that reached the upstream"
    );
}

/// Settlement with an unreachable upstream: calls to a dead HTTP server give the quota back.
#[test]
fn calls_to_an_unreachable_upstream_give_quota_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("web.jsonl");
    let rec = RecorderHttp::start(&record);
    let port = rec.port.to_string();
    std::fs::write(
        dir.path().join(POLICY),
        policy(&tool("echo", &[limit("calls", "minute", 1, "grant")])),
    )
    .expect("write policy");
    let toml = format!(
        "{}{}{}",
        embedded(),
        http_server_toml("web", &rec.url(), POLICY, ""),
        grant_toml("alice", "web", "ALICE")
    );
    let gw = Gateway::start_in(dir, &toml, &[("ALICE", ALICE)]);
    let s = McpSession::open(&gw, "web", Some(ALICE));
    drop(rec);
    for i in 0..3 {
        let resp = call(&s, "echo", &format!("dead-{i}"));
        assert!(
            matches!(outcome(&resp), Outcome::RpcError { code: -32603, .. }),
            "a call to a dead upstream: {resp}"
        );
    }
    // Back on the same port, without the old session: that call is refused upstream too.
    let _rec = RecorderHttp::start_with_env(&record, &[("PORT", &port)]);
    let r = s
        .post()
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                  "params": {"name": "echo", "arguments": {"message": "lost"}}}),
        )
        .send();
    assert_ne!(
        r.status,
        200,
        "the upstream forgot the session: {}",
        r.text()
    );

    let s = McpSession::open(&gw, "web", Some(ALICE));
    assert_echo(
        &call(&s, "echo", "alive"),
        "alive",
        "none of the failed calls took quota",
    );
    let resp = call(&s, "echo", "over");
    assert_limited(
        &resp,
        "calls",
        "/tools/echo/limits/calls",
        1,
        "minute",
        "over",
    );
    assert_eq!(
        upstream_messages(&record, "echo"),
        ["alive", "lost"],
        "upstream calls"
    );
    assert_no_panic(&gw, "unreachable upstream");
}

/// Under the stateless protocol (2026-07-28) there is no session: a session limit counts
/// per grant.
#[test]
fn a_session_limit_counts_per_grant_under_the_stateless_protocol() {
    let policy = policy(&tool(
        "echo",
        &[limit("per_session", "minute", 2, "session")],
    ));
    let p = setup(&embedded(), &policy, "");
    let stateless = |token: &str, message: &str| -> serde_json::Value {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message},
                       "_meta": {"io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"}}}});
        let r =
            p.gw.post("rec")
                .token(token)
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "echo")
                .json(&body)
                .send();
        assert_eq!(r.status, 200, "stateless {message}: {}", r.text());
        r.response()
    };
    for i in 0..2 {
        let m = format!("alice-{i}");
        assert_echo(&stateless(ALICE, &m), &m, "a stateless call");
    }
    let rule = "/tools/echo/limits/per_session";
    let mut resp = stateless(ALICE, "alice-2");
    // Under 2026-07-28 the gateway's own result says its type; the rest is as in any version.
    let result_type = resp["result"]
        .as_object_mut()
        .and_then(|r| r.remove("resultType"));
    assert_eq!(result_type, Some(serde_json::json!("complete")), "{resp}");
    assert_limited(
        &resp,
        "per_session",
        rule,
        2,
        "minute",
        "third stateless call of alice",
    );
    assert_echo(&stateless(BOB, "bob-0"), "bob-0", "bob's own quota");
    assert_eq!(upstream_count(&p.record, "echo"), 3, "upstream calls");
}

/// A call the upstream received but did not answer in time (`request_timeout_secs`) is not
/// a call that failed: the upstream may well carry it out, so its quota stays used. SPEC 3
/// step 7 gives quota back only for a JSON-RPC error of the upstream or an upstream that
/// could not be reached; releasing on a timeout lets more than `max` calls reach the
/// upstream in one window.
#[test]
fn a_call_that_times_out_upstream_keeps_its_quota() {
    let policy = policy(&tool("slow", &[limit("slow_calls", "minute", 1, "grant")]));
    let top = format!("request_timeout_secs = 1\n{}", embedded());
    let p = setup(&top, &policy, "");
    let s = McpSession::open(&p.gw, "rec", Some(ALICE));
    let resp = send_args(&s, "slow", serde_json::json!({"seconds": 2})).answer();
    assert!(
        matches!(outcome(&resp), Outcome::RpcError { code: -32001, .. }),
        "the gateway's timeout error (-32001, the SDKs' request timeout): {resp}"
    );
    let resp = send_args(&s, "slow", serde_json::json!({"seconds": 2})).answer();
    let reached = upstream_count(&p.record, "slow");
    assert!(
        matches!(outcome(&resp), Outcome::Limited { .. }),
        "the first call reached the upstream (which received {reached} slow calls) and may \
         have been carried out, yet its quota was given back and a second call of max 1 \
         was let through: {resp}"
    );
    assert_limited(
        &resp,
        "slow_calls",
        "/tools/slow/limits/slow_calls",
        1,
        "minute",
        "second slow call",
    );
    assert_eq!(reached, 1, "slow calls that reached the upstream");
}
