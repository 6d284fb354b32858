//! Metrics (SPEC 7), in Prometheus text format at `GET /metrics`: calls by server, tool and
//! outcome; decision and upstream latency histograms; open sessions; upstream child restarts;
//! counter store errors; audit queue depth; refused requests by status.
//!
//! Label values come only from the configuration and the policy, never straight from an
//! agent: a tool name the policy does not name and the upstream never answered for is
//! counted as `(other)`, so an agent cannot grow the label set (or plant text in it).

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

pub fn call(server: &str, tool: &str, outcome: &str) {
    metrics::counter!(CALLS, "server" => server.to_string(), "tool" => tool.to_string(), "outcome" => outcome.to_string())
        .increment(1);
}

pub fn refused(status: u16) {
    metrics::counter!(REFUSED, "status" => status.to_string()).increment(1);
}

pub fn decision(server: &str, seconds: f64) {
    metrics::histogram!(DECISION_SECONDS, "server" => server.to_string()).record(seconds);
}

pub fn upstream(server: &str, seconds: f64) {
    metrics::histogram!(UPSTREAM_SECONDS, "server" => server.to_string()).record(seconds);
}

pub fn child_restart(server: &str) {
    metrics::counter!(CHILD_RESTARTS, "server" => server.to_string()).increment(1);
}

pub fn counter_store_error() {
    metrics::counter!(COUNTER_STORE_ERRORS).increment(1);
}

/// The text exposition, with the gauges read at scrape time.
pub fn render(handle: &PrometheusHandle, open_sessions: usize, audit_queue: usize) -> String {
    metrics::gauge!(OPEN_SESSIONS).set(open_sessions as f64);
    metrics::gauge!(AUDIT_QUEUE).set(audit_queue as f64);
    handle.render()
}
