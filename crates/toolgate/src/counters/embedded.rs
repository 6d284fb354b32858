//! The embedded counter store: counters in memory, a snapshot on disk.
//!
//! Each counter has its own lock (a sharded map holds them), so calls on different counters
//! never wait for each other; the counters of one call are locked in key order, checked, and
//! counted together, so a call takes all of them or none, and two calls can never deadlock.
//!
//! Durability: the snapshot (`counters.json` in the state directory) is rewritten atomically
//! once a second when something changed, and on shutdown; it is read on start, so a restart
//! does not hand a day quota back. A crash (SIGKILL, power loss) can forget at most the calls
//! of the last second — the price of keeping disk writes off the request path. Several
//! replicas need the Redis store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::window::Counter;
use super::{
    Clock, CounterKey, CounterStore, Limited, Need, Reservation, ReserveResult, window_ms,
};
use crate::HotMap;

pub const SNAPSHOT_FILE: &str = "counters.json";
/// How often a changed store is written to disk.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

pub struct EmbeddedStore {
    counters: HotMap<CounterKey, Arc<Mutex<Counter>>>,
    clock: Arc<dyn Clock>,
    snapshot: Option<PathBuf>,
    dirty: AtomicBool,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    counters: HashMap<String, Saved>,
}

/// A counter as saved: its window and only the slots that hold calls.
#[derive(Serialize, Deserialize)]
struct Saved {
    window_ms: i64,
    slots: Vec<super::window::Slot>,
}

impl EmbeddedStore {
    /// A store kept only in memory (tests of the window rules).
    pub fn in_memory(clock: Arc<dyn Clock>) -> EmbeddedStore {
        EmbeddedStore {
            counters: HotMap::default(),
            clock,
            snapshot: None,
            dirty: AtomicBool::new(false),
        }
    }

    /// Opens the store whose snapshot lives in `state_dir`, reading it if there is one.
    pub fn open(
        state_dir: &std::path::Path,
        clock: Arc<dyn Clock>,
    ) -> Result<EmbeddedStore, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let path = state_dir.join(SNAPSHOT_FILE);
        let store = EmbeddedStore {
            snapshot: Some(path.clone()),
            ..EmbeddedStore::in_memory(clock)
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let snap: Snapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a counter snapshot ({e}); move it away to start with empty counters", path.display()))?;
                let now = store.clock.now_ms();
                for (text, saved) in snap.counters {
                    let counter = Counter::from_slots(saved.window_ms, &saved.slots);
                    if let Some(key) = CounterKey::parse(&text)
                        && !counter.is_idle(now)
                    {
                        store.counters.insert(key, Arc::new(Mutex::new(counter)));
                    }
                }
                tracing::info!(
                    counters = store.counters.len(),
                    "counters restored from {}",
                    path.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        Ok(store)
    }

    fn counter(&self, key: &CounterKey, window_ms: i64) -> Arc<Mutex<Counter>> {
        if let Some(c) = self.counters.get(key) {
            return c.clone();
        }
        self.counters
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Counter::new(window_ms))))
            .clone()
    }

    /// Checks and counts every need at once (see the module comment for the locking order).
    fn reserve_now(&self, needs: &[Need]) -> Result<Reservation, Limited> {
        // A call names a handful of counters: the working lists stay on the stack.
        let mut needs: SmallVec<[&Need; 4]> = needs.iter().collect();
        // One counter named twice (under all_tools and the tool) is counted once, against
        // the smaller max.
        needs.sort_by(|a, b| a.key.cmp(&b.key).then(a.max.cmp(&b.max)));
        needs.dedup_by(|a, b| a.key == b.key);
        let counters: SmallVec<[Arc<Mutex<Counter>>; 4]> = needs
            .iter()
            .map(|n| self.counter(&n.key, window_ms(n.window)))
            .collect();
        let mut guards: SmallVec<[_; 4]> = counters
            .iter()
            .map(|c| c.lock().expect("counter lock"))
            .collect();
        let now = self.clock.now_ms();
        for (need, counter) in needs.iter().zip(&guards) {
            if counter.used(now) >= need.max {
                return Err(Limited {
                    counter: need.key.name.to_string(),
                    max: need.max,
                    window: need.window,
                    rule: need.rule.clone(),
                    retry_after_s: counter.retry_after_s(now, need.max),
                });
            }
        }
        let taken = needs
            .iter()
            .zip(guards.iter_mut())
            .map(|(need, counter)| (need.key.clone(), need.window, counter.admit(now)))
            .collect();
        self.dirty.store(true, Ordering::Relaxed);
        Ok(Reservation { taken })
    }

    /// Writes the snapshot if anything changed since the last one (and forgets idle counters).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let now = self.clock.now_ms();
        self.counters.retain(|_, c| {
            // A counter some call holds (it looked it up and is about to lock it) stays,
            // idle or not: forgetting it would let that call count where no one looks.
            // Lookups take the map's shard lock, which `retain` holds, so none can start.
            Arc::strong_count(c) > 1 || !c.lock().expect("counter lock").is_idle(now)
        });
        let counters = self
            .counters
            .iter()
            .map(|e| {
                let c = e.value().lock().expect("counter lock");
                let slots = c.slots.iter().filter(|s| s.count > 0).copied().collect();
                (
                    e.key().text(),
                    Saved {
                        window_ms: c.window_ms,
                        slots,
                    },
                )
            })
            .collect();
        let bytes = serde_json::to_vec(&Snapshot {
            version: 1,
            counters,
        })
        .expect("snapshot serializes");
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Saves once a second, off the request path, until the gateway stops.
    pub fn spawn_saver(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.save()).await {
                    Ok(Err(e)) => tracing::error!("cannot save counters: {e}"),
                    Err(e) => tracing::error!("counter saver failed: {e}"),
                    Ok(Ok(())) => {}
                }
            }
        });
    }
}

