//! The TOML configuration file (SPEC 2.4): what it may say, `${ENV}` expansion, and its errors.
//!
//! Everything is checked here, once, at start: a config that loads is one the gateway can run.
//! Errors name the key they are about (`servers.remote.url: ...`) and never contain a secret
//! value (a token or an expanded header), only the name of the variable it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address when neither the file nor the command line gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default state directory, relative to the working directory (SPEC 2.3).
pub const DEFAULT_STATE_DIR: &str = ".toolgate";
/// Default request body limit (SPEC 2.1).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Default polling window of a serving thread (`busy_poll`): long enough to cover an
/// upstream's answer on the same host and an agent's next request after an answer, at one
/// agent (docs/performance.md).
pub const DEFAULT_BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(200);
/// Longer windows mostly burn CPU: past a millisecond, sleeping costs little in comparison.
const MAX_BUSY_POLL_US: u64 = 1000;

/// A configuration error: one line naming the key, ready to print.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(key: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {msg}"))
}

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub max_body_bytes: usize,
    /// Extra `Host` names accepted besides the listen address and the loopback names.
    pub allowed_hosts: Vec<String>,
    /// Extra `Origin` values accepted besides loopback origins.
    pub allowed_origins: Vec<String>,
    /// How long an agent session may stay idle before the gateway ends it.
    pub session_idle_timeout: std::time::Duration,
    /// How long a request may wait for its upstream answer.
    pub request_timeout: std::time::Duration,
    /// How long calls in flight get to finish on SIGTERM/SIGINT.
    pub shutdown_grace: std::time::Duration,
    /// How long a serving thread keeps polling after a call starts or ends before it sleeps
    /// (`busy_poll`); zero turns polling off.
    pub busy_poll: std::time::Duration,
    pub servers: Vec<ServerConfig>,
    pub grants: Vec<GrantConfig>,
    pub counters: CountersConfig,
    pub audit: AuditConfig,
    /// `[metrics]`-free: servers whose unreachability makes `/readyz` fail.
    pub required_servers: Vec<String>,
}

/// `[audit]`: the audit trail (SPEC 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub enabled: bool,
    pub arguments: crate::audit::ArgumentsMode,
    /// Extra regexes whose matches are masked, besides the built-in credential patterns.
    pub secret_patterns: Vec<String>,
    pub retention_days: u64,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Set by local mode, not read from a file: other local-mode processes may write the
    /// same journal directory (see `audit::journal`).
    pub shared_journal: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            arguments: crate::audit::ArgumentsMode::Redacted,
            secret_patterns: Vec::new(),
            retention_days: 30,
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            shared_journal: false,
        }
    }
}

