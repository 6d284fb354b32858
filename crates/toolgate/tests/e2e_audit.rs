//! The audit trail through the real gateway (SPEC 7, issue 6): one record per `tools/call`
//! and per refused request, with the right fields for every outcome; secrets in arguments
//! never reaching the state directory, the logs or the metrics, in every `[audit] arguments`
//! mode; no answered call's record lost to a SIGKILL under load; and `toolgate audit
//! tail|query|export`, on the state directory and through the admin API.
//!
//! Records are read straight from the journal right after the answer arrives: the gateway
//! writes a record before the answer leaves, so there is nothing to wait for.

mod common;
#[path = "audit_support/journal.rs"]
mod journal;
#[path = "audit_support/setup.rs"]
mod setup;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    ALLOW_ALL, EverythingHttp, Gateway, McpSession, PROTOCOL, RECORDER_TOOLS, RecorderHttp, Req,
    Spawned, grant_toml, http_server_toml, json_lines, poll_until, recorder_py, signal, toml_str,
    tool_text, toolgate_cli, toolgate_command,
};
use journal::*;
use serde_json::{Value, json};
use setup::*;

// ---- 1. One record per call of every outcome, and per refused request ----------------------

#[test]
fn every_outcome_of_a_call_gets_exactly_one_record_with_its_fields() {
    let a = audit_setup("", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let sid = json!(s.id);
    // Successful requests that are not tools/call leave no record.
    let quiet = [
        request(&s, "tools/list", json!({}), "tools/list").request_id,
        request(&s, "ping", json!({}), "ping").request_id,
    ];

    let allow = call(&s, "echo", json!({"message": "hello"}), "allow");
    assert_eq!(tool_text(&allow.json()), "Echo: hello");
    let deny = call(&s, "echo", json!({"message": "forbidden"}), "deny");
    assert_eq!(deny.json()["result"]["isError"], true, "{}", deny.json());
    let hidden = call(&s, "pid", json!({}), "hidden");
    let unknown = call(&s, "made_up_tool", json!({"q": 1}), "unknown");
    for (a, name) in [(&hidden, "pid"), (&unknown, "made_up_tool")] {
        assert_eq!(
            a.json()["error"],
            json!({"code": -32602, "message": format!("Unknown tool: {name}")})
        );
    }
    let first_slow = call(&s, "slow", json!({"seconds": 0}), "slow within its limit");
    assert_eq!(tool_text(&first_slow.json()), "slept 0");
    let limited = call(&s, "slow", json!({"seconds": 0}), "limited");
    assert_eq!(
        limited.json()["result"]["isError"],
        true,
        "{}",
        limited.json()
    );
    // `exit` kills the recorder mid-call: the agent gets a JSON-RPC error.
    let died = call(&s, "exit", json!({}), "upstream error");
    assert!(died.json()["error"]["code"].is_i64(), "{}", died.json());

    let records = journal(gw);
    for id in &quiet {
        assert!(
            with_request_id(&records, id).is_empty(),
            "a successful request that is not tools/call has a record:\n{}",
            pretty(&records)
        );
    }
    assert_eq!(
        records.len(),
        7,
        "seven calls, seven records, nothing else (initialize, notifications, tools/list, ping \
         leave none):\n{}",
        pretty(&records)
    );
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "sequence numbers");

    let base = json!({
        "grant_id": "config:agent", "grant_label": "agent", "session": sid, "server": "rec",
        "method": "tools/call", "rule": null, "policy_version": 1, "http_status": 200,
        "upstream_status": null, "message": null,
    });
    let with = |extra: Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let cases = [
        (
            "allow",
            &allow,
            true,
            with(json!({"tool": "echo", "argument_keys": ["message"],
                        "arguments": {"message": "hello"}, "outcome": "allow",
                        "upstream_status": "ok"})),
        ),
        (
            "deny",
            &deny,
            false,
            with(json!({"tool": "echo", "argument_keys": ["message"],
                        "arguments": {"message": "forbidden"}, "outcome": "deny",
                        "rule": "/tools/echo/deny_if/0"})),
        ),
        (
            "hidden",
            &hidden,
            false,
            with(json!({"tool": "pid", "argument_keys": [], "arguments": {},
                        "outcome": "hidden", "rule": "(hidden)"})),
        ),
        (
            "unknown",
            &unknown,
            false,
            with(
                json!({"tool": "made_up_tool", "argument_keys": ["q"], "arguments": {"q": 1},
                        "outcome": "unknown"}),
            ),
        ),
        (
            "allowed slow",
            &first_slow,
            true,
            with(json!({"tool": "slow", "argument_keys": ["seconds"],
                        "arguments": {"seconds": 0}, "outcome": "allow",
                        "upstream_status": "ok"})),
        ),
        (
            "limited",
            &limited,
            false,
            with(json!({"tool": "slow", "argument_keys": ["seconds"],
                        "arguments": {"seconds": 0}, "outcome": "limited",
                        "rule": "/tools/slow/limits/slow_once"})),
        ),
        (
            "upstream error",
            &died,
            true,
            with(json!({"tool": "exit", "argument_keys": [], "arguments": {},
                        "outcome": "upstream_error",
                        "upstream_status": format!("error {}", died.json()["error"]["code"])})),
        ),
    ];
    for (case, answered, forwarded, expected) in cases {
        let r = only_record(&records, &answered.request_id, case);
        assert_eq!(
            stable_part(r, forwarded, case),
            expected,
            "{case}: the record (left) against what it must say (right)"
        );
    }
    // The time is when the request arrived: in call order.
    let times: Vec<&str> = records
        .iter()
        .map(|r| r["time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn every_refused_request_gets_exactly_one_record() {
    let a = audit_setup("", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let echo = call_body("echo", json!({"message": "hi"}));
    let grant = json!({"grant_id": "config:agent", "grant_label": "agent"});
    // (case, request, HTTP status, JSON-RPC code, the record's grant fields, session, method)
    let cases: Vec<(&str, Req, u16, i64, Value, Value, Value)> = vec![
        (
            "401 without a token",
            gw.post("rec").json(&echo),
            401,
            -32600,
            json!({"grant_id": null, "grant_label": null}),
            Value::Null,
            Value::Null,
        ),
        (
            "401 with a wrong token",
            gw.post("rec")
                .token("tg_not_a_grant_token_at_all_000000")
                .json(&echo),
            401,
            -32600,
            json!({"grant_id": null, "grant_label": null}),
            Value::Null,
            Value::Null,
        ),
        (
            "404 for an unknown session",
            gw.post("rec")
                .token(AGENT_TOKEN)
                .session("00000000000000000000000000000000")
                .header("mcp-protocol-version", PROTOCOL)
                .json(&echo),
            404,
            -32600,
            grant.clone(),
            Value::Null,
            json!("tools/call"),
        ),
        (
            "413 for a body over max_body_bytes",
            s.post().json(&call_body(
                "echo",
                json!({"message": "x".repeat(MAX_BODY + 10)}),
            )),
            413,
            -32600,
            grant.clone(),
            Value::Null,
            Value::Null,
        ),
        (
            "-32700 for malformed JSON",
            s.post()
                .body(r#"{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "#),
            400,
            -32700,
            grant.clone(),
            Value::Null,
            Value::Null,
        ),
        (
            "-32602 for tools/call arguments that are not an object",
            s.post()
                .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                  "params": {"name": "echo", "arguments": "not an object"}})),
            200,
            -32602,
            grant.clone(),
            json!(s.id),
            json!("tools/call"),
        ),
    ];
    let mut answered = Vec::new();
    for (case, req, status, code, grant_fields, session, method) in cases {
        let a = send(req, case);
        assert_eq!(a.resp.status, status, "{case}: {}", a.resp.text());
        let err = a.json()["error"].clone();
        assert_eq!(err["code"], code, "{case}: {}", a.resp.text());
        answered.push((case, a, status, err, grant_fields, session, method));
    }
    // 403: a valid token, of a grant for another server (its grant is checked on its own, in
    // `a_403_names_the_grant_whose_token_was_used`).
    let wrong_server = send(
        gw.post("rec").token(ELSEWHERE_TOKEN).json(&echo),
        "403 with the token of another server",
    );
    assert_eq!(
        wrong_server.resp.status,
        403,
        "{}",
        wrong_server.resp.text()
    );

    let records = journal(gw);
    assert_eq!(
        records.len(),
        answered.len() + 1,
        "one record per refused request and nothing else:\n{}",
        pretty(&records)
    );
    for (case, a, status, err, grant_fields, session, method) in &answered {
        let r = only_record(&records, &a.request_id, case);
        let mut expected = json!({
            "server": "rec", "session": session, "method": method, "tool": null,
            "argument_keys": [], "arguments": null, "outcome": "refused", "rule": null,
            "policy_version": null, "http_status": status, "upstream_status": null,
            // The record says why, in the words the agent got.
            "message": err["message"],
        });
        for (k, v) in grant_fields.as_object().unwrap() {
            expected[k] = v.clone();
        }
        assert_eq!(stable_part(r, false, case), expected, "{case}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: {err}"
        );
    }
    let r = only_record(&records, &wrong_server.request_id, "403");
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["http_status"], 403, "{r}");
    assert_eq!(r["server"], "rec", "{r}");
    assert_eq!(r["message"], wrong_server.json()["error"]["message"], "{r}");
}

