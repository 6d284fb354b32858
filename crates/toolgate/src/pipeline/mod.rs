//! The request path of SPEC section 3, one step per function, in the order a message meets
//! them:
//!
//! 1. `admit`: DNS-rebinding check, then the grant from the bearer token (the door).
//! 2. `read_message`: one JSON-RPC message, classified; batches and bad shapes refused.
//! 3. `check_transport_headers`: `Mcp-Method` / `Mcp-Name` must agree with the body.
//! 4. `bind_session`: the agent's session, checked against the grant, or a new one.
//! 5. `decide` (decide.rs): the policy decision: deny, hide, or forward (`tools/list` filtered).
//! 6. `forward` (forward.rs): a tool the policy does not name checked against the upstream's
//!    list (listed.rs), a retry's `requestState` or a task id checked against the grant
//!    (continued.rs), an allowed call's counters reserved (limits.rs), the message sent
//!    upstream, its reply relayed as it came, the counters settled on the answer.
//!
//! Approval and audit (later issues) slot in around 5 and 6. Nothing here blocks: every step
//! is either pure or awaits the network.

mod continued;
mod decide;
mod forward;
mod limits;
mod listed;

pub use continued::Continuations;
pub use decide::{AllowedCall, Decided, NO_POLICY_RULE, Verdict, decide};
pub use forward::{UNBOUND_STATE_RULE, forward};
pub use limits::STORE_UNAVAILABLE_RULE;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::answers::Revision;
use crate::gateway::Gateway;
use crate::grants::{DoorRefusal, Grant};
use crate::jsonrpc::{self, Envelope, Kind, NamedParams};
use crate::session::{Session, SessionRefusal};
use crate::upstream::Reply;
use crate::upstream::http as names;

/// The stateless protocol version: requests carry no session.
pub use crate::answers::STATELESS_VERSION;

/// A request turned away by the gateway itself; it never reached the upstream.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    /// Raw JSON of the request id, when one was read.
    pub id: Option<String>,
    /// The grant, when known (a token used on another server's endpoint), for the audit.
    pub grant: Option<Arc<Grant>>,
    /// The revision the request said it was made under (its `MCP-Protocol-Version`), for the
    /// shape of the error: from 2026-07-28 on, an id that was never read is left out rather
    /// than written `null`, which no revision's schema accepts.
    pub revision: Revision,
}

impl Refused {
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
            id: None,
            grant: None,
            revision: Revision::Sessions,
        }
    }

    /// The JSON-RPC error of this refusal.
    pub fn error_body(&self) -> bytes::Bytes {
        match (&self.id, self.revision) {
            (None, Revision::Stateless) => {
                jsonrpc::error_response_without_id(self.code, &self.message)
            }
            (id, _) => jsonrpc::error_response(id.as_deref(), self.code, &self.message),
        }
    }

    fn with_id(mut self, id: Option<&str>) -> Refused {
        self.id = id.map(str::to_string);
        self
    }
}

/// What the gateway answers to one POSTed message.
pub struct Answer {
    pub reply: Reply,
    /// Set when this message opened a session: its id goes back in `Mcp-Session-Id`.
    pub new_session: Option<Arc<str>>,
    pub accepts_sse: bool,
    /// For `tools/list`: the policy whose hidden tools are taken out of the response.
    pub list_filter: Option<crate::answers::ListFilter>,
    /// For `tools/call`: what was decided (for the audit record).
    pub decided: Option<Decided>,
    /// When the message went upstream (for the upstream latency).
    pub forwarded_at: Option<std::time::Instant>,
    /// What the counters step read in a JSON reply's body (`jsonrpc::summarize`), when it read
    /// it: the audit record needs the same, and need not read the body again.
    pub summary: Option<Option<crate::jsonrpc::AnswerSummary>>,
}

