//! The floor for a gateway on toolgate's HTTP stack: a pass-through proxy that forwards each
//! POST to the upstream with the same client (hyper-util's pooled client) and server (axum
//! over hyper) as toolgate, and does nothing else - no parsing, no policy, no sessions, no
//! audit.
//!
//! `bench/run.sh` measures it beside toolgate so that "what toolgate adds" can be split into
//! what any proxy on this machine's loopback costs and what toolgate's own work costs.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: axum::http::Uri,
}

/// Headers an MCP request carries that the upstream needs to see.
const FORWARDED: [&str; 4] = [
    "mcp-session-id",
    "mcp-protocol-version",
    "content-type",
    "accept",
];

async fn forward(State(proxy): State<Proxy>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = axum::http::Request::new(Full::new(body));
    *request.method_mut() = axum::http::Method::POST;
    *request.uri_mut() = proxy.upstream.clone();
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let upstream = match proxy.client.request(request).await {
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

async fn serve(args: Args) -> std::io::Result<()> {
    let proxy = Proxy {
        client: Client::builder(TokioExecutor::new()).build({
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http
        }),
        upstream: args.upstream.parse().expect("--upstream is a URI"),
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
