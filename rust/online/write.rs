//! Batch upsert: a whole Arrow table in one write transaction.
//!
//! Naive equivalent: for each input row `(key, e, c, values)` in any order, store it
//! if the key has no row yet or `(e, c) >= (stored e, stored c)`. The stored row per
//! key is therefore the one with the greatest (event time, created time), whatever
//! order rows and batches arrive in; on an exact tie the later write wins (within a
//! batch, the later row), which is also what the point-in-time join picks (the row
//! that came last in input order), so the online store equals the join at "now" over
//! the offline table the same writes were appended to. Replaying a batch changes
//! nothing (a row identical to the stored one is not even rewritten).
//!
//! Steps, all validation before the transaction so an error leaves the store as it
//! was:
//! 1. plan: check key, time and feature columns against the table's registered schema
//!    (or register one from the data on the first write), casting compatible types
//!    (int widths, int to float, string and timestamp variants) with overflow checks;
//! 2. encode keys and rows in parallel over blocks of rows ([`crate::encode::columns`]);
//! 3. sort row indices by (key, event, created, input position), in parallel, and keep
//!    the last of each key: one candidate per key, in B-tree order;
//! 4. one write transaction walks the candidates in key order with one cursor: seek,
//!    compare stamps, put. Sorted keys make LMDB's descents hit the pages the previous
//!    put touched, so a batch costs about one page write per leaf it changes.
//!
//! Cost: O(n log n) for the sort, ~150 bytes of memory per input row (keys + rows),
//! one fsync per call. A full map aborts, grows and replays step 4 only.

use std::sync::Arc;

use rayon::prelude::*;

use super::catalog::{self, TableDef};
use super::env::{pool, Abort, Env};
use crate::encode::columns::{encode_keys, encode_rows, Encoded};
use crate::encode::key::MAX_KEY_LEN;
use crate::encode::row::{self, Stamp};
use crate::error::{Error, Result};
use crate::join::keys::key_kind;
use crate::table::{blocks, Table};

// Step 1's checks and casts: names, keys, times, features, the first definition.
#[path = "write_check.rs"]
mod check;
use check::{check_columns, check_key_names, check_keys, check_name, convert, new_def, times};

/// Rows per encoding block: small enough that a block's rows (~100 bytes each) stay
/// in L2 while the encoder makes one pass per column over them.
const BLOCK: usize = 1 << 12;
/// The name of the status column `read` adds; no feature may take it.
pub const STATUS: &str = "status";

/// One batch to upsert.
pub struct WriteSpec<'a> {
    pub table: &'a str,
    pub data: &'a Table,
    /// The entity key columns, in key order.
    pub keys: &'a [String],
    pub event_time: &'a str,
    pub created_time: Option<&'a str>,
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Input rows.
    pub rows: usize,
    /// Rows stored (new keys, or newer than the stored row).
    pub written: usize,
    /// Rows that changed nothing: superseded within the batch, older than the stored
    /// row, or identical to it.
    pub unchanged: usize,
}

pub fn write(env: &Env, spec: &WriteSpec) -> Result<WriteStats> {
    commit(env, spec, Plan::new(env, spec)?, None)
}

/// Applies `plan` (made from `spec`) in one write transaction, setting the table's
/// watermark to `watermark` when given; plans again when the catalog moved on.
fn commit(
    env: &Env,
    spec: &WriteSpec,
    mut plan: Plan,
    watermark: Option<i64>,
) -> Result<WriteStats> {
    loop {
        let estimate = plan.estimate();
        if let Some(stats) = env.with_write(estimate, |txn| plan.apply(env, txn, watermark))? {
            env.cache_table(plan.catalog_version, Arc::clone(&plan.def));
            return Ok(stats);
        }
        // Another process registered or dropped a table meanwhile: plan again.
        plan = Plan::new(env, spec)?;
    }
}

/// Meta entries to set (`Some`) or delete (`None`) with a write, by name under
/// `pos/` ([`catalog::pos_key`]): a streaming job's source positions.
pub type Positions = [(String, Option<Vec<u8>>)];

