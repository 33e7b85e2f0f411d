//! A structural check of the LMDB data file (`data.mdb`), run when an environment is
//! opened, so that a damaged file is an error instead of a crash.
//!
//! **Why.** LMDB trusts its file: a page number, node offset or key size read from a
//! damaged page is followed as is, so flipped bits or an overwritten page make LMDB
//! read or write outside the map (SIGSEGV), trip an assertion (SIGABRT), or answer
//! from the wrong place. LMDB keeps no checksums. This module walks the file the way
//! LMDB would, with every bound checked, before LMDB itself walks any B-tree; row
//! values are covered by their own checksums ([`crate::encode::row`]).
//!
//! **The format** (LMDB 0.9.70 as bundled by `lmdb-master-sys` 0.2.6, 64-bit,
//! `MDB_DEVEL` off). Pages 0 and 1 are meta pages; a meta holds the page size, the
//! last page number used, the id of the transaction that wrote it and two `MDB_db`
//! records (48 bytes: pad, flags, depth, branch/leaf/overflow page counts, entries,
//! root): the free DB (key: a txnid, value: a list of page numbers it freed) and the
//! main DB (key: a database name, value: that database's `MDB_db` record, node flag
//! `F_SUBDATA`). Every other page starts with a 16-byte header (page number, flags,
//! then `lower`/`upper`, the bounds of the free space, or for an overflow page the
//! number of pages in its run). Branch and leaf pages have `(lower - 16) / 2` node
//! offsets after the header; a node is 8 bytes (`lo`, `hi`, flags, key size) then
//! the key, then in a leaf the value (or, with `F_BIGDATA`, the 8-byte number of the
//! first page of an overflow run holding it), in a branch nothing: `lo | hi << 16 |
//! flags << 32` is the child's page number.
//!
//! **What is checked**, for every page reachable from the snapshot's meta page (the
//! free DB, the main DB, and each named DB): the page number is above the meta pages,
//! at most the meta's last page, and inside the file; the page's stored number is its
//! own; its flags are exactly branch above the depth the `MDB_db` record gives and
//! exactly leaf at that depth (so every leaf is at the recorded depth, and `LEAF2`,
//! `DUPSORT` sub-pages, meta or dirty flags are refused: pitstop never creates them);
//! `lower`/`upper` are ordered and inside the page; every node offset, node header,
//! key and inline value lies inside the page, and the nodes exactly fill the space
//! from `upper` to the end of the page (so they cannot overlap); keys are 1..=511
//! bytes (8 in the free DB), strictly increasing within a page and within the bounds
//! the parent's separators give (so across siblings too); a branch page has at least
//! two children (one in the free DB); value flags are allowed for their tree
//! (`F_SUBDATA` only in the main DB, with a 48-byte value; no `F_DUPDATA`); an
//! overflow run is a page marked overflow, at the right number, long enough for its
//! value and inside the snapshot; the counts of branch, leaf and overflow pages and
//! of entries equal the `MDB_db` record's; no page is reached twice (a cycle or two
//! parents); each free-list record has a key at most the snapshot's id and a
//! well-formed list whose page numbers are in bounds, listed once, and not used by any
//! tree (else the next write would hand out a live page). The main DB may only hold
//! database records with no flags. Then, per entry, pitstop's own invariants: every
//! table definition in `meta` decodes (its checksum matches), `next_table_id` is above
//! every table's id, and every row of `rows` has a well-formed key and a checksum
//! that matches it (so a damaged key, which would make a lookup silently miss, is
//! caught here, not only damaged values).
//!
//! **Concurrency.** A writer in another process may commit during the walk, and it
//! reuses pages that no live snapshot needs. So the walk holds a read transaction
//! (beginning one only reads the meta, it walks nothing) and checks the snapshot of
//! *that* transaction, whose pages LMDB never reuses while it lives: the meta page
//! whose txnid equals the transaction's id (slot `id & 1`). A meta page is rewritten
//! two commits later; if it was rewritten while being read (its txnid changed), the
//! walk starts again with a new transaction. The file is read through a read-only
//! mapping of its own (never through LMDB calls that traverse pages); the meta page,
//! which a writer may be rewriting, is read with `pread`.
//!
//! **Cost.** Every page of the snapshot is read once (the whole file less its free
//! pages) and every row's checksum computed once; memory is two bitmaps of one bit
//! per page (32 KB per GB of file). Measured on this machine (2 shared cores, page
//! cache warm, release build), for stores like the online benchmark's (3 tables x 20
//! float32 features, every row written twice): 200k entities, a 280 MB file: 0.08 to
//! 0.17 s per open; 1M entities, a 1.47 GB file: 0.41 s. A cold cache adds one read
//! of the file's live pages. This is paid once per process and environment (and
//! again after a fork), never per read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::catalog::{self, TableDef};
use super::env::{corrupt, io_error, lmdb_error};
use super::lmdb;
use crate::encode::{key, row};
use crate::error::Result;

