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

use bytes::Bytes;
use futures_util::stream::BoxStream;

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
