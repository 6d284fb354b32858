//! Calls that span several requests, and the state that binds each later request to the grant
//! whose call began it:
//!
//! - Multi round-trip requests (2026-07-28): an upstream answers a `tools/call` with
//!   `resultType: "input_required"` and an opaque `requestState`; the client retries the same
//!   call with `inputResponses` and that state. The retry is decided by the policy again like
//!   any call, and its `requestState` must be one the gateway relayed to the same grant for the
//!   same tool, so that no grant resumes another grant's call, or another tool's, on a state it
//!   did not get. A state resumes once. The first round is counted against the limits like any
//!   call; its reservation waits with the state, and the retry carries it on instead of
//!   counting again (once per logical call), to be settled on how the call ends: an error
//!   gives it back, a completed call keeps it, a state never used keeps it.
//! - Tasks (2025-11-25 `CreateTaskResult {task: {taskId}}`, 2026-07-28 `resultType: "task"`
//!   with `taskId`): a task-augmented call is decided like any call; the task it creates
//!   belongs to the grant, and `tasks/get`, `tasks/result`, `tasks/update`, `tasks/cancel`
//!   reach the upstream only for the grant's own tasks (another grant's task id is unknown,
//!   -32602); `tasks/list` shows only the grant's own. The call's counters stay reserved with
//!   its task and settle on its final outcome as a plain call's answer would: a failed or
//!   cancelled task (or a JSON-RPC error from `tasks/result`) gives them back.
//!
//! Both tables are bounded in entries and time; past the bound nothing new is recorded, so a
//! later request that would need the record is refused (fail closed).

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::HotMap;
use crate::counters::Reservation;
use crate::jsonrpc::{self, Envelope};

/// How long a relayed `requestState` may be used for a retry.
const STATE_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a task is remembered after its last use (a task's own TTL is the upstream's).
const TASK_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Entries per table.
const MAX_ENTRIES: usize = 65_536;

/// The methods that name a task by `params.taskId`.
pub const TASK_METHODS: [&str; 4] = ["tasks/get", "tasks/result", "tasks/update", "tasks/cancel"];

struct Issued {
    grant: Arc<str>,
    tool: Arc<str>,
    at: Instant,
    /// The call's counters, carried on to its retry.
    reservation: Mutex<Option<Reservation>>,
}

struct TaskEntry {
    grant: Arc<str>,
    /// The creating call's counters, until its outcome is known.
    reservation: Mutex<Option<Reservation>>,
    at: Mutex<Instant>,
}

/// What the gateway remembers of calls in progress across requests.
#[derive(Default)]
pub struct Continuations {
    /// SHA-256 of a relayed `requestState` → who may retry with it.
    states: HotMap<[u8; 32], Issued>,
    /// (server, task id) → its grant and reservation.
    tasks: HotMap<(Arc<str>, Box<str>), TaskEntry>,
}

/// Why a continuing request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Unbound {
    /// A `requestState` the gateway did not relay to this grant for this tool.
    State,
    /// A task id that is not this grant's.
    Task,
}

impl Continuations {
    /// Whether a `tools/call` carrying `requestState` may go on: the state must have been
    /// relayed to this grant, for this tool, within `STATE_TTL`, and not used since. Taking it
    /// uses it up, and hands over the reservation the call's earlier round left with it.
    pub fn take_state(
        &self,
        grant: &str,
        tool: &str,
        state: &str,
    ) -> Result<Option<Reservation>, Unbound> {
        let taken = self.states.remove_if(&digest(state), |_, i| {
            &*i.grant == grant && &*i.tool == tool && i.at.elapsed() < STATE_TTL
        });
        match taken {
            Some((_, i)) => Ok(i.reservation.into_inner().expect("state lock")),
            None => Err(Unbound::State),
        }
    }

    /// Whether a task-naming request may go on: the task must be this grant's.
    pub fn check_task(&self, server: &Arc<str>, grant: &str, task: &str) -> Result<(), Unbound> {
        let key = (server.clone(), Box::<str>::from(task));
        match self.tasks.get(&key) {
            Some(t) if &*t.grant == grant => {
                *t.at.lock().expect("task lock") = Instant::now();
                Ok(())
            }
            _ => Err(Unbound::Task),
        }
    }

    /// Whether `task` on `server` is this grant's (for filtering `tasks/list`).
    pub fn owns(&self, server: &Arc<str>, grant: &str, task: &str) -> bool {
        let key = (server.clone(), Box::<str>::from(task));
        self.tasks.get(&key).is_some_and(|t| &*t.grant == grant)
    }