#[path = "verify_walk.rs"]
pub(super) mod walk;

pub use walk::{walk, DbRecord, Meta, Visit, WalkStats};

/// What a check found, for tests and timing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub txnid: u64,
    pub walk: WalkStats,
    pub tables: usize,
    pub rows: u64,
}

/// Checks the data file of the environment `raw` (in `dir`) as of a fresh read
/// snapshot; an error is a [`crate::error::Error::CorruptStore`] saying what is wrong.
/// Must run before any LMDB call that walks a B-tree (opening a named database
/// does), and while no transaction of `raw` is active in this process.
pub fn check_env(dir: &Path, raw: &lmdb::Env) -> Result<Report> {
    let path = dir.join("data.mdb");
    let file = File::open(&path).map_err(|e| io_error(dir, "open data.mdb", e))?;
    let psize = raw.page_size();
    let mut resized = false;
    for attempt in 0.. {
        // SAFETY: the transaction is dropped at the end of this iteration, before
        // `raw` (which the caller owns past this call).
        let txn = match unsafe { raw.begin_read() } {
            Err(e) if e.0 == lmdb::MDB_MAP_RESIZED && !resized => {
                // Another process grew the file past our map: adopt its map size.
                resized = true;
                // SAFETY: no transaction of `raw` is active (the caller's duty, and
                // the failed begin left none).
                unsafe { raw.set_map_size(0) }.map_err(|e| lmdb_error(dir, "open", e))?;
                continue;
            }
            other => other.map_err(|e| lmdb_error(dir, "begin a read", e))?,
        };
        let txnid = txn.id() as u64;
        let outcome = check_snapshot(&file, psize, txnid);
        // Whether the snapshot's meta page still holds it: if not, a writer rewrote
        // it (two commits later) and what was read may mix two metas.
        let stable = read_meta(&file, psize, txnid).is_ok_and(|m| m.txnid == txnid);
        drop(txn);
        match outcome {
            Ok(report) => return Ok(report),
            Err(Failure::Io(e)) => return Err(io_error(dir, "check data.mdb", e)),
            Err(Failure::Corrupt(_)) if !stable && attempt < 8 => continue,
            Err(Failure::Corrupt(detail)) => {
                return Err(corrupt(dir, format!("data.mdb is damaged: {detail}")))
            }
        }
    }
    unreachable!()
}

enum Failure {
    Io(std::io::Error),
    Corrupt(String),
}

/// The meta page of snapshot `txnid`, read with `pread` (a writer may be rewriting
/// it: the caller checks that its txnid is still `txnid` afterwards).
fn read_meta(file: &File, psize: usize, txnid: u64) -> Result<Meta, Failure> {
    let mut page = vec![0u8; walk::META_LEN];
    let at = (txnid & 1) * psize as u64 + walk::PAGE_HEADER as u64;
    file.read_exact_at(&mut page, at).map_err(Failure::Io)?;
    Meta::parse(&page).map_err(Failure::Corrupt)
}