/// The request headers the request path reads, picked out of the map in one pass.
///
/// Read one at a time with `HeaderMap::get`, each of the ten or so lookups a call made hashed
/// its name (FNV over every byte of an `Mcp-*` name) and probed the map: about 2,000
/// instructions a call (`bench/scripts/instructions.sh`). Each field holds the first value
/// under its name, which is what `HeaderMap::get` returns.
#[derive(Clone, Copy, Default)]
pub struct AgentHeaders<'a> {
    pub host: Option<&'a HeaderValue>,
    pub origin: Option<&'a HeaderValue>,
    pub authorization: Option<&'a HeaderValue>,
    pub content_type: Option<&'a HeaderValue>,
    pub content_length: Option<&'a HeaderValue>,
    pub session: Option<&'a HeaderValue>,
    pub protocol_version: Option<&'a HeaderValue>,
    pub mcp_method: Option<&'a HeaderValue>,
    pub mcp_name: Option<&'a HeaderValue>,
    accept: Option<&'a HeaderValue>,
    /// Set when `Accept` came more than once: `accepts_sse` then reads every value.
    map_when_accept_repeats: Option<&'a HeaderMap>,
}

impl<'a> AgentHeaders<'a> {
    pub fn read(map: &'a HeaderMap) -> AgentHeaders<'a> {
        let mut h = AgentHeaders::default();
        // A `HeaderName` is always lower case (parsed or built), as these are spelled.
        for (name, value) in map {
            let slot = match name.as_str() {
                "host" => &mut h.host,
                "origin" => &mut h.origin,
                "authorization" => &mut h.authorization,
                "content-type" => &mut h.content_type,
                "content-length" => &mut h.content_length,
                names::SESSION => &mut h.session,
                names::PROTOCOL => &mut h.protocol_version,
                names::METHOD => &mut h.mcp_method,
                names::NAME => &mut h.mcp_name,
                "accept" => {
                    if h.accept.is_some() {
                        h.map_when_accept_repeats = Some(map);
                    }
                    &mut h.accept
                }
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        h
    }

    /// Local mode's: a session id, when one is open, and nothing else.
    pub fn of_session(session: Option<&'a HeaderValue>) -> AgentHeaders<'a> {
        AgentHeaders {
            session,
            ..AgentHeaders::default()
        }
    }

    /// Whether the agent reads SSE answers. No `Accept` at all is read as "anything".
    pub fn accepts_sse(&self) -> bool {
        let names_sse = |v: &HeaderValue| {
            let v = v.to_str().unwrap_or("");
            crate::media::names(v, "text/event-stream") || crate::media::names(v, "*/*")
        };
        match (self.map_when_accept_repeats, self.accept) {
            (Some(map), _) => map.get_all(http::header::ACCEPT).iter().any(names_sse),
            (None, Some(v)) => names_sse(v),
            (None, None) => true,
        }
    }
}

/// Step 1: the door. Host and Origin first (a rebinding page learns nothing, not even 401),
/// then the bearer token.
pub fn admit(
    gw: &Gateway,
    server: &str,
    headers: &AgentHeaders<'_>,
    authority: Option<&str>,
) -> Result<Arc<Grant>, Refused> {
    let host = headers.host.and_then(|h| h.to_str().ok()).or(authority);
    if !host.is_some_and(|h| gw.hosts.host_allowed(h)) {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            jsonrpc::INVALID_REQUEST,
            "Forbidden: Host not allowed",
        ));
    }
    if let Some(origin) = headers.origin
        && !origin.to_str().is_ok_and(|o| gw.hosts.origin_allowed(o))
    {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            jsonrpc::INVALID_REQUEST,
            "Forbidden: Origin not allowed",
        ));
    }
    let authorization = headers.authorization.map(|v| v.as_bytes());
    gw.grants
        .load()
        .authenticate(authorization, server)
        .map_err(|r| match r {
            DoorRefusal::Unauthenticated => Refused::new(
                StatusCode::UNAUTHORIZED,
                jsonrpc::INVALID_REQUEST,
                "Unauthorized: a valid grant token is required (Authorization: Bearer ...)",
            ),
            DoorRefusal::WrongServer(grant) => Refused {
                grant: Some(grant),
                ..Refused::new(
                    StatusCode::FORBIDDEN,
                    jsonrpc::INVALID_REQUEST,
                    "Forbidden: this grant is not for this server",
                )
            },
        })
}

/// One message as read by the gateway.
pub struct Message<'a> {
    pub envelope: Envelope<'a>,
    pub kind: Kind,
    pub id: Option<&'a str>,
}

