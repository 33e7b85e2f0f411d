//! Gathering one output column straight from a feature column's chunks.
//!
//! Naive equivalent: concatenate the column's chunks into one array, then Arrow's
//! `take` with the (nullable) row indices. Here every output slot names its source as
//! a [`Loc`] (chunk, row in chunk) or none, and each kernel reads the chunks in place:
//! no concatenated copy of the column is ever made, and each output buffer is
//! allocated once at its final size and written once.
//!
//! - fixed-width columns (integers, floats, decimals, dates, timestamps, durations,
//!   intervals): one pass, one load and one store per slot;
//! - `Utf8`/`Binary` and their `Large` forms: one pass writes the offsets and copies
//!   each value once (short ones as one 16-byte block), into a values buffer sized
//!   from the sources' average value length;
//! - validity: one bit per slot, set where a row matched and its value is not null;
//!   no validity buffer at all when every slot is valid.
//!
//! Other types (booleans, views, nested, dictionaries, ...) are not [`direct`]: the
//! caller uses the naive path for them. Cost: the output plus 8 bytes per slot for the locations
//! (shared by a feature table's columns); memory traffic is one random read per slot
//! from the source (prefetched a few slots ahead) and one sequential write.

use arrow_array::{make_array, Array, ArrayRef, OffsetSizeTrait};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, Buffer, NullBuffer};
use arrow_data::{ArrayData, ArrayDataBuilder};
use arrow_schema::{ArrowError, DataType};

use super::kernel::NO_ROW;
use crate::error::Result;

/// Where an output slot's value comes from: row `row` of chunk `chunk`. A slot no
/// feature row matched points one past the last chunk (`chunk == number of chunks`,
/// row 0), where each kernel puts a one-value dummy: the loops read every slot the
/// same way, without a branch that a random mix of matched and unmatched slots would
/// mispredict (which also stalls the random loads around it).
#[derive(Clone, Copy, Debug)]
pub struct Loc {
    pub chunk: u32,
    pub row: u32,
}

/// Turns global feature-row indices (NO_ROW: no match) into chunk locations;
/// `starts[i]` is the global index of chunk `i`'s first row (ascending, from 0).
pub fn locate(rows: &[u32], starts: &[usize]) -> Vec<Loc> {
    // The chunk of r is the last one starting at or before r (empty chunks share their
    // start with the next one, so they are never chosen). With few chunks, counting
    // the starts at or before r is branch-free and beats a binary search.
    let few = starts.len() <= 32;
    let none = Loc {
        chunk: starts.len() as u32,
        row: 0,
    };
    rows.iter()
        .map(|&r| {
            if r == NO_ROW {
                return none;
            }
            let r = r as usize;
            let c = if few {
                starts.iter().map(|&s| (s <= r) as usize).sum::<usize>() - 1
            } else {
                starts.partition_point(|&s| s <= r) - 1
            };
            Loc {
                chunk: c as u32,
                row: (r - starts[c]) as u32,
            }
        })
        .collect()
}

/// Whether [`gather`] handles a column of type `dt` in these chunks: a fixed-width
/// type (of width 1, 2, 4, 8 or 16 bytes, its buffers aligned for that width) or
/// `Utf8`/`Binary` and their `Large` forms, every chunk of that type.
pub fn direct(dt: &DataType, chunks: &[ArrayRef]) -> bool {
    use DataType::*;
    if chunks.iter().any(|c| c.data_type() != dt) {
        return false;
    }
    let datas = || chunks.iter().map(|c| c.to_data()).collect::<Vec<_>>();
    match (dt, dt.primitive_width()) {
        (Utf8 | Binary | LargeUtf8 | LargeBinary, _) => true,
        (Boolean, _) => false,
        (dt, Some(1)) if dt.is_primitive() => typed::<u8>(&datas()).is_some(),
        (dt, Some(2)) if dt.is_primitive() => typed::<u16>(&datas()).is_some(),
        (dt, Some(4)) if dt.is_primitive() => typed::<u32>(&datas()).is_some(),
        (dt, Some(8)) if dt.is_primitive() => typed::<u64>(&datas()).is_some(),
        (dt, Some(16)) if dt.is_primitive() => typed::<u128>(&datas()).is_some(),
        _ => false,
    }
}

