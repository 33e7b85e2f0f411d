//! A software prefetch: asks the core to start loading the cache line at an address
//! that a loop will read a little later, so that several random reads are in flight
//! at once (the online walker's next nodes, the join's next records).

/// Starts loading the line at `p` into the cache; a no-op off x86-64.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
