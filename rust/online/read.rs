//! Batch lookups: the latest row of each (entity, table), as Arrow columns or as a
//! float32 matrix for a model (that part in [`super::matrix`]).
//!
//! Naive equivalent: for each requested entity and table, `get(entity ++ table_id)`;
//! a row whose event time is older than `now - ttl` is *expired*, no row is *missing*.
//!
//! What it does instead, because a random LMDB descent costs ~2 µs here (a chain of
//! about seven dependent cache and TLB misses) and everything else is cheap next to it:
//! - **one descent per entity, not per table**: the tables that share the entity's key
//!   columns are read with one `MDB_SET_RANGE` to `entity ++ smallest table id` and a
//!   short `MDB_NEXT` walk over the adjacent keys (`entity ++ other ids`, usually on the
//!   same leaf page), so 3 tables cost about one descent instead of three;
//! - **keys in sorted order**: the request's entity encodings are sorted first, so the
//!   cursor moves forward through the tree, and LMDB's cursor checks the current leaf
//!   before descending again (dense requests share pages and upper levels stay in
//!   cache); duplicate keys in a request are looked up once;
//! - **big batches split across cores**: the sorted keys are cut into contiguous runs,
//!   one per thread, each with its own read transaction on the same snapshot;
//! - **one copy**: rows stay in the memory map while the transaction lives; values are
//!   decoded straight from the map into the output (Arrow buffers or the matrix);
//! - **descents overlapped**: by default the sorted keys do not go through LMDB's
//!   cursor one after another but through [`super::walk`], which reads the B-tree's
//!   pages from the map itself and advances up to 128 keys' descents together with
//!   prefetches, so their cache and TLB misses overlap; the cursor walk below
//!   (`MDB_SET_RANGE` + `MDB_NEXT`) is its fallback and reference.
//!
//! Every row is validated ([`RowView::parse`], its checksum included) before use: a
//! damaged value is a [`Error::CorruptStore`], never a wrong number or a crash (the
//! B-tree pages themselves are checked when the environment is opened, see
//! [`super::verify`]). All lookups of one call
//! read one snapshot, so a read never sees half of a write.

use std::sync::Arc;

use super::catalog::TableDef;
use super::env::{pool, Env};
use super::lmdb::RoTxn;
pub use super::rows::{read_table, with_rows, with_rows_prepared, RowsPlan};
use super::walk::{Refusal, Snapshot};
use crate::encode::columns::{encode_keys, Encoded};
use crate::encode::key::{self, MAX_ENTITY_LEN};

// The cursor path (LMDB's `MDB_SET_RANGE` + `MDB_NEXT`), the walker's fallback.
#[path = "read_cursor.rs"]
mod cursor;
use crate::encode::row::{self, RowView};
use crate::error::{py_list, Error, Result};
use crate::join::keys::{key_kind, KeyKind};
use crate::table::Table;
use cursor::cursor_run;

// The matrix reads lived here; their old paths still work.
pub use super::matrix::{read_matrix, read_matrix_naive, FeatureRef, MatrixPlan};

/// Requests at least this large are split across threads.
pub(super) const PARALLEL_MIN: usize = 4096;
/// Rows per thread at least, when split.
const PER_THREAD_MIN: usize = 1024;

/// One key cell given as a value (the Python fast path) rather than an Arrow column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValue {
    Null,
    Int(i128),
    Str(String),
}

/// The entities to look up.
pub enum Keys<'a> {
    /// Arrow columns, matched to each table's key columns by name.
    Columns(&'a Table),
    /// `values.len() / arity` entities, each `arity` values in key-column order
    /// (positional: every table read must have `arity` key columns).
    Values {
        arity: usize,
        values: &'a [KeyValue],
    },
}

