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
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::http1::{self, BodyError, DrivenBody};
use super::{Event, Outbound, Reply};
use crate::jsonrpc::{self, Kind};

/// The largest JSON body read from an upstream in one piece.
const MAX_JSON_BODY: usize = 64 * 1024 * 1024;

// Header names as `HeaderName`s, not `&str`s: a `&str` is parsed and validated again on every
// lookup and insert, which cost about 5,000 instructions a call over the request path's
// headers (callgrind); a `HeaderName` built in a const is checked once, when compiled.
// The `&str` spellings are for matching names (`pipeline::AgentHeaders`).
pub const SESSION: &str = "mcp-session-id";
pub const PROTOCOL: &str = "mcp-protocol-version";
pub const METHOD: &str = "mcp-method";
pub const NAME: &str = "mcp-name";
pub const SESSION_HEADER: HeaderName = HeaderName::from_static(SESSION);
pub const PROTOCOL_HEADER: HeaderName = HeaderName::from_static(PROTOCOL);
pub const METHOD_HEADER: HeaderName = HeaderName::from_static(METHOD);
pub const NAME_HEADER: HeaderName = HeaderName::from_static(NAME);
pub const LAST_EVENT_ID_HEADER: HeaderName = HeaderName::from_static("last-event-id");

/// hyper, not reqwest: every tools/call crosses this, and reqwest's conveniences (URL parsing
/// and conversion, the redirect layer, header merging) cost about a quarter of the gateway's
/// instructions per call (callgrind, docs/performance-history.md). The URI and the
/// server's headers are built once here; a call only clones them.
type TlsConnector = ConnectTimeout<hyper_rustls::HttpsConnector<HttpConnector>>;

/// How long closing an upstream session may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new upstream connection may take, name lookup and TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connector whose whole connect (DNS, TCP, TLS) has one deadline: hyper's own connect
/// timeout covers the TCP attempts only, so a lookup or a handshake that stalls would
/// otherwise hold a call forever. (tower's `Timeout` would do, but its future is not `Unpin`,
/// which hyper's connector needs.)
#[derive(Clone)]
pub struct ConnectTimeout<C> {
    inner: C,
    limit: Duration,
}

impl<C> ConnectTimeout<C> {
    pub fn new(inner: C, limit: Duration) -> ConnectTimeout<C> {
        ConnectTimeout { inner, limit }
    }
}

impl<C> tower_service::Service<http::Uri> for ConnectTimeout<C>
where
    C: tower_service::Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = C::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<C::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("connecting took over {} s", limit.as_secs()).into()),
            }
        })
    }
}

/// One configured HTTP server: its URL, credentials, and how to connect to it.
pub struct HttpServer {
    pub name: Arc<str>,
    /// What a request is sent to: origin-form (`/mcp`) for a plain-HTTP server, whose
    /// connections are this gateway's own; the whole URL for hyper-util's client.
    uri: http::Uri,
    /// The server's configured headers (and Host), for every request.
    headers: http::HeaderMap,
    /// The same plus a POST's fixed Content-Type and Accept, so that a call only clones them.
    post_headers: http::HeaderMap,
    route: Route,
    /// How long a POST waits for its answer, and an event stream for its next event.
    request_timeout: Duration,
    /// The tools it lists, as the gateway last fetched them.
    pub tools: Arc<super::ListedTools>,
}

/// How requests reach a server.
enum Route {
    /// `http://`: each thread's own HTTP/1 connections, driven by the calls (`http1`).
    Plain(http1::Pool),
    /// `https://`: hyper-util's pooled client (TLS, and HTTP/2 where the server offers it).
    /// Each of the gateway's threads keeps its own: a pooled connection is driven by the
    /// runtime that opened it, and with one shared pool about half the calls at 64 sessions
    /// went through a connection of the other thread, a cross-thread wake-up (an eventfd
    /// write) each way.
    Tls(Box<TlsRoute>),
}

struct TlsRoute {
    connector: TlsConnector,
    pools: thread_local::ThreadLocal<TlsPool>,
}

type TlsPool = Client<TlsConnector, Full<Bytes>>;

