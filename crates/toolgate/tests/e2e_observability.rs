//! Watching the gateway (SPEC 7, issue 6): `GET /metrics` scraped and parsed with the
//! `prometheus-parse` crate while calls are made, `GET /readyz` following a required server
//! and the counter store going down and up, and `--log-format json` logs whose request span
//! carries the request id of the `x-request-id` header and of the audit record.

mod common;
#[path = "audit_support/journal.rs"]
mod journal;
#[path = "audit_support/metrics.rs"]
mod metrics;
#[path = "audit_support/setup.rs"]
mod setup;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{ALLOW_ALL, Gateway, McpSession, free_port, initialize_body, poll_until, tool_text};
use journal::*;
use metrics::*;
use serde_json::{Value, json};
use setup::*;

const CALLS: &str = "toolgate_calls_total";
const REFUSED: &str = "toolgate_refused_requests_total";
const DECISION: &str = "toolgate_decision_seconds";
const UPSTREAM: &str = "toolgate_upstream_seconds";
const SESSIONS: &str = "toolgate_open_sessions";
const RESTARTS: &str = "toolgate_upstream_child_restarts_total";
const QUEUE: &str = "toolgate_audit_queue_depth";

/// A tool name no policy or server knows: it must never become a label value.
const MADE_UP: &str = "zz_made_up_tool_4711";

fn calls(m: &Metrics, tool: &str, outcome: &str) -> f64 {
    m.value(
        CALLS,
        &[("server", "rec"), ("tool", tool), ("outcome", outcome)],
    )
}

/// The tools and outcomes the metrics tests count, in the order `assert_outcomes` takes.
const OUTCOMES: [(&str, &str); 6] = [
    ("echo", "allow"),
    ("echo", "deny"),
    ("slow", "allow"),
    ("slow", "limited"),
    ("exit", "upstream_error"),
    ("(other)", "unknown"),
];

/// `toolgate_calls_total` of each of `OUTCOMES` is its count in `counts`.
fn assert_outcomes(m: &Metrics, counts: [f64; 6]) {
    let got = OUTCOMES.map(|(tool, outcome)| (tool, outcome, calls(m, tool, outcome)));
    let want: Vec<_> = OUTCOMES
        .iter()
        .zip(counts)
        .map(|(&(t, o), n)| (t, o, n))
        .collect();
    assert_eq!(got.to_vec(), want, "{CALLS}:\n{}", m.text);
}