/// A 403 for a token of another server's grant: the token was valid, so the record can and
/// must say whose it was (which agent knocked on the wrong door).
#[test]
fn a_403_names_the_grant_whose_token_was_used() {
    let a = audit_setup("", &[]);
    let wrong_server = send(
        a.gw.post("rec")
            .token(ELSEWHERE_TOKEN)
            .json(&call_body("echo", json!({}))),
        "403",
    );
    assert_eq!(
        wrong_server.resp.status,
        403,
        "{}",
        wrong_server.resp.text()
    );
    let records = journal(&a.gw);
    let r = only_record(&records, &wrong_server.request_id, "403");
    assert_eq!(
        (r["grant_id"].clone(), r["grant_label"].clone()),
        (json!("config:elsewhere"), json!("elsewhere")),
        "the 403 record does not name the grant whose (valid) token was used: {r}"
    );
}

/// Over a Streamable HTTP upstream answering with SSE (server-everything), the call's record
/// is written from the stream; when the upstream is gone, the call is an upstream error, and
/// the gateway's warning about it is logged in the request's span, with its request id.
#[test]
fn calls_through_an_http_upstream_are_recorded_streamed_or_failed() {
    let every = EverythingHttp::start();
    let toml = format!(
        "{}{}",
        http_server_toml("every", &every.url(), ALLOW_ALL, ""),
        grant_toml("agent", "every", "AGENT_TOKEN")
    );
    let mut every = every;
    let gw = Gateway::start(&toml, &[("AGENT_TOKEN", AGENT_TOKEN)]);
    let s = McpSession::open(&gw, "every", Some(AGENT_TOKEN));
    let ok = call(&s, "echo", json!({"message": "over sse"}), "streamed");
    assert!(
        ok.resp.is_sse(),
        "server-everything answers with SSE: {:?}",
        ok.resp
    );
    assert_eq!(tool_text(&ok.json()), "Echo: over sse");
    every.process.kill();
    let failed = call(
        &s,
        "echo",
        json!({"message": "nobody there"}),
        "upstream gone",
    );
    assert!(failed.json().get("error").is_some(), "{}", failed.json());

    let records = journal(&gw);
    assert_eq!(records.len(), 2, "{}", pretty(&records));
    let base = json!({"grant_id": "config:agent", "grant_label": "agent", "session": s.id,
                      "server": "every", "method": "tools/call", "tool": "echo",
                      "argument_keys": ["message"], "rule": null, "policy_version": 1,
                      "http_status": 200, "message": null});
    let mut want_ok = base.clone();
    want_ok["arguments"] = json!({"message": "over sse"});
    want_ok["outcome"] = json!("allow");
    want_ok["upstream_status"] = json!("ok");
    let r = only_record(&records, &ok.request_id, "streamed");
    assert_eq!(stable_part(r, true, "streamed"), want_ok);
    let r = only_record(&records, &failed.request_id, "upstream gone");
    let mut want_failed = base;
    want_failed["arguments"] = json!({"message": "nobody there"});
    want_failed["outcome"] = json!("upstream_error");
    want_failed["upstream_status"] = r["upstream_status"].clone();
    want_failed["http_status"] = r["http_status"].clone();
    assert_eq!(stable_part(r, true, "upstream gone"), want_failed);
    let upstream_status = r["upstream_status"].as_str().unwrap_or("");
    assert!(
        upstream_status.starts_with("error ") || upstream_status.starts_with("http "),
        "{r}"
    );
    // The text log: the warning inside the span `request{request_id=...}`.
    let in_span = format!("request_id=\"{}\"", failed.request_id);
    gw.log_with_line(&format!("the warning in the span of {in_span}"), |l| {
        l.contains(&in_span) && l.contains("upstream request failed")
    });
}

