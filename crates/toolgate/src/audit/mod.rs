//! The audit trail (SPEC 7): one record per `tools/call` and per refused request, saying who
//! called which tool with which arguments, what the gateway decided by which rule and policy
//! version, and what the server answered.
//!
//! - `record`: the record and how arguments are written into it (keys, redacted, full).
//! - `journal`: JSONL segments under `state_dir/audit/`, written through shared memory maps,
//!   retention, and reading records back for `audit tail|query|export`.
//!
//! Durability: before the agent gets its answer, the calling thread copies the record into a
//! shared mapping of the segment file, that is into the kernel's page cache: no system call,
//! no other thread woken, and no disk I/O on the request path. The segment is flushed to disk
//! (fdatasync) every 100 ms. So a crash of the gateway (SIGKILL included) loses no record of
//! an answered call; a power loss can lose the last 100 ms.

pub mod journal;
pub mod record;

pub use journal::{Audit, AuditConfigError, Query};
pub use record::{ArgumentsMode, AuditRecord, Outcome, Redactor};
