//! What the gateway itself says to an agent: the denial result of SPEC section 3, the
//! unknown-tool error (which hidden tools share, so their existence is not revealed), and
//! `tools/list` responses with hidden tools taken out.
//!
//! Filtering splices the kept tool objects' original bytes back together: tools the policy
//! keeps reach the agent exactly as the upstream wrote them (`$defs`, unknown keywords, order).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use toolgate_policy::Policy;

use crate::jsonrpc::{self, Envelope};

/// A denied `tools/call`: a tool result the agent can reason about (SPEC 3).
pub fn denial(id: &str, message: &str, rule: &str, policy_version: Option<u64>) -> Bytes {
    let result = serde_json::json!({
        "isError": true,
        "content": [{"type": "text", "text": format!("[POLICY DENIED] {message}")}],
        "_meta": {"toolgate/decision": {"outcome": "deny", "rule": rule, "policy_version": policy_version}},
    });
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
    ))
}

/// A call over one of its limits: a denial naming the counter and when to retry (SPEC 3).
pub fn limited(id: &str, l: &crate::counters::Limited, policy_version: u64) -> Bytes {
    let result = serde_json::json!({
        "isError": true,
        "content": [{"type": "text", "text": format!("[POLICY DENIED] {}", crate::counters::limited_message(l))}],
        "_meta": {"toolgate/decision": {
            "outcome": "deny", "rule": &*l.rule, "policy_version": policy_version,
            "counter": l.counter, "retry_after_s": l.retry_after_s,
        }},
    });
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
    ))
}

/// The answer to a call of a hidden or never-listed tool: the same as for any unknown tool.
pub fn unknown_tool(id: &str, name: &str) -> Bytes {
    jsonrpc::error_response(
        Some(id),
        jsonrpc::INVALID_PARAMS,
        &format!("Unknown tool: {name}"),
    )
}

#[derive(Deserialize)]
struct ListResult<'a> {
    #[serde(borrow)]
    tools: &'a RawValue,
}

#[derive(Deserialize)]
struct ToolName<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// The tools of a `tools/list` result (raw) and their names, refusing malformed entries.
fn tools_of(list: &RawValue) -> Result<Vec<(&RawValue, Cow<'_, str>)>, String> {
    let items: Vec<&RawValue> =
        serde_json::from_str(list.get()).map_err(|e| format!("tools is not a list: {e}"))?;
    items
        .into_iter()
        .map(|raw| {
            let t: ToolName = serde_json::from_str(raw.get())
                .map_err(|e| format!("a tool without a single string name: {e}"))?;
            Ok((raw, t.name))
        })
        .collect()
}

/// Takes the hidden tools out of one upstream message, if it is a `tools/list` result. Other
/// messages come back unchanged. A result the gateway cannot read is replaced by an error:
/// a listing that cannot be filtered is not shown (fail closed).
pub fn filter_tools_list(policy: &Policy, message: Bytes) -> Bytes {
    let Ok(env) = Envelope::parse(&message) else {
        return message;
    };
    let (Some(id), Some(result)) = (env.id, env.result) else {
        return message;
    };
    let fail = |why: String| {
        tracing::warn!("upstream tools/list could not be filtered: {why}");
        jsonrpc::error_response(
            Some(id.get()),
            jsonrpc::INTERNAL_ERROR,
            "upstream tools/list could not be read",
        )
    };
    let list: ListResult = match serde_json::from_str(result.get()) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let tools = match tools_of(list.tools) {
        Ok(t) => t,
        Err(why) => return fail(why),
    };
    if !tools.iter().any(|(_, name)| policy.is_hidden(name)) {
        return message;
    }
    let mut kept = Vec::with_capacity(list.tools.get().len());
    kept.push(b'[');
    for (raw, _) in tools.iter().filter(|(_, name)| !policy.is_hidden(name)) {
        if kept.len() > 1 {
            kept.push(b',');
        }
        kept.extend_from_slice(raw.get().as_bytes());
    }
    kept.push(b']');
    match jsonrpc::span_in(&message, list.tools.get()) {
        Some(range) => jsonrpc::splice(&message, range, &kept),
        None => fail("tools array not found in the message".into()),
    }
}

