//! `approval` never fails open (issue 25, point 8): until approvals are enforced (SPEC 6), a
//! policy that asks for one, under a tool or under `all_tools`, is refused by validation with
//! the approval's JSON pointer and a sentence saying what to do, beside every other problem of
//! the document. The approval's own fields are still checked.

use proptest::prelude::*;
use serde_json::{Value, json};
use toolgate_policy::document::{APPROVAL_NOT_ENFORCED, validate};
use toolgate_policy::{Policy, Problem};

fn refused(pointer: &str) -> Problem {
    Problem {
        pointer: pointer.into(),
        message: APPROVAL_NOT_ENFORCED.into(),
    }
}

/// The problems of `doc`, which must be refused.
fn problems(doc: &Value) -> Vec<Problem> {
    let from_value = Policy::from_value(doc).expect_err("the policy was accepted");
    let from_text = Policy::parse(&doc.to_string()).expect_err("the policy text was accepted");
    assert_eq!(from_value, from_text, "parse and from_value disagree");
    assert_eq!(
        validate(doc).expect_err("validate accepted it"),
        from_value,
        "validate and from_value disagree"
    );
    from_value
}

fn pointers(ps: &[Problem]) -> Vec<&str> {
    let mut out: Vec<&str> = ps.iter().map(|p| p.pointer.as_str()).collect();
    out.sort_unstable();
    out
}

#[test]
fn the_message_says_what_to_do() {
    assert!(APPROVAL_NOT_ENFORCED.starts_with("approval is not enforced"));
    for needle in ["refused", "remove the field", "deny_if"] {
        assert!(APPROVAL_NOT_ENFORCED.contains(needle), "{needle:?}");
    }
    assert!(
        !APPROVAL_NOT_ENFORCED.contains("  "),
        "{APPROVAL_NOT_ENFORCED:?}"
    );
    assert_eq!(
        refused("/tools/create_refund/approval").to_string(),
        format!("/tools/create_refund/approval: {APPROVAL_NOT_ENFORCED}")
    );
}

#[test]
fn a_tool_approval_is_refused_at_its_pointer() {
    // SPEC 4's own example: everything in it is valid but the approval.
    let spec_example = json!({
      "version": "1",
      "default": "deny",
      "hide": ["delete_project"],
      "all_tools": { "limits": [ {"counter": "calls", "window": "minute", "max": 120, "scope": "grant"} ] },
      "tools": {
        "get_project": {},
        "create_api_key": {
          "limits": [ {"counter": "create_api_key_rate", "window": "minute", "max": 30, "scope": "grant"} ]
        },
        "create_refund": {
          "require": [ {"conditions": [{"path": "args.reason", "op": "exists", "value": true}],
                        "on_deny": "A refund needs a reason."} ],
          "deny_if": [ {"conditions": [{"path": "args.amount", "op": "gt", "value": 10000}],
                        "on_deny": "Refund exceeds the policy limit."} ],
          "approval": {"timeout": "15m", "mode": "hold"}
        }
      }
    });
    assert_eq!(
        problems(&spec_example),
        vec![refused("/tools/create_refund/approval")]
    );

    // The smallest approvals: defaults only, and the other mode.
    for approval in [json!({}), json!({"mode": "retry", "timeout": "90s"})] {
        let doc = json!({"version": "1", "default": "allow",
                         "tools": {"a/b~c": {"approval": approval}}});
        assert_eq!(
            problems(&doc),
            vec![refused("/tools/a~1b~0c/approval")],
            "{approval}"
        );
    }

    // Without the approval the same document loads.
    let mut without = spec_example.clone();
    without["tools"]["create_refund"]
        .as_object_mut()
        .unwrap()
        .remove("approval");
    Policy::from_value(&without).expect("valid without the approval");
}

#[test]
fn an_all_tools_approval_is_refused_at_its_pointer() {
    // Not "unknown field": all_tools may carry an approval (SPEC 4), it is refused for what it is.
    for default in ["allow", "deny"] {
        let doc = json!({"version": "1", "default": default,
                         "all_tools": {"approval": {"timeout": "15m"}},
                         "tools": {"get_project": {}}});
        assert_eq!(
            problems(&doc),
            vec![refused("/all_tools/approval")],
            "{default}"
        );
    }
}

