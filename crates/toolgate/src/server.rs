//! The HTTP server: routes, the accept loop, the idle-session reaper, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::state::StateStore;
use axum::routing::get;

use crate::downstream::http as mcp;
use crate::gateway::Gateway;

/// How often idle sessions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// The gateway's routes. No layer (middleware) may go here: `POST /mcp/{server}` does not
/// pass through this router when served (`Routes`).
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/mcp/{server}",
            get(mcp::get).post(mcp::post).delete(mcp::delete),
        )
        .route(
            "/mcp/{server}/",
            get(mcp::get).post(mcp::post).delete(mcp::delete),
        )
        .with_state(gw.clone())
        .nest(crate::admin::api::PREFIX, crate::admin::api::router(gw))
}

/// Serves until SIGTERM/SIGINT, then drains: no new connections, calls in flight get
/// `shutdown_grace` to finish, streams end, and every upstream session is closed.
///
/// Thread per core: the calling thread and `threads - 1` more each run a single-threaded
/// runtime. Connections are accepted here and handed to the threads in turn, and a connection
/// and every call on it stay on its thread, with the upstream connections and stdio children
/// that thread opened. On this path a work-stealing runtime spent more on waking its idle
/// workers than on the call (README, performance). What a thread's calls write during one
/// turn of its scheduler leaves together at the end of the turn (`gather`). Shared state
/// (sessions, counters, policies, audit) is the same `Gateway` on every thread. Must be called
/// on a current-thread runtime.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    threads: usize,
) -> std::io::Result<()> {
    let reaper = tokio::spawn(reap_idle_sessions(gw.clone()));
    gw.start_background();
    let shutdown = gw.shutdown.clone();
    let grace = gw.config.shutdown_grace;
    let local = listener.local_addr()?;
    // Each worker's runtime stays up after its connections are drained, until every session
    // is closed: its upstream connections and child processes live there.
    let stopped = tokio_util::sync::CancellationToken::new();
    let (own, own_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut queues = vec![own];
    let mut workers = Vec::new();
    for n in 1..threads.max(1) {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
        queues.push(queue);
        let listener = Handed { queue: rx, local };
        workers.push(spawn_worker(n, gw.clone(), listener, stopped.clone())?);
    }
    tokio::spawn(hand_out(
        listener,
        queues,
        gw.shutdown.clone().cancelled_owned(),
    ));
    let mine = Handed {
        queue: own_rx,
        local,
    };
    let own = serve_connections(mine, gw.clone(), async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing calls in flight");
        // Long-lived streams would otherwise hold the drain open forever.
        shutdown.cancel();
    });
    let served = async {
        own.await;
        for worker in &mut workers {
            let _ = (&mut worker.drained).await;
        }
    };
    let drained = async {
        gw.shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = served => {}
        _ = drained => tracing::warn!("shutdown grace of {grace:?} over; ending remaining calls"),
    }
    reaper.abort();
    let sessions = gw.sessions.drain();
    let count = sessions.len();
    futures_util::future::join_all(sessions.iter().map(|s| s.close())).await;
    drop(sessions);
    gw.stateless_stdio.clear();
    gw.save_state();
    // Children get their stdin closed and a moment to exit before the runtimes end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stopped.cancel();
    // Each runtime ends its tasks as its thread returns (children it spawned are killed then):
    // wait for that, within reason, before the process exits.
    // (Joined from a thread of its own: a blocking task would hold up this runtime's end.)
    let threads: Vec<_> = workers.into_iter().map(|w| w.thread).collect();
    let (joined, all_joined) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        for t in threads {
            let _ = t.join();
        }
        let _ = joined.send(());
    });
    if tokio::time::timeout(Duration::from_secs(5), all_joined)
        .await
        .is_err()
    {
        tracing::warn!("a serving thread did not stop within 5 s");
    }
    tracing::info!(sessions = count, "stopped");
    Ok(())
}

/// A connection on its way to the thread that serves it, with the peer's address.
pub type Accepted = (std::net::TcpStream, std::net::SocketAddr);

