//! Stdio upstreams: MCP servers run as child processes, one per agent session.
//!
//! One child per session is a deliberate choice: a stdio server keeps state per connection
//! (subscriptions, roots, log level, its own caches), so sharing a child between sessions
//! would let one grant observe or disturb another's. The price is a process per session;
//! children start on `initialize`, and an idle session's child ends with the session.
//!
//! Request ids are rewritten on the way in (the gateway numbers them 1, 2, 3... per child) and
//! restored on the way out, by splicing bytes, so that the child sees unique ids even when the
//! gateway itself sends requests (the `initialize` replayed after a restart) and agents' ids
//! never reach another agent. Everything else in a message is relayed byte for byte.
//!
//! A child gets a minimal environment (PATH, HOME, LANG...) plus its configured `env`, never
//! the gateway's own: grant tokens, the admin token and other servers' credentials stay here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::{Event, Outbound, Reply};
use crate::jsonrpc::{self, Envelope, Kind};

/// Variables a child inherits from the gateway's environment: enough to run, nothing secret.
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
    "TERM",
];
/// The longest line accepted from a child; a longer one ends the child (it cannot be framed).
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Messages kept for a session with no open stream to deliver them to.
const BACKLOG_LIMIT: usize = 1024;
/// How long a child gets to exit after its stdin closes, and again after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Restarts closer together than this are delayed, so a crashing server is not spun.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);

/// How to start one stdio server.
#[derive(Debug)]
pub struct StdioServer {
    pub name: Arc<str>,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<std::path::PathBuf>,
    pub request_timeout: Duration,
    /// Local mode (`toolgate run`): the child is the user's own server, started in place of
    /// it, so it gets the whole environment, and its exit ends the gateway instead of a restart.
    pub local: bool,
    /// The tools it lists, as the gateway last fetched them (every child of this server).
    pub tools: Arc<super::ListedTools>,
}

/// An item on its way to one waiting request.
enum Item {
    /// A notification or server request related to the request.
    Related(Bytes),
    /// The response: the last item.
    Final(Bytes),
}

struct Pending {
    /// Raw JSON text of the agent's own id, restored on the response.
    original_id: Box<str>,
    progress_token: Option<Box<str>>,
    /// Whether the agent reads an SSE stream for this request (else only the response).
    streaming: bool,
    sink: mpsc::Sender<Item>,
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    /// Keyed by the gateway's id; the newest request is the last entry.
    pending: BTreeMap<u64, Pending>,
    /// The session's GET stream, when the agent has one open.
    stream: Option<mpsc::Sender<Event>>,
    /// Server-initiated messages waiting for a stream.
    backlog: VecDeque<Bytes>,
}

/// A running child process.
pub struct Child {
    server: Arc<str>,
    tools: Arc<super::ListedTools>,
    pid: i32,
    /// The exit code once the process has ended (128 + signal when killed by one).
    exited: tokio::sync::watch::Sender<Option<i32>>,
    request_timeout: Duration,
    /// Taken (closed) when the session ends: closing stdin is how an MCP stdio server is
    /// asked to exit, before any signal.
    stdin: Mutex<Option<mpsc::Sender<Bytes>>>,
    routes: Mutex<Routes>,
    alive: AtomicBool,
}

/// Owns a child: dropping it closes the child's stdin, then signals its process group.
pub struct ChildHandle {
    pub child: Arc<Child>,
    _kill: oneshot::Sender<()>,
}

