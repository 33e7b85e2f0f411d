//! Helpers shared by the crate's unit tests (the online store's `tests.rs`,
//! `verify_tests.rs` and `walk_tests.rs`, `stats/tests.rs`): a temporary directory
//! removed when dropped, and a one-batch Arrow table built from named columns.
//! Test-only (`#[cfg(test)]` in `lib.rs`).
//!
//! Each [`TempDir`] is `<tmp>/pitstop-online-test-<pid>-<n>`, with `n` from a
//! process-wide counter, so the tests that run in parallel threads of one process, and
//! test processes that run at once, never share a directory. Nothing here is timed or
//! large: a directory name and a `remove_dir_all` per test, one `RecordBatch` per table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};

use crate::table::Table;

/// A fresh path under the system's temporary directory, removed (with everything in
/// it) when dropped. [`TempDir::new`] leaves the directory to be created by its user
/// (an `OnlineStore::open` creates it); [`TempDir::created`] creates it, empty.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "pitstop-online-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    /// Like [`TempDir::new`], the directory created.
    pub(crate) fn created() -> TempDir {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A table named "data" of one batch holding `cols` (every field nullable).
pub(crate) fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
    table_named("data", cols)
}

/// A table named `name` of one batch holding `cols` (every field nullable).
pub(crate) fn table_named(name: &str, cols: Vec<(&str, ArrayRef)>) -> Table {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    Table::new(name, schema, vec![batch])
}
