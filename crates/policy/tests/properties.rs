//! Property tests of the engine, and the exact semantics of each op.

use proptest::prelude::*;
use serde_json::{Value, json};
use toolgate_policy::{DEFAULT_DENY_RULE, Decision, Policy};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z0-9 .]{0,8}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof!["[a-z]{1,6}".prop_map(String::from), any::<String>()],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Argument objects whose keys are likely to hit the example policies' paths.
fn likely_args() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("amount".to_string()),
        Just("reason".to_string()),
        Just("limit".to_string()),
        Just("env".to_string()),
        Just("sql".to_string()),
        Just("tags".to_string()),
        Just("options".to_string()),
        Just("user".to_string()),
        Just("region".to_string()),
        Just("project_id".to_string()),
        "[a-z]{1,4}".prop_map(String::from),
    ];
    prop::collection::btree_map(key, any_json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn examples() -> Vec<Policy> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    [
        "conditions.json",
        "coroot-seed.json",
        "hide-all.json",
        "hide.json",
        "refunds.json",
    ]
    .iter()
    .map(|f| Policy::parse(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_never_panics(tool in prop_oneof![Just("query".to_string()), Just("create_refund".to_string()), any::<String>()],
                               args in prop_oneof![likely_args(), any_json()]) {
        for policy in examples() {
            let _ = policy.evaluate(&tool, &args);
        }
    }

    #[test]
    fn parsing_never_panics(text in any::<String>()) {
        let _ = Policy::parse(&text);
    }

    #[test]
    fn parsing_any_json_document_never_panics(doc in any_json()) {
        let _ = Policy::from_value(&doc);
    }

    #[test]
    fn an_always_false_deny_if_never_denies(args in prop_oneof![likely_args(), any_json()],
                                             path in "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}") {
        // `in []` can hold for no value, and a missing path fails every op but exists.
        let policy = Policy::from_value(&json!({
            "version": "1", "default": "deny",
            "tools": {"t": {"deny_if": [{"conditions": [{"path": format!("args.{path}"), "op": "in", "value": []}]}]}}
        })).unwrap();
        let allowed = matches!(policy.evaluate("t", &args), Decision::Allow { .. });
        prop_assert!(allowed);
    }

    #[test]
    fn default_deny_with_no_listing_denies_everything(tool in any::<String>(), args in any_json()) {
        let policy = Policy::parse(r#"{"version":"1","default":"deny"}"#).unwrap();
        let denied = matches!(policy.evaluate(&tool, &args), Decision::Deny { rule, .. } if rule == DEFAULT_DENY_RULE);
        prop_assert!(denied);
    }

    #[test]
    fn wrong_types_never_let_a_call_through(v in any_json()) {
        prop_assume!(!v.is_number());
        let policy = Policy::from_value(&json!({
            "version": "1", "default": "deny",
            "tools": {
                "d": {"deny_if": [{"conditions": [{"path": "args.n", "op": "gt", "value": 100}]}]},
                "r": {"require": [{"conditions": [{"path": "args.n", "op": "lte", "value": 100}]}]}
            }
        })).unwrap();
        let args = json!({"n": v});
        let denied = matches!(policy.evaluate("d", &args), Decision::Deny { .. });
        prop_assert!(denied);
        let refused = matches!(policy.evaluate("r", &args), Decision::Deny { .. });
        prop_assert!(refused);
    }
}

fn one(op: &str, value: Value) -> Policy {
    Policy::from_value(&json!({
        "version": "1", "default": "deny",
        "tools": {
            "deny": {"deny_if": [{"conditions": [{"path": "args.a.b", "op": op, "value": value.clone()}]}]},
            "require": {"require": [{"conditions": [{"path": "args.a.b", "op": op, "value": value}]}]}
        }
    }))
    .unwrap()
}

/// (fires in deny_if, passes require) for one argument value at `args.a.b`.
fn judge(p: &Policy, at: Option<Value>) -> (bool, bool) {
    let args = match at {
        Some(v) => json!({"a": {"b": v}}),
        None => json!({"a": {}}),
    };
    let fires = matches!(p.evaluate("deny", &args), Decision::Deny { .. });
    let passes = matches!(p.evaluate("require", &args), Decision::Allow { .. });
    (fires, passes)
}

#[test]
fn op_semantics() {
    // (op, value, argument at args.a.b, (fires in deny_if, passes require))
    type OpCase = (&'static str, Value, Option<Value>, (bool, bool));
    let cases: Vec<OpCase> = vec![
        ("eq", json!(1), Some(json!(1.0)), (true, true)),
        ("eq", json!("x"), Some(json!("x")), (true, true)),
        ("eq", json!("x"), Some(json!("X")), (false, false)),
        (
            "eq",
            json!({"k": [1]}),
            Some(json!({"k": [1]})),
            (true, true),
        ),
        ("eq", json!(1), None, (false, false)),
        ("neq", json!(1), Some(json!(2)), (true, true)),
        ("neq", json!(1), None, (false, false)),
        ("in", json!(["a", "b"]), Some(json!("b")), (true, true)),
        ("in", json!(["a", "b"]), Some(json!("c")), (false, false)),
        ("not_in", json!(["a"]), Some(json!("c")), (true, true)),
        ("not_in", json!(["a"]), None, (false, false)),
        ("lt", json!(10), Some(json!(9.5)), (true, true)),
        ("lt", json!(10), Some(json!(10)), (false, false)),
        ("lte", json!(10), Some(json!(10)), (true, true)),
        ("gt", json!(10), Some(json!(11)), (true, true)),
        ("gte", json!(10), Some(json!(9)), (false, false)),
        // A value of the wrong type: a match in deny_if, a failure in require.
        ("gt", json!(10), Some(json!("11")), (true, false)),
        ("gt", json!(10), Some(json!(null)), (true, false)),
        ("gt", json!(10), None, (false, false)),
        ("regex", json!("ab+"), Some(json!("abbb")), (true, true)),
        ("regex", json!("ab+"), Some(json!("xabbb")), (false, false)),
        ("regex", json!("a|b"), Some(json!("ab")), (false, false)),
        ("regex", json!("ab+"), Some(json!(5)), (true, false)),
        (
            "contains",
            json!("rop"),
            Some(json!("drop table")),
            (true, true),
        ),
        (
            "contains",
            json!("pii"),
            Some(json!(["ops", "pii"])),
            (true, true),
        ),
        (
            "contains",
            json!("pii"),
            Some(json!(["ops"])),
            (false, false),
        ),
        ("contains", json!(3), Some(json!([1, 3.0])), (true, true)),
        ("contains", json!("x"), Some(json!(7)), (true, false)),
        ("exists", json!(true), Some(json!(null)), (true, true)),
        ("exists", json!(true), None, (false, false)),
        ("exists", json!(false), None, (true, true)),
        ("exists", json!(false), Some(json!(0)), (false, false)),
    ];
    for (op, value, at, want) in cases {
        let p = one(op, value.clone());
        assert_eq!(judge(&p, at.clone()), want, "{op} {value} on {at:?}");
    }
}

#[test]
fn nested_paths_and_list_indexes() {
    let p = Policy::from_value(&json!({
        "version": "1", "default": "allow",
        "tools": {"t": {"deny_if": [{"conditions": [
            {"path": "args.customer.tier", "op": "eq", "value": "gold"},
            {"path": "args.items.0.qty", "op": "gte", "value": 10}
        ]}]}}
    }))
    .unwrap();
    let deny = json!({"customer": {"tier": "gold"}, "items": [{"qty": 12}]});
    assert!(matches!(
        p.evaluate("t", &deny),
        Decision::Deny {
            rule: "/tools/t/deny_if/0",
            ..
        }
    ));
    let allow = json!({"customer": {"tier": "gold"}, "items": [{"qty": 2}]});
    assert!(matches!(p.evaluate("t", &allow), Decision::Allow { .. }));
    // Not an object at all: every path is missing.
    assert!(matches!(
        p.evaluate("t", &json!("str")),
        Decision::Allow { .. }
    ));
}

#[test]
fn all_tools_rules_come_first_and_limits_merge() {
    let p = Policy::from_value(&json!({
        "version": "1", "default": "allow",
        "all_tools": {
            "require": [{"conditions": [{"path": "args.ticket", "op": "exists", "value": true}], "on_deny": "Name a ticket."}],
            "limits": [{"counter": "calls", "window": "minute", "max": 120, "scope": "grant"}]
        },
        "tools": {"t": {
            "deny_if": [{"conditions": []}],
            "limits": [{"counter": "t_rate", "window": "second", "max": 2, "scope": "session"}]
        }, "u": {}}
    }))
    .unwrap();
    assert_eq!(
        p.evaluate("t", &json!({})),
        Decision::Deny {
            rule: "/all_tools/require/0",
            message: "Name a ticket.".into()
        }
    );
    assert_eq!(
        p.evaluate("t", &json!({"ticket": 1})),
        Decision::Deny {
            rule: "/tools/t/deny_if/0",
            message: "Denied by rule /tools/t/deny_if/0".into()
        }
    );
    let Decision::Allow { limits, approval } = p.evaluate("u", &json!({"ticket": 1})) else {
        panic!()
    };
    assert_eq!(limits.len(), 1);
    assert_eq!(&*limits[0].rule, "/all_tools/limits/calls");
    assert!(approval.is_none());
    // An unlisted tool under default allow gets the all_tools rules too.
    let Decision::Allow { limits, .. } = p.evaluate("other", &json!({"ticket": 1})) else {
        panic!()
    };
    assert_eq!(limits.len(), 1);
}

#[test]
fn tool_names_match_exactly() {
    let p = Policy::parse(
        r#"{"version":"1","default":"deny","hide":["delete_project"],"tools":{"get_project":{}}}"#,
    )
    .unwrap();
    assert_eq!(p.evaluate("delete_project", &Value::Null), Decision::Hidden);
    for variant in [
        "Get_Project",
        "get_project ",
        " get_project",
        "get_project\0",
        "get_prоject",
    ] {
        assert!(
            matches!(p.evaluate(variant, &Value::Null), Decision::Deny { .. }),
            "{variant:?}"
        );
    }
}

#[test]
fn warnings_name_unguarded_deny_if() {
    let p = Policy::parse(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/refunds.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let w = p.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].pointer, "/tools/create_refund/deny_if/0/conditions/0");
    assert!(w[0].message.contains("args.amount"));
}

#[test]
fn coverage_against_a_server() {
    let p = Policy::parse(
        r#"{"version":"1","default":"deny","hide":["nuke"],"tools":{"get":{},"typo":{}}}"#,
    )
    .unwrap();
    let c = p.coverage(&["get", "nuke", "put"]);
    let text: Vec<String> = c.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].contains("no tool \"typo\""));
    assert!(text[1].contains("\"put\" is not mentioned"));
}

#[test]
fn regexes_cannot_escape_their_anchors() {
    let doc = json!({"version": "1", "default": "deny", "tools": {"t": {"deny_if": [
        {"conditions": [{"path": "args.s", "op": "regex", "value": "a)|(b"}]}]}}});
    let problems = Policy::from_value(&doc).unwrap_err();
    assert_eq!(problems[0].pointer, "/tools/t/deny_if/0/conditions/0/value");
}
