//! toolgate: an MCP policy gateway. Agents call tools through it; every `tools/call` is decided
//! before it reaches the server.
//!
//! # Layout
//! - `admin`: operator actions (grants, policy versions), the admin API and its client.
//! - `audit`: the audit trail: records, redaction, the batched journal.
//! - `answers`: what the gateway says itself: denials, unknown tools, filtered tool lists.
//! - `config`: the TOML file, `${ENV}` expansion, its errors.
//! - `counters`: limits counted per grant, session or server (embedded store or Redis).
//! - `grants`: grant tokens and the door (401/403).
//! - `jsonrpc`: envelope parsing (borrowed, duplicate keys refused), error shapes.
//! - `media`: media types in `Content-Type` and `Accept`, compared without allocating.
//! - `pipeline`: the request path of SPEC 3, one named step per function.
//! - `policies`: policy files, compiled once per version, watched and swapped atomically.
//! - `session`: the session table, grant binding, idle expiry.
//! - `telemetry`: Prometheus metrics.
//! - `logging`: the request span's fields, formatted once for the log.
//! - `state`: the state store (grants, policy versions): SQLite under `state_dir`.
//! - `downstream`: the agent-facing transports (`http`: Streamable HTTP; `rebinding`: Host/Origin).
//! - `upstream`: the server-facing transports (`stdio` children, `http` Streamable HTTP, its
//!   plain-HTTP connections in `http1`).
//! - `gateway`: the shared state the request path reads.
//! - `server`: routes, accept loop and the thread per core, shutdown.
//!
//! The policy engine lives in its own crate, `toolgate-policy`, pure and free of I/O.

// The admin API's OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod admin;
pub mod answers;
pub mod audit;
pub mod busy_poll;
pub mod config;
pub mod counters;
pub mod downstream;
pub mod gateway;
pub mod gather;
pub mod grants;
pub mod jsonrpc;
pub mod logging;
pub mod media;
pub mod pipeline;
pub mod policies;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod upstream;

/// A sharded map read on the request path (sessions, counters, metric handles, stateless stdio
/// children). Hashed with foldhash instead of std's SipHash, which cost about 1,000
/// instructions a call more over its lookups. The keys are ids the gateway made, names from
/// its configuration, and tool names the policy or the upstream listed (the call metrics):
/// never a set an agent can grow. foldhash is still seeded afresh in every process.
pub type HotMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
