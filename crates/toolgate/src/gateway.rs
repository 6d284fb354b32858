//! The gateway's shared state: what is configured, who may call, which sessions are open.
//! Built once at start from the [`Config`]; the request path only reads it.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TransportConfig};
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

pub struct Gateway {
    pub config: Config,
    pub servers: HashMap<String, Upstream>,
    pub grants: GrantTable,
    pub policies: PolicySet,
    pub sessions: SessionTable,
    /// Children answering sessionless (2026-07-28) requests on stdio servers, one per grant
    /// so that grants never share a process.
    pub stateless_stdio: DashMap<String, Arc<StdioSession>>,
    pub hosts: HostCheck,
    /// Cancelled on SIGTERM/SIGINT: long-lived streams end so the server can drain.
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Builds the gateway's state; fails when a policy file cannot be loaded.
    pub fn new(config: Config) -> Result<Gateway, crate::policies::LoadError> {
        let mut policies = PolicySet::default();
        for server in &config.servers {
            if let Some(path) = &server.policy {
                policies.load(path)?;
            }
        }
        let grants = GrantTable::from_config(&config, &mut policies)?;
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