/// `[counters]`: where limits are counted (SPEC 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersConfig {
    pub backend: CounterBackend,
    /// When the store cannot be asked: deny (fail closed, the default) or allow.
    pub on_error_allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterBackend {
    /// In memory with a snapshot in the state directory (one gateway).
    Embedded,
    /// Redis/Valkey at this URL (several gateways share it).
    Redis { url: String },
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub transport: TransportConfig,
    /// The server's default policy file, for grants without their own.
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum TransportConfig {
    Stdio {
        command: String,
        args: Vec<String>,
        /// Only these variables (plus a minimal PATH/HOME/LANG set) reach the child.
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
        /// Set only by `toolgate run` (never from a file): see `StdioServer::local`.
        local: bool,
    },
    Http {
        url: reqwest::Url,
        /// The server's own credentials; added by the gateway, never shown to agents.
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

#[derive(Debug, Clone)]
pub struct GrantConfig {
    pub name: String,
    pub server: String,
    pub credential: Credential,
    pub policy: Option<PathBuf>,
}

#[derive(Clone)]
pub enum Credential {
    /// A bearer token, read from the named environment variable at start.
    Token { env: String, token: String },
    /// Requests without an `Authorization` header get this grant (loopback only).
    Anonymous,
}

impl std::fmt::Debug for Credential {
    // Never print the token itself, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token { env, .. } => write!(f, "Token(from ${env})"),
            Credential::Anonymous => write!(f, "Anonymous"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    state_dir: Option<String>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    session_idle_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    busy_poll_us: Option<u64>,
    #[serde(default)]
    servers: BTreeMap<String, RawServer>,
    #[serde(default)]
    grants: BTreeMap<String, RawGrant>,
    counters: Option<RawCounters>,
    audit: Option<RawAudit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    enabled: Option<bool>,
    arguments: Option<String>,
    #[serde(default)]
    secret_patterns: Vec<String>,
    retention_days: Option<u64>,
    max_mb: Option<u64>,
    segment_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounters {
    backend: Option<String>,
    url: Option<String>,
    on_error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    policy: Option<String>,
    /// `/readyz` fails while this (HTTP) server cannot be reached.
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    server: String,
    token_env: Option<String>,
    #[serde(default)]
    anonymous: bool,
    policy: Option<String>,
}

/// Where `${VAR}` values come from; a trait object so tests can supply their own.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// The embedded defaults: no file at all.
    pub fn embedded_defaults() -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("default listen address parses"),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_idle_timeout: std::time::Duration::from_secs(3600),
            request_timeout: std::time::Duration::from_secs(300),
            shutdown_grace: std::time::Duration::from_secs(10),
            busy_poll: DEFAULT_BUSY_POLL,
            servers: Vec::new(),
            grants: Vec::new(),
            counters: CountersConfig {
                backend: CounterBackend::Embedded,
                on_error_allow: false,
            },
            audit: AuditConfig::default(),
            required_servers: Vec::new(),
        }
    }

    /// Reads and validates a config file. Relative paths in it are relative to its folder.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, env)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and validates config text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a source excerpt; keep its first line and
            // the key/position it names, so the error stays one clear line.
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    ConfigError(format!("line {line}: {msg}"))
                }
                None => ConfigError(msg),
            }
        })?;
        let mut cfg = Config::embedded_defaults();
        if let Some(listen) = raw.listen {
            cfg.listen = listen.parse().map_err(|_| {
                err(
                    "listen",
                    format!("{listen:?} is not an address like \"127.0.0.1:8080\""),
                )
            })?;
        }
        if let Some(dir) = raw.state_dir {
            cfg.state_dir = resolve(base, &dir);
        }
        if let Some(max) = raw.max_body_bytes {
            if max == 0 {
                return Err(err("max_body_bytes", "must be greater than 0"));
            }
            cfg.max_body_bytes = max;
        }
        cfg.allowed_hosts = raw
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        cfg.allowed_origins = raw
            .allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        if let Some(s) = raw.session_idle_timeout_secs {
            cfg.session_idle_timeout = std::time::Duration::from_secs(s.max(1));
        }
        if let Some(s) = raw.request_timeout_secs {
            cfg.request_timeout = std::time::Duration::from_secs(s.max(1));
        }
        if let Some(s) = raw.shutdown_grace_secs {
            cfg.shutdown_grace = std::time::Duration::from_secs(s);
        }
        if let Some(us) = raw.busy_poll_us {
            if us > MAX_BUSY_POLL_US {
                return Err(err(
                    "busy_poll_us",
                    format!("{us} is more than {MAX_BUSY_POLL_US} (a millisecond)"),
                ));
            }
            cfg.busy_poll = std::time::Duration::from_micros(us);
        }

        if let Some(c) = raw.counters {
            cfg.counters = counters_config(c, env)?;
        }
        if let Some(a) = raw.audit {
            cfg.audit = audit_config(a)?;
        }
        for (name, server) in raw.servers {
            if server.required {
                cfg.required_servers.push(name.clone());
            }
            cfg.servers.push(server_config(&name, server, base, env)?);
        }
        let mut anonymous_servers = BTreeMap::new();
        let mut token_owner: BTreeMap<String, String> = BTreeMap::new();
        for (name, grant) in raw.grants {
            let key = format!("grants.{name}");
            check_name(&key, &name)?;
            if !cfg.servers.iter().any(|s| s.name == grant.server) {
                return Err(err(
                    &format!("{key}.server"),
                    format!("no server named {:?} is configured", grant.server),
                ));
            }
            let credential = match (grant.token_env, grant.anonymous) {
                (Some(_), true) => {
                    return Err(err(
                        &key,
                        "give either token_env or anonymous = true, not both",
                    ));
                }
                (None, false) => {
                    return Err(err(&key, "needs token_env = \"VAR\" (or anonymous = true)"));
                }
                (Some(var), false) => {
                    let token = env.var(&var).ok_or_else(|| {
                        err(
                            &format!("{key}.token_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                    if token.trim().is_empty() {
                        return Err(err(
                            &format!("{key}.token_env"),
                            format!("environment variable {var} is empty"),
                        ));
                    }
                    if let Some(other) = token_owner.insert(token.clone(), name.clone()) {
                        return Err(err(
                            &format!("{key}.token_env"),
                            format!(
                                "the token is the same as grant {other:?}'s; each grant needs its own"
                            ),
                        ));
                    }
                    Credential::Token { env: var, token }
                }
                (None, true) => {
                    if !cfg.listen.ip().is_loopback() {
                        return Err(err(
                            &format!("{key}.anonymous"),
                            format!(
                                "anonymous grants are refused unless the gateway listens on loopback only (listen is {})",
                                cfg.listen
                            ),
                        ));
                    }
                    if let Some(other) =
                        anonymous_servers.insert(grant.server.clone(), name.clone())
                    {
                        return Err(err(
                            &format!("{key}.anonymous"),
                            format!(
                                "server {:?} already has the anonymous grant {other:?}",
                                grant.server
                            ),
                        ));
                    }
                    Credential::Anonymous
                }
            };
            cfg.grants.push(GrantConfig {
                name,
                server: grant.server,
                credential,
                policy: match grant.policy {
                    Some(p) => Some(checked_policy(&format!("{key}.policy"), resolve(base, &p))?),
                    None => None,
                },
            });
        }
        Ok(cfg)
    }
}

fn server_config(
    name: &str,
    server: RawServer,
    base: &Path,
    env: &dyn Environment,
) -> Result<ServerConfig, ConfigError> {
    let key = format!("servers.{name}");
    check_name(&key, name)?;
    let transport = match (server.command, server.url) {
        (Some(_), Some(_)) => {
            return Err(err(
                &key,
                "give either command (stdio) or url (HTTP), not both",
            ));
        }
        (None, None) => {
            return Err(err(
                &key,
                "needs command = \"...\" (stdio) or url = \"...\" (HTTP)",
            ));
        }
        (Some(command), None) => {
            if !server.headers.is_empty() {
                return Err(err(
                    &format!("{key}.headers"),
                    "only HTTP servers (url) take headers",
                ));
            }
            let command = expand(&command, &format!("{key}.command"), env)?;
            if command.trim().is_empty() {
                return Err(err(&format!("{key}.command"), "is empty"));
            }
            let args = server
                .args
                .iter()
                .enumerate()
                .map(|(i, a)| expand(a, &format!("{key}.args[{i}]"), env))
                .collect::<Result<_, _>>()?;
            let mut child_env = BTreeMap::new();
            for (k, v) in &server.env {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(err(
                        &format!("{key}.env"),
                        format!("{k:?} is not a variable name"),
                    ));
                }
                child_env.insert(k.clone(), expand(v, &format!("{key}.env.{k}"), env)?);
            }
            let cwd = match server.cwd {
                Some(c) => Some(resolve(base, &expand(&c, &format!("{key}.cwd"), env)?)),
                None => None,
            };
            TransportConfig::Stdio {
                command,
                args,
                env: child_env,
                cwd,
                local: false,
            }
        }
        (None, Some(url)) => {
            if !server.args.is_empty() || !server.env.is_empty() || server.cwd.is_some() {
                return Err(err(
                    &key,
                    "args, env and cwd are for stdio servers (command), not url",
                ));
            }
            let url_key = format!("{key}.url");
            let expanded = expand(&url, &url_key, env)?;
            let parsed = reqwest::Url::parse(&expanded)
                .map_err(|e| err(&url_key, format!("{url:?} is not a valid URL ({e})")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(err(
                    &url_key,
                    format!("{url:?} must be an http:// or https:// URL"),
                ));
            }
            // What the HTTP client takes is stricter than what `url` accepts (length, for one).
            if let Err(e) = parsed.as_str().parse::<http::Uri>() {
                return Err(err(&url_key, format!("is not a usable URL ({e})")));
            }
            let mut headers = Vec::new();
            for (k, v) in &server.headers {
                let hkey = format!("{key}.headers.{k}");
                let hname = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| err(&hkey, "is not a valid header name"))?;
                let value = expand(v, &hkey, env)?;
                // The message names the key only: the value may be a credential.
                let mut hvalue = http::HeaderValue::from_str(&value)
                    .map_err(|_| err(&hkey, "the value is not a valid header value"))?;
                hvalue.set_sensitive(true);
                headers.push((hname, hvalue));
            }
            TransportConfig::Http {
                url: parsed,
                headers,
            }
        }
    };
    Ok(ServerConfig {
        name: name.to_string(),
        transport,
        policy: match server.policy {
            Some(p) => Some(checked_policy(&format!("{key}.policy"), resolve(base, &p))?),
            None => None,
        },
    })
}