/// A call the policy allowed but that could not go on (the gateway could not ask the upstream
/// whether it has the tool: it is down) is still a tools/call of a named tool with arguments:
/// its record must say which tool, with which argument names.
#[test]
fn a_call_refused_after_its_decision_keeps_its_tool_in_the_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut upstream = RecorderHttp::start(&dir.path().join("rec-http.jsonl"));
    let toml = format!(
        "{}{}",
        http_server_toml("rec", &upstream.url(), ALLOW_ALL, ""),
        grant_toml("agent", "rec", "AGENT_TOKEN")
    );
    let gw = Gateway::start_in(dir, &toml, &[("AGENT_TOKEN", AGENT_TOKEN)]);
    let s = McpSession::open(&gw, "rec", Some(AGENT_TOKEN));
    call(&s, "echo", json!({"message": "up"}), "while up");
    upstream.process.kill();
    let failed = call(&s, "not_listed_tool", json!({"k": "v"}), "upstream down");
    assert!(failed.json().get("error").is_some(), "{}", failed.json());
    let records = journal(&gw);
    let r = only_record(&records, &failed.request_id, "upstream down");
    assert_eq!(
        (&r["method"], &r["tool"], &r["argument_keys"]),
        (
            &json!("tools/call"),
            &json!("not_listed_tool"),
            &json!(["k"])
        ),
        "the record of an allowed call that failed before reaching the upstream: {r}"
    );
    assert_ne!(r["outcome"], "allow", "{r}");
}

/// `[audit] enabled = false`: calls go through, nothing is written.
#[test]
fn a_disabled_audit_writes_nothing() {
    let a = audit_setup("enabled = false", &[]);
    let s = McpSession::open(&a.gw, "rec", Some(AGENT_TOKEN));
    let answered = call(&s, "echo", json!({"message": "unrecorded"}), "allowed");
    assert_eq!(tool_text(&answered.json()), "Echo: unrecorded");
    call(&s, "echo", json!({"message": "forbidden"}), "denied");
    let r = send(a.gw.post("rec").json(&call_body("echo", json!({}))), "401");
    assert_eq!(r.resp.status, 401);
    assert!(journal(&a.gw).is_empty());
    let hits = files_containing(&state_dir(&a.gw), &["unrecorded", &answered.request_id]);
    assert!(hits.is_empty(), "{hits:?}");
}

// ---- 2. Secrets never reach the state directory, the logs or the metrics -------------------