/// Step 2: one JSON-RPC message. A batch is refused whole: evaluating it element by element
/// buys nothing (MCP dropped batches in 2025-06-18) and forwarding it unread would be a bypass.
pub fn read_message(body: &[u8]) -> Result<Message<'_>, Refused> {
    if jsonrpc::is_batch(body) {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Invalid Request: JSON-RPC batches are not accepted; send one message per request",
        ));
    }
    let envelope = Envelope::parse(body)
        .map_err(|r| Refused::new(StatusCode::BAD_REQUEST, r.code, r.message))?;
    let id = envelope.id.map(|i| i.get());
    let kind = envelope
        .kind()
        .map_err(|r| Refused::new(StatusCode::BAD_REQUEST, r.code, r.message).with_id(id))?;
    Ok(Message { envelope, kind, id })
}

/// The protocol revision a request was made under: its `MCP-Protocol-Version` header (HTTP),
/// else its own `_meta` (`io.modelcontextprotocol/protocolVersion`, how a stateless request
/// says it on stdio). Read only for the methods whose answers the gateway may write itself.
pub fn revision(headers: &AgentHeaders<'_>, msg: &Message<'_>) -> Revision {
    if let Some(v) = headers.protocol_version {
        return Revision::of(v.as_bytes());
    }
    // Most requests say no version in `_meta`: a substring test spares them the parse.
    let says_version = msg
        .envelope
        .params
        .is_some_and(|p| p.get().contains("io.modelcontextprotocol/protocolVersion"));
    if !says_version {
        return Revision::Sessions;
    }
    StatelessMeta::of(msg)
        .and_then(|m| m.version)
        .map_or(Revision::Sessions, |v| Revision::of(v.as_bytes()))
}

/// The keys of a request's `_meta` that carry what a 2026-07-28 request says about its
/// client (no session does): its protocol version, capabilities and client info.
#[derive(serde::Deserialize)]
pub(crate) struct StatelessMeta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion")]
    pub version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientCapabilities")]
    pub capabilities: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientInfo")]
    pub client_info: Option<&'a serde_json::value::RawValue>,
}

impl<'a> StatelessMeta<'a> {
    /// The message's `params._meta`, read for those keys; None when it has none.
    pub fn of(msg: &Message<'a>) -> Option<StatelessMeta<'a>> {
        #[derive(serde::Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "_meta")]
            meta: Option<&'a serde_json::value::RawValue>,
        }
        let params: Params = serde_json::from_str(msg.envelope.params?.get()).ok()?;
        serde_json::from_str(params.meta?.get()).ok()
    }
}

/// The name the policy decides on and `Mcp-Name` must match, for the methods that have one.
fn named_target<'a>(method: &str, params: &'a NamedParams<'a>) -> Option<&'a str> {
    match method {
        "tools/call" | "prompts/get" => params.name.as_deref(),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => params.uri.as_deref(),
        _ => None,
    }
}

/// Step 3: under 2026-07-28 the method and name travel in headers too. A gateway that decided
/// on the body while an upstream routed on the headers could be walked around, so any
/// disagreement is refused before anything else looks at the message.
pub fn check_transport_headers(
    headers: &AgentHeaders<'_>,
    msg: &Message<'_>,
) -> Result<(), Refused> {
    let mismatch = |what: &str| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::HEADER_MISMATCH,
            format!("Bad Request: the {what} header does not match the request body"),
        )
        .with_id(msg.id)
    };
    if let Some(m) = headers.mcp_method
        && m.as_bytes() != msg.envelope.method().as_bytes()
    {
        return Err(mismatch("Mcp-Method"));
    }
    if let Some(n) = headers.mcp_name {
        let params = msg
            .envelope
            .params
            .and_then(|p| serde_json::from_str::<NamedParams>(p.get()).ok());
        let name = params
            .as_ref()
            .and_then(|p| named_target(msg.envelope.method(), p));
        if name.map(str::as_bytes) != Some(n.as_bytes()) {
            return Err(mismatch("Mcp-Name"));
        }
    }
    Ok(())
}