fn audit_config(a: RawAudit) -> Result<AuditConfig, ConfigError> {
    use crate::audit::ArgumentsMode;
    let mut cfg = AuditConfig::default();
    if let Some(e) = a.enabled {
        cfg.enabled = e;
    }
    cfg.arguments = match a.arguments.as_deref() {
        None | Some("redacted") => ArgumentsMode::Redacted,
        Some("keys") => ArgumentsMode::Keys,
        Some("full") => ArgumentsMode::Full,
        Some(other) => {
            return Err(err(
                "audit.arguments",
                format!("must be \"keys\", \"redacted\" or \"full\", not {other:?}"),
            ));
        }
    };
    for (i, p) in a.secret_patterns.iter().enumerate() {
        regex::Regex::new(p).map_err(|e| {
            err(
                &format!("audit.secret_patterns[{i}]"),
                format!("not a valid regex: {e}"),
            )
        })?;
    }
    cfg.secret_patterns = a.secret_patterns;
    if let Some(d) = a.retention_days {
        cfg.retention_days = d.max(1);
    }
    if let Some(m) = a.max_mb {
        cfg.max_bytes = m.max(1) * 1024 * 1024;
    }
    if let Some(m) = a.segment_mb {
        cfg.segment_bytes = m.max(1) * 1024 * 1024;
    }
    Ok(cfg)
}

