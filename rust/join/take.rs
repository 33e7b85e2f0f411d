//! Gathering a feature table's values straight from the batches it arrived in, without
//! concatenating them first.
//!
//! The kernel names each spine row's feature row by its global index (row `i` of the
//! table, across batches). [`Chunks::locate`] turns one spine batch's global indices
//! into `(chunk, row in chunk)` pairs once, and every value column of the table is then
//! gathered from those pairs ([`gather`]):
//! - primitive types (every [`ArrowPrimitiveType`]: integers, floats, decimals, times,
//!   durations, intervals): one pass that reads `values[chunk][row]`;
//! - Utf8, LargeUtf8, Binary, LargeBinary: one pass that copies each value once into a
//!   buffer sized from the source's average value length, writing the offsets as it
//!   goes (unmatched rows get an empty value);
//! - Boolean: one pass over the bits.
//!
//! Every other type (nested, dictionary, views, fixed-size binary, ...) is not
//! [`supported`] here; `gather` takes those the old way (concatenate, then Arrow's
//! `take`).
//!
//! Nulls: an output slot is valid when its spine row matched and the source value is
//! valid; with null-free sources (the usual case) the validity is just the match mask,
//! shared by all the table's columns. The values under a null slot are those of some
//! valid source row (or empty), never read.
//!
//! Cost: `locate` is one division (or a shift, when the batches have one power-of-two
//! length, as parquet readers give) or a binary search over the batch starts per spine
//! row, and 8 bytes of scratch per row of one spine batch; each column is then one
//! sequential pass over those pairs with one random read per row (plus one copy per
//! string). Compared with concatenating first, this saves writing and faulting in a
//! copy of every feature column and reading it again.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use arrow_array::{downcast_primitive, Array, ArrayRef, ArrowPrimitiveType, BooleanArray};
use arrow_array::{GenericByteArray, OffsetSizeTrait, PrimitiveArray};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType};

use super::kernel::NO_ROW;
use crate::error::Result;

/// Whether [`gather`] handles `dt` itself (else the caller falls back to `take`).
pub fn supported(dt: &DataType) -> bool {
    use DataType::*;
    dt.is_primitive() || matches!(dt, Boolean | Utf8 | LargeUtf8 | Binary | LargeBinary)
}

/// Where a table's rows live: the non-empty batches and the global row each starts at.
pub struct Chunks {
    /// Indices of the table's non-empty batches, in order.
    pub batches: Vec<usize>,
    /// `starts[c]`: the global index of the first row of `batches[c]`.
    starts: Vec<usize>,
    /// When every non-empty batch but the last has the same length: that length.
    uniform: Option<u32>,
}

/// One spine batch's rows as `(chunk, row in chunk)` (a valid dummy row where nothing
/// matched) and the mask of rows that matched (None: all did).
pub struct Locs {
    at: Vec<(u32, u32)>,
    pub matched: Option<NullBuffer>,
}

impl Chunks {
    /// `lens[b]`: the number of rows in batch `b`.
    pub fn new(lens: impl IntoIterator<Item = usize>) -> Self {
        let (mut batches, mut starts) = (Vec::new(), Vec::new());
        let mut start = 0;
        for (b, len) in lens.into_iter().enumerate() {
            if len > 0 {
                batches.push(b);
                starts.push(start);
            }
            start += len;
        }
        let len = |c: usize| starts.get(c + 1).map_or(start, |&s| s) - starts[c];
        let uniform = match starts.len() {
            0 | 1 => None,
            n => Some(len(0))
                .filter(|&l| (1..n - 1).all(|c| len(c) == l))
                .and_then(|l| u32::try_from(l).ok()),
        };
        Chunks {
            batches,
            starts,
            uniform,
        }
    }

