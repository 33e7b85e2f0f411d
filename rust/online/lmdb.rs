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
//! growth, pools, locking) live in [`super::env`].

use std::cell::Cell;
use std::ffi::{c_int, c_uint, CStr, CString};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use lmdb_master_sys as ffi;

pub use ffi::{MDB_MAP_FULL, MDB_MAP_RESIZED, MDB_NOTFOUND, MDB_READERS_FULL};

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

    /// Begins a read-only transaction (holding a reader slot until dropped).
    ///
    /// # Safety
    /// The transaction must be dropped before this `Env` (it is pooled by the owner of
    /// the `Env`, so it carries no lifetime).
    pub unsafe fn begin_read(&self) -> LResult<RoTxn> {
        let mut txn: *mut ffi::MDB_txn = ptr::null_mut();
        // SAFETY: env open; `txn` a valid out-pointer; no parent.
        check(unsafe {
            ffi::mdb_txn_begin(self.raw(), ptr::null_mut(), ffi::MDB_RDONLY, &mut txn)
        })?;
        Ok(RoTxn {
            ptr: NonNull::new(txn).expect("mdb_txn_begin succeeded"),
            cursor: Cell::new(None),
            busy: Cell::new(false),
            live: true,
            generation: self.generation,
        })
    }

    /// Begins the write transaction (waits for any other writer, in any process).
    pub fn begin_write(&self) -> LResult<RwTxn<'_>> {
        let mut txn: *mut ffi::MDB_txn = ptr::null_mut();
        // SAFETY: env open; `txn` a valid out-pointer; no parent.
        check(unsafe { ffi::mdb_txn_begin(self.raw(), ptr::null_mut(), 0, &mut txn) })?;
        Ok(RwTxn {
            ptr: Some(NonNull::new(txn).expect("mdb_txn_begin succeeded")),
            _env: PhantomData,
        })
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

// ---------------------------------------------------------------------------------
// Read transactions

/// A read-only transaction with an optional cursor on one database, reusable through
/// [`RoTxn::reset`] and [`RoTxn::renew`].
pub struct RoTxn {
    ptr: NonNull<ffi::MDB_txn>,
    /// The kept cursor and its database; `busy` while a [`RoCursor`] uses it.
    cursor: Cell<Option<(NonNull<ffi::MDB_cursor>, Dbi)>>,
    busy: Cell<bool>,
    /// Whether the transaction holds a snapshot (false after reset).
    live: bool,
    generation: u64,
}

// SAFETY: with MDB_NOTLS a read transaction is not tied to its thread; it is not Sync,
// so only one thread at a time uses it, as LMDB requires.
unsafe impl Send for RoTxn {}

impl RoTxn {
    /// The id of the snapshot this transaction reads.
    pub fn id(&self) -> usize {
        // SAFETY: the txn handle is valid.
        unsafe { ffi::mdb_txn_id(self.ptr.as_ptr()) }
    }

    /// Releases the snapshot, keeping the reader slot for [`RoTxn::renew`].
    pub fn reset(&mut self) {
        if self.live {
            // SAFETY: a live read-only txn; the cursor (if any) is not used again
            // before renew.
            unsafe { ffi::mdb_txn_reset(self.ptr.as_ptr()) };
            self.live = false;
        }
    }

    /// Takes the latest snapshot again after a reset.
    pub fn renew(&mut self) -> LResult<()> {
        debug_assert!(!self.live);
        // SAFETY: a reset read-only txn.
        check(unsafe { ffi::mdb_txn_renew(self.ptr.as_ptr()) })?;
        self.live = true;
        if let Some((c, _)) = self.cursor.get() {
            // SAFETY: the cursor was opened for a read-only txn of this env.
            check(unsafe { ffi::mdb_cursor_renew(self.ptr.as_ptr(), c.as_ptr()) })?;
        }
        Ok(())
    }

    pub fn open_db(&self, name: &str) -> LResult<Dbi> {
        let name = CString::new(name).map_err(|_| LmdbError(libc::EINVAL))?;
        let mut dbi: Dbi = 0;
        // SAFETY: live txn, valid C string, valid out-pointer.
        check(unsafe { ffi::mdb_dbi_open(self.ptr.as_ptr(), name.as_ptr(), 0, &mut dbi) })?;
        Ok(dbi)
    }