impl StdioServer {
    /// Starts the child and the tasks that feed it and read it.
    pub fn spawn(&self) -> std::io::Result<ChildHandle> {
        let mut cmd = tokio::process::Command::new(&self.command);
        cmd.args(&self.args)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that ending it also ends what it started (npx → node).
            .process_group(0);
        if self.local {
            cmd.envs(std::env::vars_os());
        } else {
            for key in INHERITED_ENV {
                if let Ok(v) = std::env::var(key) {
                    cmd.env(key, v);
                }
            }
        }
        cmd.envs(&self.env);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        // SAFETY: prctl is async-signal-safe; it asks the kernel to end the child if the
        // gateway dies without cleaning up (SIGKILL), so no orphaned server outlives us.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut process = cmd.spawn()?;
        let pid = process.id().unwrap_or(0) as i32;
        let stdin = process.stdin.take().expect("stdin is piped");
        let stdout = process.stdout.take().expect("stdout is piped");
        let stderr = process.stderr.take().expect("stderr is piped");
        let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(256);
        let child = Arc::new(Child {
            server: self.name.clone(),
            tools: self.tools.clone(),
            pid,
            exited: tokio::sync::watch::Sender::new(None),
            request_timeout: self.request_timeout,
            stdin: Mutex::new(Some(stdin_tx)),
            routes: Mutex::new(Routes {
                next_id: 1,
                ..Routes::default()
            }),
            alive: AtomicBool::new(true),
        });
        tracing::info!(server = %self.name, pid, "started stdio server");

        tokio::spawn(write_loop(stdin, stdin_rx, self.name.clone()));
        tokio::spawn(read_loop(stdout, child.clone()));
        tokio::spawn(stderr_loop(stderr, self.name.clone(), pid));
        let (kill_tx, kill_rx) = oneshot::channel();
        tokio::spawn(wait_loop(process, pid, kill_rx, child.clone()));
        Ok(ChildHandle {
            child,
            _kill: kill_tx,
        })
    }
}

async fn write_loop(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    server: Arc<str>,
) {
    while let Some(msg) = rx.recv().await {
        let ok = stdin.write_all(&msg).await.is_ok()
            && stdin.write_all(b"\n").await.is_ok()
            && stdin.flush().await.is_ok();
        if !ok {
            tracing::warn!(%server, "stdio server's stdin closed");
            break;
        }
    }
    // Dropping stdin here closes it: the polite way to ask an MCP stdio server to exit.
}

async fn read_loop(stdout: tokio::process::ChildStdout, child: Arc<Child>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) => break,
            Ok(_) if line.len() > MAX_LINE_BYTES => {
                tracing::error!(server = %child.server, "stdio server sent a line over {MAX_LINE_BYTES} bytes; ending it");
                break;
            }
            Ok(_) => {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                child.route(Bytes::copy_from_slice(&line)).await;
            }
            Err(e) => {
                tracing::warn!(server = %child.server, "reading stdio server: {e}");
                break;
            }
        }
    }
    child.fail_all("upstream server exited");
}

async fn stderr_loop(stderr: tokio::process::ChildStderr, server: Arc<str>, pid: i32) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "toolgate::upstream_stderr", %server, pid, "{line}");
    }
}

async fn wait_loop(
    mut process: tokio::process::Child,
    pid: i32,
    kill: oneshot::Receiver<()>,
    child: Arc<Child>,
) {
    let status = tokio::select! {
        status = process.wait() => status,
        _ = kill => {
            // Stdin is closed when the handle drops; give the server a moment, then signal the
            // whole group, then force it.
            match tokio::time::timeout(EXIT_GRACE, process.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pid, libc::SIGTERM);
                    match tokio::time::timeout(EXIT_GRACE, process.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            signal_group(pid, libc::SIGKILL);
                            process.wait().await
                        }
                    }
                }
            }
        }
    };
    // Whatever the server started in its group goes with it.
    signal_group(pid, libc::SIGTERM);
    child.alive.store(false, Ordering::Release);
    let code = status.as_ref().ok().map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    child.exited.send_replace(Some(code.unwrap_or(1)));
    match status {
        Ok(s) => tracing::info!(server = %child.server, pid, "stdio server exited: {s}"),
        Err(e) => tracing::warn!(server = %child.server, pid, "waiting for stdio server: {e}"),
    }
}