/// A custom pattern of the config's `secret_patterns`.
const CUSTOM_PATTERN: &str = "CORP-[0-9]{6}";
const CUSTOM_SECRET: &str = "CORP-481516";
/// A value that is no secret: stored in `redacted` and `full` mode, proving the search sees
/// the journal; never stored in `keys` mode.
const BENIGN: &str = "benign-visible-value";

/// Arguments with secrets of every kind the gateway knows, and every secret string in them.
fn secret_arguments(message: &str) -> (Value, Vec<&'static str>) {
    let args = json!({
        "message": message,
        // Under keys that name secrets.
        "password": "pw-SEKRIT-passw0rd-1",
        "api_key": "SEKRIT-apikey-2",
        "token": "SEKRIT-token-3",
        "client_secret": "SEKRIT-client-4",
        "Authorization": "Basic U0VLUklULWJhc2ljLTU=",
        "cookie": "sid=SEKRIT-cookie-6",
        // Credentials by their look, under harmless keys.
        "note": "please use Bearer SEKRITbearer7abcdef for this",
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTRUtSSVQifQ.SEKRITjwtsig8abcdef",
        "aws": "AKIASEKRIT0123456789",
        "ref": AGENT_TOKEN,
        "ticket": CUSTOM_SECRET,
        "nested": {"db": {"password": "SEKRIT-nested-9"}, "list": ["fine", "Bearer SEKRITlisted10abc"]},
        // A secret past the 256 characters `redacted` keeps.
        "blob": format!("{} Bearer SEKRITlong11abcdef", "x".repeat(300)),
        "long": "y".repeat(300),
    });
    let needles = vec![
        "SEKRIT",
        "pw-SEKRIT-passw0rd-1",
        "U0VLUklULWJhc2ljLTU",
        "SEKRITbearer7abcdef",
        "SEKRITjwtsig8abcdef",
        "AKIASEKRIT0123456789",
        CUSTOM_SECRET,
        AGENT_TOKEN,
        SECOND_TOKEN,
        ELSEWHERE_TOKEN,
        ADMIN_TOKEN,
    ];
    (args, needles)
}

/// Makes calls of every outcome (and refusals) carrying secrets, with a grant issued at run
/// time too, then stops the gateway and searches every file of its state directory, its
/// whole log and a metrics scrape for every secret.
fn secrets_stay_out(mode: &str, log_env: &[(&str, &str)]) {
    let a = audit_setup(
        &format!(
            "arguments = \"{mode}\"\nsecret_patterns = [{}]",
            toml_str(CUSTOM_PATTERN)
        ),
        log_env,
    );
    let gw = &a.gw;
    let (args, mut needles) = secret_arguments(BENIGN);
    let with = |extra: Value| {
        let mut v = args.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let allowed = call(&s, "echo", args.clone(), "allowed");
    assert_eq!(tool_text(&allowed.json()), format!("Echo: {BENIGN}"));
    call(&s, "echo", with(json!({"message": "forbidden"})), "denied");
    call(&s, "pid", args.clone(), "hidden");
    call(&s, "made_up_tool", args.clone(), "unknown");
    call(&s, "slow", with(json!({"seconds": 0})), "allowed, counted");
    call(&s, "slow", with(json!({"seconds": 0})), "limited");
    // Refused: arguments with a key twice (-32602), a wrong token (401).
    let dup = send(
        s.post().body(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"password":"SEKRIT-dup-12","password":"SEKRIT-dup-12"}}}"#,
        ),
        "duplicate key",
    );
    assert_eq!(dup.json()["error"]["code"], -32602, "{}", dup.resp.text());
    let wrong = "tg_SEKRIT_wrong_token_13_abcdefgh";
    let r = send(
        gw.post("rec")
            .token(wrong)
            .json(&call_body("echo", args.clone())),
        "wrong token",
    );
    assert_eq!(r.resp.status, 401);
    // A grant issued at run time (its token is stored only as a hash).
    let issued = gw
        .request("POST", "/admin/api/v1/grants")
        .token(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .json(&json!({"server": "rec", "label": "issued"}))
        .send();
    assert_eq!(issued.status, 201, "issuing a grant: {}", issued.text());
    let issued: Value = serde_json::from_slice(&issued.body).expect("grant JSON");
    let issued_token = issued["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {issued}"))
        .to_string();
    let s2 = McpSession::open(gw, "rec", Some(&issued_token));
    call(&s2, "echo", args.clone(), "allowed, issued grant");

    let metrics = gw.request("GET", "/metrics").send().text();
    assert!(metrics.contains("toolgate_calls_total"), "{metrics}");
    let records = journal(gw);
    assert_eq!(records.len(), 9, "{}", pretty(&records));

    // Stopped cleanly, so that every file (counters.json, the database) is written out.
    let mut a = a;
    a.gw.sigterm();
    assert!(
        a.gw.wait_exit(Duration::from_secs(20)).is_some(),
        "the gateway did not stop on SIGTERM"
    );
    let gw = &a.gw;
    let state = state_dir(gw);
    let searched = files_under(&state);
    for f in ["counters.json", "toolgate.db"] {
        assert!(
            searched.iter().any(|p| p.ends_with(f)),
            "{f} is not in the state directory (searched: {searched:?})"
        );
    }
    assert!(
        searched
            .iter()
            .any(|p| p.to_string_lossy().contains("/audit/")),
        "{searched:?}"
    );
    needles.push(wrong);
    needles.push(&issued_token);
    let hits = files_containing(&state, &needles);
    assert!(
        hits.is_empty(),
        "{mode}: secrets in the state directory: {hits:?}\njournal:\n{}",
        pretty(&records)
    );
    let log = gw.log();
    assert!(log.contains("listening on"), "the log was captured: {log}");
    for n in &needles {
        assert!(!log.contains(n), "{mode}: {n:?} is in the log:\n{log}");
        assert!(
            !metrics.contains(n),
            "{mode}: {n:?} is in the metrics:\n{metrics}"
        );
    }

    // What each mode keeps.
    let benign_stored = !files_containing(&state, &[BENIGN]).is_empty();
    let allowed_record = only_record(&records, &allowed.request_id, "allowed");
    let mut keys: Vec<&str> = allowed_record["argument_keys"]
        .as_array()
        .expect("argument_keys")
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort();
    let mut want: Vec<&str> = args
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    want.sort();
    assert_eq!(keys, want, "{mode}: argument names are kept in every mode");
    match mode {
        "keys" => {
            assert!(!benign_stored, "keys mode stored an argument value");
            for r in &records {
                assert!(r["arguments"].is_null(), "keys mode stored arguments: {r}");
            }
        }
        _ => {
            assert!(benign_stored, "{mode}: the stored arguments are missing");
            let stored = &allowed_record["arguments"];
            for k in [
                "password",
                "api_key",
                "token",
                "client_secret",
                "Authorization",
                "cookie",
            ] {
                assert_eq!(stored[k], "[REDACTED]", "{mode}: {k}: {stored}");
            }
            assert_eq!(stored["message"], BENIGN);
            let long = stored["long"].as_str().expect("long");
            if mode == "full" {
                assert_eq!(long, "y".repeat(300), "full keeps long values whole");
            } else {
                assert!(
                    long.len() < 300 && long.starts_with(&"y".repeat(256)),
                    "redacted cuts long values: {long}"
                );
            }
        }
    }
}