/// Accepts connections and hands them to the threads in turn, until `shutdown`. (Public for
/// the benchmarks' `bare-proxy`, which serves on this model as its floor.)
pub async fn hand_out(
    listener: tokio::net::TcpListener,
    queues: Vec<tokio::sync::mpsc::UnboundedSender<Accepted>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            // One client's failed handshake: go on at once (as axum does).
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin (as axum does).
                tracing::error!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A proxy answers with small writes: never let Nagle's algorithm hold one back.
        let _ = stream.set_nodelay(true);
        let mut connection = match stream.into_std() {
            Ok(s) => (s, peer),
            Err(e) => {
                tracing::warn!("taking a connection off the runtime: {e}");
                continue;
            }
        };
        // A thread whose runtime has ended (it panicked) is passed over, said once per
        // connection it would have had.
        for _ in 0..queues.len() {
            let queue = &queues[next];
            next = (next + 1) % queues.len();
            match queue.send(connection) {
                Ok(()) => break,
                Err(returned) => {
                    tracing::error!("a serving thread has stopped; its share goes to the others");
                    connection = returned.0;
                }
            }
        }
    }
}

/// Errors of one connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// One thread's share of the connections, as axum's listener. (Public for the benchmarks'
/// `bare-proxy`, as `hand_out` is.)
pub struct Handed {
    queue: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    /// The listening socket's address.
    local: std::net::SocketAddr,
}

impl Handed {
    /// The connections `hand_out` sends to `queue`, from the listener at `local`.
    pub fn new(
        queue: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
        local: std::net::SocketAddr,
    ) -> Handed {
        Handed { queue, local }
    }
}

impl axum::serve::Listener for Handed {
    type Io = crate::gather::Gathered;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Closed only at shutdown, when axum no longer accepts.
            let Some((stream, peer)) = self.queue.recv().await else {
                return std::future::pending().await;
            };
            // Registered with this thread's runtime, so its I/O is driven here.
            match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => return (crate::gather::Gathered::new(s), peer),
                Err(e) => tracing::error!("taking a connection: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves the gateway's routes on the connections handed to this thread until `signal`.
async fn serve_connections(
    listener: Handed,
    gw: Arc<Gateway>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let request_timeout = gw.config.request_timeout;
    // A task of its own, so that each turn of a polling window polls only it.
    let _polling = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::busy_poll::run(
        gw.config.busy_poll,
    )));
    // Writes of this thread's connections (agents' and upstreams') leave at the end of each
    // turn of its scheduler (`gather`): on a busy gateway, fewer wake-ups of the peers.
    let _gathering = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::gather::run()));
    let routes = Routes {
        router: router(gw.clone()),
        gw,
    };
    let routes = axum::ServiceExt::<axum::extract::Request>::into_make_service(routes);
    let serving = axum::serve(listener, routes).with_graceful_shutdown(signal);
    tokio::select! {
        // Cannot fail: `Handed::accept` never returns an error.
        _ = serving => {}
        () = keep_timer_wheel_armed(request_timeout) => {}
    }
}

/// The router, with `POST /mcp/{server}` (every tools/call) sent straight to its handler:
/// the router's matching, extractors and service layers cost about 3,200 instructions per
/// call (`bench/scripts/instructions.sh`: 88,608 with them, 85,366 without). A path that the
/// shortcut might read differently from the router (one with a percent-escape) goes to the
/// router.
#[derive(Clone)]
struct Routes {
    gw: Arc<Gateway>,
    router: Router,
}

/// The server name in a `/mcp/{server}` or `/mcp/{server}/` path with no percent-escape.
fn mcp_post_server(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/mcp/")?;
    let server = rest.strip_suffix('/').unwrap_or(rest);
    (!server.is_empty() && !server.contains(['/', '%'])).then_some(server)
}

impl tower_service::Service<axum::extract::Request> for Routes {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>,
        <Router as tower_service::Service<axum::extract::Request>>::Future,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        if request.method() == axum::http::Method::POST
            && let Some(server) = mcp_post_server(request.uri().path())
        {
            let server = server.to_string();
            let gw = self.gw.clone();
            return futures_util::future::Either::Left(Box::pin(async move {
                Ok(mcp::post_to(gw, server, request).await)
            }));
        }
        futures_util::future::Either::Right(tower_service::Service::call(&mut self.router, request))
    }
}

