//! Policy evaluation cost on a realistic 60-tool policy with conditions (issue 3's target:
//! at most 1 µs per call). Run: `cargo bench -p toolgate-policy`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use toolgate_policy::{Decision, Policy, json::parse_strict};

/// 60 tools: every third with a require, every other with deny_if conditions (numeric,
/// membership, regex, contains), a shared write counter, and limits under all_tools.
pub fn sixty_tool_policy() -> Value {
    let mut tools = serde_json::Map::new();
    for i in 0..60 {
        let mut spec = serde_json::Map::new();
        if i % 3 == 0 {
            spec.insert(
                "require".into(),
                json!([{"conditions": [{"path": "args.project_id", "op": "exists", "value": true}], "on_deny": "Name a project."}]),
            );
        }
        if i % 2 == 0 {
            spec.insert(
                "deny_if".into(),
                json!([
                    {"conditions": [{"path": "args.limit", "op": "gt", "value": 500}], "on_deny": "Too many rows."},
                    {"conditions": [{"path": "args.env", "op": "in", "value": ["prod", "billing"]}]},
                    {"conditions": [{"path": "args.query", "op": "regex", "value": "(?is).*\\b(drop|truncate|delete)\\b.*"}]},
                    {"conditions": [{"path": "args.tags", "op": "contains", "value": "pii"},
                                    {"path": "args.options.unsafe", "op": "eq", "value": true}]}
                ]),
            );
        }
        if i % 5 == 0 {
            spec.insert(
                "limits".into(),
                json!([{"counter": "writes", "window": "minute", "max": 30, "scope": "grant"}]),
            );
        }
        tools.insert(format!("tool_{i:02}"), Value::Object(spec));
    }
    json!({
        "version": "1",
        "default": "deny",
        "hide": ["delete_project", "delete_api_key"],
        "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 100000, "scope": "grant"},
                                 {"counter": "per_session", "window": "second", "max": 1000, "scope": "session"}]},
        "tools": tools
    })
}

const ARGS: &str = r#"{"project_id":"p1","limit":100,"env":"dev","query":"select name, dropout from users where id = 7","tags":["ops","billing"],"options":{"unsafe":false}}"#;

fn bench(c: &mut Criterion) {
    let doc = sixty_tool_policy();
    let text = doc.to_string();
    let policy = Policy::from_value(&doc).unwrap();
    let args = parse_strict(ARGS).unwrap();
    assert!(matches!(
        policy.evaluate("tool_30", &args),
        Decision::Allow { .. }
    ));

    c.bench_function("evaluate/60-tools/allow-with-conditions", |b| {
        b.iter(|| black_box(policy.evaluate(black_box("tool_30"), black_box(&args))))
    });
    let denied =
        parse_strict(r#"{"project_id":"p1","limit":100,"env":"dev","query":"DROP TABLE x"}"#)
            .unwrap();
    c.bench_function("evaluate/60-tools/deny-by-regex", |b| {
        b.iter(|| black_box(policy.evaluate(black_box("tool_30"), black_box(&denied))))
    });
    c.bench_function("evaluate/60-tools/default-deny", |b| {
        b.iter(|| black_box(policy.evaluate(black_box("not_listed"), black_box(&args))))
    });
    c.bench_function("parse-arguments/strict", |b| {
        b.iter(|| black_box(parse_strict(black_box(ARGS)).unwrap()))
    });
    c.bench_function("parse-arguments/serde_json-baseline", |b| {
        b.iter(|| black_box(serde_json::from_str::<Value>(black_box(ARGS)).unwrap()))
    });
    c.bench_function("compile/60-tools", |b| {
        b.iter(|| black_box(Policy::parse(black_box(&text)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
