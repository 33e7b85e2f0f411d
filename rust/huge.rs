//! Large buffers on transparent huge pages (2 MiB instead of 4 KiB) where the kernel
//! offers them on request (Linux with THP in `madvise` mode, the usual default).
//!
//! The offline kernels gather and scatter at random across buffers of tens of MB (a
//! time or value per event, an output per label): on 4 KiB pages nearly every such
//! access misses the TLB and walks the page tables, and the first touch of each page
//! faults. On 2 MiB pages an 80 MB buffer is 40 TLB entries and 40 faults. On 10M
//! events this takes about a quarter off the gathers of the aggregation's prepare
//! phase. Asking costs one `madvise` call per buffer; the memory used is the same
//! (the buffers are filled whole). Elsewhere, or when the kernel says no, nothing
//! changes.

/// Buffers smaller than this stay on ordinary pages. glibc gives an allocation of
/// 32 MiB or more a mapping of its own (its mmap threshold never rises above that),
/// unmapped when freed; a smaller one can come from a heap area that is later
/// trimmed and refilled by small allocations, each of whose first touches would then
/// clear a whole 2 MiB page (measured: +0.4 s of kernel time per 10M-event call when
/// the 8 MB outputs were advised too).
const MIN_BYTES: usize = 32 << 20;

/// Asks for huge pages over the spare capacity of `v` not yet touched (call it right
/// after `Vec::with_capacity`, before writing). Only whole 2 MiB pages inside the
/// allocation are advised.
pub fn advise<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < MIN_BYTES {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let lo = start.next_multiple_of(HUGE);
        let hi = (start + bytes) / HUGE * HUGE;
        if hi > lo {
            // SAFETY: [lo, hi) lies inside the allocation of `v`, which we own;
            // MADV_HUGEPAGE only changes how its pages are backed, never its contents.
            // A failure (THP off, old kernel) leaves ordinary pages: ignored.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// `vec![value; n]` on huge pages (see [`advise`]).
pub fn filled<T: Clone>(n: usize, value: T) -> Vec<T> {
    if n.saturating_mul(std::mem::size_of::<T>()) < MIN_BYTES {
        return vec![value; n]; // zeros come from calloc: no pass of our own
    }
    let mut v = Vec::with_capacity(n);
    advise(&mut v);
    v.resize(n, value);
    v
}