    /// The locations of feature rows `rows` (`NO_ROW`: no match); None when nothing
    /// matched, so the columns are all null without a gather.
    pub fn locate(&self, rows: &[u32]) -> Option<Locs> {
        if rows.iter().all(|&r| r == NO_ROW) {
            return None;
        }
        let last = self.starts.len() - 1; // some row matched: the table has rows
        let at = match self.uniform {
            Some(len) if len.is_power_of_two() => {
                let shift = len.trailing_zeros();
                let mask = len - 1;
                let find = |r: u32| ((r >> shift).min(last as u32), r & mask);
                place(rows, find, last, &self.starts)
            }
            Some(len) => {
                let find = |r: u32| {
                    let c = (r / len).min(last as u32);
                    (c, r - c * len)
                };
                place(rows, find, last, &self.starts)
            }
            None => {
                let find = |r: u32| {
                    let c = self.starts.partition_point(|&s| s <= r as usize) - 1;
                    (c as u32, (r as usize - self.starts[c]) as u32)
                };
                place(rows, find, last, &self.starts)
            }
        };
        let matched = NullBuffer::from_iter(rows.iter().map(|&r| r != NO_ROW));
        Some(Locs {
            at,
            matched: Some(matched).filter(|n| n.null_count() > 0),
        })
    }
}

/// `find(r)` for each matched row; unmatched rows get row 0 of the first chunk.
/// (The shift/mask `find` is exact only below the last chunk: rows of a last chunk
/// longer than the others are fixed up from `starts`.)
fn place(
    rows: &[u32],
    find: impl Fn(u32) -> (u32, u32),
    last: usize,
    starts: &[usize],
) -> Vec<(u32, u32)> {
    let last_start = starts[last];
    rows.iter()
        .map(|&r| match r {
            NO_ROW => (0, 0),
            r if r as usize >= last_start => (last as u32, (r as usize - last_start) as u32),
            r => find(r),
        })
        .collect()
}

/// `chunks[c]` (the table's non-empty chunks of one column, of type `dt`) at `locs`:
/// null where the row did not match or the source is null. `dt` must be [`supported`].
pub fn gather(chunks: &[&ArrayRef], dt: &DataType, locs: &Locs) -> Result<ArrayRef> {
    macro_rules! prim {
        ($t:ty) => {
            Ok(primitive::<$t>(chunks, dt, locs))
        };
    }
    downcast_primitive! {
        dt => (prim),
        DataType::Utf8 => bytes::<Utf8Type>(chunks, locs),
        DataType::LargeUtf8 => bytes::<LargeUtf8Type>(chunks, locs),
        DataType::Binary => bytes::<BinaryType>(chunks, locs),
        DataType::LargeBinary => bytes::<LargeBinaryType>(chunks, locs),
        DataType::Boolean => Ok(boolean(chunks, locs)),
        other => Err(ArrowError::NotYetImplemented(format!("gather of {other}")).into()),
    }
}

fn primitive<T: ArrowPrimitiveType>(chunks: &[&ArrayRef], dt: &DataType, locs: &Locs) -> ArrayRef {
    let arrays: Vec<&PrimitiveArray<T>> = chunks.iter().map(|a| a.as_primitive::<T>()).collect();
    let values: Vec<&[T::Native]> = arrays.iter().map(|a| a.values().as_ref()).collect();
    let out: Vec<T::Native> = locs
        .at
        .iter()
        .map(|&(c, r)| values[c as usize][r as usize])
        .collect();
    let nulls = validity(&arrays.iter().map(|a| a.nulls()).collect::<Vec<_>>(), locs);
    let array = PrimitiveArray::<T>::new(ScalarBuffer::from(out), nulls);
    Arc::new(array.with_data_type(dt.clone()))
}

fn boolean(chunks: &[&ArrayRef], locs: &Locs) -> ArrayRef {
    let arrays: Vec<&BooleanArray> = chunks.iter().map(|a| a.as_boolean()).collect();
    let at = &locs.at;
    let values = BooleanBuffer::collect_bool(at.len(), |i| {
        let (c, r) = at[i];
        arrays[c as usize].value(r as usize)
    });
    let nulls = validity(&arrays.iter().map(|a| a.nulls()).collect::<Vec<_>>(), locs);
    Arc::new(BooleanArray::new(values, nulls))
}