/// Applies several prepared writes and `positions` in one write transaction, setting
/// each table's watermark to `watermark` when given: a stream's micro-batch (the
/// group's rows, its aggregations' states, the source positions) is all or nothing.
/// Each write is applied once; at most one of them may register a new table (commit
/// the others alone first).
pub fn commit_all(
    env: &Env,
    prepared: &mut [&mut Prepared],
    watermark: Option<i64>,
    positions: &Positions,
) -> Result<WriteStats> {
    if prepared.iter().any(|p| p.plan.is_none()) {
        return Err(Error::InvalidArgument(
            "a prepared write was committed already".into(),
        ));
    }
    let new_tables = prepared
        .iter()
        .filter(|p| p.plan.as_ref().is_some_and(|plan| plan.new_table))
        .count();
    if new_tables > 1 {
        return Err(Error::InvalidArgument(
            "several of these writes register a new table; commit all but one alone first".into(),
        ));
    }
    for (name, _) in positions {
        check_name(name)?;
    }
    loop {
        let plans: Vec<&Plan> = prepared
            .iter()
            .map(|p| p.plan.as_ref().expect("checked"))
            .collect();
        let estimate = plans.iter().map(|p| p.estimate()).sum::<usize>()
            + positions
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 64)
                .sum::<usize>();
        let done = env.with_write(estimate, |txn| {
            let mut total = WriteStats::default();
            for plan in &plans {
                let s = plan.apply(env, txn, watermark)?;
                total.rows += s.rows;
                total.written += s.written;
                total.unchanged += s.unchanged;
            }
            for (name, value) in positions {
                let key = catalog::pos_key(name);
                match value {
                    Some(v) => txn.put(env.meta, &key, &catalog::pos_value(&key, v))?,
                    None => {
                        txn.delete(env.meta, &key)?;
                    }
                }
            }
            Ok(total)
        })?;
        if let Some(stats) = done {
            for p in prepared.iter_mut() {
                let plan = p.plan.take().expect("checked");
                env.cache_table(plan.catalog_version, Arc::clone(&plan.def));
            }
            return Ok(stats);
        }
        // The catalog moved on meanwhile: plan every write again.
        for p in prepared.iter_mut() {
            let plan = Plan::new(env, &p.spec())?;
            p.plan = Some(plan);
        }
    }
}

/// The positions stored under `pos/<prefix>` (names without `pos/`), in key order.
pub fn positions(env: &Env, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let start = catalog::pos_key(prefix);
    env.with_read(|txn| {
        let mut out = Vec::new();
        let mut c = txn
            .cursor(env.meta)
            .map_err(|e| env.lmdb_error("read positions", e))?;
        let mut at = c
            .seek(&start)
            .map_err(|e| env.lmdb_error("read positions", e))?;
        while let Some((k, v)) = at {
            if !k.starts_with(&start) {
                break;
            }
            let value = catalog::pos_of(k, v).ok_or_else(|| {
                env.corrupt(format!(
                    "the stored position '{}' is damaged",
                    String::from_utf8_lossy(k)
                ))
            })?;
            let name = String::from_utf8_lossy(&k[catalog::POS_PREFIX.len()..]).into_owned();
            out.push((name, value));
            at = c.step().map_err(|e| env.lmdb_error("read positions", e))?;
        }
        Ok(out)
    })
}

/// A write validated and encoded but not yet applied: everything that can reject the
/// data has run, so a caller can make another durable write first (the offline
/// commit) and then apply this one, which can then fail only on I/O.
pub struct Prepared {
    table: String,
    data: Table,
    keys: Vec<String>,
    event_time: String,
    created_time: Option<String>,
    plan: Option<Plan>,
}

impl Prepared {
    pub fn new(
        env: &Env,
        table: String,
        data: Table,
        keys: Vec<String>,
        event_time: String,
        created_time: Option<String>,
    ) -> Result<Prepared> {
        let mut p = Prepared {
            table,
            data,
            keys,
            event_time,
            created_time,
            plan: None,
        };
        p.plan = Some(Plan::new(env, &p.spec())?);
        Ok(p)
    }

    fn spec(&self) -> WriteSpec<'_> {
        WriteSpec {
            table: &self.table,
            data: &self.data,
            keys: &self.keys,
            event_time: &self.event_time,
            created_time: self.created_time.as_deref(),
        }
    }

    /// Applies the write (once) and sets the table's watermark when given.
    pub fn commit(&mut self, env: &Env, watermark: Option<i64>) -> Result<WriteStats> {
        let plan = self.plan.take().ok_or_else(|| {
            Error::InvalidArgument("this prepared write was committed already".into())
        })?;
        commit(env, &self.spec(), plan, watermark)
    }
}

