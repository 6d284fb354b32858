//! The audit trail (SPEC 7): one record per `tools/call` and per refused request, saying who
//! called which tool with which arguments, what the gateway decided by which rule and policy
//! version, and what the server answered.
//!
//! - `record`: the record and how arguments are written into it (keys, redacted, full).
//! - `journal`: JSONL segments under `state_dir/audit/` (the gateway's writer through shared
//!   memory maps, local mode's by appending), retention, and reading records back for
//!   `audit tail|query|export`.
//!
//! Durability: before the agent gets its answer, the record is in the kernel's page cache:
//! the gateway's serving thread copies it into a shared mapping of the segment file (no
//! system call, no other thread woken, no disk I/O on the request path); local mode appends
//! it with one `write(2)`. Segments are flushed to disk (fdatasync) every 100 ms. So a crash
//! (SIGKILL included) loses no record of an answered call; a power loss can lose the last
//! 100 ms.

pub mod journal;
pub mod record;

pub use journal::{Audit, AuditConfigError, Query};
pub use record::{ArgumentsMode, AuditRecord, Outcome, Redactor};
