//! One-off sessions the gateway opens on its own behalf: connect, initialize, list the tools,
//! close. Used by `toolgate policy check --server` (and later by the catalog).

use bytes::Bytes;

use super::http::HttpSession;
use super::stdio::StdioSession;
use super::{Outbound, Reply};
use crate::answers;
use crate::gateway::Upstream;
use crate::jsonrpc::{Envelope, Kind};

const PROTOCOL_VERSION: &str = "2025-11-25";

fn outbound<'a>(body: &'a Bytes, kind: Kind, method: &'a str, id: Option<&'a str>) -> Outbound<'a> {
    Outbound {
        body,
        kind,
        method,
        id,
        progress_token: None,
        accepts_sse: false,
        protocol_version: None,
        mcp_method: None,
        mcp_name: None,
    }
}

/// The JSON-RPC response in a reply to a request of the gateway's own.
pub async fn response_of(reply: Reply) -> Result<Bytes, String> {
    use futures_util::StreamExt;
    match reply {
        Reply::Json { body, .. } => Ok(body),
        Reply::Stream(mut events) => {
            while let Some(e) = events.next().await {
                if crate::jsonrpc::is_response(&e.data) {
                    return Ok(e.data);
                }
            }
            Err("the server's stream ended without a response".into())
        }
        Reply::Status { status, .. } => Err(format!("the server answered HTTP {status}")),
        Reply::Accepted => Err("the server accepted a request without answering it".into()),
    }
}

enum Probe {
    Stdio(StdioSession),
    Http(HttpSession),
}

impl Probe {
    async fn send(&self, out: &Outbound<'_>) -> Reply {
        match self {
            Probe::Stdio(s) => s.send(out).await,
            Probe::Http(h) => h.send(out).await,
        }
    }
}

/// Lists the names of every tool the server offers (all pages).
pub async fn list_tool_names(upstream: &Upstream) -> Result<Vec<String>, String> {
    let init = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"toolgate","version":"{}"}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    ));
    let out = outbound(&init, Kind::Request, "initialize", Some("0"));
    let (probe, reply) = match upstream {
        Upstream::Stdio(server) => {
            let (session, reply) = StdioSession::start(server.clone(), &out).await;
            (session.map(Probe::Stdio), reply)
        }
        Upstream::Http(server) => {
            let (reply, upstream_id) = server.post(None, &out).await;
            let session = HttpSession {
                server: server.clone(),
                upstream_id,
                protocol_version: std::sync::Mutex::new(Some(http::HeaderValue::from_static(
                    PROTOCOL_VERSION,
                ))),
            };
            (Some(Probe::Http(session)), reply)
        }
    };
    let answer = response_of(reply).await?;
    let probe =
        probe.ok_or_else(|| format!("initialize failed: {}", String::from_utf8_lossy(&answer)))?;
    if Envelope::parse(&answer)
        .map(|e| e.result.is_none())
        .unwrap_or(true)
    {
        return Err(format!(
            "initialize failed: {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    let initialized =
        Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    probe
        .send(&outbound(
            &initialized,
            Kind::Notification,
            "notifications/initialized",
            None,
        ))
        .await;

    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 1..=100 {
        let params = cursor
            .as_ref()
            .map_or("{}".to_string(), |c| format!(r#"{{"cursor":{c}}}"#));
        let body = Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{page},"method":"tools/list","params":{params}}}"#
        ));
        let id = page.to_string();
        let reply = probe
            .send(&outbound(&body, Kind::Request, "tools/list", Some(&id)))
            .await;
        let (page_names, next) = answers::list_page(&response_of(reply).await?)?;
        names.extend(page_names);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    if let Probe::Http(h) = &probe {
        h.close().await;
    }
    Ok(names)
}