    fn make_room<K: std::hash::Hash + Eq + Clone, V>(
        map: &HotMap<K, V>,
        expired: impl Fn(&V) -> bool,
    ) -> bool {
        if map.len() < MAX_ENTRIES {
            return true;
        }
        map.retain(|_, v| !expired(v));
        map.len() < MAX_ENTRIES
    }

    /// Reads one answer to a `tools/call` for what must be remembered: a `requestState` to
    /// bind, or a task to own. Returns the task id when the answer created a task.
    pub fn record_call_answer(
        &self,
        server: &Arc<str>,
        grant: &Arc<str>,
        tool: &Arc<str>,
        message: &[u8],
    ) -> Option<Box<str>> {
        // Every call's answer passes here; almost none leaves anything to remember, and a
        // substring search spares those a second parse.
        if !may_continue(message) {
            return None;
        }
        let answer = read_answer(message)?;
        if let Some(state) = answer.request_state {
            if Self::make_room(&self.states, |i| i.at.elapsed() >= STATE_TTL) {
                self.states.insert(
                    digest(&state),
                    Issued {
                        grant: grant.clone(),
                        tool: tool.clone(),
                        at: Instant::now(),
                        reservation: Mutex::new(None),
                    },
                );
            } else {
                tracing::warn!("{MAX_ENTRIES} request states held; this one is not kept");
            }
        }
        let task = answer.created_task?;
        if Self::make_room(&self.tasks, |t| {
            t.at.lock().expect("task lock").elapsed() >= TASK_TTL
        }) {
            self.tasks.insert(
                (server.clone(), task.clone()),
                TaskEntry {
                    grant: grant.clone(),
                    reservation: Mutex::new(None),
                    at: Mutex::new(Instant::now()),
                },
            );
            Some(task)
        } else {
            tracing::warn!("{MAX_ENTRIES} tasks held; this one is not kept");
            None
        }
    }

    /// Keeps a call's counters with what its answer left to finish it (recorded by
    /// `record_call_answer`): the `requestState` its retry will carry, or the task it created.
    /// Returns the reservation when the answer left neither (or one the gateway did not keep).
    pub fn hold(
        &self,
        server: &Arc<str>,
        answer: &[u8],
        reservation: Reservation,
    ) -> Option<Reservation> {
        let Some(answer) = read_answer(answer) else {
            return Some(reservation);
        };
        if let Some(state) = answer.request_state {
            return match self.states.get(&digest(&state)) {
                Some(i) => {
                    *i.reservation.lock().expect("state lock") = Some(reservation);
                    None
                }
                None => Some(reservation),
            };
        }
        let Some(task) = answer.created_task else {
            return Some(reservation);
        };
        match self.tasks.get(&(server.clone(), task)) {
            Some(t) => {
                *t.reservation.lock().expect("task lock") = Some(reservation);
                None
            }
            None => Some(reservation),
        }
    }

    /// Reads an answer to a task-naming request for the task's outcome. A terminal outcome
    /// hands back the call's reservation: `Some((reservation, failed))`.
    pub fn settle_task(
        &self,
        server: &Arc<str>,
        task: &str,
        method: &str,
        message: &[u8],
    ) -> Option<(Reservation, bool)> {
        let failed = match task_outcome(method, message)? {
            Outcome::Completed => false,
            Outcome::Failed => true,
        };
        let key = (server.clone(), Box::<str>::from(task));
        let t = self.tasks.get(&key)?;
        let r = t.reservation.lock().expect("task lock").take()?;
        Some((r, failed))
    }

    /// Keeps only this grant's tasks in a `tasks/list` answer. An answer that cannot be read
    /// is replaced by an error (a list that cannot be filtered is not shown).
    pub fn filter_task_list(&self, server: &Arc<str>, grant: &str, message: Bytes) -> Bytes {
        let Ok(env) = Envelope::parse(&message) else {
            return message;
        };
        let (Some(id), Some(result)) = (env.id, env.result) else {
            return message;
        };
        #[derive(Deserialize)]
        struct List<'a> {
            #[serde(borrow)]
            tasks: &'a RawValue,
        }
        #[derive(Deserialize)]
        struct Item<'a> {
            #[serde(borrow, rename = "taskId")]
            task_id: Cow<'a, str>,
        }
        let fail = || {
            jsonrpc::error_response(
                Some(id.get()),
                jsonrpc::INTERNAL_ERROR,
                "upstream tasks/list could not be read",
            )
        };
        let Ok(list) = serde_json::from_str::<List>(result.get()) else {
            return fail();
        };
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(list.tasks.get()) else {
            return fail();
        };
        let mut kept = Vec::with_capacity(list.tasks.get().len());
        kept.push(b'[');
        for raw in items {
            let Ok(item) = serde_json::from_str::<Item>(raw.get()) else {
                return fail();
            };
            if self.owns(server, grant, &item.task_id) {
                if kept.len() > 1 {
                    kept.push(b',');
                }
                kept.extend_from_slice(raw.get().as_bytes());
            }
        }
        kept.push(b']');
        match jsonrpc::span_in(&message, list.tasks.get()) {
            Some(range) => jsonrpc::splice(&message, range, &kept),
            None => fail(),
        }
    }
}

