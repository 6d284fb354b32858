//! A validated document compiled for the request path: one hash lookup finds a tool's rules,
//! with `all_tools` rules already merged in evaluation order, regexes built, default texts
//! formatted. Compiled once per policy version; evaluation only reads.

use std::collections::HashSet;

use serde_json::Value;

use crate::document::{
    self, Approval, DefaultAction, Document, Limit, Op, Problem, Rule, ToolRules,
};

pub(crate) enum Test {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    Regex(regex::Regex),
    Contains(Value),
    Exists(bool),
}

pub(crate) struct CompiledCondition {
    pub path: Box<[String]>,
    pub test: Test,
}

pub(crate) struct CompiledRule {
    pub conditions: Vec<CompiledCondition>,
    /// The rule's `on_deny`, or the default `Denied by rule RULE`.
    pub message: String,
    pub pointer: String,
}

pub(crate) struct CompiledTool {
    pub require: Vec<CompiledRule>,
    pub deny_if: Vec<CompiledRule>,
    /// Shared: an allowed call carries its limits to the counters without copying them.
    pub limits: std::sync::Arc<[Limit]>,
    pub approval: Option<Approval>,
}

/// A compiled policy, ready to evaluate calls.
pub struct Policy {
    pub(crate) document: Document,
    // foldhash, not std's SipHash: every call looks its tool up here and in `hidden`, two or
    // three times, and SipHash cost about 160 instructions a lookup (callgrind). The keys are
    // the document's names, a set no agent can grow; foldhash is seeded afresh in every
    // process.
    pub(crate) tools: foldhash::HashMap<Box<str>, CompiledTool>,
    /// Rules for tools not listed under `tools` when the default is allow.
    pub(crate) unlisted: Option<CompiledTool>,
    pub(crate) hidden: foldhash::HashSet<Box<str>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("document", &self.document)
            .finish()
    }
}

impl Policy {
    /// Parses, validates and compiles a policy document. Every problem is reported at once.
    pub fn parse(text: &str) -> Result<Policy, Vec<Problem>> {
        let value = crate::json::parse_strict(text).map_err(|e| {
            vec![Problem {
                pointer: e.pointer.unwrap_or_default(),
                message: format!("not valid JSON: {}", e.message),
            }]
        })?;
        Policy::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Policy, Vec<Problem>> {
        let document = document::validate(value)?;
        Ok(Policy::compile(document))
    }

    pub fn compile(document: Document) -> Policy {
        let merged = |tool: Option<&ToolRules>| {
            let all = &document.all_tools;
            let mut require = compile_rules(&all.require);
            let mut deny_if = compile_rules(&all.deny_if);
            let mut limits = all.limits.clone();
            let mut approval = None;
            if let Some(t) = tool {
                require.extend(compile_rules(&t.require));
                deny_if.extend(compile_rules(&t.deny_if));
                limits.extend(t.limits.iter().cloned());
                approval = t.approval.clone();
            }
            CompiledTool {
                require,
                deny_if,
                limits: limits.into(),
                approval,
            }
        };
        let tools = document
            .tools
            .iter()
            .map(|(name, rules)| (name.as_str().into(), merged(Some(rules))))
            .collect();
        let unlisted = (document.default == DefaultAction::Allow).then(|| merged(None));
        let hidden = document.hide.iter().map(|h| h.as_str().into()).collect();
        Policy {
            tools,
            unlisted,
            hidden,
            document,
        }
    }

    pub fn document(&self) -> &Document {
        &self.document
    }

    /// Whether `tools/list` must leave this tool out (and a call answer "unknown tool").
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.hidden.contains(tool)
            || (self.document.hide_unlisted && !self.tools.contains_key(tool))
    }

    /// Whether any tool can be hidden (else `tools/list` answers need no filtering).
    pub fn hides_anything(&self) -> bool {
        !self.hidden.is_empty() || self.document.hide_unlisted
    }

    /// Whether the policy names this tool under `tools`.
    pub fn lists(&self, tool: &str) -> bool {
        self.tools.contains_key(tool)
    }

    pub fn default_action(&self) -> DefaultAction {
        self.document.default
    }

