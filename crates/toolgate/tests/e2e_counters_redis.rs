//! Counters and rate limits through the real gateway on the Redis store (SPEC 5, issue 4):
//! two gateway processes sharing one real `redis-server` admit exactly 30 of 200 racing
//! calls between them, the Lua scripts settle and reserve all-or-none like the embedded
//! store, and Redis killed mid-load and restarted on the same port is survived: calls are
//! denied meanwhile (or let through with `on_error = "allow"`), nothing panics, and counting
//! resumes without restarting any gateway. A gateway started while Redis is down serves once
//! it is up; a Redis that hangs (SIGSTOP) fails calls fast, and the calls it refused must not
//! be counted when Redis wakes up.
//!
//! Each test starts its own `redis-server` on a free port (`apt-get install redis-server`).

#[path = "counters_support/calls.rs"]
mod calls;
mod common;
#[path = "counters_support/redis.rs"]
mod redis_support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calls::*;
use common::{McpSession, free_port};
use redis_support::RedisServer;

/// Two gateways on one Redis, 100 racing calls at each, against one grant's `max: 30`.
#[test]
fn two_gateways_sharing_redis_admit_exactly_thirty_of_two_hundred_racing_calls() {
    let redis = RedisServer::start();
    let policy = policy(&tool("echo", &[limit("burst", "minute", 30, "grant")]));
    let a = setup(&calls::redis(&redis.url(), "deny"), &policy, "");
    let b = setup(&calls::redis(&redis.url(), "deny"), &policy, "");
    let sa = sessions(&a.gw, ALICE, 3);
    let sb = sessions(&b.gw, ALICE, 3);
    let mut calls = Vec::new();
    for i in 0..100 {
        calls.push((&sa[i % 3], "echo", format!("a-{i:03}")));
        calls.push((&sb[i % 3], "echo", format!("b-{i:03}")));
    }
    let answers = fire(&calls);

    let admitted = admitted_under_burst_of_30(&answers, &calls);
    assert_eq!(
        admitted.len(),
        30,
        "200 racing calls on two gateways sharing one Redis must admit exactly 30"
    );
    let mut reached = upstream_messages(&a.record, "echo");
    reached.extend(upstream_messages(&b.record, "echo"));
    reached.sort();
    assert_eq!(
        reached, admitted,
        "the upstreams must have received exactly the 30 admitted calls"
    );
    assert_no_panic(&a.gw, "gateway a");
    assert_no_panic(&b.gw, "gateway b");
}