fn signal_group(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

impl Child {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Routes one line from the child to whoever waits for it.
    async fn route(&self, line: Bytes) {
        let env = match Envelope::parse(&line) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(server = %self.server, "stdio server wrote a non-JSON-RPC line: {}", e.message);
                return;
            }
        };
        let kind = match env.kind() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(server = %self.server, "stdio server wrote an invalid message: {}", e.message);
                return;
            }
        };
        if kind == Kind::Response {
            let id = env.id.expect("responses have ids");
            let Some(ours) = id.get().parse::<u64>().ok() else {
                tracing::warn!(server = %self.server, "response with an id the gateway never sent");
                return;
            };
            let pending = self
                .routes
                .lock()
                .expect("routes lock")
                .pending
                .remove(&ours);
            let Some(pending) = pending else {
                tracing::debug!(server = %self.server, id = ours, "response to a request no one waits for");
                return;
            };
            let range = jsonrpc::span_in(&line, id.get()).expect("id is a slice of the line");
            let msg = jsonrpc::splice(&line, range, pending.original_id.as_bytes());
            let _ = pending.sink.send(Item::Final(msg)).await;
            return;
        }
        if env.method() == super::TOOLS_LIST_CHANGED {
            self.tools.forget();
        }
        // Progress goes to the request that asked for it.
        if env.method() == "notifications/progress" {
            let token = env
                .params
                .and_then(|p| serde_json::from_str::<jsonrpc::RoutingParams>(p.get()).ok())
                .and_then(|p| p.progress_token.map(|t| t.get().to_string()));
            if let Some(token) = token {
                let sink = {
                    let routes = self.routes.lock().expect("routes lock");
                    routes
                        .pending
                        .values()
                        .rev()
                        .find(|p| {
                            p.streaming && p.progress_token.as_deref() == Some(token.as_str())
                        })
                        .map(|p| p.sink.clone())
                };
                if let Some(sink) = sink {
                    let _ = sink.send(Item::Related(line)).await;
                    return;
                }
            }
        }
        self.deliver_unsolicited(line).await;
    }

    /// A server-initiated message: to the newest request the agent reads a stream for (it is
    /// most likely the one that caused it), else the session's GET stream, else the backlog.
    async fn deliver_unsolicited(&self, msg: Bytes) {
        enum To {
            Request(mpsc::Sender<Item>),
            Stream(mpsc::Sender<Event>),
        }
        let to = {
            let mut routes = self.routes.lock().expect("routes lock");
            if let Some(p) = routes.pending.values().rev().find(|p| p.streaming) {
                To::Request(p.sink.clone())
            } else if let Some(s) = routes.stream.clone() {
                To::Stream(s)
            } else {
                if routes.backlog.len() == BACKLOG_LIMIT {
                    routes.backlog.pop_front();
                    tracing::warn!(server = %self.server, "backlog full; dropped the oldest server message");
                }
                routes.backlog.push_back(msg);
                return;
            }
        };
        match to {
            To::Request(sink) => {
                if let Err(mpsc::error::SendError(Item::Related(msg))) =
                    sink.send(Item::Related(msg)).await
                {
                    // The request ended meanwhile; try again with what is left.
                    Box::pin(self.deliver_unsolicited(msg)).await;
                }
            }
            To::Stream(stream) => {
                if let Err(mpsc::error::SendError(event)) = stream.send(Event::message(msg)).await {
                    let mut routes = self.routes.lock().expect("routes lock");
                    routes.stream = None;
                    routes.backlog.push_back(event.data);
                }
            }
        }
    }

    /// Ends every waiting request with a JSON-RPC error (the child is gone).
    fn fail_all(&self, why: &str) {
        self.alive.store(false, Ordering::Release);
        let pending = std::mem::take(&mut self.routes.lock().expect("routes lock").pending);
        for (_, p) in pending {
            let msg = jsonrpc::error_response(Some(&p.original_id), jsonrpc::INTERNAL_ERROR, why);
            let _ = p.sink.try_send(Item::Final(msg));
        }
        self.routes.lock().expect("routes lock").stream = None;
    }

    async fn write(&self, msg: Bytes) -> Result<(), ()> {
        let stdin = self.stdin.lock().expect("stdin lock").clone().ok_or(())?;
        stdin.send(one_line(msg)).await.map_err(|_| ())
    }

    /// Sends a request and returns its reply: JSON when the response came first, else a
    /// stream of the related messages ending with the response.
    pub async fn request(self: &Arc<Self>, out: &Outbound<'_>) -> Reply {
        let original_id = out.id.unwrap_or("null");
        if !self.is_alive() {
            return internal_error(original_id, "upstream server exited");
        }
        // The agent's id is a slice of its message, so its place is known without parsing it
        // again; the gateway's own requests name ids of their own, found by parsing.
        let id_range = out
            .id
            .and_then(|id| jsonrpc::span_in(out.body, id))
            .or_else(|| {
                Envelope::parse(out.body)
                    .ok()
                    .and_then(|e| e.id.and_then(|id| jsonrpc::span_in(out.body, id.get())))
            });
        let Some(id_range) = id_range else {
            return internal_error(original_id, "request without an id");
        };
        let (tx, rx) = mpsc::channel(64);
        let ours = {
            let mut routes = self.routes.lock().expect("routes lock");
            let ours = routes.next_id;
            routes.next_id += 1;
            routes.pending.insert(
                ours,
                Pending {
                    original_id: original_id.into(),
                    progress_token: out.progress_token.clone(),
                    streaming: out.accepts_sse,
                    sink: tx,
                },
            );
            ours
        };
        let guard = PendingGuard {
            child: self.clone(),
            id: ours,
        };
        let msg = jsonrpc::splice(out.body, id_range, ours.to_string().as_bytes());
        if self.write(msg).await.is_err() {
            return internal_error(original_id, "upstream server exited");
        }
        self.reply(rx, guard, original_id).await
    }

    /// Waits for the first item of a request's answer and shapes the reply around it.
    async fn reply(
        self: &Arc<Self>,
        mut rx: mpsc::Receiver<Item>,
        guard: PendingGuard,
        original_id: &str,
    ) -> Reply {
        let timeout = self.request_timeout;
        let first = match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => return internal_error(original_id, "upstream server exited"),
            Err(_) => return timed_out(original_id),
        };
        match first {
            Item::Final(body) => Reply::Json {
                status: http::StatusCode::OK,
                body,
            },
            Item::Related(msg) => {
                let original_id: Box<str> = original_id.into();
                let rest = futures_util::stream::unfold(
                    (Some(rx), guard, original_id),
                    move |(rx, guard, original_id)| async move {
                        let mut rx = rx?;
                        match tokio::time::timeout(timeout, rx.recv()).await {
                            Ok(Some(Item::Related(m))) => {
                                Some((Event::message(m), (Some(rx), guard, original_id)))
                            }
                            Ok(Some(Item::Final(m))) => {
                                Some((Event::message(m), (None, guard, original_id)))
                            }
                            Ok(None) => {
                                let m = jsonrpc::error_response(
                                    Some(&original_id),
                                    jsonrpc::INTERNAL_ERROR,
                                    "upstream server exited",
                                );
                                Some((Event::message(m), (None, guard, original_id)))
                            }
                            Err(_) => {
                                let m = jsonrpc::error_response(
                                    Some(&original_id),
                                    jsonrpc::REQUEST_TIMEOUT,
                                    "upstream server did not answer in time",
                                );
                                Some((Event::message(m), (None, guard, original_id)))
                            }
                        }
                    },
                );
                Reply::Stream(
                    futures_util::stream::iter([Event::message(msg)])
                        .chain(rest)
                        .boxed(),
                )
            }
        }
    }

    /// Sends a notification, or the agent's answer to a server request. Cancellations name the
    /// agent's request id, which the child knows under the gateway's id: rewrite it.
    pub async fn notify(&self, out: &Outbound<'_>) -> Reply {
        let mut msg = out.body.clone();
        if out.method == "notifications/cancelled"
            && let Some(rewritten) = self.rewrite_cancelled(out.body)
        {
            msg = rewritten;
        }
        if self.write(msg).await.is_err() {
            return Reply::Status {
                status: http::StatusCode::BAD_GATEWAY,
                content_type: None,
                body: Bytes::from_static(b"upstream server exited"),
            };
        }
        Reply::Accepted
    }

    fn rewrite_cancelled(&self, body: &Bytes) -> Option<Bytes> {
        let env = Envelope::parse(body).ok()?;
        let params = env.params?;
        let p: jsonrpc::RoutingParams = serde_json::from_str(params.get()).ok()?;
        let request_id = p.request_id?;
        let ours = {
            let routes = self.routes.lock().expect("routes lock");
            routes
                .pending
                .iter()
                .find(|(_, p)| *p.original_id == *request_id.get())
                .map(|(id, _)| *id)?
        };
        let range = jsonrpc::span_in(body, request_id.get())?;
        Some(jsonrpc::splice(body, range, ours.to_string().as_bytes()))
    }

    /// Opens the session's stream of server-initiated messages (the agent's GET), first
    /// delivering what waited in the backlog. A newer stream replaces an older one.
    pub fn open_stream(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(BACKLOG_LIMIT + 16);
        let mut routes = self.routes.lock().expect("routes lock");
        while let Some(msg) = routes.backlog.pop_front() {
            let _ = tx.try_send(Event::message(msg));
        }
        routes.stream = Some(tx);
        rx
    }

    /// Sends a request of the gateway's own (the `initialize` replayed after a restart) and
    /// waits for its response.
    async fn own_request(
        self: &Arc<Self>,
        message: &Bytes,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let out = Outbound {
            body: message,
            kind: Kind::Request,
            method: "initialize",
            id: Some("\"toolgate-replay\""),
            progress_token: None,
            accepts_sse: false,
            protocol_version: None,
            mcp_method: None,
            mcp_name: None,
        };
        let reply = tokio::time::timeout(timeout, self.request(&out))
            .await
            .map_err(|_| "no answer to the replayed initialize".to_string())?;
        match reply {
            Reply::Json { body, .. } => Ok(body),
            _ => Err("unexpected answer to the replayed initialize".into()),
        }
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        if let Ok(mut stdin) = self.child.stdin.lock() {
            stdin.take();
        }
    }
}

