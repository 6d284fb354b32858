//! Step 5, the decision (SPEC 3 and 4): what the policy says about one message.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use toolgate_policy::json::Strict;
use toolgate_policy::{Decision, Limit};

use super::{AgentHeaders, Message, Refused};
use crate::answers::{self, ListFilter, Revision};
use crate::audit::Outcome;
use crate::grants::Grant;
use crate::jsonrpc::{self, CallParams, Kind};
use crate::policies::Loaded;

/// The outcome of the decision step.
pub enum Verdict {
    /// Forward the message. For `tools/list`, the policy whose hidden tools leave the answer;
    /// for an allowed `tools/call`, what must still hold before it goes upstream.
    Forward {
        list_filter: Option<ListFilter>,
        call: Option<AllowedCall>,
    },
    /// Answer the agent at once (a denial, an unknown tool); nothing reaches the upstream.
    Answer(Bytes, Box<Decided>),
    /// Denied by the policy's default (`"default": "deny"`, a tool it does not name). Only a
    /// tool the upstream lists gets this denial; any other name gets the unknown-tool error,
    /// as a hidden tool does, so that the answer never tells which names are hidden.
    DefaultDenied {
        denial: Bytes,
        decided: Box<Decided>,
        /// The revision the call was made under, for the gateway's own tool listing.
        revision: Revision,
    },
}

/// What was decided about a `tools/call`: for the audit record and the metrics.
#[derive(Debug, Clone)]
pub struct Decided {
    pub outcome: Outcome,
    /// Shared: the decision is cloned into the answer and the audit trail.
    pub tool: Arc<str>,
    /// The call's arguments as the policy read them (Null when absent). Shared: the decision
    /// is cloned into the answer and the audit trail, and arguments can be large.
    pub arguments: std::sync::Arc<serde_json::Value>,
    pub rule: Option<String>,
    pub policy_version: Option<u64>,
}

impl Decided {
    pub fn with(&self, outcome: Outcome, rule: Option<&str>) -> Decided {
        Decided {
            outcome,
            rule: rule.map(str::to_string),
            ..self.clone()
        }
    }
}

impl Verdict {
    /// What was decided about a `tools/call` (None for other messages).
    pub fn decided(&self) -> Option<&Decided> {
        match self {
            Verdict::Answer(_, d) => Some(d),
            Verdict::DefaultDenied { decided, .. } => Some(decided),
            Verdict::Forward { call, .. } => call.as_ref().map(|c| &c.decided),
        }
    }
}

/// A `tools/call` the policy allows, and what the later steps must still do with it.
pub struct AllowedCall {
    /// Set when the policy does not name the tool (the default allowed it): the upstream must
    /// list it, so that a look-alike name ("Delete_Project", a trailing space) is refused here
    /// instead of being interpreted by the server.
    pub must_be_listed: Option<String>,
    /// The counters to reserve (all_tools' and the tool's).
    pub limits: Arc<[Limit]>,
    pub policy_version: u64,
    /// The revision the call was made under, for the answers the gateway writes itself.
    pub revision: Revision,
    pub decided: Decided,
}

const FORWARD: Verdict = Verdict::Forward {
    list_filter: None,
    call: None,
};

/// Rule named when a grant has no policy at all: every call is denied (fail closed).
pub const NO_POLICY_RULE: &str = "(no policy)";

/// `tools/list` answers lose hidden tools; a `tools/call` is evaluated on its name and
/// arguments. Counters (`limits`) and approvals take over from the `Allow` the engine returns.
pub fn decide(
    grant: &Grant,
    headers: &AgentHeaders<'_>,
    msg: &Message<'_>,
) -> Result<Verdict, Refused> {
    if msg.kind != Kind::Request {
        return Ok(FORWARD);
    }
    let policy = grant.policy.as_ref().map(|p| p.current());
    match msg.envelope.method() {
        "tools/list" => {
            let list_filter =
                policy
                    .filter(|p| p.policy.hides_anything())
                    .map(|policy| ListFilter {
                        policy,
                        revision: super::revision(headers, msg),
                    });
            Ok(Verdict::Forward {
                list_filter,
                call: None,
            })
        }
        "tools/call" => decide_call(msg, policy, super::revision(headers, msg)),
        _ => Ok(FORWARD),
    }
}

fn decide_call(
    msg: &Message<'_>,
    policy: Option<Arc<Loaded>>,
    rev: Revision,
) -> Result<Verdict, Refused> {
    let id = msg.id.unwrap_or("null");
    let invalid = |why: &str| {
        Refused::new(
            StatusCode::OK,
            jsonrpc::INVALID_PARAMS,
            format!("Invalid params: {why}"),
        )
        .with_id(msg.id)
    };
    let params = msg
        .envelope
        .params
        .ok_or_else(|| invalid("tools/call needs params"))?;
    // Only by name: serde would also read a list positionally (["echo", null, {...}]),
    // a shape the upstream might read differently.
    if !params.get().trim_start().starts_with('{') {
        return Err(invalid("tools/call params must be an object"));
    }
    // The arguments are read with duplicate keys refused, in the same pass as the rest:
    // {"amount":5,"amount":5000} must not be judged as 5 here and acted on as 5000 upstream.
    let params: CallParams = serde_json::from_str(params.get()).map_err(|e| {
        let e = toolgate_policy::json::JsonError::from(e);
        match e.pointer {
            Some(_) => invalid(&format!("arguments: {e}")),
            None => invalid(&format!("tools/call params: {e}")),
        }
    })?;
    let name = params
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("tools/call needs params.name"))?;
    let args = match params.arguments {
        None => serde_json::Value::Null,
        Some(Strict(v)) if v.is_object() => v,
        Some(_) => return Err(invalid("tools/call arguments must be an object")),
    };
    let args = std::sync::Arc::new(args);
    let tool: Arc<str> = name.into();
    let decided = |outcome, rule: Option<&str>, version| Decided {
        outcome,
        tool: tool.clone(),
        arguments: args.clone(),
        rule: rule.map(str::to_string),
        policy_version: version,
    };
    let Some(loaded) = policy else {
        let message = "No policy applies to this grant; every call is denied";
        let body = answers::denial(id, message, NO_POLICY_RULE, None, rev);
        return Ok(Verdict::Answer(
            body,
            Box::new(decided(Outcome::Deny, Some(NO_POLICY_RULE), None)),
        ));
    };
    let version = Some(loaded.version);
    match loaded.policy.evaluate(name, &args) {
        Decision::Hidden => Ok(Verdict::Answer(
            answers::unknown_tool(id, name),
            Box::new(decided(
                Outcome::Hidden,
                Some(toolgate_policy::HIDDEN_RULE),
                version,
            )),
        )),
        Decision::Deny { rule, message } if rule == toolgate_policy::DEFAULT_DENY_RULE => {
            Ok(Verdict::DefaultDenied {
                denial: answers::denial(id, &message, rule, version, rev),
                decided: Box::new(decided(Outcome::Deny, Some(rule), version)),
                revision: rev,
            })
        }
        Decision::Deny { rule, message } => Ok(Verdict::Answer(
            answers::denial(id, &message, rule, version, rev),
            Box::new(decided(Outcome::Deny, Some(rule), version)),
        )),
        Decision::Allow { limits, .. } => Ok(Verdict::Forward {
            list_filter: None,
            call: Some(AllowedCall {
                must_be_listed: (!loaded.policy.lists(name)).then(|| name.to_string()),
                limits: limits.clone(),
                policy_version: loaded.version,
                revision: rev,
                decided: decided(Outcome::Allow, None, version),
            }),
        }),
    }
}
