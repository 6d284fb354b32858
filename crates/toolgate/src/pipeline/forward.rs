//! Step 6, forwarding: to the upstream over the message's binding, with an allowed call's
//! last checks (the upstream lists the tool) and its counters reserved and settled around it.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::continued::{ContinuedParams, TASK_METHODS};
use super::decide::{AllowedCall, Decided, Verdict};
use super::listed::upstream_lists;
use super::{AgentHeaders, Answer, Binding, Message, Refused, STATELESS_VERSION, limits};
use crate::answers;
use crate::audit::Outcome;
use crate::gateway::{Gateway, Upstream};
use crate::grants::Grant;
use crate::jsonrpc::{self, Kind};
use crate::session::UpstreamSession;
use crate::upstream::http::HttpSession;
use crate::upstream::stdio::StdioSession;
use crate::upstream::{Outbound, Reply};

/// Sends one message on a binding's upstream (opening nothing).
pub(super) async fn send_on(
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

/// Opens the upstream session first when the message is `initialize`.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    gw: &Gateway,
    server: &str,
    headers: &AgentHeaders<'_>,
    grant: Arc<Grant>,
    body: &Bytes,
    msg: &Message<'_>,
    binding: Binding,
    verdict: Verdict,
) -> Result<Answer, Refused> {
    let accepts_sse = headers.accepts_sse();
    let id = msg.id.unwrap_or("null");
    let now = |body, decided: Option<Decided>| Answer {
        reply: Reply::Json {
            status: StatusCode::OK,
            body,
        },
        new_session: None,
        accepts_sse,
        list_filter: None,
        decided,
        forwarded_at: None,
        summary: None,
    };
    let (list_filter, call, default_denied) = match verdict {
        Verdict::Answer(body, decided) => return Ok(now(body, Some(*decided))),
        Verdict::Forward { list_filter, call } => (list_filter, call, None),
        Verdict::DefaultDenied {
            denial,
            decided,
            revision,
        } => (None, None, Some((denial, decided, revision))),
    };
    let decided = call.as_ref().map(|c| c.decided.clone());
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
        protocol_version: headers.protocol_version,
        mcp_method: headers.mcp_method,
        mcp_name: headers.mcp_name,
    };
    let upstream = gw
        .servers
        .get(server)
        .expect("admit checked the grant's server exists");
    let answer = |(reply, summary), new_session, forwarded_at| {
        Ok(Answer {
            reply,
            new_session,
            accepts_sse,
            list_filter: list_filter.clone(),
            decided: decided.clone(),
            forwarded_at,
            summary,
        })
    };

    if let Some((denial, decided, rev)) = default_denied {
        let listed = upstream_lists(
            gw,
            upstream,
            &grant,
            &binding,
            &out,
            msg,
            rev,
            &decided.tool,
        )
        .await?;
        return Ok(if listed {
            now(denial, Some(*decided))
        } else {
            let d = decided.with(Outcome::Unknown, None);
            now(answers::unknown_tool(id, &decided.tool), Some(d))
        });
    }

    let mut reservation = None;
    if let Some(call) = &call
        && !matches!(binding, Binding::New)
    {
        if let Some(tool) = &call.must_be_listed
            && !upstream_lists(
                gw,
                upstream,
                &grant,
                &binding,
                &out,
                msg,
                call.revision,
                tool,
            )
            .await?
        {
            let d = call.decided.with(Outcome::Unknown, None);
            return Ok(now(answers::unknown_tool(id, tool), Some(d)));
        }
        // A retry (2026-07-28) carries on its call's earlier round, and with it that round's
        // reservation: the logical call is counted once.
        let retried = match ContinuedParams::request_state(msg.envelope.params) {
            Some(state) => match gw
                .continued
                .take_state(&grant.id, &call.decided.tool, &state)
            {
                Ok(held) => Some(held),
                Err(_) => {
                    let body = jsonrpc::error_response(
                        msg.id,
                        jsonrpc::INVALID_PARAMS,
                        "Invalid params: requestState was not issued to this grant for this tool",
                    );
                    let d = call.decided.with(Outcome::Deny, Some(UNBOUND_STATE_RULE));
                    return Ok(now(body, Some(d)));
                }
            },
            None => None,
        };
        reservation = match retried {
            Some(held) => held,
            None => match reserve(gw, &grant, &binding, upstream, call, id).await {
                Ok(r) => r,
                Err((denial, outcome, rule)) => {
                    return Ok(now(denial, Some(call.decided.with(outcome, Some(&rule)))));
                }
            },
        };
    }

    if let Binding::New = binding {
        return match upstream {
            Upstream::Stdio(server) => {
                let (session, reply) = StdioSession::start(server.clone(), &out).await;
                let new = session.map(|s| {
                    gw.sessions
                        .insert(grant, UpstreamSession::Stdio(s))
                        .id
                        .clone()
                });
                answer((reply, None), new, None)
            }
            Upstream::Http(server) => {
                let (reply, upstream_id) = server.post(None, &out).await;
                let opened = match &reply {
                    Reply::Json { body, .. } => jsonrpc::is_result(body),
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
                answer((reply, None), new, None)
            }
        };
    }
    let method = msg.envelope.method();
    let task = match method {
        m if msg.kind == Kind::Request && TASK_METHODS.contains(&m) => {
            let task = ContinuedParams::read(msg.envelope.params)
                .task_id
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if gw
                .continued
                .check_task(upstream.name(), &grant.id, &task)
                .is_err()
            {
                return Err(Refused::new(
                    StatusCode::OK,
                    jsonrpc::INVALID_PARAMS,
                    "Invalid params: unknown taskId",
                )
                .with_id(msg.id));
            }
            Some(task)
        }
        _ => None,
    };
    // An open session or a stateless request: send, then settle the counters on the answer.
    let forwarded_at = Some(std::time::Instant::now());
    let reply = match send_on(gw, upstream, &grant, &binding, &out).await {
        Ok(r) => r,
        Err(refused) => {
            if let Some(r) = reservation {
                limits::release(&gw.counters, r).await;
            }
            return Err(refused);
        }
    };
    // The upstream forgot the session (it restarted): forget it too, so the agent's next
    // request gets 404 and it re-initializes.
    if let Binding::Session(session) = &binding
        && matches!(&reply, Reply::Status { status, .. } if *status == StatusCode::NOT_FOUND)
        && let Some(s) = gw.sessions.remove(&session.id)
    {
        s.close().await;
    }
    let server = upstream.name();
    let continued = &gw.continued;
    let (reply, hold) = match (&call, task) {
        (Some(call), _) => {
            let (grant, tool) = (grant.id.clone(), call.decided.tool.clone());
            let (server, c) = (server.clone(), continued.clone());
            let reply = on_answer(reply, move |m| {
                c.record_call_answer(&server, &grant, &tool, &m);
                std::future::ready(m)
            })
            .await;
            let hold = limits::CallHold {
                continued: continued.clone(),
                server: upstream.name().clone(),
            };
            (reply, Some(hold))
        }
        (None, Some(task)) => {
            // A failed or cancelled task gives its call's counters back before the answer
            // goes on, so that the agent's next call finds them (as `limits::settle` does).
            let (server, c) = (server.clone(), continued.clone());
            let counters = gw.counters.clone();
            let (task, method): (Arc<str>, Arc<str>) = (task.into(), method.into());
            let reply = on_answer(reply, move |m| {
                let settled = c.settle_task(&server, &task, &method, &m);
                let counters = counters.clone();
                async move {
                    if let Some((r, true)) = settled {
                        limits::release(&counters, r).await;
                    }
                    m
                }
            })
            .await;
            (reply, None)
        }
        (None, None) if msg.kind == Kind::Request && method == "tasks/list" => {
            let (server, c, grant) = (server.clone(), continued.clone(), grant.id.clone());
            let reply = on_answer(reply, move |m| {
                std::future::ready(c.filter_task_list(&server, &grant, m))
            })
            .await;
            (reply, None)
        }
        (None, None) => (reply, None),
    };
    answer(
        limits::settle(&gw.counters, reservation, reply, hold).await,
        None,
        forwarded_at,
    )
}

/// Rule named when a retried call's `requestState` is not one relayed to its grant.
pub const UNBOUND_STATE_RULE: &str = "(request state not issued)";

/// Passes the JSON-RPC response in a reply (its body, or its stream's response event)
/// through `f`, in order, before it goes on.
async fn on_answer<F, Fut>(reply: Reply, f: F) -> Reply
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Bytes> + Send + 'static,
{
    use futures_util::StreamExt;
    match reply {
        Reply::Json { status, body } => Reply::Json {
            status,
            body: f(body).await,
        },
        Reply::Stream(events) => {
            let f = Arc::new(f);
            Reply::Stream(
                events
                    .then(move |mut e| {
                        let f = f.clone();
                        async move {
                            if jsonrpc::is_response(&e.data) {
                                e.data = f(e.data).await;
                            }
                            e
                        }
                    })
                    .boxed(),
            )
        }
        other => other,
    }
}

async fn reserve(
    gw: &Gateway,
    grant: &Grant,
    binding: &Binding,
    upstream: &Upstream,
    call: &AllowedCall,
    id: &str,
) -> Result<Option<crate::counters::Reservation>, (Bytes, Outcome, String)> {
    limits::reserve(gw, grant, binding, upstream.name(), call, id).await
}