/// Removes a request's route when its answer is no longer awaited (done, timed out, or the
/// agent went away): a late response is then dropped instead of piling up.
struct PendingGuard {
    child: Arc<Child>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.child.routes.lock() {
            routes.pending.remove(&self.id);
        }
    }
}

/// The request was delivered but not answered in time: the upstream may still carry it out.
fn timed_out(id: &str) -> Reply {
    Reply::Json {
        status: http::StatusCode::OK,
        body: jsonrpc::error_response(
            Some(id),
            jsonrpc::REQUEST_TIMEOUT,
            "upstream server did not answer in time",
        ),
    }
}

fn internal_error(id: &str, message: &str) -> Reply {
    Reply::Json {
        status: http::StatusCode::OK,
        body: jsonrpc::error_response(Some(id), jsonrpc::INTERNAL_ERROR, message),
    }
}

/// A message as one stdio line. Raw CR/LF bytes in valid JSON can only be whitespace
/// (inside strings they must be escaped), so replacing them with spaces keeps the meaning.
fn one_line(msg: Bytes) -> Bytes {
    if !msg.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return msg;
    }
    Bytes::from(
        msg.iter()
            .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b })
            .collect::<Vec<u8>>(),
    )
}

/// The upstream side of one agent session on a stdio server: its child, restarted when it
/// dies, with the session's `initialize` replayed so the agent need not notice.
pub struct StdioSession {
    server: Arc<StdioServer>,
    child: tokio::sync::Mutex<ChildSlot>,
}

