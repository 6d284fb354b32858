//! Grants and the door: who is calling, and for which server.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed and looked up by its
//! digest; the final comparison is constant-time (`subtle`), so response timing says nothing
//! about how much of a guess was right. Tokens are never logged, printed or forwarded.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Credential};
use crate::policies::{Loaded, PolicyFile, PolicySet};
use crate::state::{PolicyScope, StoredGrant};

/// Where a grant's policy comes from: a watched file of the config, or a version applied
/// through the admin API or CLI (kept in the state store).
#[derive(Debug, Clone)]
pub enum PolicySource {
    File(Arc<PolicyFile>),
    Stored(Arc<Loaded>),
}

impl PolicySource {
    pub fn current(&self) -> Arc<Loaded> {
        match self {
            PolicySource::File(f) => f.current(),
            PolicySource::Stored(l) => l.clone(),
        }
    }
}

/// A grant: a label, one server, one policy.
#[derive(Debug)]
pub struct Grant {
    /// Stable id, used to bind sessions to their grant.
    pub id: Arc<str>,
    /// Shared with the audit records of the grant's calls.
    pub label: Arc<str>,
    pub server: String,
    /// The grant's own policy, else its server's; None means every call is denied.
    pub policy: Option<PolicySource>,
}

/// Why a request was turned away at the door.
#[derive(Debug, Clone)]
pub enum DoorRefusal {
    /// No token (and no anonymous grant for the server), a malformed header, or an unknown token: 401.
    Unauthenticated,
    /// A valid token of another server: 403 (the grant is named in the audit record).
    WrongServer(Arc<Grant>),
}

type Digest32 = [u8; 32];

/// Every grant the gateway knows, indexed for the request path.
#[derive(Default)]
pub struct GrantTable {
    // foldhash (see `crate::HotMap`): every request looks its grant up here. The keys come
    // from the configuration and the state store, never from an agent.
    by_digest: foldhash::HashMap<Digest32, Arc<Grant>>,
    anonymous_by_server: foldhash::HashMap<String, Arc<Grant>>,
}

pub fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

impl GrantTable {
    /// Builds the table from the config alone (its policy files loaded on the way).
    #[cfg(test)]
    pub fn from_config(config: &Config) -> Result<GrantTable, crate::policies::LoadError> {
        let policies = PolicySet::from_config(config)?;
        Ok(GrantTable::build(config, &policies, &[], &HashMap::new()))
    }

    /// Builds the table from the config's grants and the store's live grants. A grant's policy
    /// is, first found: its own stored policy, its own policy file, its server's stored policy,
    /// its server's policy file. Policy files must already be loaded into `policies`.
    pub fn build(
        config: &Config,
        policies: &PolicySet,
        stored: &[StoredGrant],
        stored_policies: &HashMap<PolicyScope, Arc<Loaded>>,
    ) -> GrantTable {
        let stored_policy = |server: &str, grant: Option<&str>| {
            let scope = PolicyScope {
                server: server.to_string(),
                grant: grant.map(str::to_string),
            };
            stored_policies
                .get(&scope)
                .map(|l| PolicySource::Stored(l.clone()))
        };
        let file = |path: Option<&std::path::PathBuf>| {
            path.and_then(|p| policies.get(p)).map(PolicySource::File)
        };
        let server_file = |server: &str| {
            file(
                config
                    .servers
                    .iter()
                    .find(|s| s.name == server)
                    .and_then(|s| s.policy.as_ref()),
            )
        };
        let mut table = GrantTable::default();
        for g in &config.grants {
            let id = format!("config:{}", g.name);
            let policy = stored_policy(&g.server, Some(&id))
                .or_else(|| file(g.policy.as_ref()))
                .or_else(|| stored_policy(&g.server, None))
                .or_else(|| server_file(&g.server));
            let grant = Arc::new(Grant {
                id: id.into(),
                label: g.name.as_str().into(),
                server: g.server.clone(),
                policy,
            });
            match &g.credential {
                Credential::Token { token, .. } => {
                    table.by_digest.insert(digest(token), grant);
                }
                Credential::Anonymous => {
                    table.anonymous_by_server.insert(g.server.clone(), grant);
                }
            }
        }
        for g in stored.iter().filter(|g| g.revoked_at.is_none()) {
            // A stored grant for a server the config no longer has cannot be used.
            if !config.servers.iter().any(|s| s.name == g.server) {
                continue;
            }
            let policy = stored_policy(&g.server, Some(&g.id))
                .or_else(|| stored_policy(&g.server, None))
                .or_else(|| server_file(&g.server));
            let grant = Arc::new(Grant {
                id: g.id.as_str().into(),
                label: g.label.as_str().into(),
                server: g.server.clone(),
                policy,
            });
            table.by_digest.insert(g.token_hash, grant);
        }
        table
    }

