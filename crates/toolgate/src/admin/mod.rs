//! What an operator can do (SPEC 2.3): grants issued, rotated and revoked, policies applied as
//! new versions, shown and compared. One implementation, used by the admin HTTP API (`api`)
//! and by the command line when it works on a state directory directly, so both give the
//! same results; `client` is the command line's way through the API of a running gateway.
//!
//! Tokens are made here (256 bits from the OS, `tg_` prefix), returned once, and stored only
//! as SHA-256 digests.

pub mod api;
pub mod client;
pub mod openapi;

use std::sync::Arc;

use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use toolgate_policy::Policy;

use crate::config::Config;
use crate::grants::digest;
use crate::state::{PolicyScope, StateStore, StoredGrant, now};

/// Why an operation was refused; each maps to one HTTP status and one CLI exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// An invalid policy: every problem, with its JSON pointer.
    #[error("invalid policy: {}", .0.iter().map(|p| format!("{}: {}", p.pointer, p.message)).collect::<Vec<_>>().join("; "))]
    Policy(Vec<ProblemView>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(String),
}

impl From<crate::state::StateError> for AdminError {
    fn from(e: crate::state::StateError) -> Self {
        AdminError::Store(e.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProblemView {
    pub pointer: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServerView {
    pub name: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// The server's policy file from the config, if any.
    pub policy_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GrantView {
    pub id: String,
    pub label: String,
    pub server: String,
    /// `config` (declared in the config file) or `store` (created at run time).
    pub source: String,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: Option<i64>,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A grant with its token: only ever returned by create and rotate.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IssuedGrant {
    pub grant: GrantView,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PolicyVersionView {
    pub server: String,
    pub grant: Option<String>,
    pub version: u64,
    pub created_at: i64,
    /// The document as applied.
    pub document: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<ProblemView>,
    pub warnings: Vec<ProblemView>,
}

/// A unified diff of two versions' pretty-printed JSON (empty when they are the same).
pub fn diff_text(a: &PolicyVersionView, b: &PolicyVersionView) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON prints") + "\n";
    let (a_text, b_text) = (pretty(&a.document), pretty(&b.document));
    similar::TextDiff::from_lines(&a_text, &b_text)
        .unified_diff()
        .header(
            &format!("version {}", a.version),
            &format!("version {}", b.version),
        )
        .to_string()
}

/// The operations, over a state store and the configuration's servers and grants.
pub struct Admin {
    pub store: Arc<dyn StateStore>,
    pub config: Arc<Config>,
}

/// A new grant token: `tg_` and 256 bits from the OS RNG, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    format!(
        "tg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn new_grant_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    format!(
        "g_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn problems(ps: &[toolgate_policy::Problem]) -> Vec<ProblemView> {
    ps.iter()
        .map(|p| ProblemView {
            pointer: p.pointer.clone(),
            message: p.message.clone(),
        })
        .collect()
}

fn view(g: &StoredGrant) -> GrantView {
    GrantView {
        id: g.id.clone(),
        label: g.label.clone(),
        server: g.server.clone(),
        source: "store".into(),
        status: if g.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .into(),
        created_at: Some(g.created_at),
        rotated_at: g.rotated_at,
        revoked_at: g.revoked_at,
    }
}

impl Admin {
    pub fn servers(&self) -> Vec<ServerView> {
        self.config
            .servers
            .iter()
            .map(|s| ServerView {
                name: s.name.clone(),
                transport: match s.transport {
                    crate::config::TransportConfig::Stdio { .. } => "stdio".into(),
                    crate::config::TransportConfig::Http { .. } => "http".into(),
                },
                policy_file: s.policy.as_ref().map(|p| p.display().to_string()),
            })
            .collect()
    }

    pub fn server(&self, name: &str) -> Result<ServerView, AdminError> {
        self.servers()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| AdminError::NotFound(format!("no server named {name:?}")))
    }

    fn check_label(label: &str) -> Result<(), AdminError> {
        let ok = !label.trim().is_empty()
            && label.chars().count() <= 64
            && !label.chars().any(char::is_control);
        ok.then_some(())
            .ok_or_else(|| AdminError::Invalid("a label is 1 to 64 printable characters".into()))
    }

    /// Issues a grant for `server`; its token is in the answer and nowhere else.
    pub fn create_grant(
        &self,
        server: &str,
        label: &str,
        policy: Option<&str>,
    ) -> Result<IssuedGrant, AdminError> {
        self.server(server)?;
        Self::check_label(label)?;
        if let Some(doc) = policy {
            Policy::parse(doc).map_err(|ps| AdminError::Policy(problems(&ps)))?;
        }
        let token = new_token();
        let grant = StoredGrant {
            id: new_grant_id(),
            label: label.to_string(),
            server: server.to_string(),
            token_hash: digest(&token),
            created_at: now(),
            rotated_at: None,
            revoked_at: None,
        };
        self.store.insert_grant(&grant)?;
        if let Some(doc) = policy {
            let scope = PolicyScope {
                server: server.into(),
                grant: Some(grant.id.clone()),
            };
            self.store.add_policy_version(&scope, doc, now())?;
        }
        Ok(IssuedGrant {
            grant: view(&grant),
            token,
        })
    }

    /// Every grant, from the config file and the store. Never tokens.
    pub fn grants(&self) -> Result<Vec<GrantView>, AdminError> {
        let mut out: Vec<GrantView> = self
            .config
            .grants
            .iter()
            .map(|g| GrantView {
                id: format!("config:{}", g.name),
                label: g.name.clone(),
                server: g.server.clone(),
                source: "config".into(),
                status: "active".into(),
                created_at: None,
                rotated_at: None,
                revoked_at: None,
            })
            .collect();
        out.extend(self.store.grants()?.iter().map(view));
        Ok(out)
    }

    pub fn grant(&self, id: &str) -> Result<GrantView, AdminError> {
        self.grants()?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or_else(|| AdminError::NotFound(format!("no grant with id {id:?}")))
    }

    fn stored_live(&self, id: &str) -> Result<StoredGrant, AdminError> {
        if id.starts_with("config:") && self.grant(id).is_ok() {
            return Err(AdminError::Conflict(format!(
                "grant {id:?} is declared in the config file: change its token_env there"
            )));
        }
        let g = self
            .store
            .grant(id)?
            .ok_or_else(|| AdminError::NotFound(format!("no grant with id {id:?}")))?;
        if g.revoked_at.is_some() {
            return Err(AdminError::Conflict(format!("grant {id:?} is revoked")));
        }
        Ok(g)
    }

    /// A new token for the grant; the old one stops working at once.
    pub fn rotate(&self, id: &str) -> Result<IssuedGrant, AdminError> {
        self.stored_live(id)?;
        let token = new_token();
        if !self.store.set_token(id, digest(&token), now())? {
            return Err(AdminError::Conflict(format!(
                "grant {id:?} changed meanwhile; try again"
            )));
        }
        let g = self
            .store
            .grant(id)?
            .ok_or_else(|| AdminError::NotFound(format!("no grant with id {id:?}")))?;
        Ok(IssuedGrant {
            grant: view(&g),
            token,
        })
    }

    /// Revokes the grant: its token and its open sessions stop working at once.
    pub fn revoke(&self, id: &str) -> Result<GrantView, AdminError> {
        self.stored_live(id)?;
        self.store.revoke(id, now())?;
        let g = self
            .store
            .grant(id)?
            .ok_or_else(|| AdminError::NotFound(format!("no grant with id {id:?}")))?;
        Ok(view(&g))
    }

    fn scope(&self, server: &str, grant: Option<&str>) -> Result<PolicyScope, AdminError> {
        self.server(server)?;
        if let Some(id) = grant {
            let g = self.grant(id)?;
            if g.server != server {
                return Err(AdminError::Invalid(format!(
                    "grant {id:?} is for server {:?}, not {server:?}",
                    g.server
                )));
            }
        }
        Ok(PolicyScope {
            server: server.into(),
            grant: grant.map(str::to_string),
        })
    }

    /// Stores a new version of a server's (or one grant's) policy, validated first: an invalid
    /// document is refused with every problem and the version in force stays.
    pub fn apply_policy(
        &self,
        server: &str,
        grant: Option<&str>,
        document: &str,
    ) -> Result<PolicyVersionView, AdminError> {
        let scope = self.scope(server, grant)?;
        Policy::parse(document).map_err(|ps| AdminError::Policy(problems(&ps)))?;
        let version = self.store.add_policy_version(&scope, document, now())?;
        self.policy(server, grant, Some(version))
    }

    /// A version of a scope's stored policy (the newest when `version` is None).
    pub fn policy(
        &self,
        server: &str,
        grant: Option<&str>,
        version: Option<u64>,
    ) -> Result<PolicyVersionView, AdminError> {
        let scope = self.scope(server, grant)?;
        let versions = self.store.policy_versions(&scope)?;
        let v = match version {
            Some(n) => versions.into_iter().find(|v| v.version == n),
            None => versions.into_iter().last(),
        }
        .ok_or_else(|| {
            AdminError::NotFound(match version {
                Some(n) => format!("no version {n} of this policy"),
                None => "no policy has been applied here (a policy file from the config may be in force)".into(),
            })
        })?;
        let document =
            serde_json::from_str(&v.document).map_err(|e| AdminError::Store(e.to_string()))?;
        Ok(PolicyVersionView {
            server: v.scope.server,
            grant: v.scope.grant,
            version: v.version,
            created_at: v.created_at,
            document,
        })
    }

    pub fn policy_versions(
        &self,
        server: &str,
        grant: Option<&str>,
    ) -> Result<Vec<VersionInfo>, AdminError> {
        let scope = self.scope(server, grant)?;
        Ok(self
            .store
            .policy_versions(&scope)?
            .iter()
            .map(|v| VersionInfo {
                version: v.version,
                created_at: v.created_at,
            })
            .collect())
    }

    /// A unified diff between two versions, of their pretty-printed JSON.
    pub fn diff(
        &self,
        server: &str,
        grant: Option<&str>,
        from: u64,
        to: u64,
    ) -> Result<String, AdminError> {
        let a = self.policy(server, grant, Some(from))?;
        let b = self.policy(server, grant, Some(to))?;
        Ok(diff_text(&a, &b))
    }

    /// Audit records matching `query`, oldest first.
    pub fn audit(
        &self,
        query: &crate::audit::Query,
    ) -> Result<Vec<crate::audit::AuditRecord>, AdminError> {
        crate::audit::Audit::read(&self.config.state_dir.join("audit"), query)
            .map_err(AdminError::Invalid)
    }

    /// Checks a document without storing it.
    pub fn validate(document: &str) -> Validation {
        match Policy::parse(document) {
            Ok(p) => Validation {
                valid: true,
                errors: vec![],
                warnings: problems(&p.warnings()),
            },
            Err(ps) => Validation {
                valid: false,
                errors: problems(&ps),
                warnings: vec![],
            },
        }
    }
}
