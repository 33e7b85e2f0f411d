//! The per-process handle on a store's LMDB environment and the policies around it:
//! one handle per directory and process, reopened after fork; pooled read
//! transactions; automatic map growth; stale reader slots cleared; the table catalog
//! cached (in `env_tables.rs`, with dropping and replacing a table).
//!
//! **One handle per directory and process.** LMDB forbids opening one environment
//! twice in a process (closing either copy drops the other's `fcntl` locks), so
//! handles are shared through a process-wide registry keyed by canonical path. A
//! handle records the fork generation it was opened in ([`lmdb::fork_generation`]); a
//! forked child never uses its parent's handle, it opens its own on first use and
//! leaks the inherited one (LMDB: "use an `MDB_env` in the process which opened it").
//!
//! **Reads.** A read takes a reset transaction from the pool and renews it (no lock
//! on the shared reader table, no allocation), and gives it back reset. A read that
//! spans several threads renews one transaction per thread and checks that all of
//! them see the same snapshot (renewing again if a commit slipped between), so one
//! call never mixes two writes. Reads hold the *gate* (an in-process `RwLock`) shared;
//! a map resize holds it exclusively, as LMDB requires that no transaction be active
//! in the process while the map is resized.
//!
//! **Map growth.** The map size is an upper bound on the data file (the file itself
//! grows page by page). A write estimates its size and grows the map beforehand when
//! it would not fit; if LMDB still reports `MDB_MAP_FULL` the transaction is aborted,
//! the map doubled and the transaction replayed (its input is already encoded, so a
//! replay costs only the B-tree work). A process whose map is smaller than the file
//! another process grew gets `MDB_MAP_RESIZED` and adopts the new size. No map-full
//! error ever reaches the user.
//!
//! **Stale readers.** A reader killed mid-read leaves its slot pinning an old
//! snapshot (so freed pages cannot be reused and the file grows). Slots of dead
//! processes are cleared when an environment is opened, before every write and when
//! the reader table is full.
//!
//! **Durability.** Writers open with `MDB_NOMETASYNC`: a commit fsyncs the data pages
//! but not the meta page, so a commit costs one fsync instead of two. A process crash
//! (kill -9) loses nothing committed (the pages are in the OS cache); an OS crash or
//! power loss may roll back the last committed write but never corrupts the store
//! (LMDB keeps the previous meta page valid). The online store is a cache of the
//! offline tables and can be rebuilt from them, so the last write is worth less than
//! halving the commit cost. `MDB_NOSYNC` was rejected: without write ordering an OS
//! crash could corrupt the file. Readers use `MDB_NORDAHEAD` (lookups are random:
//! read-ahead would evict useful pages when the store exceeds RAM) and `MDB_NOTLS`
//! (transactions move between threads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::catalog::{self, TableDef};
use super::lmdb::{self, Dbi, EnvOptions, LmdbError, RoTxn, RwTxn};
use crate::error::{py_list, Error, Result};

// The table catalog: cached definitions, drop and replace (more `impl Env`).
#[path = "env_tables.rs"]
mod tables;

/// Default map size: an upper bound on the store's size, grown on demand.
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
const MAX_READERS: u32 = 1024;
/// Transactions kept for reuse per process.
const POOL_MAX: usize = 64;
/// Attempts at a write that keeps hitting a full map (each doubles it).
const MAX_GROWTHS: usize = 48;

/// The thread pool of the online store's parallel work, per fork generation.
///
/// Not rayon's global pool: a process forked after using a pool has none of its
/// threads, and work sent to it would wait forever (a gunicorn master that wrote to
/// the store before forking its workers). A forked child builds its own pool and leaks
/// the inherited one, as it does LMDB handles.
pub fn pool() -> Arc<rayon::ThreadPool> {
    static POOL: Mutex<Option<(u64, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let generation = lmdb::fork_generation();
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((g, pool)) = slot.as_ref() {
        if *g == generation {
            return Arc::clone(pool);
        }
    }
    if let Some((_, inherited)) = slot.take() {
        std::mem::forget(inherited); // its threads exist only in the parent
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("pitstop-online-{i}"))
            .build()
            .expect("a thread pool"),
    );
    *slot = Some((generation, Arc::clone(&pool)));
    pool
}

