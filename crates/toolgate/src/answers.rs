//! What the gateway itself says to an agent: the denial result of SPEC section 3, the
//! unknown-tool error (which hidden tools share, so their existence is not revealed), and
//! `tools/list` responses with hidden tools taken out.
//!
//! Filtering splices the kept tool objects' original bytes back together: tools the policy
//! keeps reach the agent exactly as the upstream wrote them (`$defs`, unknown keywords, order).
//!
//! What a result must carry depends on the protocol revision of the request it answers
//! ([`Revision`]): from 2026-07-28 on every result says its `resultType`, and list results
//! say how long and by whom they may be cached (`ttlMs`, `cacheScope`). Errors have one shape
//! in every revision.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use toolgate_policy::Policy;

use crate::jsonrpc::{self, Envelope};

/// The first protocol revision whose results carry `resultType` (and, for lists, `ttlMs`
/// and `cacheScope`).
pub const STATELESS_VERSION: &str = "2026-07-28";

/// The protocol revision a request was made under, as far as the shape of a result the
/// gateway writes itself is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2025-11-25 and earlier (or no version said): results as those revisions define them.
    Sessions,
    /// 2026-07-28 and later: `resultType` on every result, `ttlMs`/`cacheScope` on lists.
    Stateless,
}

impl Revision {
    /// The revision of a version string. Versions are dates (`YYYY-MM-DD`), so they compare
    /// as text; a version newer than 2026-07-28 keeps its results' required fields.
    pub fn of(version: &[u8]) -> Revision {
        if version >= STATELESS_VERSION.as_bytes() {
            Revision::Stateless
        } else {
            Revision::Sessions
        }
    }
}

/// A tool result written by the gateway: `isError`, one text, the decision in `_meta`.
fn tool_error(id: &str, text: String, decision: serde_json::Value, rev: Revision) -> Bytes {
    let mut result = serde_json::json!({
        "isError": true,
        "content": [{"type": "text", "text": text}],
        "_meta": {"toolgate/decision": decision},
    });
    if rev == Revision::Stateless {
        result["resultType"] = "complete".into();
    }
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
    ))
}

/// A denied `tools/call`: a tool result the agent can reason about (SPEC 3).
pub fn denial(
    id: &str,
    message: &str,
    rule: &str,
    policy_version: Option<u64>,
    rev: Revision,
) -> Bytes {
    tool_error(
        id,
        format!("[POLICY DENIED] {message}"),
        serde_json::json!({"outcome": "deny", "rule": rule, "policy_version": policy_version}),
        rev,
    )
}