/// A new connection pool (one per server per thread).
fn pool(connector: TlsConnector) -> TlsPool {
    // No redirect is ever followed: it would carry the server's credentials somewhere
    // unchecked (a 3xx is relayed to the agent as an HTTP error like any other status).
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

impl HttpServer {
    pub fn new(
        name: Arc<str>,
        url: reqwest::Url,
        headers: &[(http::HeaderName, HeaderValue)],
        request_timeout: Duration,
    ) -> HttpServer {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(k.clone(), v.clone());
        }
        let uri = upstream_uri(url, &mut map);
        warn_of_environment_proxy(&name, &uri);
        let plain = uri.scheme() == Some(&http::uri::Scheme::HTTP);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        // A peer that vanishes without a reset (host down, a NAT that forgot the flow) must
        // fail the calls and streams waiting on it, not hold them forever.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let (route, uri) = if plain {
            let origin = uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .expect("a URI's path and query are a URI");
            let connector = ConnectTimeout::new(http, CONNECT_TIMEOUT);
            (Route::Plain(http1::Pool::new(connector, uri)), origin)
        } else {
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_platform_verifier()
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            let route = Route::Tls(Box::new(TlsRoute {
                connector: ConnectTimeout::new(tls, CONNECT_TIMEOUT),
                pools: thread_local::ThreadLocal::new(),
            }));
            (route, uri)
        };
        let mut post_headers = map.clone();
        post_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        post_headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        HttpServer {
            name,
            uri,
            headers: map,
            post_headers,
            route,
            request_timeout,
            tools: Arc::default(),
        }
    }

    /// Sends on one of this thread's connections to the server.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<UpstreamBody>, http1::Error> {
        match &self.route {
            Route::Plain(pool) => Ok(pool.send(request).await?.map(UpstreamBody::Driven)),
            Route::Tls(tls) => Ok(tls
                .pools
                .get_or(|| pool(tls.connector.clone()))
                .request(request)
                .await?
                .map(UpstreamBody::Pooled)),
        }
    }

    fn request(
        &self,
        method: Method,
        headers: &http::HeaderMap,
        session: Option<&HeaderValue>,
        body: Bytes,
    ) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers.clone();
        if let Some(id) = session {
            req.headers_mut().insert(SESSION_HEADER, id.clone());
        }
        req
    }

    /// POSTs one agent message; returns the reply and the upstream session id it set, if any.
    /// An upstream that does not answer within the request timeout (a JSON answer in full, an
    /// event stream's head and then each event) gets the agent a timeout error, as a stdio
    /// server does.
    pub async fn post(
        &self,
        session: Option<&HeaderValue>,
        out: &Outbound<'_>,
    ) -> (Reply, Option<HeaderValue>) {
        match tokio::time::timeout(self.request_timeout, self.exchange(session, out)).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!(
                    server = %self.name,
                    "upstream did not answer within {} s",
                    self.request_timeout.as_secs()
                );
                (timed_out(out), None)
            }
        }
    }

    async fn exchange(
        &self,
        session: Option<&HeaderValue>,
        out: &Outbound<'_>,
    ) -> (Reply, Option<HeaderValue>) {
        let mut req = self.request(Method::POST, &self.post_headers, session, out.body.clone());
        let headers = req.headers_mut();
        for (name, value) in [
            (PROTOCOL_HEADER, out.protocol_version),
            (METHOD_HEADER, out.mcp_method),
            (NAME_HEADER, out.mcp_name),
        ] {
            if let Some(v) = value {
                headers.insert(name, v.clone());
            }
        }
        let response = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(server = %self.name, "upstream request failed: {}", causes(&*e));
                return (unreachable(out), None);
            }
        };
        let upstream_session = response.headers().get(SESSION_HEADER).cloned();
        let reply = self.to_reply(response, out.kind).await;
        let reply = match (reply, out.kind, out.id) {
            (Reply::Stream(events), Kind::Request, Some(id)) => {
                Reply::Stream(ensure_response(events, id, self.request_timeout))
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
        let mut req = self.request(Method::GET, &self.headers, session, Bytes::new());
        let headers = req.headers_mut();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(v) = last_event_id {
            headers.insert(LAST_EVENT_ID_HEADER, v.clone());
        }
        if let Some(v) = protocol_version {
            headers.insert(PROTOCOL_HEADER, v.clone());
        }
        match self.send(req).await {
            Ok(r) => self.to_reply(r, Kind::Notification).await,
            Err(e) => {
                tracing::warn!(server = %self.name, "upstream GET failed: {}", causes(&*e));
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
        let mut req = self.request(Method::DELETE, &self.headers, Some(session), Bytes::new());
        if let Some(v) = protocol_version {
            req.headers_mut().insert(PROTOCOL_HEADER, v.clone());
        }
        // Bounded, and the answer is not read: an upstream that never answers, or streams or
        // trickles its answer, must not hold up shutdown or the idle-session reaper (the
        // connection is simply not reused).
        match tokio::time::timeout(DELETE_TIMEOUT, self.send(req)).await {
            Ok(Ok(r)) => drop(r),
            Ok(Err(e)) => {
                tracing::debug!(server = %self.name, "upstream DELETE failed: {}", causes(&*e));
            }
            Err(_) => tracing::debug!(server = %self.name, "upstream DELETE got no answer"),
        }
    }

    async fn to_reply(&self, response: http::Response<UpstreamBody>, kind: Kind) -> Reply {
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let is_sse = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| crate::media::is(v, "text/event-stream"));
        if status == StatusCode::ACCEPTED && kind != Kind::Request {
            return Reply::Accepted;
        }
        if status.is_success() && is_sse {
            let name = self.name.clone();
            let tools = self.tools.clone();
            let events = sse_stream::SseStream::new(response.into_body()).filter_map(move |item| {
                let name = name.clone();
                let tools = tools.clone();
                async move {
                    match item {
                        Ok(sse) => {
                            let data = Bytes::from(sse.data.unwrap_or_default());
                            tools.watch(&data);
                            Some(Event {
                                id: sse.id,
                                event: sse.event,
                                retry: sse.retry,
                                data,
                            })
                        }
                        Err(e) => {
                            tracing::warn!(server = %name, "upstream event stream broke: {e}");
                            None
                        }
                    }
                }
            });
            return Reply::Stream(events.boxed());
        }
        let body = match read_limited(response.into_body()).await {
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
            .is_some_and(|v| crate::media::is(v, "application/json"));
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

/// An upstream answer's body, from either kind of connection. (Not `http_body_util::Either`:
/// its error is a boxed `dyn Error`, which `sse_stream` cannot take, and boxing the body
/// instead would cost an allocation per call.)
pub enum UpstreamBody {
    Driven(DrivenBody),
    Pooled(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Driven(body) => std::pin::Pin::new(body).poll_frame(cx),
            UpstreamBody::Pooled(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map_err(BodyError::Hyper),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Driven(body) => body.is_end_stream(),
            UpstreamBody::Pooled(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Driven(body) => body.size_hint(),
            UpstreamBody::Pooled(body) => body.size_hint(),
        }
    }
}

/// A request's event stream that always ends with its response. Until the response has come,
/// each event must come within `limit` (as a stdio server's must): an upstream that goes quiet
/// gets the agent a timeout error, and one whose stream breaks first (the server died) a
/// JSON-RPC error, both with the agent's id, so the agent gets an answer instead of waiting for
/// one that will never come. After the response, events are relayed as they come, untimed.
fn ensure_response(
    events: futures_util::stream::BoxStream<'static, Event>,
    id: &str,
    limit: Duration,
) -> futures_util::stream::BoxStream<'static, Event> {
    let id: Arc<str> = id.into();
    futures_util::stream::unfold(
        (Some(events), false, id),
        move |(events, answered, id)| async move {
            let mut events = events?;
            let next = if answered {
                Ok(events.next().await)
            } else {
                tokio::time::timeout(limit, events.next()).await
            };
            let (code, message) = match next {
                Ok(Some(event)) => {
                    let answered = answered || answers(&event, &id);
                    return Some((event, (Some(events), answered, id)));
                }
                Ok(None) if answered => return None,
                Ok(None) => (
                    jsonrpc::INTERNAL_ERROR,
                    "upstream server closed the stream before answering",
                ),
                Err(_) => (
                    jsonrpc::REQUEST_TIMEOUT,
                    "upstream server did not answer in time",
                ),
            };
            let error = jsonrpc::error_response(Some(&id), code, message);
            Some((Event::message(error), (None, true, id)))
        },
    )
    .boxed()
}

/// Whether an event is the response to the request `id` (its raw JSON text).
fn answers(event: &Event, id: &str) -> bool {
    !event.data.is_empty()
        && crate::jsonrpc::Envelope::parse(&event.data).is_ok_and(|env| {
            env.kind() == Ok(Kind::Response) && env.id.is_some_and(|i| i.get() == id)
        })
}

fn timed_out(out: &Outbound<'_>) -> Reply {
    failed(
        out,
        jsonrpc::REQUEST_TIMEOUT,
        StatusCode::GATEWAY_TIMEOUT,
        "upstream server did not answer in time",
    )
}

async fn read_limited(body: UpstreamBody) -> Result<Bytes, String> {
    match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(format!("over {MAX_JSON_BODY} bytes"))
        }
        Err(e) => Err(causes(&*e)),
    }
}

/// An error and its causes on one line. hyper's errors do not carry the URL, and the URL is
/// not added here: it may carry credentials.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The configured URL as the URI every request goes to. Credentials written into the URL
/// (`https://user:secret@host/mcp`) become a Basic `Authorization` header, as browsers and
/// reqwest do, unless the server's headers already set one; they never go out in the URI.
fn upstream_uri(mut url: reqwest::Url, headers: &mut http::HeaderMap) -> http::Uri {
    if !url.username().is_empty() || url.password().is_some() {
        use base64::Engine;
        let user = percent_decode(url.username());
        let password = url.password().map(percent_decode).unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {token}")) {
            value.set_sensitive(true);
            headers.entry(header::AUTHORIZATION).or_insert(value);
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    url.set_fragment(None);
    // The Host header of a plain-HTTP server, built once: its connections are this gateway's
    // own HTTP/1 ones (`http1`), whose requests must carry it. Only for `http://`: an
    // `https://` server goes through hyper-util, which adds Host on HTTP/1 itself and on
    // HTTP/2 sends `:authority` alone (some servers, Google front ends and nginx, refuse a
    // request that also carries Host). `Url::port` is None
    // for the scheme's default port.
    if url.scheme() == "http"
        && let Some(host) = url.host_str()
    {
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&host) {
            headers.entry(header::HOST).or_insert(value);
        }
    }
    url.as_str()
        .parse()
        .expect("an http(s) URL that url::Url accepted is a valid http::Uri")
}

/// Upstream connections go straight to the server: `HTTPS_PROXY`, `HTTP_PROXY` and
/// `ALL_PROXY` are not used (a gateway in front of tool servers should not send their
/// credentials through whatever proxy its environment names). Where one of them would apply to
/// a server's URL, say so at start, so that a connection that fails is not a mystery.
fn warn_of_environment_proxy(server: &str, uri: &http::Uri) {
    let matcher = hyper_util::client::proxy::matcher::Matcher::from_env();
    if let Some(proxy) = matcher.intercept(uri) {
        // The proxy's address only: its URI may carry a password.
        let at = proxy.uri().authority().map_or("", |a| {
            a.as_str()
                .rsplit_once('@')
                .map_or(a.as_str(), |(_, host)| host)
        });
        tracing::warn!(
            server = %server,
            "the environment names a proxy ({at}) for this server's URL; toolgate does not use \
             proxies from the environment and connects to the server directly"
        );
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn unreachable(out: &Outbound<'_>) -> Reply {
    failed(
        out,
        jsonrpc::INTERNAL_ERROR,
        StatusCode::BAD_GATEWAY,
        "upstream server unreachable",
    )
}

/// The gateway's own answer when the upstream gave none: a JSON-RPC error for a request, an
/// HTTP error (`status`) for anything else.
fn failed(out: &Outbound<'_>, code: i64, status: StatusCode, message: &'static str) -> Reply {
    match out.kind {
        Kind::Request => Reply::Json {
            status: StatusCode::OK,
            body: jsonrpc::error_response(out.id, code, message),
        },
        _ => Reply::Status {
            status,
            content_type: None,
            body: Bytes::from_static(message.as_bytes()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &'static str) -> Event {
        Event::message(Bytes::from_static(json.as_bytes()))
    }

    /// The next event of a relayed stream within 300 ms, if any.
    async fn next_soon(
        relayed: &mut futures_util::stream::BoxStream<'static, Event>,
    ) -> Option<Event> {
        tokio::time::timeout(Duration::from_millis(300), relayed.next())
            .await
            .ok()
            .flatten()
    }

    fn error_code(event: &Event) -> serde_json::Value {
        let error: serde_json::Value = serde_json::from_slice(&event.data).expect("json");
        assert_eq!(error["id"], 7, "{error}");
        error["error"]["code"].clone()
    }

    /// An event stream that goes quiet before the response ends with a timeout error for the
    /// request; one that ends before it (another request's response is not it), with an error
    /// that says so.
    #[tokio::test]
    async fn a_stream_without_its_response_ends_with_an_error() {
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        let quiet = futures_util::stream::iter([message(progress)])
            .chain(futures_util::stream::pending())
            .boxed();
        let relayed: Vec<Event> = ensure_response(quiet, "7", Duration::from_millis(50))
            .collect()
            .await;
        assert_eq!(relayed.len(), 2);
        assert_eq!(relayed[0].data, progress);
        assert_eq!(error_code(&relayed[1]), jsonrpc::REQUEST_TIMEOUT);

        // Ended after a notification, or after another request's response (not this one's).
        let other = r#"{"jsonrpc":"2.0","id":8,"result":{}}"#;
        for last in [progress, other] {
            let ended = futures_util::stream::iter([message(last)]).boxed();
            let relayed: Vec<Event> = ensure_response(ended, "7", Duration::from_secs(5))
                .collect()
                .await;
            assert_eq!(relayed.len(), 2, "{last}");
            assert_eq!(error_code(&relayed[1]), jsonrpc::INTERNAL_ERROR, "{last}");
        }
    }

    /// Once the response has come, a stream the upstream leaves open is not timed: no second
    /// answer for the same request.
    #[tokio::test]
    async fn a_stream_left_open_after_its_response_gets_no_second_answer() {
        let response = r#"{"jsonrpc":"2.0","id":7,"result":{}}"#;
        let open = futures_util::stream::iter([message(response)])
            .chain(futures_util::stream::pending())
            .boxed();
        let mut relayed = ensure_response(open, "7", Duration::from_millis(50));
        assert_eq!(
            next_soon(&mut relayed).await.expect("the response").data,
            response
        );
        assert!(next_soon(&mut relayed).await.is_none(), "a second answer");
    }

    #[test]
    fn credentials_in_the_url_become_a_basic_header_and_leave_the_uri() {
        let mut headers = http::HeaderMap::new();
        let url = "https://al%40ice:s%3Acret@mcp.example:8443/mcp?x=1#frag"
            .parse()
            .unwrap();
        let uri = upstream_uri(url, &mut headers);
        assert_eq!(uri.to_string(), "https://mcp.example:8443/mcp?x=1");
        // base64("al@ice:s:cret")
        assert_eq!(headers[header::AUTHORIZATION], "Basic YWxAaWNlOnM6Y3JldA==");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn a_configured_authorization_header_wins_over_url_credentials() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        let uri = upstream_uri("http://u:p@127.0.0.1/mcp".parse().unwrap(), &mut headers);
        assert_eq!(uri.to_string(), "http://127.0.0.1/mcp");
        assert_eq!(headers[header::AUTHORIZATION], "Bearer k");
    }

    #[test]
    fn a_url_without_credentials_adds_only_the_host() {
        let mut headers = http::HeaderMap::new();
        let uri = upstream_uri("http://127.0.0.1:9/mcp".parse().unwrap(), &mut headers);
        assert_eq!(uri.to_string(), "http://127.0.0.1:9/mcp");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[header::HOST], "127.0.0.1:9");
    }

    #[test]
    fn a_plain_http_servers_host_header_is_its_host_and_any_port_that_is_not_the_default() {
        for (url, host) in [
            ("http://mcp.example/mcp", "mcp.example"),
            ("http://MCP.Example:80/mcp", "mcp.example"),
            ("http://mcp.example:8443/mcp", "mcp.example:8443"),
            ("http://[::1]:8080/mcp", "[::1]:8080"),
            ("http://bücher.example/mcp", "xn--bcher-kva.example"),
        ] {
            let mut headers = http::HeaderMap::new();
            upstream_uri(url.parse().unwrap(), &mut headers);
            assert_eq!(headers[header::HOST], host, "{url}");
        }
        // An https server may speak HTTP/2: hyper-util's own handling (Host on HTTP/1 only).
        let mut headers = http::HeaderMap::new();
        upstream_uri("https://mcp.example/mcp".parse().unwrap(), &mut headers);
        assert!(headers.get(header::HOST).is_none());
        // A Host the operator configured for the server stays.
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("tools.internal"));
        upstream_uri("http://127.0.0.1:9/mcp".parse().unwrap(), &mut headers);
        assert_eq!(headers[header::HOST], "tools.internal");
    }
}