impl Keys<'_> {
    pub fn len(&self) -> usize {
        match self {
            Keys::Columns(t) => t.num_rows(),
            Keys::Values { arity, values } => values.len() / (*arity).max(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per (entity, table): what the lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Found,
    Missing,
    Expired,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Found => "found",
            Status::Missing => "missing",
            Status::Expired => "expired",
        }
    }
}

/// Tables that share key columns: read together, one descent per entity.
#[derive(Debug)]
pub(super) struct Group {
    /// The first member's name, for messages.
    table: String,
    key_names: Vec<String>,
    kinds: Vec<KeyKind>,
    /// Indices into `ReadPlan::tables`, sorted by table id (the order rows sit in).
    members: Vec<usize>,
    /// The members' table ids, ascending.
    pub(super) ids: Vec<u32>,
    /// The same, big-endian: the last part of each member's row keys.
    id_bytes: Vec<[u8; 4]>,
}

/// Tables resolved once (a prepared read reuses this across calls).
#[derive(Debug)]
pub struct ReadPlan {
    pub tables: Vec<Arc<TableDef>>,
    /// The catalog version the tables were resolved under (see [`catalog`]).
    ///
    /// [`catalog`]: super::catalog
    pub catalog_version: u64,
    /// Per table: rows older than `now - ttl` are expired.
    pub ttl_ns: Vec<Option<i64>>,
    pub(super) groups: Vec<Group>,
    /// Rows are checked with [`row::check_lazy`]: the data of a segmented row is left
    /// to its reader ([`with_rows`]).
    pub(super) lazy: bool,
    /// Lookups read the pages themselves ([`super::walk`]) rather than through a
    /// cursor: on unless `PITSTOP_ONLINE_WALK=0` when the plan was made.
    walk: bool,
}

impl ReadPlan {
    pub fn new(env: &Env, tables: &[String], ttl_ns: Vec<Option<i64>>) -> Result<ReadPlan> {
        if tables.is_empty() {
            return Err(Error::InvalidArgument(
                "name at least one table to read".into(),
            ));
        }
        if ttl_ns.len() != tables.len() {
            return Err(Error::InvalidArgument(format!(
                "ttl has {} entries for {} tables; give one, or one per table",
                ttl_ns.len(),
                tables.len()
            )));
        }
        let mut defs = Vec::with_capacity(tables.len());
        let mut catalog_version = None;
        for (i, name) in tables.iter().enumerate() {
            if tables[..i].contains(name) {
                return Err(Error::InvalidArgument(format!(
                    "table '{name}' is named twice"
                )));
            }
            let (def, version) = env.table_at(name)?;
            if *catalog_version.get_or_insert(version) != version {
                return Err(Error::StaleCatalog);
            }
            defs.push(def);
        }
        let mut groups: Vec<Group> = Vec::new();
        for (i, def) in defs.iter().enumerate() {
            let names = def.key_names();
            let kinds: Vec<KeyKind> = def.keys.iter().map(|(_, k)| *k).collect();
            match groups
                .iter_mut()
                .find(|g| g.key_names == names && g.kinds == kinds)
            {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    table: def.name.clone(),
                    key_names: names,
                    kinds,
                    members: vec![i],
                    ids: Vec::new(),
                    id_bytes: Vec::new(),
                }),
            }
        }
        for g in &mut groups {
            g.members.sort_by_key(|&i| defs[i].id);
            g.ids = g.members.iter().map(|&i| defs[i].id).collect();
            g.id_bytes = g.ids.iter().map(|id| id.to_be_bytes()).collect();
        }
        Ok(ReadPlan {
            tables: defs,
            catalog_version: catalog_version.unwrap_or(0),
            ttl_ns,
            groups,
            lazy: false,
            walk: std::env::var_os("PITSTOP_ONLINE_WALK").is_none_or(|v| v != "0"),
        })
    }

    /// Chooses the page walker (true) or the cursor path (false) for this plan's
    /// lookups; both give the same answers (the walker falls back to the cursor when
    /// it meets anything it does not expect).
    pub fn set_walk(&mut self, on: bool) {
        self.walk = on;
    }
}

