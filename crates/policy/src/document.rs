//! The policy document, version 1 (SPEC section 4), and its validation.
//!
//! Validation walks the JSON by hand rather than through serde derive: derive stops at the
//! first error, and an operator fixing a policy wants every error at once, each with the JSON
//! pointer of the value at fault and a sentence saying what to write instead.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::json::escape;

/// One problem in a policy document: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
    Regex,
    Contains,
    Exists,
}

const OPS: &[(&str, Op)] = &[
    ("eq", Op::Eq),
    ("neq", Op::Neq),
    ("in", Op::In),
    ("not_in", Op::NotIn),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
    ("regex", Op::Regex),
    ("contains", Op::Contains),
    ("exists", Op::Exists),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86400,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Grant,
    Session,
    Server,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Grant => "grant",
            Scope::Session => "session",
            Scope::Server => "server",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    Hold,
    Retry,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The path's segments after `args` (`args.customer.tier` → `["customer", "tier"]`).
    pub path: Vec<String>,
    /// The path as written, for messages.
    pub path_text: String,
    pub op: Op,
    pub value: Value,
    pub pointer: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub conditions: Vec<Condition>,
    pub on_deny: Option<String>,
    /// `/tools/NAME/deny_if/0`: names the rule in denials.
    pub pointer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Shared (`Arc`): the request path hands limits around on every call without copying.
    pub counter: std::sync::Arc<str>,
    pub window: Window,
    pub max: u64,
    pub scope: Scope,
    /// `/tools/NAME/limits/COUNTER` (or `/all_tools/limits/COUNTER`): names the limit in denials.
    pub rule: std::sync::Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub timeout: Duration,
    pub mode: ApprovalMode,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolRules {
    pub require: Vec<Rule>,
    pub deny_if: Vec<Rule>,
    pub limits: Vec<Limit>,
    pub approval: Option<Approval>,
}

/// A valid policy document, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub default: DefaultAction,
    pub hide: Vec<String>,
    /// `"*"` in `hide`: every tool not listed under `tools` is hidden.
    pub hide_unlisted: bool,
    pub all_tools: ToolRules,
    pub tools: BTreeMap<String, ToolRules>,
}

/// The default approval timeout when a policy gives none.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Why a policy with an `approval` is refused: this version of the gateway cannot hold a call
/// for a human (SPEC 6), and an approval it ignored would let the call through (SPEC 4: "never
/// ignored: a gateway that cannot enforce it refuses the policy"). The approval is still parsed
/// and its own fields checked, so that every problem is reported at once; once approvals are
/// enforced, this refusal goes and the parsed approval is used (`all_tools.approval` included,
/// which `Policy::compile` does not merge into the tools' rules yet).
pub const APPROVAL_NOT_ENFORCED: &str = "approval is not enforced by this version of toolgate \
     yet; a policy that asks for it is refused rather than run without it (remove the field, \
     or use deny_if to block the call)";

struct Walk {
    problems: Vec<Problem>,
    /// counter name → (window, pointer of its first use)
    counters: BTreeMap<String, (Window, String)>,
}

