//! The agent endpoint `/mcp/{server}` over Streamable HTTP (SPEC 2.1): POST for messages, GET
//! for the server-initiated stream, DELETE to end a session. This file owns HTTP concerns only
//! (bodies, statuses, headers, SSE framing); the request path itself is `pipeline`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use tracing::Instrument;

use super::trail::{Trail, new_request_id};
use crate::answers::{self, Revision};
use crate::gateway::Gateway;
use crate::jsonrpc;
use crate::pipeline::{self, Refused};
use crate::session::{SessionRefusal, UpstreamSession};
use crate::upstream::http::{LAST_EVENT_ID_HEADER, SESSION_HEADER};
use crate::upstream::{Event, Reply};

const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = self.error_body();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"toolgate\""),
            );
        }
        response
    }
}

pub async fn post(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    post_to(gw, server, request).await
}

/// `POST /mcp/{server}`, for the router and for `server::Routes` (which sends it here
/// without the router).
pub async fn post_to(gw: Arc<Gateway>, server: String, request: Request) -> Response {
    // In flight on this thread until the answer is ready, for its busy polling.
    let _call = crate::busy_poll::Call::begin();
    let request_id = new_request_id();
    let mut response = handle_post(gw, server, request, &request_id).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// The POST path: every refusal is audited, and a `tools/call`'s record is written before
/// its answer leaves. What is logged while a request is handled is logged in its span,
/// `request{request_id server method}`. The span opens once the method is known, so its
/// fields are written once (`crate::logging`); nothing of toolgate's logs before that, except
/// a refusal's audit record, which gets a span without the method. (hyper's and axum's own
/// debug events while the body is read carry no request id.)
async fn handle_post(
    gw: Arc<Gateway>,
    server: String,
    request: Request,
    request_id: &Arc<str>,
) -> Response {
    let mut trail = Trail::start(&gw, &server, request_id);
    let (parts, body) = request.into_parts();
    let headers = pipeline::AgentHeaders::read(&parts.headers);
    let revision = headers
        .protocol_version
        .map_or(Revision::Sessions, |v| Revision::of(v.as_bytes()));
    macro_rules! refuse_unread {
        ($r:expr) => {{
            let mut r = $r;
            r.revision = revision;
            let span = tracing::info_span!(
                crate::logging::REQUEST_SPAN,
                request_id = &**request_id,
                server = server.as_str()
            );
            span.in_scope(|| trail.refused(&gw, &r));
            return r.into_response();
        }};
    }
    let grant = match pipeline::admit(
        &gw,
        &server,
        &headers,
        parts.uri.authority().map(|a| a.as_str()),
    ) {
        Ok(g) => g,
        Err(r) => refuse_unread!(r),
    };
    trail.grant(&grant);
    if let Some(ct) = headers.content_type
        && !crate::media::is(ct.to_str().unwrap_or(""), "application/json")
    {
        refuse_unread!(Refused::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        ));
    }
    let body = match read_body(
        body,
        &parts,
        headers.content_length,
        gw.config.max_body_bytes,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => refuse_unread!(r),
    };
    let msg = match pipeline::read_message(&body) {
        Ok(m) => m,
        Err(r) => refuse_unread!(r),
    };
    trail.method(msg.envelope.method());
    let span = tracing::info_span!(
        crate::logging::REQUEST_SPAN,
        request_id = &**request_id,
        server = server.as_str(),
        method = msg.envelope.method()
    );
    // Boxed: inline, it made each request's future (which `server::Routes` boxes) 7,904
    // bytes instead of 6,120, and at that size jemalloc held about twice the memory per idle
    // session (8.8 -> 16.8 KiB, `bench/run.sh`'s memory rows; the heap itself was the same,
    // by massif with the system allocator). Boxed, the request's future is 3,448 bytes and a
    // session 8.8 KiB again (still 8.8 KiB in this round's `bench/run.sh`).
    Box::pin(handle_message(
        gw, server, grant, headers, &body, msg, trail,
    ))
    .instrument(span)
    .await
}