/// Why a write transaction's body stopped.
pub enum Abort {
    /// LMDB failed (a full map is retried after growing it).
    Lmdb(LmdbError),
    /// The input is wrong: abort and report (boxed: errors are rare, results common).
    Error(Box<Error>),
    /// Something the body planned with changed under it (another process registered
    /// the same table): abort, plan again.
    Replan,
}

impl From<LmdbError> for Abort {
    fn from(e: LmdbError) -> Self {
        Abort::Lmdb(e)
    }
}

impl From<Error> for Abort {
    fn from(e: Error) -> Self {
        Abort::Error(Box::new(e))
    }
}

/// This process's open environments: directory, fork generation, handle.
static REGISTRY: Mutex<Vec<(PathBuf, u64, Weak<Env>)>> = Mutex::new(Vec::new());

/// An open environment with its two databases.
pub struct Env {
    // Field order is drop order: the pooled transactions end before the environment.
    pool: Mutex<Vec<RoTxn>>,
    /// Held shared by every transaction of this process, exclusively to resize the map.
    gate: RwLock<()>,
    /// Serializes this process's writers (LMDB serializes processes).
    writer: Mutex<()>,
    /// Definitions read under catalog version `.0`.
    catalog: RwLock<(u64, HashMap<String, Arc<TableDef>>)>,
    pub rows: Dbi,
    pub meta: Dbi,
    pub dir: PathBuf,
    pub readonly: bool,
    raw: lmdb::Env,
}

