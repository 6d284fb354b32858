//! The audit trail as the tests see it: the journal read straight from the state directory
//! (records are written before the answer leaves, so no waiting), one record checked whole,
//! and a byte search over every file of a directory tree (for secrets). The operator's
//! `toolgate audit ...` runs through `common::toolgate_cli`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::common::{Gateway, json_lines};

/// Every field a record has, in the order the gateway writes them.
pub const FIELDS: &[&str] = &[
    "seq",
    "time",
    "request_id",
    "grant_id",
    "grant_label",
    "session",
    "server",
    "method",
    "tool",
    "argument_keys",
    "arguments",
    "outcome",
    "rule",
    "policy_version",
    "http_status",
    "upstream_status",
    "decision_us",
    "upstream_us",
    "message",
];

/// The gateway's state directory (`state_dir` of the config `Gateway::start` writes).
pub fn state_dir(gw: &Gateway) -> PathBuf {
    gw.dir.path().join("state")
}

/// The journal's segment files (`state_dir/audit/audit-*.jsonl`), oldest first.
pub fn segments(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("audit"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every record in the journal, oldest first. Every line must be a JSON object (the gateway
/// is running: no line may be torn). A segment ends where its first zero byte is (the part
/// of the file its writer has reserved but not written yet).
pub fn journal(gw: &Gateway) -> Vec<Value> {
    let mut out = Vec::new();
    for seg in segments(&state_dir(gw)) {
        let mut bytes = std::fs::read(&seg).expect("read audit segment");
        if let Some(zero) = bytes.iter().position(|&b| b == 0) {
            bytes.truncate(zero);
            assert!(
                bytes.is_empty() || bytes.ends_with(b"\n"),
                "{}: the written part ends mid-line",
                seg.display()
            );
        }
        let text = String::from_utf8(bytes).expect("audit segments are UTF-8");
        out.extend(json_lines(&text, &seg.display().to_string()));
    }
    out
}

/// The records with `request_id`.
pub fn with_request_id<'a>(records: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["request_id"] == request_id)
        .collect()
}

/// The one record of `request_id`; panics (showing the journal) when there is not exactly one.
pub fn only_record<'a>(records: &'a [Value], request_id: &str, case: &str) -> &'a Value {
    let found = with_request_id(records, request_id);
    assert_eq!(
        found.len(),
        1,
        "{case}: {} records with request id {request_id} (expected exactly one); journal:\n{}",
        found.len(),
        pretty(records)
    );
    found[0]
}

pub fn pretty(records: &[Value]) -> String {
    records
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the fields that change from run to run (the record has exactly `FIELDS`, `time` is
/// RFC 3339 UTC with milliseconds, `seq` and `decision_us` are numbers, `upstream_us` is a
/// number exactly when the upstream was called), then returns the record without them
/// (`seq`, `time`, `request_id`, `decision_us`, `upstream_us`) for a whole comparison.
pub fn stable_part(r: &Value, forwarded: bool, case: &str) -> Value {
    let obj = r
        .as_object()
        .unwrap_or_else(|| panic!("{case}: not an object: {r}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    let mut want = FIELDS.to_vec();
    want.sort();
    assert_eq!(keys, want, "{case}: the record's fields: {r}");
    assert!(
        r["seq"].as_u64().is_some_and(|s| s >= 1),
        "{case}: seq: {r}"
    );
    assert!(
        is_rfc3339_ms(r["time"].as_str().unwrap_or("")),
        "{case}: time is not RFC 3339 UTC with milliseconds: {r}"
    );
    let rid = r["request_id"].as_str().unwrap_or("");
    assert!(
        rid.len() >= 8 && rid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{case}: request_id: {r}"
    );
    assert!(
        r["decision_us"].as_u64().is_some(),
        "{case}: decision_us: {r}"
    );
    assert_eq!(
        r["upstream_us"].as_u64().is_some(),
        forwarded,
        "{case}: upstream_us is a number exactly when the upstream was called: {r}"
    );
    if !forwarded {
        assert!(r["upstream_us"].is_null(), "{case}: upstream_us: {r}");
    }
    let mut rest: Map<String, Value> = obj.clone();
    for k in ["seq", "time", "request_id", "decision_us", "upstream_us"] {
        rest.remove(k);
    }
    // Argument names in any order.
    if let Some(Value::Array(keys)) = rest.get_mut("argument_keys") {
        keys.sort_by_key(|k| k.to_string());
    }
    Value::Object(rest)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn is_rfc3339_ms(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Every file under `dir` (recursively) that contains one of `needles`, with the needle.
pub fn files_containing(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for n in needles {
                if contains(&bytes, n.as_bytes()) {
                    hits.push((path.clone(), n.to_string()));
                }
            }
        }
    }
    hits
}

/// Every file under `dir`, recursively (to show what was searched).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
