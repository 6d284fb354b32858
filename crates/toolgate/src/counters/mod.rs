//! Counters and rate limits (SPEC 5): the `limits` of a policy, reserved atomically (all the
//! counters of one call, or none) before a call goes upstream, and released when it fails.
//!
//! - `window`: the counting rule and why it keeps "at most max per window" exact.
//! - `embedded`: the default store, in memory with a snapshot on disk (survives restarts).
//! - `redis`: Redis/Valkey, shared by several gateway replicas (one Lua script per call).
//!
//! Both stores implement [`CounterStore`]; [`Counters`] picks one at start and dispatches to
//! it without boxing (the request path calls it on every limited call).

pub mod embedded;
pub mod redis;
pub mod window;

use std::future::Future;
use std::sync::Arc;

use toolgate_policy::{Scope, Window};

/// Which counter: server, scope, the scope's id (grant, session or nothing) and the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub server: Arc<str>,
    pub scope: Scope,
    /// The grant or session id; empty for `server` scope.
    pub owner: Arc<str>,
    pub name: Arc<str>,
}

impl CounterKey {
    /// A stable text form (a JSON list, so no part can be confused with a separator), for
    /// the embedded snapshot and Redis keys.
    pub fn text(&self) -> String {
        serde_json::to_string(&[
            &*self.server,
            self.scope.as_str(),
            &*self.owner,
            &*self.name,
        ])
        .expect("strings serialize")
    }

    pub fn parse(text: &str) -> Option<CounterKey> {
        let [server, scope, owner, name]: [String; 4] = serde_json::from_str(text).ok()?;
        let scope = match scope.as_str() {
            "grant" => Scope::Grant,
            "session" => Scope::Session,
            "server" => Scope::Server,
            _ => return None,
        };
        Some(CounterKey {
            server: server.into(),
            scope,
            owner: owner.into(),
            name: name.into(),
        })
    }
}

/// One counter a call must fit in.
#[derive(Debug, Clone)]
pub struct Need {
    pub key: CounterKey,
    pub window: Window,
    pub max: u64,
    /// The limit's JSON pointer (`/tools/NAME/limits/COUNTER`), for the denial.
    pub rule: Arc<str>,
}

/// Counters taken by one call, to give back if the call fails upstream.
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    /// Each counter and the bucket the call was counted in.
    pub taken: Vec<(CounterKey, Window, i64)>,
}

/// A call that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub counter: String,
    pub max: u64,
    pub window: Window,
    pub rule: Arc<str>,
    pub retry_after_s: u64,
}

/// The store could not be asked (Redis down...). What that means is `on_error`'s call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("counter store unavailable: {0}")]
pub struct StoreError(pub String);

pub type ReserveResult = Result<Result<Reservation, Limited>, StoreError>;

/// A place counters live. Reserving is all-or-none across every `Need` of one call.
pub trait CounterStore: Send + Sync {
    fn reserve(&self, needs: &[Need]) -> impl Future<Output = ReserveResult> + Send;
    fn release(&self, reservation: Reservation) -> impl Future<Output = ()> + Send;
}

/// Where "now" comes from: the wall clock, or a hand-set one in tests of the window rules.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// Wall-clock time: counts survive a restart, so they are kept against real time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// What to do with a call when the store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail closed (the default): the call is refused.
    Deny,
    /// Fail open: the call goes on uncounted.
    Allow,
}

/// The configured store.
pub enum Counters {
    Embedded(Arc<embedded::EmbeddedStore>),
    Redis(Box<redis::RedisStore>),
}

impl CounterStore for Counters {
    async fn reserve(&self, needs: &[Need]) -> ReserveResult {
        match self {
            Counters::Embedded(s) => s.reserve(needs).await,
            Counters::Redis(s) => s.reserve(needs).await,
        }
    }

    async fn release(&self, reservation: Reservation) {
        match self {
            Counters::Embedded(s) => s.release(reservation).await,
            Counters::Redis(s) => s.release(reservation).await,
        }
    }
}

pub fn window_ms(w: Window) -> i64 {
    w.duration().as_millis() as i64
}

/// The denial text of SPEC 3.
pub fn limited_message(l: &Limited) -> String {
    format!(
        "Rate limit of {} per {} reached for counter {}; retry in {} s",
        l.max,
        l.window.as_str(),
        l.counter,
        l.retry_after_s
    )
}
