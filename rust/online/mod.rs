//! The online store: the latest feature values of every entity, for lookups inside
//! inference processes, in one LMDB environment per store (`<store>/online/`).
//!
//! **Layout.** One LMDB database, `rows`, holds every table (feature group version).
//! Its key is `entity key ++ table id`: the entity's key columns in the encoding of
//! [`crate::encode::key`] (type-tagged, length-prefixed, prefix-free), then the
//! table's id as a big-endian u32. Its value is the entity's latest row in that table
//! ([`crate::encode::row`]: event time, created time, null bitmap, fixed-width values
//! at schema-known offsets, then variable-width ones, tagged with the schema version).
//! A second database, `meta`, holds the format marker and each table's schema
//! ([`catalog`]).
//!
//! Why entity first: a random LMDB lookup costs ~2 µs on this machine even from C (a
//! B-tree descent is about seven dependent cache/TLB misses of 250-300 ns each), while
//! stepping to the next key on the same leaf page costs tens of nanoseconds. With the
//! entity first, the rows of all tables that share the entity's key are adjacent:
//! reading 3 tables of an entity is one descent plus two steps, where a database per
//! table (or table-first keys) would cost three descents. The alternative, one value
//! per entity holding every table's row, would make each write rewrite every table's
//! data of the entity and couple table schemas; adjacency gets the read benefit
//! without that. Table-first order would help only full scans of one table, which the
//! online store never does (the offline tables serve scans). See [`read`] for the rest
//! of the lookup path (sorted keys, parallel runs, one copy) and [`write`] for the
//! batch upsert.
//!
//! **Concurrency.** Many reader processes and one writer at a time, each process with
//! its own handle ([`env`]): opened lazily per process and reopened after fork, pooled
//! read transactions, the map grown when full, stale reader slots cleared. Readers see
//! whole commits only (LMDB's MVCC), and a write is one transaction, so a reader never
//! sees half of a batch. [`env`] also documents the durability mode.
//!
//! **Damage.** LMDB keeps no checksums and trusts its file, so a damaged `data.mdb`
//! could crash the process or answer wrong. Opening an environment first checks every
//! page of its current snapshot ([`verify`]), and every row carries a checksum of its
//! key and bytes, checked on every read ([`crate::encode::row`]): damage is a
//! `CorruptStoreError` that says to rebuild the store with `pitstop repair`.
//!
//! **Paths.** `OnlineStore::open(path)` takes a store's root directory (the
//! environment lives in `<path>/online/`, created if needed) or the `online/`
//! directory itself (recognized by its `data.mdb`, or, when new or empty, by its name).
//! A path that is neither a new or empty directory, nor a pitstop store (with
//! `online/` or `registry.db`), is refused rather than filled with files.
//!
//! No pyo3 here: `cargo test` covers this module.

pub mod catalog;
pub mod env;
pub mod hugepages;
pub mod lmdb;
pub mod matrix;
pub mod read;
pub mod rows;
pub mod verify;
pub mod walk;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
pub use env::Env;
pub use matrix::{FeatureRef, MatrixPlan};
pub use read::{KeyValue, Keys, Status};
pub use write::{WriteSpec, WriteStats};

/// A handle on a store's online environment, safe to share between threads and to
/// keep across `fork` (the child reopens the environment on first use).
pub struct OnlineStore {
    /// The environment's directory (`<store>/online`).
    dir: PathBuf,
    map_size: Option<usize>,
    readonly: bool,
    /// See [`Self::huge_page_bytes`].
    huge_bytes: u64,
    /// This process's environment; replaced when used in a forked child, None once
    /// closed.
    env: Mutex<Option<Arc<Env>>>,
}

impl OnlineStore {
    /// Opens (or, unless `readonly`, creates) the online store at `path`: a store root
    /// or its `online/` directory.
    pub fn open(path: &Path, map_size: Option<usize>, readonly: bool) -> Result<OnlineStore> {
        Self::open_with(path, map_size, readonly, false)
    }