    /// Commits (read-only: keeps databases opened in it usable afterwards).
    pub fn commit(self) -> LResult<()> {
        self.close_cursor();
        let ptr = self.ptr;
        std::mem::forget(self);
        // SAFETY: a live txn, consumed here (not used or dropped afterwards).
        check(unsafe { ffi::mdb_txn_commit(ptr.as_ptr()) })
    }

    pub fn get(&self, dbi: Dbi, key: &[u8]) -> LResult<Option<&[u8]>> {
        let mut k = val(key);
        let mut v = empty_val();
        // SAFETY: live txn, valid dbi, valid MDB_vals.
        match unsafe { ffi::mdb_get(self.ptr.as_ptr(), dbi, &mut k, &mut v) } {
            0 => Ok(Some(
                // SAFETY: from LMDB for this txn, which outlives the returned borrow.
                unsafe { slice(&v) },
            )),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(LmdbError(rc)),
        }
    }

    /// A cursor on `dbi`: the transaction's kept cursor (opened on first use, kept
    /// across renews) unless that one is in use, then a temporary one. Values borrow
    /// the transaction: they stay valid until it is reset, which needs `&mut self`.
    pub fn cursor(&self, dbi: Dbi) -> LResult<RoCursor<'_>> {
        if !self.busy.get() {
            if let Some((c, d)) = self.cursor.get() {
                if d == dbi {
                    self.busy.set(true);
                    return Ok(RoCursor {
                        ptr: c,
                        owner: Some(&self.busy),
                    });
                }
            }
            self.close_cursor();
            let c = self.open_cursor(dbi)?;
            self.cursor.set(Some((c, dbi)));
            self.busy.set(true);
            return Ok(RoCursor {
                ptr: c,
                owner: Some(&self.busy),
            });
        }
        Ok(RoCursor {
            ptr: self.open_cursor(dbi)?,
            owner: None,
        })
    }

    fn open_cursor(&self, dbi: Dbi) -> LResult<NonNull<ffi::MDB_cursor>> {
        let mut c: *mut ffi::MDB_cursor = ptr::null_mut();
        // SAFETY: live txn, valid dbi, valid out-pointer.
        check(unsafe { ffi::mdb_cursor_open(self.ptr.as_ptr(), dbi, &mut c) })?;
        Ok(NonNull::new(c).expect("mdb_cursor_open succeeded"))
    }

    fn close_cursor(&self) {
        debug_assert!(!self.busy.get());
        if let Some((c, _)) = self.cursor.take() {
            // SAFETY: a cursor of a read-only txn may be closed whether the txn is live
            // or reset; it is not in use (busy is false) and not used again.
            unsafe { ffi::mdb_cursor_close(c.as_ptr()) };
        }
    }
}

impl Drop for RoTxn {
    fn drop(&mut self) {
        if self.generation != fork_generation() {
            // A pooled transaction inherited through fork: the parent's, leaked.
            return;
        }
        self.close_cursor();
        // SAFETY: the txn handle is valid (live or reset); aborting frees it and its
        // reader slot.
        unsafe { ffi::mdb_txn_abort(self.ptr.as_ptr()) };
    }
}

/// A cursor of a read transaction; values borrow from the transaction.
pub struct RoCursor<'t> {
    ptr: NonNull<ffi::MDB_cursor>,
    /// The transaction's busy flag when this is its kept cursor; None for a temporary
    /// cursor, closed on drop.
    owner: Option<&'t Cell<bool>>,
}

impl Drop for RoCursor<'_> {
    fn drop(&mut self) {
        match self.owner {
            Some(busy) => busy.set(false),
            // SAFETY: a temporary cursor of a read-only txn, not used again.
            None => unsafe { ffi::mdb_cursor_close(self.ptr.as_ptr()) },
        }
    }
}

