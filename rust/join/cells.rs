//! Short strings gathered as 16-byte cells: one random read per value instead of two.
//!
//! A byte-array column (Utf8, Binary and their large forms) read at random costs two
//! dependent cache misses per value: its offsets, then its bytes ([`super::take`]
//! overlaps them as best it can). When every value of a feature column is at most 15
//! bytes long (categories, codes, short ids: most string features), [`cells`] first
//! rewrites the column, sequentially, as one 16-byte cell per row: the value's bytes,
//! zero padding, and in the last byte its length and whether it is valid. For a
//! feature table in several batches this copy replaces the one it needed anyway to
//! become one array ([`super::concat`]); for one in a single batch it is an added
//! sequential pass. [`take`] then gathers, per block of 512 output rows, the
//! block's cells (one independent random read each, so many are in flight at once),
//! and writes the block's values, offsets and validity in one sequential pass.
//!
//! Cost: 16 bytes per source row while the column is gathered (on huge pages from
//! 32 MiB: the reads are random), one sequential pass to build it, one random read per
//! output row. A column with a longer value, or smaller than 65,536 rows (it fits in
//! the cache, where two reads cost little), is left to [`super::take`].

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use arrow_array::{Array, ArrayRef, GenericByteArray, OffsetSizeTrait};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, Buffer, NullBuffer};
use arrow_schema::{ArrowError, DataType};

use std::ops::Range;

use crate::error::Result;

/// The longest value a cell holds.
const MAX_LEN: usize = 15;

/// The flag in a cell's last byte (beside the length) marking a valid value.
const VALID: u8 = 0x80;

/// Smaller columns are left to [`super::take`].
const MIN_ROWS: usize = 1 << 16;

/// Output rows per block of [`take`].
const BLOCK: usize = 512;

/// A byte-array column as 16-byte cells, one per row.
pub struct Cells {
    data_type: DataType,
    cells: Buffer,
}

/// The chunks of a byte-array column as cells; None for other types, fewer than
/// [`MIN_ROWS`] rows, or a value longer than [`MAX_LEN`] bytes.
pub fn cells(chunks: &[&dyn Array]) -> Option<Cells> {
    let dt = chunks.first()?.data_type();
    if chunks.iter().any(|c| c.data_type() != dt) {
        return None;
    }
    let cells = match dt {
        DataType::Utf8 => build::<Utf8Type>(chunks),
        DataType::LargeUtf8 => build::<LargeUtf8Type>(chunks),
        DataType::Binary => build::<BinaryType>(chunks),
        DataType::LargeBinary => build::<LargeBinaryType>(chunks),
        _ => None,
    }?;
    Some(Cells {
        data_type: dt.clone(),
        cells,
    })
}

fn build<T: ByteArrayType>(chunks: &[&dyn Array]) -> Option<Buffer> {
    let arrays: Vec<&GenericByteArray<T>> = chunks.iter().map(|c| c.as_bytes::<T>()).collect();
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    if rows < MIN_ROWS || !arrays.iter().all(|a| short(*a)) {
        return None;
    }
    Some(crate::huge::buffer(rows * 16, |out| {
        let mut cells = out.chunks_exact_mut(16);
        for a in &arrays {
            for (i, c) in (0..a.len()).zip(&mut cells) {
                c.copy_from_slice(&cell(a, i).to_le_bytes());
            }
        }
    }))
}

/// Whether every value of `a` fits in a cell.
pub fn short<T: ByteArrayType>(a: &GenericByteArray<T>) -> bool {
    let o = a.value_offsets();
    o.windows(2).all(|w| (w[1] - w[0]).as_usize() <= MAX_LEN)
}

/// Whether every value of the byte-array column `chunks` fits in a cell (false for
/// other types).
pub fn all_short(chunks: &[&dyn Array]) -> bool {
    fn of<T: ByteArrayType>(chunks: &[&dyn Array]) -> bool {
        chunks.iter().all(|c| short(c.as_bytes::<T>()))
    }
    match chunks.first().map(|c| c.data_type()) {
        _ if chunks
            .windows(2)
            .any(|w| w[0].data_type() != w[1].data_type()) =>
        {
            false
        }
        Some(DataType::Utf8) => of::<Utf8Type>(chunks),
        Some(DataType::LargeUtf8) => of::<LargeUtf8Type>(chunks),
        Some(DataType::Binary) => of::<BinaryType>(chunks),
        Some(DataType::LargeBinary) => of::<LargeBinaryType>(chunks),
        _ => false,
    }
}

/// Row `i` of `a` (at most [`MAX_LEN`] bytes, see [`short`]) as a cell: its bytes,
/// zero padding, and in the last byte its length and [`VALID`] if it is not null.
#[inline]
pub fn cell<T: ByteArrayType>(a: &GenericByteArray<T>, i: usize) -> u128 {
    let (offsets, data) = (a.value_offsets(), a.value_data());
    let (s, e) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
    let len = e - s; // at most 15 (short)
    let bytes = match data.get(s..s + 16) {
        // One 16-byte read, the bytes past the value masked off.
        Some(raw) => {
            let raw = u128::from_le_bytes(raw.try_into().expect("16 bytes"));
            raw & ((1u128 << (8 * len)) - 1)
        }
        None => {
            let mut v = [0u8; 16];
            v[..len].copy_from_slice(&data[s..e]);
            u128::from_le_bytes(v)
        }
    };
    let tag = len as u8 | if a.is_valid(i) { VALID } else { 0 };
    bytes | (tag as u128) << 120
}

