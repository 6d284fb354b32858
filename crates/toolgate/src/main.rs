//! The `toolgate` command line: parses, calls into the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod operator;

// jemalloc rather than glibc's malloc: a tools/call makes about 80 small allocations across
// hyper, axum, serde and the pipeline, and glibc's arenas (free-list consolidation included)
// were about 15% of the gateway's instructions per call. jemalloc also keeps the per-session
// memory lower; mimalloc was faster still but held 30 MiB at idle (README, performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's per-thread caches, sized for a serving thread with many calls in flight. By
// default a cache holds 20 to 200 objects of a size class and is trimmed every 64 KiB
// allocated; with tens of calls in flight on a thread, the calls' futures, buffers and header
// maps outnumbered that, so frees overflowed into the arena and the next calls refilled from
// it: about 7,300 of a call's 66,800 instructions at 64 sessions went to malloc and free
// (callgrind, `SESSIONS=64 bench/scripts/instructions.sh`, allow-all), 2,000 with at least
// 128 objects cached and a trim every 16 MiB (each alone did part of it). A cache holds only
// what its thread freed, at most 200 objects of a small size class: about 300 KiB more
// after a 64-session load, and the idle and per-session memory did not move (README,
// Performance). `_RJEM_MALLOC_CONF` in the environment still overrides this (read last).
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 58] = b"tcache_nslots_small_min:128,tcache_gc_incr_bytes:16777216\0";

