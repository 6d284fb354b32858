//! The counting window behind every limit: "at most `max` calls in any interval of one
//! window's length" (SPEC 5), in memory bounded independently of `max`.
//!
//! A window of length W is cut into B buckets of g = W/B. Each bucket keeps its call count and
//! the time of its last call. At time t, a bucket counts fully while t < last + W, and not at
//! all after. Why that keeps the guarantee: take any half-open interval [s, s + W) and the last
//! call admitted in it, at t_e. Every earlier call c in the interval has t_c ≥ s > t_e - W, so
//! its bucket's `last` is ≥ t_c > t_e - W: its bucket still counted, whole, when t_e was
//! admitted, and t_e was admitted only if that count plus one was ≤ max. So no interval of
//! length W ever holds more than max admitted calls, however the calls fall on bucket edges.
//!
//! The cost of counting a bucket whole is refusing slightly early: a bucket's older calls are
//! counted until its newest one leaves the window, at most one bucket's worth (g) too long.
//! An idle counter has its whole quota back one window after its last call. A bucket more
//! than B + 1 buckets old can no longer count (its last call is older than W), so a ring of
//! B + 1 slots is all the memory a counter ever needs.
//!
//! The same rules are written in Lua for the Redis store (`redis.rs`); both are tested
//! against the same cases.

use serde::{Deserialize, Serialize};

/// Buckets per window: windows of 1 s, 1 min, 1 h and 1 day get buckets of 20 ms, 1.2 s,
/// 72 s and 28.8 min.
pub const BUCKETS: i64 = 50;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Absolute bucket number (time / bucket length).
    pub bucket: i64,
    pub count: u32,
    /// Time of the newest call counted in this bucket (ms).
    pub last_ms: i64,
}

/// One counter's window: a ring of `BUCKETS + 1` slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub window_ms: i64,
    pub slots: Vec<Slot>,
}

impl Counter {
    pub fn new(window_ms: i64) -> Counter {
        Counter {
            window_ms,
            slots: vec![
                Slot {
                    bucket: i64::MIN,
                    ..Slot::default()
                };
                BUCKETS as usize + 1
            ],
        }
    }

    /// A counter rebuilt from saved slots (each back in its place in the ring).
    pub fn from_slots(window_ms: i64, saved: &[Slot]) -> Counter {
        let mut c = Counter::new(window_ms);
        for s in saved {
            c.slots[s.bucket.rem_euclid(BUCKETS + 1) as usize] = *s;
        }
        c
    }

    pub fn bucket_ms(&self) -> i64 {
        self.window_ms / BUCKETS
    }

    /// Whether a slot's calls are still inside the window at `now_ms` (whatever its count).
    fn in_window(&self, slot: &Slot, now_ms: i64) -> bool {
        slot.bucket != i64::MIN && slot.last_ms > now_ms - self.window_ms
    }

    fn counts(&self, slot: &Slot, now_ms: i64) -> bool {
        slot.count > 0 && self.in_window(slot, now_ms)
    }

    /// Calls counted against the window at `now_ms`.
    pub fn used(&self, now_ms: i64) -> u64 {
        // Summed without branches (it runs over every slot of every counter of a call): an
        // empty slot adds its zero count either way.
        self.slots
            .iter()
            .map(|s| u64::from(s.count) * u64::from(self.in_window(s, now_ms)))
            .sum()
    }

    /// Counts one call at `now_ms`; returns the bucket it went into (for a later release).
    /// The caller has checked `used(now) < max` under the same lock.
    pub fn admit(&mut self, now_ms: i64) -> i64 {
        let bucket = now_ms.div_euclid(self.bucket_ms());
        let i = bucket.rem_euclid(BUCKETS + 1) as usize;
        let slot = &mut self.slots[i];
        if slot.bucket != bucket {
            *slot = Slot {
                bucket,
                count: 0,
                last_ms: now_ms,
            };
        }
        slot.count += 1;
        slot.last_ms = slot.last_ms.max(now_ms);
        bucket
    }

    /// Takes back one call counted in `bucket` (the call failed upstream). `last_ms` is left
    /// as it is: counting the bucket a little longer only errs on the safe side.
    pub fn release(&mut self, bucket: i64) {
        let i = bucket.rem_euclid(BUCKETS + 1) as usize;
        let slot = &mut self.slots[i];
        if slot.bucket == bucket && slot.count > 0 {
            slot.count -= 1;
        }
    }