/// Writes the cells of rows `rows` of byte-array column `a` (all values short) into
/// `out`, one per `stride` bytes starting at byte `at`.
pub fn write_cells(a: &dyn Array, rows: Range<usize>, out: &mut [u8], stride: usize, at: usize) {
    fn of<T: ByteArrayType>(
        a: &dyn Array,
        rows: Range<usize>,
        out: &mut [u8],
        s: usize,
        at: usize,
    ) {
        let a = a.as_bytes::<T>();
        for (i, row) in rows.zip(out.chunks_exact_mut(s)) {
            row[at..at + 16].copy_from_slice(&cell(a, i).to_le_bytes());
        }
    }
    match a.data_type() {
        DataType::Utf8 => of::<Utf8Type>(a, rows, out, stride, at),
        DataType::LargeUtf8 => of::<LargeUtf8Type>(a, rows, out, stride, at),
        DataType::Binary => of::<BinaryType>(a, rows, out, stride, at),
        _ => of::<LargeBinaryType>(a, rows, out, stride, at),
    }
}

impl Cells {
    /// The column at `idx` (every index in range), null where `matched` says no row
    /// matched or the value is null.
    pub fn take(&self, idx: &[u32], matched: Option<&NullBuffer>) -> Result<ArrayRef> {
        match self.data_type {
            DataType::Utf8 => self.take_as::<Utf8Type>(idx, matched),
            DataType::LargeUtf8 => self.take_as::<LargeUtf8Type>(idx, matched),
            DataType::Binary => self.take_as::<BinaryType>(idx, matched),
            _ => self.take_as::<LargeBinaryType>(idx, matched),
        }
    }

    fn take_as<T: ByteArrayType>(
        &self,
        idx: &[u32],
        matched: Option<&NullBuffer>,
    ) -> Result<ArrayRef> {
        let src: &[[u8; 16]] = self.cells.as_slice().as_chunks().0;
        // Row `r` is read as `min(r, last)`: the indices come from the probe and are in
        // range (debug builds assert it), and the clamp keeps a bad one inside the
        // column. (The compiler still emits a bounds check; it never fails.)
        let last = src.len() - 1;
        let mut sink = Sink::<T::Offset>::new(idx.len());
        let mut block = [0u128; BLOCK];
        for (b, rows) in idx.chunks(BLOCK).enumerate() {
            // The block's cells: independent random reads.
            for (cell, &r) in block.iter_mut().zip(rows) {
                debug_assert!(r as usize <= last, "take index {r} past the source's end");
                *cell = u128::from_le_bytes(src[(r as usize).min(last)]);
            }
            // Their values, offsets and validity: one sequential pass.
            sink.push(block[..rows.len()].iter().copied(), matched, b * BLOCK)?;
        }
        Ok(sink.finish(&self.data_type))
    }
}

/// A byte-array column built from cells, in order: values, offsets and validity.
pub struct Sink<O: OffsetSizeTrait> {
    values: Vec<u8>,
    offsets: Vec<O>,
    valid: Vec<bool>,
}

impl<O: OffsetSizeTrait> Sink<O> {
    pub fn new(n: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(O::usize_as(0));
        Self {
            values: Vec::with_capacity(n * 12 + 16),
            offsets,
            valid: Vec::with_capacity(n),
        }
    }

    /// Appends `cells`, output rows `first..`: null where `matched` says no row
    /// matched or the cell is not valid.
    pub fn push(
        &mut self,
        cells: impl ExactSizeIterator<Item = u128>,
        matched: Option<&NullBuffer>,
        first: usize,
    ) -> Result<()> {
        self.values.reserve(cells.len() * 16);
        let (dst, mut at) = (self.values.as_mut_ptr(), self.values.len());
        for (k, cell) in cells.enumerate() {
            let tag = (cell >> 120) as u8;
            let ok = tag & VALID != 0 && matched.is_none_or(|m| m.is_valid(first + k));
            // SAFETY: the reservation above leaves room for 16 bytes per cell past the
            // values already written, and `at` grows by at most 15 per cell. The bytes
            // past the value's length (the rest of the cell) are overwritten by the
            // next value or lie past the final length.
            unsafe { std::ptr::write_unaligned(dst.add(at) as *mut [u8; 16], cell.to_le_bytes()) };
            at += if ok { (tag & 0x0f) as usize } else { 0 };
            self.offsets.push(O::usize_as(at));
            self.valid.push(ok);
        }
        O::from_usize(at).ok_or(ArrowError::OffsetOverflowError(O::MAX_OFFSET))?;
        // SAFETY: every byte of the new values was written above.
        unsafe { self.values.set_len(at) };
        Ok(())
    }

