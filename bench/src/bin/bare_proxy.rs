//! The floor for a gateway on toolgate's HTTP stack: a pass-through proxy that forwards each
//! POST to the upstream with the same client (reqwest over hyper) and server (axum over hyper)
//! as toolgate, and does nothing else - no parsing, no policy, no sessions, no audit.
//!
//! `bench/run.sh` measures it beside toolgate so that "what toolgate adds" can be split into
//! what any proxy on this machine's loopback costs and what toolgate's own work costs.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The upstream's Streamable HTTP endpoint.
    #[arg(long)]
    upstream: String,
    /// Listen on 127.0.0.1:PORT (0: any free port, printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Run on one thread (tokio's current-thread runtime) instead of one per core.
    #[arg(long)]
    current_thread: bool,
}

#[derive(Clone)]
struct Proxy {
    client: reqwest::Client,
    upstream: reqwest::Url,
}

/// Headers an MCP request carries that the upstream needs to see.
const FORWARDED: [&str; 4] = [
    "mcp-session-id",
    "mcp-protocol-version",
    "content-type",
    "accept",
];

async fn forward(State(proxy): State<Proxy>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = proxy.client.post(proxy.upstream.clone()).body(body);
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = upstream.status();
    let session = upstream.headers().get("mcp-session-id").cloned();
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    let body = match upstream.bytes().await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(session) = session {
        response.headers_mut().insert("mcp-session-id", session);
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

async fn serve(args: Args) -> std::io::Result<()> {
    let proxy = Proxy {
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client builds"),
        upstream: args.upstream.parse().expect("--upstream is a URL"),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    let app = Router::new()
        .route(
            "/mcp",
            post(forward).delete(|| async { StatusCode::OK.into_response() }),
        )
        .with_state(proxy);
    axum::serve(listener, app).await
}