/// Where a message goes upstream.
pub enum Binding {
    /// An open session of this grant.
    Session(Arc<Session>),
    /// `initialize` without a session: open one.
    New,
    /// No session and not `initialize`: a stateless (2026-07-28) request.
    Stateless,
}

/// Step 4: the session. An unknown id is 404 (the client re-initializes); another grant's
/// session is 403 and the message goes nowhere.
pub fn bind_session(
    gw: &Gateway,
    headers: &AgentHeaders<'_>,
    grant: &Grant,
    msg: &Message<'_>,
) -> Result<Binding, Refused> {
    let is_initialize = msg.kind == Kind::Request && msg.envelope.method() == "initialize";
    match headers.session {
        Some(id) => {
            if is_initialize {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::INVALID_REQUEST,
                    "Bad Request: initialize opens a new session; send it without Mcp-Session-Id",
                )
                .with_id(msg.id));
            }
            let id = id.to_str().unwrap_or("");
            gw.sessions
                .get(id, grant)
                .map(Binding::Session)
                .map_err(|r| match r {
                    SessionRefusal::NotFound => Refused::new(
                        StatusCode::NOT_FOUND,
                        jsonrpc::INVALID_REQUEST,
                        "Session not found: initialize a new session",
                    )
                    .with_id(msg.id),
                    SessionRefusal::OtherGrant => Refused::new(
                        StatusCode::FORBIDDEN,
                        jsonrpc::INVALID_REQUEST,
                        "Forbidden: this session belongs to another grant",
                    )
                    .with_id(msg.id),
                })
        }
        None if is_initialize => Ok(Binding::New),
        None => Ok(Binding::Stateless),
    }
}

#[cfg(test)]
mod tests {
    use super::AgentHeaders;
    use crate::upstream::http::{METHOD_HEADER, NAME_HEADER, PROTOCOL_HEADER, SESSION_HEADER};
    use http::{HeaderMap, HeaderValue, header};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        m
    }

    #[test]
    fn each_field_is_what_header_map_get_returns() {
        let m = map(&[
            ("Mcp-Session-Id", "first"),
            ("host", "127.0.0.1:1"),
            ("mcp-session-id", "second"),
            ("authorization", "Bearer a"),
            ("Authorization", "Bearer b"),
            ("MCP-Method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-protocol-version", "2025-06-18"),
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("origin", "http://localhost"),
            ("x-other", "ignored"),
        ]);
        let h = AgentHeaders::read(&m);
        let fields = [
            (h.session, SESSION_HEADER),
            (h.host, header::HOST),
            (h.authorization, header::AUTHORIZATION),
            (h.mcp_method, METHOD_HEADER),
            (h.mcp_name, NAME_HEADER),
            (h.protocol_version, PROTOCOL_HEADER),
            (h.content_type, header::CONTENT_TYPE),
            (h.content_length, header::CONTENT_LENGTH),
            (h.origin, header::ORIGIN),
        ];
        for (field, name) in fields {
            assert!(field.is_some(), "{name}");
            assert_eq!(field, m.get(&name), "{name}");
        }
        assert_eq!(h.session.map(HeaderValue::as_bytes), Some(&b"first"[..]));
        let none = HeaderMap::new();
        let h = AgentHeaders::read(&none);
        assert!(h.host.is_none() && h.session.is_none() && h.authorization.is_none());
    }

    #[test]
    fn every_accept_value_counts() {
        let accepts = |pairs: &[(&str, &str)]| AgentHeaders::read(&map(pairs)).accepts_sse();
        assert!(accepts(&[]), "no Accept is anything");
        assert!(accepts(&[(
            "accept",
            "application/json, text/event-stream"
        )]));
        assert!(!accepts(&[("accept", "application/json")]));
        assert!(accepts(&[("accept", "*/*")]));
        assert!(accepts(&[
            ("accept", "application/json"),
            ("accept", "text/event-stream")
        ]));
        assert!(!accepts(&[
            ("accept", "application/json"),
            ("accept", "text/plain")
        ]));
        let mut m = HeaderMap::new();
        m.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert!(AgentHeaders::read(&m).accepts_sse());
    }
}