    /// The column, of byte-array type `dt` (whose offsets are `O`, and which the
    /// cells were made from).
    pub fn finish(self, dt: &DataType) -> ArrayRef {
        let n = self.valid.len();
        let nulls = Some(NullBuffer::new(BooleanBuffer::collect_bool(n, |i| {
            self.valid[i]
        })))
        .filter(|v| v.null_count() > 0);
        let data = arrow_data::ArrayDataBuilder::new(dt.clone())
            .len(n)
            .buffers(vec![
                Buffer::from_vec(self.offsets),
                Buffer::from_vec(self.values),
            ])
            .nulls(nulls);
        // SAFETY: the offsets start at 0 and never decrease, and the last is
        // `values.len()`; each value is a copy of one value of a valid array of type
        // `dt` (UTF-8 for strings), or empty; `nulls` has one bit per row.
        arrow_array::make_array(unsafe { data.build_unchecked() })
    }
}

/// Short values for tests: empty, one byte, multi-byte UTF-8, exactly [`MAX_LEN`]
/// bytes, a typical category.
#[cfg(test)]
pub(super) const SHORT: [&str; 5] = [
    "",
    "a",
    "h\u{e9}llo \u{4e2d}",
    "exactly fifteen",
    "category_07",
];

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, LargeBinaryArray, LargeStringArray, StringArray, UInt32Array};
    use std::sync::Arc;

    fn values(n: usize) -> Vec<Option<String>> {
        (0..n)
            .map(|i| (i % 11 != 3).then(|| SHORT[(i * 7) % SHORT.len()].to_string()))
            .collect()
    }

    fn check(chunks: &[ArrayRef]) {
        let parts: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
        let whole = arrow_select::concat::concat(&parts).unwrap();
        let cells = cells(&parts).expect("short values");
        assert_eq!(cells.cells.len(), 16 * whole.len());
        // Spread over the column, and its last rows (built from the end of the data
        // buffer, where 16 bytes cannot be read at once).
        let len = whole.len() as u32;
        let idx: Vec<u32> = (0..3 * BLOCK as u32 + 9)
            .map(|i| (i * 7919) % len)
            .chain((len.saturating_sub(20)..len).rev())
            .collect();
        let matched = NullBuffer::from_iter((0..idx.len()).map(|i| i % 5 != 1));
        for m in [None, Some(&matched)] {
            let got = cells.take(&idx, m).unwrap();
            let want =
                arrow_select::take::take(&whole, &UInt32Array::from(idx.clone()), None).unwrap();
            got.to_data().validate_full().unwrap();
            let want_nulls = NullBuffer::union(want.nulls(), m);
            assert_eq!(got.nulls(), want_nulls.as_ref());
            for i in (0..got.len()).filter(|&i| got.is_valid(i)) {
                assert_eq!(
                    arrow_cast::display::array_value_to_string(&got, i).unwrap(),
                    arrow_cast::display::array_value_to_string(&want, i).unwrap()
                );
            }
        }
    }

    #[test]
    fn matches_arrow_take_across_chunks_types_nulls_and_masks() {
        let v = values(MIN_ROWS + 10_000);
        let strings: ArrayRef = Arc::new(StringArray::from(v.clone()));
        // Three chunks, one of them sliced.
        check(&[
            strings.slice(0, 30_000),
            strings.slice(30_000, 5),
            strings.slice(30_005, 40_000),
        ]);
        check(&[Arc::new(LargeStringArray::from(v.clone())) as ArrayRef]);
        let bytes: Vec<Option<&[u8]>> = v.iter().map(|s| s.as_deref().map(str::as_bytes)).collect();
        check(&[Arc::new(BinaryArray::from(bytes.clone())) as ArrayRef]);
        check(&[Arc::new(LargeBinaryArray::from(bytes)) as ArrayRef]);
        // Null slots with bytes under them (up to 15 are taken, and read as null).
        let under = StringArray::from(vec!["abc"; MIN_ROWS + 5]);
        let nulls = NullBuffer::from_iter((0..under.len()).map(|i| i % 3 != 0));
        let (offsets, data, _) = under.into_parts();
        check(&[Arc::new(StringArray::new(offsets, data, Some(nulls))) as ArrayRef]);
    }

    #[test]
    fn declines_long_values_small_columns_and_other_types() {
        let mut v = values(MIN_ROWS + 10);
        let short: ArrayRef = Arc::new(StringArray::from(v.clone()));
        assert!(cells(&[short.slice(0, MIN_ROWS - 1).as_ref()]).is_none());
        v[70] = Some("sixteen bytes!!!".to_string());
        let long: ArrayRef = Arc::new(StringArray::from(v));
        assert!(cells(&[long.as_ref()]).is_none());
        let ints: ArrayRef = Arc::new(UInt32Array::from(vec![1u32; MIN_ROWS]));
        assert!(cells(&[ints.as_ref()]).is_none());
    }
}
