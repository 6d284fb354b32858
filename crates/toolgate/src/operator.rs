//! The operator commands of the command line (`grant ...`, `policy apply|show|versions|diff`):
//! through a running gateway's admin API when `--url` is given, else on the state directory
//! directly. Both ways run the same operations and print the same way.

use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use toolgate::admin::client::AdminClient;
use toolgate::admin::{
    Admin, AdminError, GrantView, IssuedGrant, PolicyVersionView, VersionInfo, diff_text,
};
use toolgate::config::{Config, Environment};
use toolgate::state::sqlite::SqliteStore;

use crate::{AuditCommand, AuditFilter, GrantCommand, PolicyCommand, Target, fail, runtime};

/// The config's `${VAR}`s as far as the operator commands care: they never use grant tokens
/// or server credentials, so an unset variable must not stop them.
struct LenientEnv;

impl Environment for LenientEnv {
    fn var(&self, name: &str) -> Option<String> {
        Some(std::env::var(name).unwrap_or_else(|_| format!("unset:{name}")))
    }
}

enum Via {
    Api(AdminClient),
    Direct(Admin),
}

fn via(target: &Target) -> Result<Via, String> {
    if let Some(url) = &target.url {
        let token = target
            .admin_token
            .as_deref()
            .ok_or("--url needs the admin token: --admin-token or TOOLGATE_ADMIN_TOKEN")?;
        return Ok(Via::Api(AdminClient::new(url, token)));
    }
    let config = match &target.config {
        Some(path) => Config::load(path, &LenientEnv).map_err(|e| e.to_string())?,
        None => Config::embedded_defaults(),
    };
    let store = SqliteStore::open(&config.state_dir).map_err(|e| e.0)?;
    Ok(Via::Direct(Admin {
        store: Arc::new(store),
        config: Arc::new(config),
    }))
}

fn done<T: Serialize>(
    json: bool,
    result: Result<T, AdminError>,
    text: impl FnOnce(&T) -> String,
) -> ExitCode {
    match result {
        Ok(v) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("answers serialize")
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", text(&v));
            ExitCode::SUCCESS
        }
        Err(AdminError::Policy(problems)) => {
            for p in &problems {
                println!(
                    "error: {}: {}",
                    if p.pointer.is_empty() {
                        "(document)"
                    } else {
                        &p.pointer
                    },
                    p.message
                );
            }
            fail(
                format!(
                    "the policy is invalid ({} error(s)); nothing was stored",
                    problems.len()
                ),
                1,
            )
        }
        Err(e) => fail(e, 1),
    }
}

fn issued(g: &IssuedGrant) -> String {
    format!(
        "grant {} ({:?}) for server {:?}\ntoken (shown once, only its hash is kept): {}\n",
        g.grant.id, g.grant.label, g.grant.server, g.token
    )
}

fn grant_line(g: &GrantView) -> String {
    format!(
        "{:<22} {:<8} {:<8} {:<16} {}\n",
        g.id, g.status, g.source, g.server, g.label
    )
}

pub fn grant(target: Target, command: GrantCommand) -> ExitCode {
    let via = match via(&target) {
        Ok(v) => v,
        Err(e) => return fail(e, 2),
    };
    let json = target.json;
    let rt = runtime();
    match command {
        GrantCommand::Create {
            server,
            label,
            policy,
        } => {
            let policy = match policy.map(std::fs::read_to_string).transpose() {
                Ok(p) => p,
                Err(e) => return fail(format!("--policy: {e}"), 2),
            };
            let r = match &via {
                Via::Api(c) => rt.block_on(c.create_grant(&server, &label, policy.as_deref())),
                Via::Direct(a) => a.create_grant(&server, &label, policy.as_deref()),
            };
            done(json, r, issued)
        }
        GrantCommand::List => {
            let r = match &via {
                Via::Api(c) => rt.block_on(c.grants()),
                Via::Direct(a) => a.grants(),
            };
            done(json, r, |gs: &Vec<GrantView>| {
                let mut out = format!(
                    "{:<22} {:<8} {:<8} {:<16} {}\n",
                    "ID", "STATUS", "SOURCE", "SERVER", "LABEL"
                );
                out.extend(gs.iter().map(grant_line));
                out
            })
        }
        GrantCommand::Rotate { id } => {
            let r = match &via {
                Via::Api(c) => rt.block_on(c.rotate(&id)),
                Via::Direct(a) => a.rotate(&id),
            };
            done(json, r, issued)
        }
        GrantCommand::Revoke { id } => {
            let r = match &via {
                Via::Api(c) => rt.block_on(c.revoke(&id)),
                Via::Direct(a) => a.revoke(&id),
            };
            done(json, r, |g: &GrantView| {
                format!(
                    "revoked grant {} ({:?}); its token and sessions no longer work\n",
                    g.id, g.label
                )
            })
        }
    }
}

fn stored(v: &PolicyVersionView) -> String {
    let whose = v
        .grant
        .as_ref()
        .map_or(format!("server {:?}", v.server), |g| {
            format!("grant {g:?} of server {:?}", v.server)
        });
    format!(
        "stored version {} of the policy of {whose}; it applies from the next call\n",
        v.version
    )
}

