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
use crate::policies::{LoadError, PolicyFile, PolicySet};

/// A grant: a label, one server, and (from the next issue on) one policy.
#[derive(Debug)]
pub struct Grant {
    /// Stable id, used to bind sessions to their grant.
    pub id: Arc<str>,
    pub label: String,
    pub server: String,
    /// The grant's own policy, else its server's; None means every call is denied.
    pub policy: Option<Arc<PolicyFile>>,
}

/// Why a request was turned away at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorRefusal {
    /// No token (and no anonymous grant for the server), a malformed header, or an unknown token: 401.
    Unauthenticated,
    /// A valid token of another server: 403.
    WrongServer,
}

type Digest32 = [u8; 32];

/// Every grant the gateway knows, indexed for the request path.
#[derive(Default)]
pub struct GrantTable {
    by_digest: HashMap<Digest32, Arc<Grant>>,
    anonymous_by_server: HashMap<String, Arc<Grant>>,
}

pub fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

impl GrantTable {
    /// Builds the table, loading each grant's policy (its own, else its server's) into `policies`.
    pub fn from_config(config: &Config, policies: &mut PolicySet) -> Result<GrantTable, LoadError> {
        let mut table = GrantTable::default();
        for g in &config.grants {
            let server_policy = config
                .servers
                .iter()
                .find(|s| s.name == g.server)
                .and_then(|s| s.policy.as_ref());
            let policy = match g.policy.as_ref().or(server_policy) {
                Some(path) => Some(policies.load(path)?),
                None => None,
            };
            let grant = Arc::new(Grant {
                id: format!("config:{}", g.name).into(),
                label: g.name.clone(),
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
        Ok(table)
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
            return Err(DoorRefusal::WrongServer);
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
        GrantTable::from_config(&cfg, &mut PolicySet::default()).unwrap()
    }

    #[test]
    fn door() {
        let t = table();
        let ok = t
            .authenticate(Some(b"Bearer tg_token_for_a_0123456789"), "a")
            .unwrap();
        assert_eq!(ok.label, "ga");
        assert_eq!(
            t.authenticate(Some(b"bearer tg_token_for_a_0123456789"), "a")
                .unwrap()
                .label,
            "ga"
        );
        assert_eq!(
            t.authenticate(Some(b"Bearer tg_token_for_a_0123456789"), "b")
                .unwrap_err(),
            DoorRefusal::WrongServer
        );
        assert_eq!(
            t.authenticate(None, "a").unwrap_err(),
            DoorRefusal::Unauthenticated
        );
        assert_eq!(t.authenticate(None, "b").unwrap().label, "anon-b");
        for bad in [
            &b"Bearer wrong"[..],
            b"Basic dGc6eA==",
            b"Bearer ",
            b"tg_token_for_a_0123456789",
            b"Bearer tg_token_for_a_012345678",
            b"\xff\xfe",
        ] {
            assert_eq!(
                t.authenticate(Some(bad), "a").unwrap_err(),
                DoorRefusal::Unauthenticated
            );
            // A wrong token never falls back to the anonymous grant.
            assert_eq!(
                t.authenticate(Some(bad), "b").unwrap_err(),
                DoorRefusal::Unauthenticated
            );
        }
    }
}
