//! The request path of SPEC section 3, one step per function, in the order a message meets
//! them:
//!
//! 1. `admit`: DNS-rebinding check, then the grant from the bearer token (the door).
//! 2. `read_message`: one JSON-RPC message, classified; batches and bad shapes refused.
//! 3. `check_transport_headers`: `Mcp-Method` / `Mcp-Name` must agree with the body.
//! 4. `bind_session`: the agent's session, checked against the grant, or a new one.
//! 5. `decide`: the policy decision: deny, hide, or forward (with `tools/list` filtered).
//! 6. `forward`: to the upstream; its reply goes back as it came.
//!
//! Reservation, approval, settlement and audit (later issues) slot in around 5 and 6.
//! Nothing here blocks: every step is either pure or awaits the network.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use toolgate_policy::Decision;

use crate::answers;
use crate::gateway::{Gateway, Upstream};
use crate::grants::{DoorRefusal, Grant};
use crate::jsonrpc::{self, Envelope, Kind, NamedParams};
use crate::policies::Loaded;
use crate::session::{Session, SessionRefusal, UpstreamSession};
use crate::upstream::http::{
    HttpSession, METHOD_HEADER, NAME_HEADER, PROTOCOL_HEADER, SESSION_HEADER,
};
use crate::upstream::stdio::StdioSession;
use crate::upstream::{Outbound, Reply};

/// The stateless protocol version: requests carry no session.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// A request turned away by the gateway itself; it never reached the upstream.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    /// Raw JSON of the request id, when one was read.
    pub id: Option<String>,
}

impl Refused {
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
            id: None,
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
    pub list_filter: Option<Arc<Loaded>>,
}