    /// Advice that does not make the document invalid: a `deny_if` on an argument that no
    /// `require` makes present is passed by a call that simply omits the argument.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let doc = &self.document;
        let check = |name: Option<&str>, rules: &ToolRules, out: &mut Vec<Problem>| {
            let required: HashSet<&str> = doc
                .all_tools
                .require
                .iter()
                .chain(rules.require.iter())
                .flat_map(|r| r.conditions.iter())
                .filter(|c| !(c.op == Op::Exists && c.value == Value::Bool(false)))
                .map(|c| c.path_text.as_str())
                .collect();
            for rule in &rules.deny_if {
                for c in &rule.conditions {
                    if c.op != Op::Exists && !required.contains(c.path_text.as_str()) {
                        let whose =
                            name.map_or("every tool".to_string(), |n| format!("tool {n:?}"));
                        out.push(Problem {
                            pointer: c.pointer.clone(),
                            message: format!(
                                "deny_if on {} but no require of {whose} makes it present: a call that omits it passes this rule (add a require with {{\"path\": {:?}, \"op\": \"exists\", \"value\": true}})",
                                c.path_text, c.path_text
                            ),
                        });
                    }
                }
            }
        };
        check(None, &doc.all_tools, &mut out);
        for (name, rules) in &doc.tools {
            check(Some(name), rules, &mut out);
        }
        out
    }

    /// Compares the policy with the tools a server lists: names the policy uses that the
    /// server lacks (likely typos), and server tools the policy never mentions.
    pub fn coverage(&self, server_tools: &[&str]) -> Vec<Problem> {
        let on_server: HashSet<&str> = server_tools.iter().copied().collect();
        let mut out = Vec::new();
        for name in self.document.tools.keys() {
            if !on_server.contains(name.as_str()) {
                out.push(Problem {
                    pointer: format!("/tools/{}", crate::json::escape(name)),
                    message: format!("the server has no tool {name:?}"),
                });
            }
        }
        for (i, name) in self.document.hide.iter().enumerate() {
            if !on_server.contains(name.as_str()) {
                out.push(Problem {
                    pointer: format!("/hide/{i}"),
                    message: format!("the server has no tool {name:?}"),
                });
            }
        }
        if !self.document.hide_unlisted {
            let fate = match self.document.default {
                DefaultAction::Allow => "allowed by default",
                DefaultAction::Deny => "denied by default",
            };
            for name in server_tools {
                if !self.document.tools.contains_key(*name) && !self.hidden.contains(*name) {
                    out.push(Problem {
                        pointer: "/tools".into(),
                        message: format!(
                            "the server's tool {name:?} is not mentioned by the policy ({fate})"
                        ),
                    });
                }
            }
        }
        out
    }
}

fn compile_rules(rules: &[Rule]) -> Vec<CompiledRule> {
    rules
        .iter()
        .map(|r| CompiledRule {
            conditions: r
                .conditions
                .iter()
                .map(|c| CompiledCondition {
                    path: c.path.clone().into_boxed_slice(),
                    test: test(c.op, &c.value),
                })
                .collect(),
            message: r
                .on_deny
                .clone()
                .unwrap_or_else(|| format!("Denied by rule {}", r.pointer)),
            pointer: r.pointer.clone(),
        })
        .collect()
}

fn test(op: Op, value: &Value) -> Test {
    // Validation has checked every value's type against its op, so these never fall back.
    let num = || value.as_f64().unwrap_or(f64::NAN);
    let list = || value.as_array().cloned().unwrap_or_default();
    match op {
        Op::Eq => Test::Eq(value.clone()),
        Op::Neq => Test::Neq(value.clone()),
        Op::In => Test::In(list()),
        Op::NotIn => Test::NotIn(list()),
        Op::Lt => Test::Lt(num()),
        Op::Lte => Test::Lte(num()),
        Op::Gt => Test::Gt(num()),
        Op::Gte => Test::Gte(num()),
        Op::Regex => Test::Regex(
            document::build_regex(value.as_str().unwrap_or_default())
                .expect("validated regexes compile"),
        ),
        Op::Contains => Test::Contains(value.clone()),
        Op::Exists => Test::Exists(value.as_bool().unwrap_or(true)),
    }
}