impl<'t> RoCursor<'t> {
    fn get(
        &mut self,
        key: Option<&[u8]>,
        op: ffi::MDB_cursor_op,
    ) -> LResult<Option<(&'t [u8], &'t [u8])>> {
        let mut k = key.map_or_else(empty_val, val);
        let mut v = empty_val();
        // SAFETY: the cursor belongs to a live txn borrowed for 't; valid MDB_vals.
        match unsafe { ffi::mdb_cursor_get(self.ptr.as_ptr(), &mut k, &mut v, op) } {
            0 => Ok(Some(
                // SAFETY: both from LMDB for the txn that outlives 't.
                unsafe { (slice(&k), slice(&v)) },
            )),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(LmdbError(rc)),
        }
    }

    /// The first entry with key >= `key`.
    #[inline]
    pub fn seek(&mut self, key: &[u8]) -> LResult<Option<(&'t [u8], &'t [u8])>> {
        self.get(Some(key), ffi::MDB_SET_RANGE)
    }

    /// The entry after the current one.
    #[inline]
    pub fn step(&mut self) -> LResult<Option<(&'t [u8], &'t [u8])>> {
        self.get(None, ffi::MDB_NEXT)
    }
}

// ---------------------------------------------------------------------------------
// Write transactions

/// The write transaction; aborted when dropped without [`RwTxn::commit`].
pub struct RwTxn<'e> {
    ptr: Option<NonNull<ffi::MDB_txn>>,
    _env: PhantomData<&'e Env>,
}

impl<'e> RwTxn<'e> {
    fn raw(&self) -> *mut ffi::MDB_txn {
        self.ptr.expect("transaction is live").as_ptr()
    }

    pub fn create_db(&mut self, name: &str) -> LResult<Dbi> {
        let name = CString::new(name).map_err(|_| LmdbError(libc::EINVAL))?;
        let mut dbi: Dbi = 0;
        // SAFETY: live write txn, valid C string, valid out-pointer.
        check(unsafe { ffi::mdb_dbi_open(self.raw(), name.as_ptr(), ffi::MDB_CREATE, &mut dbi) })?;
        Ok(dbi)
    }

    pub fn open_db(&mut self, name: &str) -> LResult<Option<Dbi>> {
        let name = CString::new(name).map_err(|_| LmdbError(libc::EINVAL))?;
        let mut dbi: Dbi = 0;
        // SAFETY: as for create_db.
        match unsafe { ffi::mdb_dbi_open(self.raw(), name.as_ptr(), 0, &mut dbi) } {
            0 => Ok(Some(dbi)),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(LmdbError(rc)),
        }
    }

    /// Entries in the unnamed (main) database: the names of named databases.
    pub fn main_db_entries(&self) -> LResult<usize> {
        let mut stat = std::mem::MaybeUninit::<ffi::MDB_stat>::uninit();
        // SAFETY: live txn; dbi 1 is LMDB's MAIN_DBI, always valid; valid out-pointer.
        check(unsafe { ffi::mdb_stat(self.raw(), 1, stat.as_mut_ptr()) })?;
        // SAFETY: initialized by the successful call.
        Ok(unsafe { stat.assume_init() }.ms_entries)
    }

    pub fn get(&self, dbi: Dbi, key: &[u8]) -> LResult<Option<&[u8]>> {
        let mut k = val(key);
        let mut v = empty_val();
        // SAFETY: live txn, valid dbi and MDB_vals.
        match unsafe { ffi::mdb_get(self.raw(), dbi, &mut k, &mut v) } {
            // SAFETY: valid until the next write in this txn, which needs &mut self.
            0 => Ok(Some(unsafe { slice(&v) })),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(LmdbError(rc)),
        }
    }

    pub fn put(&mut self, dbi: Dbi, key: &[u8], value: &[u8]) -> LResult<()> {
        let mut k = val(key);
        let mut v = val(value);
        // SAFETY: live txn, valid dbi; LMDB copies both buffers.
        check(unsafe { ffi::mdb_put(self.raw(), dbi, &mut k, &mut v, 0) })
    }

    pub fn delete(&mut self, dbi: Dbi, key: &[u8]) -> LResult<bool> {
        let mut k = val(key);
        // SAFETY: live write txn, valid dbi and key.
        match unsafe { ffi::mdb_del(self.raw(), dbi, &mut k, ptr::null_mut()) } {
            0 => Ok(true),
            ffi::MDB_NOTFOUND => Ok(false),
            rc => Err(LmdbError(rc)),
        }
    }

