//! The steps around forwarding an allowed call: reserve its counters before it goes upstream
//! (SPEC 3 step 4), and settle them once the upstream has answered (step 7): a JSON-RPC error
//! or an unreachable upstream gives the calls back; a tool result, even `isError: true`, is a
//! completed call and keeps them.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use toolgate_policy::Scope;

use super::Binding;
use super::decide::AllowedCall;
use crate::answers;
use crate::audit::Outcome;
use crate::counters::{CounterKey, CounterStore, Counters, Need, Reservation};
use crate::gateway::Gateway;
use crate::grants::Grant;
use crate::jsonrpc::AnswerSummary;
use crate::upstream::Reply;

/// Rule named when the counter store cannot be asked and `on_error` is deny.
pub const STORE_UNAVAILABLE_RULE: &str = "(counter store unavailable)";

/// Reserves every counter of the call at once. `Err` is the answer for the agent: the call
/// does not fit (a rate-limit denial), or the store is down and `on_error` is deny.
pub async fn reserve(
    gw: &Gateway,
    grant: &Grant,
    binding: &Binding,
    server: &Arc<str>,
    call: &AllowedCall,
    id: &str,
) -> Result<Option<Reservation>, (Bytes, Outcome, String)> {
    if call.limits.is_empty() {
        return Ok(None);
    }
    // Under the stateless protocol there is no session: a session limit counts per grant.
    let session = match binding {
        Binding::Session(s) => s.id.clone(),
        _ => grant.id.clone(),
    };
    let needs: smallvec::SmallVec<[Need; 4]> = call
        .limits
        .iter()
        .map(|l| Need {
            key: CounterKey {
                server: server.clone(),
                scope: l.scope,
                owner: match l.scope {
                    Scope::Grant => grant.id.clone(),
                    Scope::Session => session.clone(),
                    Scope::Server => Arc::from(""),
                },
                name: l.counter.clone(),
            },
            window: l.window,
            max: l.max,
            rule: l.rule.clone(),
        })
        .collect();
    match gw.counters.reserve(&needs).await {
        Ok(Ok(reservation)) => Ok(Some(reservation)),
        Ok(Err(limited)) => Err((
            answers::limited(id, &limited, call.policy_version, call.revision),
            Outcome::Limited,
            limited.rule.to_string(),
        )),
        Err(e) if gw.config.counters.on_error_allow => {
            crate::telemetry::counter_store_error();
            tracing::warn!("{e}; the call goes on uncounted (counters.on_error = \"allow\")");
            Ok(None)
        }
        Err(e) => {
            crate::telemetry::counter_store_error();
            tracing::warn!("{e}; the call is refused (counters.on_error = \"deny\")");
            let message = "Rate limits cannot be checked right now, so the call is refused; try again shortly";
            let body = answers::denial(
                id,
                message,
                STORE_UNAVAILABLE_RULE,
                Some(call.policy_version),
                call.revision,
            );
            Err((body, Outcome::Deny, STORE_UNAVAILABLE_RULE.to_string()))
        }
    }
}

/// Watches the upstream's answer and gives the counters back if the call failed there. The
/// counters are given back before the agent has the answer, so a retry that follows a failure
/// at once finds its quota there. (Redis can take up to about 1.5 s when it is failing: its
/// connect and response timeouts and one retry.) With the reply goes what was read in a JSON
/// body, when it was read, for the audit record.
///
/// A call that created a task, or that the upstream answered `input_required`, keeps its
/// counters with the task or the `requestState`, to be settled on how the call ends
/// (`continued.rs`).
pub async fn settle(
    counters: &Arc<Counters>,
    reservation: Option<Reservation>,
    reply: Reply,
    held: Option<CallHold>,
) -> (Reply, Option<Option<AnswerSummary>>) {
    let Some(reservation) = reservation else {
        return (reply, None);
    };
    let reply = match reply {
        Reply::Json { status, body } => {
            let summary = crate::jsonrpc::summarize(&body);
            if let Some(r) = not_kept(summary, reservation, &body, held.as_ref()) {
                release(counters, r).await;
            }
            return (Reply::Json { status, body }, Some(summary));
        }
        // No JSON-RPC answer at all (an HTTP error from the upstream): the call did not happen.
        Reply::Status { .. } => {
            release(counters, reservation).await;
            reply
        }
        Reply::Stream(events) => {
            let counters = counters.clone();
            let mut pending = Some(reservation);
            Reply::Stream(
                events
                    .then(move |e| {
                        // The answer is the stream's one response event; released (when it
                        // failed) before that event goes on to the agent.
                        let answered = pending.is_some() && crate::jsonrpc::is_response(&e.data);
                        let give_back = pending
                            .take_if(|_| answered)
                            .and_then(|r| {
                                let summary = crate::jsonrpc::summarize(&e.data);
                                not_kept(summary, r, &e.data, held.as_ref())
                            })
                            .map(|r| (counters.clone(), r));
                        async move {
                            if let Some((counters, r)) = give_back {
                                release(&counters, r).await;
                            }
                            e
                        }
                    })
                    .boxed(),
            )
        }
        Reply::Accepted => reply,
    };
    (reply, None)
}

/// Where a call's counters wait when its answer leaves it unfinished (a task, a
/// `requestState` to retry with).
pub struct CallHold {
    pub continued: Arc<super::Continuations>,
    pub server: Arc<str>,
}

/// What happens to a call's reservation once its answer is read: None when it stays taken
/// (the call happened, or what finishes it holds it), Some when it must be given back.
fn not_kept(
    summary: Option<AnswerSummary>,
    reservation: Reservation,
    answer: &[u8],
    held: Option<&CallHold>,
) -> Option<Reservation> {
    if failed(summary) {
        return Some(reservation);
    }
    let input_required = summary == Some(AnswerSummary::InputRequired);
    match held {
        Some(h) if input_required || super::continued::may_continue(answer) => {
            // An unfinished call that the gateway could not keep a record of cannot be
            // resumed: given back. A task it did not record still ran: the call counts.
            h.continued
                .hold(&h.server, answer, reservation)
                .filter(|_| input_required)
        }
        _ => input_required.then_some(reservation),
    }
}

/// Gives a reservation back, in a task of its own that is awaited: the agent may go away (and
/// its request be dropped) mid-release, and the release must still finish.
pub async fn release(counters: &Arc<Counters>, reservation: Reservation) {
    let counters = counters.clone();
    let _ = tokio::spawn(async move { counters.release(reservation).await }).await;
}

/// Whether the call failed upstream, so that it did not happen: a JSON-RPC error, except a
/// timeout (the upstream got the call and may still carry it out, so it keeps its count).
fn failed(summary: Option<AnswerSummary>) -> bool {
    matches!(
        summary,
        Some(AnswerSummary::Error { code }) if code != Some(crate::jsonrpc::REQUEST_TIMEOUT)
    )
}
