//! Categorical columns: exact counts per value.
//!
//! Strings (Utf8, LargeUtf8, Utf8View, and dictionaries of them, decoded by
//! [`crate::table::Table::column`]) are counted in a hash map keyed by the borrowed
//! bytes (no copy per row; one `String` per distinct value at the end); booleans in two
//! counters; integers and floats by value, labelled as Rust prints an `f64` (`3`, `0.5`),
//! so an integer training column and its float32 served copy meet on the same labels.
//! NaN counts as null. Cost: O(n) hash-map updates, memory per distinct value.
//!
//! Top-k orders by count (descending), then by label, so ties are deterministic.

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::Array;
use arrow_schema::DataType;
use hashbrown::HashMap;

use super::numeric::{as_f64, is_numeric};
use crate::error::{Error, Result};
use crate::table::Column;

/// A column's values and how often each occurs.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub rows: usize,
    /// Nulls, and NaN in float columns.
    pub nulls: usize,
    /// Every distinct non-null value with its count, most frequent first, ties by label.
    pub values: Vec<(String, u64)>,
}

impl Counts {
    pub fn valid(&self) -> u64 {
        (self.rows - self.nulls) as u64
    }
}

/// Whether `dtype` can be counted as categories.
pub fn is_categorical(dtype: &DataType) -> bool {
    matches!(
        dtype,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
    ) || is_numeric(dtype)
}

/// The label of a number: Rust's shortest round-trip form (`3`, `0.5`, `-0`→`0`).
pub fn number_label(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x}")
    }
}

fn by_count<K>(map: HashMap<K, u64>, label: impl Fn(K) -> String) -> Vec<(String, u64)> {
    let mut values: Vec<(String, u64)> = map.into_iter().map(|(k, c)| (label(k), c)).collect();
    values.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values
}

/// Counts the values of `col`.
pub fn count(col: &Column) -> Result<Counts> {
    let rows = col.len();
    let mut nulls = col.null_count();
    let values = match &col.data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let mut map: HashMap<&str, u64> = HashMap::new();
            for chunk in &col.chunks {
                match chunk.data_type() {
                    DataType::Utf8 => chunk
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .for_each(|s| *map.entry(s).or_insert(0) += 1),
                    DataType::LargeUtf8 => chunk
                        .as_string::<i64>()
                        .iter()
                        .flatten()
                        .for_each(|s| *map.entry(s).or_insert(0) += 1),
                    _ => chunk
                        .as_string_view()
                        .iter()
                        .flatten()
                        .for_each(|s| *map.entry(s).or_insert(0) += 1),
                }
            }
            by_count(map, |s| s.to_string())
        }
        DataType::Boolean => {
            let (mut t, mut f) = (0u64, 0u64);
            for chunk in &col.chunks {
                for v in chunk.as_boolean().iter().flatten() {
                    if v {
                        t += 1
                    } else {
                        f += 1
                    }
                }
            }
            let map: HashMap<bool, u64> = [(true, t), (false, f)]
                .into_iter()
                .filter(|e| e.1 > 0)
                .collect();
            by_count(map, |b| b.to_string())
        }
        dtype if is_numeric(dtype) => {
            let mut map: HashMap<u64, u64> = HashMap::new();
            for chunk in &col.chunks {
                let values = as_f64(chunk)?;
                for x in values.as_primitive::<Float64Type>().iter().flatten() {
                    if x.is_nan() {
                        nulls += 1;
                    } else {
                        let x = if x == 0.0 { 0.0 } else { x };
                        *map.entry(x.to_bits()).or_insert(0) += 1;
                    }
                }
            }
            by_count(map, |bits| number_label(f64::from_bits(bits)))
        }
        dtype => {
            return Err(Error::StatsColumnType {
                table: col.table.clone(),
                column: col.name().to_string(),
                dtype: dtype.clone(),
                detail: "categorical statistics need strings, booleans, dictionaries of \
                         strings, or numbers"
                    .into(),
            })
        }
    };
    Ok(Counts {
        rows,
        nulls,
        values,
    })
}
