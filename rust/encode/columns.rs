//! Arrow columns to encoded keys and rows, and rows back to Arrow columns.
//!
//! Encoding works a block of rows at a time (the unit the writer parallelizes over),
//! column by column: a first pass sizes every row, a second writes each column's
//! values straight to their final offsets in one buffer, so every value is copied
//! once, from the Arrow buffer to the encoded row. Input columns arrive as the chunks
//! of a [`Column`]; each block reads zero-copy slices of them ([`Column::pieces`]).
//!
//! Decoding builds one Arrow array per requested column from validated rows
//! ([`RowView`]): one copy, from the LMDB page to the Arrow buffer.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{make_array, Array, ArrayRef, ArrowPrimitiveType, BooleanArray};
use arrow_buffer::{BooleanBufferBuilder, MutableBuffer, NullBuffer, ToByteSlice};
use arrow_data::ArrayData;
use arrow_schema::{DataType, TimeUnit};

use super::key;
use super::row::{RowLayout, RowView, Slot, Stamp, ValueType};
use crate::table::Column;

/// Encoded items (keys or rows) back to back: item `i` is `bytes[ends[i]..ends[i+1]]`.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// `ends[0] = 0`, one more entry than items.
    pub ends: Vec<usize>,
}

impl Encoded {
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.ends[i]..self.ends[i + 1]]
    }

    pub fn len(&self) -> usize {
        self.ends.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocates items of the given sizes (zeroed), returning their start offsets.
    fn with_sizes(sizes: &[usize]) -> Encoded {
        let mut ends = Vec::with_capacity(sizes.len() + 1);
        let mut total = 0;
        ends.push(0);
        for s in sizes {
            total += s;
            ends.push(total);
        }
        Encoded {
            bytes: vec![0u8; total],
            ends,
        }
    }
}

/// One key cell: integers widened to `i128` so every Arrow integer fits.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    Null,
    Int(i128),
    Str(&'a [u8]),
}

impl Cell<'_> {
    #[inline]
    fn encoded_len(&self) -> usize {
        match *self {
            Cell::Null => 0,
            Cell::Int(v) => key::int_bytes(v).1,
            Cell::Str(s) => key::str_header(s.len()).1 + s.len(),
        }
    }

    #[inline]
    fn write(&self, out: &mut [u8]) -> usize {
        match *self {
            Cell::Null => 0,
            Cell::Int(v) => {
                let (b, n) = key::int_bytes(v);
                out[..n].copy_from_slice(&b[..n]);
                n
            }
            Cell::Str(s) => {
                let (h, n) = key::str_header(s.len());
                out[..n].copy_from_slice(&h[..n]);
                out[n..n + s.len()].copy_from_slice(s);
                n + s.len()
            }
        }
    }
}

/// Calls `f(i, cell)` for every row of a key array (integers, strings, or Null type).
pub fn for_each_key_cell<'a>(arr: &'a dyn Array, mut f: impl FnMut(usize, Cell<'a>)) {
    fn ints<'a, T: ArrowPrimitiveType>(arr: &'a dyn Array, f: &mut impl FnMut(usize, Cell<'a>))
    where
        T::Native: Into<i128>,
    {
        let a = arr.as_primitive::<T>();
        let nulls = a.nulls();
        for (i, &v) in a.values().iter().enumerate() {
            if nulls.is_some_and(|n| n.is_null(i)) {
                f(i, Cell::Null)
            } else {
                f(i, Cell::Int(v.into()))
            }
        }
    }
    macro_rules! strs {
        ($a:expr) => {{
            let a = $a;
            for i in 0..a.len() {
                f(
                    i,
                    if a.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Str(a.value(i).as_bytes())
                    },
                )
            }
        }};
    }
    match arr.data_type() {
        DataType::Int8 => ints::<Int8Type>(arr, &mut f),
        DataType::Int16 => ints::<Int16Type>(arr, &mut f),
        DataType::Int32 => ints::<Int32Type>(arr, &mut f),
        DataType::Int64 => ints::<Int64Type>(arr, &mut f),
        DataType::UInt8 => ints::<UInt8Type>(arr, &mut f),
        DataType::UInt16 => ints::<UInt16Type>(arr, &mut f),
        DataType::UInt32 => ints::<UInt32Type>(arr, &mut f),
        DataType::UInt64 => ints::<UInt64Type>(arr, &mut f),
        DataType::Utf8 => strs!(arr.as_string::<i32>()),
        DataType::LargeUtf8 => strs!(arr.as_string::<i64>()),
        DataType::Utf8View => strs!(arr.as_string_view()),
        _ => (0..arr.len()).for_each(|i| f(i, Cell::Null)),
    }
}

