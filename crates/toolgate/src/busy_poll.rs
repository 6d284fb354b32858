//! Busy polling on a serving thread: after a call starts or ends, the thread keeps polling its
//! sockets for a short window (`busy_poll_us`) instead of sleeping in `epoll_wait`.
//!
//! Why: at one agent, a call finds the serving thread asleep twice (for the agent's request,
//! then for the upstream's answer). Waking a sleeping thread on a virtual machine costs tens
//! of microseconds (an interrupt to a halted vCPU, and its exit to the host), more than the
//! gateway's own work on the call; a thread that is still polling sees the bytes within a
//! microsecond or two (docs/performance.md: the added p50 at one session). HAProxy's
//! `busy-polling` option is the same trade, always on once enabled.
//!
//! What it costs, and when it stops: CPU, while it polls. A thread polls only
//! - for `window` after a call starts or ends, so an idle gateway sleeps as before, and one
//!   agent calling in a loop keeps its thread busy while it calls;
//! - while at most `MAX_IN_FLIGHT` calls are in flight on the thread: with more, its events
//!   come often enough that sleeps are short and shared by several calls;
//! - while the core is not wanted by other tasks: on a busy machine the core is worth more to
//!   the agents and upstreams the gateway waits for. A window ends when the thread ran for
//!   less than half of the time since the last look (every `CHECK_EVERY` turns, some tens of
//!   microseconds; its CPU clock against the wall clock): a stretch off the core longer than
//!   the thread's own time since the last look. A shorter preemption does not end it: a
//!   polling thread is always ready to run, so any task woken on its core preempts it, and
//!   that task is often the one the call waits for (a stdio upstream, woken by the request
//!   the gateway just wrote to its pipe, runs on the gateway's core). A task of this thread
//!   that blocks in a system call (a lock, a page fault that waits for the disk) stops the
//!   CPU clock too, and counts as time off the core. Polling stops for `PAUSE` when the
//!   thread was preempted (involuntary context switches, `Preemptions`) outside a window,
//!   and more calls than it polls for were in flight at some moment since it last looked:
//!   a busy machine, or a stdio upstream answering one of several calls (a known cost: that
//!   pause is polling lost for 20 ms). (Ending the window at any preemption, and pausing at
//!   any preemption outside one, cost all of the gain with a stdio upstream at one session:
//!   the upstream's every answer preempts the gateway.)
//!
//! How: one task per serving runtime (`run`) that yields on every turn of a window. tokio's
//! single-threaded scheduler, finding only a yielded task to run, polls its I/O driver
//! without blocking (`epoll_wait` with a zero timeout), runs whatever became ready, then the
//! task again. Written here because no crate does it: tokio's park has no busy-polling mode,
//! and the kernel's own (`SO_BUSY_POLL`) does not apply to loopback or to pipes.

use std::cell::Cell;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Polling stops while more calls than this are in flight on the thread.
const MAX_IN_FLIGHT: u32 = 1;