/// What a lookup found, per (entity, table) in row-major order (`tables` per entity,
/// in the plan's table order). Rows borrow from the read transactions.
pub struct Found<'a> {
    pub n_tables: usize,
    pub rows: Vec<Option<RowView<'a>>>,
    pub status: Vec<Status>,
}

/// The entity encodings of one group's key columns; `valid[i]` false for a null key
/// (or one too long to have been stored): such entities are missing.
pub(super) fn encode_group(group: &Group, keys: &Keys) -> Result<(Encoded, Vec<bool>)> {
    let (enc, mut valid) = match keys {
        Keys::Columns(t) => {
            let mut cols = Vec::with_capacity(group.key_names.len());
            for (name, want) in group.key_names.iter().zip(&group.kinds) {
                let col = t.column(
                    name,
                    "keys must contain the key columns of every table read",
                )?;
                if let Some(kind) = key_kind(&col)? {
                    if kind != *want {
                        return Err(key_type_error(
                            group,
                            name,
                            *want,
                            &format!("a {} column", col.data_type),
                        ));
                    }
                }
                cols.push(col);
            }
            encode_keys(&cols, 0, t.num_rows(), &[])
        }
        Keys::Values { values: [], .. } => (
            Encoded {
                bytes: Vec::new(),
                ends: vec![0],
            },
            Vec::new(),
        ),
        Keys::Values { arity, values } => {
            if *arity != group.key_names.len() {
                return Err(Error::InvalidArgument(format!(
                    "keys give {arity} value(s) per entity but the entity key is {}; pass a \
                     dict of key columns (or one tuple per entity in this order)",
                    py_list(&group.key_names)
                )));
            }
            let n = values.len() / arity.max(&1);
            let mut enc = Encoded {
                bytes: Vec::with_capacity(n * 9 * arity),
                ends: Vec::with_capacity(n + 1),
            };
            let mut valid = vec![true; n];
            enc.ends.push(0);
            for (r, entity) in values.chunks_exact(*arity).enumerate() {
                let start = enc.bytes.len();
                for ((v, want), name) in entity.iter().zip(&group.kinds).zip(&group.key_names) {
                    match (v, want) {
                        (KeyValue::Null, _) => valid[r] = false,
                        (KeyValue::Int(i), KeyKind::Int) => {
                            if *i < i64::MIN as i128 || *i > u64::MAX as i128 {
                                valid[r] = false; // cannot be stored: missing
                            } else {
                                key::push_int(&mut enc.bytes, *i)
                            }
                        }
                        (KeyValue::Str(s), KeyKind::Str) => {
                            key::push_str(&mut enc.bytes, s.as_bytes())
                        }
                        (KeyValue::Int(i), KeyKind::Str) => {
                            return Err(key_type_error(group, name, *want, &format!("the int {i}")))
                        }
                        (KeyValue::Str(s), KeyKind::Int) => {
                            return Err(key_type_error(
                                group,
                                name,
                                *want,
                                &format!("the str '{s}'"),
                            ))
                        }
                    }
                }
                if !valid[r] {
                    enc.bytes.truncate(start);
                }
                enc.ends.push(enc.bytes.len());
            }
            (enc, valid)
        }
    };
    for (i, v) in valid.iter_mut().enumerate() {
        if enc.get(i).len() > MAX_ENTITY_LEN {
            *v = false;
        }
    }
    Ok((enc, valid))
}

fn key_type_error(group: &Group, column: &str, want: KeyKind, got: &str) -> Error {
    Error::KeyType {
        table: group.table.clone(),
        column: column.to_string(),
        expected: match want {
            KeyKind::Int => "integers".into(),
            KeyKind::Str => "strings".into(),
        },
        got: got.to_string(),
    }
}

/// Raw rows of a run of entities, `ids.len()` per entity.
type Rows<'a> = Vec<Option<&'a [u8]>>;

