//! Local mode (SPEC 2.2): `toolgate run --policy P -- COMMAND...` is a stdio MCP server for a
//! local client (Claude Desktop, Cursor). The client starts toolgate where it used to start the
//! server; toolgate starts the server (or reaches a remote one) and puts the same request path
//! in between: one in-process gateway with one server, one grant (the local user) and one
//! session, fed from stdin instead of HTTP.
//!
//! The child's exit code becomes toolgate's; SIGTERM/SIGINT are passed on to the child.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::trail::{Trail, new_request_id};
use crate::answers;
use crate::config::{Config, Credential, GrantConfig, ServerConfig, TransportConfig};
use crate::gateway::Gateway;
use crate::grants::Grant;
use crate::jsonrpc::{self, Kind};
use crate::pipeline;
use crate::session::UpstreamSession;
use crate::upstream::Reply;

/// Name of the one server and grant of local mode (in logs and decisions).
pub const LOCAL: &str = "local";
/// The longest line read from the client.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

pub enum LocalUpstream {
    Command {
        command: String,
        args: Vec<String>,
    },
    Url {
        url: reqwest::Url,
        headers: Vec<(http::HeaderName, HeaderValue)>,
    },
}

pub struct LocalOptions {
    pub policy: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub upstream: LocalUpstream,
}

/// The in-process gateway of local mode.
pub fn local_config(opts: &LocalOptions) -> Config {
    let mut cfg = Config::embedded_defaults();
    // An agent starts one local-mode process per server, all with the same state folder.
    cfg.audit.shared_journal = true;
    // A client starts local mode from any folder (often `/`): keep state in the user's state
    // folder unless told otherwise.
    cfg.state_dir = match &opts.state_dir {
        Some(dir) => dir.clone(),
        None => match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
            (Some(x), _) if !x.is_empty() => PathBuf::from(x).join("toolgate"),
            (_, Some(h)) if !h.is_empty() => PathBuf::from(h).join(".local/state/toolgate"),
            _ => cfg.state_dir,
        },
    };
    let transport = match &opts.upstream {
        LocalUpstream::Command { command, args } => TransportConfig::Stdio {
            command: command.clone(),
            args: args.clone(),
            env: Default::default(),
            cwd: None,
            local: true,
        },
        LocalUpstream::Url { url, headers } => TransportConfig::Http {
            url: url.clone(),
            headers: headers.clone(),
        },
    };
    cfg.servers.push(ServerConfig {
        name: LOCAL.into(),
        transport,
        policy: Some(opts.policy.clone()),
    });
    cfg.grants.push(GrantConfig {
        name: LOCAL.into(),
        server: LOCAL.into(),
        credential: Credential::Anonymous,
        policy: None,
    });
    cfg
}

struct Local {
    gw: Arc<Gateway>,
    grant: Arc<Grant>,
    session: Mutex<Option<Arc<str>>>,
    out: mpsc::Sender<Bytes>,
}

