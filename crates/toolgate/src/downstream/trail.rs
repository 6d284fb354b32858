//! The audit record (and the metrics) of one agent request, filled in as the request crosses
//! the pipeline and written before its answer leaves: refused requests when they are
//! refused, `tools/call` when the upstream's response (or the gateway's own) is ready. With
//! the audit off nothing must be on disk first, and a call's metrics are counted just after
//! its answer has left (`downstream::http::render_audited`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::audit::record::{argument_keys, rfc3339};
use crate::audit::{AuditRecord, Outcome};
use crate::counters::{Clock, SystemClock};
use crate::gateway::Gateway;
use crate::grants::Grant;
use crate::jsonrpc::{self, AnswerSummary};
use crate::pipeline::{Decided, Refused};
use crate::telemetry;

pub struct Trail {
    started: Instant,
    record: AuditRecord,
    /// Whether the record is written (the audit is on).
    audited: bool,
    /// The tool as a metrics label (see `telemetry`): only names the policy or upstream vouched for.
    tool_label: &'static str,
    tool_known: bool,
}

/// A request id: 64 random bits, hex. In the audit record, the log span, and `x-request-id`.
pub fn new_request_id() -> Arc<str> {
    std::str::from_utf8(&hex16(rand::random::<u64>()))
        .expect("hex digits")
        .into()
}

/// `format!("{v:016x}")`, written in place: the formatter cost about 600 instructions a
/// request (callgrind).
fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(v >> (60 - 4 * i)) as usize & 0xf];
    }
    out
}

impl Trail {
    /// Without the audit the record is never written: it then carries only what the metrics
    /// read, and the rest of it is not filled in.
    pub fn start(gw: &Gateway, server: &str, request_id: &Arc<str>) -> Trail {
        let audited = gw.audit.enabled();
        let time = if audited {
            rfc3339(SystemClock.now_ms())
        } else {
            String::new()
        };
        Trail {
            started: Instant::now(),
            audited,
            record: AuditRecord {
                time,
                request_id: request_id.clone(),
                server: server.into(),
                ..Default::default()
            },
            tool_label: "(other)",
            tool_known: false,
        }
    }

    /// Whether the record is written (the audit is on): then it must be, before the answer.
    pub fn audited(&self) -> bool {
        self.audited
    }

    pub fn grant(&mut self, g: &Grant) {
        if self.audited {
            self.record.grant_id = Some(g.id.clone());
            self.record.grant_label = Some(g.label.clone());
        }
    }

    pub fn session(&mut self, id: Option<&Arc<str>>) {
        if self.audited {
            self.record.session = id.cloned();
        }
    }

    pub fn method(&mut self, method: &str) {
        if self.audited {
            self.record.method = Some(method_name(method));
        }
    }

    /// What the policy step decided about a `tools/call`.
    pub fn decided(&mut self, gw: &Gateway, d: &Decided) {
        self.record.tool = Some(d.tool.clone());
        // The arguments are only for the record (shared, masked as it is written); with the
        // audit off, the record does not hold them.
        if self.audited {
            self.record.argument_keys = argument_keys(&d.arguments);
            self.record.arguments = gw
                .audit
                .redactor
                .arguments(&d.arguments, gw.audit.arguments);
            self.record.rule = d.rule.clone();
            self.record.policy_version = d.policy_version;
        }
        self.record.outcome = Some(d.outcome);
        self.record.decision_us = self.started.elapsed().as_micros() as u64;
        // Allowed calls name tools the policy or the upstream listed; denials by a rule name
        // tools the policy names. Anything else may be an agent's invention.
        self.tool_known = matches!(d.outcome, Outcome::Allow | Outcome::Limited)
            || d.rule.as_deref().is_some_and(|r| r.starts_with("/tools/"));
    }

    /// A request refused before (or instead of) a decision.
    pub fn refused(mut self, gw: &Gateway, r: &Refused) {
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
        if self.audited {
            self.record.message = Some(gw.audit.redactor.redact_text(&r.message));
        }
        self.record.decision_us = self.started.elapsed().as_micros() as u64;
        telemetry::refused(r.status.as_u16());
        gw.audit.write(self.record);
    }

