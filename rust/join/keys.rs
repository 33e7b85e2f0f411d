//! Entity keys as dense integer ids.
//!
//! The spine's key columns are factorized into ids `0..n_keys` (one id per distinct
//! key, in order of first appearance); feature rows are then looked up in the same
//! dictionary, and a feature row whose key no spine row has gets [`NO_KEY`] and is
//! never looked at again. A composite key is factorized column by column: the id of
//! `(k1, k2)` is the id of the pair `(id(k1), code(k2))`, so `(1, 23)` and `(12, 3)`
//! stay different keys (no string concatenation, no hash collisions: every map is
//! exact). A null in any key column gives [`NO_KEY`]: a null key matches nothing.
//!
//! Integers of any width and signedness compare by value (an `Int32` spine key meets
//! an `Int64` feature key); strings compare by bytes whether `Utf8`, `LargeUtf8` or
//! `Utf8View`, borrowed from the Arrow buffers without copying. Integers never meet
//! strings: that is a [`Error::KeyTypeMismatch`].
//!
//! Cost: one hash-map insert per spine row and key column (serial), one lookup per
//! feature row and key column (parallel over blocks of rows). The usual key, one
//! null-free integer column in a compact range, skips the hashing and the per-cell
//! dispatch: a tight loop over the values into a direct-address table
//! ([`dense_ints`]).

use arrow_array::Array;
use arrow_schema::DataType;
use hashbrown::HashMap;
use rayon::prelude::*;

use crate::encode::columns::{for_each_key_cell, Cell as KeyCell};
use crate::error::{Error, Result};
use crate::table::{blocks, Column};

/// The id of a key that matches nothing (a null, or a feature key no spine row has).
pub const NO_KEY: u32 = u32::MAX;

const BLOCK: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    Int,
    Str,
}

/// The kind of a key column; None for an all-null column of Arrow's Null type (what an
/// empty pandas or Python column becomes), which meets either kind and matches nothing.
pub fn key_kind(col: &Column) -> Result<Option<KeyKind>> {
    match &col.data_type {
        DataType::Null => Ok(None),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Ok(Some(KeyKind::Int)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(Some(KeyKind::Str)),
        dt => Err(Error::UnsupportedKeyType {
            table: col.table.clone(),
            column: col.name().to_string(),
            dtype: dt.clone(),
        }),
    }
}

/// One key cell. Integers that fit in `i64` are `Small` (as their two's-complement
/// bits); larger `u64` values are `Big`, so no two distinct integers share a code.
#[derive(Clone, Copy)]
enum Cell<'a> {
    Null,
    Small(u64),
    Big(u64),
    Str(&'a [u8]),
}

/// Calls `f(i, cell)` for each row `i` of `arr` (a slice of a key column): the online
/// store's key-cell reader, with integers split into i64-sized and larger ones.
fn for_each_cell<'a>(arr: &'a dyn Array, mut f: impl FnMut(usize, Cell<'a>)) {
    for_each_key_cell(arr, |i, cell| {
        f(
            i,
            match cell {
                KeyCell::Null => Cell::Null,
                KeyCell::Int(v) => match i64::try_from(v) {
                    Ok(s) => Cell::Small(s as u64),
                    Err(_) => Cell::Big(v as u64),
                },
                KeyCell::Str(s) => Cell::Str(s),
            },
        )
    })
}

/// Exact map from the cells of one key column to codes `0..len`.
#[derive(Default)]
struct CellCodes<'a> {
    /// Integer keys in a range not much wider than the spine: a direct-address table
    /// (`codes[v - min]`) instead of hashing, several times faster per row.
    dense: Option<Dense>,
    small: HashMap<u64, u32>,
    big: HashMap<u64, u32>,
    strs: HashMap<&'a [u8], u32>,
    len: u32,
}

struct Dense {
    min: i64,
    /// `codes[v - min]` is the code of integer `v`, NO_KEY when the spine lacks it.
    codes: Vec<u32>,
}

impl Dense {
    /// A table for integer values in `[min, max]` seen in `rows` rows, when that range
    /// is small enough to be worth it (at most 4 slots per row, 512 MiB at most).
    fn fitting(min: i64, max: i64, rows: usize) -> Option<Dense> {
        let span = (max as i128 - min as i128 + 1) as u128;
        (min <= max && span <= (4 * rows as u128).max(1 << 16) && span <= 1 << 27).then(|| Dense {
            min,
            codes: vec![NO_KEY; span as usize],
        })
    }

