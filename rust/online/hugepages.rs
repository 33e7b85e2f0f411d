//! Loading `data.mdb` into the page cache on 2 MiB pages, so that lookups in a large
//! store take a TLB miss per 2 MiB of the file instead of per 4 KiB page
//! (`OnlineStore(path, huge_pages=True)`).
//!
//! **Why.** A lookup in a store of hundreds of MB reads a leaf page nobody touched
//! recently: besides its cache misses, each such page is a TLB miss, and under
//! virtualization (nested paging) a TLB miss walks two sets of page tables. perf puts
//! a third of the page walker's time ([`super::walk`]) on the instruction that first
//! touches a child page: the translation, not the data. LMDB maps the file
//! read-only and shared; Linux maps a file's page-cache folios with one PMD entry
//! when they are 2 MiB folios and the mapping is aligned, whichever process faults
//! them in (the kernel aligns large file mappings to 2 MiB). Measured on the 1M x 3
//! store of `benches.online_walk` (BENCHMARKS.md): 100-entity matrix reads 123-135 ->
//! 110-119 µs in the same runs, about a tenth. Why not more is not measured (the VM
//! exposes no counters); if its host backs guest memory with 4 KiB pages, the TLB
//! still holds 4 KiB translations and only the walks get shorter.
//!
//! **How.** Page-cache folios are sized when they are read from disk; a file written
//! by LMDB (4 KiB writes) or read with `read()` sits in small folios. So, before LMDB
//! opens the environment: map the file at a 2 MiB boundary (PROT_READ, shared),
//! `MADV_HUGEPAGE` the mapping, drop the file's cached pages (`POSIX_FADV_DONTNEED`:
//! only clean pages no process maps are dropped, so this never loses data and never
//! disturbs another reader), then fault the whole file in with `MADV_POPULATE_READ`:
//! with `MADV_HUGEPAGE`, a fault that misses the cache reads 2 MiB folios. The
//! temporary mapping is then unmapped; the folios stay cached for LMDB's own map.
//!
//! **Cost.** The file is read again from disk once (the pages dropped were clean), and
//! the whole file is resident afterwards, like a warm store. Pages that other
//! processes have mapped stay as they are, as do pages dirtied by a writer. This
//! suits read replicas; a writer's later 4 KiB writes into a 2 MiB folio cost the
//! same as into a small one, but its writeback may cover more.
//!
//! **Where it does nothing.** Not Linux, a kernel that refuses `MADV_HUGEPAGE` (THP
//! set to `never`) or lacks `MADV_POPULATE_READ` (older than 5.14; both are checked
//! before anything is dropped), a file larger than the memory available, or no
//! 2 MiB-aligned room in the address space: nothing is dropped or loaded and reads
//! are as before. On a filesystem without large folios the file is read back in
//! small pages. The function returns how many bytes of the file its own mapping had
//! on 2 MiB entries, read from `/proc/self/smaps`, so a caller can tell; LMDB's map
//! gets them too when the kernel aligns it to 2 MiB (as Linux 6.x does for large file
//! mappings). Populating never raises SIGBUS: a file truncated meanwhile makes
//! `MADV_POPULATE_READ` fail, which ends the load early.

use std::path::Path;

/// The bytes of the file at `path` that were cached in 2 MiB folios when it was
/// loaded (0 where the system gives none, or the load was skipped); an error only if
/// the file cannot be opened or its size read.
#[cfg(target_os = "linux")]
pub fn load(path: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len < HUGE || len > mem_available() {
        return Ok(0);
    }
    let Some(at) = aligned_hole(len) else {
        return Ok(0);
    };
    // SAFETY: a new read-only shared mapping of the file at `at`; MAP_FIXED_NOREPLACE
    // never replaces a mapping (it fails with EEXIST if another thread took the range
    // since `aligned_hole` freed it). A kernel older than 4.17 takes `at` as a hint
    // only: a mapping elsewhere is unmapped below and nothing is loaded.
    let map = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Ok(0);
    }
    // SAFETY: `map` is the mapping just made, used only here.
    let loaded = map as usize == at && unsafe { populate(map, len, file.as_raw_fd()) };
    // Counted while the mapping exists.
    let huge = if loaded { pmd_mapped(at) } else { 0 };
    // SAFETY: unmaps exactly that mapping (the cached folios stay for LMDB's own map).
    unsafe { libc::munmap(map, len) };
    Ok(huge)
}