/// A call over one of its limits: a denial naming the counter and when to retry (SPEC 3).
pub fn limited(
    id: &str,
    l: &crate::counters::Limited,
    policy_version: u64,
    rev: Revision,
) -> Bytes {
    tool_error(
        id,
        format!("[POLICY DENIED] {}", crate::counters::limited_message(l)),
        serde_json::json!({
            "outcome": "deny", "rule": &*l.rule, "policy_version": policy_version,
            "counter": l.counter, "retry_after_s": l.retry_after_s,
        }),
        rev,
    )
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
    #[serde(borrow, rename = "ttlMs")]
    ttl_ms: Option<&'a RawValue>,
    #[serde(borrow, rename = "cacheScope")]
    cache_scope: Option<&'a RawValue>,
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
///
/// Under 2026-07-28 the list says `cacheScope: "private"`: what one grant sees is not what
/// another may, so no shared cache may serve it across grants. `ttlMs` stays the upstream's
/// (0 when it gave none or an unreadable one), never longer.
pub fn filter_tools_list(policy: &Policy, message: Bytes, rev: Revision) -> Bytes {
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
    let hides = tools.iter().any(|(_, name)| policy.is_hidden(name));
    let private = list.cache_scope.is_some_and(|c| c.get() == r#""private""#);
    let ttl_ok = list.ttl_ms.is_some_and(|t| t.get().parse::<u64>().is_ok());
    let needs_scope = rev == Revision::Stateless && !(private && ttl_ok);
    if !hides && !needs_scope {
        return message;
    }
    let mut edits: Vec<(std::ops::Range<usize>, Cow<'_, [u8]>)> = Vec::with_capacity(3);
    if hides {
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
            Some(range) => edits.push((range, Cow::Owned(kept))),
            None => return fail("tools array not found in the message".into()),
        }
    }
    if needs_scope {
        let Some(open) = jsonrpc::span_in(&message, result.get()).map(|r| r.start + 1) else {
            return fail("result not found in the message".into());
        };
        match list
            .cache_scope
            .and_then(|c| jsonrpc::span_in(&message, c.get()))
        {
            Some(range) => edits.push((range, Cow::Borrowed(br#""private""#))),
            None => edits.push((open..open, Cow::Borrowed(br#""cacheScope":"private","#))),
        }
        if !ttl_ok {
            match list
                .ttl_ms
                .and_then(|t| jsonrpc::span_in(&message, t.get()))
            {
                Some(range) => edits.push((range, Cow::Borrowed(b"0"))),
                None => edits.push((open..open, Cow::Borrowed(br#""ttlMs":0,"#))),
            }
        }
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(message.len() + 48);
    let mut at = 0;
    for (range, with) in &edits {
        out.extend_from_slice(&message[at..range.start]);
        out.extend_from_slice(with);
        at = range.end;
    }
    out.extend_from_slice(&message[at..]);
    Bytes::from(out)
}

/// How the gateway shapes a `tools/list` answer for one grant: the policy whose hidden tools
/// leave it, and the revision the request was made under.
#[derive(Clone)]
pub struct ListFilter {
    pub policy: std::sync::Arc<crate::policies::Loaded>,
    pub revision: Revision,
}

/// Takes hidden tools out of a `tools/list` answer, in whichever form it comes.
pub fn filter_reply(reply: crate::upstream::Reply, filter: ListFilter) -> crate::upstream::Reply {
    use crate::upstream::Reply;
    use futures_util::StreamExt;
    match reply {
        Reply::Json { status, body } => Reply::Json {
            status,
            body: filter_tools_list(&filter.policy.policy, body, filter.revision),
        },
        Reply::Stream(events) => Reply::Stream(
            events
                .map(move |mut e| {
                    e.data = filter_tools_list(&filter.policy.policy, e.data, filter.revision);
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
        let out = filter_tools_list(&p, msg, Revision::Sessions);
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
        assert_eq!(filter_tools_list(&p, msg.clone(), Revision::Sessions), msg);
        let note = Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        );
        assert_eq!(
            filter_tools_list(&p, note.clone(), Revision::Stateless),
            note
        );
    }

    #[test]
    fn hide_star_keeps_only_listed_tools() {
        let p = policy(r#"{"version":"1","default":"deny","hide":["*"],"tools":{"c":{}}}"#);
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"c"}]}}"#,
        );
        let out = filter_tools_list(&p, msg, Revision::Sessions);
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
            let out = filter_tools_list(&p, Bytes::copy_from_slice(bad), Revision::Sessions);
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
            Revision::Sessions,
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
    fn results_say_their_type_from_2026_07_28_on() {
        for (version, typed) in [
            ("2025-03-26", false),
            ("2025-06-18", false),
            ("2025-11-25", false),
            ("2026-07-28", true),
            ("2027-01-01", true),
        ] {
            let rev = Revision::of(version.as_bytes());
            let d: serde_json::Value =
                serde_json::from_slice(&denial("1", "no", "(default deny)", Some(1), rev)).unwrap();
            let l = crate::counters::Limited {
                counter: "c".into(),
                rule: "/tools/a/limits/0".into(),
                max: 1,
                window: toolgate_policy::Window::Minute,
                retry_after_s: 3,
            };
            let l: serde_json::Value = serde_json::from_slice(&limited("2", &l, 1, rev)).unwrap();
            for v in [d, l] {
                let expected = typed.then(|| serde_json::json!("complete"));
                assert_eq!(
                    v["result"].get("resultType"),
                    expected.as_ref(),
                    "{version}: {v}"
                );
                assert_eq!(v["result"]["isError"], true);
            }
        }
    }

    #[test]
    fn a_filtered_list_is_private_under_2026_07_28() {
        let p = policy(r#"{"version":"1","default":"allow","hide":["b"]}"#);
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        // The upstream's TTL is kept, its scope made private, the hidden tool cut.
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}],"ttlMs":60000,"cacheScope":"public","resultType":"complete"}}"#,
        );
        assert_eq!(
            text(filter_tools_list(&p, msg, Revision::Stateless)),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"ttlMs":60000,"cacheScope":"private","resultType":"complete"}}"#
        );
        // Private even when this page hides nothing: another grant's page may differ.
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"ttlMs":5,"cacheScope":"public","resultType":"complete"}}"#,
        );
        assert_eq!(
            text(filter_tools_list(&p, msg, Revision::Stateless)),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"ttlMs":5,"cacheScope":"private","resultType":"complete"}}"#
        );
        // Missing or unreadable fields are written: no TTL means none (0).
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"b"},{"name":"a"}],"resultType":"complete"}}"#,
        );
        assert_eq!(
            text(filter_tools_list(&p, msg, Revision::Stateless)),
            r#"{"jsonrpc":"2.0","id":1,"result":{"cacheScope":"private","ttlMs":0,"tools":[{"name":"a"}],"resultType":"complete"}}"#
        );
        let msg = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"ttlMs":-4,"tools":[{"name":"a"}],"cacheScope":"private"}}"#,
        );
        assert_eq!(
            text(filter_tools_list(&p, msg, Revision::Stateless)),
            r#"{"jsonrpc":"2.0","id":1,"result":{"ttlMs":0,"tools":[{"name":"a"}],"cacheScope":"private"}}"#
        );
        // Before 2026-07-28 nothing is added.
        let msg =
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#);
        assert_eq!(filter_tools_list(&p, msg.clone(), Revision::Sessions), msg);
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
