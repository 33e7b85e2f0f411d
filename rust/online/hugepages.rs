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
//! **Where it does nothing.** Not Linux, THP set to `never`, a filesystem without
//! large folios, or a kernel older than 5.14 (no `MADV_POPULATE_READ`): the pages stay
//! small and reads are as before. The function returns how many bytes of the file
//! ended up mapped by 2 MiB entries, read from `/proc/self/smaps`, so a caller can
//! tell. Populating never raises SIGBUS: a file truncated meanwhile makes
//! `MADV_POPULATE_READ` fail, which ends the load early.

use std::path::Path;

/// The bytes of the file at `path` that are now cached in 2 MiB folios (0 where the
/// system gives none); an error only if the file cannot be opened or read.
#[cfg(target_os = "linux")]
pub fn load(path: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    const HUGE: usize = 2 << 20;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len < HUGE {
        return Ok(0);
    }
    let fd = file.as_raw_fd();
    // SAFETY: a fresh anonymous reservation (no access) with room for a 2 MiB-aligned
    // mapping of `len` bytes; only this function uses it, and it unmaps all of it.
    let reserve = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len + HUGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if reserve == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let at = (reserve as usize).next_multiple_of(HUGE);
    // SAFETY: [at, at + len) lies inside the reservation (at < reserve + HUGE), which
    // MAP_FIXED replaces with a read-only shared mapping of the file; nothing else
    // refers to those addresses.
    let map = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    let result = if map == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: madvise on our own mapping (hints and population only: the mapping is
        // never dereferenced here, so a truncated file yields an error, not SIGBUS);
        // posix_fadvise drops only clean, unmapped cached pages of the file.
        unsafe {
            libc::madvise(map, len, libc::MADV_HUGEPAGE);
            libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
            libc::madvise(map, len, libc::MADV_POPULATE_READ);
        }
        Ok(pmd_mapped(at))
    };
    // SAFETY: the whole reservation, which this function mapped and nobody else uses.
    unsafe { libc::munmap(reserve, len + HUGE) };
    result
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
