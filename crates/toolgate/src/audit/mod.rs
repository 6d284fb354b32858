//! The audit trail (SPEC 7): one record per `tools/call` and per refused request, saying who
//! called which tool with which arguments, what the gateway decided by which rule and policy
//! version, and what the server answered.
//!
//! - `record`: the record and how arguments are written into it (keys, redacted, full).
//! - `journal`: the writer (batched appends to JSONL segments under `state_dir/audit/`),
//!   retention, and reading records back for `audit tail|query|export`.
//!
//! Durability: a record is handed to the operating system (written to its segment file)
//! before the agent gets its answer, by a writer thread that batches every record queued
//! meanwhile into one write (group commit), so the request path never does disk I/O of its
//! own. The segment is flushed to disk (fdatasync) every 100 ms. So a crash of the gateway
//! (SIGKILL included) loses no record of an answered call; a power loss can lose the last
//! 100 ms.

pub mod journal;
pub mod record;

pub use journal::{Audit, AuditConfigError, Query};
pub use record::{ArgumentsMode, AuditRecord, Outcome, Redactor};