/// The searches every call's params and answer go through before anything is parsed, built
/// once: `memmem::find` builds its searcher again on each call.
static REQUEST_STATE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("requestState"));
static TASK_ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("taskId"));

/// Whether a message may carry a `requestState` or a task id (a substring test, no parse).
pub fn may_continue(message: &[u8]) -> bool {
    REQUEST_STATE.find(message).is_some() || TASK_ID.find(message).is_some()
}

fn digest(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

/// `params.taskId` of a task-naming request, and `params.requestState` of a retried call.
#[derive(Deserialize, Default)]
pub struct ContinuedParams<'a> {
    #[serde(borrow, rename = "taskId")]
    pub task_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "requestState")]
    pub request_state: Option<Cow<'a, str>>,
}

impl<'a> ContinuedParams<'a> {
    pub fn read(params: Option<&'a RawValue>) -> ContinuedParams<'a> {
        params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default()
    }

    /// `requestState`, when the params have one. Every call is asked, and almost none has
    /// one: a substring search spares the others a second parse of their arguments.
    pub fn request_state(params: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
        let p = params?;
        REQUEST_STATE.find(p.get().as_bytes())?;
        ContinuedParams::read(Some(p)).request_state
    }
}

/// What an answer to a `tools/call` says that must be remembered.
struct CallAnswer {
    request_state: Option<String>,
    created_task: Option<Box<str>>,
}

fn read_answer(message: &[u8]) -> Option<CallAnswer> {
    #[derive(Deserialize)]
    struct Result<'a> {
        #[serde(borrow, rename = "resultType")]
        result_type: Option<Cow<'a, str>>,
        #[serde(borrow, rename = "requestState")]
        request_state: Option<Cow<'a, str>>,
        #[serde(borrow, rename = "taskId")]
        task_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        task: Option<TaskRef<'a>>,
    }
    #[derive(Deserialize)]
    struct TaskRef<'a> {
        #[serde(borrow, rename = "taskId")]
        task_id: Cow<'a, str>,
    }
    let env = Envelope::parse(message).ok()?;
    let result: Result = serde_json::from_str(env.result?.get()).ok()?;
    let request_state = (result.result_type.as_deref() == Some("input_required"))
        .then_some(result.request_state)
        .flatten()
        .map(Cow::into_owned);
    let created_task = match (result.result_type.as_deref(), result.task_id, result.task) {
        (Some("task"), Some(id), _) => Some(id),
        (_, _, Some(t)) => Some(t.task_id),
        _ => None,
    }
    .map(|id| Box::from(&*id));
    Some(CallAnswer {
        request_state,
        created_task,
    })
}

enum Outcome {
    Completed,
    Failed,
}