/// The values at `locs` from `chunks` (all of type `dt`), null where nothing matched or
/// the source value is null. The caller has checked [`direct`].
pub fn gather(dt: &DataType, chunks: &[ArrayRef], locs: &[Loc]) -> Result<ArrayRef> {
    use DataType::*;
    let nulls = validity(chunks, locs);
    let data = match dt {
        Utf8 | Binary => bytes::<i32>(dt, chunks, locs)?,
        LargeUtf8 | LargeBinary => bytes::<i64>(dt, chunks, locs)?,
        _ => {
            let values = match dt.primitive_width() {
                Some(1) => fixed::<u8>(chunks, locs),
                Some(2) => fixed::<u16>(chunks, locs),
                Some(4) => fixed::<u32>(chunks, locs),
                Some(8) => fixed::<u64>(chunks, locs),
                Some(16) => fixed::<u128>(chunks, locs),
                _ => None,
            };
            let values = values.ok_or_else(|| {
                ArrowError::ComputeError(format!("pit_join: cannot gather {dt} directly"))
            })?;
            ArrayDataBuilder::new(dt.clone()).buffers(vec![values])
        }
    };
    let data = data.len(locs.len()).nulls(nulls);
    // SAFETY: the buffers were built for exactly `locs.len()` slots of type `dt`: one
    // value of the type's width per slot, or (for bytes) `len + 1` non-decreasing
    // offsets that end at the values buffer's length, each value a whole copy of a
    // value of a source array of the same type (so valid UTF-8 where `dt` is Utf8).
    // The null buffer, when present, has `len` bits.
    Ok(make_array(unsafe { data.build_unchecked() }))
}

/// The values of each chunk's data as a `&[T]` (offset applied), or None if a buffer
/// is not aligned for `T`.
fn typed<T: ArrowNativeType>(datas: &[ArrayData]) -> Option<Vec<&[T]>> {
    datas
        .iter()
        .map(|data| {
            let buf = data.buffers().first()?;
            // SAFETY: `align_to` never makes a misaligned or out-of-bounds `&[T]`, and
            // T (an unsigned integer here) is valid for any bit pattern; a buffer whose
            // start is not aligned (non-empty head) is refused.
            let (head, all, _) = unsafe { buf.as_slice().align_to::<T>() };
            if !head.is_empty() {
                return None;
            }
            all.get(data.offset()..data.offset() + data.len())
        })
        .collect()
}

/// How many slots ahead the gathers prefetch their random reads: far enough to hide a
/// cache miss behind the work on the slots in between.
const AHEAD: usize = 16;

/// Asks the CPU to start loading the cache line at `p` (a hint: never faults, may be
/// ignored; a no-op off x86_64).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault, whatever the address; SSE is
    // part of every x86_64 target.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn fixed<T: ArrowNativeType>(chunks: &[ArrayRef], locs: &[Loc]) -> Option<Buffer> {
    let datas: Vec<ArrayData> = chunks.iter().map(|c| c.to_data()).collect();
    let dummy = [T::default()];
    let mut src = typed::<T>(&datas)?;
    src.push(&dummy);
    let at = |l: &Loc| src[l.chunk as usize][l.row as usize..].as_ptr();
    let out: Vec<T> = locs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if let Some(ahead) = locs.get(i + AHEAD) {
                prefetch(at(ahead));
            }
            src[l.chunk as usize][l.row as usize]
        })
        .collect();
    Some(Buffer::from_vec(out))
}

/// Offsets and values of a `Utf8`/`Binary` (O = i32) or `Large` (O = i64) gather.
///
/// One pass writes both: each value's bytes are copied once, its end offset pushed.
/// The values buffer starts at the size the sources' average value length predicts
/// and grows (amortized doubling) when a skewed pick needs more. The bytes under a
/// null source value are copied as they are (usually none): the validity hides them.
fn bytes<O: OffsetSizeTrait>(
    dt: &DataType,
    chunks: &[ArrayRef],
    locs: &[Loc],
) -> Result<ArrayDataBuilder> {
    let mut src: Vec<(&[O], &[u8])> = chunks
        .iter()
        .map(|c| {
            let a = c.as_any();
            match dt {
                DataType::Utf8 | DataType::LargeUtf8 => {
                    let a = a
                        .downcast_ref::<arrow_array::GenericStringArray<O>>()
                        .expect("type checked");
                    (a.value_offsets(), a.value_data())
                }
                _ => {
                    let a = a
                        .downcast_ref::<arrow_array::GenericBinaryArray<O>>()
                        .expect("type checked");
                    (a.value_offsets(), a.value_data())
                }
            }
        })
        .collect();
    let empty = [O::zero(), O::zero()];
    src.push((&empty, &[]));
    // Short values are copied as one 16-byte block when the source has 16 bytes left
    // (the bytes past the value land in the slack or under the next value) instead of
    // a `memcpy` call per value.
    const WIDE: usize = 16;
    let (rows, bytes) = src.iter().fold((0usize, 0usize), |(r, b), (off, _)| {
        let used = off[off.len() - 1].as_usize() - off[0].as_usize();
        (r + off.len() - 1, b + used)
    });
    let guess = (bytes / rows.max(1)) * locs.len() + locs.len() / 8 + WIDE;
    let mut values: Vec<u8> = Vec::with_capacity(guess);
    let mut offsets: Vec<O> = Vec::with_capacity(locs.len() + 1);
    offsets.push(O::zero());
    let mut at = 0usize;
    for (i, l) in locs.iter().enumerate() {
        // Prefetch the offsets 2 * AHEAD slots ahead, and the value bytes AHEAD slots
        // ahead (their offsets prefetched AHEAD slots ago).
        if let Some(far) = locs.get(i + 2 * AHEAD) {
            prefetch(src[far.chunk as usize].0[far.row as usize..].as_ptr());
        }
        if let Some(near) = locs.get(i + AHEAD) {
            let (off, from) = src[near.chunk as usize];
            prefetch(
                from.as_ptr()
                    .wrapping_add(off[near.row as usize].as_usize()),
            );
        }
        let (off, from) = src[l.chunk as usize];
        let r = l.row as usize;
        let (a, b) = (off[r].as_usize(), off[r + 1].as_usize());
        let n = b - a;
        if at + n + WIDE > values.capacity() {
            // SAFETY: `0..at` is initialized (written below on earlier slots).
            unsafe { values.set_len(at) };
            values.reserve(n + WIDE);
        }
        let dst = values.as_mut_ptr().wrapping_add(at);
        if n <= WIDE && a + WIDE <= from.len() {
            let from = &from[a..a + WIDE];
            // SAFETY: `from` is WIDE readable bytes (bounds-checked); the destination
            // `at..at + WIDE` is within the capacity (`at + n + WIDE` is, checked
            // above) and does not overlap the source (a different allocation).
            unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), dst, WIDE) };
        } else {
            let from = &from[a..b];
            // SAFETY: as above, with `n` bytes.
            unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), dst, n) };
        }
        at += n;
        offsets.push(O::from_usize(at).ok_or_else(|| ArrowError::OffsetOverflowError(at))?);
    }
    // SAFETY: the bytes `0..at` were all written above (each value at its offset, the
    // values back to back), and `at` is within the capacity.
    unsafe { values.set_len(at) };
    // The offsets start at 0, never decrease and end at `at` = `values.len()`.
    Ok(ArrayDataBuilder::new(dt.clone())
        .buffers(vec![Buffer::from_vec(offsets), Buffer::from_vec(values)]))
}

