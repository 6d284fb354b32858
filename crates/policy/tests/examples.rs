//! The policy examples (copied from the project's shared examples into `tests/fixtures/`),
//! each with the decisions its `.cases.json` states, and the invalid documents with the
//! errors they must produce.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use toolgate_policy::{DEFAULT_DENY_RULE, Decision, HIDDEN_RULE, Policy};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn coroot_tool_names() -> Vec<String> {
    let tools: Vec<Value> = serde_json::from_str(&fixture("coroot_tools.json")).unwrap();
    tools
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// What the gateway reports for a decision: (outcome, rule, message).
fn outcome(d: &Decision<'_>) -> (&'static str, String, String) {
    match d {
        Decision::Allow { .. } => ("allow", String::new(), String::new()),
        Decision::Deny { rule, message } => ("deny", rule.to_string(), message.to_string()),
        Decision::Hidden => ("hidden", HIDDEN_RULE.to_string(), String::new()),
    }
}

fn run_cases(cases_file: &str) -> usize {
    let cases: Value = serde_json::from_str(&fixture(cases_file)).unwrap();
    let policy_text = fixture(cases["policy"].as_str().unwrap());
    let policy = Policy::parse(&policy_text)
        .unwrap_or_else(|e| panic!("{cases_file}: policy refused: {e:?}"));
    let mut checked = 0;
    for (i, case) in cases["cases"].as_array().unwrap().iter().enumerate() {
        let what = format!("{cases_file} case {i}: {case}");
        if case.get("list").is_some() {
            let names = coroot_tool_names();
            let visible: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !policy.is_hidden(n))
                .collect();
            if let Some(only) = case["expect_only"].as_array() {
                let mut want: Vec<&str> = only.iter().map(|v| v.as_str().unwrap()).collect();
                want.sort();
                let mut got = visible.clone();
                got.sort();
                assert_eq!(got, want, "{what}");
            }
            if let Some(absent) = case["expect_absent"].as_array() {
                for name in absent {
                    assert!(!visible.contains(&name.as_str().unwrap()), "{what}");
                }
                assert!(!visible.is_empty(), "{what}: everything else stays listed");
            }
            checked += 1;
            continue;
        }
        let tool = case["tool"].as_str().unwrap();
        let args = &case["args"];
        let decision = policy.evaluate(tool, args);
        if let Some(times) = case["times"].as_u64() {
            // Limits are enforced by the counter store; here the engine must hand back the
            // limit that caps the call, and a window's count against it gives the outcome.
            let Decision::Allow { limits, .. } = &decision else {
                panic!("{what}: {decision:?}")
            };
            let mut used: HashMap<&str, u64> = HashMap::new();
            let mut allowed = 0;
            let mut last_refusal = None;
            for _ in 0..times {
                match limits
                    .iter()
                    .find(|l| used.get(&*l.counter).copied().unwrap_or(0) >= l.max)
                {
                    Some(l) => last_refusal = Some(l.rule.to_string()),
                    None => {
                        allowed += 1;
                        for l in limits.iter() {
                            *used.entry(&*l.counter).or_default() += 1;
                        }
                    }
                }
            }
            assert_eq!(allowed, case["expect_allowed"].as_u64().unwrap(), "{what}");
            assert_eq!(
                last_refusal.as_deref(),
                case["then"]["rule"].as_str(),
                "{what}"
            );
            checked += 1;
            continue;
        }
        let (out, rule, message) = outcome(&decision);
        let expect = &case["expect"];
        assert_eq!(
            out,
            expect["outcome"].as_str().unwrap(),
            "{what}: {decision:?}"
        );
        if let Some(r) = expect["rule"].as_str() {
            assert_eq!(rule, r, "{what}");
        }
        if let Some(m) = expect["message"].as_str() {
            assert_eq!(message, m, "{what}");
        }
        checked += 1;
    }
    checked
}

#[test]
fn conditions_example() {
    assert_eq!(run_cases("conditions.cases.json"), 12);
}

#[test]
fn coroot_seed_example() {
    assert_eq!(run_cases("coroot-seed.cases.json"), 3);
}

#[test]
fn hide_all_example() {
    assert_eq!(run_cases("hide-all.cases.json"), 3);
}

#[test]
fn hide_example() {
    assert_eq!(run_cases("hide.cases.json"), 5);
}

#[test]
fn refunds_example() {
    assert_eq!(run_cases("refunds.cases.json"), 8);
}

#[test]
fn default_deny_texts() {
    let policy = Policy::parse(&fixture("refunds.json")).unwrap();
    let d = policy.evaluate("delete_customer", &Value::Null);
    assert_eq!(
        d,
        Decision::Deny {
            rule: DEFAULT_DENY_RULE,
            message: "Tool \"delete_customer\" is not permitted by policy".into()
        }
    );
}

#[test]
fn invalid_document_reports_every_error_at_once() {
    let problems = Policy::parse(&fixture("invalid/errors.json")).unwrap_err();
    let expected: Value = serde_json::from_str(&fixture("invalid/errors.expected.json")).unwrap();
    let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
    for want in expected["errors"].as_array().unwrap() {
        assert!(
            pointers.contains(&want.as_str().unwrap()),
            "missing {want} in {problems:#?}"
        );
    }
    assert_eq!(
        pointers.len(),
        expected["errors"].as_array().unwrap().len(),
        "{problems:#?}"
    );
    for p in &problems {
        assert!(p.message.len() > 10, "each error has a sentence: {p:?}");
    }
}

#[test]
fn duplicate_tool_keys_are_refused() {
    let problems = Policy::parse(&fixture("invalid/duplicate-key.json")).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pointer, "/tools/a");
    assert!(problems[0].message.contains("twice"), "{problems:?}");
}
