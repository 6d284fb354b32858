//! The session table: agent sessions (`Mcp-Session-Id`), the grant each belongs to, and the
//! upstream session behind each.
//!
//! Session ids are 128 random bits, minted by the gateway; the upstream's own ids stay inside.
//! A session is bound to the grant that opened it and is never usable with another grant.
//! The table is sharded (DashMap), so sessions never contend on one global lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::HotMap;

use crate::grants::Grant;
use crate::upstream::http::HttpSession;
use crate::upstream::stdio::StdioSession;

pub enum UpstreamSession {
    Stdio(StdioSession),
    Http(HttpSession),
}

pub struct Session {
    pub id: Arc<str>,
    pub grant: Arc<Grant>,
    pub upstream: UpstreamSession,
    /// Milliseconds since the table's epoch at the last request.
    last_seen_ms: AtomicU64,
    /// GET streams currently open; a session with one is not idle.
    open_streams: AtomicUsize,
    /// Cancelled when the session ends, so that its open streams end with it.
    pub ended: tokio_util::sync::CancellationToken,
}

/// Why a session id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Unknown or ended: 404, so that the client initializes again.
    NotFound,
    /// Opened by another grant: 403.
    OtherGrant,
}

pub struct SessionTable {
    sessions: HotMap<Arc<str>, Arc<Session>>,
    epoch: Instant,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable {
            sessions: HotMap::default(),
            epoch: Instant::now(),
        }
    }
}

/// A fresh session id: 128 bits from the thread-local CSPRNG (seeded from the OS), as hex.
pub fn new_session_id() -> Arc<str> {
    format!("{:032x}", rand::random::<u128>()).into()
}

impl SessionTable {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn insert(&self, grant: Arc<Grant>, upstream: UpstreamSession) -> Arc<Session> {
        let session = Arc::new(Session {
            id: new_session_id(),
            grant,
            upstream,
            last_seen_ms: AtomicU64::new(self.now_ms()),
            open_streams: AtomicUsize::new(0),
            ended: tokio_util::sync::CancellationToken::new(),
        });
        self.sessions.insert(session.id.clone(), session.clone());
        session
    }

    /// Looks a session up for `grant`, marking it used.
    pub fn get(&self, id: &str, grant: &Grant) -> Result<Arc<Session>, SessionRefusal> {
        let session = self
            .sessions
            .get(id)
            .map(|s| s.clone())
            .ok_or(SessionRefusal::NotFound)?;
        // Grant ids are public labels, not secrets: a plain comparison is fine here.
        if session.grant.id != grant.id {
            return Err(SessionRefusal::OtherGrant);
        }
        session.last_seen_ms.store(self.now_ms(), Ordering::Relaxed);
        Ok(session)
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.remove(id).map(|(_, s)| s)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Removes sessions idle for longer than `idle` (and with no stream open); returns them so
    /// the caller can end their upstream sessions outside the table's locks.
    pub fn take_idle(&self, idle: Duration) -> Vec<Arc<Session>> {
        let now = self.now_ms();
        let idle_ms = idle.as_millis() as u64;
        let mut ended = Vec::new();
        self.sessions.retain(|_, s| {
            let quiet = now.saturating_sub(s.last_seen_ms.load(Ordering::Relaxed)) > idle_ms
                && s.open_streams.load(Ordering::Relaxed) == 0;
            if quiet {
                ended.push(s.clone());
            }
            !quiet
        });
        ended
    }

    /// Removes the sessions `pred` picks and returns them (to be closed by the caller).
    pub fn take_where(&self, pred: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        let mut taken = Vec::new();
        self.sessions.retain(|_, s| {
            let take = pred(s);
            if take {
                taken.push(s.clone());
            }
            !take
        });
        taken
    }

    /// Every session, removed: used at shutdown.
    pub fn drain(&self) -> Vec<Arc<Session>> {
        let ids: Vec<Arc<str>> = self.sessions.iter().map(|e| e.key().clone()).collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }
}

impl Session {
    /// Counts an open GET stream until the returned guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Ends the upstream side (HTTP: DELETE upstream; stdio: the child ends when dropped).
    pub async fn close(&self) {
        self.ended.cancel();
        if let UpstreamSession::Http(h) = &self.upstream {
            h.close().await;
        }
    }
}

pub struct StreamGuard(Arc<Session>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
