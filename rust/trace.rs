//! Phase timings on stderr when `PITSTOP_TRACE=1`: where a slow call spends its time
//! and memory (resident and peak resident MiB after each phase, from
//! `/proc/self/status` where it exists), without a profiler. Off by default; costs one
//! atomic load per phase.

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
        "pitstop: {name:<24} {:>9.2} ms{}",
        start.elapsed().as_secs_f64() * 1e3,
        memory()
    );
    out
}

/// `  rss <MiB> peak <MiB>` from `/proc/self/status`, or nothing.
fn memory() -> String {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return String::new();
    };
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    match (kib("VmRSS:"), kib("VmHWM:")) {
        (Some(rss), Some(peak)) => format!("  rss {:>6} peak {:>6} MiB", rss >> 10, peak >> 10),
        _ => String::new(),
    }
}
