//! The table catalog as seen through an [`Env`]: each table's definition, cached per
//! process, and the maintenance operations that remove or swap a whole table.
//!
//! **Cached definitions.** `meta` holds a catalog version that every drop or replace
//! bumps. [`Env::table_at`] reads the version in a read transaction and, when the
//! process's cache was filled under that same version, answers from the cache (one
//! `meta` lookup and a hash probe); otherwise it decodes the definition from `meta`
//! (one more lookup and a checksum) and caches it under the version it read. A cache
//! filled under an older version is dropped whole on the next insert, so a process
//! never uses a definition of a table that another process dropped or replaced.
//!
//! **Drop and replace.** A table's rows are spread among the other tables' rows (keys
//! are entity first, see [`super::super`]), so [`Env::drop_table`] and
//! [`Env::replace_table`] scan the whole `rows` database in one write transaction:
//! O(rows in the store). They are for maintenance (re-materializing, deleting a feature
//! group), never on a serving path. Readers see the old table or the new one, never
//! neither, because both are one transaction.
//!
//! **Names and watermarks.** [`Env::table_names`] scans the table keys of `meta` (a few
//! entries per table); [`Env::watermark`] is one `meta` lookup.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::catalog::{self, TableDef};
use super::super::lmdb::{RoTxn, RwTxn};
use super::{Abort, Env};
use crate::error::{Error, Result};

impl Env {
    // ---- catalog --------------------------------------------------------------

    /// The definition of table `name` and the catalog version it is valid under, from
    /// the cache when no table was dropped since, else from the `meta` database.
    pub fn table_at(&self, name: &str) -> Result<(Arc<TableDef>, u64)> {
        let (version, def) = self.with_read(|txn| {
            let err = |e| self.lmdb_error("read the catalog", e);
            let version = catalog::version_of(
                txn.get(self.meta, catalog::CATALOG_VERSION_KEY)
                    .map_err(err)?,
            );
            {
                let cache = self.catalog.read().unwrap_or_else(|e| e.into_inner());
                if cache.0 == version {
                    if let Some(def) = cache.1.get(name) {
                        return Ok((version, Some(Arc::clone(def))));
                    }
                }
            }
            let bytes = txn.get(self.meta, &catalog::table_key(name)).map_err(err)?;
            let def = bytes
                .map(|b| {
                    TableDef::decode(name, b).ok_or_else(|| {
                        self.corrupt(format!("the definition of table '{name}' is unreadable"))
                    })
                })
                .transpose()?;
            Ok((version, def.map(Arc::new)))
        })?;
        match def {
            Some(def) => {
                self.cache_table(version, Arc::clone(&def));
                Ok((def, version))
            }
            None => Err(Error::UnknownTable {
                table: name.to_string(),
                found: self.table_names()?,
            }),
        }
    }

    /// The definition of table `name` (see [`Env::table_at`]).
    pub fn table(&self, name: &str) -> Result<Arc<TableDef>> {
        Ok(self.table_at(name)?.0)
    }

