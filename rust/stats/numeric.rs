//! Numeric columns: the values as one sorted `f64` vector, plus the counts and moments
//! gathered on the way.
//!
//! A column of any integer, float or decimal type is cast chunk by chunk to `f64` (one
//! copy, 8 bytes a value), nulls and NaN are counted and dropped, and the rest is
//! sorted with `f64::total_cmp` (O(n log n), the dominant cost: ~50 ms per million
//! values on one core). Everything else reads the sorted vector: min and max are its
//! ends, quantiles are two reads each, a histogram is two binary searches per edge.
//!
//! Moments are kept as `(n, mean, M2)`. A column read whole gets them in two passes
//! ([`Moments::of`]: the double-double mean, then M2 around it), as accurate as numpy's
//! std; samples that arrive piece by piece can be updated with Welford's recurrence
//! and merged exactly with Chan et al.'s formula (a profile stored beside a snapshot
//! could be merged with another).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use crate::agg::dd::DD;
use crate::error::{Error, Result};
use crate::table::Column;

/// Mergeable moments of a sample: count, mean and the sum of squared deviations; the
/// reported mean is the double-double sum over n (Welford's running mean loses digits
/// when large values cancel: 1e12 and -1e12 + 0.1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    /// Σ (x - mean)², so the population variance is `m2 / n`.
    pub m2: f64,
    pub sum: DD,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.sum = self.sum.add_f64(x);
    }

    /// The moments of `values` in two passes: the double-double sum and mean, then M2
    /// around that mean. Welford's running M2 ([`Moments::push`]) is sensitive to the
    /// rounding of its running mean to first order (values near 7e11 that differ by
    /// hundreds lose ~1e-7 of their std); this is sensitive only to second order, as
    /// numpy's two-pass std is.
    pub fn of(values: &[f64]) -> Moments {
        if values.is_empty() {
            return Moments::default();
        }
        let sum = values.iter().fold(DD::default(), |s, &x| s.add_f64(x));
        let n = values.len() as u64;
        let mean = sum.div_f64(n as f64).value();
        Moments {
            n,
            mean,
            m2: values.iter().map(|&x| (x - mean) * (x - mean)).sum(),
            sum,
        }
    }

    /// The moments of the union of two samples (Chan, Golub and LeVeque).
    pub fn merge(self, other: Moments) -> Moments {
        if self.n == 0 {
            return other;
        }
        if other.n == 0 {
            return self;
        }
        let n = self.n + other.n;
        let d = other.mean - self.mean;
        let (a, b) = (self.n as f64, other.n as f64);
        Moments {
            n,
            mean: self.mean + d * b / n as f64,
            m2: self.m2 + other.m2 + d * d * a * b / n as f64,
            sum: self.sum.add(other.sum),
        }
    }

    /// The population standard deviation (`ddof = 0`, numpy's default); NaN when empty.
    pub fn std(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            (self.m2.max(0.0) / self.n as f64).sqrt()
        }
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.sum.div_f64(self.n as f64).value()
        }
    }
}

/// A numeric column reduced to what every statistic needs.
#[derive(Clone, Debug)]
pub struct Numeric {
    pub rows: usize,
    pub nulls: usize,
    pub nan: usize,
    /// The non-null, non-NaN values, sorted ascending (`total_cmp`; -0.0 before 0.0).
    pub sorted: Vec<f64>,
    pub moments: Moments,
}

/// Whether `dtype` can be read as numbers.
pub fn is_numeric(dtype: &DataType) -> bool {
    dtype.is_integer()
        || dtype.is_floating()
        || matches!(dtype, DataType::Decimal128(..) | DataType::Decimal256(..))
}

/// Casts one chunk to `Float64` (no copy when it already is).
pub fn as_f64(chunk: &ArrayRef) -> Result<ArrayRef> {
    if chunk.data_type() == &DataType::Float64 {
        return Ok(Arc::clone(chunk));
    }
    Ok(arrow_cast::cast(chunk, &DataType::Float64)?)
}