impl CounterStore for EmbeddedStore {
    async fn reserve(&self, needs: &[Need]) -> ReserveResult {
        Ok(self.reserve_now(needs))
    }

    async fn release(&self, reservation: Reservation) {
        for (key, _, bucket) in reservation.taken {
            if let Some(c) = self.counters.get(&key) {
                c.lock().expect("counter lock").release(bucket);
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;
    use toolgate_policy::{Scope, Window};

    pub struct ManualClock(pub AtomicI64);
    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn need(scope: Scope, owner: &str, name: &str, window: Window, max: u64) -> Need {
        Need {
            key: CounterKey {
                server: "s".into(),
                scope,
                owner: owner.into(),
                name: name.into(),
            },
            window,
            max,
            rule: format!("/tools/t/limits/{name}").into(),
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn all_or_none() {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let store = EmbeddedStore::in_memory(clock.clone());
        let a = need(Scope::Grant, "g", "a", Window::Minute, 2);
        let b = need(Scope::Grant, "g", "b", Window::Minute, 1);
        block(async {
            assert!(
                store
                    .reserve(std::slice::from_ref(&a))
                    .await
                    .unwrap()
                    .is_ok()
            );
            assert!(
                store
                    .reserve(&[a.clone(), b.clone()])
                    .await
                    .unwrap()
                    .is_ok()
            );
            // a has 2 of 2 now; b has 1 of 1. A call needing both is refused whole...
            let refused = store
                .reserve(&[a.clone(), b.clone()])
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(refused.counter, "a");
            assert_eq!(refused.retry_after_s, 60);
            // ...and took nothing from either.
            let b2 = need(Scope::Grant, "g", "b", Window::Minute, 2);
            assert!(store.reserve(&[b2]).await.unwrap().is_ok());
        });
    }

    #[test]
    fn release_settles_and_windows_refill_on_an_injected_clock() {
        let clock = Arc::new(ManualClock(AtomicI64::new(10_000_000)));
        let store = EmbeddedStore::in_memory(clock.clone());
        let n = need(Scope::Session, "s1", "calls", Window::Minute, 30);
        block(async {
            let mut last = None;
            for _ in 0..30 {
                last = Some(
                    store
                        .reserve(std::slice::from_ref(&n))
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            assert!(
                store
                    .reserve(std::slice::from_ref(&n))
                    .await
                    .unwrap()
                    .is_err()
            );
            store.release(last.unwrap()).await;
            assert!(
                store
                    .reserve(std::slice::from_ref(&n))
                    .await
                    .unwrap()
                    .is_ok(),
                "a released call frees its place"
            );
            assert!(
                store
                    .reserve(std::slice::from_ref(&n))
                    .await
                    .unwrap()
                    .is_err()
            );
            clock.0.fetch_add(60_000, Ordering::SeqCst);
            for i in 0..30 {
                assert!(
                    store
                        .reserve(std::slice::from_ref(&n))
                        .await
                        .unwrap()
                        .is_ok(),
                    "after a window, call {i}"
                );
            }
        });
    }

    #[test]
    fn the_same_counter_named_twice_counts_once_against_the_smaller_max() {
        let clock = Arc::new(ManualClock(AtomicI64::new(0)));
        let store = EmbeddedStore::in_memory(clock);
        let wide = need(Scope::Grant, "g", "w", Window::Minute, 10);
        let narrow = need(Scope::Grant, "g", "w", Window::Minute, 2);
        block(async {
            assert!(
                store
                    .reserve(&[wide.clone(), narrow.clone()])
                    .await
                    .unwrap()
                    .is_ok()
            );
            assert!(
                store
                    .reserve(&[wide.clone(), narrow.clone()])
                    .await
                    .unwrap()
                    .is_ok()
            );
            assert!(
                store
                    .reserve(&[wide.clone(), narrow.clone()])
                    .await
                    .unwrap()
                    .is_err()
            );
            assert!(store.reserve(&[wide]).await.unwrap().is_ok());
        });
    }

    #[test]
    fn snapshot_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock(AtomicI64::new(50_000_000)));
        let n = need(Scope::Grant, "g|with|bars", "day", Window::Day, 3);
        block(async {
            let store = EmbeddedStore::open(dir.path(), clock.clone()).unwrap();
            for _ in 0..3 {
                store
                    .reserve(std::slice::from_ref(&n))
                    .await
                    .unwrap()
                    .unwrap();
            }
            store.save().unwrap();
            drop(store);
            clock.0.fetch_add(3_600_000, Ordering::SeqCst);
            let reopened = EmbeddedStore::open(dir.path(), clock.clone()).unwrap();
            assert!(
                reopened
                    .reserve(std::slice::from_ref(&n))
                    .await
                    .unwrap()
                    .is_err(),
                "a day quota survives a restart"
            );
        });
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"not json").unwrap();
        assert!(
            EmbeddedStore::open(dir.path(), clock)
                .err()
                .unwrap()
                .contains("not a counter snapshot")
        );
    }
}
