//! The check that a tool is one the upstream lists, for the calls whose tool the policy does
//! not name: under `"default": "allow"` a look-alike name ("Delete_Project", a trailing
//! space) is refused here instead of being interpreted by the server, and under
//! `"default": "deny"` a name the server does not have is answered as unknown, like a hidden
//! one, instead of with a denial that would tell the two apart.
//!
//! The list is the gateway's own `tools/list`, sent on the caller's binding (its session, or
//! stateless with the caller's protocol version and capabilities in `_meta`), all pages, and
//! cached per upstream (`ListedTools`): fetched again when a call names a tool it lacks, and
//! forgotten when the server sends `notifications/tools/list_changed`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::forward::send_on;
use super::{Binding, Message, Refused};
use crate::answers::{self, Revision};
use crate::gateway::{Gateway, Upstream};
use crate::grants::Grant;
use crate::jsonrpc::{self, Kind};
use crate::upstream::{Outbound, ToolNames};

/// At most this many pages of one listing are read.
const MAX_PAGES: u32 = 100;

/// Whether the upstream lists `tool`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upstream_lists(
    gw: &Gateway,
    upstream: &Upstream,
    grant: &Grant,
    binding: &Binding,
    like: &Outbound<'_>,
    msg: &Message<'_>,
    rev: Revision,
    tool: &str,
) -> Result<bool, Refused> {
    if upstream.tools().has(tool) == Some(true) {
        return Ok(true);
    }
    let meta = match rev {
        Revision::Stateless => Some(stateless_meta(msg)),
        Revision::Sessions => None,
    };
    let mut names = ToolNames::default();
    let mut cursor: Option<String> = None;
    for _page in 0..MAX_PAGES {
        let mut params = String::from("{");
        if let Some(meta) = &meta {
            params.push_str(r#""_meta":"#);
            params.push_str(meta);
        }
        if let Some(c) = &cursor {
            if meta.is_some() {
                params.push(',');
            }
            params.push_str(r#""cursor":"#);
            params.push_str(c);
        }
        params.push('}');
        // Ids of the gateway's own requests are unique process-wide, so that two listings in
        // flight on one upstream session never share one.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(r#""toolgate-tools-{n}""#);
        let body = Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list","params":{params}}}"#
        ));
        // Under 2026-07-28 the method travels in a header too, and the server checks it.
        let method_header = (like.mcp_method.is_some() || rev == Revision::Stateless)
            .then(|| HeaderValue::from_static("tools/list"));
        let out = Outbound {
            body: &body,
            kind: Kind::Request,
            method: "tools/list",
            id: Some(&id),
            progress_token: None,
            accepts_sse: false,
            protocol_version: like.protocol_version,
            mcp_method: method_header.as_ref(),
            mcp_name: None,
        };
        let reply = send_on(gw, upstream, grant, binding, &out).await?;
        let unreadable = |why: String| {
            tracing::warn!("upstream tools/list could not be read: {why}");
            Refused::new(
                StatusCode::OK,
                jsonrpc::INTERNAL_ERROR,
                "upstream tools/list could not be read",
            )
            .with_id(like.id)
        };
        let message = crate::upstream::probe::response_of(reply)
            .await
            .map_err(unreadable)?;
        let (page_names, next) = answers::list_page(&message).map_err(unreadable)?;
        names.extend(page_names);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    let listed = names.contains(tool);
    upstream.tools().replace(names);
    Ok(listed)
}

/// The `_meta` of the gateway's own stateless request: the caller's protocol version,
/// capabilities and client info (a server may list tools by the capabilities a client has),
/// or an empty capability set when the caller gave none.
fn stateless_meta(msg: &Message<'_>) -> String {
    let meta = super::StatelessMeta::of(msg);
    let version = meta
        .as_ref()
        .and_then(|m| m.version.as_deref())
        .unwrap_or(answers::STATELESS_VERSION);
    let capabilities = meta
        .as_ref()
        .and_then(|m| m.capabilities)
        .map_or("{}", |c| c.get());
    let mut out = format!(
        r#"{{"io.modelcontextprotocol/protocolVersion":{},"io.modelcontextprotocol/clientCapabilities":{capabilities}"#,
        serde_json::Value::from(version)
    );
    if let Some(info) = meta.as_ref().and_then(|m| m.client_info) {
        out.push_str(r#","io.modelcontextprotocol/clientInfo":"#);
        out.push_str(info.get());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(body: &str) -> serde_json::Value {
        let msg = super::super::read_message(body.as_bytes()).expect("message");
        serde_json::from_str(&stateless_meta(&msg)).expect("JSON")
    }

    #[test]
    fn the_stateless_meta_is_the_callers() {
        let m = meta_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{
            "io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},
            "io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"},
            "progressToken":7}}}"#,
        );
        assert_eq!(
            m,
            serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
                "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
            })
        );
    }

    #[test]
    fn without_a_meta_the_stateless_meta_says_the_least() {
        let m = meta_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#);
        assert_eq!(
            m,
            serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            })
        );
    }
}
