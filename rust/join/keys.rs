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
//! feature row and key column (parallel over blocks of rows).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_schema::DataType;
use hashbrown::HashMap;
use rayon::prelude::*;

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

/// Calls `f(i, cell)` for each row `i` of `arr` (a slice of a key column).
fn for_each_cell<'a>(arr: &'a dyn Array, mut f: impl FnMut(usize, Cell<'a>)) {
    fn ints<'a, T: ArrowPrimitiveType>(arr: &'a dyn Array, f: &mut impl FnMut(usize, Cell<'a>))
    where
        T::Native: Into<i128>,
    {
        let a = arr.as_primitive::<T>();
        let nulls = a.nulls();
        for (i, &v) in a.values().iter().enumerate() {
            if nulls.is_some_and(|n| n.is_null(i)) {
                f(i, Cell::Null);
                continue;
            }
            let v: i128 = v.into();
            match i64::try_from(v) {
                Ok(s) => f(i, Cell::Small(s as u64)),
                Err(_) => f(i, Cell::Big(v as u64)),
            }
        }
    }
    match arr.data_type() {
        DataType::Null => (0..arr.len()).for_each(|i| f(i, Cell::Null)),
        DataType::Int8 => ints::<Int8Type>(arr, &mut f),
        DataType::Int16 => ints::<Int16Type>(arr, &mut f),
        DataType::Int32 => ints::<Int32Type>(arr, &mut f),
        DataType::Int64 => ints::<Int64Type>(arr, &mut f),
        DataType::UInt8 => ints::<UInt8Type>(arr, &mut f),
        DataType::UInt16 => ints::<UInt16Type>(arr, &mut f),
        DataType::UInt32 => ints::<UInt32Type>(arr, &mut f),
        DataType::UInt64 => ints::<UInt64Type>(arr, &mut f),
        DataType::Utf8 => {
            let a = arr.as_string::<i32>();
            for i in 0..a.len() {
                f(
                    i,
                    if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Str(a.value(i).as_bytes())
                    },
                );
            }
        }
        DataType::LargeUtf8 => {
            let a = arr.as_string::<i64>();
            for i in 0..a.len() {
                f(
                    i,
                    if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Str(a.value(i).as_bytes())
                    },
                );
            }
        }
        DataType::Utf8View => {
            let a = arr.as_string_view();
            for i in 0..a.len() {
                f(
                    i,
                    if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Str(a.value(i).as_bytes())
                    },
                );
            }
        }
        dt => unreachable!("key kind checked before: {dt}"),
    }
}

/// Exact map from the cells of one key column to codes `0..len`.
#[derive(Default)]
struct CellCodes<'a> {
    small: HashMap<u64, u32>,
    big: HashMap<u64, u32>,
    strs: HashMap<&'a [u8], u32>,
    len: u32,
}

impl<'a> CellCodes<'a> {
    fn insert(&mut self, cell: Cell<'a>) -> u32 {
        let next = self.len;
        let code = match cell {
            Cell::Null => return NO_KEY,
            Cell::Small(v) => *self.small.entry(v).or_insert(next),
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
            Cell::Small(v) => self.small.get(&v),
            Cell::Big(v) => self.big.get(&v),
            Cell::Str(s) => self.strs.get(s),
        };
        found.copied().unwrap_or(NO_KEY)
    }
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
            key_kind(col)?;
            let mut codes = CellCodes::default();
            let mut pair_map: HashMap<u64, u32> = HashMap::new();
            let mut start = 0;
            for chunk in &col.chunks {
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
        let mut out = vec![0u32; n];
        let parts: Vec<(usize, &mut [u32])> = blocks(n, BLOCK)
            .map(|(s, _)| s)
            .zip(out.chunks_mut(BLOCK))
            .collect();
        parts.into_par_iter().for_each(|(start, dst)| {
            for (j, col) in cols.iter().enumerate() {
                for (piece_start, chunk) in col.pieces(start, dst.len()) {
                    let base = piece_start - start;
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