/// Runs local mode until the client closes stdin or the server exits; returns the exit code.
pub async fn run(opts: LocalOptions) -> Result<i32, String> {
    let gw = Arc::new(Gateway::new(local_config(&opts)).map_err(|e| e.to_string())?);
    // Nothing scrapes metrics in local mode; the upkeep still folds the samples away.
    tokio::spawn(crate::telemetry::upkeep(
        gw.metrics.clone(),
        gw.shutdown.clone(),
    ));
    let _watcher = gw
        .policies
        .watch()
        .map_err(|e| format!("cannot watch the policy file: {e}"))?;
    let grant = gw
        .grants
        .load()
        .authenticate(None, LOCAL)
        .map_err(|_| "local grant missing".to_string())?;
    let (out, mut out_rx) = mpsc::channel::<Bytes>(1024);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(&line).await.is_err() || stdout.write_all(b"\n").await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let local = Arc::new(Local {
        gw: gw.clone(),
        grant,
        session: Mutex::new(None),
        out,
    });

    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut exit_watch: Option<tokio::sync::watch::Receiver<Option<i32>>> = None;
    let mut signals = Signals::new();
    let code = loop {
        line.clear();
        let exited = async {
            match &mut exit_watch {
                Some(w) => w.wait_for(Option::is_some).await.ok().and_then(|c| *c),
                None => std::future::pending().await,
            }
        };
        let mut limited = (&mut stdin).take(MAX_LINE_BYTES as u64 + 1);
        tokio::select! {
            read = limited.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) | Err(_) => break None, // the client went away
                    Ok(_) if line.len() > MAX_LINE_BYTES => {
                        tracing::error!("a message over {MAX_LINE_BYTES} bytes; stopping");
                        break Some(1);
                    }
                    Ok(_) => {
                        let text = line.trim_ascii();
                        if text.is_empty() {
                            continue;
                        }
                        local.clone().message(Bytes::copy_from_slice(text)).await;
                        if exit_watch.is_none() {
                            exit_watch = local.exit_watch().await;
                        }
                    }
                }
            }
            code = exited => break Some(code.unwrap_or(1)),
            signal = signals.next() => {
                tracing::info!("signal {signal}: passing it to the server");
                local.signal(signal).await;
                break local.wait_exit(exit_watch.take()).await.or(Some(128 + signal));
            }
        }
    };
    // Closing the session closes the child's stdin; wait for it to exit and take its code.
    let watch = exit_watch.take();
    let session = local.session.lock().expect("session lock").take();
    if let Some(id) = session
        && let Some(s) = gw.sessions.remove(&id)
    {
        s.close().await;
    }
    let code = match code {
        Some(c) => c,
        None => local.wait_exit(watch).await.unwrap_or(0),
    };
    drop(local);
    gw.shutdown.cancel();
    gw.save_state();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(code)
}

impl Local {
    /// The open session's id, as an agent over HTTP would send it.
    fn session_header(&self) -> Option<HeaderValue> {
        let session = self.session.lock().expect("session lock");
        session
            .as_ref()
            .and_then(|id| HeaderValue::from_str(id).ok())
    }

    async fn send_out(&self, line: Bytes) {
        let _ = self.out.send(line).await;
    }

    /// One message from the client. Requests run concurrently (a long tool call must not hold
    /// up a ping); notifications and responses are passed on in order.
    async fn message(self: Arc<Self>, body: Bytes) {
        let is_request =
            jsonrpc::Envelope::parse(&body).is_ok_and(|e| e.kind() == Ok(Kind::Request));
        let initialize = is_request && self.session.lock().expect("session lock").is_none();
        if is_request && !initialize {
            tokio::spawn(async move { self.handle(body).await });
        } else {
            // initialize too is awaited: the session must exist before the next message.
            self.handle(body).await;
        }
    }