impl Env {
    /// The shared handle on the environment in `dir` for this process, opened if
    /// needed (`create` allows making a new store there).
    pub fn shared(dir: &Path, map_size: Option<usize>, readonly: bool) -> Result<Arc<Env>> {
        let canon = dir.canonicalize().map_err(|e| io_error(dir, "open", e))?;
        let generation = lmdb::fork_generation();
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|(_, g, w)| *g == generation && w.strong_count() > 0);
        if let Some(env) = reg
            .iter()
            .find(|(p, _, _)| *p == canon)
            .and_then(|(_, _, w)| w.upgrade())
        {
            if env.readonly && !readonly {
                return Err(Error::Store {
                    path: dir.display().to_string(),
                    op: "open".into(),
                    detail: "this process already has it open with readonly=True; LMDB allows \
                             one handle per process, so open every OnlineStore on it read-write"
                        .into(),
                });
            }
            return Ok(env);
        }
        let env = Arc::new(Env::open(&canon, map_size, readonly)?);
        reg.push((canon, generation, Arc::downgrade(&env)));
        Ok(env)
    }

    /// Whether this process has the environment in `dir` open (since its last fork).
    pub fn is_open(dir: &Path) -> bool {
        let Ok(canon) = dir.canonicalize() else {
            return false;
        };
        let generation = lmdb::fork_generation();
        let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.iter()
            .any(|(p, g, w)| *p == canon && *g == generation && w.strong_count() > 0)
    }

    fn open(dir: &Path, map_size: Option<usize>, readonly: bool) -> Result<Env> {
        let data = dir.join("data.mdb");
        let existing = std::fs::metadata(&data).ok().map(|m| m.len());
        if let Some(len) = existing {
            if len < 8192 {
                return Err(corrupt(
                    dir,
                    format!("data.mdb has {len} bytes, less than its two meta pages"),
                ));
            }
        } else if readonly {
            return Err(Error::NotAStore {
                path: dir.display().to_string(),
                detail: "there is no online store (data.mdb) here to open read-only".into(),
            });
        }
        let opts = EnvOptions {
            map_size: round_up(map_size.unwrap_or(DEFAULT_MAP_SIZE).max(1 << 20), 1 << 16),
            max_readers: MAX_READERS,
            max_dbs: 4,
            readonly,
        };
        let raw = lmdb::Env::open(dir, opts).map_err(|e| match e.0 {
            lmdb_master_sys::MDB_INVALID | lmdb_master_sys::MDB_VERSION_MISMATCH => {
                corrupt(dir, format!("data.mdb is not a valid LMDB file ({e})"))
            }
            _ => lmdb_error(dir, "open", e),
        })?;
        // A truncated file would fault (SIGBUS) on the first read of a missing page:
        // check that the file holds every page the last transaction uses.
        let info = raw.info();
        let need = (info.me_last_pgno as u64 + 1) * raw.page_size() as u64;
        let have = std::fs::metadata(&data)
            .map_err(|e| io_error(dir, "open", e))?
            .len();
        if have < need {
            return Err(corrupt(
                dir,
                format!(
                    "data.mdb is truncated: it has {have} bytes, its last transaction needs {need}"
                ),
            ));
        }
        if let Err(e) = raw.reader_check() {
            return Err(lmdb_error(dir, "clear stale readers", e));
        }
        // A damaged file must be an error, not a crash inside LMDB: check every page
        // of the current snapshot before LMDB walks any B-tree (see verify.rs).
        super::verify::check_env(dir, &raw)?;
        let (meta, rows) = open_databases(dir, &raw, readonly)?;
        Ok(Env {
            pool: Mutex::new(Vec::new()),
            gate: RwLock::new(()),
            writer: Mutex::new(()),
            catalog: RwLock::new((0, HashMap::new())),
            rows,
            meta,
            dir: dir.to_path_buf(),
            readonly,
            raw,
        })
    }

    pub fn generation(&self) -> u64 {
        self.raw.generation()
    }

    pub fn map_size(&self) -> usize {
        self.raw.info().me_mapsize
    }

    pub fn lmdb_error(&self, op: &str, e: LmdbError) -> Error {
        lmdb_error(&self.dir, op, e)
    }

    pub fn corrupt(&self, detail: String) -> Error {
        corrupt(&self.dir, detail)
    }

    // ---- reads ----------------------------------------------------------------

    /// The LMDB handle (for whole-environment operations such as a copy).
    pub fn raw_env(&self) -> &lmdb::Env {
        &self.raw
    }

    /// Runs `f` on `k` read transactions that all see the same, latest snapshot.
    pub fn with_reads<R>(&self, k: usize, f: impl FnOnce(&mut [RoTxn]) -> Result<R>) -> Result<R> {
        let mut f = Some(f);
        for _ in 0..MAX_GROWTHS {
            let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
            let mut txns = {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                let at = pool.len().saturating_sub(k);
                pool.split_off(at)
            };
            match self.renew_all(&mut txns, k) {
                Ok(()) => {}
                Err(e) if e.0 == lmdb::MDB_MAP_RESIZED => {
                    drop(txns);
                    drop(gate);
                    self.adopt_map_size()?;
                    continue;
                }
                Err(e) => return Err(self.lmdb_error("begin a read", e)),
            }
            let out = (f.take().expect("called once"))(&mut txns);
            for t in &mut txns {
                t.reset();
            }
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let room = POOL_MAX.saturating_sub(pool.len());
            txns.truncate(room);
            pool.append(&mut txns);
            return out;
        }
        Err(self.lmdb_error("begin a read", LmdbError(lmdb::MDB_MAP_RESIZED)))
    }

    /// Runs `f` on one read transaction of the latest snapshot.
    pub fn with_read<R>(&self, f: impl FnOnce(&mut RoTxn) -> Result<R>) -> Result<R> {
        self.with_reads(1, |t| f(&mut t[0]))
    }

    /// Renews the pooled transactions in `txns` and begins new ones up to `k`, until
    /// all read the same snapshot.
    fn renew_all(&self, txns: &mut Vec<RoTxn>, k: usize) -> Result<(), LmdbError> {
        for attempt in 0.. {
            for t in txns.iter_mut() {
                t.reset();
                t.renew()?;
            }
            while txns.len() < k {
                // SAFETY: transactions live in this Env's pool or in a call's local
                // vector, and the pool (a field declared before `raw`) drops first.
                let t = match unsafe { self.raw.begin_read() } {
                    Err(e) if e.0 == lmdb::MDB_READERS_FULL && attempt == 0 => {
                        self.raw.reader_check()?;
                        // SAFETY: as above.
                        unsafe { self.raw.begin_read() }?
                    }
                    other => other?,
                };
                txns.push(t);
            }
            let id = txns[0].id();
            if txns.iter().all(|t| t.id() == id) {
                return Ok(());
            }
        }
        unreachable!()
    }

    fn adopt_map_size(&self) -> Result<()> {
        let _all = self.gate.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: holding the gate exclusively, no transaction of this process is
        // active (pooled ones are reset, which holds no pointer into the map).
        unsafe { self.raw.set_map_size(0) }.map_err(|e| self.lmdb_error("resize the map", e))
    }

    fn grow(&self, at_least: usize) -> Result<()> {
        let _all = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let current = self.raw.info().me_mapsize;
        if current >= at_least {
            return Ok(()); // another thread grew it meanwhile
        }
        let size = round_up(
            at_least.max(current.saturating_mul(2)),
            self.raw.page_size().max(1 << 16),
        );
        // SAFETY: as in adopt_map_size.
        unsafe { self.raw.set_map_size(size) }.map_err(|e| self.lmdb_error("grow the map", e))
    }

    // ---- writes ---------------------------------------------------------------

    /// Runs `body` in the write transaction and commits; `estimate` is the bytes it may
    /// add. Grows the map and replays `body` when the map is full; returns
    /// `Ok(None)` when the body asked to plan again.
    pub fn with_write<R>(
        &self,
        estimate: usize,
        mut body: impl FnMut(&mut RwTxn) -> Result<R, Abort>,
    ) -> Result<Option<R>> {
        if self.readonly {
            return Err(Error::ReadOnly {
                path: self.dir.display().to_string(),
            });
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.raw
            .reader_check()
            .map_err(|e| self.lmdb_error("clear stale readers", e))?;
        // A write may copy every page it touches (copy-on-write), and a table's rows are
        // interleaved with other tables', so leave room for the whole file to be
        // rewritten: growing the map costs address space only, a replay costs time.
        let info = self.raw.info();
        let used = (info.me_last_pgno + 1) * self.raw.page_size();
        let need = used.saturating_mul(2).saturating_add(estimate);
        if need > info.me_mapsize {
            self.grow(need)?;
        }
        for _ in 0..MAX_GROWTHS {
            let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
            let mut txn = match self.raw.begin_write() {
                Ok(t) => t,
                Err(e) if e.0 == lmdb::MDB_MAP_RESIZED => {
                    drop(gate);
                    self.adopt_map_size()?;
                    continue;
                }
                Err(e) => return Err(self.lmdb_error("begin a write", e)),
            };
            let outcome = body(&mut txn);
            match outcome {
                Ok(r) => match txn.commit() {
                    Ok(()) => return Ok(Some(r)),
                    Err(e) if e.0 == lmdb::MDB_MAP_FULL => {}
                    Err(e) => return Err(self.lmdb_error("commit", e)),
                },
                Err(Abort::Lmdb(e)) if e.0 == lmdb::MDB_MAP_FULL => drop(txn),
                Err(Abort::Lmdb(e)) => return Err(self.lmdb_error("write", e)),
                Err(Abort::Error(e)) => return Err(*e),
                Err(Abort::Replan) => return Ok(None),
            }
            // The map is full: the transaction has ended (aborted, or consumed by the
            // failed commit); grow the map once no transaction is active, and replay.
            drop(gate);
            let current = self.raw.info().me_mapsize;
            self.grow(current.saturating_mul(2))?;
        }
        Err(self.lmdb_error("write", LmdbError(lmdb::MDB_MAP_FULL)))
    }

    /// Flushes everything to disk (commits already fsync their data pages).
    pub fn sync(&self) -> Result<()> {
        self.raw.sync().map_err(|e| self.lmdb_error("sync", e))
    }
}