/// Looks up the sorted run `order` (row indices) of one group: through the page
/// walker ([`super::walk`]) unless the plan says otherwise or the walker steps aside,
/// else with one cursor. Returns the raw rows, `group.ids.len()` per entry of
/// `order`, each checked against its checksum (here, on the lookup threads, while the
/// row is at hand).
fn lookup_run<'a>(
    env: &Env,
    txn: &'a RoTxn,
    enc: &Encoded,
    order: &[u32],
    group: &Group,
    plan: &ReadPlan,
) -> Result<Vec<Option<&'a [u8]>>> {
    let check = if plan.lazy {
        row::check_lazy
    } else {
        row::check
    };
    let ids = &group.ids;
    let g = ids.len();
    let mut out: Vec<Option<&'a [u8]>> = vec![None; order.len() * g];
    if order.is_empty() {
        return Ok(out);
    }
    let walked = plan.walk
        && match Snapshot::of(env, txn)
            .and_then(|s| s.lookup(enc, order, &group.id_bytes, &mut out))
        {
            Ok(()) => true,
            Err(Refusal::Fallback(_)) => {
                out.fill(None);
                false
            }
            Err(Refusal::Damaged(d)) => {
                return Err(env.corrupt(format!("data.mdb is damaged: {d}")))
            }
        };
    if !walked {
        cursor_run(env, txn, enc, order, ids, &mut out)?;
    }
    for (p, &r) in order.iter().enumerate() {
        let entity = enc.get(r as usize);
        if p > 0 && enc.get(order[p - 1] as usize) == entity {
            continue; // the same rows as the previous entry's, checked there
        }
        for (j, found) in out[p * g..(p + 1) * g].iter().enumerate() {
            if let Some(bytes) = found {
                check(&[entity, &group.id_bytes[j]], bytes).map_err(|e| {
                    env.corrupt(format!(
                        "a stored row of table '{}' is unreadable ({e})",
                        plan.tables[group.members[j]].name
                    ))
                })?;
            }
        }
    }
    Ok(out)
}