/// Takes hidden tools out of a `tools/list` answer, in whichever form it comes.
pub fn filter_reply(
    reply: crate::upstream::Reply,
    policy: std::sync::Arc<crate::policies::Loaded>,
) -> crate::upstream::Reply {
    use crate::upstream::Reply;
    use futures_util::StreamExt;
    match reply {
        Reply::Json { status, body } => Reply::Json {
            status,
            body: filter_tools_list(&policy.policy, body),
        },
        Reply::Stream(events) => Reply::Stream(
            events
                .map(move |mut e| {
                    e.data = filter_tools_list(&policy.policy, e.data);
                    e
                })
                .boxed(),
        ),
        other => other,
    }
}

/// One page of a `tools/list` response: the tool names and the next cursor (raw JSON).
pub fn list_page(message: &[u8]) -> Result<(Vec<String>, Option<String>), String> {
    #[derive(Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        tools: &'a RawValue,
        #[serde(borrow, rename = "nextCursor")]
        next_cursor: Option<&'a RawValue>,
    }
    let env = Envelope::parse(message).map_err(|r| r.message)?;
    let result = env
        .result
        .ok_or_else(|| "tools/list failed upstream".to_string())?;
    let page: Page = serde_json::from_str(result.get()).map_err(|e| e.to_string())?;
    let names = tools_of(page.tools)?
        .into_iter()
        .map(|(_, n)| n.into_owned())
        .collect();
    let cursor = page
        .next_cursor
        .map(|c| c.get().to_string())
        .filter(|c| c != "null");
    Ok((names, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(text).unwrap()
    }

    #[test]
    fn hidden_tools_are_cut_and_the_rest_is_byte_identical() {
        let p = policy(r#"{"version":"1","default":"allow","hide":["b"]}"#);
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","inputSchema":{"$defs":{"x":{}},"type":"object"}}, {"name":"b"},{"name":"c","x-vendor":1}],"nextCursor":"n2"}}"#,
        );
        let out = filter_tools_list(&p, msg);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","inputSchema":{"$defs":{"x":{}},"type":"object"}},{"name":"c","x-vendor":1}],"nextCursor":"n2"}}"#
        );
    }

    #[test]
    fn unchanged_when_nothing_is_hidden_and_for_other_messages() {
        let p = policy(r#"{"version":"1","default":"allow","hide":["zzz"]}"#);
        let msg =
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[ {"name":"a"} ]}}"#);
        assert_eq!(filter_tools_list(&p, msg.clone()), msg);
        let note = Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        );
        assert_eq!(filter_tools_list(&p, note.clone()), note);
    }

    #[test]
    fn hide_star_keeps_only_listed_tools() {
        let p = policy(r#"{"version":"1","default":"deny","hide":["*"],"tools":{"c":{}}}"#);
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"c"}]}}"#,
        );
        let out = filter_tools_list(&p, msg);
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"c"}]}}"#
        );
    }

    #[test]
    fn unreadable_listings_fail_closed() {
        let p = policy(r#"{"version":"1","default":"allow","hide":["b"]}"#);
        for bad in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"b"}}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"}]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"b"}]}}"#,
        ] {
            let out = filter_tools_list(&p, Bytes::copy_from_slice(bad));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                v["error"]["code"],
                jsonrpc::INTERNAL_ERROR,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn denial_shape() {
        let d = denial(
            "7",
            "Refund exceeds the policy limit.",
            "/tools/create_refund/deny_if/0",
            Some(3),
        );
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":7,"result":{"isError":true,
             "content":[{"type":"text","text":"[POLICY DENIED] Refund exceeds the policy limit."}],
             "_meta":{"toolgate/decision":{"outcome":"deny","rule":"/tools/create_refund/deny_if/0","policy_version":3}}}})
        );
        let u: serde_json::Value =
            serde_json::from_slice(&unknown_tool("\"x\"", "delete_project")).unwrap();
        assert_eq!(u["error"]["code"], -32602);
        assert_eq!(u["error"]["message"], "Unknown tool: delete_project");
    }

    #[test]
    fn pages() {
        let (names, cursor) =
            list_page(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}],"nextCursor":"c2"}}"#).unwrap();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(cursor.as_deref(), Some("\"c2\""));
        let (_, cursor) = list_page(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#).unwrap();
        assert!(cursor.is_none());
    }
}