    /// [`Self::open`]; with `huge_pages`, an existing `data.mdb` is first loaded into
    /// the page cache on 2 MiB pages ([`hugepages`]), unless this process has the
    /// environment open already (its pages are mapped and would stay small).
    pub fn open_with(
        path: &Path,
        map_size: Option<usize>,
        readonly: bool,
        huge_pages: bool,
    ) -> Result<OnlineStore> {
        let dir = resolve(path, readonly)?;
        let data = dir.join("data.mdb");
        let mut huge_bytes = 0;
        if huge_pages && data.exists() && !Env::is_open(&dir) {
            huge_bytes = hugepages::load(&data)
                .map_err(|e| env::io_error(&dir, "load data.mdb on huge pages", e))?;
        }
        let env = Env::shared(&dir, map_size, readonly)?;
        Ok(OnlineStore {
            dir,
            map_size,
            readonly,
            huge_bytes,
            env: Mutex::new(Some(env)),
        })
    }

    /// Bytes of `data.mdb` that [`Self::open_with`] loaded on 2 MiB pages (0 unless
    /// asked, or where the system gives none).
    pub fn huge_page_bytes(&self) -> u64 {
        self.huge_bytes
    }

    /// This process's environment (reopened if the process forked since).
    pub fn env(&self) -> Result<Arc<Env>> {
        let mut slot = self.env.lock().unwrap_or_else(|e| e.into_inner());
        let env = slot.as_mut().ok_or_else(|| Error::Store {
            path: self.dir.display().to_string(),
            op: "use".into(),
            detail: "the store was closed; open a new OnlineStore".into(),
        })?;
        if env.generation() != lmdb::fork_generation() {
            // A forked child: never touch the parent's handle, open our own. The old
            // Arc is dropped here, and the Env leaks its LMDB handle (see lmdb.rs).
            *env = Env::shared(&self.dir, self.map_size, self.readonly)?;
        }
        Ok(Arc::clone(env))
    }

    /// Releases this handle; the environment closes when its last handle in the
    /// process is released (prepared readers hold one too).
    pub fn close(&self) {
        self.env.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Removes a table, its rows and definition (see [`Env::drop_table`]); false if
    /// there was none.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        self.env()?.drop_table(name)
    }

    /// [`Env::replace_table`]: swaps table `from` in as `name`, in one transaction.
    pub fn replace_table(&self, name: &str, from: &str) -> Result<()> {
        self.env()?.replace_table(name, from)
    }

    /// The last offline version table `name` holds ([`catalog`]); None if unknown.
    pub fn watermark(&self, name: &str) -> Result<Option<i64>> {
        self.env()?.watermark(name)
    }

    /// Validates and encodes a write without applying it ([`write::Prepared`]).
    pub fn prepare_write(
        &self,
        table: String,
        data: crate::table::Table,
        keys: Vec<String>,
        event_time: String,
        created_time: Option<String>,
    ) -> Result<write::Prepared> {
        write::Prepared::new(&*self.env()?, table, data, keys, event_time, created_time)
    }

    /// Applies a prepared write, setting the table's watermark when given.
    pub fn commit_write(
        &self,
        prepared: &mut write::Prepared,
        watermark: Option<i64>,
    ) -> Result<WriteStats> {
        prepared.commit(&*self.env()?, watermark)
    }

    /// Applies prepared writes and source positions in one transaction
    /// ([`write::commit_all`]).
    pub fn commit_all(
        &self,
        prepared: &mut [&mut write::Prepared],
        watermark: Option<i64>,
        positions: &write::Positions,
    ) -> Result<WriteStats> {
        write::commit_all(&*self.env()?, prepared, watermark, positions)
    }

