//! Streamable HTTP upstreams: one upstream MCP session per agent session.
//!
//! The agent's message bytes are POSTed as they came; the upstream's answer (JSON or SSE) is
//! relayed as it came, event ids included, so that resumption with `Last-Event-ID` works where
//! the upstream supports it. Only an allowlist of headers crosses: the agent's `Authorization`
//! and `Cookie` never reach the upstream, the upstream's `Mcp-Session-Id` never reaches the
//! agent, and the server's configured credentials are added here and shown to no one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};

use super::{Event, Outbound, Reply};
use crate::jsonrpc::{self, Kind};

/// The largest JSON body read from an upstream in one piece.
const MAX_JSON_BODY: usize = 64 * 1024 * 1024;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const PROTOCOL_HEADER: &str = "mcp-protocol-version";
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";

/// One configured HTTP server: its URL, credentials and connection pool.
pub struct HttpServer {
    pub name: Arc<str>,
    url: reqwest::Url,
    headers: http::HeaderMap,
    client: reqwest::Client,
}

impl HttpServer {
    pub fn new(
        name: Arc<str>,
        url: reqwest::Url,
        headers: &[(http::HeaderName, HeaderValue)],
    ) -> HttpServer {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(k.clone(), v.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Following a redirect would carry the server's credentials somewhere unchecked.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("reqwest client builds with static options");
        HttpServer {
            name,
            url,
            headers: map,
            client,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        session: Option<&HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, self.url.clone())
            .headers(self.headers.clone());
        if let Some(id) = session {
            req = req.header(SESSION_HEADER, id);
        }
        req
    }

    /// POSTs one agent message; returns the reply and the upstream session id it set, if any.
    pub async fn post(
        &self,
        session: Option<&HeaderValue>,
        out: &Outbound<'_>,
    ) -> (Reply, Option<HeaderValue>) {
        let mut req = self
            .request(reqwest::Method::POST, session)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(out.body.clone());
        for (name, value) in [
            (PROTOCOL_HEADER, out.protocol_version),
            (METHOD_HEADER, out.mcp_method),
            (NAME_HEADER, out.mcp_name),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(server = %self.name, "upstream request failed: {}", without_url(&e));
                return (unreachable(out), None);
            }
        };
        let upstream_session = response.headers().get(SESSION_HEADER).cloned();
        let reply = self.to_reply(response, out.kind).await;
        let reply = match (reply, out.kind, out.id) {
            (Reply::Stream(events), Kind::Request, Some(id)) => {
                Reply::Stream(ensure_response(events, id))
            }
            (other, ..) => other,
        };
        (reply, upstream_session)
    }

    /// Opens the upstream's GET stream for server-initiated messages.
    pub async fn get_stream(
        &self,
        session: Option<&HeaderValue>,
        last_event_id: Option<&HeaderValue>,
        protocol_version: Option<&HeaderValue>,
    ) -> Reply {
        let mut req = self
            .request(reqwest::Method::GET, session)
            .header(header::ACCEPT, "text/event-stream");
        if let Some(v) = last_event_id {
            req = req.header("last-event-id", v);
        }
        if let Some(v) = protocol_version {
            req = req.header(PROTOCOL_HEADER, v);
        }
        match req.send().await {
            Ok(r) => self.to_reply(r, Kind::Notification).await,
            Err(e) => {
                tracing::warn!(server = %self.name, "upstream GET failed: {}", without_url(&e));
                Reply::Status {
                    status: StatusCode::BAD_GATEWAY,
                    content_type: None,
                    body: Bytes::from_static(b"upstream server unreachable"),
                }
            }
        }
    }

    /// Ends the upstream session (best effort: the agent's session is gone either way).
    pub async fn delete(&self, session: &HeaderValue, protocol_version: Option<&HeaderValue>) {
        let mut req = self.request(reqwest::Method::DELETE, Some(session));
        if let Some(v) = protocol_version {
            req = req.header(PROTOCOL_HEADER, v);
        }
        if let Err(e) = req.send().await {
            tracing::debug!(server = %self.name, "upstream DELETE failed: {}", without_url(&e));
        }
    }

