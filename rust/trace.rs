//! Phase timings on stderr when `PITSTOP_TRACE=1`: where a slow call spends its time,
//! without a profiler. Off by default; costs one atomic load per phase.

use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PITSTOP_TRACE").is_some_and(|v| v != "0"))
}

/// Runs `f`, printing `pitstop: <name> <ms>` when tracing is on.
pub fn phase<T>(name: &str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    eprintln!(
        "pitstop: {name:<24} {:>9.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    out
}