/// With the audit off, the trail fills a call's record only as far as the metrics read it:
/// they still count every outcome by tool.
#[test]
fn metrics_count_calls_with_the_audit_off() {
    let a = audit_setup("enabled = false", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    call(&s, "echo", json!({"message": "one"}), "allow");
    call(&s, "echo", json!({"message": "forbidden"}), "deny");
    call(&s, MADE_UP, json!({}), "unknown");
    call(&s, "slow", json!({"seconds": 0}), "slow, allowed");
    call(&s, "slow", json!({"seconds": 0}), "slow, limited");
    call(&s, "exit", json!({}), "upstream error");
    let m = scrape_when(gw, |m| {
        OUTCOMES
            .iter()
            .all(|(tool, outcome)| calls(m, tool, outcome) >= 1.0)
    });
    assert_outcomes(&m, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert!(journal(gw).is_empty(), "the audit is off");
}

#[test]
fn metrics_move_as_calls_are_made() {
    let a = audit_setup("", &[]);
    let gw = &a.gw;
    let m0 = scrape(gw);
    assert!(m0.has(QUEUE), "no {QUEUE}:\n{}", m0.text);
    assert!(m0.has(SESSIONS), "no {SESSIONS}:\n{}", m0.text);
    assert_eq!(m0.value(SESSIONS, &[]), 0.0);
    assert_eq!(calls(&m0, "echo", "allow"), 0.0);

    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let s2 = McpSession::open(gw, "rec", Some(SECOND_TOKEN));
    let m1 = scrape(gw);
    assert_eq!(m1.value(SESSIONS, &[]), 2.0, "two open sessions");

    call(&s, "echo", json!({"message": "one"}), "allow 1");
    call(&s2, "echo", json!({"message": "two"}), "allow 2");
    call(&s, "echo", json!({"message": "forbidden"}), "deny");
    call(&s, MADE_UP, json!({}), "unknown");
    call(&s, "pid", json!({}), "hidden");
    call(&s, "slow", json!({"seconds": 0}), "slow, allowed");
    call(&s, "slow", json!({"seconds": 0}), "slow, limited");
    call(&s, "exit", json!({}), "upstream error");
    // The recorder died with `exit`: this call restarts it.
    call(
        &s,
        "echo",
        json!({"message": "three"}),
        "allow 3, after a restart",
    );
    let unauthorized = gw
        .post("rec")
        .json(&call_body("echo", json!({"message": "x"})))
        .send();
    assert_eq!(unauthorized.status, 401);

    let m2 = scrape(gw);
    assert_outcomes(&m2, [3.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    let hidden: f64 = m2
        .samples(CALLS, &[("server", "rec"), ("outcome", "hidden")])
        .iter()
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => panic!("{CALLS} is not a counter"),
        })
        .sum();
    assert_eq!(hidden, 1.0, "hidden calls:\n{}", m2.text);
    assert_eq!(
        m2.value(REFUSED, &[("status", "401")]) - m1.value(REFUSED, &[("status", "401")]),
        1.0,
        "{REFUSED}{{status=\"401\"}}:\n{}",
        m2.text
    );
    // Every tools/call is decided; the forwarded ones (4 allowed, 1 failing) took upstream time.
    assert_eq!(
        m2.histogram_count(DECISION, &[("server", "rec")]),
        9.0,
        "{DECISION}:\n{}",
        m2.text
    );
    assert_eq!(
        m2.histogram_count(UPSTREAM, &[("server", "rec")]),
        5.0,
        "{UPSTREAM}:\n{}",
        m2.text
    );
    assert_eq!(m2.value(RESTARTS, &[("server", "rec")]), 1.0, "{}", m2.text);
    assert_eq!(
        m2.value(QUEUE, &[]),
        0.0,
        "nothing waits to be written at rest"
    );
    // A name the agent made up is no label: it is counted as (other).
    assert!(
        !m2.text.contains(MADE_UP),
        "the made-up tool name is in the metrics:\n{}",
        m2.text
    );
    let labels = m2.label_values();
    assert!(
        labels.iter().all(|v| v != "pid" && v != MADE_UP),
        "{labels:?}"
    );

    let r = s2.delete();
    assert!(r.status < 300, "DELETE: {} {}", r.status, r.text());
    let m3 = scrape(gw);
    assert_eq!(m3.value(SESSIONS, &[]), 1.0, "one session left");
    // Counters never go back.
    assert_eq!(calls(&m3, "echo", "allow"), 3.0);
}

// ---- /readyz ---------------------------------------------------------------------------------

/// GET /readyz: the status and the JSON body.
fn readyz(gw: &Gateway) -> (u16, Value) {
    let started = Instant::now();
    let r = gw
        .request("GET", "/readyz")
        .timeout(Duration::from_secs(10))
        .send();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "/readyz took {:?}",
        started.elapsed()
    );
    let body: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {}", r.text()));
    (r.status, body)
}

fn wait_ready(gw: &Gateway, status: u16) -> (u16, Value) {
    let mut last = (0, Value::Null);
    poll_until(Duration::from_secs(10), || {
        last = readyz(gw);
        last.0 == status
    });
    last
}

#[test]
fn readyz_follows_a_required_server_down_and_up() {
    let (required, optional) = (free_port(), free_port());
    let toml = format!(
        "[servers.up]\nurl = \"http://127.0.0.1:{required}/mcp\"\nrequired = true\npolicy = \"{ALLOW_ALL}\"\n\n\
         [servers.spare]\nurl = \"http://127.0.0.1:{optional}/mcp\"\npolicy = \"{ALLOW_ALL}\"\n\n\
         [grants.a]\nserver = \"up\"\ntoken_env = \"A_TOKEN\"\n"
    );
    let gw = Gateway::start(&toml, &[("A_TOKEN", AGENT_TOKEN)]);
    let (status, body) = readyz(&gw);
    assert_eq!(status, 503, "a required server is down: {body}");
    assert_eq!(body["ready"], false, "{body}");
    let check = body["checks"]["server:up"].as_str().unwrap_or("");
    assert!(!check.is_empty() && check != "ok", "{body}");
    assert_eq!(body["checks"]["state_store"], "ok", "{body}");
    assert!(
        body["checks"].get("server:spare").is_none(),
        "a server that is not required is not checked: {body}"
    );

    // Something listens on the port now.
    let listener = TcpListener::bind(("127.0.0.1", required)).expect("bind the required port");
    let (status, body) = wait_ready(&gw, 200);
    assert_eq!(status, 200, "the required server is up: {body}");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["checks"]["server:up"], "ok", "{body}");

    drop(listener);
    let (status, body) = wait_ready(&gw, 503);
    assert_eq!(status, 503, "down again: {body}");
    let health = gw.request("GET", "/healthz").send();
    assert_eq!(health.status, 200, "alive, only not ready");
}