/// Step 1: the door. Host and Origin first (a rebinding page learns nothing, not even 401),
/// then the bearer token.
pub fn admit(
    gw: &Gateway,
    server: &str,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<Arc<Grant>, Refused> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    if !host.is_some_and(|h| gw.hosts.host_allowed(h)) {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            jsonrpc::INVALID_REQUEST,
            "Forbidden: Host not allowed",
        ));
    }
    if let Some(origin) = headers.get(http::header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| gw.hosts.origin_allowed(o))
    {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            jsonrpc::INVALID_REQUEST,
            "Forbidden: Origin not allowed",
        ));
    }
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    gw.grants
        .authenticate(authorization, server)
        .map_err(|r| match r {
            DoorRefusal::Unauthenticated => Refused::new(
                StatusCode::UNAUTHORIZED,
                jsonrpc::INVALID_REQUEST,
                "Unauthorized: a valid grant token is required (Authorization: Bearer ...)",
            ),
            DoorRefusal::WrongServer => Refused::new(
                StatusCode::FORBIDDEN,
                jsonrpc::INVALID_REQUEST,
                "Forbidden: this grant is not for this server",
            ),
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
pub fn check_transport_headers(headers: &HeaderMap, msg: &Message<'_>) -> Result<(), Refused> {
    let mismatch = |what: &str| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::HEADER_MISMATCH,
            format!("Bad Request: the {what} header does not match the request body"),
        )
        .with_id(msg.id)
    };
    if let Some(m) = headers.get(METHOD_HEADER)
        && m.as_bytes() != msg.envelope.method().as_bytes()
    {
        return Err(mismatch("Mcp-Method"));
    }
    if let Some(n) = headers.get(NAME_HEADER) {
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
    headers: &HeaderMap,
    grant: &Grant,
    msg: &Message<'_>,
) -> Result<Binding, Refused> {
    let is_initialize = msg.kind == Kind::Request && msg.envelope.method() == "initialize";
    match headers.get(SESSION_HEADER) {
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

/// The outcome of the decision step.
pub enum Verdict {
    /// Forward the message. For `tools/list`, the policy whose hidden tools leave the answer;
    /// for a `tools/call` the policy does not name, the tool the upstream must have listed.
    Forward {
        list_filter: Option<Arc<Loaded>>,
        must_be_listed: Option<String>,
    },
    /// Answer the agent at once (a denial, an unknown tool); nothing reaches the upstream.
    Answer(Bytes),
}

const FORWARD: Verdict = Verdict::Forward {
    list_filter: None,
    must_be_listed: None,
};

/// Rule named when a grant has no policy at all: every call is denied (fail closed).
pub const NO_POLICY_RULE: &str = "(no policy)";

/// Step 5: the decision (SPEC 3 and 4). `tools/list` answers lose hidden tools; a `tools/call`
/// is evaluated on its name and arguments. Counters and approvals (later issues) take over
/// from the `Allow` the engine returns.
pub fn decide(grant: &Grant, msg: &Message<'_>) -> Result<Verdict, Refused> {
    if msg.kind != Kind::Request {
        return Ok(FORWARD);
    }
    let policy = grant.policy.as_ref().map(|p| p.current());
    match msg.envelope.method() {
        "tools/list" => {
            let list_filter = policy.filter(|p| p.policy.hides_anything());
            Ok(Verdict::Forward {
                list_filter,
                must_be_listed: None,
            })
        }
        "tools/call" => decide_call(msg, policy),
        _ => Ok(FORWARD),
    }
}

fn decide_call(msg: &Message<'_>, policy: Option<Arc<Loaded>>) -> Result<Verdict, Refused> {
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
    let params: NamedParams = serde_json::from_str(params.get())
        .map_err(|e| invalid(&format!("tools/call params: {e}")))?;
    let name = params
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("tools/call needs params.name"))?;
    // Read with duplicate keys refused: {"amount":5,"amount":5000} must not be judged as 5
    // here and acted on as 5000 upstream.
    let args = match params.arguments {
        None => serde_json::Value::Null,
        Some(raw) => {
            let v = toolgate_policy::json::parse_strict(raw.get())
                .map_err(|e| invalid(&format!("arguments: {e}")))?;
            if !v.is_object() {
                return Err(invalid("tools/call arguments must be an object"));
            }
            v
        }
    };
    let Some(loaded) = policy else {
        let message = "No policy applies to this grant; every call is denied";
        return Ok(Verdict::Answer(answers::denial(
            id,
            message,
            NO_POLICY_RULE,
            None,
        )));
    };
    match loaded.policy.evaluate(name, &args) {
        Decision::Hidden => Ok(Verdict::Answer(answers::unknown_tool(id, name))),
        Decision::Deny { rule, message } => Ok(Verdict::Answer(answers::denial(
            id,
            &message,
            rule,
            Some(loaded.version),
        ))),
        Decision::Allow { .. } => {
            // A tool the policy does not name is allowed only by the default: it must also be
            // one the upstream lists, so that a look-alike name ("Delete_Project", a trailing
            // space) is refused here instead of being interpreted by the server.
            let must_be_listed = (!loaded.policy.lists(name)).then(|| name.to_string());
            Ok(Verdict::Forward {
                list_filter: None,
                must_be_listed,
            })
        }
    }
}

/// Sends one message on a binding's upstream (opening nothing).
async fn send_on(
    gw: &Gateway,
    upstream: &Upstream,
    grant: &Grant,
    binding: &Binding,
    out: &Outbound<'_>,
) -> Result<Reply, Refused> {
    match binding {
        Binding::Session(session) => Ok(match &session.upstream {
            UpstreamSession::Stdio(s) => s.send(out).await,
            UpstreamSession::Http(h) => h.send(out).await,
        }),
        Binding::New => unreachable!("initialize is sent by forward"),
        Binding::Stateless => match upstream {
            Upstream::Http(server) => Ok(server.post(None, out).await.0),
            Upstream::Stdio(server) => {
                let stateless = out
                    .protocol_version
                    .is_some_and(|v| v.as_bytes() == STATELESS_VERSION.as_bytes());
                if !stateless {
                    return Err(Refused::new(
                        StatusCode::BAD_REQUEST,
                        jsonrpc::INVALID_REQUEST,
                        "Bad Request: Mcp-Session-Id header is required",
                    )
                    .with_id(out.id));
                }
                let child = match gw.stateless_stdio.entry(grant.id.clone()) {
                    dashmap::Entry::Occupied(e) => e.get().clone(),
                    dashmap::Entry::Vacant(v) => match StdioSession::stateless(server.clone()) {
                        Ok(s) => v.insert(Arc::new(s)).clone(),
                        Err(e) => {
                            tracing::error!(server = %server.name, "cannot start stdio server: {e}");
                            return Err(Refused::new(
                                StatusCode::BAD_GATEWAY,
                                jsonrpc::INTERNAL_ERROR,
                                "upstream server could not be started",
                            )
                            .with_id(out.id));
                        }
                    },
                };
                Ok(child.send(out).await)
            }
        },
    }
}

/// The names of the tools the upstream lists, fetched by the gateway itself (all pages) and
/// kept per session; fetched again when a call names a tool not seen yet (the server's
/// listing may have changed).
async fn upstream_lists(
    gw: &Gateway,
    upstream: &Upstream,
    grant: &Grant,
    binding: &Binding,
    like: &Outbound<'_>,
    tool: &str,
) -> Result<bool, Refused> {
    let cache = match binding {
        Binding::Session(s) => Some(&s.tool_names),
        _ => None,
    };
    if let Some(cache) = cache
        && cache
            .lock()
            .expect("tool cache lock")
            .as_ref()
            .is_some_and(|names| names.contains(tool))
    {
        return Ok(true);
    }
    let mut names = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    for _page in 0..100u32 {
        let params = match &cursor {
            Some(c) => format!(r#"{{"cursor":{c}}}"#),
            None => "{}".to_string(),
        };
        // Ids of the gateway's own requests are unique process-wide, so that two listings in
        // flight on one upstream session never share one.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":"toolgate-tools-{n}","method":"tools/list","params":{params}}}"#
        ));
        let method_header = like
            .mcp_method
            .map(|_| http::HeaderValue::from_static("tools/list"));
        let out = Outbound {
            body: &body,
            kind: Kind::Request,
            method: "tools/list",
            id: Some("\"toolgate-tools\""),
            progress_token: None,
            accepts_sse: false,
            protocol_version: like.protocol_version,
            mcp_method: method_header.as_ref(),
            mcp_name: None,
        };
        let reply = send_on(gw, upstream, grant, binding, &out).await?;
        let message = crate::upstream::probe::response_of(reply)
            .await
            .map_err(|_| {
                Refused::new(
                    StatusCode::OK,
                    jsonrpc::INTERNAL_ERROR,
                    "upstream tools/list failed",
                )
                .with_id(like.id)
            })?;
        let (page_names, next) = answers::list_page(&message).map_err(|why| {
            tracing::warn!("upstream tools/list could not be read: {why}");
            Refused::new(
                StatusCode::OK,
                jsonrpc::INTERNAL_ERROR,
                "upstream tools/list could not be read",
            )
            .with_id(like.id)
        })?;
        names.extend(page_names);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    let listed = names.contains(tool);
    if let Some(cache) = cache {
        *cache.lock().expect("tool cache lock") = Some(Arc::new(names));
    }
    Ok(listed)
}

/// Step 6: forward, opening the upstream session first when the message is `initialize`.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    gw: &Gateway,
    server: &str,
    headers: &HeaderMap,
    grant: Arc<Grant>,
    body: &Bytes,
    msg: &Message<'_>,
    binding: Binding,
    verdict: Verdict,
) -> Result<Answer, Refused> {
    let accepts_sse = accepts_sse(headers);
    let (list_filter, must_be_listed) = match verdict {
        Verdict::Answer(body) => {
            return Ok(Answer {
                reply: Reply::Json {
                    status: StatusCode::OK,
                    body,
                },
                new_session: None,
                accepts_sse,
                list_filter: None,
            });
        }
        Verdict::Forward {
            list_filter,
            must_be_listed,
        } => (list_filter, must_be_listed),
    };
    let out = Outbound {
        body,
        kind: msg.kind,
        method: msg.envelope.method(),
        id: msg.id,
        progress_token: if msg.kind == Kind::Request {
            jsonrpc::progress_token(msg.envelope.params)
        } else {
            None
        },
        accepts_sse,
        protocol_version: headers.get(PROTOCOL_HEADER),
        mcp_method: headers.get(METHOD_HEADER),
        mcp_name: headers.get(NAME_HEADER),
    };
    let upstream = gw
        .servers
        .get(server)
        .expect("admit checked the grant's server exists");
    let answer = |reply, new_session| {
        Ok(Answer {
            reply,
            new_session,
            accepts_sse,
            list_filter: list_filter.clone(),
        })
    };
    if let Some(tool) = &must_be_listed
        && !matches!(binding, Binding::New)
        && !upstream_lists(gw, upstream, &grant, &binding, &out, tool).await?
    {
        let body = answers::unknown_tool(msg.id.unwrap_or("null"), tool);
        return answer(
            Reply::Json {
                status: StatusCode::OK,
                body,
            },
            None,
        );
    }
    match binding {
        Binding::Session(ref session) => {
            let reply = send_on(gw, upstream, &grant, &binding, &out).await?;
            // The upstream forgot the session (it restarted): forget it too, so the agent's
            // next request gets 404 and it re-initializes.
            if matches!(&reply, Reply::Status { status, .. } if *status == StatusCode::NOT_FOUND)
                && let Some(s) = gw.sessions.remove(&session.id)
            {
                s.close().await;
            }
            answer(reply, None)
        }
        Binding::New => match upstream {
            Upstream::Stdio(server) => {
                let (session, reply) = StdioSession::start(server.clone(), &out).await;
                let new = session.map(|s| {
                    gw.sessions
                        .insert(grant, UpstreamSession::Stdio(s))
                        .id
                        .clone()
                });
                answer(reply, new)
            }
            Upstream::Http(server) => {
                let (reply, upstream_id) = server.post(None, &out).await;
                let opened = match &reply {
                    Reply::Json { body, .. } => is_result(body),
                    Reply::Stream(_) => true,
                    _ => false,
                };
                let new = opened.then(|| {
                    let session = HttpSession {
                        server: server.clone(),
                        upstream_id,
                        protocol_version: std::sync::Mutex::new(out.protocol_version.cloned()),
                    };
                    gw.sessions
                        .insert(grant, UpstreamSession::Http(session))
                        .id
                        .clone()
                });
                answer(reply, new)
            }
        },
        Binding::Stateless => answer(send_on(gw, upstream, &grant, &binding, &out).await?, None),
    }
}

fn is_result(body: &[u8]) -> bool {
    Envelope::parse(body)
        .map(|e| e.result.is_some())
        .unwrap_or(false)
}

/// Whether the agent reads SSE answers. No `Accept` at all is read as "anything".
pub fn accepts_sse(headers: &HeaderMap) -> bool {
    let mut any = false;
    for v in headers.get_all(http::header::ACCEPT) {
        any = true;
        let v = v.to_str().unwrap_or("").to_ascii_lowercase();
        if v.contains("text/event-stream") || v.contains("*/*") {
            return true;
        }
    }
    !any
}