impl Walk {
    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    fn object<'v>(
        &mut self,
        v: &'v Value,
        pointer: &str,
        what: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.problem(
                    pointer,
                    format!("{what} must be an object, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn unknown_fields(&mut self, m: &Map<String, Value>, pointer: &str, known: &[&str]) {
        for key in m.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(
                    format!("{pointer}/{}", escape(key)),
                    format!(
                        "unknown field {key:?}; expected one of: {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Validates a parsed document; returns it typed, or every problem found.
pub fn validate(root: &Value) -> Result<Document, Vec<Problem>> {
    let mut w = Walk {
        problems: Vec::new(),
        counters: BTreeMap::new(),
    };
    let Some(top) = w.object(root, "", "a policy document") else {
        return Err(w.problems);
    };
    w.unknown_fields(
        top,
        "",
        &["version", "default", "hide", "all_tools", "tools"],
    );

    match top.get("version") {
        Some(Value::String(v)) if v == "1" => {}
        Some(other) => w.problem("/version", format!("version must be \"1\", not {other}")),
        None => w.problem("/version", "version is required: \"version\": \"1\""),
    }
    let default = match top.get("default") {
        Some(Value::String(d)) if d == "allow" => DefaultAction::Allow,
        Some(Value::String(d)) if d == "deny" => DefaultAction::Deny,
        Some(other) => {
            w.problem(
                "/default",
                format!("default must be \"allow\" or \"deny\", not {other}"),
            );
            DefaultAction::Deny
        }
        None => {
            w.problem("/default", "default is required: \"allow\" or \"deny\"");
            DefaultAction::Deny
        }
    };

    let mut hide = Vec::new();
    let mut hide_unlisted = false;
    match top.get("hide") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s == "*" => hide_unlisted = true,
                    Value::String(s) if !s.is_empty() => hide.push(s.clone()),
                    other => w.problem(
                        format!("/hide/{i}"),
                        format!("hide entries are tool names, not {}", describe(other)),
                    ),
                }
            }
        }
        Some(other) => w.problem(
            "/hide",
            format!(
                "hide must be a list of tool names (e.g. [\"delete_project\"]), not {}",
                type_name(other)
            ),
        ),
    }

    let all_tools = match top.get("all_tools") {
        None => ToolRules::default(),
        Some(v) => tool_rules(&mut w, v, "/all_tools", true),
    };

    let mut tools = BTreeMap::new();
    match top.get("tools") {
        None => {}
        Some(Value::Object(m)) => {
            for (name, spec) in m {
                let pointer = format!("/tools/{}", escape(name));
                if name.is_empty() {
                    w.problem(&pointer, "a tool name cannot be empty");
                    continue;
                }
                let rules = tool_rules(&mut w, spec, &pointer, false);
                tools.insert(name.clone(), rules);
            }
        }
        Some(other) => w.problem(
            "/tools",
            format!(
                "tools must be an object keyed by tool name, not {}",
                type_name(other)
            ),
        ),
    }

    if w.problems.is_empty() {
        Ok(Document {
            default,
            hide,
            hide_unlisted,
            all_tools,
            tools,
        })
    } else {
        Err(w.problems)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "an empty string".into(),
        other => type_name(other).into(),
    }
}

fn tool_rules(w: &mut Walk, v: &Value, pointer: &str, all_tools: bool) -> ToolRules {
    let mut rules = ToolRules::default();
    let what = if all_tools {
        "all_tools"
    } else {
        "a tool's rules"
    };
    let Some(m) = w.object(v, pointer, what) else {
        return rules;
    };
    w.unknown_fields(m, pointer, &["require", "deny_if", "limits", "approval"]);
    for (key, list) in [
        ("require", &mut rules.require),
        ("deny_if", &mut rules.deny_if),
    ] {
        if let Some(v) = m.get(key) {
            let p = format!("{pointer}/{key}");
            match v {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(rule) = rule(w, item, &format!("{p}/{i}")) {
                            list.push(rule);
                        }
                    }
                }
                other => w.problem(
                    &p,
                    format!("{key} must be a list of rules, not {}", type_name(other)),
                ),
            }
        }
    }
    if let Some(v) = m.get("limits") {
        let p = format!("{pointer}/limits");
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(limit) = limit(w, item, &format!("{p}/{i}"), &p) {
                        rules.limits.push(limit);
                    }
                }
            }
            other => w.problem(
                &p,
                format!("limits must be a list, not {}", type_name(other)),
            ),
        }
    }
    if let Some(v) = m.get("approval") {
        // Under a tool or under all_tools (SPEC 4): refused either way until approvals are
        // enforced; its own fields are still checked, so every problem shows at once.
        let p = format!("{pointer}/approval");
        w.problem(&p, APPROVAL_NOT_ENFORCED);
        rules.approval = approval(w, v, &p);
    }
    rules
}

fn rule(w: &mut Walk, v: &Value, pointer: &str) -> Option<Rule> {
    let m = w.object(v, pointer, "a rule")?;
    w.unknown_fields(m, pointer, &["conditions", "on_deny"]);
    let before = w.problems.len();
    let mut conditions = Vec::new();
    match m.get("conditions") {
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = condition(w, item, &format!("{pointer}/conditions/{i}")) {
                    conditions.push(c);
                }
            }
        }
        Some(other) => w.problem(
            format!("{pointer}/conditions"),
            format!("conditions must be a list, not {}", type_name(other)),
        ),
        None => w.problem(
            format!("{pointer}/conditions"),
            "conditions is required (an empty list makes a rule that always applies)",
        ),
    }
    let on_deny = match m.get("on_deny") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            w.problem(
                format!("{pointer}/on_deny"),
                format!("on_deny must be a string, not {}", type_name(other)),
            );
            None
        }
    };
    (w.problems.len() == before).then(|| Rule {
        conditions,
        on_deny,
        pointer: pointer.to_string(),
    })
}