fn counters_config(c: RawCounters, env: &dyn Environment) -> Result<CountersConfig, ConfigError> {
    let on_error_allow = match c.on_error.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            return Err(err(
                "counters.on_error",
                format!("must be \"deny\" or \"allow\", not {other:?}"),
            ));
        }
    };
    let backend = match c.backend.as_deref() {
        None | Some("embedded") => {
            if c.url.is_some() {
                return Err(err("counters.url", "only the redis backend takes a url"));
            }
            CounterBackend::Embedded
        }
        Some("redis") => {
            let raw = c.url.unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            let url = expand(&raw, "counters.url", env)?;
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("valkey://"))
            {
                return Err(err("counters.url", "must be a redis:// (or rediss://) URL"));
            }
            CounterBackend::Redis { url }
        }
        Some(other) => {
            return Err(err(
                "counters.backend",
                format!("must be \"embedded\" or \"redis\", not {other:?}"),
            ));
        }
    };
    Ok(CountersConfig {
        backend,
        on_error_allow,
    })
}

/// A policy file named by the config must exist and be valid when the gateway starts: a
/// gateway that started without it would deny every call its grants make.
fn checked_policy(key: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(key, format!("{}: cannot read: {e}", path.display())))?;
    toolgate_policy::Policy::parse(&text).map_err(|problems| {
        let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        err(
            key,
            format!(
                "{} is not a valid policy: {}",
                path.display(),
                all.join("; ")
            ),
        )
    })?;
    Ok(path)
}

/// Names appear in URLs (`/mcp/{server}`) and logs: keep them to a safe alphabet.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            "names use only letters, digits, '-', '_' and '.' (at most 64)",
        ))
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Expands `${VAR}` from the environment; `$$` is a literal `$`. A missing variable is an error
/// naming the key and the variable (never its value).
pub fn expand(value: &str, key: &str, env: &dyn Environment) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| err(key, "unterminated ${...} in value"))?;
            let var = &body[..end];
            if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err(
                    key,
                    format!("${{{var}}} is not a valid variable reference"),
                ));
            }
            let v = env
                .var(var)
                .ok_or_else(|| err(key, format!("environment variable {var} is not set")))?;
            out.push_str(&v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(Vec<(&'static str, &'static str)>);
    impl Environment for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_in(text, Path::new("/etc/toolgate"))
    }

    /// The issue's example names two policy files: give it a folder where they exist.
    fn with_policies() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for f in ["remote.json", "everything.json"] {
            std::fs::write(
                dir.path().join("policies").join(f),
                r#"{"version":"1","default":"deny"}"#,
            )
            .unwrap();
        }
        dir
    }

    fn parse_in(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let env = MapEnv(vec![
            ("CI_AGENT_TOKEN", "tg_secret_ci_agent_token_value_123456"),
            ("OTHER_TOKEN", "tg_other_token_value_abcdefghijklmn"),
            ("UPSTREAM_TOKEN", "upstream-credential"),
            ("SOME_KEY", "some-value"),
        ]);
        Config::parse(text, base, &env)
    }

    const FULL: &str = r#"