#[test]
fn secrets_stay_out_in_keys_mode_with_json_debug_logs() {
    secrets_stay_out(
        "keys",
        &[("TOOLGATE_LOG_FORMAT", "json"), ("TOOLGATE_LOG", "debug")],
    );
}

#[test]
fn secrets_stay_out_in_redacted_mode_with_text_logs() {
    secrets_stay_out("redacted", &[]);
}

#[test]
fn secrets_stay_out_in_full_mode_with_json_logs() {
    secrets_stay_out("full", &[("TOOLGATE_LOG_FORMAT", "json")]);
}

/// A secret key's value that is an object or a list is still the secret's value.
#[test]
fn values_nested_under_secret_keys_are_masked() {
    let a = audit_setup("arguments = \"full\"", &[]);
    let s = McpSession::open(&a.gw, "rec", Some(AGENT_TOKEN));
    let answered = call(
        &s,
        "echo",
        json!({
            "message": "m",
            "password": {"value": "SEKRIT-under-object-1"},
            "api_key": ["SEKRIT-in-list-2"],
            "credentials": {"user": "bob", "key": "SEKRIT-under-object-3"},
        }),
        "nested secrets",
    );
    let records = journal(&a.gw);
    let r = only_record(&records, &answered.request_id, "nested secrets");
    let hits = files_containing(&state_dir(&a.gw), &["SEKRIT"]);
    assert!(
        hits.is_empty(),
        "values under secret keys (password, api_key, credentials) reached the journal when \
         they are an object or a list: {}",
        r["arguments"]
    );
}

