//! The transactions and cursors of the LMDB layer ([`super`]): beginning them on an
//! [`Env`], read transactions that are reset and renewed rather than begun per read,
//! the one cursor a read transaction keeps, and the write transaction with its cursor.
//!
//! **Read transactions.** [`RoTxn::reset`] releases the snapshot but keeps the reader
//! slot; [`RoTxn::renew`] takes the newest snapshot in the same slot (no lock on the
//! shared reader table, no allocation: tens of nanoseconds against a few microseconds
//! for begin and abort). A read transaction keeps one cursor on one database, renewed
//! with it (`mdb_cursor_renew`), so a batch of lookups walks the B-tree in key order
//! through one cursor: [`RoCursor::seek`] is one descent (`MDB_SET_RANGE`, O(log n)
//! pages), [`RoCursor::step`] moves to the next key (`MDB_NEXT`, usually on the same
//! leaf page). Returned slices borrow the map until the transaction ends.
//!
//! **Write transactions.** One at a time per environment (LMDB serializes writers
//! across processes; [`Env::begin_write`] waits). [`RwTxn`] aborts when dropped without
//! [`RwTxn::commit`]. Its cursor ([`RwCursor`]) supports in-place puts on the current
//! key and deletes while scanning (a table drop scans every row).
//!
//! As in the rest of the layer, each `unsafe` block calls one LMDB function and says
//! why its arguments are valid in its `// SAFETY:` line.

use std::cell::Cell;
use std::ffi::{c_uint, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use lmdb_master_sys as ffi;

use super::{check, empty_val, fork_generation, slice, val, Dbi, Env, LResult, LmdbError};

impl Env {
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