    /// The positions stored under `pos/<prefix>` ([`write::positions`]).
    pub fn positions(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        write::positions(&*self.env()?, prefix)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn readonly(&self) -> bool {
        self.readonly
    }

    pub fn write(&self, spec: &WriteSpec) -> Result<WriteStats> {
        write::write(&*self.env()?, spec)
    }

    pub fn read(
        &self,
        table: &str,
        keys: &Keys,
        features: Option<&[String]>,
        ttl_ns: Option<i64>,
        now_ns: i64,
    ) -> Result<RecordBatch> {
        read::read_table(&*self.env()?, table, keys, features, ttl_ns, now_ns)
    }

    /// Runs `f` over the checked rows of `table` for `keys`, in place (see
    /// [`read::with_rows`]).
    pub fn with_rows<R>(
        &self,
        table: &str,
        keys: &Keys,
        now_ns: i64,
        f: impl FnMut(&[Option<crate::encode::row::RowView>], &catalog::TableDef) -> Result<R>,
    ) -> Result<R> {
        read::with_rows(&*self.env()?, table, keys, now_ns, f)
    }

    /// [`OnlineStore::with_rows`] with the table resolved once ([`read::RowsPlan`]).
    pub fn with_rows_prepared<R>(
        &self,
        rows: &read::RowsPlan,
        keys: &Keys,
        now_ns: i64,
        f: impl FnMut(&[Option<crate::encode::row::RowView>], &catalog::TableDef) -> Result<R>,
    ) -> Result<R> {
        read::with_rows_prepared(&*self.env()?, rows, keys, now_ns, f)
    }

    /// Resolves tables and features once for [`OnlineStore::read_matrix`].
    pub fn matrix_plan(
        &self,
        tables: &[String],
        features: &[FeatureRef],
        ttl_ns: Vec<Option<i64>>,
    ) -> Result<MatrixPlan> {
        MatrixPlan::new(&*self.env()?, tables, features, ttl_ns)
    }

    /// Fills `out` (`keys.len() * plan.width` floats) with the plan's features.
    ///
    /// `threads` overrides how many threads look keys up (default: one below 4096
    /// entities, every core above).
    pub fn read_matrix(
        &self,
        plan: &MatrixPlan,
        keys: &Keys,
        now_ns: i64,
        out: &mut [f32],
        threads: Option<usize>,
    ) -> Result<()> {
        matrix::read_matrix(&*self.env()?, plan, keys, now_ns, out, threads)
    }

    /// [`matrix::read_matrix_naive`]: one get per (entity, table), for comparison.
    pub fn read_matrix_naive(
        &self,
        plan: &MatrixPlan,
        keys: &Keys,
        now_ns: i64,
        out: &mut [f32],
    ) -> Result<()> {
        matrix::read_matrix_naive(&*self.env()?, plan, keys, now_ns, out)
    }

    /// A consistent copy of the environment, taken while writers run, in `out` (a new
    /// or empty directory; created): what `pitstop snapshot` ships to serving
    /// replicas. `compact` drops free pages. Returns the copy's size in bytes.
    pub fn copy(&self, out: &Path, compact: bool) -> Result<u64> {
        let io = |e: std::io::Error| env::io_error(out, "copy to", e);
        if out.is_file() || (out.exists() && std::fs::read_dir(out).map_err(io)?.next().is_some()) {
            return Err(Error::InvalidArgument(format!(
                "cannot copy the online store to {}: it exists and is not an empty \
                 directory; pick a new path",
                out.display()
            )));
        }
        std::fs::create_dir_all(out).map_err(io)?;
        let env = self.env()?;
        env.raw_env()
            .copy_to(out, compact)
            .map_err(|e| env.lmdb_error("copy", e))?;
        Ok(std::fs::metadata(out.join("data.mdb")).map_err(io)?.len())
    }

    pub fn tables(&self) -> Result<Vec<String>> {
        self.env()?.table_names()
    }

    pub fn table(&self, name: &str) -> Result<Arc<catalog::TableDef>> {
        self.env()?.table(name)
    }

    pub fn map_size(&self) -> Result<usize> {
        Ok(self.env()?.map_size())
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The environment directory for `path` (see "Paths" above), created if allowed.
fn resolve(path: &Path, readonly: bool) -> Result<PathBuf> {
    let refuse = |detail: &str| Error::NotAStore {
        path: path.display().to_string(),
        detail: detail.to_string(),
    };
    let io = |e: std::io::Error| env::io_error(path, "open", e);
    if path.is_file() {
        return Err(refuse(
            "it is a file; pass a store directory (or a new path to create one)",
        ));
    }
    if path.join("data.mdb").is_file() {
        return Ok(path.to_path_buf());
    }
    let online = path.join("online");
    if online.is_dir() {
        return Ok(online);
    }
    if readonly {
        return Err(refuse(
            "there is no online store in it (no online/ directory); write to it first or \
             open it without readonly",
        ));
    }
    let empty = !path.exists() || std::fs::read_dir(path).map_err(io)?.next().is_none();
    if empty && path.file_name().is_some_and(|n| n == "online") {
        // A store's online/ directory itself, not created yet.
        std::fs::create_dir_all(path).map_err(io)?;
        return Ok(path.to_path_buf());
    }
    let fresh = empty || path.join("registry.db").exists();
    if !fresh {
        return Err(refuse(
            "it is a non-empty directory with neither online/ nor registry.db; pass a store's \
             root directory, its online/ directory, or a new path",
        ));
    }
    std::fs::create_dir_all(&online).map_err(io)?;
    Ok(online)
}

#[cfg(test)]
mod tests;