fn condition(w: &mut Walk, v: &Value, pointer: &str) -> Option<Condition> {
    let m = w.object(v, pointer, "a condition")?;
    w.unknown_fields(m, pointer, &["path", "op", "value"]);
    let before = w.problems.len();
    let path = match m.get("path") {
        Some(Value::String(p)) => match parse_path(p) {
            Some(segments) => Some((segments, p.clone())),
            None => {
                w.problem(
                    format!("{pointer}/path"),
                    format!("path {p:?} must start with \"args.\" and name an argument (e.g. \"args.amount\", \"args.customer.tier\")"),
                );
                None
            }
        },
        Some(other) => {
            w.problem(
                format!("{pointer}/path"),
                format!(
                    "path must be a string like \"args.amount\", not {}",
                    type_name(other)
                ),
            );
            None
        }
        None => {
            w.problem(
                format!("{pointer}/path"),
                "path is required (e.g. \"args.amount\")",
            );
            None
        }
    };
    let names = OPS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let op = match m.get("op") {
        Some(Value::String(o)) => match OPS.iter().find(|(n, _)| n == o) {
            Some((_, op)) => Some(*op),
            None => {
                w.problem(
                    format!("{pointer}/op"),
                    format!("unknown op {o:?}; expected one of: {names}"),
                );
                None
            }
        },
        Some(other) => {
            w.problem(
                format!("{pointer}/op"),
                format!("op must be a string ({names}), not {}", type_name(other)),
            );
            None
        }
        None => {
            w.problem(
                format!("{pointer}/op"),
                format!("op is required: one of {names}"),
            );
            None
        }
    };
    let value_pointer = format!("{pointer}/value");
    let value = match m.get("value") {
        Some(v) => Some(v.clone()),
        None => {
            w.problem(&value_pointer, "value is required");
            None
        }
    };
    if let (Some(op), Some(value)) = (op, &value)
        && let Some(why) = value_problem(op, value)
    {
        w.problem(&value_pointer, why);
    }
    if w.problems.len() != before {
        return None;
    }
    let (path, path_text) = path?;
    Some(Condition {
        path,
        path_text,
        op: op?,
        value: value?,
        pointer: pointer.to_string(),
    })
}

/// `args.a.b` → `["a", "b"]`; None when the path does not name an argument.
fn parse_path(p: &str) -> Option<Vec<String>> {
    let rest = p.strip_prefix("args.")?;
    let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
    segments.iter().all(|s| !s.is_empty()).then_some(segments)
}

/// The largest compiled size of a policy-supplied regex: patterns are untrusted input too.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why `value` cannot go with `op`, if it cannot.
fn value_problem(op: Op, value: &Value) -> Option<String> {
    match op {
        Op::Eq | Op::Neq | Op::Contains => None,
        Op::In | Op::NotIn => (!value.is_array()).then(|| {
            format!(
                "{} needs a list of values (e.g. [\"dev\", \"staging\"]), not {}",
                op_name(op),
                type_name(value)
            )
        }),
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => (!value.is_number()).then(|| {
            format!(
                "{} compares numbers: value must be a number, not {}",
                op_name(op),
                type_name(value)
            )
        }),
        Op::Exists => (!value.is_boolean())
            .then(|| format!("exists takes true or false, not {}", type_name(value))),
        Op::Regex => match value {
            Value::String(p) => build_regex(p).err().map(|e| format!("invalid regex: {e}")),
            other => Some(format!(
                "regex needs a pattern string, not {}",
                type_name(other)
            )),
        },
    }
}

pub fn op_name(op: Op) -> &'static str {
    OPS.iter()
        .find(|(_, o)| *o == op)
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