/// The rows whose key is `valid`, in the order of their encodings. Sorted by the
/// first 16 bytes as one integer (zero-padded: encodings are prefix-free, so only equal
/// encodings or longer ones can tie there, and the bytes decide those), a comparison of
/// two registers instead of a `memcmp` call.
pub(super) fn sorted(enc: &Encoded, valid: &[bool]) -> Vec<u32> {
    let prefix = |r: usize| {
        let e = enc.get(r);
        let mut b = [0u8; 16];
        let n = e.len().min(16);
        b[..n].copy_from_slice(&e[..n]);
        u128::from_be_bytes(b)
    };
    let mut keyed: Vec<(u128, u32)> = (0..valid.len())
        .filter(|&r| valid[r])
        .map(|r| (prefix(r), r as u32))
        .collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| enc.get(a.1 as usize).cmp(enc.get(b.1 as usize)))
    });
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// Looks every entity up in every table of the plan, on `txns` (one per thread, all
/// on the same snapshot), and classifies each (entity, table).
pub(super) fn lookup<'a>(
    env: &Env,
    txns: &'a mut [RoTxn],
    plan: &'a ReadPlan,
    keys: &Keys,
    now_ns: i64,
) -> Result<Found<'a>> {
    let n = keys.len();
    let t = plan.tables.len();
    // The plan's table ids are those of this snapshot unless a table was dropped.
    if env.catalog_version(&txns[0])? != plan.catalog_version {
        return Err(Error::StaleCatalog);
    }
    // Per group: the entity encodings and the valid rows in key order.
    let mut prepared = Vec::with_capacity(plan.groups.len());
    for group in &plan.groups {
        let (enc, valid) = encode_group(group, keys)?;
        prepared.push((sorted(&enc, &valid), enc));
    }
    // Thread i reads the i-th of k contiguous runs of every group's sorted keys.
    let k = txns.len();
    let runs = |i: usize, txn: &'a RoTxn| -> Result<Vec<Rows<'a>>> {
        plan.groups
            .iter()
            .zip(&prepared)
            .map(|(group, (order, enc))| {
                let per = order.len().div_ceil(k);
                let lo = (i * per).min(order.len());
                let hi = ((i + 1) * per).min(order.len());
                lookup_run(env, txn, enc, &order[lo..hi], group, plan)
            })
            .collect()
    };
    let per_thread: Vec<Result<Vec<Rows<'a>>>> = if k == 1 {
        let txns: &'a [RoTxn] = txns;
        vec![runs(0, &txns[0])]
    } else {
        // The calling thread reads run 0 while pool threads read the others, so a
        // split costs one wake-up, not a round trip through the pool.
        let mut slots: Vec<Option<Result<Vec<Rows<'a>>>>> = (0..k).map(|_| None).collect();
        let (first_txn, other_txns) = txns.split_first_mut().expect("k > 1");
        let (first_slot, other_slots) = slots.split_first_mut().expect("k > 1");
        let runs = &runs;
        pool().in_place_scope(|scope| {
            for (i, (txn, slot)) in other_txns
                .iter_mut()
                .zip(other_slots.iter_mut())
                .enumerate()
            {
                scope.spawn(move |_| {
                    let txn: &'a RoTxn = txn;
                    *slot = Some(runs(i + 1, txn));
                });
            }
            let txn: &'a RoTxn = first_txn;
            *first_slot = Some(runs(0, txn));
        });
        slots
            .into_iter()
            .map(|r| r.expect("every run ran"))
            .collect()
    };
    let mut raw: Vec<Option<&'a [u8]>> = vec![None; n * t];
    let mut done = vec![0usize; plan.groups.len()];
    for res in per_thread {
        for (gi, rows) in res?.into_iter().enumerate() {
            let group = &plan.groups[gi];
            let order = &prepared[gi].0;
            for chunk in rows.chunks_exact(group.ids.len()) {
                let r = order[done[gi]] as usize;
                for (j, row) in chunk.iter().enumerate() {
                    raw[r * t + group.members[j]] = *row;
                }
                done[gi] += 1;
            }
        }
    }
    let mut rows = Vec::with_capacity(n * t);
    let mut status = Vec::with_capacity(n * t);
    for (i, bytes) in raw.into_iter().enumerate() {
        let j = i % t;
        let def = &plan.tables[j];
        match bytes {
            None => {
                rows.push(None);
                status.push(Status::Missing);
            }
            Some(b) => {
                // The row's key is the entity's encoding ++ the table id: its checksum
                // covers both, so a row under the wrong key is caught too.
                // Its checksum was checked by `lookup_run`.
                let view = RowView::parse_checked(&def.layout, b).map_err(|e| {
                    env.corrupt(format!(
                        "a stored row of table '{}' is unreadable ({e})",
                        def.name
                    ))
                })?;
                let expired = plan.ttl_ns[j]
                    .is_some_and(|ttl| view.stamp().event < now_ns.saturating_sub(ttl));
                if expired {
                    rows.push(None);
                    status.push(Status::Expired);
                } else {
                    rows.push(Some(view));
                    status.push(Status::Found);
                }
            }
        }
    }
    Ok(Found {
        n_tables: t,
        rows,
        status,
    })
}

/// How many transactions (threads) a request of `n` entities uses: `threads` when
/// asked (at most the pool's size and one per entity), else one below
/// [`PARALLEL_MIN`] entities and up to one per core above.
pub(super) fn threads_for(n: usize, threads: Option<usize>) -> usize {
    if let Some(t) = threads {
        return t
            .clamp(1, pool().current_num_threads().max(1))
            .min(n.max(1));
    }
    if n < PARALLEL_MIN {
        1
    } else {
        pool().current_num_threads().min(n / PER_THREAD_MIN).max(1)
    }
}