    pub fn cursor(&mut self, dbi: Dbi) -> LResult<RwCursor<'_>> {
        let mut c: *mut ffi::MDB_cursor = ptr::null_mut();
        // SAFETY: live txn, valid dbi, valid out-pointer.
        check(unsafe { ffi::mdb_cursor_open(self.raw(), dbi, &mut c) })?;
        Ok(RwCursor {
            ptr: NonNull::new(c).expect("mdb_cursor_open succeeded"),
            _txn: PhantomData,
        })
    }

    pub fn commit(mut self) -> LResult<()> {
        let ptr = self.ptr.take().expect("transaction is live");
        // SAFETY: a live write txn, consumed (LMDB frees it whether or not it succeeds).
        check(unsafe { ffi::mdb_txn_commit(ptr.as_ptr()) })
    }
}

impl Drop for RwTxn<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.ptr.take() {
            // SAFETY: a live write txn not committed; abort frees it and its cursors.
            unsafe { ffi::mdb_txn_abort(p.as_ptr()) };
        }
    }
}

/// A cursor of the write transaction.
pub struct RwCursor<'t> {
    ptr: NonNull<ffi::MDB_cursor>,
    _txn: PhantomData<&'t mut ()>,
}

impl RwCursor<'_> {
    /// The first entry with key >= `key`, positioning the cursor on it (so that the
    /// next put in key order starts from this page). Valid until the next put.
    pub fn seek(&mut self, key: &[u8]) -> LResult<Option<(&[u8], &[u8])>> {
        let mut k = val(key);
        let mut v = empty_val();
        // SAFETY: cursor of the live write txn (borrowed mutably); valid MDB_vals.
        match unsafe { ffi::mdb_cursor_get(self.ptr.as_ptr(), &mut k, &mut v, ffi::MDB_SET_RANGE) }
        {
            // SAFETY: valid until the next write through this cursor (&mut self).
            0 => Ok(Some(unsafe { (slice(&k), slice(&v)) })),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(LmdbError(rc)),
        }
    }

    /// Stores `value` under `key`; `current` replaces the entry the cursor is on
    /// (which must have this key, after a [`RwCursor::seek`] that found it).
    pub fn put(&mut self, key: &[u8], value: &[u8], current: bool) -> LResult<()> {
        let mut k = val(key);
        let mut v = val(value);
        let flags: c_uint = if current { ffi::MDB_CURRENT } else { 0 };
        // SAFETY: cursor of the live write txn; LMDB copies both buffers.
        check(unsafe { ffi::mdb_cursor_put(self.ptr.as_ptr(), &mut k, &mut v, flags) })
    }
}

impl RwCursor<'_> {
    /// Moves to the first entry (`first`) or the next one; None at the end.
    pub fn advance(&mut self, first: bool) -> LResult<Option<(&[u8], &[u8])>> {
        let mut k = empty_val();
        let mut v = empty_val();
        let op = if first { ffi::MDB_FIRST } else { ffi::MDB_NEXT };
        // SAFETY: cursor of the live write txn; valid out-pointers.
        match unsafe { ffi::mdb_cursor_get(self.ptr.as_ptr(), &mut k, &mut v, op) } {
            // SAFETY: valid until the next write through this cursor (&mut self).
            0 => Ok(Some(unsafe { (slice(&k), slice(&v)) })),
            ffi::MDB_NOTFOUND => Ok(None),
            rc => Err(LmdbError(rc)),
        }
    }

    /// Deletes the entry the cursor is on; the next `advance(false)` returns the entry
    /// that followed it.
    pub fn delete_current(&mut self) -> LResult<()> {
        // SAFETY: cursor of the live write txn, positioned on an entry.
        check(unsafe { ffi::mdb_cursor_del(self.ptr.as_ptr(), 0) })
    }
}

impl Drop for RwCursor<'_> {
    fn drop(&mut self) {
        // SAFETY: the write txn is still live (the cursor borrows it).
        unsafe { ffi::mdb_cursor_close(self.ptr.as_ptr()) };
    }
}