thread_local! {
    /// Calls in flight on this thread (`Call`s alive).
    static IN_FLIGHT: Cell<u32> = const { Cell::new(0) };
    /// Set when a call begins or ends with at most `MAX_IN_FLIGHT` in flight; taken by the
    /// polling task, which then polls for another window.
    static TOUCHED: Cell<bool> = const { Cell::new(false) };
    /// The polling task's waker while it sleeps.
    static SLEEPER: Cell<Option<Waker>> = const { Cell::new(None) };
    /// Whether more calls than polling is for were in flight at some moment since the polling
    /// task last looked: the thread had real work.
    static CROWDED: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// Turns the polling task took, and its pauses (what tests observe).
    static TURNS: Cell<u64> = const { Cell::new(0) };
    static PAUSES: Cell<u64> = const { Cell::new(0) };
    /// Preemptions a test pretends happened, added to the thread's own count.
    static FAKE_PREEMPTIONS: Cell<i64> = const { Cell::new(0) };
    /// CPU time a test pretends the thread lost to others, taken from its CPU clock.
    static FAKE_LOST: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// A call in flight on this thread, from its request to its answer (or until it is dropped).
/// Begin and drop it on the thread that serves the call.
pub struct Call(());

impl Call {
    pub fn begin() -> Call {
        let n = IN_FLIGHT.get() + 1;
        IN_FLIGHT.set(n);
        touch(n);
        Call(())
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let n = IN_FLIGHT.get().saturating_sub(1);
        IN_FLIGHT.set(n);
        touch(n);
    }
}

/// Starts a window, and wakes the polling task if it sleeps, unless `in_flight` is too many
/// for polling to pay.
fn touch(in_flight: u32) {
    if in_flight <= MAX_IN_FLIGHT {
        TOUCHED.set(true);
        if let Some(waker) = SLEEPER.take() {
            waker.wake();
        }
    } else {
        CROWDED.set(true);
    }
}

/// Polls in windows of `window` after each call's start and end on this thread; never
/// returns. With a zero window it only sleeps. Run it on the runtime whose thread serves the
/// calls (`Call::begin`).
pub async fn run(window: Duration) {
    if window.is_zero() {
        return std::future::pending().await;
    }
    let mut preemptions = Preemptions::new();
    loop {
        std::future::poll_fn(|cx| {
            if TOUCHED.replace(false) {
                Poll::Ready(())
            } else {
                SLEEPER.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        // Both looked at, so that each counts from here.
        let (preempted, crowded) = (preemptions.grew(), look_crowded());
        if preempted && crowded {
            // Preempted outside a window, and it had calls to serve: a busy machine.
            #[cfg(test)]
            PAUSES.set(PAUSES.get() + 1);
            tokio::time::sleep(PAUSE).await;
            TOUCHED.set(false);
            preemptions.grew();
            look_crowded();
            continue;
        }
        let mut until = Instant::now() + window;
        let mut share = CoreShare::new();
        let mut turns = 0u32;
        while IN_FLIGHT.get() <= MAX_IN_FLIGHT {
            tokio::task::yield_now().await;
            #[cfg(test)]
            TURNS.set(TURNS.get() + 1);
            // Wraps (a window can last as long as an agent keeps calling): 2^32 is a
            // multiple of CHECK_EVERY.
            turns = turns.wrapping_add(1);
            if turns.is_multiple_of(CHECK_EVERY) && share.under_half() {
                break;
            }
            let now = Instant::now();
            if TOUCHED.replace(false) {
                until = now + window;
            } else if now >= until {
                break;
            }
        }
        // Preemptions while polling do not count as a busy machine, nor calls that came and
        // went during the window.
        preemptions.grew();
        look_crowded();
    }
}

/// Whether the thread was crowded since the last look; from here on, whether it is now.
fn look_crowded() -> bool {
    CROWDED.replace(IN_FLIGHT.get() > MAX_IN_FLIGHT)
}

/// How often (in turns, each about a microsecond) a window checks its share of the core.
const CHECK_EVERY: u32 = 64;
/// How long polling stops once the thread was preempted outside a window, with more calls in
/// flight at some moment than it polls for.
const PAUSE: Duration = Duration::from_millis(20);

/// The thread's share of its core since the last look: its CPU clock, which advances only
/// while it runs, against the wall clock. (`getrusage`'s CPU times are no use here: for a
/// thread that never sleeps they advance only at the scheduler's ticks, milliseconds apart.)
struct CoreShare {
    wall: Instant,
    cpu: Duration,
}

impl CoreShare {
    fn new() -> CoreShare {
        CoreShare {
            wall: Instant::now(),
            cpu: Self::cpu(),
        }
    }

    /// Whether the thread ran for less than half the time since the last look: other tasks
    /// had the core for the rest.
    fn under_half(&mut self) -> bool {
        let (wall, cpu) = (Instant::now(), Self::cpu());
        let ran = cpu.saturating_sub(self.cpu);
        let passed = wall - self.wall;
        *self = CoreShare { wall, cpu };
        ran * 2 < passed
    }

    /// The thread's CPU clock. Without one (never on Linux) the thread looks as if it always
    /// ran: windows then end only at their deadline.
    #[cfg(not(test))]
    fn cpu() -> Duration {
        thread_cpu_time().unwrap_or_else(|| CLOCKLESS.with(|start| start.elapsed()))
    }

    /// In tests, the thread always has its core, but for the time a test says it lost: the
    /// tests' threads share two busy cores, which would end their windows at random.
    /// (`thread_cpu_time` has a test of its own.)
    #[cfg(test)]
    fn cpu() -> Duration {
        CLOCKLESS
            .with(|start| start.elapsed())
            .saturating_sub(FAKE_LOST.get())
    }
}

thread_local! {
    /// The wall clock's start for a thread with no CPU clock.
    static CLOCKLESS: Instant = Instant::now();
}

/// The CPU time the calling thread has run for, exact to the moment (the scheduler brings the
/// running thread's count up to date).
fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the pointer it is given, which is valid.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    ok.then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// The thread's count of involuntary context switches: the kernel took the CPU from it for
/// another task that was ready to run. Polling on a core that others need slows them down
/// (on a busy machine, the agents and upstreams the gateway waits for).
struct Preemptions(i64);

impl Preemptions {
    fn new() -> Preemptions {
        Preemptions(Self::count())
    }

    /// Whether the thread was preempted since the last look.
    fn grew(&mut self) -> bool {
        let now = Self::count();
        std::mem::replace(&mut self.0, now) != now
    }

    fn count() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a rusage into the pointer it is given, which is valid.
        let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } == 0;
        // SAFETY: zeroed is a valid rusage, and on success getrusage filled it in.
        let usage = unsafe { usage.assume_init() };
        let count = if ok { usage.ru_nivcsw } else { 0 };
        #[cfg(test)]
        let count = count + FAKE_PREEMPTIONS.get();
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn pause(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Whether the polling task turned while this task slept for `ms`.
    async fn polled_during(ms: u64) -> bool {
        let before = TURNS.get();
        pause(ms).await;
        TURNS.get() != before
    }

    /// Waits (up to 2 s) for the polling task to stop turning.
    async fn stops_polling() -> bool {
        for _ in 0..200 {
            if !polled_during(10).await {
                return true;
            }
        }
        false
    }

    /// Spawns the polling task on this runtime and lets it run to its first sleep.
    async fn start_polling(window: Duration) {
        tokio::spawn(run(window));
        pause(1).await;
    }

    /// Starts and ends calls until one is polled for (polling pauses for a while when the
    /// machine's other work preempted this thread while it had two calls in flight).
    async fn polled_for_a_call() -> bool {
        for _ in 0..50 {
            drop(Call::begin());
            if polled_during(2).await {
                return true;
            }
            pause(30).await;
        }
        false
    }

    #[test]
    fn polls_for_a_window_after_a_call_starts_or_ends_then_sleeps() {
        runtime().block_on(async {
            start_polling(Duration::from_millis(5)).await;
            assert!(!polled_during(10).await, "polled with no call");
            assert!(polled_for_a_call().await, "never polled for a call");
            assert!(stops_polling().await, "still polling long after the window");
        });
    }

    #[test]
    fn stops_polling_with_more_calls_in_flight() {
        runtime().block_on(async {
            start_polling(Duration::from_millis(50)).await;
            let first = Call::begin();
            let second = Call::begin();
            assert_eq!(IN_FLIGHT.get(), 2);
            pause(1).await;
            assert!(!polled_during(10).await, "polled with two calls in flight");
            drop(second);
            // One call in flight again: polling resumes; a second call stops it.
            assert!(
                polled_for_a_call().await,
                "never polled with one call in flight"
            );
            let second = Call::begin();
            assert!(
                stops_polling().await,
                "still polling with two calls in flight"
            );
            drop((first, second));
            assert_eq!(IN_FLIGHT.get(), 0);
        });
    }

    #[test]
    fn losing_the_core_while_polling_ends_the_window() {
        runtime().block_on(async {
            // A window far longer than the test: only the lost core (faked: a test's thread
            // always has its core otherwise) can end it.
            start_polling(Duration::from_secs(30)).await;
            let call = Call::begin();
            assert!(polled_during(2).await || polled_for_a_call().await);
            FAKE_LOST.set(FAKE_LOST.get() + Duration::from_secs(3600));
            assert!(stops_polling().await, "polled on without the core");
            drop(call);
        });
    }

    #[test]
    fn a_short_preemption_while_polling_does_not_end_the_window() {
        runtime().block_on(async {
            start_polling(Duration::from_secs(30)).await;
            let call = Call::begin();
            assert!(polled_during(2).await || polled_for_a_call().await);
            // Preempted for a microsecond, in the window.
            FAKE_PREEMPTIONS.set(FAKE_PREEMPTIONS.get() + 1);
            FAKE_LOST.set(FAKE_LOST.get() + Duration::from_micros(1));
            pause(20).await;
            assert!(
                polled_during(10).await,
                "a short preemption ended the window"
            );
            drop(call);
        });
    }

    #[test]
    fn the_thread_cpu_clock_advances_only_while_the_thread_runs() {
        let start = thread_cpu_time().expect("a CPU clock");
        std::thread::sleep(Duration::from_millis(50));
        let asleep = thread_cpu_time().unwrap() - start;
        assert!(
            asleep < Duration::from_millis(25),
            "{asleep:?} while asleep"
        );
        let spinning = Instant::now();
        while thread_cpu_time().unwrap() - start < Duration::from_millis(5) {
            assert!(
                spinning.elapsed() < Duration::from_secs(10),
                "never advanced"
            );
        }
    }

    #[test]
    fn a_preemption_outside_a_window_pauses_polling_once_the_thread_was_busy() {
        runtime().block_on(async {
            start_polling(Duration::from_millis(2)).await;
            let pauses = PAUSES.get();
            // With at most one call in flight, a preemption is its upstream or its agent.
            FAKE_PREEMPTIONS.set(FAKE_PREEMPTIONS.get() + 1);
            drop(Call::begin());
            assert!(stops_polling().await);
            assert_eq!(PAUSES.get(), pauses, "paused for one call's preemption");
            // Preempted while it had two calls: a busy machine.
            let (first, second) = (Call::begin(), Call::begin());
            FAKE_PREEMPTIONS.set(FAKE_PREEMPTIONS.get() + 1);
            drop(second);
            pause(1).await;
            assert!(
                PAUSES.get() > pauses,
                "no pause after a preemption while busy"
            );
            drop(first);
        });
    }

    #[test]
    fn a_zero_window_never_polls() {
        runtime().block_on(async {
            tokio::spawn(run(Duration::ZERO));
            let call = Call::begin();
            assert!(!polled_during(10).await);
            drop(call);
        });
    }
}
