//! DNS-rebinding protection (SPEC 2.1): a browser page on `evil.example.com` that resolves its
//! name to 127.0.0.1 must not reach the gateway. Requests are accepted only when their `Host`
//! (and `Origin`, when a browser sends one) names the listen address, a loopback name, or a
//! name the operator allowed.

use crate::config::Config;

pub struct HostCheck {
    /// Lower-case host names (no port) always accepted.
    names: Vec<String>,
    /// Extra allowed `Host` values from the config (with or without a port).
    extra_hosts: Vec<String>,
    /// Extra allowed origins (`scheme://host[:port]`).
    extra_origins: Vec<String>,
}

impl HostCheck {
    pub fn new(config: &Config) -> HostCheck {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let ip = config.listen.ip();
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
        HostCheck {
            names,
            extra_hosts: config.allowed_hosts.clone(),
            extra_origins: config.allowed_origins.clone(),
        }
    }

    /// `host` is the `Host` header or the URI authority (HTTP/2).
    pub fn host_allowed(&self, host: &str) -> bool {
        // Compared without case, not lower-cased into a copy: every request's Host is checked,
        // and the names it is compared with are lower case already (config.rs).
        self.extra_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
            || host_name(host).is_some_and(|name| {
                self.names
                    .iter()
                    .chain(&self.extra_hosts)
                    .any(|h| h.eq_ignore_ascii_case(name))
            })
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.extra_origins.contains(&origin) {
            return true;
        }
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false; // includes "null" (sandboxed frames, file:// pages)
        };
        self.host_allowed(rest)
    }
}

/// The name part of `host[:port]` or `[v6]:port`; None when it is not of that shape.
fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        return (after.is_empty() || valid_port(after.strip_prefix(':')?)).then_some(name);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => valid_port(port).then_some(name),
        Some(_) => None,
        None => Some(host),
    }
    .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('@'))
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, hosts: &[&str]) -> HostCheck {
        let mut cfg = Config::embedded_defaults();
        cfg.listen = listen.parse().unwrap();
        cfg.allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        cfg.allowed_origins = vec!["https://app.example.com".into()];
        HostCheck::new(&cfg)
    }

    #[test]
    fn loopback_names_pass_others_do_not() {
        let c = check("127.0.0.1:8080", &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(c.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "127.0.0.1.evil.example.com",
            "localhost.evil.com:8080",
            "",
            "127.0.0.1:80x",
            "user@127.0.0.1",
            "[::1",
        ] {
            assert!(!c.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn configured_hosts_and_origins() {
        let c = check("0.0.0.0:8080", &["gw.internal", "gw2.internal:9000"]);
        assert!(c.host_allowed("gw.internal:8080"));
        assert!(c.host_allowed("gw2.internal:9000"));
        assert!(c.host_allowed("GW2.Internal:9000"), "compared without case");
        assert!(c.host_allowed("GW.INTERNAL:8080"));
        assert!(!c.host_allowed("0.0.0.0:8080"));
        assert!(c.origin_allowed("http://localhost:3000"));
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(!c.origin_allowed("https://evil.example.com"));
        assert!(!c.origin_allowed("null"));
        assert!(!c.origin_allowed("file://"));
    }
}