    /// The slot of `v` (two's-complement bits of an i64), if in range: the wrapping
    /// difference is below `len` exactly when `min <= v < min + len`.
    fn slot(&self, v: u64) -> Option<usize> {
        let d = (v as i64).wrapping_sub(self.min) as u64;
        (d < self.codes.len() as u64).then_some(d as usize)
    }
}

/// Calls `f(i, v)` for each value of `arr` when it is a null-free integer chunk whose
/// values all fit in an i64, as an i64, and returns true; false (nothing called) for
/// anything else, which takes the per-cell path.
fn dense_ints(arr: &dyn Array, mut f: impl FnMut(usize, i64)) -> bool {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    macro_rules! each {
        ($t:ty) => {
            arr.as_primitive::<$t>()
                .values()
                .iter()
                .enumerate()
                .for_each(|(i, &v)| f(i, v as i64))
        };
    }
    if arr.null_count() > 0 {
        return false;
    }
    match arr.data_type() {
        DataType::Int64 => each!(Int64Type),
        DataType::Int32 => each!(Int32Type),
        DataType::Int16 => each!(Int16Type),
        DataType::Int8 => each!(Int8Type),
        DataType::UInt32 => each!(UInt32Type),
        DataType::UInt16 => each!(UInt16Type),
        DataType::UInt8 => each!(UInt8Type),
        _ => return false, // UInt64 may hold values past i64 (`Cell::Big`)
    }
    true
}

impl<'a> CellCodes<'a> {
    fn insert(&mut self, cell: Cell<'a>) -> u32 {
        let next = self.len;
        let code = match cell {
            Cell::Null => return NO_KEY,
            Cell::Small(v) => match &mut self.dense {
                Some(d) => {
                    let i = d.slot(v).expect("the range was taken from the spine");
                    let slot = &mut d.codes[i];
                    if *slot == NO_KEY {
                        *slot = next;
                    }
                    *slot
                }
                None => *self.small.entry(v).or_insert(next),
            },
            Cell::Big(v) => *self.big.entry(v).or_insert(next),
            Cell::Str(s) => *self.strs.entry(s).or_insert(next),
        };
        if code == next {
            self.len += 1;
        }
        code
    }

    fn get(&self, cell: Cell<'_>) -> u32 {
        let found = match cell {
            Cell::Null => None,
            Cell::Small(v) => match &self.dense {
                Some(d) => return d.slot(v).map_or(NO_KEY, |i| d.codes[i]),
                None => self.small.get(&v),
            },
            Cell::Big(v) => self.big.get(&v),
            Cell::Str(s) => self.strs.get(s),
        };
        found.copied().unwrap_or(NO_KEY)
    }
}

/// The range of the i64-sized integers of a key column, if it has any.
fn int_range(col: &Column) -> Option<(i64, i64)> {
    let mut range: Option<(i64, i64)> = None;
    for chunk in &col.chunks {
        for_each_cell(chunk.as_ref(), |_, cell| {
            if let Cell::Small(v) = cell {
                let v = v as i64;
                range = Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
            }
        });
    }
    range
}

/// The spine's key dictionary: built once per set of spine key columns and shared by
/// every feature table joined on those columns.
pub struct KeyDict<'a> {
    columns: Vec<CellCodes<'a>>,
    /// `pairs[j - 1]` maps (id of the first j columns, code of column j) to the id of
    /// the first j + 1 columns.
    pairs: Vec<HashMap<u64, u32>>,
    /// Spine row -> key id, or NO_KEY.
    pub ids: Vec<u32>,
    pub n_keys: usize,
}