fn check_snapshot(file: &File, psize: usize, txnid: u64) -> Result<Report, Failure> {
    let meta = read_meta(file, psize, txnid)?;
    if meta.txnid != txnid {
        return Err(Failure::Corrupt(format!(
            "the meta page of transaction {txnid} holds transaction {}",
            meta.txnid
        )));
    }
    if meta.page_size as usize != psize {
        return Err(Failure::Corrupt(format!(
            "the meta page gives a page size of {}, LMDB uses {psize}",
            meta.page_size
        )));
    }
    let len = file.metadata().map_err(Failure::Io)?.len();
    let map = Map::new(file, len).map_err(Failure::Io)?;
    let mut pitstop = Pitstop::default();
    let stats = walk(map.bytes(), &meta, &mut |db: &str, k: &[u8], v: &[u8]| {
        pitstop.entry(db, k, v)
    })
    .map_err(Failure::Corrupt)?;
    pitstop.finish().map_err(Failure::Corrupt)?;
    Ok(Report {
        txnid,
        walk: stats,
        tables: pitstop.tables,
        rows: pitstop.rows,
    })
}

/// pitstop's invariants over the entries of `meta` (walked first: "meta" < "rows")
/// and `rows`.
#[derive(Default)]
struct Pitstop {
    /// The environment is in this pitstop's format; when not, [`Env::open`] refuses
    /// it with its own message and rows are not checked here.
    ///
    /// [`Env::open`]: super::env::Env
    current: bool,
    next_id: Option<u32>,
    max_id: Option<u32>,
    /// Table names by id, for messages.
    names: std::collections::HashMap<u32, String>,
    tables: usize,
    rows: u64,
}

impl Pitstop {
    fn entry(&mut self, db: &str, k: &[u8], v: &[u8]) -> Result<(), String> {
        match db {
            "meta" => {
                if k == catalog::FORMAT_KEY {
                    self.current = v == catalog::format_value().as_slice();
                } else if k == catalog::NEXT_ID_KEY {
                    self.next_id = <[u8; 4]>::try_from(v).ok().map(u32::from_le_bytes);
                } else if let Some(name) = k.strip_prefix(catalog::MARK_PREFIX) {
                    if self.current && catalog::mark_of(Some(v)).is_err() {
                        let name = String::from_utf8_lossy(name);
                        return Err(format!("the watermark of table '{name}' is damaged"));
                    }
                } else if let Some(name) = k.strip_prefix(catalog::TABLE_PREFIX) {
                    if !self.current {
                        return Ok(());
                    }
                    let name = String::from_utf8_lossy(name);
                    let def = TableDef::decode(&name, v)
                        .ok_or_else(|| format!("the definition of table '{name}' is unreadable"))?;
                    self.max_id = self.max_id.max(Some(def.id));
                    self.names.insert(def.id, def.name);
                    self.tables += 1;
                }
                Ok(())
            }
            "rows" => {
                if !self.current {
                    return Ok(());
                }
                let Some((_, id)) = key::split_row_key(k) else {
                    return Err(format!("a row has a malformed key ({} bytes)", k.len()));
                };
                row::check(&[k], v).map_err(|e| match self.names.get(&id) {
                    Some(name) => format!("a row of table '{name}': {e}"),
                    None => format!("a row of table id {id} (no such table): {e}"),
                })?;
                self.rows += 1;
                Ok(())
            }
            // Another program's database: Env::open refuses the environment (it is
            // not a pitstop store); its pages were checked all the same.
            _ => Ok(()),
        }
    }

    fn finish(&self) -> Result<(), String> {
        if !self.current {
            return Ok(());
        }
        match (self.next_id, self.max_id) {
            (None, _) => Err("the catalog has no valid next table id".into()),
            (Some(next), Some(max)) if next <= max => Err(format!(
                "the catalog's next table id {next} is not above table id {max}"
            )),
            _ => Ok(()),
        }
    }
}

/// A read-only, private mapping of a whole file, unmapped on drop.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Map {
    fn new(file: &File, len: u64) -> std::io::Result<Map> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        if len == 0 {
            return Ok(Map {
                ptr: std::ptr::null_mut(),
                len,
            });
        }
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file
        // descriptor; no address is imposed, and the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Map { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the mapping is `len` readable bytes that live until `self` drops.
        // The walk only reads pages of the snapshot it holds a read transaction on,
        // which no process modifies while that transaction lives; LMDB never
        // shrinks the file, so the mapped range stays backed.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `new`, no longer borrowed
            // (`bytes` borrows `self`).
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