    async fn handle(&self, body: Bytes) {
        // Local mode is audited like the HTTP endpoint: tools/call and refusals.
        let mut trail = Trail::start(&self.gw, LOCAL, &new_request_id());
        trail.grant(&self.grant);
        macro_rules! refuse {
            ($r:expr) => {{
                let r: pipeline::Refused = $r;
                trail.refused(&self.gw, &r);
                return self
                    .send_out(jsonrpc::error_response(r.id.as_deref(), r.code, &r.message))
                    .await;
            }};
        }
        let msg = match pipeline::read_message(&body) {
            Ok(m) => m,
            Err(r) => refuse!(r),
        };
        trail.method(msg.envelope.method());
        let session = self.session_header();
        let headers = pipeline::AgentHeaders::of_session(session.as_ref());
        let binding = match pipeline::bind_session(&self.gw, &headers, &self.grant, &msg) {
            Ok(b) => b,
            Err(r) => refuse!(r),
        };
        if let pipeline::Binding::Session(s) = &binding {
            trail.session(Some(&s.id));
        }
        let verdict = match pipeline::decide(&self.grant, &headers, &msg) {
            Ok(v) => v,
            Err(r) => refuse!(r),
        };
        let answer = match pipeline::forward(
            &self.gw,
            LOCAL,
            &headers,
            self.grant.clone(),
            &body,
            &msg,
            binding,
            verdict,
        )
        .await
        {
            Ok(a) => a,
            Err(r) => refuse!(r),
        };
        if let Some(id) = answer.new_session {
            *self.session.lock().expect("session lock") = Some(id.clone());
            self.start_stream(&id).await;
        }
        let reply = match answer.list_filter {
            Some(filter) => answers::filter_reply(answer.reply, filter),
            None => answer.reply,
        };
        let mut trail = answer.decided.as_ref().map(|d| {
            trail.decided(&self.gw, d);
            trail
        });
        let forwarded_at = answer.forwarded_at;
        let summary = answer.summary;
        match reply {
            Reply::Json { body, .. } => {
                if let Some(t) = trail.take() {
                    t.finish(&self.gw, 200, Some(&body), summary, forwarded_at);
                }
                self.send_out(body).await
            }
            Reply::Stream(mut events) => {
                while let Some(e) = events.next().await {
                    if !e.data.is_empty() {
                        if trail.is_some() && jsonrpc::is_response(&e.data) {
                            trail.take().expect("checked").finish(
                                &self.gw,
                                200,
                                Some(&e.data),
                                None,
                                forwarded_at,
                            );
                        }
                        self.send_out(e.data).await;
                    }
                }
                if let Some(t) = trail.take() {
                    t.finish(&self.gw, 502, None, None, forwarded_at);
                }
            }
            Reply::Accepted => {}
            Reply::Status { status, .. } => {
                if let Some(t) = trail.take() {
                    t.finish(&self.gw, status.as_u16(), None, None, forwarded_at);
                }
                if msg.kind == Kind::Request {
                    let text = format!("upstream server answered HTTP {status}");
                    self.send_out(jsonrpc::error_response(
                        msg.id,
                        jsonrpc::INTERNAL_ERROR,
                        &text,
                    ))
                    .await;
                }
            }
        }
    }

    /// Pumps the session's server-initiated messages (the HTTP GET stream's equivalent).
    async fn start_stream(&self, id: &str) {
        let Ok(session) = self.gw.sessions.get(id, &self.grant) else {
            return;
        };
        let out = self.out.clone();
        match &session.upstream {
            UpstreamSession::Stdio(s) => {
                if let Ok(mut rx) = s.open_stream().await {
                    tokio::spawn(async move {
                        while let Some(e) = rx.recv().await {
                            if out.send(e.data).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            UpstreamSession::Http(_) => {
                let session = session.clone();
                tokio::spawn(async move {
                    let UpstreamSession::Http(h) = &session.upstream else {
                        return;
                    };
                    if let Reply::Stream(mut events) = h.open_stream(None).await {
                        while let Some(e) = events.next().await {
                            if !e.data.is_empty() && out.send(e.data).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        }
    }

    async fn stdio_session(&self) -> Option<Arc<crate::session::Session>> {
        let id = self.session.lock().expect("session lock").clone()?;
        let session = self.gw.sessions.get(&id, &self.grant).ok()?;
        matches!(session.upstream, UpstreamSession::Stdio(_)).then_some(session)
    }

    async fn exit_watch(&self) -> Option<tokio::sync::watch::Receiver<Option<i32>>> {
        let session = self.stdio_session().await?;
        let UpstreamSession::Stdio(s) = &session.upstream else {
            return None;
        };
        Some(s.exit_watch().await)
    }

    async fn signal(&self, signal: i32) {
        if let Some(session) = self.stdio_session().await
            && let UpstreamSession::Stdio(s) = &session.upstream
        {
            s.signal(signal).await;
        }
    }

    async fn wait_exit(
        &self,
        watch: Option<tokio::sync::watch::Receiver<Option<i32>>>,
    ) -> Option<i32> {
        let mut watch = watch?;
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            watch.wait_for(Option::is_some),
        )
        .await;
        waited.ok()?.ok().and_then(|c| *c)
    }
}

/// SIGTERM and SIGINT as a stream of signal numbers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler installs"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler installs"),
        }
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}