/// The final outcome a task-naming request's answer reports, if any: a `tasks/get` (or
/// `tasks/cancel`) status of completed, failed or cancelled; a `tasks/result` answer is final
/// itself (a result completes the call, a JSON-RPC error fails it).
fn task_outcome(method: &str, message: &[u8]) -> Option<Outcome> {
    #[derive(Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
    }
    let env = Envelope::parse(message).ok()?;
    if method == "tasks/result" {
        return match (env.result, env.error) {
            (_, Some(_)) => Some(Outcome::Failed),
            (Some(_), None) => Some(Outcome::Completed),
            _ => None,
        };
    }
    let status: Status = serde_json::from_str(env.result?.get()).ok()?;
    match status.status.as_deref()? {
        "completed" => Some(Outcome::Completed),
        "failed" | "cancelled" => Some(Outcome::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_request_state_binds_to_its_grant_and_tool() {
        let c = Continuations::default();
        let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"a":{"method":"elicitation/create","params":{}}},"requestState":"s-1"}}"#;
        let task = c.record_call_answer(&arc("srv"), &arc("g1"), &arc("refund"), answer);
        assert_eq!(task, None);
        let taken = |c: &Continuations, g, t, s| c.take_state(g, t, s).map(|r| r.is_some());
        assert_eq!(taken(&c, "g2", "refund", "s-1"), Err(Unbound::State));
        assert_eq!(taken(&c, "g1", "delete", "s-1"), Err(Unbound::State));
        assert_eq!(taken(&c, "g1", "refund", "s-2"), Err(Unbound::State));
        // The call's reservation waits with its state and goes on with the retry, once.
        let held = c.hold(&arc("srv"), answer, Reservation { taken: Vec::new() });
        assert!(held.is_none(), "held with the state");
        assert_eq!(taken(&c, "g1", "refund", "s-1"), Ok(true));
        assert_eq!(
            taken(&c, "g1", "refund", "s-1"),
            Err(Unbound::State),
            "used up"
        );
        // A complete result's stray requestState is not a state to resume.
        let done = br#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","content":[],"requestState":"s-3"}}"#;
        c.record_call_answer(&arc("srv"), &arc("g1"), &arc("refund"), done);
        assert_eq!(taken(&c, "g1", "refund", "s-3"), Err(Unbound::State));
    }

    #[test]
    fn tasks_belong_to_their_grant_in_both_forms() {
        let c = Continuations::default();
        let v1 = br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t-1","status":"working","createdAt":"x","lastUpdatedAt":"x"}}}"#;
        let v2 = br#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"task","taskId":"t-2","status":"working"}}"#;
        let srv = arc("srv");
        assert_eq!(
            c.record_call_answer(&srv, &arc("g1"), &arc("t"), v1)
                .as_deref(),
            Some("t-1")
        );
        assert_eq!(
            c.record_call_answer(&srv, &arc("g1"), &arc("t"), v2)
                .as_deref(),
            Some("t-2")
        );
        assert_eq!(c.check_task(&srv, "g1", "t-1"), Ok(()));
        assert_eq!(c.check_task(&srv, "g1", "t-2"), Ok(()));
        assert_eq!(c.check_task(&srv, "g2", "t-1"), Err(Unbound::Task));
        assert_eq!(c.check_task(&arc("other"), "g1", "t-1"), Err(Unbound::Task));
        assert_eq!(c.check_task(&srv, "g1", "t-9"), Err(Unbound::Task));
    }

    #[test]
    fn a_task_list_shows_only_the_grants_own() {
        let c = Continuations::default();
        let srv = arc("srv");
        for (grant, id) in [("g1", "a"), ("g2", "b"), ("g1", "c")] {
            let answer = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"resultType":"task","taskId":"{id}","status":"working"}}}}"#
            );
            c.record_call_answer(&srv, &arc(grant), &arc("t"), answer.as_bytes());
        }
        let list = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":5,"result":{"tasks":[{"taskId":"a","status":"working"},{"taskId":"b","status":"working"},{"taskId":"z"},{"taskId":"c","status":"completed"}],"nextCursor":"n"}}"#,
        );
        assert_eq!(
            &c.filter_task_list(&srv, "g1", list)[..],
            br#"{"jsonrpc":"2.0","id":5,"result":{"tasks":[{"taskId":"a","status":"working"},{"taskId":"c","status":"completed"}],"nextCursor":"n"}}"#
        );
        let bad = Bytes::from_static(br#"{"jsonrpc":"2.0","id":5,"result":{"tasks":[{"id":1}]}}"#);
        let v: serde_json::Value =
            serde_json::from_slice(&c.filter_task_list(&srv, "g1", bad)).unwrap();
        assert_eq!(v["error"]["code"], jsonrpc::INTERNAL_ERROR);
    }

    #[test]
    fn a_tasks_outcome_is_read_from_its_status_or_its_result() {
        let status = |s: &str| {
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"taskId":"t","status":"{s}"}}}}"#)
        };
        let read = |m: &str, body: &str| match task_outcome(m, body.as_bytes()) {
            Some(Outcome::Completed) => "completed",
            Some(Outcome::Failed) => "failed",
            None => "open",
        };
        assert_eq!(read("tasks/get", &status("working")), "open");
        assert_eq!(read("tasks/get", &status("input_required")), "open");
        assert_eq!(read("tasks/get", &status("completed")), "completed");
        assert_eq!(read("tasks/get", &status("failed")), "failed");
        assert_eq!(read("tasks/cancel", &status("cancelled")), "failed");
        assert_eq!(
            read(
                "tasks/result",
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#
            ),
            "completed"
        );
        assert_eq!(
            read(
                "tasks/result",
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}"#
            ),
            "failed"
        );
    }
}
