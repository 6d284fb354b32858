//! The audit record (and the metrics) of one agent request, filled in as the request crosses
//! the pipeline and written before its answer leaves: refused requests when they are
//! refused, `tools/call` when the upstream's response (or the gateway's own) is ready.

use std::time::Instant;

use crate::audit::record::{argument_keys, rfc3339};
use crate::audit::{AuditRecord, Outcome};
use crate::gateway::Gateway;
use crate::grants::Grant;
use crate::jsonrpc::{self, AnswerSummary};
use crate::pipeline::{Decided, Refused};
use crate::telemetry;

pub struct Trail {
    started: Instant,
    record: AuditRecord,
    /// The tool as a metrics label (see `telemetry`): only names the policy or upstream vouched for.
    tool_label: &'static str,
    tool_known: bool,
}

/// A request id: 64 random bits, hex. In the audit record, the log span, and `x-request-id`.
pub fn new_request_id() -> String {
    hex16(rand::random::<u64>())
}

/// `format!("{v:016x}")`, written in place: the formatter cost about 600 instructions a
/// request (callgrind).
fn hex16(v: u64) -> String {
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(v >> (60 - 4 * i)) as usize & 0xf];
    }
    String::from_utf8(out.to_vec()).expect("hex digits")
}

impl Trail {
    pub fn start(server: &str, request_id: &str) -> Trail {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Trail {
            started: Instant::now(),
            record: AuditRecord {
                time: rfc3339(now_ms),
                request_id: request_id.to_string(),
                server: server.to_string(),
                ..Default::default()
            },
            tool_label: "(other)",
            tool_known: false,
        }
    }

    pub fn grant(&mut self, g: &Grant) {
        self.record.grant_id = Some(g.id.to_string());
        self.record.grant_label = Some(g.label.clone());
    }

    pub fn session(&mut self, id: Option<&str>) {
        self.record.session = id.map(str::to_string);
    }

    pub fn method(&mut self, method: &str) {
        self.record.method = Some(method.to_string());
    }

    /// What the policy step decided about a `tools/call`.
    pub fn decided(&mut self, gw: &Gateway, d: &Decided) {
        self.record.tool = Some(d.tool.clone());
        // The arguments are only for the record (shared, masked as it is written); with the
        // audit off, the record does not hold them.
        if gw.audit.enabled() {
            self.record.argument_keys = argument_keys(&d.arguments);
            self.record.arguments = gw
                .audit
                .redactor
                .arguments(&d.arguments, gw.audit.arguments);
        }
        self.record.outcome = Some(d.outcome);
        self.record.rule = d.rule.clone();
        self.record.policy_version = d.policy_version;
        self.record.decision_us = self.started.elapsed().as_micros() as u64;
        // Allowed calls name tools the policy or the upstream listed; denials by a rule name
        // tools the policy names. Anything else may be an agent's invention.
        self.tool_known = matches!(d.outcome, Outcome::Allow | Outcome::Limited)
            || d.rule.as_deref().is_some_and(|r| r.starts_with("/tools/"));
    }

    /// A request refused before (or instead of) a decision.
    pub async fn refused(mut self, gw: &Gateway, r: &Refused) {
        if let Some(g) = &r.grant {
            self.grant(g);
        }
        // Only a call that was never decided is just "refused"; one allowed by the policy
        // that failed on the way to the upstream keeps its decision and is an upstream error.
        self.record.outcome = Some(match self.record.outcome {
            Some(Outcome::Allow) => Outcome::UpstreamError,
            _ => Outcome::Refused,
        });
        self.record.http_status = r.status.as_u16();
        // A refusal may quote what the agent sent (a parser error does): mask secrets in it.
        self.record.message = Some(gw.audit.redactor.redact_text(&r.message));
        self.record.decision_us = self.started.elapsed().as_micros() as u64;
        telemetry::refused(r.status.as_u16());
        gw.audit.write(self.record).await;
    }

    /// The answer to a `tools/call` is ready: record what the upstream said (when it was
    /// called) and write the record. `summary` is what an earlier step read in `response`,
    /// when one did.
    pub async fn finish(
        mut self,
        gw: &Gateway,
        http_status: u16,
        response: Option<&[u8]>,
        summary: Option<Option<AnswerSummary>>,
        forwarded_at: Option<Instant>,
    ) {
        self.record.http_status = http_status;
        let metrics = telemetry::server(&self.record.server);
        if let Some(at) = forwarded_at {
            // The decision ended when the call left for the upstream (`decided` runs after).
            self.record.decision_us = at.saturating_duration_since(self.started).as_micros() as u64;
            let took = at.elapsed();
            self.record.upstream_us = Some(took.as_micros() as u64);
            metrics.upstream.record(took.as_secs_f64());
            let (status, failed) = upstream_status(http_status, response, summary);
            self.record.upstream_status = Some(status);
            if failed {
                self.record.outcome = Some(Outcome::UpstreamError);
            }
        }
        metrics
            .decision
            .record(self.record.decision_us as f64 / 1e6);
        let outcome = self.record.outcome.map_or("refused", Outcome::as_str);
        let tool = match (&self.record.tool, self.tool_known) {
            (Some(t), true) if t.len() <= 128 && !t.chars().any(char::is_control) => t.as_str(),
            _ => self.tool_label,
        };
        metrics.call(tool, outcome);
        gw.audit.write(self.record).await;
    }
}

/// `ok`, `is_error`, `error <code>`, or `http <status>`; and whether the call failed upstream.
fn upstream_status(
    http_status: u16,
    response: Option<&[u8]>,
    summary: Option<Option<AnswerSummary>>,
) -> (String, bool) {
    let Some(body) = response else {
        return (format!("http {http_status}"), true);
    };
    match summary.unwrap_or_else(|| jsonrpc::summarize(body)) {
        Some(AnswerSummary::Error { code }) => (format!("error {}", code.unwrap_or(0)), true),
        Some(AnswerSummary::Result { is_error: true }) => ("is_error".into(), false),
        Some(AnswerSummary::Result { is_error: false }) | Some(AnswerSummary::Neither) => {
            ("ok".into(), false)
        }
        None => ("unreadable".into(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sixteen_lower_hex_digits() {
        for v in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef, 1 << 63] {
            assert_eq!(hex16(v), format!("{v:016x}"));
        }
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