    /// The ids of every grant in the table.
    pub fn grant_ids(&self) -> std::collections::HashSet<Arc<str>> {
        self.by_digest
            .values()
            .chain(self.anonymous_by_server.values())
            .map(|g| g.id.clone())
            .collect()
    }

    /// Decides who a request is, from its `Authorization` header, for `server`.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        server: &str,
    ) -> Result<Arc<Grant>, DoorRefusal> {
        let grant = match authorization {
            None => self
                .anonymous_by_server
                .get(server)
                .cloned()
                .ok_or(DoorRefusal::Unauthenticated)?,
            Some(value) => {
                let token = bearer_token(value).ok_or(DoorRefusal::Unauthenticated)?;
                let presented = digest(token);
                let (stored, grant) = self
                    .by_digest
                    .get_key_value(&presented)
                    .ok_or(DoorRefusal::Unauthenticated)?;
                if !bool::from(stored.ct_eq(&presented)) {
                    return Err(DoorRefusal::Unauthenticated);
                }
                grant.clone()
            }
        };
        if grant.server != server {
            return Err(DoorRefusal::WrongServer(grant));
        }
        Ok(grant)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};
    use std::path::Path;

    struct Env;
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "A_TOKEN" => Some("tg_token_for_a_0123456789".into()),
                "B_TOKEN" => Some("tg_token_for_b_0123456789".into()),
                _ => None,
            }
        }
    }

    fn table() -> GrantTable {
        let cfg = Config::parse(
            r#"
[servers.a]
command = "x"
[servers.b]
command = "y"
[grants.ga]
server = "a"
token_env = "A_TOKEN"
[grants.gb]
server = "b"
token_env = "B_TOKEN"
[grants.anon-b]
server = "b"
anonymous = true
"#,
            Path::new("."),
            &Env,
        )
        .unwrap();
        GrantTable::from_config(&cfg).unwrap()
    }

    #[test]
    fn door() {
        let t = table();
        let ok = t
            .authenticate(Some(b"Bearer tg_token_for_a_0123456789"), "a")
            .unwrap();
        assert_eq!(&*ok.label, "ga");
        assert_eq!(
            t.authenticate(Some(b"bearer tg_token_for_a_0123456789"), "a")
                .unwrap()
                .label
                .as_ref(),
            "ga"
        );
        assert!(matches!(
            t.authenticate(Some(b"Bearer tg_token_for_a_0123456789"), "b").unwrap_err(),
            DoorRefusal::WrongServer(g) if &*g.label == "ga"
        ));
        assert!(matches!(
            t.authenticate(None, "a").unwrap_err(),
            DoorRefusal::Unauthenticated
        ));
        assert_eq!(&*t.authenticate(None, "b").unwrap().label, "anon-b");
        for bad in [
            &b"Bearer wrong"[..],
            b"Basic dGc6eA==",
            b"Bearer ",
            b"tg_token_for_a_0123456789",
            b"Bearer tg_token_for_a_012345678",
            b"\xff\xfe",
        ] {
            assert!(matches!(
                t.authenticate(Some(bad), "a").unwrap_err(),
                DoorRefusal::Unauthenticated
            ));
            // A wrong token never falls back to the anonymous grant.
            assert!(matches!(
                t.authenticate(Some(bad), "b").unwrap_err(),
                DoorRefusal::Unauthenticated
            ));
        }
    }
}