/// The Redis scripts keep the same rules as the embedded store: scopes, a JSON-RPC error
/// gives the quota back, an `isError` result keeps it, a refused call takes nothing.
#[test]
fn redis_store_settles_calls_and_reserves_all_or_none() {
    let redis = RedisServer::start();
    let calls_limit = [limit("calls", "minute", 2, "grant")];
    // m_total is checked after a_cap (grant scope first) and before z_cap (same scope, name
    // order): a script that counted as it checked would be caught either way.
    let policy = format!(
        r#"{{"version": "1", "default": "deny",
            "all_tools": {{"limits": [{}]}},
            "tools": {{ {}, {}, {}, {}, {}, {} }}}}"#,
        limit("m_total", "minute", 9, "server"),
        tool("echo", &calls_limit),
        tool("nosuch", &calls_limit),
        tool("fail", &calls_limit),
        tool("a", &[limit("a_cap", "minute", 1, "grant")]),
        tool("z", &[limit("z_cap", "minute", 1, "server")]),
        r#""b": {}"#,
    );
    let p = setup(&calls::redis(&redis.url(), "deny"), &policy, "a,z,b");
    let alice = McpSession::open(&p.gw, "rec", Some(ALICE));
    let bob = McpSession::open(&p.gw, "rec", Some(BOB));

    // Alice: three upstream errors give back `calls` and `m_total` alike.
    for i in 0..3 {
        let resp = call(&alice, "nosuch", &format!("n{i}"));
        assert!(
            matches!(outcome(&resp), Outcome::RpcError { code: -32602, .. }),
            "nosuch {i}: {resp}"
        );
    }
    for i in 0..2 {
        let m = format!("e{i}");
        assert_echo(&call(&alice, "echo", &m), &m, "the errors took no quota");
    }
    let resp = call(&alice, "echo", "e2");
    assert_limited(
        &resp,
        "calls",
        "/tools/echo/limits/calls",
        2,
        "minute",
        "alice over",
    );

    // Bob: isError results keep the quota.
    for i in 0..2 {
        let resp = call(&bob, "fail", &format!("f{i}"));
        assert!(
            matches!(outcome(&resp), Outcome::Done { is_error: true, .. }),
            "fail {i}: {resp}"
        );
    }
    let resp = call(&bob, "echo", "bob-echo");
    assert_limited(
        &resp,
        "calls",
        "/tools/echo/limits/calls",
        2,
        "minute",
        "bob over",
    );

    // m_total (server scope) is at 4 of 9 now. `a` and `z` fit once each; their refusals by
    // a_cap and z_cap take nothing from m_total, so `b` still gets the last three.
    assert!(is_done_ok(&call(&alice, "a", "a0")), "a0");
    assert!(is_done_ok(&call(&bob, "z", "z0")), "z0");
    for i in 1..4 {
        let resp = call(&alice, "a", &format!("a{i}"));
        assert_limited(
            &resp,
            "a_cap",
            "/tools/a/limits/a_cap",
            1,
            "minute",
            "a over",
        );
        let resp = call(&alice, "z", &format!("z{i}"));
        assert_limited(
            &resp,
            "z_cap",
            "/tools/z/limits/z_cap",
            1,
            "minute",
            "z over",
        );
    }
    for (i, s) in [&alice, &bob, &alice].into_iter().enumerate() {
        assert!(
            is_done_ok(&call(s, "b", &format!("b{i}"))),
            "b{i} fits in m_total"
        );
    }
    let resp = call(&bob, "b", "b-over");
    let rule = "/all_tools/limits/m_total";
    assert_limited(&resp, "m_total", rule, 9, "minute", "m_total over");

    let reached: Vec<String> = upstream_calls(&p.record).into_iter().map(|c| c.0).collect();
    assert_eq!(
        reached,
        [
            "nosuch", "nosuch", "nosuch", "echo", "echo", "fail", "fail", "a", "z", "b", "b", "b"
        ],
        "the calls that reached the upstream"
    );
    assert_no_panic(&p.gw, "redis settlement");
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What one call of the load gave, and when.
struct Seen {
    sent: Instant,
    answered: Instant,
    outcome: Outcome,
}