/// 2 MiB.
#[cfg(target_os = "linux")]
const HUGE: usize = 2 << 20;

/// A 2 MiB-aligned address with `len` free bytes after it: found by reserving
/// `len + 2 MiB` of address space and freeing it again.
#[cfg(target_os = "linux")]
fn aligned_hole(len: usize) -> Option<usize> {
    // SAFETY: a fresh anonymous reservation without access, unmapped right away.
    unsafe {
        let reserve = libc::mmap(
            std::ptr::null_mut(),
            len + HUGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if reserve == libc::MAP_FAILED {
            return None;
        }
        libc::munmap(reserve, len + HUGE);
        Some((reserve as usize).next_multiple_of(HUGE))
    }
}

/// Asks for 2 MiB pages on `map` (`len` bytes of the file `fd`), drops the file's
/// clean unmapped cached pages and faults it in again. Nothing is dropped unless the
/// kernel takes both `MADV_HUGEPAGE` and `MADV_POPULATE_READ` (checked with an empty
/// range first): otherwise the file would stay uncached. False if it was not loaded.
///
/// # Safety
/// `map` must be a mapping of `len` bytes of `fd` owned by the caller.
#[cfg(target_os = "linux")]
unsafe fn populate(map: *mut libc::c_void, len: usize, fd: libc::c_int) -> bool {
    // SAFETY (all three calls): hints and population on the caller's mapping, which is
    // never dereferenced here, so a file truncated meanwhile makes the populate fail
    // instead of raising SIGBUS; posix_fadvise drops only clean, unmapped pages.
    unsafe {
        if libc::madvise(map, len, libc::MADV_HUGEPAGE) != 0
            || libc::madvise(map, 0, libc::MADV_POPULATE_READ) != 0
        {
            return false;
        }
        libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
        libc::madvise(map, len, libc::MADV_POPULATE_READ);
    }
    true
}

/// `MemAvailable` of /proc/meminfo in bytes (unbounded if it cannot be read): a file
/// larger than that is not loaded, which would only evict it again.
#[cfg(target_os = "linux")]
fn mem_available() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kb = line.split_whitespace().nth(1)?.parse::<usize>().ok()?;
            Some(kb.saturating_mul(1024))
        })
        .unwrap_or(usize::MAX)
}

#[cfg(not(target_os = "linux"))]
pub fn load(path: &Path) -> std::io::Result<u64> {
    std::fs::metadata(path).map(|_| 0)
}

/// `FilePmdMapped` of this process's mapping that starts at `start`, in bytes.
#[cfg(target_os = "linux")]
fn pmd_mapped(start: usize) -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    smaps_field(&smaps, start, "FilePmdMapped:")
}

/// The `field` (in kB in the file; returned in bytes) of the mapping of `smaps` whose
/// range starts at `start`; 0 if there is none.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn smaps_field(smaps: &str, start: usize, field: &str) -> u64 {
    let head = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines.next();
    lines
        .take_while(|l| !l.split(' ').next().is_some_and(|w| w.contains('-')))
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_field_reads_the_right_mapping() {
        let smaps = "\
7f00000000-7f00200000 r--s 00000000 fe:00 1   /a/data.mdb
Size:               2048 kB
FilePmdMapped:      2048 kB
7f00400000-7f00600000 r--s 00000000 fe:00 2   /b/data.mdb
Size:               2048 kB
FilePmdMapped:         0 kB
";
        assert_eq!(smaps_field(smaps, 0x7f00000000, "FilePmdMapped:"), 2 << 20);
        assert_eq!(smaps_field(smaps, 0x7f00400000, "FilePmdMapped:"), 0);
        assert_eq!(smaps_field(smaps, 0x7f00800000, "FilePmdMapped:"), 0);
    }

    #[test]
    fn loads_a_file_and_keeps_its_bytes() {
        let dir = crate::test_util::TempDir::created();
        let path = dir.0.join("data.mdb");
        let data: Vec<u8> = (0..(5usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let huge = load(&path).unwrap();
        assert!(huge <= data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let small = dir.0.join("small");
        assert_eq!(
            load(&small).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::NotFound)
        );
        std::fs::write(&small, b"x").unwrap();
        assert_eq!(load(&small).unwrap(), 0);
    }
}