struct Plan {
    def: Arc<TableDef>,
    /// A new table takes id `def.id`, which `next_table_id` must still hold at commit.
    new_table: bool,
    /// The catalog version the plan was made under; a drop since means plan again.
    catalog_version: u64,
    n: usize,
    /// Per block of BLOCK rows: (keys, rows).
    encoded: Vec<(Encoded, Encoded)>,
    stamps: Vec<Stamp>,
    /// Row index of each key's winner, in key order.
    winners: Vec<u32>,
}

impl Plan {
    fn new(env: &Env, spec: &WriteSpec) -> Result<Plan> {
        let label = format!("data for table '{}'", spec.table);
        check_name(spec.table)?;
        if spec.keys.is_empty() {
            return Err(Error::InvalidArgument(
                "keys must name at least one entity key column".into(),
            ));
        }
        let data = spec.data;
        let relabeled;
        let data = if data.name != label {
            relabeled = Table::new(
                label.clone(),
                Arc::clone(&data.schema),
                data.batches.clone(),
            );
            &relabeled
        } else {
            data
        };
        let catalog_version = env.with_read(|txn| env.catalog_version(txn))?;
        let existing = env.find_table(spec.table)?;
        if let Some(def) = &existing {
            check_key_names(def, spec.keys)?;
        }
        // Keys.
        let mut key_cols = Vec::with_capacity(spec.keys.len());
        let mut kinds = Vec::with_capacity(spec.keys.len());
        for k in spec.keys {
            let col = data.column(k, "keys must name the entity key columns")?;
            let kind = key_kind(&col)?;
            let nulls = if kind.is_none() {
                col.len()
            } else {
                col.null_count()
            };
            if nulls > 0 {
                return Err(Error::NullValues {
                    table: label.clone(),
                    column: k.clone(),
                    role: "key columns".into(),
                    count: nulls,
                });
            }
            kinds.push(kind.expect("checked"));
            key_cols.push(col);
        }
        // Times.
        let event = data.column(
            spec.event_time,
            "event_time must name its event-time column",
        )?;
        let event = times(&event, "event_time")?;
        let created = match spec.created_time {
            Some(c) => Some(times(
                &data.column(c, "created_time must name its created-time column")?,
                "created_time",
            )?),
            None => None,
        };
        let n = data.num_rows();
        let stamps: Vec<Stamp> = (0..n)
            .map(|i| Stamp {
                event: event[i],
                created: created.as_ref().map_or(0, |c| c[i]),
            })
            .collect();
        // Features.
        let reserved: Vec<&str> = spec
            .keys
            .iter()
            .map(String::as_str)
            .chain([spec.event_time])
            .chain(spec.created_time)
            .collect();
        let feature_names: Vec<String> = data
            .column_names()
            .into_iter()
            .filter(|c| !reserved.contains(&c.as_str()))
            .collect();
        let (def, new_table) = match existing {
            Some(def) => {
                check_keys(&def, spec.keys, &kinds, &key_cols)?;
                check_columns(&def, &feature_names)?;
                (def, false)
            }
            None => (
                Arc::new(new_def(env, spec, &label, data, kinds, &feature_names)?),
                true,
            ),
        };
        let mut feature_cols = Vec::with_capacity(def.schema.fields().len());
        for field in def.schema.fields() {
            let col = data.column(field.name(), "")?;
            feature_cols.push(convert(&def, col, field.data_type())?);
        }
        // Encode, in parallel over blocks.
        let tid = def.id.to_be_bytes();
        let parts: Vec<(usize, usize)> = blocks(n, BLOCK).collect();
        let encode = |&(start, len): &(usize, usize)| {
            let (keys, _) = encode_keys(&key_cols, start, len, &tid);
            let rows = encode_rows(&def.layout, &feature_cols, &stamps, start, len, &keys);
            (keys, rows)
        };
        let encoded: Vec<(Encoded, Encoded)> = if parts.len() > 1 {
            pool().install(|| parts.par_iter().map(encode).collect())
        } else {
            parts.iter().map(encode).collect()
        };
        for (b, (keys, _)) in encoded.iter().enumerate() {
            for i in 0..keys.len() {
                if keys.get(i).len() > MAX_KEY_LEN {
                    return Err(Error::KeyTooLong {
                        table: label,
                        row: b * BLOCK + i,
                        len: keys.get(i).len() - 4,
                        max: MAX_KEY_LEN - 4,
                    });
                }
            }
        }
        // One candidate per key: the greatest (stamp, position). Sorting compares the
        // first 16 key bytes as one integer (exact for keys up to 16 bytes, which covers
        // every integer key), the full keys only when those tie.
        let key_of = |i: u32| encoded[i as usize / BLOCK].0.get(i as usize % BLOCK);
        let mut order: Vec<(u128, u32)> = (0..n as u32).map(|i| (prefix(key_of(i)), i)).collect();
        let by_key_stamp_position = |a: &(u128, u32), b: &(u128, u32)| {
            a.0.cmp(&b.0)
                .then_with(|| {
                    let (ka, kb) = (key_of(a.1), key_of(b.1));
                    if ka.len() <= 16 && kb.len() <= 16 {
                        ka.len().cmp(&kb.len())
                    } else {
                        ka.cmp(kb)
                    }
                })
                .then_with(|| stamps[a.1 as usize].cmp(&stamps[b.1 as usize]))
                .then_with(|| a.1.cmp(&b.1))
        };
        if n > BLOCK {
            pool().install(|| order.par_sort_unstable_by(by_key_stamp_position));
        } else {
            order.sort_unstable_by(by_key_stamp_position);
        }
        let order: Vec<u32> = order.into_iter().map(|(_, i)| i).collect();
        let mut winners = Vec::with_capacity(n);
        for (i, &r) in order.iter().enumerate() {
            let last_of_key = order
                .get(i + 1)
                .is_none_or(|&next| key_of(next) != key_of(r));
            if last_of_key {
                winners.push(r);
            }
        }
        Ok(Plan {
            def,
            new_table,
            catalog_version,
            n,
            encoded,
            stamps,
            winners,
        })
    }