    async fn to_reply(&self, response: reqwest::Response, kind: Kind) -> Reply {
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let is_sse = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
        if status == StatusCode::ACCEPTED && kind != Kind::Request {
            return Reply::Accepted;
        }
        if status.is_success() && is_sse {
            let name = self.name.clone();
            let events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream())
                .filter_map(move |item| {
                    let name = name.clone();
                    async move {
                        match item {
                            Ok(sse) => Some(Event {
                                id: sse.id,
                                event: sse.event,
                                retry: sse.retry,
                                data: Bytes::from(sse.data.unwrap_or_default()),
                            }),
                            Err(e) => {
                                tracing::warn!(server = %name, "upstream event stream broke: {e}");
                                None
                            }
                        }
                    }
                });
            return Reply::Stream(events.boxed());
        }
        let body = match read_limited(response).await {
            Ok(b) => b,
            Err(why) => {
                tracing::warn!(server = %self.name, "reading upstream answer: {why}");
                return Reply::Status {
                    status: StatusCode::BAD_GATEWAY,
                    content_type: None,
                    body: Bytes::from_static(b"upstream answer could not be read"),
                };
            }
        };
        let is_json = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
        if status.is_success() && is_json {
            Reply::Json { status, body }
        } else {
            Reply::Status {
                status,
                content_type,
                body,
            }
        }
    }
}

/// A request's event stream that always ends with its response: when the upstream's stream
/// breaks first (the server died), a JSON-RPC error with the agent's id is added, so the agent
/// gets an answer instead of waiting for one that will never come.
fn ensure_response(
    events: futures_util::stream::BoxStream<'static, Event>,
    id: &str,
) -> futures_util::stream::BoxStream<'static, Event> {
    let id: Arc<str> = id.into();
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = answered.clone();
    let want = id.clone();
    let relayed = events.inspect(move |e| {
        if !e.data.is_empty()
            && let Ok(env) = crate::jsonrpc::Envelope::parse(&e.data)
            && env.kind() == Ok(Kind::Response)
            && env.id.is_some_and(|i| i.get() == &*want)
        {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let closing = futures_util::stream::once(async move {
        (!answered.load(std::sync::atomic::Ordering::Relaxed)).then(|| {
            Event::message(jsonrpc::error_response(
                Some(&id),
                jsonrpc::INTERNAL_ERROR,
                "upstream server closed the stream before answering",
            ))
        })
    })
    .filter_map(std::future::ready);
    relayed.chain(closing).boxed()
}

async fn read_limited(mut response: reqwest::Response) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
        if buf.len() + chunk.len() > MAX_JSON_BODY {
            return Err(format!("over {MAX_JSON_BODY} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// reqwest errors print the URL, which may carry credentials: log only the causes.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unreachable(out: &Outbound<'_>) -> Reply {
    match out.kind {
        Kind::Request => Reply::Json {
            status: StatusCode::OK,
            body: jsonrpc::error_response(
                out.id,
                jsonrpc::INTERNAL_ERROR,
                "upstream server unreachable",
            ),
        },
        _ => Reply::Status {
            status: StatusCode::BAD_GATEWAY,
            content_type: None,
            body: Bytes::from_static(b"upstream server unreachable"),
        },
    }
}

/// The upstream side of one agent session on an HTTP server.
pub struct HttpSession {
    pub server: Arc<HttpServer>,
    /// The upstream's own session id (never shown to the agent); None for stateless servers.
    pub upstream_id: Option<HeaderValue>,
    pub protocol_version: std::sync::Mutex<Option<HeaderValue>>,
}

impl HttpSession {
    pub async fn send(&self, out: &Outbound<'_>) -> Reply {
        if let Some(v) = out.protocol_version {
            *self.protocol_version.lock().expect("lock") = Some(v.clone());
        }
        self.server.post(self.upstream_id.as_ref(), out).await.0
    }

    pub async fn open_stream(&self, last_event_id: Option<&HeaderValue>) -> Reply {
        let pv = self.protocol_version.lock().expect("lock").clone();
        self.server
            .get_stream(self.upstream_id.as_ref(), last_event_id, pv.as_ref())
            .await
    }

    pub async fn close(&self) {
        if let Some(id) = &self.upstream_id {
            let pv = self.protocol_version.lock().expect("lock").clone();
            self.server.delete(id, pv.as_ref()).await;
        }
    }
}
