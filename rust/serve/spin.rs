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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

/// The spinning task (one per server, started when `cfg.spin` is not zero).
pub async fn spinner(state: Arc<State>) {
    let window = state.cfg.spin.as_nanos() as u64;
    let spin = &state.spin;
    loop {
        if spin.now().saturating_sub(spin.last.load(Ordering::Relaxed)) < window {
            tokio::task::yield_now().await;
        } else {
            spin.wake.notified().await;
        }
    }
}