/// A full-match regex: the pattern must compile on its own first, so that wrapping it in an
/// anchored group cannot change its meaning (`a)|(b` would otherwise escape the anchors).
pub fn build_regex(pattern: &str) -> Result<regex::Regex, String> {
    let limited = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    limited(pattern).map_err(|e| one_line(&e.to_string()))?;
    limited(&format!("^(?:{pattern})$")).map_err(|e| one_line(&e.to_string()))
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn limit(w: &mut Walk, v: &Value, pointer: &str, limits_pointer: &str) -> Option<Limit> {
    let m = w.object(v, pointer, "a limit")?;
    w.unknown_fields(m, pointer, &["counter", "window", "max", "scope"]);
    let before = w.problems.len();
    let counter = match m.get("counter") {
        Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
        Some(other) => {
            w.problem(
                format!("{pointer}/counter"),
                format!("counter must be a non-empty name, not {}", describe(other)),
            );
            None
        }
        None => {
            w.problem(format!("{pointer}/counter"), "counter is required (a name; the same name in several tools is one shared counter)");
            None
        }
    };
    let window = match m.get("window").and_then(Value::as_str) {
        Some("second") => Some(Window::Second),
        Some("minute") => Some(Window::Minute),
        Some("hour") => Some(Window::Hour),
        Some("day") => Some(Window::Day),
        _ => {
            let got = m
                .get("window")
                .map_or("nothing".to_string(), |v| v.to_string());
            w.problem(
                format!("{pointer}/window"),
                format!("window must be \"second\", \"minute\", \"hour\" or \"day\", not {got}"),
            );
            None
        }
    };
    let max = match m.get("max") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            w.problem(
                format!("{pointer}/max"),
                format!("max must be a whole number of calls, 0 or more, not {other}"),
            );
            None
        }
        None => {
            w.problem(
                format!("{pointer}/max"),
                "max is required (calls per window)",
            );
            None
        }
    };
    let scope = match m.get("scope").and_then(Value::as_str) {
        Some("grant") => Some(Scope::Grant),
        Some("session") => Some(Scope::Session),
        Some("server") => Some(Scope::Server),
        _ => {
            let got = m
                .get("scope")
                .map_or("nothing".to_string(), |v| v.to_string());
            w.problem(
                format!("{pointer}/scope"),
                format!("scope must be \"grant\", \"session\" or \"server\", not {got}"),
            );
            None
        }
    };
    if let (Some(counter), Some(window)) = (&counter, window) {
        match w.counters.get(counter) {
            Some((first, at)) if *first != window => {
                let message = format!(
                    "counter {counter:?} has window {:?} here but {:?} at {at}; one counter has one window",
                    window.as_str(),
                    first.as_str()
                );
                w.problem(format!("{pointer}/window"), message);
            }
            Some(_) => {}
            None => {
                w.counters
                    .insert(counter.clone(), (window, format!("{pointer}/window")));
            }
        }
    }
    if w.problems.len() != before {
        return None;
    }
    let counter = counter?;
    Some(Limit {
        rule: format!("{limits_pointer}/{}", escape(&counter)).into(),
        counter: counter.into(),
        window: window?,
        max: max?,
        scope: scope?,
    })
}

fn approval(w: &mut Walk, v: &Value, pointer: &str) -> Option<Approval> {
    let m = w.object(v, pointer, "approval")?;
    w.unknown_fields(m, pointer, &["timeout", "mode"]);
    let timeout = match m.get("timeout") {
        None => Some(DEFAULT_APPROVAL_TIMEOUT),
        Some(Value::String(t)) => {
            match parse_duration(t) {
                Some(d) => Some(d),
                None => {
                    w.problem(format!("{pointer}/timeout"), format!("timeout {t:?} must be a duration like \"90s\", \"15m\", \"2h\" or \"1d\""));
                    None
                }
            }
        }
        Some(other) => {
            w.problem(
                format!("{pointer}/timeout"),
                format!(
                    "timeout must be a duration string like \"15m\", not {}",
                    type_name(other)
                ),
            );
            None
        }
    };
    let mode = match m.get("mode") {
        None => Some(ApprovalMode::Hold),
        Some(Value::String(s)) if s == "hold" => Some(ApprovalMode::Hold),
        Some(Value::String(s)) if s == "retry" => Some(ApprovalMode::Retry),
        Some(other) => {
            w.problem(
                format!("{pointer}/mode"),
                format!("mode must be \"hold\" or \"retry\", not {other}"),
            );
            None
        }
    };
    Some(Approval {
        timeout: timeout?,
        mode: mode?,
    })
}

/// `"90s"`, `"15m"`, `"2h"`, `"1d"` (a positive whole number and one unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}
