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
use crate::answers;
use crate::gateway::Gateway;
use crate::jsonrpc;
use crate::pipeline::{self, Refused};
use crate::session::{SessionRefusal, UpstreamSession};
use crate::upstream::http::{LAST_EVENT_ID_HEADER, SESSION_HEADER};
use crate::upstream::{Event, Reply};

const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = jsonrpc::error_response(self.id.as_deref(), self.code, &self.message);
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
    macro_rules! refuse_unread {
        ($r:expr) => {{
            let r = $r;
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
    let body = match read_body(body, headers.content_length, gw.config.max_body_bytes).await {
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
    macro_rules! refuse {
        ($r:expr) => {{
            let r = $r;
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

/// Reads the body up to the limit: over it, 413 without reading further.
async fn read_body(
    body: Body,
    content_length: Option<&HeaderValue>,
    limit: usize,
) -> Result<Bytes, Refused> {
    let too_large = || {
        Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::INVALID_REQUEST,
            format!("Payload Too Large: the body limit is {limit} bytes"),
        )
    };
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::PARSE_ERROR,
            "Parse error: the body could not be read",
        )),
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
}
