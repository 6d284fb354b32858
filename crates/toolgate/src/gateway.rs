//! The gateway's shared state: what is configured, who may call, which sessions are open.
//! Built once at start from the [`Config`]; the request path only reads it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::HotMap;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, CounterBackend, TransportConfig};
use crate::counters::embedded::EmbeddedStore;
use crate::counters::redis::RedisStore;
use crate::counters::{Counters, SystemClock};
use crate::downstream::rebinding::HostCheck;
use crate::grants::GrantTable;
use crate::policies::Loaded;
use crate::policies::PolicySet;
use crate::session::SessionTable;
use crate::state::sqlite::SqliteStore;
use crate::state::{PolicyScope, StateStore};
use crate::upstream::http::HttpServer;
use crate::upstream::stdio::{StdioServer, StdioSession};
use arc_swap::ArcSwap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use toolgate_policy::Policy;

/// A registered upstream server.
pub enum Upstream {
    Stdio(Arc<StdioServer>),
    Http(Arc<HttpServer>),
}

impl Upstream {
    /// The tools the server lists, as the gateway last fetched them.
    pub fn tools(&self) -> &crate::upstream::ListedTools {
        match self {
            Upstream::Stdio(s) => &s.tools,
            Upstream::Http(h) => &h.tools,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        match self {
            Upstream::Stdio(s) => &s.name,
            Upstream::Http(h) => &h.name,
        }
    }
}

pub struct Gateway {
    pub config: Config,
    /// Where limits are counted (`[counters]`).
    pub counters: Arc<Counters>,
    pub servers: HashMap<String, Upstream>,
    /// Who may call: rebuilt (and swapped whole) when grants or stored policies change.
    pub grants: ArcSwap<GrantTable>,
    pub policies: PolicySet,
    /// Grants and policy versions created at run time.
    pub state: Arc<SqliteStore>,
    /// The admin API's token (its SHA-256), set when the gateway starts serving.
    pub admin_token: std::sync::OnceLock<[u8; 32]>,
    /// Stored policy versions already compiled, so a rebuild compiles only new ones.
    compiled: Mutex<HashMap<(PolicyScope, u64), Arc<Loaded>>>,
    /// The store's `data_version` when the grant table was last built.
    seen_version: AtomicI64,
    /// Held from reading the store to swapping the table, so that an older read can never
    /// replace a newer table (a revoked token coming back to life).
    refresh_lock: Mutex<()>,
    pub sessions: SessionTable,
    /// Children answering sessionless (2026-07-28) requests on stdio servers, one per grant
    /// so that grants never share a process.
    pub stateless_stdio: HotMap<Arc<str>, Arc<StdioSession>>,
    /// Calls that span requests: relayed `requestState`s and tasks, bound to their grants.
    pub continued: Arc<crate::pipeline::Continuations>,
    pub hosts: HostCheck,
    /// The audit trail.
    pub audit: crate::audit::Audit,
    /// The Prometheus exposition of this process's metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Cancelled on SIGTERM/SIGINT: long-lived streams end so the server can drain.
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Builds the gateway's state; fails when a policy file or the counter store cannot be
    /// opened.
    pub fn new(config: Config) -> Result<Gateway, String> {
        let policies = PolicySet::from_config(&config).map_err(|e| e.to_string())?;
        let state = Arc::new(SqliteStore::open(&config.state_dir).map_err(|e| e.to_string())?);
        let counters = Arc::new(match &config.counters.backend {
            CounterBackend::Embedded => Counters::Embedded(Arc::new(EmbeddedStore::open(
                &config.state_dir,
                Arc::new(SystemClock),
            )?)),
            CounterBackend::Redis { url } => Counters::Redis(Box::new(RedisStore::new(url)?)),
        });
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let name: Arc<str> = s.name.as_str().into();
                let upstream = match &s.transport {
                    TransportConfig::Stdio {
                        command,
                        args,
                        env,
                        cwd,
                        local,
                    } => Upstream::Stdio(Arc::new(StdioServer {
                        name,
                        command: command.clone(),
                        args: args.clone(),
                        env: env.clone(),
                        cwd: cwd.clone(),
                        request_timeout: config.request_timeout,
                        local: *local,
                        tools: Arc::default(),
                    })),
                    TransportConfig::Http { url, headers } => Upstream::Http(Arc::new(
                        HttpServer::new(name, url.clone(), headers, config.request_timeout),
                    )),
                };
                (s.name.clone(), upstream)
            })
            .collect();
        let audit = crate::audit::Audit::open(crate::audit::journal::Options {
            enabled: config.audit.enabled,
            dir: config.state_dir.join("audit"),
            arguments: config.audit.arguments,
            secret_patterns: config.audit.secret_patterns.clone(),
            retention_days: config.audit.retention_days,
            max_bytes: config.audit.max_bytes,
            segment_bytes: config.audit.segment_bytes,
            shared: config.audit.shared_journal,
        })
        .map_err(|e| e.0)?;
        let gw = Gateway {
            audit,
            metrics: crate::telemetry::install(),
            counters,
            grants: ArcSwap::from_pointee(GrantTable::default()),
            policies,
            state,
            admin_token: std::sync::OnceLock::new(),
            compiled: Mutex::new(HashMap::new()),
            seen_version: AtomicI64::new(i64::MIN),
            refresh_lock: Mutex::new(()),
            hosts: HostCheck::new(&config),
            servers,
            sessions: SessionTable::default(),
            stateless_stdio: HotMap::default(),
            continued: Arc::default(),
            shutdown: CancellationToken::new(),
            config,
        };
        gw.refresh()?;
        Ok(gw)
    }

    /// Rebuilds the grant table from the config and the state store (after a grant or policy
    /// changed). Blocking I/O: call it off the request path.
    pub fn refresh(&self) -> Result<(), String> {
        let _serial = self.refresh_lock.lock().unwrap_or_else(|p| p.into_inner());
        let version = self.state.data_version().map_err(|e| e.0)?;
        let stored = self.state.grants().map_err(|e| e.0)?;
        let latest = self.state.latest_policies().map_err(|e| e.0)?;
        let mut compiled = self.compiled.lock().expect("compiled lock");
        let mut current = HashMap::new();
        for v in latest {
            let key = (v.scope.clone(), v.version);
            let loaded = match compiled.get(&key) {
                Some(l) => l.clone(),
                None => match Policy::parse(&v.document) {
                    Ok(p) => {
                        let l = Arc::new(Loaded::stored(p, v.version, v.document.clone()));
                        compiled.insert(key, l.clone());
                        l
                    }
                    Err(problems) => {
                        // Validated when applied; a document that no longer parses (a newer
                        // toolgate wrote it, or an `approval` this one cannot enforce) denies
                        // every call of its scope rather than leave the scope to a policy
                        // further down the line, which may allow more (fail closed).
                        tracing::error!(server = %v.scope.server, version = v.version, "stored policy is invalid; every call it governs is denied: {problems:?}");
                        let deny_all = Policy::parse(r#"{"version":"1","default":"deny"}"#)
                            .expect("the deny-all policy is valid");
                        Arc::new(Loaded::stored(deny_all, v.version, v.document.clone()))
                    }
                },
            };
            current.insert(v.scope, loaded);
        }
        let table = GrantTable::build(&self.config, &self.policies, &stored, &current);
        let live = table.grant_ids();
        self.grants.store(Arc::new(table));
        self.seen_version.store(version, Ordering::Relaxed);
        // Sessions of a grant that is gone (revoked) end now, open streams included.
        let orphaned = self.sessions.take_where(|s| !live.contains(&*s.grant.id));
        if !orphaned.is_empty() {
            tracing::info!(
                sessions = orphaned.len(),
                "ending the sessions of revoked grants"
            );
            for s in &orphaned {
                s.ended.cancel();
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    for s in orphaned {
                        s.close().await;
                    }
                });
            }
        }
        Ok(())
    }

    /// Rebuilds the grant table if another process (the CLI on the state directory) changed
    /// the store since the last build.
    pub fn refresh_if_changed(&self) {
        match self.state.data_version() {
            Ok(v) if v != self.seen_version.load(Ordering::Relaxed) => {
                if let Err(e) = self.refresh() {
                    tracing::error!("cannot reload grants: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot read the state store: {e}"),
        }
    }

    /// The admin token: `TOOLGATE_ADMIN_TOKEN` if set, else the one stored at first start,
    /// else a new one (returned, to be printed once: only its hash is kept).
    pub fn init_admin_token(&self, from_env: Option<&str>) -> Result<Option<String>, String> {
        let (hash, new) = match from_env.filter(|t| !t.is_empty()) {
            Some(token) => (crate::grants::digest(token), None),
            None => match self.state.admin_token_hash().map_err(|e| e.0)? {
                Some(h) => (h, None),
                None => {
                    let token = format!("tga_{}", &crate::admin::new_token()[3..]);
                    let h = crate::grants::digest(&token);
                    self.state.set_admin_token_hash(h).map_err(|e| e.0)?;
                    (h, Some(token))
                }
            },
        };
        let _ = self.admin_token.set(hash);
        Ok(new)
    }
}

impl Gateway {
    /// Starts what runs beside the request path: the embedded store's snapshots, the metrics'
    /// upkeep, and the watch on the state store for changes made by another process.
    pub fn start_background(self: &Arc<Self>) {
        if let Counters::Embedded(store) = &*self.counters {
            store.spawn_saver(self.shutdown.clone());
        }
        tokio::spawn(crate::telemetry::upkeep(
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        let gw = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = gw.shutdown.cancelled() => break,
                }
                let g = gw.clone();
                let _ = tokio::task::spawn_blocking(move || g.refresh_if_changed()).await;
            }
        });
    }

    /// Last writes before exit (the embedded counters' snapshot).
    pub fn save_state(&self) {
        if let Counters::Embedded(store) = &*self.counters
            && let Err(e) = store.save()
        {
            tracing::error!("cannot save counters: {e}");
        }
    }
}

