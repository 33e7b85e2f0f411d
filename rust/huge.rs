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

/// A buffer of `bytes` bytes filled by `fill` (which must write all of them), on a
/// mapping of its own on huge pages when it is large enough, unmapped when the last
/// Arrow reference to it drops. For copies made only to be read at random and then
/// freed (the join's concatenated feature columns): with no heap involved nothing is
/// trimmed and refilled later (the reason [`MIN_BYTES`] is high for heap buffers), so
/// from [`MAPPED_MIN_BYTES`] on an 8 MB column is 4 TLB entries and 4 faults instead
/// of 2048. Elsewhere, below that size or when `mmap` fails, an ordinary allocation.
pub fn buffer(bytes: usize, fill: impl FnOnce(&mut [u8])) -> arrow_buffer::Buffer {
    #[cfg(target_os = "linux")]
    if bytes >= MAPPED_MIN_BYTES {
        if let Some(mut map) = Mapping::new(bytes) {
            fill(map.bytes_mut());
            let ptr = map.data;
            // SAFETY: `ptr` points at `bytes` initialized bytes (`fill` wrote them; the
            // mapping starts zeroed anyway) that stay valid, and are never written
            // again, until the owner (the mapping itself) drops.
            return unsafe {
                arrow_buffer::Buffer::from_custom_allocation(ptr, bytes, Arc::new(map))
            };
        }
    }
    let mut v = arrow_buffer::MutableBuffer::from_len_zeroed(bytes);
    fill(v.as_slice_mut());
    v.into()
}

/// Below this, [`buffer`] allocates on the heap: a mapping of fewer 2 MiB pages saves
/// too few faults to pay for its `mmap` and `munmap`.
const MAPPED_MIN_BYTES: usize = 4 << 20;

#[cfg(target_os = "linux")]
use std::sync::Arc;

/// An anonymous private mapping (zeroed by the kernel) with huge pages requested over
/// its 2 MiB-aligned data area.
#[cfg(target_os = "linux")]
struct Mapping {
    /// What `mmap` returned and its length, for `munmap`.
    base: *mut libc::c_void,
    mapped: usize,
    /// The data area: the first 2 MiB boundary in the mapping, `len` bytes.
    data: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value alone; the raw pointers are
// never shared except through `&`/`&mut self`.
#[cfg(target_os = "linux")]
unsafe impl Send for Mapping {}
#[cfg(target_os = "linux")]
unsafe impl Sync for Mapping {}
#[cfg(target_os = "linux")]
impl std::panic::RefUnwindSafe for Mapping {}

#[cfg(target_os = "linux")]
impl Mapping {
    fn new(len: usize) -> Option<Self> {
        const HUGE: usize = 2 << 20;
        // One extra huge page of address space (never touched, so never backed) lets
        // the data area start on a 2 MiB boundary.
        let mapped = len.next_multiple_of(HUGE) + HUGE;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = (base as usize).next_multiple_of(HUGE);
        // SAFETY: [start, start + len rounded up to 2 MiB) lies inside the mapping.
        // A failure of madvise leaves ordinary pages: ignored.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                len.next_multiple_of(HUGE),
                libc::MADV_HUGEPAGE,
            );
        }
        Some(Mapping {
            base,
            mapped,
            data: std::ptr::NonNull::new(start as *mut u8)?,
            len,
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes from `data` lie inside the mapping, readable and
        // writable (zeroed by the kernel), and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`mapped` are exactly what mmap returned; nothing borrows the
        // memory any more (the Arrow buffers holding it are gone).
        unsafe {
            libc::munmap(self.base, self.mapped);
        }
    }
}