pub fn policy(command: PolicyCommand) -> ExitCode {
    let rt = runtime();
    match command {
        PolicyCommand::Check { .. } => unreachable!("handled by main"),
        PolicyCommand::Apply { file, of, target } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return fail(format!("{}: cannot read: {e}", file.display()), 2),
            };
            let r = match via(&target) {
                Ok(Via::Api(c)) => {
                    rt.block_on(c.apply_policy(&of.server, of.grant.as_deref(), &text))
                }
                Ok(Via::Direct(a)) => a.apply_policy(&of.server, of.grant.as_deref(), &text),
                Err(e) => return fail(e, 2),
            };
            done(target.json, r, stored)
        }
        PolicyCommand::Show {
            of,
            version,
            target,
        } => {
            let r = match via(&target) {
                Ok(Via::Api(c)) => rt.block_on(c.policy(&of.server, of.grant.as_deref(), version)),
                Ok(Via::Direct(a)) => a.policy(&of.server, of.grant.as_deref(), version),
                Err(e) => return fail(e, 2),
            };
            done(target.json, r, |v| {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&v.document).expect("documents print")
                )
            })
        }
        PolicyCommand::Versions { of, target } => {
            let r = match via(&target) {
                Ok(Via::Api(c)) => rt.block_on(c.policy_versions(&of.server, of.grant.as_deref())),
                Ok(Via::Direct(a)) => a.policy_versions(&of.server, of.grant.as_deref()),
                Err(e) => return fail(e, 2),
            };
            done(target.json, r, |vs: &Vec<VersionInfo>| {
                vs.iter()
                    .map(|v| format!("{:>4}  created_at={}\n", v.version, v.created_at))
                    .collect()
            })
        }
        PolicyCommand::Diff {
            from,
            to,
            of,
            target,
        } => {
            let r = match via(&target) {
                Ok(Via::Api(c)) => rt.block_on(async {
                    let a = c
                        .policy(&of.server, of.grant.as_deref(), Some(from))
                        .await?;
                    let b = c.policy(&of.server, of.grant.as_deref(), Some(to)).await?;
                    Ok(diff_text(&a, &b))
                }),
                Ok(Via::Direct(a)) => a.diff(&of.server, of.grant.as_deref(), from, to),
                Err(e) => return fail(e, 2),
            };
            done(target.json, r, |d: &String| {
                if d.is_empty() {
                    "no difference\n".into()
                } else {
                    d.clone()
                }
            })
        }
    }
}

fn query(f: &AuditFilter) -> toolgate::audit::Query {
    toolgate::audit::Query {
        grant: f.grant.clone(),
        tool: f.tool.clone(),
        outcome: f.outcome.clone(),
        since: f.since.clone(),
        until: f.until.clone(),
        ..Default::default()
    }
}

fn audit_line(r: &toolgate::audit::AuditRecord, json: bool) -> String {
    if json {
        return serde_json::to_string(r).expect("records serialize") + "\n";
    }
    format!(
        "{:>6} {} {:<10} {:<14} {:<12} {:<20} {} {}\n",
        r.seq,
        r.time,
        r.outcome.map_or("-", |o| o.as_str()),
        r.grant_label.as_deref().unwrap_or("-"),
        r.server,
        r.tool.as_deref().or(r.method.as_deref()).unwrap_or("-"),
        r.rule.as_deref().unwrap_or(""),
        r.message.as_deref().unwrap_or(""),
    )
}

pub fn audit(target: Target, command: AuditCommand) -> ExitCode {
    let via = match via(&target) {
        Ok(v) => v,
        Err(e) => return fail(e, 2),
    };
    let rt = runtime();
    let fetch =
        |q: &toolgate::audit::Query| -> Result<Vec<toolgate::audit::AuditRecord>, AdminError> {
            match &via {
                Via::Api(c) => rt.block_on(c.audit(q)),
                Via::Direct(a) => a.audit(q),
            }
        };
    let print = |records: &[toolgate::audit::AuditRecord], json: bool| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for r in records {
            let _ = out.write_all(audit_line(r, json).as_bytes());
        }
        let _ = out.flush();
    };
    match command {
        AuditCommand::Tail { lines, follow } => {
            // Asks for one more than shown, so that even `-n 0` learns where the trail ends
            // and `--follow` then shows only what comes after.
            let mut q = toolgate::audit::Query {
                limit: Some(lines + 1),
                ..Default::default()
            };
            let mut first = true;
            loop {
                match fetch(&q) {
                    Ok(records) => {
                        let shown = if first {
                            &records[records.len().saturating_sub(lines)..]
                        } else {
                            &records[..]
                        };
                        print(shown, target.json);
                        q.after_seq =
                            Some(records.last().map_or(q.after_seq.unwrap_or(0), |r| r.seq));
                        first = false;
                    }
                    Err(e) => return fail(e, 1),
                }
                if !follow {
                    return ExitCode::SUCCESS;
                }
                q.limit = Some(10_000);
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        AuditCommand::Query { filter, limit } => {
            let q = toolgate::audit::Query {
                limit: Some(limit),
                ..query(&filter)
            };
            match fetch(&q) {
                Ok(records) => {
                    print(&records, target.json);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
        AuditCommand::Export { format: _, filter } => {
            // Page through by sequence number, so an export of any size stays bounded in memory.
            let mut q = toolgate::audit::Query {
                limit: Some(10_000),
                ..query(&filter)
            };
            q.after_seq = Some(0);
            loop {
                let page = fetch(&q);
                match page {
                    Ok(records) if records.is_empty() => return ExitCode::SUCCESS,
                    Ok(records) => {
                        print(&records, true);
                        q.after_seq = records.last().map(|r| r.seq);
                    }
                    Err(e) => return fail(e, 1),
                }
            }
        }
    }
}
