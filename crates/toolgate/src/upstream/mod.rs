//! Upstream MCP servers: one file per kind of transport.
//!
//! - `stdio`: a child process speaking newline-delimited JSON-RPC.
//! - `http`: a Streamable HTTP server; `http1` keeps the connections to plain-HTTP servers.
//! - `probe`: one-off sessions of the gateway's own (listing a server's tools).
//!
//! Both answer the gateway with the same [`Reply`], so the downstream transport renders
//! replies without knowing where they came from. The two kinds are an enum rather than a trait
//! object: there are exactly two, and the request path then needs no boxing to reach them.

pub mod http;
pub mod http1;
pub mod probe;
pub mod stdio;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::BoxStream;

/// The tool names an upstream listed. foldhash (see `crate::HotMap`): a call to a tool the
/// policy does not name looks it up here; the names are the upstream's, not an agent's.
pub type ToolNames = foldhash::HashSet<String>;

/// The tools one upstream server lists, as last fetched by the gateway itself (the check that
/// a tool the policy does not name is one the server has). One per server, shared by every
/// session and stateless request: the list is fetched again when a call names a tool it
/// lacks, and forgotten when the server says `notifications/tools/list_changed`.
#[derive(Debug, Default)]
pub struct ListedTools {
    names: Mutex<Option<Arc<ToolNames>>>,
}

/// The notification that makes [`ListedTools`] stale.
pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";

impl ListedTools {
    /// Whether the last fetched list has `tool`; None when nothing is cached.
    pub fn has(&self, tool: &str) -> Option<bool> {
        let names = self.names.lock().expect("listed tools lock");
        names.as_ref().map(|n| n.contains(tool))
    }

    pub fn replace(&self, names: ToolNames) {
        *self.names.lock().expect("listed tools lock") = Some(Arc::new(names));
    }

    pub fn forget(&self) {
        *self.names.lock().expect("listed tools lock") = None;
    }

    /// Forgets the list when `message` (one JSON-RPC message from the server) is
    /// `notifications/tools/list_changed`. A substring search first: most messages are not.
    pub fn watch(&self, message: &[u8]) {
        static LIST_CHANGED: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(TOOLS_LIST_CHANGED));
        if LIST_CHANGED.find(message).is_some()
            && crate::jsonrpc::Envelope::parse(message)
                .is_ok_and(|e| e.method() == TOOLS_LIST_CHANGED)
        {
            self.forget();
        }
    }
}

/// One server-sent event on its way to the agent. `data` is one JSON-RPC message, or empty
/// for a priming event (which carries only an `id` for resumption).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub retry: Option<u64>,
    pub data: Bytes,
}

impl Event {
    pub fn message(data: Bytes) -> Event {
        Event {
            id: None,
            event: None,
            retry: None,
            data,
        }
    }
}

/// What the upstream answered to one agent message.
pub enum Reply {
    /// One JSON body (a JSON-RPC response, or an HTTP upstream's non-2xx body) with its status.
    Json {
        status: ::http::StatusCode,
        body: Bytes,
    },
    /// An event stream that ends once the response to the request has been sent.
    Stream(BoxStream<'static, Event>),
    /// A notification or response was accepted (HTTP 202, no body).
    Accepted,
    /// An HTTP upstream's answer that is not MCP content (405 for GET, 404 for a lost session...).
    Status {
        status: ::http::StatusCode,
        content_type: Option<::http::HeaderValue>,
        body: Bytes,
    },
}

/// The parts of an agent's message an upstream needs to send it on.
pub struct Outbound<'a> {
    /// The whole message as the agent sent it.
    pub body: &'a Bytes,
    pub kind: crate::jsonrpc::Kind,
    pub method: &'a str,
    /// Raw JSON text of the request id, for requests.
    pub id: Option<&'a str>,
    /// Raw JSON text of `params._meta.progressToken`, when the request set one.
    pub progress_token: Option<Box<str>>,
    /// Whether the agent accepts an SSE answer (else only JSON).
    pub accepts_sse: bool,
    /// Transport headers relayed to an HTTP upstream as the agent sent them.
    pub protocol_version: Option<&'a ::http::HeaderValue>,
    pub mcp_method: Option<&'a ::http::HeaderValue>,
    pub mcp_name: Option<&'a ::http::HeaderValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_tools_cache_is_forgotten_on_list_changed_only() {
        let tools = ListedTools::default();
        assert_eq!(tools.has("echo"), None, "nothing cached yet");
        tools.replace(["echo".to_string()].into_iter().collect());
        assert_eq!(tools.has("echo"), Some(true));
        assert_eq!(tools.has("Echo"), Some(false));
        for other in [
            &br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#[..],
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"notifications/tools/list_changed"}]}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
        ] {
            tools.watch(other);
            assert_eq!(tools.has("echo"), Some(true), "{}", String::from_utf8_lossy(other));
        }
        tools.watch(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
        assert_eq!(tools.has("echo"), None, "forgotten");
    }
}