impl<'a> KeyDict<'a> {
    /// Factorizes the spine's key columns (in order).
    pub fn build(cols: &'a [Column]) -> Result<Self> {
        assert!(!cols.is_empty(), "at least one key column");
        let n = cols[0].len();
        let mut columns = Vec::new();
        let mut pairs = Vec::new();
        let mut ids = vec![0u32; n];
        let mut n_keys = 0usize;
        for (j, col) in cols.iter().enumerate() {
            let mut codes = CellCodes::default();
            if key_kind(col)? == Some(KeyKind::Int) {
                codes.dense = int_range(col).and_then(|(lo, hi)| Dense::fitting(lo, hi, n));
            }
            let mut pair_map: HashMap<u64, u32> = HashMap::new();
            let mut start = 0;
            for chunk in &col.chunks {
                if let (0, Some(d)) = (j, &mut codes.dense) {
                    // The first column's codes in order of first appearance, as below.
                    let (dst, len) = (&mut ids[start..start + chunk.len()], &mut codes.len);
                    if dense_ints(chunk.as_ref(), |i, v| {
                        let k = d
                            .slot(v as u64)
                            .expect("the range was taken from the spine");
                        let slot = &mut d.codes[k];
                        if *slot == NO_KEY {
                            *slot = *len;
                            *len += 1;
                        }
                        dst[i] = *slot;
                    }) {
                        start += chunk.len();
                        continue;
                    }
                }
                for_each_cell(chunk.as_ref(), |i, cell| {
                    let row = start + i;
                    let code = codes.insert(cell);
                    ids[row] = if j == 0 {
                        code
                    } else if code == NO_KEY || ids[row] == NO_KEY {
                        NO_KEY
                    } else {
                        let next = pair_map.len() as u32;
                        *pair_map.entry(pair(ids[row], code)).or_insert(next)
                    };
                });
                start += chunk.len();
            }
            n_keys = if j == 0 {
                codes.len as usize
            } else {
                pair_map.len()
            };
            columns.push(codes);
            if j > 0 {
                pairs.push(pair_map);
            }
        }
        Ok(KeyDict {
            columns,
            pairs,
            ids,
            n_keys,
        })
    }

    /// Checks that a feature table's key columns `cols` can meet the spine's key
    /// columns `spine` position by position: both integers or both strings.
    pub fn check_types(spine: &[Column], cols: &[Column]) -> Result<()> {
        for (s, col) in spine.iter().zip(cols) {
            let (a, b) = (key_kind(s)?, key_kind(col)?);
            if a.is_some() && b.is_some() && a != b {
                return Err(Error::KeyTypeMismatch {
                    spine_column: s.name().to_string(),
                    spine_type: s.data_type.clone(),
                    table: col.table.clone(),
                    column: col.name().to_string(),
                    dtype: col.data_type.clone(),
                });
            }
        }
        Ok(())
    }

    /// Key ids of a feature table's rows (NO_KEY for keys no spine row has), computed
    /// in parallel over blocks of rows.
    /// The caller has checked the types with [`KeyDict::check_types`].
    pub fn lookup(&self, cols: &[Column]) -> Vec<u32> {
        assert_eq!(
            cols.len(),
            self.columns.len(),
            "one feature key per spine key"
        );
        let n = cols[0].len();
        let mut out = crate::huge::filled(n, 0u32);
        let parts: Vec<(usize, &mut [u32])> = blocks(n, BLOCK)
            .map(|(s, _)| s)
            .zip(out.chunks_mut(BLOCK))
            .collect();
        parts.into_par_iter().for_each(|(start, dst)| {
            for (j, col) in cols.iter().enumerate() {
                for (piece_start, chunk) in col.pieces(start, dst.len()) {
                    let base = piece_start - start;
                    if let (0, Some(d)) = (j, &self.columns[0].dense) {
                        let out = &mut dst[base..base + chunk.len()];
                        if dense_ints(chunk.as_ref(), |i, v| {
                            out[i] = d.slot(v as u64).map_or(NO_KEY, |k| d.codes[k]);
                        }) {
                            continue;
                        }
                    }
                    for_each_cell(chunk.as_ref(), |i, cell| {
                        let code = self.columns[j].get(cell);
                        let slot = &mut dst[base + i];
                        *slot = if j == 0 {
                            code
                        } else if code == NO_KEY || *slot == NO_KEY {
                            NO_KEY
                        } else {
                            self.pairs[j - 1]
                                .get(&pair(*slot, code))
                                .copied()
                                .unwrap_or(NO_KEY)
                        };
                    });
                }
            }
        });
        out
    }
}