/// The entity encodings of rows `[start, start + len)` of key columns `cols`, each
/// followed by `suffix` (a table id, or nothing). A row with a null in any key column
/// gets an empty encoding and `valid[i] = false`.
pub fn encode_keys(
    cols: &[Column],
    start: usize,
    len: usize,
    suffix: &[u8],
) -> (Encoded, Vec<bool>) {
    let mut sizes = vec![suffix.len(); len];
    let mut valid = vec![true; len];
    for col in cols {
        for (piece_start, chunk) in col.pieces(start, len) {
            let base = piece_start - start;
            for_each_key_cell(chunk.as_ref(), |i, cell| {
                if matches!(cell, Cell::Null) {
                    valid[base + i] = false;
                }
                sizes[base + i] += cell.encoded_len();
            });
        }
    }
    for (s, v) in sizes.iter_mut().zip(&valid) {
        if !v {
            *s = 0;
        }
    }
    let mut out = Encoded::with_sizes(&sizes);
    let mut at: Vec<usize> = out.ends[..len].to_vec();
    for col in cols {
        for (piece_start, chunk) in col.pieces(start, len) {
            let base = piece_start - start;
            for_each_key_cell(chunk.as_ref(), |i, cell| {
                let r = base + i;
                if valid[r] {
                    let end = out.ends[r + 1];
                    at[r] += cell.write(&mut out.bytes[at[r]..end]);
                }
            });
        }
    }
    if !suffix.is_empty() {
        for (r, _) in valid.iter().enumerate().filter(|(_, v)| **v) {
            let end = out.ends[r + 1];
            out.bytes[end - suffix.len()..end].copy_from_slice(suffix);
        }
    }
    (out, valid)
}

/// Encodes rows `[start, start + len)`: `cols[j]` is layout column `j`, already of
/// the layout's stored Arrow type; `stamps` is indexed by global row; `keys` holds
/// the rows' LMDB keys (item `i` for row `start + i`), which their checksums cover.
pub fn encode_rows(
    layout: &RowLayout,
    cols: &[Column],
    stamps: &[Stamp],
    start: usize,
    len: usize,
    keys: &Encoded,
) -> Encoded {
    assert_eq!(cols.len(), layout.n_columns());
    assert_eq!(keys.len(), len, "one key per row");
    let mut var_len = vec![0usize; len];
    for (col, slot) in cols.iter().zip(&layout.slots) {
        if let Slot::Var { .. } = slot {
            for (piece_start, chunk) in col.pieces(start, len) {
                let base = piece_start - start;
                for_each_var(chunk.as_ref(), |i, v| var_len[base + i] += v.len());
            }
        }
    }
    let sizes: Vec<usize> = var_len.iter().map(|&v| layout.row_len(v)).collect();
    let mut out = Encoded::with_sizes(&sizes);
    for r in 0..len {
        let (s, e) = (out.ends[r], out.ends[r + 1]);
        layout.write_header(&mut out.bytes[s..e], stamps[start + r]);
    }
    let mut var_end = vec![0u32; len];
    for (j, (col, slot)) in cols.iter().zip(&layout.slots).enumerate() {
        for (piece_start, chunk) in col.pieces(start, len) {
            let base = piece_start - start;
            let chunk = chunk.as_ref();
            if let Some(nulls) = chunk.logical_nulls() {
                for i in nulls.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
                    let r = base + i;
                    let (s, e) = (out.ends[r], out.ends[r + 1]);
                    layout.set_null(&mut out.bytes[s..e], j);
                }
            }
            match *slot {
                Slot::Fixed { offset, width } => {
                    write_fixed(chunk, width, |i, bytes| {
                        let at = out.ends[base + i] + offset;
                        out.bytes[at..at + width].copy_from_slice(bytes);
                    });
                }
                Slot::Var { index } => {
                    for_each_var(chunk, |i, v| {
                        let r = base + i;
                        let at = out.ends[r] + layout.data_start + var_end[r] as usize;
                        out.bytes[at..at + v.len()].copy_from_slice(v);
                        var_end[r] += v.len() as u32;
                        let (s, e) = (out.ends[r], out.ends[r + 1]);
                        layout.write_var_end(&mut out.bytes[s..e], index, var_end[r]);
                    });
                    // Nulls have no bytes but still need their end recorded.
                    if chunk.null_count() > 0 {
                        for i in 0..chunk.len() {
                            if chunk.is_null(i) {
                                let r = base + i;
                                let (s, e) = (out.ends[r], out.ends[r + 1]);
                                layout.write_var_end(&mut out.bytes[s..e], index, var_end[r]);
                            }
                        }
                    }
                }
            }
        }
    }
    for r in 0..len {
        let (s, e) = (out.ends[r], out.ends[r + 1]);
        layout.seal(&[keys.get(r)], &mut out.bytes[s..e]);
    }
    out
}

