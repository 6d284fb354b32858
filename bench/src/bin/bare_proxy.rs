//! The floor for a gateway on toolgate's HTTP stack: a pass-through proxy that forwards each
//! POST to the upstream with the same client (toolgate's own pool of HTTP/1 connections,
//! `toolgate::upstream::http1`) and server (hyper under `axum::serve`, one handler and no
//! router, as toolgate serves `POST /mcp/{server}`) as toolgate, and does nothing else - no
//! parsing, no policy, no sessions, no audit. Whatever the path, a request is forwarded as a
//! POST to the upstream's MCP endpoint, except a DELETE (a session's close), which it answers
//! 200 itself.
//!
//! `bench/run.sh` measures it beside toolgate so that "what toolgate adds" can be split into
//! what any proxy on this machine's loopback costs and what toolgate's own work costs. With
//! `--current-thread --threads N --busy-poll-us 200` it runs on toolgate's serving model
//! (`server.rs`: one single-threaded runtime per core, connections handed out in turn,
//! polling after each request, writes gathered to the end of each turn: `toolgate::gather`),
//! the like-for-like floor under load.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use toolgate::server::{Handed, hand_out};
use toolgate::upstream::http::ConnectTimeout;
use toolgate::upstream::http1::Pool;

#[derive(Parser)]
struct Args {
    /// The upstream's Streamable HTTP endpoint.
    #[arg(long)]
    upstream: String,
    /// Listen on 127.0.0.1:PORT (0: any free port, printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Run on single-threaded runtimes (tokio's current-thread runtime) instead of tokio's
    /// work-stealing one.
    #[arg(long)]
    current_thread: bool,
    /// How many single-threaded runtimes, each on a thread of its own, with connections handed
    /// to them in turn from one listener: toolgate's serving model (`server.rs`), which runs
    /// one per core. Needs --current-thread.
    #[arg(long, default_value_t = 1, requires = "current_thread")]
    threads: usize,
    /// Poll for this many microseconds after a request starts or ends, as toolgate's serving
    /// threads do (`toolgate::busy_poll`; 0: sleep at once). Needs --current-thread.
    #[arg(long, default_value_t = 0, requires = "current_thread")]
    busy_poll_us: u64,
}

#[derive(Clone)]
struct Proxy {
    pool: Arc<Pool>,
    /// The upstream's path (origin-form, what the pool sends) and its Host header.
    path: axum::http::Uri,
    host: HeaderValue,
    /// Whether requests mark themselves in flight for polling (`--busy-poll-us`).
    busy_poll: bool,
}

/// Headers an MCP request carries that the upstream needs to see.
const FORWARDED: [&str; 4] = [
    "mcp-session-id",
    "mcp-protocol-version",
    "content-type",
    "accept",
];

async fn forward(
    State(proxy): State<Proxy>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // On the one runtime's thread (`--busy-poll-us` needs `--current-thread`).
    let _call = proxy.busy_poll.then(toolgate::busy_poll::Call::begin);
    if method == Method::DELETE {
        return StatusCode::OK.into_response();
    }
    let mut request = axum::http::Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = proxy.path.clone();
    request
        .headers_mut()
        .insert(header::HOST, proxy.host.clone());
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let upstream = match proxy.pool.send(request).await {
        Ok(r) => r,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let (parts, body) = upstream.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = parts.status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    if let Some(session) = parts.headers.get("mcp-session-id") {
        response
            .headers_mut()
            .insert("mcp-session-id", session.clone());
    }
    response
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()?;
    runtime.block_on(serve(args))
}

/// Serves `proxy` on `listener`'s connections from this thread's runtime, polling as
/// toolgate's serving threads do when asked to (each runtime its own polling task, as in
/// toolgate), and gathering writes as they do when `gather`. Every request, whatever its
/// path, goes to `forward`.
async fn serve_on<L>(
    proxy: Proxy,
    listener: L,
    busy_poll_us: u64,
    gather: bool,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(toolgate::busy_poll::run(Duration::from_micros(
        busy_poll_us,
    )));
    if gather {
        tokio::spawn(toolgate::gather::run());
    }
    axum::serve(listener, forward.with_state(proxy).into_make_service()).await
}

async fn serve(args: Args) -> std::io::Result<()> {
    let upstream: axum::http::Uri = args.upstream.parse().expect("--upstream is a URI");
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let proxy = Proxy {
        pool: Arc::new(Pool::new(
            ConnectTimeout::new(http, Duration::from_secs(10)),
            upstream.clone(),
        )),
        path: upstream.path().parse().expect("a path"),
        host: HeaderValue::from_str(upstream.authority().expect("a host").as_str())
            .expect("a host header"),
        busy_poll: args.busy_poll_us > 0,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}/mcp");
    if args.threads <= 1 {
        // The older floor, kept as it was: no gathering (its upstream connections write at once).
        return serve_on(proxy, listener, args.busy_poll_us, false).await;
    }
    // This thread's runtime serves too, as toolgate's first serving thread does.
    let (own, own_queue) = tokio::sync::mpsc::unbounded_channel();
    let mut queues = vec![own];
    for n in 1..args.threads {
        let (queue, handed) = tokio::sync::mpsc::unbounded_channel();
        queues.push(queue);
        let (proxy, busy_poll_us) = (proxy.clone(), args.busy_poll_us);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("bare-proxy-{n}"))
            .spawn(move || {
                runtime.block_on(serve_on(
                    proxy,
                    Handed::new(handed, local),
                    busy_poll_us,
                    true,
                ))
            })?;
    }
    // toolgate's own hand-out and listener (`server.rs`), never shut down here.
    tokio::spawn(hand_out(listener, queues, std::future::pending()));
    serve_on(
        proxy,
        Handed::new(own_queue, local),
        args.busy_poll_us,
        true,
    )
    .await
}