/// A refusal's message is stored in the record: it must not carry a secret the request did.
#[test]
fn refusal_messages_in_records_carry_no_secrets() {
    let a = audit_setup("", &[]);
    let s = McpSession::open(&a.gw, "rec", Some(AGENT_TOKEN));
    // A JSON string instead of a message object: the parser's error quotes it.
    let refused = send(
        s.post().body(r#""Bearer SEKRITbody14abcdefgh""#),
        "string body",
    );
    assert_eq!(refused.resp.status, 400, "{}", refused.resp.text());
    let records = journal(&a.gw);
    let r = only_record(&records, &refused.request_id, "string body");
    assert!(
        !r.to_string().contains("SEKRIT"),
        "a bearer string sent as the body is stored in the record's message unmasked: {}",
        r["message"]
    );
}

// ---- 3. SIGKILL under load loses no record of an answered call ------------------------------

const LOAD_THREADS: usize = 8;
const LOAD_SESSIONS: usize = 4;

/// The recorder (writing no record file: as fast as it goes) behind `recorder-tools.json`.
fn load_toml() -> String {
    format!(
        "[servers.rec]\ncommand = \"python3\"\nargs = [{}]\npolicy = \"{RECORDER_TOOLS}\"\n\n\
         [grants.agent]\nserver = \"rec\"\ntoken_env = \"AGENT_TOKEN\"\n",
        toml_str(&recorder_py().display().to_string())
    )
}

#[test]
fn sigkill_under_load_loses_no_record_of_an_answered_call() {
    let env = [("AGENT_TOKEN", AGENT_TOKEN)];
    let mut gw = Gateway::start(&load_toml(), &env);
    let sessions: Vec<String> = (0..LOAD_SESSIONS)
        .map(|_| McpSession::open(&gw, "rec", Some(AGENT_TOKEN)).id.clone())
        .collect();
    let url = gw.mcp_url("rec");
    let stop = AtomicBool::new(false);
    let answered: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let unexpected: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..LOAD_THREADS {
            let (url, sessions, stop, answered, unexpected) =
                (&url, &sessions, &stop, &answered, &unexpected);
            scope.spawn(move || {
                let mut k = 0u64;
                // Bounded even if the kill never came.
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(10)
                {
                    k += 1;
                    let message = format!("load-{t}-{k}");
                    let body = json!({"jsonrpc": "2.0", "id": k, "method": "tools/call",
                                      "params": {"name": "echo", "arguments": {"message": message}}});
                    let r = Req::new(reqwest::Method::POST, url)
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .header("mcp-protocol-version", PROTOCOL)
                        .token(AGENT_TOKEN)
                        .session(&sessions[(t + k as usize) % sessions.len()])
                        .json(&body)
                        .timeout(Duration::from_secs(10))
                        .try_send();
                    let Ok(resp) = r else {
                        // The gateway is gone (or going): this call was not answered.
                        break;
                    };
                    let rid = resp.header("x-request-id");
                    let text = resp.text();
                    let ok = resp.status == 200
                        && serde_json::from_str::<Value>(&text).is_ok_and(|v| {
                            v["result"]["content"][0]["text"] == format!("Echo: {message}")
                        });
                    match (ok, rid) {
                        (true, Some(rid)) => answered.lock().unwrap().push(rid),
                        _ => unexpected
                            .lock()
                            .unwrap()
                            .push(format!("{} {text}", resp.status)),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        // SIGKILL the gateway alone, mid-load.
        signal(gw.pid(), libc::SIGKILL);
        stop.store(true, Ordering::SeqCst);
    });
    let answered = answered.into_inner().unwrap();
    let unexpected = unexpected.into_inner().unwrap();
    assert!(
        unexpected.is_empty(),
        "answers that are not the echo: {unexpected:?}"
    );
    assert!(
        answered.len() >= 50,
        "too little load to mean anything: {} answered calls",
        answered.len()
    );
    assert!(
        gw.wait_exit(Duration::from_secs(10)).is_some(),
        "the gateway survived SIGKILL"
    );
    gw.kill();

    // The journal, read by the operator command on the state directory.
    let cfg = gw.config_path.display().to_string();
    let out = toolgate_cli(
        &["audit", "export", "--format", "jsonl", "--config", &cfg],
        &[],
        gw.dir.path(),
    );
    let records = out.records();
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        records.len(),
        "a request id twice in the journal"
    );
    let lost: Vec<&String> = answered
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered calls have no record after SIGKILL: {lost:?}",
        lost.len(),
        answered.len()
    );
    // Besides the answered calls, only those in flight at the kill (at most one per thread).
    assert!(
        records.len() <= answered.len() + LOAD_THREADS,
        "{} records for {} answered calls",
        records.len(),
        answered.len()
    );
    // Numbers follow file order. One can be missing only where the kill cut a record off
    // mid-copy (a call in flight, never answered; the reader skips what was copied of it).
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.is_sorted_by(|a, b| a < b), "{seqs:?}");
    let missing = seqs.last().map_or(0, |last| last - seqs.len() as u64);
    assert!(
        missing as usize <= LOAD_THREADS,
        "{missing} numbers missing"
    );
    eprintln!(
        "SIGKILL under load: {} answered calls, {} records",
        answered.len(),
        records.len()
    );
    for r in &records {
        assert_eq!(
            (&r["outcome"], &r["tool"], &r["upstream_status"]),
            (&json!("allow"), &json!("echo"), &json!("ok")),
            "{r}"
        );
    }

    // A gateway started again on the same state directory goes on from there.
    let last = records.len() as u64;
    let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().expect("temp dir"));
    drop(gw);
    let gw = Gateway::start_in(dir, &load_toml(), &env);
    let s = McpSession::open(&gw, "rec", Some(AGENT_TOKEN));
    let after = call(&s, "echo", json!({"message": "after"}), "after the restart");
    let records = journal(&gw);
    let r = only_record(&records, &after.request_id, "after the restart");
    assert_eq!(r["seq"], last + 1, "numbering goes on after the crash: {r}");
    assert_eq!(records.len() as u64, last + 1);
}

// ---- 7. toolgate audit tail | query | export, on the state directory and through the API -----