/// Calls `f(i, bytes)` for each non-null value of a Utf8 or Binary array.
fn for_each_var<'a>(arr: &'a dyn Array, mut f: impl FnMut(usize, &'a [u8])) {
    match arr.data_type() {
        DataType::Utf8 => {
            let a = arr.as_string::<i32>();
            for i in 0..a.len() {
                if a.is_valid(i) {
                    f(i, a.value(i).as_bytes())
                }
            }
        }
        DataType::Binary => {
            let a = arr.as_binary::<i32>();
            for i in 0..a.len() {
                if a.is_valid(i) {
                    f(i, a.value(i))
                }
            }
        }
        dt => unreachable!("stored variable-width types are Utf8 and Binary, not {dt}"),
    }
}

/// Calls `f(i, little-endian bytes)` for each value (nulls included: their bytes are
/// whatever Arrow holds, and the bitmap marks them) of a fixed-width array.
fn write_fixed(arr: &dyn Array, width: usize, mut f: impl FnMut(usize, &[u8])) {
    fn prim<T: ArrowPrimitiveType>(
        arr: &dyn Array,
        width: usize,
        f: &mut impl FnMut(usize, &[u8]),
    ) {
        let raw = arr.as_primitive::<T>().values().to_byte_slice();
        for (i, v) in raw.chunks_exact(width).enumerate() {
            f(i, v)
        }
    }
    match arr.data_type() {
        DataType::Boolean => {
            let a: &BooleanArray = arr.as_boolean();
            for i in 0..a.len() {
                f(i, &[a.value(i) as u8])
            }
        }
        DataType::Int8 => prim::<Int8Type>(arr, width, &mut f),
        DataType::Int16 => prim::<Int16Type>(arr, width, &mut f),
        DataType::Int32 => prim::<Int32Type>(arr, width, &mut f),
        DataType::Int64 => prim::<Int64Type>(arr, width, &mut f),
        DataType::UInt8 => prim::<UInt8Type>(arr, width, &mut f),
        DataType::UInt16 => prim::<UInt16Type>(arr, width, &mut f),
        DataType::UInt32 => prim::<UInt32Type>(arr, width, &mut f),
        DataType::UInt64 => prim::<UInt64Type>(arr, width, &mut f),
        DataType::Float32 => prim::<Float32Type>(arr, width, &mut f),
        DataType::Float64 => prim::<Float64Type>(arr, width, &mut f),
        DataType::Date32 => prim::<Date32Type>(arr, width, &mut f),
        DataType::Date64 => prim::<Date64Type>(arr, width, &mut f),
        DataType::Timestamp(TimeUnit::Second, _) => prim::<TimestampSecondType>(arr, width, &mut f),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            prim::<TimestampMillisecondType>(arr, width, &mut f)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            prim::<TimestampMicrosecondType>(arr, width, &mut f)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            prim::<TimestampNanosecondType>(arr, width, &mut f)
        }
        dt => unreachable!("not a stored fixed-width type: {dt}"),
    }
}

