//! A small safe layer over the LMDB C library (crate `lmdb-master-sys`, the library
//! heed wraps): an environment, read and write transactions, cursors.
//!
//! Why not heed itself: the store needs three things heed's typed API does not give.
//! (1) Fork safety: a forked child must never touch its parent's `MDB_env` (not even
//! to close it) and must open its own; heed keeps a process-wide registry of open
//! paths (a second open of the same path in the child fails with `EnvAlreadyOpened`)
//! and closes the environment when its last handle drops. Here an [`Env`] remembers
//! the fork generation it was opened in and is leaked, never closed, in any other.
//! (2) Read transactions that are reset and renewed (`mdb_txn_reset`/`renew`) rather
//! than begun and aborted per read: a renewed transaction keeps its reader slot, so a
//! lookup takes no lock on the shared reader table. (3) One cursor per read that walks
//! the B-tree in key order (`MDB_SET_RANGE`, `MDB_NEXT`), reused across reads with
//! `mdb_cursor_renew`; heed's cursor constructors are private and each of its range
//! iterators opens a new cursor.
//!
//! Everything here is mechanical: each `unsafe` block calls one LMDB function with
//! arguments whose validity is stated in its `// SAFETY:` line. The policies (map
//! growth, pools, locking) live in [`super::env`]. This file holds the errors, fork
//! detection and the environment; `lmdb_txn.rs` the transactions and cursors.

use std::ffi::{c_int, c_uint, CStr, CString};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use lmdb_master_sys as ffi;

pub use ffi::{MDB_MAP_FULL, MDB_MAP_RESIZED, MDB_NOTFOUND, MDB_READERS_FULL};

// Transactions and cursors (and `Env::begin_read`/`begin_write`).
#[path = "lmdb_txn.rs"]
mod txn;
pub use txn::{RoCursor, RoTxn, RwCursor, RwTxn};

/// An LMDB return code other than success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmdbError(pub c_int);

impl LmdbError {
    pub fn message(self) -> String {
        // SAFETY: mdb_strerror returns a pointer to a static (or strerror) C string for
        // any code; it is never null.
        let s = unsafe { CStr::from_ptr(ffi::mdb_strerror(self.0)) };
        s.to_string_lossy().into_owned()
    }

    /// Codes that mean the files are damaged rather than the call being wrong.
    pub fn is_corruption(self) -> bool {
        matches!(
            self.0,
            ffi::MDB_CORRUPTED
                | ffi::MDB_PAGE_NOTFOUND
                | ffi::MDB_INVALID
                | ffi::MDB_VERSION_MISMATCH
                | ffi::MDB_PANIC
                | ffi::MDB_BAD_TXN
        )
    }
}

impl std::fmt::Display for LmdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message(), self.0)
    }
}

pub type LResult<T> = Result<T, LmdbError>;

fn check(rc: c_int) -> LResult<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(LmdbError(rc))
    }
}

// ---------------------------------------------------------------------------------
// Fork generations

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// A number that changes in a child process each time it is forked: handles opened in
/// another generation belong to an ancestor and must not be used. One atomic load.
pub fn fork_generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no captured state; the
        // child handler only increments an atomic, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------------
// Environment

/// Options fixed when an environment is opened.
#[derive(Clone, Copy, Debug)]
pub struct EnvOptions {
    pub map_size: usize,
    pub max_readers: u32,
    pub max_dbs: u32,
    pub readonly: bool,
}

/// An open `MDB_env`, owned by the fork generation that opened it.
pub struct Env {
    ptr: NonNull<ffi::MDB_env>,
    generation: u64,
}

// SAFETY: an MDB_env opened with MDB_NOTLS may be used from any thread; LMDB serializes
// write transactions itself and read transactions are per-object. Map resizing, which
// needs exclusive use, is guarded by the caller (super::env's gate).
unsafe impl Send for Env {}
// SAFETY: as above.
unsafe impl Sync for Env {}

/// A database handle inside an environment.
pub type Dbi = ffi::MDB_dbi;

impl Env {
    /// Opens (creating the files if needed and allowed) the environment in directory
    /// `dir`, which must exist.
    ///
    /// A read-only open of an environment whose lock file cannot be written (a
    /// read-only copy or mount) falls back to `MDB_NOLOCK`: with nobody able to write
    /// the files, there is no writer to coordinate with.
    pub fn open(dir: &Path, opts: EnvOptions) -> LResult<Env> {
        match Env::open_with(dir, opts, 0) {
            Err(e) if opts.readonly && (e.0 == libc::EACCES || e.0 == libc::EROFS) => {
                Env::open_with(dir, opts, ffi::MDB_NOLOCK)
            }
            other => other,
        }
    }