/// Redis killed mid-load and restarted on the same port: fail closed meanwhile (or open,
/// with `on_error = "allow"`), no panic, and counting again once it is back, without a
/// gateway restart.
#[test]
fn redis_killed_mid_load_and_restarted_is_survived_without_a_gateway_restart() {
    const MAX: usize = 20;
    let deadline = Duration::from_secs(15);
    let mut redis = RedisServer::start();
    let policy = policy(&tool(
        "echo",
        &[limit("calls", "minute", MAX as u64, "grant")],
    ));
    let deny = setup(&calls::redis(&redis.url(), "deny"), &policy, "");
    let allow = setup(&calls::redis(&redis.url(), "allow"), &policy, "");
    let load_sessions = sessions(&deny.gw, ALICE, 3);
    let open = McpSession::open(&allow.gw, "rec", Some(ALICE));

    let seen: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let count_since = |since: Instant, what: fn(&Outcome) -> bool| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|c| c.sent >= since && what(&c.outcome))
            .count()
    };
    let limited = |o: &Outcome| matches!(o, Outcome::Limited { .. });
    let store_down = |o: &Outcome| *o == Outcome::StoreDown;
    let ok = admitted;

    let (t_kill, t_restart) = std::thread::scope(|scope| {
        // However this closure ends (a failed assertion too), the loaders stop, so the scope
        // can join them.
        let _stop = StopOnDrop(&stop);
        // Three agents calling in a loop on three sessions of one grant.
        let loaders: Vec<_> = load_sessions
            .iter()
            .enumerate()
            .map(|(w, s)| {
                let (seen, stop) = (&seen, &stop);
                scope.spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let t = timed_call(s, "echo", &format!("load-{w}-{i}"));
                        let o = outcome(&t.resp);
                        match &o {
                            Outcome::Limited { .. } => {
                                let rule = "/tools/echo/limits/calls";
                                assert_limited(&t.resp, "calls", rule, 20, "minute", "load");
                            }
                            Outcome::StoreDown => assert_store_down(&t.resp, "load"),
                            Outcome::Done {
                                is_error: false, ..
                            } => {}
                            other => panic!("load call {w}-{i}: unexpected {other:?}: {}", t.resp),
                        }
                        seen.lock().unwrap().push(Seen {
                            sent: t.sent,
                            answered: t.answered,
                            outcome: o,
                        });
                        i += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        // A loader that stopped on its own failed: stop waiting, its panic is the report.
        let failed = || loaders.iter().any(|l| l.is_finished());
        let start = Instant::now();
        // At least n calls sent since `since` gave `what` (false on a deadline or a failure).
        let seen_since = |since: Instant, what: fn(&Outcome) -> bool, n: usize| {
            wait_for(deadline, || failed() || count_since(since, what) >= n) && !failed()
        };
        if !seen_since(start, limited, 1) {
            panic!("the load never filled the counter while Redis was up");
        }

        // The counter is shared through Redis: the other gateway's calls are over it too.
        let resp = call(&open, "echo", "open-before");
        let rule = "/tools/echo/limits/calls";
        assert_limited(
            &resp,
            "calls",
            rule,
            20,
            "minute",
            "the allow gateway, Redis up",
        );

        redis.kill();
        let t_kill = Instant::now();
        if !seen_since(t_kill, store_down, 3) {
            panic!("no call was refused with (counter store unavailable) while Redis was down");
        }
        // The allow gateway lets calls through, uncounted, while Redis is down (before, its
        // calls were over the shared limit).
        for i in 0..3 {
            let m = format!("open-{i}");
            assert_echo(
                &call(&open, "echo", &m),
                &m,
                "on_error = allow during the outage",
            );
        }

        let t_restart = Instant::now();
        redis.restart();
        if !seen_since(t_restart, ok, 1) {
            panic!("calls were not admitted again after Redis came back");
        }
        if !seen_since(t_restart, limited, 1) {
            panic!("the counter did not fill again after Redis came back");
        }
        stop.store(true, Ordering::Relaxed);
        for l in loaders {
            l.join().expect("load thread");
        }
        (t_kill, t_restart)
    });

    let seen = seen.into_inner().unwrap();
    // Sent after the kill and answered before the restart began: Redis was down throughout.
    for c in seen
        .iter()
        .filter(|c| c.sent > t_kill && c.answered < t_restart)
    {
        assert_eq!(c.outcome, Outcome::StoreDown, "a call during the outage");
    }
    // The counter was full before the kill, and the restarted Redis is empty: every call
    // admitted after the kill was counted anew.
    let before = seen
        .iter()
        .filter(|c| c.sent < t_kill && ok(&c.outcome))
        .count();
    let after = seen
        .iter()
        .filter(|c| c.sent >= t_kill && ok(&c.outcome))
        .count();
    assert_eq!(before, MAX, "admitted before the outage");
    assert_eq!(
        after, MAX,
        "admitted after Redis came back empty: counted again, up to max"
    );
    assert_eq!(
        upstream_count(&deny.record, "echo"),
        2 * MAX,
        "the deny gateway's upstream got exactly the admitted calls"
    );
    assert_eq!(
        upstream_messages(&allow.record, "echo"),
        ["open-0", "open-1", "open-2"],
        "the allow gateway's upstream"
    );
    assert_no_panic(&deny.gw, "on_error = deny");
    assert_no_panic(&allow.gw, "on_error = allow");
}

/// A gateway whose Redis is down when it starts serves (denying limited calls) and counts
/// once Redis is up, without a restart.
#[test]
fn a_gateway_started_while_redis_is_down_counts_once_it_is_up() {
    let mut redis = RedisServer::not_started(free_port());
    let policy = policy(&format!(
        r#"{}, "free": {{}}"#,
        tool("echo", &[limit("calls", "minute", 2, "grant")])
    ));
    let p = setup(&calls::redis(&redis.url(), "deny"), &policy, "free");
    let s = McpSession::open(&p.gw, "rec", Some(ALICE));
    assert_store_down(&call(&s, "echo", "down"), "Redis not started yet");
    assert!(
        is_done_ok(&call(&s, "free", "free")),
        "a call without limits does not need the store"
    );

    redis.restart();
    let mut admitted = 0;
    let back = wait_for(Duration::from_secs(15), || {
        let resp = call(&s, "echo", &format!("up-{admitted}"));
        if is_done_ok(&resp) {
            admitted += 1;
            return true;
        }
        assert_store_down(&resp, "while Redis starts");
        false
    });
    assert!(back, "calls were not admitted after Redis started");
    assert!(
        is_done_ok(&call(&s, "echo", "up-1")),
        "the second call fits"
    );
    let resp = call(&s, "echo", "up-2");
    assert_limited(
        &resp,
        "calls",
        "/tools/echo/limits/calls",
        2,
        "minute",
        "counted",
    );
    assert_eq!(upstream_count(&p.record, "echo"), 2, "upstream calls");
    assert_no_panic(&p.gw, "redis down at start");
}

/// A Redis that stops answering (SIGSTOP: a hung server or a partition) fails calls fast
/// and closed, not after the request timeout; service resumes when it answers again, and
/// the calls refused meanwhile took no quota (they did not happen).
#[test]
fn a_hung_redis_fails_calls_fast_and_refused_calls_take_no_quota() {
    let redis = RedisServer::start();
    let policy = policy(&tool("echo", &[limit("calls", "minute", 5, "grant")]));
    let p = setup(&calls::redis(&redis.url(), "deny"), &policy, "");
    let s = McpSession::open(&p.gw, "rec", Some(ALICE));
    assert_echo(&call(&s, "echo", "before"), "before", "Redis up");

    redis.signal(libc::SIGSTOP);
    let hung = std::thread::scope(|scope| {
        // Several calls at once while it hangs: each is refused on its own, within seconds.
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let t = timed_call(s, "echo", &format!("hung-{i}"));
                    (t.answered.duration_since(t.sent), t.resp)
                })
            })
            .collect();
        waiting
            .into_iter()
            .map(|w| w.join().expect("caller"))
            .collect::<Vec<_>>()
    });
    redis.signal(libc::SIGCONT);
    // The gateway cancels the reservations whose answers never came; a cancel sent while
    // Redis was paused may need its retry (every 100 ms, after a reconnect): give it time,
    // as an operator's next call would, before counting what is left.
    std::thread::sleep(Duration::from_secs(3));
    for (took, resp) in &hung {
        assert_store_down(resp, "Redis hung");
        assert!(
            *took < Duration::from_secs(5),
            "a call took {took:?} to be refused while Redis hung"
        );
    }

    // Once Redis answers again, the quota is what the one admitted call left: 4 more.
    let mut outcomes = Vec::new();
    let settled = wait_for(Duration::from_secs(15), || {
        let resp = call(&s, "echo", &format!("after-{}", outcomes.len()));
        let o = outcome(&resp);
        match &o {
            Outcome::StoreDown => {}
            Outcome::Limited { .. } => {
                assert_limited(
                    &resp,
                    "calls",
                    "/tools/echo/limits/calls",
                    5,
                    "minute",
                    "after",
                );
            }
            o if admitted(o) => {}
            other => panic!("after Redis woke up: unexpected {other:?}: {resp}"),
        }
        outcomes.push(o);
        matches!(outcomes.last(), Some(Outcome::Limited { .. }))
    });
    assert!(
        settled,
        "the counter never filled again after Redis woke up: {outcomes:?}"
    );
    let after = outcomes.iter().filter(|o| admitted(o)).count();
    assert_eq!(
        after, 4,
        "after Redis woke up, 4 of the 5 calls a minute were left (only \"before\" was \
         admitted); fewer means the calls refused with (counter store unavailable) while it \
         hung were counted when Redis ran their scripts late"
    );
    assert_eq!(
        upstream_count(&p.record, "echo"),
        1 + after,
        "upstream calls: {:?}",
        upstream_messages(&p.record, "echo")
    );
    assert_no_panic(&p.gw, "hung redis");
}