listen = "127.0.0.1:8080"
state_dir = ".toolgate"

[servers.everything]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-everything"]
env = { SOME_KEY = "${SOME_KEY}" }

[servers.remote]
url = "http://127.0.0.1:3001/mcp"
headers = { Authorization = "Bearer ${UPSTREAM_TOKEN}" }
policy = "policies/remote.json"

[grants.ci-agent]
server = "everything"
token_env = "CI_AGENT_TOKEN"
policy = "policies/everything.json"
"#;

    #[test]
    fn the_issue_example_loads() {
        let dir = with_policies();
        let cfg = parse_in(FULL, dir.path()).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.state_dir, dir.path().join(".toolgate"));
        assert_eq!(cfg.servers.len(), 2);
        let everything = cfg.servers.iter().find(|s| s.name == "everything").unwrap();
        match &everything.transport {
            TransportConfig::Stdio {
                command, args, env, ..
            } => {
                assert_eq!(command, "npx");
                assert_eq!(args.len(), 2);
                assert_eq!(env["SOME_KEY"], "some-value");
            }
            _ => panic!("expected stdio"),
        }
        let remote = cfg.servers.iter().find(|s| s.name == "remote").unwrap();
        match &remote.transport {
            TransportConfig::Http { url, headers } => {
                assert_eq!(url.as_str(), "http://127.0.0.1:3001/mcp");
                assert_eq!(headers[0].1.to_str().unwrap(), "Bearer upstream-credential");
            }
            _ => panic!("expected http"),
        }
        assert_eq!(
            remote.policy.as_deref(),
            Some(dir.path().join("policies/remote.json").as_path())
        );
        assert_eq!(cfg.grants.len(), 1);
        assert!(matches!(cfg.grants[0].credential, Credential::Token { .. }));
    }

    #[test]
    fn empty_file_is_the_embedded_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().0
    }

    #[test]
    fn busy_poll_window() {
        let us = |text: &str| parse(text).unwrap().busy_poll.as_micros();
        assert_eq!(us(""), DEFAULT_BUSY_POLL.as_micros());
        assert_eq!(us("busy_poll_us = 0"), 0);
        assert_eq!(us("busy_poll_us = 1000"), 1000);
        assert_eq!(
            error_of("busy_poll_us = 1001"),
            "busy_poll_us: 1001 is more than 1000 (a millisecond)"
        );
        assert!(error_of("busy_poll_us = -1").contains("line 1"));
        assert!(error_of("busy_poll_us = \"200\"").contains("line 1"));
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(error_of("lisen = \"127.0.0.1:1\"").contains("lisen"));
        let e = error_of("[servers.a]\ncommand = \"x\"\nargz = []\n");
        assert!(e.contains("argz"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn missing_env_var_names_key_and_variable() {
        let e = error_of("[servers.a]\ncommand = \"x\"\nenv = { K = \"${NOPE}\" }\n");
        assert_eq!(e, "servers.a.env.K: environment variable NOPE is not set");
        let e = error_of(
            "[servers.a]\ncommand = \"x\"\n[grants.g]\nserver = \"a\"\ntoken_env = \"NOPE\"\n",
        );
        assert_eq!(
            e,
            "grants.g.token_env: environment variable NOPE is not set"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        let too_long = format!("http://127.0.0.1/{}", "a".repeat(70_000));
        for url in ["not a url", "ftp://127.0.0.1/mcp", "http://", &too_long] {
            let e = error_of(&format!("[servers.a]\nurl = \"{url}\"\n"));
            assert!(
                e.starts_with("servers.a.url:"),
                "{}",
                &e[..e.len().min(300)]
            );
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = error_of("[servers.a]\ncommand = \"x\"\n[servers.a]\ncommand = \"y\"\n");
        assert!(e.contains("duplicate") || e.contains("defined"), "{e}");
    }

    #[test]
    fn grant_shape_errors() {
        let base = "[servers.a]\ncommand = \"x\"\n";
        assert!(
            error_of(&format!(
                "{base}[grants.g]\nserver = \"b\"\nanonymous = true\n"
            ))
            .contains("no server named \"b\"")
        );
        assert!(error_of(&format!("{base}[grants.g]\nserver = \"a\"\n")).contains("token_env"));
        assert!(
            error_of(&format!(
                "{base}[grants.g]\nserver = \"a\"\nanonymous = true\ntoken_env = \"CI_AGENT_TOKEN\"\n"
            ))
            .contains("not both")
        );
        let two_anon = format!(
            "{base}[grants.g]\nserver = \"a\"\nanonymous = true\n[grants.h]\nserver = \"a\"\nanonymous = true\n"
        );
        assert!(error_of(&two_anon).contains("already has the anonymous grant"));
        let same_token = format!(
            "{base}[grants.g]\nserver = \"a\"\ntoken_env = \"CI_AGENT_TOKEN\"\n[grants.h]\nserver = \"a\"\ntoken_env = \"CI_AGENT_TOKEN\"\n"
        );
        assert!(error_of(&same_token).contains("needs its own"));
    }

    #[test]
    fn anonymous_needs_loopback() {
        let e = error_of(
            "listen = \"0.0.0.0:8080\"\n[servers.a]\ncommand = \"x\"\n[grants.g]\nserver = \"a\"\nanonymous = true\n",
        );
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn server_shape_errors() {
        assert!(error_of("[servers.a]\n").contains("needs command"));
        assert!(
            error_of("[servers.a]\ncommand = \"x\"\nurl = \"http://h/\"\n").contains("not both")
        );
        assert!(error_of("[servers.\"a b\"]\ncommand = \"x\"\n").contains("names use only"));
        assert!(
            error_of("[servers.a]\nurl = \"http://h/\"\nheaders = { \"bad header\" = \"v\" }\n")
                .contains("not a valid header name")
        );
    }

    #[test]
    fn header_errors_never_show_the_value() {
        let e = error_of(
            "[servers.a]\nurl = \"http://h/\"\nheaders = { X = \"${UPSTREAM_TOKEN}\\n\" }\n",
        );
        assert!(!e.contains("upstream-credential"), "{e}");
    }

    #[test]
    fn policy_files_must_exist_and_be_valid() {
        let dir = with_policies();
        std::fs::write(
            dir.path().join("bad.json"),
            r#"{"version":"1","default":"maybe"}"#,
        )
        .unwrap();
        let e = parse_in(
            "[servers.a]\ncommand = \"x\"\npolicy = \"missing.json\"\n",
            dir.path(),
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("servers.a.policy: ") && e.contains("missing.json"),
            "{e}"
        );
        let e = parse_in(
            "[servers.a]\ncommand = \"x\"\npolicy = \"bad.json\"\n",
            dir.path(),
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("servers.a.policy: ") && e.contains("/default"),
            "{e}"
        );
        let e = parse_in(
            "[servers.a]\ncommand = \"x\"\n[grants.g]\nserver = \"a\"\nanonymous = true\npolicy = \"bad.json\"\n",
            dir.path(),
        )
        .unwrap_err()
        .0;
        assert!(e.starts_with("grants.g.policy: "), "{e}");
    }

    #[test]
    fn counters_section() {
        let cfg = parse("[counters]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6390\"\non_error = \"allow\"\n").unwrap();
        assert_eq!(
            cfg.counters.backend,
            CounterBackend::Redis {
                url: "redis://127.0.0.1:6390".into()
            }
        );
        assert!(cfg.counters.on_error_allow);
        assert_eq!(
            parse("").unwrap().counters.backend,
            CounterBackend::Embedded
        );
        assert!(error_of("[counters]\nbackend = \"memcached\"\n").starts_with("counters.backend:"));
        assert!(error_of("[counters]\non_error = \"maybe\"\n").starts_with("counters.on_error:"));
        assert!(
            error_of("[counters]\nbackend = \"redis\"\nurl = \"http://x\"\n")
                .starts_with("counters.url:")
        );
        assert!(error_of("[counters]\nurl = \"redis://x\"\n").starts_with("counters.url:"));
    }

    #[test]
    fn expansion() {
        let env = MapEnv(vec![("A", "1")]);
        assert_eq!(expand("x${A}y$$z$", "k", &env).unwrap(), "x1y$z$");
        assert!(expand("${A", "k", &env).is_err());
        assert!(expand("${A-B}", "k", &env).is_err());
    }

    #[test]
    fn credentials_debug_hides_tokens() {
        let dir = with_policies();
        let cfg = parse_in(FULL, dir.path()).unwrap();
        let dbg = format!("{:?}", cfg);
        assert!(!dbg.contains("tg_secret_ci_agent_token_value_123456"));
        assert!(!dbg.contains("upstream-credential"));
    }
}