fn pair(id: u32, code: u32) -> u64 {
    ((id as u64) << 32) | code as u64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
    use arrow_schema::{Field, Schema};

    use super::*;
    use crate::table::Table;

    fn column(name: &str, array: ArrayRef) -> Column {
        let schema = Arc::new(Schema::new(vec![Field::new(
            name,
            array.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![array]).unwrap();
        Table::new("t", schema, vec![batch])
            .column(name, "key")
            .unwrap()
    }

    fn ids(spine: &[Column], feats: &[Column]) -> (Vec<u32>, Vec<u32>) {
        let dict = KeyDict::build(spine).unwrap();
        (dict.ids.clone(), dict.lookup(feats))
    }

    #[test]
    fn dense_and_hashed_integers_agree() {
        for scale in [1i64, 1 << 40] {
            let s = column(
                "k",
                Arc::new(Int64Array::from(vec![
                    Some(3 * scale),
                    None,
                    Some(-scale),
                    Some(3 * scale),
                ])),
            );
            let f = column(
                "k",
                Arc::new(Int64Array::from(vec![
                    -scale,
                    7 * scale,
                    3 * scale,
                    i64::MIN,
                ])),
            );
            let (s_ids, f_ids) = ids(&[s], &[f]);
            assert_eq!(s_ids, vec![0, NO_KEY, 1, 0], "scale {scale}");
            assert_eq!(f_ids, vec![1, NO_KEY, 0, NO_KEY], "scale {scale}");
        }
    }

    #[test]
    fn dense_range_edges() {
        let s = column(
            "k",
            Arc::new(Int64Array::from(vec![i64::MAX - 1, i64::MAX])),
        );
        let f = column(
            "k",
            Arc::new(Int64Array::from(vec![i64::MIN, i64::MAX, i64::MAX - 2])),
        );
        assert_eq!(ids(&[s], &[f]).1, vec![NO_KEY, 1, NO_KEY]);
    }

    #[test]
    fn big_unsigned_never_meets_negative() {
        let s = column("k", Arc::new(UInt64Array::from(vec![u64::MAX, 5])));
        let f = column("k", Arc::new(Int64Array::from(vec![-1, 5])));
        assert_eq!(ids(&[s], &[f]).1, vec![NO_KEY, 1]);
    }

    #[test]
    fn composite_keys_never_collide() {
        let s = [
            column("a", Arc::new(StringArray::from(vec!["1", "12"]))),
            column("b", Arc::new(StringArray::from(vec!["23", "3"]))),
        ];
        let f = [
            column("a", Arc::new(StringArray::from(vec!["12", "1", "1"]))),
            column("b", Arc::new(StringArray::from(vec!["3", "23", "3"]))),
        ];
        assert_eq!(ids(&s, &f), (vec![0, 1], vec![1, 0, NO_KEY]));
    }

    /// A key column of `chunks` batches, each cast to `dt`.
    fn chunked(dt: &DataType, chunks: &[Vec<Option<i64>>]) -> Column {
        let schema = Arc::new(Schema::new(vec![Field::new("k", dt.clone(), true)]));
        let batches = chunks
            .iter()
            .map(|c| {
                let a: ArrayRef = Arc::new(Int64Array::from(c.clone()));
                let a = arrow_cast::cast(&a, dt).unwrap();
                RecordBatch::try_new(schema.clone(), vec![a]).unwrap()
            })
            .collect();
        Table::new("t", schema, batches).column("k", "key").unwrap()
    }

    #[test]
    fn dense_fast_path_agrees_with_the_per_cell_path() {
        // Chunks with and without nulls mix the tight loop and the per-cell path in one
        // column; ids must still be by first appearance, and a feature value must get
        // the id of the same spine value whichever path read either side.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for dt in [
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
        ] {
            let mut draw = |n: usize, nulls: bool| -> Vec<Option<i64>> {
                (0..n)
                    .map(|_| (!nulls || next(5) > 0).then(|| next(100) as i64))
                    .collect()
            };
            let spine = [
                draw(40, false),
                draw(30, true),
                draw(0, false),
                draw(50, false),
            ];
            let feats = [draw(60, false), draw(25, true), draw(45, false)];
            let (s_ids, f_ids) = ids(&[chunked(&dt, &spine)], &[chunked(&dt, &feats)]);
            let mut want: std::collections::HashMap<i64, u32> = Default::default();
            let want_s: Vec<u32> = spine
                .iter()
                .flatten()
                .map(|v| match v {
                    None => NO_KEY,
                    Some(v) => {
                        let next = want.len() as u32;
                        *want.entry(*v).or_insert(next)
                    }
                })
                .collect();
            let want_f: Vec<u32> = feats
                .iter()
                .flatten()
                .map(|v| v.and_then(|v| want.get(&v).copied()).unwrap_or(NO_KEY))
                .collect();
            assert_eq!((s_ids, f_ids), (want_s, want_f), "{dt}");
        }
    }
}