    /// Whole seconds until one more call fits under `max`, if no other call comes (at least 1).
    pub fn retry_after_s(&self, now_ms: i64, max: u64) -> u64 {
        let mut counted: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| self.counts(s, now_ms))
            .collect();
        counted.sort_by_key(|s| s.last_ms);
        let mut used = self.used(now_ms);
        for s in counted {
            if used < max {
                break;
            }
            used -= s.count as u64;
            if used < max {
                let ms = (s.last_ms + self.window_ms - now_ms).max(1);
                return (ms as u64).div_ceil(1000);
            }
        }
        // max is 0 (never admits), or nothing counts and yet it is full: a window from now.
        (self.window_ms as u64).div_ceil(1000).max(1)
    }

    /// Whether nothing in it counts any more (it can be forgotten).
    pub fn is_idle(&self, now_ms: i64) -> bool {
        self.used(now_ms) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    fn try_call(c: &mut Counter, now: i64, max: u64) -> bool {
        if c.used(now) < max {
            c.admit(now);
            true
        } else {
            false
        }
    }

    #[test]
    fn admits_max_then_refuses_then_refills_after_a_window() {
        let mut c = Counter::new(MIN);
        let t0 = 1_700_000_000_000;
        for i in 0..30 {
            assert!(try_call(&mut c, t0 + i, 30), "call {i}");
        }
        assert!(!try_call(&mut c, t0 + 100, 30));
        assert!(
            !try_call(&mut c, t0 + MIN - 1, 30),
            "still inside the window of the last call"
        );
        // One window after the last call, the whole quota is back.
        let back = t0 + 29 + MIN;
        for i in 0..30 {
            assert!(try_call(&mut c, back + i, 30), "refill call {i}");
        }
        assert!(!try_call(&mut c, back + 30, 30));
    }

    #[test]
    fn no_burst_across_a_window_edge() {
        // 30 calls at the very end of one minute, then a burst at the start of the next.
        let mut c = Counter::new(MIN);
        let edge = 1_700_000_040_000 - (1_700_000_040_000 % MIN) + MIN;
        for i in 0..30 {
            assert!(try_call(&mut c, edge - 10 + (i % 10), 30));
        }
        for i in 0..100 {
            assert!(
                !try_call(&mut c, edge + i * 100, 30),
                "burst call {i} across the edge"
            );
        }
    }

    #[test]
    fn release_gives_the_call_back() {
        let mut c = Counter::new(1000);
        let b = c.admit(5_000);
        assert_eq!(c.used(5_000), 1);
        c.release(b);
        assert_eq!(c.used(5_000), 0);
        c.release(b);
        assert_eq!(c.used(5_000), 0, "a double release never goes negative");
    }

    #[test]
    fn retry_after_names_when_the_oldest_calls_leave() {
        let mut c = Counter::new(MIN);
        let t0 = 10 * MIN;
        for i in 0..3 {
            c.admit(t0 + i * 10_000);
        }
        // At t0 + 25 s with max 3: the call at t0 leaves the window at t0 + 60 s.
        assert_eq!(c.retry_after_s(t0 + 25_000, 3), 35);
        assert_eq!(c.retry_after_s(t0 + 25_000, 0), 60);
    }

    proptest! {
        /// The guarantee itself: for any sequence of call times, no interval of one window's
        /// length holds more than max admitted calls, and memory stays B + 1 slots.
        #[test]
        fn never_more_than_max_in_any_window(
            gaps in prop::collection::vec(0i64..3_000, 1..400),
            max in 0u64..40,
            window_ms in prop_oneof![Just(1_000i64), Just(60_000i64)],
        ) {
            let mut c = Counter::new(window_ms);
            let mut now = 1_000_000_000i64;
            let mut admitted = Vec::new();
            for g in gaps {
                now += g;
                if try_call(&mut c, now, max) {
                    admitted.push(now);
                }
            }
            prop_assert_eq!(c.slots.len(), BUCKETS as usize + 1);
            for (i, &start) in admitted.iter().enumerate() {
                let inside = admitted[i..].iter().take_while(|&&t| t < start + window_ms).count();
                prop_assert!(inside as u64 <= max, "{} calls in [{}, +{})", inside, start, window_ms);
            }
        }

        /// An idle counter has its whole quota back one window after its last call.
        #[test]
        fn idle_for_a_window_means_full_quota(gaps in prop::collection::vec(0i64..2_000, 1..100), max in 1u64..20) {
            let mut c = Counter::new(60_000);
            let mut now = 5_000_000i64;
            for g in gaps {
                now += g;
                let _ = try_call(&mut c, now, max);
            }
            let later = now + 60_000;
            prop_assert_eq!(c.used(later), 0);
            for _ in 0..max {
                prop_assert!(try_call(&mut c, later, max));
            }
        }
    }
}
