//! The state store: what is created at run time (grants, policy versions), kept under
//! `state_dir`. SQLite now (`sqlite.rs`); the trait is the seam where PostgreSQL will go for
//! several replicas.
//!
//! The request path never reads the store: the gateway keeps what calls need (the grant
//! table, compiled policies) in memory and rebuilds it when the store changes.

pub mod sqlite;

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    pub id: String,
    pub label: String,
    pub server: String,
    /// SHA-256 of the token; the token itself is never stored.
    pub token_hash: [u8; 32],
    pub created_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// Which policy a version belongs to: a server's (for all its grants) or one grant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyScope {
    pub server: String,
    pub grant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub scope: PolicyScope,
    pub version: u64,
    pub document: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError(format!("state store: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

/// Everything the gateway keeps across restarts besides counters.
pub trait StateStore: Send + Sync {
    fn insert_grant(&self, grant: &StoredGrant) -> Result<()>;
    fn grants(&self) -> Result<Vec<StoredGrant>>;
    fn grant(&self, id: &str) -> Result<Option<StoredGrant>>;
    /// Replaces a live grant's token; false when there is no such live grant.
    fn set_token(&self, id: &str, token_hash: [u8; 32], at: Timestamp) -> Result<bool>;
    /// Revokes a live grant; false when there is no such live grant.
    fn revoke(&self, id: &str, at: Timestamp) -> Result<bool>;
    /// Stores a new version of a scope's policy; returns its number (1, 2, ...).
    fn add_policy_version(&self, scope: &PolicyScope, document: &str, at: Timestamp)
    -> Result<u64>;
    /// Versions of a scope, oldest first (documents included).
    fn policy_versions(&self, scope: &PolicyScope) -> Result<Vec<PolicyVersion>>;
    /// The newest version of every scope.
    fn latest_policies(&self) -> Result<Vec<PolicyVersion>>;
    fn admin_token_hash(&self) -> Result<Option<[u8; 32]>>;
    fn set_admin_token_hash(&self, hash: [u8; 32]) -> Result<()>;
    /// Changes when another process (the CLI working on the state directory) commits.
    fn data_version(&self) -> Result<i64>;
}
