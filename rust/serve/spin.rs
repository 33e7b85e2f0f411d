//! Spin, then park: after a request, one task keeps a worker polling for the next one
//! for `cfg.spin` before the runtime may park it.
//!
//! Why: on a quiet machine a parked worker sleeps in `epoll_wait` and its (virtual)
//! CPU halts; the next request then waits for the wake-up — tens to over a hundred
//! microseconds on a VM, more than the lookup itself (p50 143 µs at c=1 on an idle
//! 2-core VM against 35 µs when other work kept the CPUs awake). While the spinner
//! runs it yields in a loop: each yield makes its worker poll the I/O driver without
//! blocking (`epoll_wait` with a zero timeout) and run what became ready, so a request
//! that arrives within the window is picked up at once, by a worker that is awake.
//!
//! Cost: one core busy for up to `cfg.spin` after each request (so, under a steady
//! stream of requests closer together than that, one core while it lasts) and nothing
//! when idle: past the window the spinner waits on a [`Notify`] that the next request
//! signals. Other tasks are not held up: a yield puts the spinner behind them.
//!
//! When the machine is busy, spinning backfires: a worker that never sleeps competes
//! with other processes for its core, and the scheduler takes it off for whole time
//! slices (milliseconds), so requests wait for their worker instead of a wake-up (on a
//! 2-vCPU VM with one other busy process: c=1 p50 90 µs spinning against 40 µs
//! sleeping, half the throughput). So the spinner watches its thread's involuntary
//! context switches (`getrusage(RUSAGE_THREAD)`, every [`CHECK_EVERY`] yields): after
//! one, it stops spinning for [`BACK_OFF`], and the worker sleeps between requests as
//! with `--spin-us 0`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::State;

/// When requests came last, and the spinner's wake-up.
pub struct Spin {
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last request start or end.
    last: AtomicU64,
    wake: Notify,
}

impl Default for Spin {
    fn default() -> Self {
        Spin {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }
}

impl Spin {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A request starts (`start`) or ends: the window restarts; a start also wakes a
    /// spinner that stopped.
    pub fn touch(&self, start: bool) {
        self.last.store(self.now(), Ordering::Relaxed);
        if start {
            self.wake.notify_one();
        }
    }
}

/// Yields between two looks at the thread's involuntary context switches.
const CHECK_EVERY: u32 = 64;

/// How long the spinner keeps off after its thread was preempted.
const BACK_OFF: Duration = Duration::from_millis(50);

/// The calling thread's involuntary context switches so far (0 if unknown).
fn preemptions() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut u) == 0 {
            u.ru_nivcsw
        } else {
            0
        }
    }
}

/// The spinning task (one per server, started when `cfg.spin` is not zero).
pub async fn spinner(state: Arc<State>) {
    let window = state.cfg.spin.as_nanos() as u64;
    let back_off = BACK_OFF.as_nanos() as u64;
    let spin = &state.spin;
    // The spinner may move between workers: the count is read on the thread it runs
    // on each time, and a move only costs one needless back-off.
    let (mut seen, mut yields, mut off_until) = (preemptions(), 0u32, 0u64);
    loop {
        let now = spin.now();
        if now >= off_until && now.saturating_sub(spin.last.load(Ordering::Relaxed)) < window {
            yields += 1;
            if yields % CHECK_EVERY == 0 {
                let p = preemptions();
                if p > seen {
                    off_until = now + back_off;
                }
                seen = p;
            }
            tokio::task::yield_now().await;
        } else {
            spin.wake.notified().await;
            seen = preemptions();
        }
    }
}