/// A thread with its own single-threaded runtime serving the connections handed to it.
fn spawn_worker(
    n: usize,
    gw: Arc<Gateway>,
    listener: Handed,
    stopped: tokio_util::sync::CancellationToken,
) -> std::io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, drained) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("toolgate-{n}"))
        .spawn(move || {
            runtime.block_on(async move {
                let shutdown = gw.shutdown.clone();
                let serving = async move {
                    serve_connections(listener, gw, shutdown.cancelled_owned()).await;
                    let _ = done.send(());
                    std::future::pending::<()>().await
                };
                // Past the grace, `stopped` ends calls still in flight here too.
                tokio::select! {
                    () = serving => {}
                    () = stopped.cancelled() => {}
                }
            })
        })?;
    Ok(Worker { thread, drained })
}

/// Keeps a deadline no further away than `request_timeout` in the timer wheel of the runtime
/// it runs on, while that runtime serves connections (`serve_connections`); never returns.
/// Registering a timer that comes before the wheel's next deadline makes tokio wake its own
/// I/O driver, even from the runtime's thread while it is busy
/// (tokio-rs/tokio#5207): an eventfd write and one more epoll round. On a serving thread with
/// nothing else timed, that was every call's request timeout (`bench/scripts/syscalls.sh`:
/// one `write` per call more than `bare-proxy`). With this tick in the wheel, a call's timeout
/// (now + `request_timeout`) never comes before it; the driver is still woken about once per
/// tick, when the tick re-arms, and an idle thread wakes once per `request_timeout`.
async fn keep_timer_wheel_armed(request_timeout: Duration) {
    let mut tick = tokio::time::interval(request_timeout);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// A serving thread other than the caller's.
struct Worker {
    thread: std::thread::JoinHandle<()>,
    /// Completes once its connections are drained after shutdown.
    drained: tokio::sync::oneshot::Receiver<()>,
}

async fn metrics(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // The same Host check as everywhere: tool and server names are not for rebinding pages.
    if !headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| gw.hosts.host_allowed(h))
    {
        return (http::StatusCode::FORBIDDEN, "Host not allowed\n").into_response();
    }
    let text = crate::telemetry::render(&gw.metrics, gw.sessions.len(), gw.audit.queue_depth());
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// Ready when the state store answers, the counter store answers (Redis), and every server
/// marked `required` accepts a connection.
async fn readyz(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut checks = serde_json::Map::new();
    let g = gw.clone();
    let store =
        tokio::task::spawn_blocking(move || g.state.data_version().map(|_| ()).map_err(|e| e.0))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    checks.insert("state_store".into(), check(store));
    checks.insert("counter_store".into(), check(gw.counters_ready().await));
    for name in &gw.config.required_servers {
        checks.insert(
            format!("server:{name}"),
            check(gw.upstream_ready(name).await),
        );
    }
    let ready = checks.values().all(|v| v == "ok");
    let status = if ready {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({"ready": ready, "checks": checks})),
    )
        .into_response()
}

fn check(r: Result<(), String>) -> serde_json::Value {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.into(),
    }
}

async fn reap_idle_sessions(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        for session in gw.sessions.take_idle(gw.config.session_idle_timeout) {
            tracing::info!(session = %session.id, grant = %session.grant.label, "ending idle session");
            session.close().await;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::mcp_post_server;

    #[test]
    fn the_post_shortcut_takes_only_plain_mcp_server_paths() {
        assert_eq!(mcp_post_server("/mcp/github"), Some("github"));
        assert_eq!(mcp_post_server("/mcp/github/"), Some("github"));
        assert_eq!(mcp_post_server("/mcp/a.b-c_d"), Some("a.b-c_d"));
        // The router's business: escapes it decodes, paths it does not match.
        for path in [
            "/mcp/git%68ub",
            "/mcp/",
            "/mcp//",
            "/mcp/github/x",
            "/mcp/github//",
            "/mcp",
            "/MCP/github",
            "/admin/v1/mcp/github",
            "//mcp/github",
        ] {
            assert_eq!(mcp_post_server(path), None, "{path}");
        }
    }
}
