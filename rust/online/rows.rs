//! One table's latest rows for a set of keys: as Arrow columns ([`read_table`]), or
//! handed over in place, on one snapshot, to a reader that interprets the bytes itself
//! ([`with_rows`]; aggregation states, the HTTP server's typed reads). Both go through
//! [`super::read::lookup`] (one descent per entity, sorted keys, the page walker) and
//! re-resolve the table when the catalog changed meanwhile.

use std::sync::{Arc, RwLock};

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use super::catalog::TableDef;
use rayon::prelude::*;

use super::env::{pool, Env};
use super::read::{lookup, threads_for, Keys, ReadPlan, PARALLEL_MIN};
use crate::encode::columns::decode_column;
use crate::encode::row::RowView;
use crate::error::{Error, Result};

/// The latest rows of one table as Arrow: the requested features (all when `None`),
/// in that order, plus `status`.
pub fn read_table(
    env: &Env,
    table: &str,
    keys: &Keys,
    features: Option<&[String]>,
    ttl_ns: Option<i64>,
    now_ns: i64,
) -> Result<RecordBatch> {
    retry_stale(
        || read_table_once(env, table, keys, features, ttl_ns, now_ns),
        || {},
    )
}

/// Runs `once` again, up to three more times, while it fails with `StaleCatalog` (a
/// table dropped or re-created under the read), calling `forget` before each retry to
/// drop what was resolved against the old catalog.
fn retry_stale<R>(mut once: impl FnMut() -> Result<R>, mut forget: impl FnMut()) -> Result<R> {
    let mut attempts = 0;
    loop {
        match once() {
            Err(Error::StaleCatalog) if attempts < 3 => {
                forget();
                attempts += 1;
            }
            other => return other,
        }
    }
}

fn read_table_once(
    env: &Env,
    table: &str,
    keys: &Keys,
    features: Option<&[String]>,
    ttl_ns: Option<i64>,
    now_ns: i64,
) -> Result<RecordBatch> {
    let plan = ReadPlan::new(env, &[table.to_string()], vec![ttl_ns])?;
    let def = Arc::clone(&plan.tables[0]);
    let cols: Vec<usize> = match features {
        None => (0..def.schema.fields().len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                def.schema.index_of(n).map_err(|_| Error::UnknownFeature {
                    table: format!("table '{}'", def.name),
                    feature: n.clone(),
                    found: def.feature_names(),
                })
            })
            .collect::<Result<_>>()?,
    };
    let n = keys.len();
    env.with_reads(threads_for(n, None), |txns| {
        let found = lookup(env, txns, &plan, keys, now_ns)?;
        let decode = |&c: &usize| {
            decode_column(&def.layout, c, def.schema.field(c).data_type(), &found.rows)
                .map_err(|e| env.corrupt(format!("table '{}': {e}", def.name)))
        };
        let mut arrays: Vec<ArrayRef> = if n >= PARALLEL_MIN {
            pool().install(|| cols.par_iter().map(decode).collect::<Result<_>>())?
        } else {
            cols.iter().map(decode).collect::<Result<_>>()?
        };
        arrays.push(Arc::new(StringArray::from_iter_values(
            found.status.iter().map(|s| s.name()),
        )));
        let mut fields: Vec<Field> = cols.iter().map(|&c| def.schema.field(c).clone()).collect();
        fields.push(Field::new(super::write::STATUS, DataType::Utf8, false));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    })
}

/// Calls `f` with the rows of table `table` for `keys` (in key order, None where
/// missing), read in place on one snapshot, each checked against its checksum: for
/// readers that interpret a column's bytes themselves (aggregation states) without
/// a copy. The data of a segmented row (format 3) is not checked here: `f` checks
/// the segments it reads ([`crate::encode::segments::Lazy`], from
/// [`RowView::segments`]). `f` may run more than once (when the table is re-created
/// meanwhile).
pub fn with_rows<R>(
    env: &Env,
    table: &str,
    keys: &Keys,
    now_ns: i64,
    f: impl FnMut(&[Option<RowView>], &TableDef) -> Result<R>,
) -> Result<R> {
    with_rows_prepared(env, &RowsPlan::new(table), keys, now_ns, f)
}

/// One table read by [`with_rows_prepared`], resolved on first use and again only when
/// the catalog changed since (the table was dropped or re-created): a reader that
/// serves many requests resolves its table once, not per request.
#[derive(Debug)]
pub struct RowsPlan {
    table: String,
    plan: RwLock<Option<Arc<ReadPlan>>>,
}

impl RowsPlan {
    pub fn new(table: &str) -> RowsPlan {
        RowsPlan {
            table: table.to_string(),
            plan: RwLock::new(None),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn resolved(&self, env: &Env) -> Result<Arc<ReadPlan>> {
        if let Some(plan) = &*self.plan.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(Arc::clone(plan));
        }
        let mut plan = ReadPlan::new(env, std::slice::from_ref(&self.table), vec![None])?;
        plan.lazy = true;
        let plan = Arc::new(plan);
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&plan));
        Ok(plan)
    }
}

/// [`with_rows`] through a [`RowsPlan`].
pub fn with_rows_prepared<R>(
    env: &Env,
    rows: &RowsPlan,
    keys: &Keys,
    now_ns: i64,
    mut f: impl FnMut(&[Option<RowView>], &TableDef) -> Result<R>,
) -> Result<R> {
    retry_stale(
        || {
            let plan = rows.resolved(env)?;
            env.with_reads(1, |txns| {
                let found = lookup(env, txns, &plan, keys, now_ns)?;
                f(&found.rows, &plan.tables[0])
            })
        },
        || *rows.plan.write().unwrap_or_else(|e| e.into_inner()) = None,
    )
}