    /// Like [`Env::table`], None for a table that does not exist.
    pub fn find_table(&self, name: &str) -> Result<Option<Arc<TableDef>>> {
        match self.table(name) {
            Ok(def) => Ok(Some(def)),
            Err(Error::UnknownTable { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Caches a definition valid under catalog `version` (dropping the cache when the
    /// version moved on).
    pub fn cache_table(&self, version: u64, def: Arc<TableDef>) {
        let mut cache = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        if cache.0 != version {
            if version < cache.0 {
                return; // an older reader's view: ignore
            }
            *cache = (version, HashMap::new());
        }
        cache.1.insert(def.name.clone(), def);
    }

    /// Removes table `name`, its rows, definition and watermark, in one write
    /// transaction; false if there was no such table. Costs a scan of the whole store
    /// (the rows of a table are spread among the other tables' rows), so it is for
    /// maintenance (re-materializing, deleting a feature group), not for serving paths.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        let dropped = self.with_write(0, |txn| {
            let Some(id) = self.stored_id(txn, name)? else {
                return Ok(false);
            };
            self.delete_rows(txn, id)?;
            txn.delete(self.meta, &catalog::table_key(name))?;
            txn.delete(self.meta, &catalog::mark_key(name))?;
            self.bump_catalog(txn)?;
            Ok(true)
        })?;
        Ok(dropped.unwrap_or(false))
    }

    /// Replaces table `name` by table `from` in one write transaction: `from`'s rows,
    /// definition and watermark become `name`'s, `name`'s old rows go, and `from` is
    /// gone. Readers see the old table or the new one, never neither (a rebuild writes
    /// `from` beside the live table, then swaps it in). Scans the store like
    /// [`Env::drop_table`].
    pub fn replace_table(&self, name: &str, from: &str) -> Result<()> {
        let done = self.with_write(0, |txn| {
            let Some(def) = txn.get(self.meta, &catalog::table_key(from))? else {
                return Err(Error::UnknownTable {
                    table: from.to_string(),
                    found: vec![],
                }
                .into());
            };
            // Re-encoded under its new name (a definition's checksum covers its name).
            let mut def = TableDef::decode(from, def).ok_or_else(|| {
                self.corrupt(format!("the definition of table '{from}' is unreadable"))
            })?;
            def.name = name.to_string();
            let def = def.encode();
            let mark = txn
                .get(self.meta, &catalog::mark_key(from))?
                .map(<[u8]>::to_vec);
            if let Some(old) = self.stored_id(txn, name)? {
                self.delete_rows(txn, old)?;
            }
            txn.put(self.meta, &catalog::table_key(name), &def)?;
            match mark {
                Some(m) => txn.put(self.meta, &catalog::mark_key(name), &m)?,
                None => {
                    txn.delete(self.meta, &catalog::mark_key(name))?;
                }
            }
            txn.delete(self.meta, &catalog::table_key(from))?;
            txn.delete(self.meta, &catalog::mark_key(from))?;
            self.bump_catalog(txn)?;
            Ok(())
        })?;
        done.ok_or_else(|| self.corrupt("replacing a table was interrupted".into()))
    }

    /// The watermark of table `name` (see [`catalog`]); None when the table has none.
    pub fn watermark(&self, name: &str) -> Result<Option<i64>> {
        self.with_read(|txn| {
            let v = txn
                .get(self.meta, &catalog::mark_key(name))
                .map_err(|e| self.lmdb_error("read a watermark", e))?;
            catalog::mark_of(v)
                .map_err(|_| self.corrupt(format!("the watermark of table '{name}' is damaged")))
        })
    }

    /// The id of table `name` as stored in `txn`'s `meta`, None when absent.
    fn stored_id(&self, txn: &RwTxn, name: &str) -> Result<Option<u32>, Abort> {
        let Some(bytes) = txn.get(self.meta, &catalog::table_key(name))? else {
            return Ok(None);
        };
        let def = TableDef::decode(name, bytes).ok_or_else(|| {
            self.corrupt(format!("the definition of table '{name}' is unreadable"))
        })?;
        Ok(Some(def.id))
    }

    /// Deletes every row of table `id` (a scan of the whole `rows` database).
    fn delete_rows(&self, txn: &mut RwTxn, id: u32) -> Result<(), Abort> {
        let mut c = txn.cursor(self.rows)?;
        let mut at = c
            .advance(true)?
            .map(|(k, _)| crate::encode::key::split_row_key(k).map(|s| s.1));
        while let Some(tid) = at {
            if tid == Some(id) {
                c.delete_current()?;
            }
            at = c
                .advance(false)?
                .map(|(k, _)| crate::encode::key::split_row_key(k).map(|s| s.1));
        }
        Ok(())
    }

    /// Bumps the catalog version: every process re-resolves its cached definitions.
    fn bump_catalog(&self, txn: &mut RwTxn) -> Result<(), Abort> {
        let version = catalog::version_of(txn.get(self.meta, catalog::CATALOG_VERSION_KEY)?);
        txn.put(
            self.meta,
            catalog::CATALOG_VERSION_KEY,
            &(version + 1).to_le_bytes(),
        )?;
        Ok(())
    }

    /// The current catalog version, read in `txn`.
    pub fn catalog_version(&self, txn: &RoTxn) -> Result<u64> {
        Ok(catalog::version_of(
            txn.get(self.meta, catalog::CATALOG_VERSION_KEY)
                .map_err(|e| self.lmdb_error("read the catalog", e))?,
        ))
    }

    /// Every table's name, sorted.
    pub fn table_names(&self) -> Result<Vec<String>> {
        self.with_read(|txn| {
            let mut names = Vec::new();
            let mut c = txn
                .cursor(self.meta)
                .map_err(|e| self.lmdb_error("read the catalog", e))?;
            let mut at = c.seek(catalog::TABLE_PREFIX);
            while let Ok(Some((k, _))) = at {
                match k.strip_prefix(catalog::TABLE_PREFIX) {
                    Some(name) => names.push(String::from_utf8_lossy(name).into_owned()),
                    None => break,
                }
                at = c.step();
            }
            at.map_err(|e| self.lmdb_error("read the catalog", e))?;
            Ok(names)
        })
    }
}
