//! Metrics (SPEC 7), in Prometheus text format at `GET /metrics`: calls by server, tool and
//! outcome; decision and upstream latency histograms; open sessions; upstream child restarts;
//! counter store errors; audit queue depth; refused requests by status.
//!
//! Label values come only from the configuration and the policy, never straight from an
//! agent: a tool name the policy does not name and the upstream never answered for is
//! counted as `(other)`, so an agent cannot grow the label set (or plant text in it).

use std::sync::{Arc, LazyLock};

use crate::HotMap;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CALLS: &str = "toolgate_calls_total";
pub const REFUSED: &str = "toolgate_refused_requests_total";
pub const DECISION_SECONDS: &str = "toolgate_decision_seconds";
pub const UPSTREAM_SECONDS: &str = "toolgate_upstream_seconds";
pub const OPEN_SESSIONS: &str = "toolgate_open_sessions";
pub const CHILD_RESTARTS: &str = "toolgate_upstream_child_restarts_total";
pub const COUNTER_STORE_ERRORS: &str = "toolgate_counter_store_errors_total";
pub const AUDIT_QUEUE: &str = "toolgate_audit_queue_depth";

/// Installs the process-wide recorder (once; later calls get the same handle).
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): then these metrics go there.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The handles of one server's per-call metrics, looked up once. Looking a handle up builds
/// and hashes a key with its labels, which cost more per call than recording does.
pub struct ServerMetrics {
    server: Arc<str>,
    pub decision: Histogram,
    pub upstream: Histogram,
    /// `toolgate_calls_total` by tool (a vouched-for name or `(other)`), then by outcome.
    calls: HotMap<Box<str>, Vec<(&'static str, Counter)>>,
}

impl ServerMetrics {
    pub fn call(&self, tool: &str, outcome: &'static str) {
        if let Some(by_outcome) = self.calls.get(tool)
            && let Some((_, c)) = by_outcome.iter().find(|(o, _)| *o == outcome)
        {
            c.increment(1);
            return;
        }
        let counter = metrics::counter!(CALLS, "server" => self.server.to_string(), "tool" => tool.to_string(), "outcome" => outcome);
        counter.increment(1);
        self.calls
            .entry(tool.into())
            .or_default()
            .push((outcome, counter));
    }
}

/// A server's metric handles. Only configured servers get here (a request is admitted to
/// one before anything of it is counted), so the set stays as small as the configuration.
pub fn server(name: &str) -> Arc<ServerMetrics> {
    static SERVERS: LazyLock<HotMap<Box<str>, Arc<ServerMetrics>>> = LazyLock::new(HotMap::default);
    if let Some(m) = SERVERS.get(name) {
        return m.clone();
    }
    SERVERS
        .entry(name.into())
        .or_insert_with(|| {
            Arc::new(ServerMetrics {
                server: name.into(),
                decision: metrics::histogram!(DECISION_SECONDS, "server" => name.to_string()),
                upstream: metrics::histogram!(UPSTREAM_SECONDS, "server" => name.to_string()),
                calls: HotMap::default(),
            })
        })
        .clone()
}

pub fn refused(status: u16) {
    metrics::counter!(REFUSED, "status" => status.to_string()).increment(1);
}

pub fn child_restart(server: &str) {
    metrics::counter!(CHILD_RESTARTS, "server" => server.to_string()).increment(1);
}

pub fn counter_store_error() {
    metrics::counter!(COUNTER_STORE_ERRORS).increment(1);
}

/// Folds the histograms' recorded samples into their buckets. The exporter keeps every
/// sample until this runs, so without it memory grows with each call between scrapes.
pub async fn upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.cancelled() => break,
        }
    }
}

/// The text exposition, with the gauges read at scrape time.
pub fn render(handle: &PrometheusHandle, open_sessions: usize, audit_queue: usize) -> String {
    metrics::gauge!(OPEN_SESSIONS).set(open_sessions as f64);
    metrics::gauge!(AUDIT_QUEUE).set(audit_queue as f64);
    handle.render()
}