impl Gateway {
    /// Whether the counter store answers (always, for the embedded one).
    pub async fn counters_ready(&self) -> Result<(), String> {
        match &*self.counters {
            Counters::Embedded(_) => Ok(()),
            Counters::Redis(r) => r.ping().await.map_err(|e| e.to_string()),
        }
    }

    /// Whether a server can be reached: an HTTP server accepts a TCP connection; a stdio
    /// server's command can be found.
    pub async fn upstream_ready(&self, name: &str) -> Result<(), String> {
        match self
            .config
            .servers
            .iter()
            .find(|s| s.name == name)
            .map(|s| &s.transport)
        {
            Some(crate::config::TransportConfig::Http { url, .. }) => {
                let host = url.host_str().unwrap_or("localhost").to_string();
                let port = url.port_or_known_default().unwrap_or(80);
                match tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("unreachable: {e}")),
                    Err(_) => Err("unreachable: connection timed out".into()),
                }
            }
            Some(crate::config::TransportConfig::Stdio { command, cwd, .. }) => {
                let path = std::path::Path::new(command);
                let found = if path.components().count() > 1 {
                    cwd.as_ref()
                        .map_or(path.to_path_buf(), |c| c.join(path))
                        .exists()
                } else {
                    std::env::var_os("PATH").is_some_and(|p| {
                        std::env::split_paths(&p).any(|d| d.join(command).exists())
                    })
                };
                if found {
                    Ok(())
                } else {
                    Err(format!("command {command:?} not found"))
                }
            }
            None => Err("not configured".into()),
        }
    }
}
