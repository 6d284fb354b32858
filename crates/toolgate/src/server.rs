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
pub async fn serve(gw: Arc<Gateway>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let reaper = tokio::spawn(reap_idle_sessions(gw.clone()));
    gw.start_background();
    let shutdown = gw.shutdown.clone();
    let grace = gw.config.shutdown_grace;
    use axum::serve::ListenerExt;
    // A proxy answers with small writes: never let Nagle's algorithm hold one back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router(gw.clone())).with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing calls in flight");
        // Long-lived streams would otherwise hold the drain open forever.
        shutdown.cancel();
    });
    let drained = async {
        gw.shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        _ = drained => tracing::warn!("shutdown grace of {grace:?} over; ending remaining calls"),
    }
    reaper.abort();
    let sessions = gw.sessions.drain();
    let count = sessions.len();
    futures_util::future::join_all(sessions.iter().map(|s| s.close())).await;
    drop(sessions);
    gw.stateless_stdio.clear();
    gw.save_state();
    // Children get their stdin closed and a moment to exit before the runtime ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tracing::info!(sessions = count, "stopped");
    Ok(())
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