/// A gateway with records of two grants and several outcomes (and a 401).
fn cli_setup() -> AuditSetup {
    let a = audit_setup("", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let s2 = McpSession::open(gw, "rec", Some(SECOND_TOKEN));
    // Records carry millisecond times, and the time-window query below needs records in
    // distinct milliseconds: a fast build makes several calls within one.
    let tick = || std::thread::sleep(std::time::Duration::from_millis(3));
    call(&s, "echo", json!({"message": "hello"}), "allow");
    tick();
    call(&s, "echo", json!({"message": "forbidden"}), "deny");
    tick();
    call(&s2, "echo", json!({"message": "hi"}), "allow, second");
    tick();
    call(&s, "pid", json!({}), "hidden");
    tick();
    call(&s2, "made_up_tool", json!({}), "unknown, second");
    tick();
    let r = send(gw.post("rec").json(&call_body("echo", json!({}))), "401");
    assert_eq!(r.resp.status, 401);
    a
}

/// `toolgate audit ARGS --json`, on the state directory (`--config`) and through the admin
/// API (`--url`, `--admin-token`): both must print the same records, which are returned.
fn both_ways(gw: &Gateway, args: &[&str]) -> Vec<Value> {
    let cfg = gw.config_path.display().to_string();
    let base = gw.base();
    let mut direct = vec!["audit", "--config", &cfg, "--json"];
    direct.extend_from_slice(args);
    let mut api = vec![
        "audit",
        "--url",
        &base,
        "--admin-token",
        ADMIN_TOKEN,
        "--json",
    ];
    api.extend_from_slice(args);
    let d = toolgate_cli(&direct, &[], gw.dir.path()).records();
    let a = toolgate_cli(&api, &[], gw.dir.path()).records();
    assert_eq!(
        d, a,
        "{args:?}: the state directory (left) and the admin API (right) differ"
    );
    d
}

fn filtered(records: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    records.iter().filter(|r| keep(r)).cloned().collect()
}

#[test]
fn audit_tail_query_export_agree_on_the_state_dir_and_through_the_api() {
    let a = cli_setup();
    let gw = &a.gw;
    let all = journal(gw);
    assert_eq!(all.len(), 6, "{}", pretty(&all));

    assert_eq!(
        both_ways(gw, &["tail", "-n", "3"]),
        all[3..].to_vec(),
        "tail -n 3"
    );
    assert_eq!(both_ways(gw, &["tail"]), all, "tail (default 20)");
    assert_eq!(
        both_ways(gw, &["export", "--format", "jsonl"]),
        all,
        "export"
    );
    let allowed = filtered(&all, |r| r["outcome"] == "allow");
    assert_eq!(allowed.len(), 2);
    assert_eq!(
        both_ways(gw, &["export", "--format", "jsonl", "--outcome", "allow"]),
        allowed,
        "export --outcome allow"
    );

    let second = filtered(&all, |r| r["grant_label"] == "second");
    assert_eq!(second.len(), 2, "{}", pretty(&all));
    assert_eq!(both_ways(gw, &["query", "--grant", "second"]), second);
    assert_eq!(
        both_ways(gw, &["query", "--grant", "config:second"]),
        second,
        "a grant by its id"
    );
    let echo = filtered(&all, |r| r["tool"] == "echo");
    assert_eq!(echo.len(), 3);
    assert_eq!(both_ways(gw, &["query", "--tool", "echo"]), echo);
    let deny = filtered(&all, |r| r["outcome"] == "deny");
    assert_eq!(deny.len(), 1);
    assert_eq!(both_ways(gw, &["query", "--outcome", "deny"]), deny);
    let refused = filtered(&all, |r| r["outcome"] == "refused");
    assert_eq!(
        (refused.len(), &refused[0]["http_status"]),
        (1, &json!(401))
    );
    assert_eq!(both_ways(gw, &["query", "--outcome", "refused"]), refused);
    let one = filtered(&all, |r| {
        r["grant_label"] == "agent" && r["tool"] == "echo" && r["outcome"] == "allow"
    });
    assert_eq!(one.len(), 1);
    assert_eq!(
        both_ways(
            gw,
            &[
                "query",
                "--grant",
                "agent",
                "--tool",
                "echo",
                "--outcome",
                "allow"
            ]
        ),
        one
    );
    assert!(both_ways(gw, &["query", "--tool", "no_such_tool"]).is_empty());
    assert_eq!(
        both_ways(gw, &["query", "--limit", "2"]),
        all[4..].to_vec(),
        "the newest"
    );
    // Times: since inclusive, until exclusive, at the records' own precision.
    let (since, until) = (
        all[1]["time"].as_str().unwrap(),
        all[4]["time"].as_str().unwrap(),
    );
    let window = filtered(&all, |r| {
        let t = r["time"].as_str().unwrap();
        since <= t && t < until
    });
    assert!(window.len() >= 3, "{}", pretty(&all));
    assert_eq!(
        both_ways(gw, &["query", "--since", since, "--until", until]),
        window
    );

    // The text form: one line per record, newest last.
    let cfg = gw.config_path.display().to_string();
    let text = toolgate_cli(
        &["audit", "--config", &cfg, "tail", "-n", "2"],
        &[],
        gw.dir.path(),
    );
    assert_eq!(text.code, Some(0), "{text:?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text.stdout);
    assert!(
        lines[0].contains("unknown") && lines[0].contains("second"),
        "{}",
        text.stdout
    );
    assert!(lines[1].contains("refused"), "{}", text.stdout);

    // The admin API itself.
    let api = |q: &str| -> Vec<Value> {
        let r = gw
            .request("GET", &format!("/admin/api/v1/audit{q}"))
            .token(ADMIN_TOKEN)
            .send();
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{q}: {e}: {}", r.text()))
    };
    assert_eq!(api(""), all);
    assert_eq!(
        api("?grant=second&tool=echo"),
        filtered(&second, |r| r["tool"] == "echo")
    );
    assert_eq!(api("?outcome=hidden").len(), 1);
    assert_eq!(
        api("?after_seq=2&limit=2"),
        all[2..4].to_vec(),
        "paging forward"
    );
    assert_eq!(api("?limit=1"), all[5..].to_vec());
    let unauthenticated = gw.request("GET", "/admin/api/v1/audit").send();
    assert_eq!(unauthenticated.status, 401);
    let wrong = gw
        .request("GET", "/admin/api/v1/audit")
        .token(AGENT_TOKEN)
        .send();
    assert_eq!(wrong.status, 401, "an agent's token is not the admin token");
}

/// `audit tail --follow`, run in the background: it shows the last record at once, then a
/// record made after it started.
#[test]
fn audit_tail_follow_shows_a_record_made_after_it_started() {
    let a = cli_setup();
    let gw = &a.gw;
    let last = journal(gw).last().cloned().unwrap();
    let cfg = gw.config_path.display().to_string();
    let base = gw.base();
    let mut followers: Vec<(&str, Spawned)> = [
        ("state dir", vec!["audit", "--config", &cfg]),
        (
            "admin API",
            vec!["audit", "--url", &base, "--admin-token", ADMIN_TOKEN],
        ),
    ]
    .into_iter()
    .map(|(how, mut args)| {
        args.extend(["--json", "tail", "-n", "1", "--follow"]);
        (
            how,
            Spawned::start(
                "audit tail --follow",
                toolgate_command(&args, &[], gw.dir.path()),
            ),
        )
    })
    .collect();
    for (how, f) in &followers {
        assert!(
            poll_until(Duration::from_secs(15), || !f.stdout().is_empty()),
            "{how}: tail --follow printed nothing; stderr: {}",
            f.stderr()
        );
    }
    let s = McpSession::open(gw, "rec", Some(SECOND_TOKEN));
    let new = call(
        &s,
        "echo",
        json!({"message": "while following"}),
        "new call",
    );
    for (how, f) in &mut followers {
        let seen = poll_until(Duration::from_secs(15), || {
            f.stdout().contains(&new.request_id)
        });
        let out = f.stdout();
        f.kill();
        assert!(seen, "{how}: the new record never showed; stdout:\n{out}");
        let lines = json_lines(&out, how);
        assert_eq!(
            lines.len(),
            2,
            "{how}: the last record, then the new one:\n{out}"
        );
        assert_eq!(lines[0], last, "{how}");
        assert_eq!(lines[1]["request_id"], new.request_id.as_str(), "{how}");
        assert_eq!(lines[1]["seq"], last["seq"].as_u64().unwrap() + 1, "{how}");
    }
}

/// `tail -n 0 --follow`, like `tail -n 0 -f`: nothing old, only what comes next.
#[test]
fn audit_tail_follow_with_zero_lines_shows_only_new_records() {
    let a = cli_setup();
    let gw = &a.gw;
    let cfg = gw.config_path.display().to_string();
    let mut f = Spawned::start(
        "audit tail -n 0 --follow",
        toolgate_command(
            &[
                "audit", "--config", &cfg, "--json", "tail", "-n", "0", "--follow",
            ],
            &[],
            gw.dir.path(),
        ),
    );
    // It polls every half second: give it a few polls.
    std::thread::sleep(Duration::from_millis(1600));
    let s = McpSession::open(gw, "rec", Some(SECOND_TOKEN));
    let new = call(&s, "echo", json!({"message": "after -n 0"}), "new call");
    let seen = poll_until(Duration::from_secs(15), || {
        f.stdout().contains(&new.request_id)
    });
    let out = f.stdout();
    f.kill();
    assert!(seen, "the new record never showed; stdout:\n{out}");
    let lines = json_lines(&out, "tail -n 0 --follow");
    let ids: Vec<&str> = lines
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![new.request_id.as_str()],
        "tail -n 0 --follow printed the {} older records too:\n{out}",
        lines.len() - 1
    );
}

/// `--since`/`--until` are times, not strings: a bound in whole seconds (as the help's example
/// `2026-11-26T00:00:00Z`) must compare with records written with milliseconds.
#[test]
fn audit_query_time_bounds_in_whole_seconds() {
    let a = audit_setup("", &[]);
    let gw = &a.gw;
    let s = McpSession::open(gw, "rec", Some(AGENT_TOKEN));
    let answered = call(&s, "echo", json!({"message": "when"}), "call");
    let records = journal(gw);
    let r = only_record(&records, &answered.request_id, "call");
    let time = r["time"].as_str().unwrap();
    // The whole second the record falls in: the record is at or after it.
    let second = format!("{}Z", &time[..19]);
    let cfg = gw.config_path.display().to_string();
    let query = |flag: &str| {
        toolgate_cli(
            &["audit", "--config", &cfg, "--json", "query", flag, &second],
            &[],
            gw.dir.path(),
        )
        .records()
    };
    let since = query("--since");
    let until = query("--until");
    assert_eq!(
        (since.len(), until.len()),
        (1, 0),
        "a record at {time}: --since {second} must find it and --until {second} must not"
    );
}