    /// The answer to a `tools/call` is ready: record what the upstream said (when it was
    /// called) and write the record. `summary` is what an earlier step read in `response`,
    /// when one did.
    pub fn finish(
        self,
        gw: &Gateway,
        http_status: u16,
        response: Option<&[u8]>,
        summary: Option<Option<AnswerSummary>>,
        forwarded_at: Option<Instant>,
    ) {
        self.finish_at(
            gw,
            http_status,
            response,
            summary,
            forwarded_at,
            Instant::now(),
        );
    }

    /// `finish`, for an answer that was ready at `answered_at` (the upstream's latency ends
    /// there, however late this runs).
    pub fn finish_at(
        mut self,
        gw: &Gateway,
        http_status: u16,
        response: Option<&[u8]>,
        summary: Option<Option<AnswerSummary>>,
        forwarded_at: Option<Instant>,
        answered_at: Instant,
    ) {
        self.record.http_status = http_status;
        let metrics = telemetry::server(&self.record.server);
        if let Some(at) = forwarded_at {
            // The decision ended when the call left for the upstream (`decided` runs after).
            self.record.decision_us = at.saturating_duration_since(self.started).as_micros() as u64;
            let took = answered_at.saturating_duration_since(at);
            self.record.upstream_us = Some(took.as_micros() as u64);
            metrics.upstream.record(took.as_secs_f64());
            let answered = Answered::read(http_status, response, summary);
            if self.audited {
                self.record.upstream_status = Some(answered.text());
            }
            if answered.failed() {
                self.record.outcome = Some(Outcome::UpstreamError);
            }
        }
        metrics
            .decision
            .record(self.record.decision_us as f64 / 1e6);
        let outcome = self.record.outcome.map_or("refused", Outcome::as_str);
        let tool = match (&self.record.tool, self.tool_known) {
            (Some(t), true) if t.len() <= 128 && !t.chars().any(char::is_control) => &**t,
            _ => self.tool_label,
        };
        metrics.call(tool, outcome);
        gw.audit.write(self.record);
    }
}

/// What the upstream answered a call, for its record and its outcome.
enum Answered {
    /// No JSON-RPC answer, only an HTTP status.
    Http(u16),
    Error(i64),
    IsError,
    Ok,
    Unreadable,
}

impl Answered {
    fn read(
        http_status: u16,
        response: Option<&[u8]>,
        summary: Option<Option<AnswerSummary>>,
    ) -> Answered {
        let Some(body) = response else {
            return Answered::Http(http_status);
        };
        match summary.unwrap_or_else(|| jsonrpc::summarize(body)) {
            Some(AnswerSummary::Error { code }) => Answered::Error(code.unwrap_or(0)),
            Some(AnswerSummary::Result { is_error: true }) => Answered::IsError,
            Some(AnswerSummary::Result { is_error: false })
            | Some(AnswerSummary::InputRequired)
            | Some(AnswerSummary::Neither) => Answered::Ok,
            None => Answered::Unreadable,
        }
    }

    /// Whether the call failed upstream (a tool's own `isError` is a completed call).
    fn failed(&self) -> bool {
        matches!(
            self,
            Answered::Http(_) | Answered::Error(_) | Answered::Unreadable
        )
    }

    /// `ok`, `is_error`, `error <code>`, `http <status>` or `unreadable`: formatted only for
    /// a record that is written.
    fn text(&self) -> Cow<'static, str> {
        match self {
            Answered::Http(status) => format!("http {status}").into(),
            Answered::Error(code) => format!("error {code}").into(),
            Answered::IsError => "is_error".into(),
            Answered::Ok => "ok".into(),
            Answered::Unreadable => "unreadable".into(),
        }
    }
}

/// The methods of MCP, so that a record names them without a copy; any other is copied.
const METHODS: &[&str] = &[
    "tools/call",
    "tools/list",
    "initialize",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "ping",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

fn method_name(method: &str) -> Cow<'static, str> {
    match METHODS.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sixteen_lower_hex_digits() {
        for v in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef, 1 << 63] {
            assert_eq!(hex16(v), format!("{v:016x}").as_bytes());
        }
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