    fn key(&self, i: u32) -> &[u8] {
        self.encoded[i as usize / BLOCK].0.get(i as usize % BLOCK)
    }

    fn row(&self, i: u32) -> &[u8] {
        self.encoded[i as usize / BLOCK].1.get(i as usize % BLOCK)
    }

    /// Bytes the write may add to the file (with B-tree overhead).
    fn estimate(&self) -> usize {
        let bytes: usize = self
            .encoded
            .iter()
            .map(|(k, r)| k.bytes.len() + r.bytes.len() + 16 * k.len())
            .sum();
        3 * bytes + (1 << 20)
    }

    fn apply(
        &self,
        env: &Env,
        txn: &mut super::lmdb::RwTxn,
        watermark: Option<i64>,
    ) -> Result<WriteStats, Abort> {
        let version = catalog::version_of(txn.get(env.meta, catalog::CATALOG_VERSION_KEY)?);
        if version != self.catalog_version {
            return Err(Abort::Replan); // a table was dropped since the plan was made
        }
        if self.new_table {
            let key = catalog::table_key(&self.def.name);
            let next = txn
                .get(env.meta, catalog::NEXT_ID_KEY)?
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes);
            if txn.get(env.meta, &key)?.is_some() || next != Some(self.def.id) {
                return Err(Abort::Replan);
            }
            txn.put(env.meta, &key, &self.def.encode())?;
            txn.put(
                env.meta,
                catalog::NEXT_ID_KEY,
                &(self.def.id + 1).to_le_bytes(),
            )?;
        }
        if let Some(mark) = watermark {
            txn.put(
                env.meta,
                &catalog::mark_key(&self.def.name),
                &catalog::mark_value(mark),
            )?;
        }
        let mut written = 0;
        let mut cursor = txn.cursor(env.rows)?;
        for &i in &self.winners {
            let (key, row) = (self.key(i), self.row(i));
            let stamp = self.stamps[i as usize];
            let (found, newer) = match cursor.seek(key)? {
                Some((k, old)) if k == key => {
                    let old_stamp = row::stamp(&[key], old).map_err(|e| {
                        env.corrupt(format!(
                            "a stored row of table '{}' is unreadable ({e})",
                            self.def.name
                        ))
                    })?;
                    (true, stamp >= old_stamp && old != row)
                }
                _ => (false, true),
            };
            if newer {
                cursor.put(key, row, found)?;
                written += 1;
            }
        }
        Ok(WriteStats {
            rows: self.n,
            written,
            unchanged: self.n - written,
        })
    }
}

/// The first 16 bytes of a key as a big-endian integer, zero-padded: comparing
/// prefixes compares keys, except between keys that agree on their first 16 bytes.
fn prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}