/// The rest of the POST path, from a message that parsed.
async fn handle_message(
    gw: Arc<Gateway>,
    server: String,
    grant: Arc<crate::grants::Grant>,
    headers: pipeline::AgentHeaders<'_>,
    body: &Bytes,
    msg: pipeline::Message<'_>,
    mut trail: Trail,
) -> Response {
    let revision = headers
        .protocol_version
        .map_or(Revision::Sessions, |v| Revision::of(v.as_bytes()));
    macro_rules! refuse {
        ($r:expr) => {{
            let mut r = $r;
            r.revision = revision;
            trail.refused(&gw, &r);
            return r.into_response();
        }};
    }
    if let Err(r) = pipeline::check_transport_headers(&headers, &msg) {
        refuse!(r);
    }
    let binding = match pipeline::bind_session(&gw, &headers, &grant, &msg) {
        Ok(b) => b,
        Err(r) => refuse!(r),
    };
    if let pipeline::Binding::Session(s) = &binding {
        trail.session(Some(&s.id));
    }
    let verdict = match pipeline::decide(&grant, &headers, &msg) {
        Ok(v) => v,
        Err(r) => refuse!(r),
    };
    let decided = verdict.decided().cloned();
    let answer = match pipeline::forward(
        &gw, &server, &headers, grant, body, &msg, binding, verdict,
    )
    .await
    {
        Ok(a) => a,
        Err(r) => {
            // Allowed, then failed on the way (the upstream's tool list could not be read):
            // the record keeps the decision.
            if let Some(d) = &decided {
                trail.decided(&gw, d);
            }
            refuse!(r)
        }
    };
    let reply = match answer.list_filter {
        Some(filter) => answers::filter_reply(answer.reply, filter),
        None => answer.reply,
    };
    let mut response = match &answer.decided {
        Some(d) => {
            trail.decided(&gw, d);
            render_audited(
                gw.clone(),
                reply,
                answer.accepts_sse,
                trail,
                answer.forwarded_at,
                answer.summary,
            )
            .await
        }
        None => render(&gw, reply, answer.accepts_sse).await,
    };
    if let Some(id) = answer.new_session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// Renders a `tools/call`'s reply, writing its audit record as the response goes out.
async fn render_audited(
    gw: Arc<Gateway>,
    reply: Reply,
    accepts_sse: bool,
    trail: Trail,
    forwarded_at: Option<std::time::Instant>,
    summary: Option<Option<jsonrpc::AnswerSummary>>,
) -> Response {
    match reply {
        Reply::Json { status, body } if !trail.audited() => {
            // With the audit off nothing about this call needs to be on disk before its answer
            // leaves, so it is counted in the metrics after: reading the answer for its outcome
            // (`jsonrpc::summarize`) and counting it were about 3,700 instructions between the
            // upstream's answer and the agent's (`bench/scripts/instructions.sh`). A serving
            // runtime is single-threaded (`server::spawn_worker`), so the task runs on this
            // thread once the connection's task has written the answer and yields. The price
            // is the task, about 1,700 instructions: the answer leaves about 2,000 sooner and
            // the call costs about 2.5% more CPU in all.
            let answered_at = std::time::Instant::now();
            let answer = body.clone();
            let code = status.as_u16();
            tokio::spawn(async move {
                trail.finish_at(&gw, code, Some(&answer), summary, forwarded_at, answered_at);
            });
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Reply::Json { status, body } => {
            trail.finish(&gw, status.as_u16(), Some(&body), summary, forwarded_at);
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Reply::Status {
            status,
            content_type,
            body,
        } => {
            trail.finish(&gw, status.as_u16(), None, None, forwarded_at);
            let mut response = (status, body).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Reply::Accepted => {
            trail.finish(&gw, 202, None, None, forwarded_at);
            StatusCode::ACCEPTED.into_response()
        }
        Reply::Stream(events) => {
            let audited = futures_util::stream::unfold(
                (events, Some(trail), gw.clone()),
                move |(mut events, mut trail, gw)| async move {
                    match events.next().await {
                        Some(e) => {
                            if trail.is_some() && jsonrpc::is_response(&e.data) {
                                trail.take().expect("checked").finish(
                                    &gw,
                                    200,
                                    Some(&e.data),
                                    None,
                                    forwarded_at,
                                );
                            }
                            Some((e, (events, trail, gw)))
                        }
                        None => {
                            // The stream ended without a response: still one record for the call.
                            if let Some(t) = trail.take() {
                                t.finish(&gw, 502, None, None, forwarded_at);
                            }
                            None
                        }
                    }
                },
            );
            render(&gw, Reply::Stream(audited.boxed()), accepts_sse).await
        }
    }
}

pub async fn get(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let headers = pipeline::AgentHeaders::read(&parts.headers);
    let grant = match pipeline::admit(
        &gw,
        &server,
        &headers,
        parts.uri.authority().map(|a| a.as_str()),
    ) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    if !parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream") || v.contains("*/*"))
    {
        return Refused::new(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::INVALID_REQUEST,
            "Not Acceptable: the stream is text/event-stream",
        )
        .into_response();
    }
    let session = match session_of(&gw, &headers, &grant) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let guard = session.stream_opened();
    let ended = session.ended.clone();
    let events = match &session.upstream {
        UpstreamSession::Stdio(s) => match s.open_stream().await {
            Ok(rx) => tokio_stream_from(rx),
            Err(why) => {
                return Refused::new(StatusCode::BAD_GATEWAY, jsonrpc::INTERNAL_ERROR, why)
                    .into_response();
            }
        },
        UpstreamSession::Http(h) => {
            match h.open_stream(parts.headers.get(LAST_EVENT_ID_HEADER)).await {
                Reply::Stream(events) => events,
                other => return render(&gw, other, true).await,
            }
        }
    };
    // The guard keeps the session from being reaped as idle while its stream is open.
    let events = events.take_until(ended.cancelled_owned()).map(move |e| {
        let _ = &guard;
        e
    });
    sse_response(&gw, events.boxed())
}

pub async fn delete(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let headers = pipeline::AgentHeaders::read(&parts.headers);
    let grant = match pipeline::admit(
        &gw,
        &server,
        &headers,
        parts.uri.authority().map(|a| a.as_str()),
    ) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let session = match session_of(&gw, &headers, &grant) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if let Some(s) = gw.sessions.remove(&session.id) {
        s.close().await;
        tracing::debug!(session = %s.id, "session ended by the agent");
    }
    StatusCode::OK.into_response()
}

fn session_of(
    gw: &Gateway,
    headers: &pipeline::AgentHeaders<'_>,
    grant: &crate::grants::Grant,
) -> Result<Arc<crate::session::Session>, Refused> {
    let id = headers.session.ok_or_else(|| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        )
    })?;
    gw.sessions
        .get(id.to_str().unwrap_or(""), grant)
        .map_err(|r| match r {
            SessionRefusal::NotFound => Refused::new(
                StatusCode::NOT_FOUND,
                jsonrpc::INVALID_REQUEST,
                "Session not found: initialize a new session",
            ),
            SessionRefusal::OtherGrant => Refused::new(
                StatusCode::FORBIDDEN,
                jsonrpc::INVALID_REQUEST,
                "Forbidden: this session belongs to another grant",
            ),
        })
}

/// Reads the body up to the limit: over it, 413 (`too_large`).
async fn read_body(
    mut body: Body,
    request: &http::request::Parts,
    content_length: Option<&HeaderValue>,
    limit: usize,
) -> Result<Bytes, BodyRefused> {
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `too_large` is boxed, and the read's result is gone before it: inline, or with that
    // result alive across it (a `match` on it), this future, which every request's holds,
    // was 352 bytes instead of 224 (208 before `too_large`; release build).
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(Box::pin(too_large(body, request, Some(n), limit)).await);
    }
    // `&mut`, so that `too_large` can read what is past the limit.
    let over = match http_body_util::Limited::new(&mut body, limit)
        .collect()
        .await
    {
        Ok(collected) => return Ok(collected.to_bytes()),
        Err(e) => e.is::<http_body_util::LengthLimitError>(),
    };
    if !over {
        return Err(BodyRefused {
            refused: Refused::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                "Parse error: the body could not be read",
            ),
            close: false,
        });
    }
    Err(Box::pin(too_large(body, request, None, limit)).await)
}

/// The 413 for a body over `limit`; over HTTP/1, once the rest of the body is read and thrown
/// away (within `LINGER_BYTES` and `LINGER_TIME`), and with `Connection: close`. `declared`
/// is the body's Content-Length when that is what was over the limit (nothing read yet).
async fn too_large(
    mut body: Body,
    request: &http::request::Parts,
    declared: Option<u64>,
    limit: usize,
) -> BodyRefused {
    let http1 = matches!(
        request.version,
        http::Version::HTTP_10 | http::Version::HTTP_11
    );
    if http1 {
        match declared {
            Some(n) => {
                // A client waiting for `100 Continue` has sent none of the body, and reading
                // it would ask for it; past the bound, reading would end in the reset anyway.
                let expects_continue = request
                    .headers
                    .get(header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                if !expects_continue && n <= limit as u64 + LINGER_BYTES {
                    discard(&mut body, n, LINGER_TIME).await;
                }
            }
            None => {
                discard(&mut body, LINGER_BYTES, LINGER_TIME).await;
            }
        }
    }
    BodyRefused {
        refused: Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::INVALID_REQUEST,
            format!("Payload Too Large: the body limit is {limit} bytes"),
        ),
        close: http1,
    }
}

/// How much of an over-limit body the gateway reads and throws away before its 413 (past the
/// limit, or of a declared length past the limit), and for how long at most, over HTTP/1.
///
/// Why: answered with the body unread, the connection is closed with data in the gateway's
/// receive buffer, and the kernel then sends RST instead of FIN. A client that writes its
/// whole body before it reads (Python's urllib, many HTTP libraries) gets a broken pipe or a
/// reset on its write, and never reads the 413 that is waiting for it. Reading the rest first
/// (nginx's lingering close: `lingering_time`, `lingering_timeout`) lets it read the answer.
/// The bounds keep a client from holding a request for long or sending the gateway gigabytes:
/// 64 MiB is 16 times the default limit and under a second on a local or LAN link; 10 s is
/// 64 MiB at about 50 Mbit/s, and bounds a client that stalls. Past either, the 413 goes out at once and the
/// connection is closed with the rest unread (the client may see the reset then). Over
/// HTTP/2 nothing is read: hyper resets the stream with NO_ERROR after the answer, which asks
/// the client to stop sending without losing the answer (RFC 9113, 8.1).
const LINGER_BYTES: u64 = 64 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// How `discard` ended.
#[derive(Debug, PartialEq)]
enum Discarded {
    /// The body ended: nothing of it is left unread.
    Whole,
    /// More than the bound of bytes came; the rest is unread.
    OverBytes,
    /// The time was up; the rest is unread.
    OverTime,
    /// Reading failed (the client went away, or sent a malformed body).
    Failed,
}

/// Reads the rest of `body` and throws it away, up to `max_bytes` and `max_time`.
async fn discard(body: &mut Body, max_bytes: u64, max_time: std::time::Duration) -> Discarded {
    let read = async {
        let mut left = max_bytes;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Discarded::Failed;
            };
            if let Some(data) = frame.data_ref() {
                match left.checked_sub(data.len() as u64) {
                    Some(l) => left = l,
                    None => return Discarded::OverBytes,
                }
            }
        }
        Discarded::Whole
    };
    tokio::time::timeout(max_time, read)
        .await
        .unwrap_or(Discarded::OverTime)
}

/// A refusal from `read_body`. It goes through `refuse_unread!` as the `Refused` it derefs to
/// (for the audit); its answer closes the connection when `close` is set.
struct BodyRefused {
    refused: Refused,
    /// Set for a 413 over HTTP/1: the connection is closed after the answer, rather than kept
    /// for another request with an unknown amount of the body perhaps left unread.
    close: bool,
}

impl std::ops::Deref for BodyRefused {
    type Target = Refused;

    fn deref(&self) -> &Refused {
        &self.refused
    }
}

impl std::ops::DerefMut for BodyRefused {
    fn deref_mut(&mut self) -> &mut Refused {
        &mut self.refused
    }
}

impl IntoResponse for BodyRefused {
    fn into_response(self) -> Response {
        let mut response = self.refused.into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Renders an upstream reply for the agent.
async fn render(gw: &Gateway, reply: Reply, accepts_sse: bool) -> Response {
    match reply {
        Reply::Json { status, body } => {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Status {
            status,
            content_type,
            body,
        } => {
            let mut response = (status, body).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Reply::Stream(events) if accepts_sse => sse_response(gw, events),
        Reply::Stream(mut events) => {
            // The agent takes only JSON: answer with the response and drop what came before
            // it (notifications meant for a stream the agent does not read).
            while let Some(event) = events.next().await {
                if jsonrpc::is_response(&event.data) {
                    return (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        event.data,
                    )
                        .into_response();
                }
            }
            Refused::new(
                StatusCode::BAD_GATEWAY,
                jsonrpc::INTERNAL_ERROR,
                "upstream stream ended without a response",
            )
            .into_response()
        }
    }
}

fn sse_response(gw: &Gateway, events: futures_util::stream::BoxStream<'static, Event>) -> Response {
    let frames = events
        .take_until(gw.shutdown.clone().cancelled_owned())
        .map(|e| Ok::<_, Infallible>(sse_frame(&e)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .expect("static response parts are valid")
}

/// One SSE frame. Data lines are split on newlines, as the SSE format requires.
pub fn sse_frame(e: &Event) -> Bytes {
    let mut out = Vec::with_capacity(e.data.len() + 32);
    if let Some(event) = &e.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = &e.id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    if let Some(retry) = e.retry {
        out.extend_from_slice(format!("retry: {retry}\n").as_bytes());
    }
    for line in e.data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
) -> futures_util::stream::BoxStream<'static, Event> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames() {
        let e = Event {
            id: Some("7".into()),
            event: None,
            retry: None,
            data: Bytes::from_static(b"{\"a\":\n1}"),
        };
        assert_eq!(&sse_frame(&e)[..], b"id: 7\ndata: {\"a\":\ndata: 1}\n\n");
        let priming = Event {
            id: Some("0".into()),
            event: None,
            retry: Some(1000),
            data: Bytes::new(),
        };
        assert_eq!(&sse_frame(&priming)[..], b"id: 0\nretry: 1000\ndata: \n\n");
    }

    /// A body of `chunks` 1 KiB chunks, then (when `stall`) one that never ends.
    fn body_of(chunks: usize, stall: bool) -> Body {
        let data = futures_util::stream::iter(
            (0..chunks).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b' '; 1024]))),
        );
        if stall {
            Body::from_stream(data.chain(futures_util::stream::pending()))
        } else {
            Body::from_stream(data)
        }
    }

    fn parts(version: http::Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("POST").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);
    const SHORT: std::time::Duration = std::time::Duration::from_millis(50);

    #[tokio::test]
    async fn discard_reads_to_the_end_within_its_bounds() {
        assert_eq!(
            discard(&mut body_of(8, false), 8 * 1024, SECOND).await,
            Discarded::Whole
        );
        assert_eq!(
            discard(&mut body_of(8, false), 8 * 1024 - 1, SECOND).await,
            Discarded::OverBytes
        );
        // Endless, it stops at the bound of bytes.
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, Infallible>(Bytes::from_static(&[b' '; 1024]))
        });
        assert_eq!(
            discard(&mut Body::from_stream(endless), 1 << 20, SECOND).await,
            Discarded::OverBytes
        );
        // Stalled, at the bound of time.
        assert_eq!(
            discard(&mut body_of(2, true), 1 << 20, SHORT).await,
            Discarded::OverTime
        );
    }

    #[tokio::test]
    async fn over_the_limit_the_rest_is_read_before_the_413_over_http1_only() {
        let limit = 4096;
        // Chunked, read to its end: the 413 closes the connection.
        let r = read_body(
            body_of(64, false),
            &parts(http::Version::HTTP_11, &[]),
            None,
            limit,
        )
        .await
        .expect_err("413");
        assert_eq!((r.status, r.close), (StatusCode::PAYLOAD_TOO_LARGE, true));
        let response = r.into_response();
        assert_eq!(response.headers()[header::CONNECTION], "close");
        // Declared: over HTTP/1 the body is read to its end; with `100-continue` or over
        // HTTP/2 nothing is read (the body there never ends: reading it would take
        // `LINGER_TIME`).
        let len = HeaderValue::from_static("8192");
        let cases = [
            ("HTTP/1.1", http::Version::HTTP_11, &[][..], 8, true),
            (
                "HTTP/1.1, 100-continue",
                http::Version::HTTP_11,
                &[("expect", "100-continue")][..],
                0,
                true,
            ),
            ("HTTP/2", http::Version::HTTP_2, &[][..], 0, false),
        ];
        for (case, version, headers, chunks, close) in cases {
            let p = parts(version, headers);
            let read = read_body(body_of(chunks, chunks == 0), &p, Some(&len), limit);
            let r = tokio::time::timeout(SECOND, read)
                .await
                .unwrap_or_else(|_| panic!("{case}: still reading the body after 1 s"))
                .expect_err("413");
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{case}");
            assert_eq!(r.close, close, "{case}");
            let response = r.into_response();
            assert_eq!(
                response.headers().contains_key(header::CONNECTION),
                close,
                "{case}"
            );
        }
        // HTTP/2, chunked: nothing read past the limit either.
        let p = parts(http::Version::HTTP_2, &[]);
        let read = read_body(body_of(8, true), &p, None, limit);
        let r = tokio::time::timeout(SECOND, read).await.expect("no linger");
        assert!(r.is_err_and(|r| r.status == StatusCode::PAYLOAD_TOO_LARGE && !r.close));
        // Past the bound, at once.
        let huge = HeaderValue::from(limit as u64 + LINGER_BYTES + 1);
        let p = parts(http::Version::HTTP_11, &[]);
        let read = read_body(body_of(0, true), &p, Some(&huge), limit);
        let r = tokio::time::timeout(SECOND, read).await.expect("no linger");
        assert!(r.is_err_and(|r| r.status == StatusCode::PAYLOAD_TOO_LARGE && r.close));
        // Under the limit, the body whole.
        let p = parts(http::Version::HTTP_11, &[]);
        let body = read_body(body_of(4, false), &p, None, limit).await;
        assert_eq!(body.ok().map(|b| b.len()), Some(4096));
    }
}