/// Validity of the gathered slots: matched and valid at the source. None when all are.
fn validity(chunks: &[ArrayRef], locs: &[Loc]) -> Option<NullBuffer> {
    let mut nulls: Vec<Option<&NullBuffer>> = chunks
        .iter()
        .map(|c| c.nulls().filter(|n| n.null_count() > 0))
        .collect();
    let all_valid = nulls.iter().all(|n| n.is_none());
    let none = chunks.len() as u32;
    let bits = if all_valid {
        BooleanBuffer::collect_bool(locs.len(), |i| locs[i].chunk != none)
    } else {
        let dummy = NullBuffer::new_null(1);
        nulls.push(Some(&dummy));
        BooleanBuffer::collect_bool(locs.len(), |i| {
            let l = locs[i];
            nulls[l.chunk as usize].is_none_or(|n| n.is_valid(l.row as usize))
        })
    };
    Some(NullBuffer::new(bits)).filter(|n| n.null_count() > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, LargeStringArray, StringArray, UInt32Array};

    use super::*;

    /// The naive path: concatenate, then `take` with nullable indices.
    fn naive(chunks: &[ArrayRef], rows: &[u32]) -> ArrayRef {
        let refs: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
        let whole = arrow_select::concat::concat(&refs).unwrap();
        let idx: UInt32Array = rows.iter().map(|&r| (r != NO_ROW).then_some(r)).collect();
        arrow_select::take::take(&whole, &idx, None).unwrap()
    }

    fn check(chunks: Vec<ArrayRef>, rows: &[u32]) {
        let mut starts = Vec::new();
        let mut at = 0;
        for c in &chunks {
            starts.push(at);
            at += c.len();
        }
        assert!(direct(chunks[0].data_type(), &chunks));
        let got = gather(chunks[0].data_type(), &chunks, &locate(rows, &starts)).unwrap();
        assert_eq!(got.to_data(), naive(&chunks, rows).to_data());
    }

    #[test]
    fn matches_concat_and_take() {
        let long = "a string longer than sixteen bytes";
        let strs = StringArray::from(vec![Some("x"), None, Some(long), Some(""), Some("yz")]);
        let large = LargeStringArray::from(vec![Some(long), Some("q"), None]);
        let floats = Float64Array::from(vec![Some(1.5), None, Some(-2.0), Some(3.0)]);
        let rows = [4, NO_ROW, 2, 0, 1, 3, 3, NO_ROW];
        // strings: sliced chunks (non-zero offsets), an empty one, a short value last
        check(
            vec![
                Arc::new(strs.slice(1, 2)),
                Arc::new(strs.slice(0, 0)),
                Arc::new(strs.slice(2, 3)),
            ],
            &rows[..6],
        );
        check(
            vec![Arc::new(large.slice(0, 1)), Arc::new(large.slice(1, 2))],
            &[2, 1, 0, NO_ROW],
        );
        check(
            vec![Arc::new(floats.slice(0, 3)), Arc::new(floats.slice(3, 1))],
            &rows,
        );
        check(vec![Arc::new(floats.clone())], &[NO_ROW, NO_ROW]);
    }
}