    fn open_with(dir: &Path, opts: EnvOptions, extra: c_uint) -> LResult<Env> {
        let generation = fork_generation();
        let path = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| LmdbError(libc::EINVAL))?;
        let mut raw: *mut ffi::MDB_env = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer.
        check(unsafe { ffi::mdb_env_create(&mut raw) })?;
        let env = Env {
            ptr: NonNull::new(raw).ok_or(LmdbError(libc::ENOMEM))?,
            generation,
        };
        let mut flags = ffi::MDB_NOTLS | ffi::MDB_NORDAHEAD | extra;
        if opts.readonly {
            flags |= ffi::MDB_RDONLY;
        } else {
            flags |= ffi::MDB_NOMETASYNC;
        }
        // SAFETY: env.ptr is a freshly created, not yet opened environment; these
        // setters are valid before mdb_env_open. On any error `env` drops, which calls
        // mdb_env_close as LMDB requires after a failed open.
        unsafe {
            check(ffi::mdb_env_set_maxdbs(env.ptr.as_ptr(), opts.max_dbs))?;
            check(ffi::mdb_env_set_maxreaders(
                env.ptr.as_ptr(),
                opts.max_readers,
            ))?;
            check(ffi::mdb_env_set_mapsize(env.ptr.as_ptr(), opts.map_size))?;
            check(ffi::mdb_env_open(
                env.ptr.as_ptr(),
                path.as_ptr(),
                flags,
                0o664,
            ))?;
        }
        Ok(env)
    }

    fn raw(&self) -> *mut ffi::MDB_env {
        debug_assert_eq!(self.generation, fork_generation(), "env used after fork");
        self.ptr.as_ptr()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `mdb_env_copy2`: a consistent copy of the environment (one read transaction's
    /// snapshot, writers keep running) into the existing, empty directory `dir`;
    /// `compact` omits free pages and renumbers the rest (`MDB_CP_COMPACT`).
    pub fn copy_to(&self, dir: &Path, compact: bool) -> LResult<()> {
        let path = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| LmdbError(libc::EINVAL))?;
        let flags = if compact { ffi::MDB_CP_COMPACT } else { 0 };
        // SAFETY: the env is open (raw() checks this process owns it) and `path` is a
        // NUL-terminated string that outlives the call.
        check(unsafe { ffi::mdb_env_copy2(self.raw(), path.as_ptr(), flags) })
    }

    pub fn info(&self) -> ffi::MDB_envinfo {
        let mut info = std::mem::MaybeUninit::<ffi::MDB_envinfo>::uninit();
        // SAFETY: the env is open and `info` is a valid out-pointer; mdb_env_info only
        // fails for null arguments.
        unsafe {
            ffi::mdb_env_info(self.raw(), info.as_mut_ptr());
            info.assume_init()
        }
    }

    pub fn page_size(&self) -> usize {
        let mut stat = std::mem::MaybeUninit::<ffi::MDB_stat>::uninit();
        // SAFETY: as for info.
        unsafe {
            ffi::mdb_env_stat(self.raw(), stat.as_mut_ptr());
            stat.assume_init().ms_psize as usize
        }
    }

    /// Sets the map size; 0 adopts the size another process recorded.
    ///
    /// # Safety
    /// No transaction of this environment may be active in this process.
    pub unsafe fn set_map_size(&self, size: usize) -> LResult<()> {
        // SAFETY: the caller guarantees no active transaction.
        check(unsafe { ffi::mdb_env_set_mapsize(self.raw(), size) })
    }

    /// Clears reader slots left by dead processes; returns how many.
    pub fn reader_check(&self) -> LResult<usize> {
        let mut dead: c_int = 0;
        // SAFETY: env open, `dead` a valid out-pointer.
        check(unsafe { ffi::mdb_reader_check(self.raw(), &mut dead) })?;
        Ok(dead.max(0) as usize)
    }

    /// Flushes data and meta pages to disk.
    pub fn sync(&self) -> LResult<()> {
        // SAFETY: env open.
        check(unsafe { ffi::mdb_env_sync(self.raw(), 1) })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.generation == fork_generation() {
            // SAFETY: opened in this process; the owner guarantees every transaction of
            // this env has ended (they borrow the Env).
            unsafe { ffi::mdb_env_close(self.ptr.as_ptr()) };
        }
        // Else: an ancestor's environment inherited through fork. LMDB forbids using it
        // in the child, closing included; its memory and descriptors are leaked.
    }
}

fn val(bytes: &[u8]) -> ffi::MDB_val {
    ffi::MDB_val {
        mv_size: bytes.len(),
        mv_data: bytes.as_ptr() as *mut _,
    }
}

fn empty_val() -> ffi::MDB_val {
    ffi::MDB_val {
        mv_size: 0,
        mv_data: ptr::null_mut(),
    }
}

/// The bytes an MDB_val points at, borrowed for `'t`.
///
/// # Safety
/// `v` must come from LMDB for a transaction that outlives `'t`.
unsafe fn slice<'t>(v: &ffi::MDB_val) -> &'t [u8] {
    if v.mv_size == 0 {
        return &[];
    }
    // SAFETY: LMDB returned a pointer into the map (or a dirty page) valid for
    // mv_size bytes until the transaction ends or the next write (caller's duty).
    unsafe { std::slice::from_raw_parts(v.mv_data as *const u8, v.mv_size) }
}