fn bytes<T: ByteArrayType>(chunks: &[&ArrayRef], locs: &Locs) -> Result<ArrayRef> {
    let arrays: Vec<&GenericByteArray<T>> = chunks.iter().map(|a| a.as_bytes::<T>()).collect();
    let offsets: Vec<&[T::Offset]> = arrays.iter().map(|a| a.value_offsets()).collect();
    let data: Vec<&[u8]> = arrays.iter().map(|a| a.value_data()).collect();
    // Capacity for the source's average value length: one allocation in the usual case.
    let (rows, bytes) = arrays.iter().fold((0, 0), |(n, b), a| {
        let o = a.value_offsets();
        (n + a.len(), b + (o[a.len()] - o[0]).as_usize())
    });
    let mut values: Vec<u8> = Vec::with_capacity(bytes / rows.max(1) * locs.at.len() + 64);
    let mut out: Vec<T::Offset> = Vec::with_capacity(locs.at.len() + 1);
    out.push(T::Offset::usize_as(0));
    let overflow = || ArrowError::OffsetOverflowError(T::Offset::MAX_OFFSET);
    let matched = locs.matched.as_ref();
    for (i, &(c, r)) in locs.at.iter().enumerate() {
        if matched.is_none_or(|m| m.is_valid(i)) {
            let (c, r) = (c as usize, r as usize);
            let o = offsets[c];
            values.extend_from_slice(&data[c][o[r].as_usize()..o[r + 1].as_usize()]);
        }
        out.push(T::Offset::from_usize(values.len()).ok_or_else(overflow)?);
    }
    let nulls = validity(&arrays.iter().map(|a| a.nulls()).collect::<Vec<_>>(), locs);
    // SAFETY: `out` starts at 0 and never decreases (each entry is the length of
    // `values` after appending to it), so it is a valid offset buffer ending at
    // `values.len()`. Each value is a byte-for-byte copy of one value of a valid source
    // array of the same type `T`, so for Utf8 it is valid UTF-8 (or empty); `nulls`,
    // when present, has one bit per output slot, as `validity` builds it.
    let array = unsafe {
        let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(out));
        GenericByteArray::<T>::new_unchecked(offsets, values.into(), nulls)
    };
    Ok(Arc::new(array))
}

/// The output's validity: the match mask, and the source's validity at each row when
/// any chunk has nulls.
fn validity(nulls: &[Option<&NullBuffer>], locs: &Locs) -> Option<NullBuffer> {
    if nulls.iter().all(|n| n.is_none_or(|n| n.null_count() == 0)) {
        return locs.matched.clone();
    }
    let at = &locs.at;
    let valid = BooleanBuffer::collect_bool(at.len(), |i| {
        let (c, r) = at[i];
        nulls[c as usize].is_none_or(|n| n.is_valid(r as usize))
    });
    NullBuffer::union(Some(&NullBuffer::new(valid)), locs.matched.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_maps_global_rows_to_chunks() {
        // uniform power of two, uniform other, ragged, with empty batches and a long tail
        for lens in [
            vec![4, 4, 4, 2],
            vec![3, 3, 3],
            vec![3, 3, 7],
            vec![0, 2, 0, 5, 1, 0],
            vec![4, 4, 9],
            vec![6],
        ] {
            let chunks = Chunks::new(lens.iter().copied());
            let total: usize = lens.iter().sum();
            let mut expect = Vec::new();
            for (b, &len) in lens.iter().enumerate() {
                for r in 0..len {
                    let c = chunks.batches.iter().position(|&x| x == b).unwrap();
                    expect.push((c as u32, r as u32));
                }
            }
            let rows: Vec<u32> = (0..total as u32).rev().chain([NO_ROW]).collect();
            let locs = chunks.locate(&rows).unwrap();
            let mut want: Vec<_> = expect.iter().rev().copied().collect();
            want.push((0, 0));
            assert_eq!(locs.at, want, "{lens:?}");
            assert_eq!(locs.matched.unwrap().null_count(), 1);
        }
        assert!(Chunks::new([2, 2]).locate(&[NO_ROW, NO_ROW]).is_none());
    }
}