struct ChildSlot {
    handle: ChildHandle,
    /// The agent's initialize request and whether it sent `notifications/initialized`, replayed
    /// into a restarted child.
    initialize: Option<Bytes>,
    initialized: Option<Bytes>,
    last_start: std::time::Instant,
}

impl StdioSession {
    /// Starts a child for a new session and sends it the agent's `initialize`.
    pub async fn start(
        server: Arc<StdioServer>,
        out: &Outbound<'_>,
    ) -> (Option<StdioSession>, Reply) {
        let handle = match server.spawn() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(server = %server.name, "cannot start stdio server {:?}: {e}", server.command);
                return (
                    None,
                    internal_error(
                        out.id.unwrap_or("null"),
                        "upstream server could not be started",
                    ),
                );
            }
        };
        let reply = handle.child.request(out).await;
        let ok = matches!(&reply, Reply::Json { body, .. } if jsonrpc::is_result(body))
            || matches!(&reply, Reply::Stream(_));
        if !ok {
            return (None, reply);
        }
        let session = StdioSession {
            server,
            child: tokio::sync::Mutex::new(ChildSlot {
                handle,
                initialize: Some(out.body.clone()),
                initialized: None,
                last_start: std::time::Instant::now(),
            }),
        };
        (Some(session), reply)
    }

    /// A session for stateless (2026-07-28) requests: a child that is never initialized.
    pub fn stateless(server: Arc<StdioServer>) -> std::io::Result<StdioSession> {
        let handle = server.spawn()?;
        Ok(StdioSession {
            server,
            child: tokio::sync::Mutex::new(ChildSlot {
                handle,
                initialize: None,
                initialized: None,
                last_start: std::time::Instant::now(),
            }),
        })
    }

    /// The live child, restarting a dead one (and replaying the session's handshake).
    async fn live_child(&self) -> Result<Arc<Child>, String> {
        let mut slot = self.child.lock().await;
        if slot.handle.child.is_alive() {
            return Ok(slot.handle.child.clone());
        }
        if self.server.local {
            return Err("upstream server exited".into());
        }
        let since = slot.last_start.elapsed();
        if since < RESTART_BACKOFF {
            tokio::time::sleep(RESTART_BACKOFF - since).await;
        }
        tracing::warn!(server = %self.server.name, "stdio server died; restarting it");
        crate::telemetry::child_restart(&self.server.name);
        slot.last_start = std::time::Instant::now();
        let handle = self.server.spawn().map_err(|e| {
            tracing::error!(server = %self.server.name, "cannot restart stdio server: {e}");
            "upstream server could not be restarted".to_string()
        })?;
        if let Some(init) = &slot.initialize {
            let answer = handle
                .child
                .own_request(init, Duration::from_secs(30))
                .await?;
            if !jsonrpc::is_result(&answer) {
                return Err("restarted upstream server refused initialize".into());
            }
            if let Some(initialized) = &slot.initialized {
                handle
                    .child
                    .write(initialized.clone())
                    .await
                    .map_err(|_| "upstream server exited".to_string())?;
            }
        }
        let child = handle.child.clone();
        slot.handle = handle;
        Ok(child)
    }

    pub async fn send(&self, out: &Outbound<'_>) -> Reply {
        let child = match self.live_child().await {
            Ok(c) => c,
            Err(why) => {
                return match out.kind {
                    Kind::Request => internal_error(out.id.unwrap_or("null"), &why),
                    _ => Reply::Status {
                        status: http::StatusCode::BAD_GATEWAY,
                        content_type: None,
                        body: Bytes::from(why),
                    },
                };
            }
        };
        match out.kind {
            Kind::Request => child.request(out).await,
            Kind::Notification => {
                if out.method == "notifications/initialized" {
                    self.child.lock().await.initialized = Some(out.body.clone());
                }
                child.notify(out).await
            }
            Kind::Response => child.notify(out).await,
        }
    }

    /// Watches the current child's exit code.
    pub async fn exit_watch(&self) -> tokio::sync::watch::Receiver<Option<i32>> {
        self.child.lock().await.handle.child.exited.subscribe()
    }

    /// Passes a signal to the current child's process group.
    pub async fn signal(&self, signal: i32) {
        signal_group(self.child.lock().await.handle.child.pid, signal);
    }

    pub async fn open_stream(&self) -> Result<mpsc::Receiver<Event>, String> {
        Ok(self.live_child().await?.open_stream())
    }
}
