//! `take` for Utf8, LargeUtf8, Binary and LargeBinary columns, faster than Arrow's on
//! the short values feature tables hold.
//!
//! Arrow's `take_bytes` reads every index's offsets twice (once to size the output,
//! once to copy) and copies each value with a `memcpy` call of unknown length. Here one
//! pass reads each index's offsets once, writes the output offset, and copies the value
//! into a buffer sized from the source's average value length (grown when needed): a
//! value of up to 16 bytes is copied as one fixed 16-byte move (a single unaligned load
//! and store) when 16 bytes can be read from the source and written to the output,
//! and the bytes past its end are overwritten by the next value or never part of the
//! array. Unmatched rows get an empty value (they are null).
//!
//! Cost: one random read of the offsets and one of the value per output row, and
//! nothing else per row. Measured on 1M 11-byte strings in 8 spine batches (one core,
//! source just concatenated): 28 ms against 35 ms for Arrow's `take`; most of what is
//! left is the random reads and the page faults of the fresh output buffers.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use arrow_array::{Array, ArrayRef, GenericByteArray, OffsetSizeTrait, UInt32Array};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType};

use crate::error::Result;

/// A value this long or shorter is copied as one fixed-size move.
const SHORT: usize = 16;

/// `source` at `idx`, null where `matched` says no row matched (or the source is
/// null); None when `source` is not a byte array type this module handles.
pub fn take_bytes(
    source: &ArrayRef,
    idx: &UInt32Array,
    matched: Option<&NullBuffer>,
) -> Option<Result<ArrayRef>> {
    let idx = idx.values().as_ref();
    Some(match source.data_type() {
        DataType::Utf8 => take::<Utf8Type>(source.as_bytes(), idx, matched),
        DataType::LargeUtf8 => take::<LargeUtf8Type>(source.as_bytes(), idx, matched),
        DataType::Binary => take::<BinaryType>(source.as_bytes(), idx, matched),
        DataType::LargeBinary => take::<LargeBinaryType>(source.as_bytes(), idx, matched),
        _ => return None,
    })
}

fn take<T: ByteArrayType>(
    src: &GenericByteArray<T>,
    idx: &[u32],
    matched: Option<&NullBuffer>,
) -> Result<ArrayRef> {
    let offsets = src.value_offsets();
    let data = src.value_data();
    let n = idx.len();
    let first = offsets[0].as_usize();
    let bytes = offsets[src.len()].as_usize() - first;
    let mut values: Vec<u8> = Vec::with_capacity(bytes / src.len().max(1) * n + SHORT);
    let mut out: Vec<T::Offset> = Vec::with_capacity(n + 1);
    out.push(T::Offset::usize_as(0));
    let overflow = || ArrowError::OffsetOverflowError(T::Offset::MAX_OFFSET);
    for (i, &r) in idx.iter().enumerate() {
        if matched.is_none_or(|m| m.is_valid(i)) {
            let r = r as usize;
            let (start, end) = (offsets[r].as_usize(), offsets[r + 1].as_usize());
            let len = end - start;
            if values.capacity() - values.len() < len + SHORT {
                values.reserve(len + SHORT + values.len() / 4);
            }
            let at = values.len();
            if len <= SHORT && start + SHORT <= data.len() {
                // SAFETY: `start + SHORT <= data.len()` (checked), so the 16 bytes read
                // are inside `data`; the reservation above leaves at least
                // `len + SHORT` bytes of spare capacity after `at`, so the 16 bytes
                // written are inside `values`' allocation (u8 needs no alignment).
                // `set_len` then covers only the `len` bytes that belong to the value,
                // all initialized by this copy.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr().add(start),
                        values.as_mut_ptr().add(at),
                        SHORT,
                    );
                    values.set_len(at + len);
                }
            } else {
                values.extend_from_slice(&data[start..end]);
            }
        }
        out.push(T::Offset::from_usize(values.len()).ok_or_else(overflow)?);
    }
    let nulls = match src.nulls().filter(|n| n.null_count() > 0) {
        None => matched.cloned(),
        Some(src_nulls) => {
            let valid = BooleanBuffer::collect_bool(n, |i| src_nulls.is_valid(idx[i] as usize));
            NullBuffer::union(Some(&NullBuffer::new(valid)), matched)
        }
    };
    // SAFETY: `out` starts at 0 and never decreases (each entry is `values.len()` after
    // appending to it), so it is a valid offset buffer whose last entry is
    // `values.len()`. Each value is a byte-for-byte copy of one value of `src`, a valid
    // array of the same type `T`, so for Utf8 it is valid UTF-8 (or empty). `nulls`
    // has one bit per index (`matched` and the collected validity both do).
    let array = unsafe {
        let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(out));
        GenericByteArray::<T>::new_unchecked(offsets, values.into(), nulls)
    };
    Ok(Arc::new(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{LargeStringArray, StringArray};

    #[test]
    fn matches_arrow_take_on_short_long_empty_null_and_unmatched() {
        let long = "x".repeat(40);
        let vals: Vec<Option<&str>> = vec![
            Some("a"),
            None,
            Some(""),
            Some("h\u{e9}llo w\u{f6}rld \u{4e2d}"),
            Some(&long),
            Some("exactly sixteen!"),
            Some("z"),
        ];
        let whole: ArrayRef = Arc::new(StringArray::from(vals.clone()));
        let large: ArrayRef = Arc::new(LargeStringArray::from(vals));
        for source in [whole.slice(1, 6), whole.clone(), large.slice(2, 5)] {
            let len = source.len() as u32;
            let idx = UInt32Array::from((0..3 * len).map(|i| (i * 5) % len).collect::<Vec<_>>());
            let matched = NullBuffer::from_iter((0..idx.len()).map(|i| i % 4 != 1));
            for m in [None, Some(&matched)] {
                let got = take_bytes(&source, &idx, m).unwrap().unwrap();
                let want = arrow_select::take::take(&source, &idx, None).unwrap();
                let want_nulls = NullBuffer::union(want.nulls(), m);
                got.to_data().validate_full().unwrap();
                assert_eq!(got.nulls(), want_nulls.as_ref());
                for i in 0..got.len() {
                    if got.is_valid(i) {
                        assert_eq!(
                            arrow_cast::display::array_value_to_string(&got, i).unwrap(),
                            arrow_cast::display::array_value_to_string(&want, i).unwrap()
                        );
                    }
                }
            }
        }
    }
}
