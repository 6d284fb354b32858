//! A minimal MCP server for benchmarks: one `echo` tool whose answer has a configurable size,
//! over Streamable HTTP (JSON responses, stateless sessions) or stdio. It does as little as
//! possible per call, so that in a benchmark the gateway, not the upstream, is the bottleneck.
//!
//! It parses only what it must (method and id) and writes answers with `format!`: a benchmark
//! upstream that spent time in a JSON library would hide the gateway's own cost.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use serde_json::value::RawValue;

#[derive(Parser)]
struct Args {
    /// Listen on 127.0.0.1:PORT (0: any free port, printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve over stdio instead of HTTP.
    #[arg(long)]
    stdio: bool,
    /// Bytes of text in each echo answer (besides the echoed message).
    #[arg(long, default_value_t = 64)]
    response_bytes: usize,
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
}

struct Server {
    padding: String,
}

const TOOLS: &str = r#"{"tools":[{"name":"echo","description":"Echoes its message back.","inputSchema":{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}}]}"#;

impl Server {
    /// The answer to one message, or None for notifications and responses.
    fn answer(&self, body: &[u8]) -> Option<String> {
        let env: Envelope = serde_json::from_slice(body).ok()?;
        let id = env.id?.get();
        let result = match env.method.as_deref()? {
            "initialize" => r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"fast-upstream","version":"0.1.0"}}"#.to_string(),
            "tools/list" => TOOLS.to_string(),
            "tools/call" => format!(r#"{{"content":[{{"type":"text","text":"echo {}"}}]}}"#, self.padding),
            "ping" => "{}".to_string(),
            other => {
                return Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"Method not found: {other}"}}}}"#));
            }
        };
        Some(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
        ))
    }
}

async fn handle(
    server: axum::extract::State<Arc<Server>>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    match server.answer(&body) {
        Some(text) => {
            let mut r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                text,
            )
                .into_response();
            r.headers_mut().insert(
                "mcp-session-id",
                HeaderValue::from_static("fast-upstream-session"),
            );
            r
        }
        None => StatusCode::ACCEPTED.into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let server = Arc::new(Server {
        padding: "x".repeat(args.response_bytes),
    });
    if args.stdio {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut out = tokio::io::stdout();
        while let Some(line) = lines.next_line().await? {
            if let Some(answer) = server.answer(line.as_bytes()) {
                out.write_all(answer.as_bytes()).await?;
                out.write_all(b"\n").await?;
                out.flush().await?;
            }
        }
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    let app = Router::new()
        .route("/mcp", post(handle).delete(|| async { StatusCode::OK }))
        .with_state(server);
    axum::serve(listener, app).await
}