/// Reads `col` (checked numeric by the caller) into a [`Numeric`].
pub fn read(col: &Column) -> Result<Numeric> {
    if !is_numeric(&col.data_type) {
        return Err(Error::StatsColumnType {
            table: col.table.clone(),
            column: col.name().to_string(),
            dtype: col.data_type.clone(),
            detail: "numeric statistics need integers, floats or decimals (strings, booleans \
                     and dictionaries are categorical)"
                .into(),
        });
    }
    let mut sorted = Vec::with_capacity(col.len() - col.null_count());
    let (mut nulls, mut nan) = (0, 0);
    for chunk in &col.chunks {
        let values = as_f64(chunk)?;
        let values = values.as_primitive::<Float64Type>();
        nulls += values.null_count();
        if values.null_count() == 0 {
            for &x in values.values().iter() {
                if x.is_nan() {
                    nan += 1;
                } else {
                    sorted.push(x);
                }
            }
        } else {
            for x in values.iter().flatten() {
                if x.is_nan() {
                    nan += 1;
                } else {
                    sorted.push(x);
                }
            }
        }
    }
    let moments = Moments::of(&sorted);
    sorted.sort_unstable_by(f64::total_cmp);
    Ok(Numeric {
        rows: col.len(),
        nulls,
        nan,
        sorted,
        moments,
    })
}

/// The `q`-quantile of sorted values by numpy's default method (`'linear'`, Hyndman
/// and Fan's type 7): at the virtual index `h = (n - 1) q`, interpolate between
/// `x[⌊h⌋]` and `x[⌊h⌋ + 1]`, with numpy's own lerp (`b - (b - a)(1 - g)` when the
/// fraction `g >= 0.5`), so the result is bit-identical to `numpy.quantile`. NaN for no
/// values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q;
    let lo = h.floor();
    let g = h - lo;
    let i = (lo as usize).min(n - 1);
    let (a, b) = (sorted[i], sorted[(i + 1).min(n - 1)]);
    let d = b - a;
    if g >= 0.5 {
        b - d * (1.0 - g)
    } else {
        a + d * g
    }
}

/// How many sorted values are `< v` (`lower`) or `<= v` (`upper`).
fn lower(sorted: &[f64], v: f64) -> usize {
    sorted.partition_point(|&x| x < v)
}
fn upper(sorted: &[f64], v: f64) -> usize {
    sorted.partition_point(|&x| x <= v)
}

/// Counts per bin for ascending `edges` (B + 1 edges, B bins), as `numpy.histogram`:
/// bin i is `[e_i, e_{i+1})`, the last bin also holds `e_B`; values outside are not
/// counted. O(B log n).
pub fn histogram(sorted: &[f64], edges: &[f64]) -> Vec<u64> {
    let b = edges.len().saturating_sub(1);
    (0..b)
        .map(|i| {
            let hi = if i + 1 == b {
                upper(sorted, edges[i + 1])
            } else {
                lower(sorted, edges[i + 1])
            };
            hi.saturating_sub(lower(sorted, edges[i])) as u64
        })
        .collect()
}

/// `bins` equal-width edges over `[lo, hi]`, as `numpy.histogram(x, bins)` makes them
/// (`numpy.linspace`; a range of zero width is widened to `[lo - 0.5, hi + 0.5]`).
/// Empty when there are no finite bounds.
pub fn equal_edges(lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() || bins == 0 {
        return Vec::new();
    }
    let (lo, hi) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let step = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + lo).collect();
    edges[bins] = hi;
    edges
}

/// The smallest and largest finite values of sorted data (None if there are none).
pub fn finite_range(sorted: &[f64]) -> Option<(f64, f64)> {
    let lo = sorted.iter().find(|x| x.is_finite())?;
    let hi = sorted.iter().rev().find(|x| x.is_finite())?;
    Some((*lo, *hi))
}
