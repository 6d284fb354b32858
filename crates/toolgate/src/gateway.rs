//! The gateway's shared state: what is configured, who may call, which sessions are open.
//! Built once at start from the [`Config`]; the request path only reads it.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, CounterBackend, TransportConfig};
use crate::counters::embedded::EmbeddedStore;
use crate::counters::redis::RedisStore;
use crate::counters::{CounterStore, Counters, Reservation, SystemClock};
use crate::downstream::rebinding::HostCheck;
use crate::grants::GrantTable;
use crate::policies::PolicySet;
use crate::session::SessionTable;
use crate::upstream::http::HttpServer;
use crate::upstream::stdio::{StdioServer, StdioSession};

/// A registered upstream server.
pub enum Upstream {
    Stdio(Arc<StdioServer>),
    Http(Arc<HttpServer>),
}

impl Upstream {
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
    pub grants: GrantTable,
    pub policies: PolicySet,
    pub sessions: SessionTable,
    /// Children answering sessionless (2026-07-28) requests on stdio servers, one per grant
    /// so that grants never share a process.
    pub stateless_stdio: DashMap<Arc<str>, Arc<StdioSession>>,
    pub hosts: HostCheck,
    /// Cancelled on SIGTERM/SIGINT: long-lived streams end so the server can drain.
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Builds the gateway's state; fails when a policy file or the counter store cannot be
    /// opened.
    pub fn new(config: Config) -> Result<Gateway, String> {
        let mut policies = PolicySet::default();
        for server in &config.servers {
            if let Some(path) = &server.policy {
                policies.load(path).map_err(|e| e.to_string())?;
            }
        }
        let grants = GrantTable::from_config(&config, &mut policies).map_err(|e| e.to_string())?;
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
                    })),
                    TransportConfig::Http { url, headers } => {
                        Upstream::Http(Arc::new(HttpServer::new(name, url.clone(), headers)))
                    }
                };
                (s.name.clone(), upstream)
            })
            .collect();
        Ok(Gateway {
            counters,
            grants,
            policies,
            hosts: HostCheck::new(&config),
            servers,
            sessions: SessionTable::default(),
            stateless_stdio: DashMap::new(),
            shutdown: CancellationToken::new(),
            config,
        })
    }
}

impl Gateway {
    /// Gives a reservation back in the background (a call that never reached the upstream).
    pub fn counters_release(&self, reservation: Reservation) {
        let counters = self.counters.clone();
        tokio::spawn(async move { counters.release(reservation).await });
    }

    /// Starts what runs beside the request path (the embedded store's snapshots).
    pub fn start_background(&self) {
        if let Counters::Embedded(store) = &*self.counters {
            store.spawn_saver(self.shutdown.clone());
        }
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