#[test]
fn readyz_is_503_while_the_redis_counter_store_is_down() {
    let closed = free_port();
    let toml = format!(
        "{}\n[counters]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{closed}\"\n",
        common::grant_toml("a", "rec", "A_TOKEN")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let toml = format!(
        "{}{toml}",
        common::recorder_server_toml("rec", &record, &[])
    );
    let gw = Gateway::start_in(dir, &toml, &[("A_TOKEN", AGENT_TOKEN)]);
    let (status, body) = readyz(&gw);
    assert_eq!(status, 503, "the counter store is down: {body}");
    assert_eq!(body["ready"], false, "{body}");
    let check = body["checks"]["counter_store"].as_str().unwrap_or("");
    assert!(!check.is_empty() && check != "ok", "{body}");
    assert_eq!(body["checks"]["state_store"], "ok", "{body}");
}

// ---- Logs ------------------------------------------------------------------------------------

/// Every line of a `--log-format json` log, parsed; panics on a line that is not a JSON object
/// with a timestamp, a level and fields.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("a log line that is not JSON ({e}): {l:?}\nthe whole log:\n{log}")
            });
            for k in ["timestamp", "level", "fields", "target"] {
                assert!(v.get(k).is_some(), "a log line without {k}: {l}");
            }
            v
        })
        .collect()
}

/// The log lines written inside the request span of `request_id`.
fn lines_of<'a>(lines: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["span"]["request_id"] == request_id)
        .collect()
}

#[test]
fn json_logs_carry_the_request_id_of_the_header_and_the_audit_record() {
    let a = audit_setup("", &[("TOOLGATE_LOG_FORMAT", "json")]);
    let gw = &a.gw;
    // initialize starts the stdio server, inside its request's span (no audit record: not
    // a tools/call).
    let init = send(
        gw.post("rec").token(AGENT_TOKEN).json(&initialize_body(1)),
        "initialize",
    );
    assert_eq!(init.resp.status, 200, "{}", init.resp.text());
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let died = call(&s, "exit", json!({}), "exit");
    // The next call finds the server dead and restarts it: the gateway says so in its span.
    let after = call(&s, "echo", json!({"message": "again"}), "after the restart");
    assert_eq!(tool_text(&after.json()), "Echo: again");

    let records = journal(gw);
    let record = only_record(&records, &after.request_id, "after the restart");
    assert_eq!(record["outcome"], "allow", "{record}");
    assert_eq!(
        only_record(&records, &died.request_id, "exit")["outcome"],
        "upstream_error"
    );

    let log = gw.log_with_line("the restart", |l| {
        l.contains(after.request_id.as_str()) && l.contains("restarting")
    });
    let lines = json_lines(&log);
    let mine = lines_of(&lines, &after.request_id);
    let messages: Vec<&str> = mine
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("restarting")),
        "no line about the restart in the span of request {} (the record's and the \
         x-request-id's); its lines: {messages:?}\nlog:\n{log}",
        after.request_id
    );
    for l in &mine {
        assert_eq!(l["span"]["name"], "request", "{l}");
        assert_eq!(l["span"]["server"], "rec", "{l}");
        assert_eq!(l["span"]["method"], "tools/call", "{l}");
        let spans = l["spans"].as_array().expect("spans");
        assert!(
            spans
                .iter()
                .any(|sp| sp["request_id"] == after.request_id.as_str()),
            "{l}"
        );
    }
    let init_lines = lines_of(&lines, &init.request_id);
    assert!(
        init_lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("started stdio server"))
            && l["span"]["method"] == "initialize"),
        "the initialize request's span has no line about starting the server: {init_lines:?}"
    );
    // Request ids are each request's own.
    assert_ne!(init.request_id, after.request_id);
    assert!(lines_of(&lines, &died.request_id).iter().all(|l| {
        !l["fields"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("restarting")
    }));
}

/// With `--log-format json`, the first start (no TOOLGATE_ADMIN_TOKEN: the gateway makes
/// one) must keep stderr JSON lines only: a log shipper reads every line.
#[test]
fn json_logs_of_a_first_start_are_json_lines_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let toml = format!(
        "{}{}",
        common::recorder_server_toml("rec", &record, &[]),
        common::grant_toml("a", "rec", "A_TOKEN")
    );
    let gw = Gateway::start_in(
        dir,
        &toml,
        &[("A_TOKEN", AGENT_TOKEN), ("TOOLGATE_LOG_FORMAT", "json")],
    );
    let log = gw.log();
    let not_json: Vec<&str> = log
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
        .collect();
    assert!(
        not_json.is_empty(),
        "stderr lines that are not JSON under --log-format json: {not_json:?}"
    );
}