use clap::{Parser, Subcommand, ValueEnum};
use toolgate::config::{Config, Credential, ProcessEnv};
use toolgate::downstream::stdio::{LocalOptions, LocalUpstream};
use toolgate::gateway::Gateway;

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "An MCP policy gateway: every tools/call decided before it reaches the server."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TOOLGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file; without one, the embedded defaults (127.0.0.1:8080, ./.toolgate).
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding the config file's.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a config file and exit (0 when it loads).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Policy documents.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Grants: tokens for agents, one server each.
    Grant {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// The audit trail: one record per tools/call and per refused request.
    Audit {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Local mode: a stdio MCP server for a local client, with the policy in front of the
    /// server it wraps (`-- COMMAND ARGS...`) or of a remote one (`--upstream URL`).
    Run {
        /// The policy to enforce.
        #[arg(long)]
        policy: PathBuf,
        /// State directory (counters, approvals, audit: later versions).
        #[arg(long)]
        state: Option<PathBuf>,
        /// A Streamable HTTP server to front instead of a command.
        #[arg(long, conflicts_with = "command")]
        upstream: Option<String>,
        /// A header for the upstream, `"Name: value"` (repeatable).
        #[arg(long = "header", requires = "upstream")]
        headers: Vec<String>,
        /// The stdio server to start, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

/// Where operator commands act: a running gateway (`--url`), else the state directory.
#[derive(clap::Args, Clone)]
struct Target {
    /// A running gateway's base URL (its admin API); without it, the state directory is used.
    #[arg(long, env = "TOOLGATE_URL", global = true)]
    url: Option<String>,
    /// The admin token for `--url`.
    #[arg(
        long,
        env = "TOOLGATE_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// The config file (its servers, grants and state_dir), for working without `--url`.
    #[arg(long, short, env = "TOOLGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The newest records (and, with --follow, new ones as they come).
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(long, short)]
        follow: bool,
    },
    /// Records matching filters.
    Query {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Every record matching the filters, as JSON lines.
    Export {
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
        #[command(flatten)]
        filter: AuditFilter,
    },
}

#[derive(clap::Args, Clone, Default)]
struct AuditFilter {
    /// A grant id or label.
    #[arg(long)]
    grant: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    /// allow, deny, hidden, unknown, limited, refused, upstream_error.
    #[arg(long)]
    outcome: Option<String>,
    /// RFC 3339 time (inclusive), e.g. 2026-11-26T00:00:00Z.
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time (exclusive).
    #[arg(long)]
    until: Option<String>,
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Issue a grant; its token is printed once.
    Create {
        #[arg(long)]
        server: String,
        #[arg(long)]
        label: String,
        /// The grant's own policy (else its server's applies).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// List grants (never their tokens).
    List,
    /// A new token for a grant; the old one stops working at once.
    Rotate { id: String },
    /// Revoke a grant: its token and open sessions stop working at once.
    Revoke { id: String },
}

/// Whose policy: a server's, or one grant's on it.
#[derive(clap::Args)]
struct PolicyOf {
    #[arg(long)]
    server: String,
    #[arg(long)]
    grant: Option<String>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy: every error with its JSON pointer (exit 1 on errors), then warnings.
    Check {
        file: PathBuf,
        /// Also compare with the tools this configured server lists.
        #[arg(long)]
        server: Option<String>,
        /// The config file that declares `--server`.
        #[arg(long, short, env = "TOOLGATE_CONFIG", default_value = "toolgate.toml")]
        config: PathBuf,
    },
    /// Store a new version of a server's (or one grant's) policy; refused, with every error, if invalid.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        of: PolicyOf,
        #[command(flatten)]
        target: Target,
    },
    /// Print a stored policy version (the newest by default).
    Show {
        #[command(flatten)]
        of: PolicyOf,
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// List the stored versions of a policy.
    Versions {
        #[command(flatten)]
        of: PolicyOf,
        #[command(flatten)]
        target: Target,
    },
    /// Show what changed between two stored versions.
    Diff {
        from: u64,
        to: u64,
        #[command(flatten)]
        of: PolicyOf,
        #[command(flatten)]
        target: Target,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config, &ProcessEnv) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} servers, {} grants)",
                    config.display(),
                    cfg.servers.len(),
                    cfg.grants.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e, 2),
        },
        Command::Serve { config, listen } => {
            let mut cfg = match &config {
                Some(path) => match Config::load(path, &ProcessEnv) {
                    Ok(c) => c,
                    Err(e) => return fail(e, 2),
                },
                None => Config::embedded_defaults(),
            };
            if let Some(addr) = listen {
                cfg.listen = addr;
                if !addr.ip().is_loopback()
                    && cfg
                        .grants
                        .iter()
                        .any(|g| matches!(g.credential, Credential::Anonymous))
                {
                    return fail(
                        format!(
                            "--listen {addr}: anonymous grants are refused unless the gateway listens on loopback only"
                        ),
                        2,
                    );
                }
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
            };
            match runtime.block_on(serve(cfg, matches!(cli.log_format, LogFormat::Json))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e, 1),
            }
        }
        Command::Policy {
            command:
                PolicyCommand::Check {
                    file,
                    server,
                    config,
                },
        } => policy_check(&file, server.as_deref(), &config),
        Command::Policy { command } => operator::policy(command),
        Command::Grant { target, command } => operator::grant(target, command),
        Command::Audit { target, command } => operator::audit(target, command),
        Command::Run {
            policy,
            state,
            upstream,
            headers,
            command,
        } => {
            let upstream = match (upstream, command.split_first()) {
                (Some(url), _) => {
                    let url = match reqwest::Url::parse(&url) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
                        _ => return fail(format!("--upstream {url:?} is not an http(s) URL"), 2),
                    };
                    let mut parsed = Vec::new();
                    for h in &headers {
                        match parse_header(h) {
                            Some(kv) => parsed.push(kv),
                            None => {
                                return fail(format!("--header {h:?} is not \"Name: value\""), 2);
                            }
                        }
                    }
                    LocalUpstream::Url {
                        url,
                        headers: parsed,
                    }
                }
                (None, Some((cmd, args))) => LocalUpstream::Command {
                    command: cmd.clone(),
                    args: args.to_vec(),
                },
                (None, None) => {
                    return fail("give the server to run after `--`, or --upstream URL", 2);
                }
            };
            let opts = LocalOptions {
                policy,
                state_dir: state,
                upstream,
            };
            let rt = runtime();
            let result = rt.block_on(toolgate::downstream::stdio::run(opts));
            // Reading stdin blocks a runtime thread until the client closes it; when the
            // server exits (or a signal ends us) first, do not wait for that read.
            rt.shutdown_background();
            match result {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => fail(e, 1),
            }
        }
    }
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("toolgate: {e}");
    ExitCode::from(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

/// TOOLGATE_WORKER_THREADS, or one per core.
fn worker_threads() -> usize {
    std::env::var("TOOLGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn parse_header(h: &str) -> Option<(http::HeaderName, http::HeaderValue)> {
    let (k, v) = h.split_once(':')?;
    let name = http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?;
    let mut value = http::HeaderValue::from_str(v.trim()).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

fn policy_check(
    file: &std::path::Path,
    server: Option<&str>,
    config: &std::path::Path,
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: cannot read: {e}", file.display()), 2),
    };
    let policy = match toolgate_policy::Policy::parse(&text) {
        Ok(p) => p,
        Err(problems) => {
            for p in &problems {
                println!("error: {p}");
            }
            println!("{}: {} error(s)", file.display(), problems.len());
            return ExitCode::from(1);
        }
    };
    let mut warnings = policy.warnings();
    if let Some(name) = server {
        let mut cfg = match Config::load(config, &ProcessEnv) {
            Ok(c) => c,
            Err(e) => return fail(e, 2),
        };
        if !cfg.servers.iter().any(|s| s.name == name) {
            return fail(format!("{}: no server named {name:?}", config.display()), 2);
        }
        // Only the tool list is asked for: nothing to record, and the journal stays the
        // running gateway's to write.
        cfg.audit.enabled = false;
        let names = runtime().block_on(async {
            let gw = Gateway::new(cfg).map_err(|e| e.to_string())?;
            let upstream = gw.servers.get(name).expect("checked above");
            toolgate::upstream::probe::list_tool_names(upstream).await
        });
        match names {
            Ok(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                warnings.extend(policy.coverage(&names));
            }
            Err(e) => return fail(format!("cannot list the tools of server {name:?}: {e}"), 2),
        }
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    println!("{}: valid ({} warning(s))", file.display(), warnings.len());
    ExitCode::SUCCESS
}

async fn serve(cfg: Config, json_logs: bool) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    for g in &cfg.grants {
        if matches!(g.credential, Credential::Anonymous) {
            tracing::warn!(grant = %g.name, server = %g.server, "ANONYMOUS GRANT: requests without a token to /mcp/{} are accepted as {:?} (loopback only)", g.server, g.name);
        }
    }
    if cfg.servers.is_empty() {
        tracing::warn!("no servers configured: add [servers.NAME] to a config file (see README)");
    }
    for s in &cfg.servers {
        tracing::info!(server = %s.name, "agents reach it at http://{addr}/mcp/{}", s.name);
    }
    let gw = Arc::new(Gateway::new(cfg).map_err(|e| e.to_string())?);
    let from_env = std::env::var("TOOLGATE_ADMIN_TOKEN").ok();
    if let Some(token) = gw.init_admin_token(from_env.as_deref())? {
        // Shown once, on first start; only its hash is kept. Not through the log: logs are
        // collected and kept, this line should not be.
        let message = "admin token (shown once; keep it, or set TOOLGATE_ADMIN_TOKEN)";
        if json_logs {
            // One JSON line like the log's, so that a log pipeline still parses stderr.
            let line = serde_json::json!({"level": "WARN", "target": "toolgate", "fields": {"message": message, "admin_token": token}});
            eprintln!("{line}");
        } else {
            eprintln!("toolgate: {message}: {token}");
        }
    }
    tracing::info!("admin API at http://{addr}{}", toolgate::admin::api::PREFIX);
    // Kept alive for as long as the gateway serves: dropping it stops the watch.
    let _watcher = gw
        .policies
        .watch()
        .map_err(|e| format!("cannot watch policy files: {e}"))?;
    // Tests and scripts wait for this line (and read the port from it when listening on :0).
    tracing::info!("listening on http://{addr}");
    toolgate::server::serve(gw, listener, worker_threads())
        .await
        .map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    use toolgate::logging::{FieldFormat, RequestSpanFields};
    use tracing_subscriber::prelude::*;
    // Colours only on a terminal, and not there either under NO_COLOR: a log file or collector
    // gets plain text (and each request's span is formatted without escape codes, which is
    // cheaper too).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let (fmt, fields) = match format {
        LogFormat::Text => (fmt.boxed(), FieldFormat::Text),
        LogFormat::Json => (fmt.json().boxed(), FieldFormat::Json),
    };
    // Below the fmt layer: each request span's fields are formatted before it sees them
    // (not with colours, which paint the field names).
    let request_fields = (!colour).then(|| RequestSpanFields::new(fields));
    let registry = tracing_subscriber::registry()
        .with(request_fields)
        .with(fmt);
    match log_filter(std::env::var("TOOLGATE_LOG").ok()) {
        LogFilter::Targets(targets) => registry.with(*targets).init(),
        LogFilter::Env(filter) => registry.with(*filter).init(),
    }
}

enum LogFilter {
    // Boxed: both are large, and built once.
    Targets(Box<tracing_subscriber::filter::Targets>),
    Env(Box<tracing_subscriber::EnvFilter>),
}

/// `TOOLGATE_LOG` (info when unset or empty, and when it does not parse). `target=level`
/// directives (all that the README shows) go to `Targets`, a fixed table; only directives
/// that filter on spans or fields need `EnvFilter`, which keeps a map of live spans behind a
/// lock it takes each time a span is entered or left: on every request, several times (each
/// request runs in a span).
fn log_filter(spec: Option<String>) -> LogFilter {
    let spec = spec
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    // `Targets` reads more than `EnvFilter` does, differently: `toolgate[request]=debug` as a
    // target named so, `warn, toolgate=debug` with a target " toolgate", an empty part as
    // "error". Only text made of clean `target=level`, `target` and `level` parts goes to it;
    // the rest is read by `EnvFilter`, as it always was.
    let plain = spec.split(',').all(|part| {
        let (target, level) = part.split_once('=').unwrap_or((part, "any"));
        !target.is_empty()
            && !level.is_empty()
            && !part.contains(|c: char| c.is_whitespace() || "[]{}*".contains(c))
    });
    match spec.parse().ok().filter(|_| plain) {
        Some(targets) => LogFilter::Targets(Box::new(targets)),
        None => LogFilter::Env(Box::new(
            tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                eprintln!("TOOLGATE_LOG={spec:?} is not a log filter ({e}); logging at info");
                tracing_subscriber::EnvFilter::new("info")
            }),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn target_directives_take_the_lock_free_filter_and_span_directives_the_full_one() {
        let targets = |spec: Option<&str>| match log_filter(spec.map(str::to_string)) {
            LogFilter::Targets(t) => Some(*t),
            LogFilter::Env(_) => None,
        };
        let t = targets(Some("warn,toolgate=info,toolgate::upstream=warn")).unwrap();
        assert!(t.would_enable("toolgate::downstream::http", &Level::INFO));
        assert!(!t.would_enable("toolgate::upstream::http", &Level::INFO));
        assert!(t.would_enable("toolgate::upstream::http", &Level::WARN));
        assert!(!t.would_enable("hyper", &Level::INFO));
        for unset in [None, Some(""), Some("  ")] {
            let t = targets(unset).unwrap();
            assert!(t.would_enable("toolgate", &Level::INFO), "{unset:?}");
            assert!(!t.would_enable("toolgate", &Level::DEBUG), "{unset:?}");
        }
        // Everything else is EnvFilter's, read as before: span and field directives (kept:
        // the filter's most verbose level says so), and text Targets would misread.
        let env = |spec: &str| match log_filter(Some(spec.to_string())) {
            LogFilter::Targets(_) => None,
            LogFilter::Env(f) => {
                tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&*f)
            }
        };
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(
            env("warn,toolgate[request]=debug"),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            env("toolgate[request{server=fs}]=trace"),
            Some(LevelFilter::TRACE)
        );
        assert_eq!(env("toolgate="), Some(LevelFilter::TRACE));
        assert_eq!(env("toolgate=debug,"), Some(LevelFilter::DEBUG));
        // Not filters at all: info, as before.
        for bad in ["toolgate=loud", "warn, toolgate=debug", "*=debug"] {
            assert_eq!(env(bad), Some(LevelFilter::INFO), "{bad}");
        }
    }
}