/// Opens `meta` and `rows`, creating them in a new environment when allowed.
fn open_databases(dir: &Path, raw: &lmdb::Env, readonly: bool) -> Result<(Dbi, Dbi)> {
    let not_ours = |detail: &str| Error::NotAStore {
        path: dir.display().to_string(),
        detail: detail.to_string(),
    };
    let check_format = |value: Option<&[u8]>| -> Result<()> {
        let v =
            value.ok_or_else(|| not_ours("its LMDB environment has no pitstop format marker"))?;
        let version = v
            .strip_prefix(catalog::FORMAT_MAGIC)
            .and_then(|r| <[u8; 4]>::try_from(r).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| not_ours("its LMDB environment has no pitstop format marker"))?;
        if version > catalog::FORMAT_VERSION {
            return Err(not_ours(&format!(
                "it was written by a newer pitstop (online format {version}, this one reads up \
                 to {}); upgrade pitstop",
                catalog::FORMAT_VERSION
            )));
        }
        if version < catalog::FORMAT_VERSION {
            return Err(Error::Store {
                path: dir.display().to_string(),
                op: "open".into(),
                detail: format!(
                    "it is in online format {version}, written by an older pitstop (this one \
                     reads format {}); the online store is derived data: rebuild it with \
                     `pitstop repair`",
                    catalog::FORMAT_VERSION
                ),
            });
        }
        Ok(())
    };
    // First try read-only: an existing store opens without waiting for a writer.
    type Found = Option<(Dbi, Dbi, Option<Vec<u8>>)>;
    let existing = (|| -> Result<Found, LmdbError> {
        // SAFETY: the transaction is committed or dropped within this closure, long
        // before `raw` is.
        let txn = unsafe { raw.begin_read() }?;
        let meta = match txn.open_db("meta") {
            Ok(d) => d,
            Err(e) if e.0 == lmdb::MDB_NOTFOUND => return Ok(None),
            Err(e) => return Err(e),
        };
        let rows = match txn.open_db("rows") {
            Ok(d) => d,
            Err(e) if e.0 == lmdb::MDB_NOTFOUND => return Ok(None),
            Err(e) => return Err(e),
        };
        let format = txn.get(meta, catalog::FORMAT_KEY)?.map(<[u8]>::to_vec);
        txn.commit()?;
        Ok(Some((meta, rows, format)))
    })()
    .map_err(|e| open_error(dir, e))?;
    if let Some((meta, rows, format)) = existing {
        check_format(format.as_deref())?;
        return Ok((meta, rows));
    }
    if readonly {
        return Err(not_ours("its LMDB environment has no pitstop databases"));
    }
    let mut txn = raw.begin_write().map_err(|e| open_error(dir, e))?;
    let created = (|| -> Result<Result<(Dbi, Dbi)>, LmdbError> {
        if let Some(meta) = txn.open_db("meta")? {
            // Created by another process since we looked.
            let rows = txn.open_db("rows")?;
            let format = txn.get(meta, catalog::FORMAT_KEY)?.map(<[u8]>::to_vec);
            return Ok(check_format(format.as_deref()).and_then(|()| {
                rows.map(|r| (meta, r))
                    .ok_or_else(|| not_ours("its LMDB environment has no rows database"))
            }));
        }
        if txn.main_db_entries()? != 0 {
            return Ok(Err(not_ours(
                "it holds an LMDB environment of something else (named databases without \
                 pitstop's)",
            )));
        }
        let meta = txn.create_db("meta")?;
        let rows = txn.create_db("rows")?;
        txn.put(meta, catalog::FORMAT_KEY, &catalog::format_value())?;
        txn.put(meta, catalog::NEXT_ID_KEY, &1u32.to_le_bytes())?;
        Ok(Ok((meta, rows)))
    })()
    .map_err(|e| open_error(dir, e))?;
    let dbs = created?;
    txn.commit().map_err(|e| open_error(dir, e))?;
    Ok(dbs)
}

fn open_error(dir: &Path, e: LmdbError) -> Error {
    lmdb_error(dir, "open", e)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

pub fn corrupt(dir: &Path, detail: String) -> Error {
    Error::CorruptStore {
        path: dir.display().to_string(),
        detail,
    }
}

pub fn lmdb_error(dir: &Path, op: &str, e: LmdbError) -> Error {
    if e.is_corruption() {
        corrupt(dir, format!("LMDB reports {e} during {op}"))
    } else {
        Error::Store {
            path: dir.display().to_string(),
            op: op.to_string(),
            detail: e.to_string(),
        }
    }
}

pub fn io_error(dir: &Path, op: &str, e: std::io::Error) -> Error {
    Error::Store {
        path: dir.display().to_string(),
        op: op.to_string(),
        detail: e.to_string(),
    }
}

/// `tables: [...]` for messages.
pub fn names_list(names: &[String]) -> String {
    py_list(names)
}