#[test]
fn approvals_under_all_tools_and_several_tools_are_each_refused() {
    let doc = json!({
        "version": "1", "default": "deny",
        "all_tools": {"approval": {"mode": "hold"}},
        "tools": {
            "create_refund": {"approval": {"timeout": "15m", "mode": "hold"}},
            "get_project": {},
            "delete_project": {"deny_if": [{"conditions": []}], "approval": {}}
        }
    });
    let ps = problems(&doc);
    assert_eq!(
        pointers(&ps),
        [
            "/all_tools/approval",
            "/tools/create_refund/approval",
            "/tools/delete_project/approval"
        ]
    );
    assert!(
        ps.iter().all(|p| p.message == APPROVAL_NOT_ENFORCED),
        "{ps:?}"
    );
}

#[test]
fn every_other_problem_is_still_reported_with_the_refusal() {
    let doc = json!({
        "version": "2",
        "default": "maybe",
        "colour": "blue",
        "all_tools": {
            "approval": {"timeout": "15m"},
            "limits": [{"counter": "calls", "window": "fortnight", "max": 5, "scope": "grant"}]
        },
        "tools": {
            "a": {"deny_if": [{"conditions": [{"path": "args.x", "op": "greater", "value": 1}]}],
                  "approval": {"mode": "hold"}},
            "b": {"require": [{"conditions": [{"path": "x", "op": "eq", "value": 1}]}]}
        }
    });
    assert_eq!(
        pointers(&problems(&doc)),
        [
            "/all_tools/approval",
            "/all_tools/limits/0/window",
            "/colour",
            "/default",
            "/tools/a/approval",
            "/tools/a/deny_if/0/conditions/0/op",
            "/tools/b/require/0/conditions/0/path",
            "/version",
        ]
    );
}

#[test]
fn an_approvals_own_field_errors_are_still_reported() {
    let doc = json!({"version": "1", "default": "deny", "tools": {"t": {
        "approval": {"timeout": "soon", "mode": "later", "colour": 1}
    }}});
    let ps = problems(&doc);
    assert_eq!(
        pointers(&ps),
        [
            "/tools/t/approval",
            "/tools/t/approval/colour",
            "/tools/t/approval/mode",
            "/tools/t/approval/timeout"
        ]
    );
    assert_eq!(
        ps[0],
        refused("/tools/t/approval"),
        "the refusal comes first"
    );

    for (timeout, what) in [(json!(15), "a number"), (json!("0s"), "\"0s\"")] {
        let doc = json!({"version": "1", "default": "deny",
                         "all_tools": {"approval": {"timeout": timeout}}});
        let ps = problems(&doc);
        assert_eq!(
            pointers(&ps),
            ["/all_tools/approval", "/all_tools/approval/timeout"],
            "{what}"
        );
        assert!(ps[1].message.contains(what), "{ps:?}");
    }

    let doc = json!({"version": "1", "default": "deny", "tools": {"t": {"approval": true}}});
    let ps = problems(&doc);
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert_eq!(ps[0], refused("/tools/t/approval"));
    assert_eq!(ps[1].pointer, "/tools/t/approval");
    assert!(
        ps[1].message.contains("must be an object"),
        "{}",
        ps[1].message
    );
}

/// Any JSON value at all.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof!["[0-9]{1,3}[smhd]", "hold|retry", any::<String>()].prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("timeout|mode|reason|[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever an approval says, wherever it is, the policy never loads, and the refusal is
    /// among its problems.
    #[test]
    fn no_approval_ever_loads(
        approval in any_json(),
        under_all_tools in any::<bool>(),
        default in prop_oneof![Just("allow"), Just("deny")],
        tool in "[a-z_]{1,12}",
    ) {
        let mut doc = json!({"version": "1", "default": default, "tools": {"other": {}}});
        let pointer = if under_all_tools {
            doc["all_tools"] = json!({"approval": approval});
            "/all_tools/approval".to_string()
        } else {
            doc["tools"][&tool] = json!({"approval": approval});
            format!("/tools/{tool}/approval")
        };
        let ps = Policy::from_value(&doc).expect_err("a policy with an approval loaded");
        prop_assert!(ps.contains(&refused(&pointer)), "{:?}", ps);
        prop_assert!(
            ps.iter().all(|p| p.pointer.starts_with(&pointer)),
            "a problem outside the approval: {:?}", ps
        );
    }
}