/// Builds column `col` (of stored type `dt`) from rows in output order; `None` rows
/// (missing, expired) are nulls. Errors name a row whose bytes are not valid UTF-8.
pub fn decode_column(
    layout: &RowLayout,
    col: usize,
    dt: &DataType,
    rows: &[Option<RowView<'_>>],
) -> Result<ArrayRef, String> {
    let n = rows.len();
    let mut validity = BooleanBufferBuilder::new(n);
    for r in rows {
        validity.append(r.is_some_and(|r| !r.is_null(col)));
    }
    let nulls = NullBuffer::new(validity.finish());
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    match layout.types[col] {
        ValueType::Bool => {
            let mut values = BooleanBufferBuilder::new(n);
            for r in rows {
                values.append(r.is_some_and(|r| r.value(col)[0] != 0));
            }
            Ok(Arc::new(BooleanArray::new(values.finish(), nulls)))
        }
        ValueType::Utf8 | ValueType::Binary => {
            let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
            let mut data = Vec::new();
            offsets.push(0);
            for (i, r) in rows.iter().enumerate() {
                if let Some(r) = r {
                    let v = r.value(col);
                    if layout.types[col] == ValueType::Utf8 && std::str::from_utf8(v).is_err() {
                        return Err(format!("row {i} has a string that is not UTF-8"));
                    }
                    data.extend_from_slice(v);
                }
                let end = i32::try_from(data.len())
                    .map_err(|_| "more than 2 GiB of strings in one read".to_string())?;
                offsets.push(end);
            }
            let array = ArrayData::builder(dt.clone())
                .len(n)
                .add_buffer(arrow_buffer::Buffer::from_vec(offsets))
                .add_buffer(arrow_buffer::Buffer::from_vec(data))
                .nulls(nulls)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(make_array(array))
        }
        t => {
            let width = t.width().expect("fixed-width");
            let mut buf = MutableBuffer::from_len_zeroed(n * width);
            let out = buf.as_slice_mut();
            for (i, r) in rows.iter().enumerate() {
                if let Some(r) = r {
                    out[i * width..(i + 1) * width].copy_from_slice(r.value(col));
                }
            }
            let array = ArrayData::builder(dt.clone())
                .len(n)
                .add_buffer(buf.into())
                .nulls(nulls)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(make_array(array))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        BinaryArray, Float32Array, Int16Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray, UInt64Array,
    };
    use arrow_schema::{Field, Schema};

    use crate::encode::key::{decode, Part};
    use crate::table::Table;

    fn column(arrays: Vec<ArrayRef>) -> Column {
        let fields = vec![Field::new("c", arrays[0].data_type().clone(), true)];
        let schema = Arc::new(Schema::new(fields));
        let batches = arrays
            .into_iter()
            .map(|a| RecordBatch::try_new(Arc::clone(&schema), vec![a]).unwrap())
            .collect();
        Table::new("t", schema, batches)
            .column("c", "test")
            .unwrap()
    }

    #[test]
    fn keys_from_chunked_composite_columns() {
        let a = column(vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(12), None])),
            Arc::new(Int64Array::from(vec![-5])),
        ]);
        let b = column(vec![
            Arc::new(StringArray::from(vec!["23", "3"])),
            Arc::new(StringArray::from(vec![Some("x"), Some("")])),
        ]);
        let (enc, valid) = encode_keys(&[a, b], 0, 4, &[0, 0, 0, 9]);
        assert_eq!(valid, vec![true, true, false, true]);
        let strip = |i: usize| enc.get(i)[..enc.get(i).len() - 4].to_vec();
        assert_eq!(
            decode(&strip(0)).unwrap(),
            vec![Part::Int(1), Part::Str(b"23")]
        );
        assert_eq!(
            decode(&strip(1)).unwrap(),
            vec![Part::Int(12), Part::Str(b"3")]
        );
        assert!(enc.get(2).is_empty());
        assert_eq!(
            decode(&strip(3)).unwrap(),
            vec![Part::Int(-5), Part::Str(b"")]
        );
        assert_eq!(&enc.get(3)[enc.get(3).len() - 4..], &[0, 0, 0, 9]);
        // A block in the middle.
        let (mid, _) = encode_keys(
            &[column(vec![Arc::new(UInt64Array::from(vec![
                1,
                u64::MAX,
                3,
            ]))])],
            1,
            2,
            &[],
        );
        assert_eq!(
            decode(mid.get(0)).unwrap(),
            vec![Part::Int(u64::MAX as i128)]
        );
        assert_eq!(decode(mid.get(1)).unwrap(), vec![Part::Int(3)]);
    }

    #[test]
    fn rows_round_trip_through_arrow() {
        let f = column(vec![
            Arc::new(Float32Array::from(vec![Some(1.5), None])),
            Arc::new(Float32Array::from(vec![Some(-2.0)])),
        ]);
        let s = column(vec![Arc::new(StringArray::from(vec![
            Some("héllo"),
            Some(""),
            None,
        ]))]);
        let i = column(vec![Arc::new(Int16Array::from(vec![
            Some(7),
            None,
            Some(-3),
        ]))]);
        let b = column(vec![Arc::new(BinaryArray::from(vec![
            Some(&b"\x00\x01"[..]),
            None,
            Some(&b"z"[..]),
        ]))]);
        let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let t = column(vec![Arc::new(
            TimestampMicrosecondArray::from(vec![Some(5), Some(6), None]).with_timezone("UTC"),
        )]);
        let types = vec![
            ValueType::F32,
            ValueType::Utf8,
            ValueType::I16,
            ValueType::Binary,
            ValueType::Timestamp(TimeUnit::Microsecond),
        ];
        let layout = RowLayout::new(1, types);
        let stamps = vec![
            Stamp {
                event: 10,
                created: 0,
            },
            Stamp {
                event: 20,
                created: 1,
            },
            Stamp {
                event: 30,
                created: 2,
            },
        ];
        let cols = [f, s, i, b, t];
        let keys = Encoded {
            bytes: b"k0k1k2".to_vec(),
            ends: vec![0, 2, 4, 6],
        };
        let enc = encode_rows(&layout, &cols, &stamps, 0, 3, &keys);
        // Same bytes as the row-at-a-time reference encoder.
        let one = 1.5f32.to_le_bytes();
        let seven = 7i16.to_le_bytes();
        let five = 5i64.to_le_bytes();
        let want0 = layout.encode(
            &[b"k0"],
            stamps[0],
            &[
                Some(&one),
                Some("héllo".as_bytes()),
                Some(&seven),
                Some(b"\x00\x01"),
                Some(&five),
            ],
        );
        assert_eq!(enc.get(0), &want0[..]);
        let views: Vec<Option<RowView>> = (0..3)
            .map(|r| Some(RowView::parse(&layout, &[keys.get(r)], enc.get(r)).unwrap()))
            .chain([None])
            .collect();
        assert_eq!(views[1].unwrap().stamp(), stamps[1]);
        let dts = [
            DataType::Float32,
            DataType::Utf8,
            DataType::Int16,
            DataType::Binary,
            ts_type,
        ];
        let got: Vec<ArrayRef> = (0..5)
            .map(|c| decode_column(&layout, c, &dts[c], &views).unwrap())
            .collect();
        let want: Vec<ArrayRef> = vec![
            Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-2.0), None])),
            Arc::new(StringArray::from(vec![Some("héllo"), Some(""), None, None])),
            Arc::new(Int16Array::from(vec![Some(7), None, Some(-3), None])),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\x01"[..]),
                None,
                Some(&b"z"[..]),
                None,
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(5), Some(6), None, None])
                    .with_timezone("UTC"),
            ),
        ];
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.as_ref(), w.as_ref());
        }
    }
}
