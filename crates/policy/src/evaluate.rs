//! Evaluation: (compiled policy, tool name, arguments) → [`Decision`].
//!
//! Order (SPEC 4): hide → default/listing → `require` (all_tools, then the tool's) → `deny_if`
//! (same order) → limits and approval, handed back for the caller to reserve and hold. The
//! first denial wins. Evaluation never allocates on the allow path and never panics.

use std::borrow::Cow;

use serde_json::Value;

use crate::compile::{CompiledCondition, CompiledRule, CompiledTool, Policy, Test};
use crate::document::{Approval, Limit};

/// Rule name of a call refused because the tool is hidden.
pub const HIDDEN_RULE: &str = "(hidden)";
/// Rule name of a call refused because the default is deny and the tool is not listed.
pub const DEFAULT_DENY_RULE: &str = "(default deny)";

#[derive(Debug, PartialEq)]
pub enum Decision<'p> {
    /// The call may go on, once its counters are reserved and any approval given.
    Allow {
        limits: &'p std::sync::Arc<[Limit]>,
        approval: Option<&'p Approval>,
    },
    /// The call is refused by `rule` (a JSON pointer into the document, or `(default deny)`).
    Deny {
        rule: &'p str,
        message: Cow<'p, str>,
    },
    /// The tool is hidden: answer exactly as for an unknown tool.
    Hidden,
}

/// How one condition came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Holds,
    Fails,
    /// The argument is there but of a type the op cannot judge (a string for `gt`). It never
    /// lets a call through: a match in `deny_if`, a failure in `require`.
    WrongType,
}

impl Policy {
    /// Decides one `tools/call`. `args` is the call's `arguments` (Null when absent).
    pub fn evaluate<'p>(&'p self, tool: &str, args: &Value) -> Decision<'p> {
        if self.is_hidden(tool) {
            return Decision::Hidden;
        }
        let rules: &CompiledTool = match self.tools.get(tool) {
            Some(t) => t,
            None => match &self.unlisted {
                Some(t) => t,
                None => {
                    return Decision::Deny {
                        rule: DEFAULT_DENY_RULE,
                        message: Cow::Owned(format!("Tool \"{tool}\" is not permitted by policy")),
                    };
                }
            },
        };
        for rule in &rules.require {
            if !rule
                .conditions
                .iter()
                .all(|c| check(c, args) == Truth::Holds)
            {
                return deny(rule);
            }
        }
        for rule in &rules.deny_if {
            if rule
                .conditions
                .iter()
                .all(|c| check(c, args) != Truth::Fails)
            {
                return deny(rule);
            }
        }
        Decision::Allow {
            limits: &rules.limits,
            approval: rules.approval.as_ref(),
        }
    }
}

fn deny(rule: &CompiledRule) -> Decision<'_> {
    Decision::Deny {
        rule: &rule.pointer,
        message: Cow::Borrowed(&rule.message),
    }
}

/// Follows a path of object keys (and list indexes) into the arguments.
fn lookup<'a>(args: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = args;
    for segment in path {
        at = match at {
            Value::Object(m) => m.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

fn check(c: &CompiledCondition, args: &Value) -> Truth {
    let found = lookup(args, &c.path);
    if let Test::Exists(want) = c.test {
        return truth(found.is_some() == want);
    }
    let Some(v) = found else { return Truth::Fails };
    match &c.test {
        Test::Eq(x) => truth(json_eq(v, x)),
        Test::Neq(x) => truth(!json_eq(v, x)),
        Test::In(xs) => truth(xs.iter().any(|x| json_eq(v, x))),
        Test::NotIn(xs) => truth(!xs.iter().any(|x| json_eq(v, x))),
        Test::Lt(x) => numeric(v, |n| n < *x),
        Test::Lte(x) => numeric(v, |n| n <= *x),
        Test::Gt(x) => numeric(v, |n| n > *x),
        Test::Gte(x) => numeric(v, |n| n >= *x),
        Test::Regex(re) => match v {
            Value::String(s) => truth(re.is_match(s)),
            _ => Truth::WrongType,
        },
        Test::Contains(x) => match (v, x) {
            (Value::String(s), Value::String(sub)) => truth(s.contains(sub.as_str())),
            (Value::Array(items), x) => truth(items.iter().any(|i| json_eq(i, x))),
            _ => Truth::WrongType,
        },
        Test::Exists(_) => unreachable!("handled above"),
    }
}

fn truth(b: bool) -> Truth {
    if b { Truth::Holds } else { Truth::Fails }
}

fn numeric(v: &Value, f: impl Fn(f64) -> bool) -> Truth {
    match v.as_f64() {
        Some(n) => truth(f(n)),
        None => Truth::WrongType,
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
