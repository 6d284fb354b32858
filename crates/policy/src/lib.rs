//! toolgate's policy engine: policy documents version 1 (SPEC section 4), compatible with
//! PolicyLayer's policy JSON.
//!
//! # Layout
//! - `json`: strict JSON parsing (duplicate keys refused), for documents and tool arguments.
//! - `document`: the document's types and its validation (every problem, with JSON pointers).
//! - `compile`: a validated document turned into lookup tables and pre-built regexes.
//! - `evaluate`: (policy, tool, arguments) → [`Decision`].
//!
//! This crate never performs I/O and has no async runtime: it is pure, so it can be fuzzed,
//! benchmarked and reused on its own. Reading files and watching them is the gateway's job.

pub mod compile;
pub mod document;
pub mod evaluate;
pub mod json;

pub use compile::Policy;
pub use document::{Approval, ApprovalMode, DefaultAction, Limit, Problem, Scope, Window};
pub use evaluate::{DEFAULT_DENY_RULE, Decision, HIDDEN_RULE};
