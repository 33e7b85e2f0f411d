//! Feature rows as bytes: one LMDB value per (entity, table).
//!
//! ```text
//! offset 0   u8       row format (ROW_FORMAT)
//!        1   u32 LE   schema version the row was written with
//!        5   i64 LE   event time, ns since the Unix epoch (UTC)
//!        13  i64 LE   created time, ns (0 when the writer gave none)
//!        21  bitmap   one bit per column, 1 = null (ceil(columns / 8) bytes)
//!            fixed    each fixed-width column at a position the schema decides,
//!                     little-endian (zeros when null)
//!            ends     u32 LE per variable-width column: end of its bytes in `data`
//!            data     the variable-width columns' bytes, in column order
//!            checksum u32 LE: CRC-32C of the row's LMDB key, then of every row byte
//!                     before this one
//! ```
//! A row with 64 KiB or more of variable-width data (an aggregation state of a busy
//! entity) is written in format 3 instead: the same layout with its data checksummed
//! in 4 KiB segments, so a reader checks only the part it reads ([`super::segments`]).
//!
//! Every fixed-width value sits at an offset known from the schema alone, so reading
//! column j of a row is one bounds-checked load, whatever else the row holds; a
//! string costs two loads. The writer compares (event time, created time) from the
//! 21-byte header without looking further. A row of 20 `float32` features is
//! 21 + 3 + 80 + 4 = 108 bytes.
//!
//! **Checksum.** LMDB keeps no checksums, so a damaged page can hold a plausible row
//! that is wrong. Every row ends with a CRC-32C ([`super::crc`]) over its key and its
//! bytes, checked whenever a row is read ([`RowView::parse`], [`stamp`]): flipped
//! bits, a page overwritten with other data, or a valid row moved under another key
//! (another entity or table) all fail it. Cost: one CRC over ~120 bytes, ~15 ns with
//! SSE4.2, next to the ~2 µs B-tree descent each entity costs.
//!
//! Decoding never trusts the bytes: [`RowView::parse`] checks the format, the
//! checksum, the schema version, the exact length and that the variable-width ends
//! ascend, once per row, after which every accessor is in bounds by construction.
//! Arbitrary bytes give an error, never a panic (a property test below feeds it
//! garbage).

use std::ops::Range;

use arrow_schema::{DataType, TimeUnit};

use super::crc::{crc32c_append, crc32c_parts};
use super::segments::{self, Segments, ROW_FORMAT_SEGMENTED};

/// The row format byte: bump it when the layout above changes.
pub const ROW_FORMAT: u8 = 2;
/// Bytes before the null bitmap.
pub const HEADER_LEN: usize = 21;
/// Bytes of the checksum that ends every row.
pub const CHECKSUM_LEN: usize = 4;

/// How a column's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    /// Days since the epoch (Arrow `Date32`).
    Date32,
    /// Milliseconds since the epoch (Arrow `Date64`).
    Date64,
    /// A timestamp in the column's unit (the zone lives in the schema).
    Timestamp(TimeUnit),
    Utf8,
    Binary,
}

impl ValueType {
    /// The storage type of an Arrow type, None if features cannot have that type.
    /// `LargeUtf8`/`Utf8View` store as `Utf8`, `LargeBinary`/`BinaryView` as `Binary`.
    pub fn of(dt: &DataType) -> Option<ValueType> {
        Some(match dt {
            DataType::Boolean => ValueType::Bool,
            DataType::Int8 => ValueType::I8,
            DataType::Int16 => ValueType::I16,
            DataType::Int32 => ValueType::I32,
            DataType::Int64 => ValueType::I64,
            DataType::UInt8 => ValueType::U8,
            DataType::UInt16 => ValueType::U16,
            DataType::UInt32 => ValueType::U32,
            DataType::UInt64 => ValueType::U64,
            DataType::Float32 => ValueType::F32,
            DataType::Float64 => ValueType::F64,
            DataType::Date32 => ValueType::Date32,
            DataType::Date64 => ValueType::Date64,
            DataType::Timestamp(u, _) => ValueType::Timestamp(*u),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueType::Utf8,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ValueType::Binary,
            _ => return None,
        })
    }

    /// Bytes of a fixed-width value; None for variable-width types.
    pub fn width(self) -> Option<usize> {
        Some(match self {
            ValueType::Bool | ValueType::I8 | ValueType::U8 => 1,
            ValueType::I16 | ValueType::U16 => 2,
            ValueType::I32 | ValueType::U32 | ValueType::F32 | ValueType::Date32 => 4,
            ValueType::I64
            | ValueType::U64
            | ValueType::F64
            | ValueType::Date64
            | ValueType::Timestamp(_) => 8,
            ValueType::Utf8 | ValueType::Binary => return None,
        })
    }

    /// Whether the value converts to a float for a model input (numbers and booleans).
    pub fn is_numeric(self) -> bool {
        !matches!(
            self,
            ValueType::Utf8
                | ValueType::Binary
                | ValueType::Date32
                | ValueType::Date64
                | ValueType::Timestamp(_)
        )
    }
}

/// Where a column lives in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Bytes `[offset, offset + width)` of the row.
    Fixed { offset: usize, width: usize },
    /// The `index`-th variable-width column.
    Var { index: usize },
}

/// The byte layout of a table's rows, computed once from its schema.
#[derive(Clone, Debug)]
pub struct RowLayout {
    pub schema_version: u32,
    pub types: Vec<ValueType>,
    /// One per column, in schema order.
    pub slots: Vec<Slot>,
    pub bitmap_len: usize,
    /// Offset of the first variable-width end (after the fixed area).
    pub ends_start: usize,
    pub n_var: usize,
    /// Offset of the variable-width data: the length of a row with no var bytes.
    pub data_start: usize,
}

/// The (event time, created time) of a row: what decides which row wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub event: i64,
    pub created: i64,
}

/// Why some bytes are not a row of this layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowDecodeError {
    Format(u8),
    SchemaVersion { found: u32, expected: u32 },
    Length { found: usize, expected: usize },
    Truncated(usize),
    VarEnds,
    Checksum,
}

impl std::fmt::Display for RowDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowDecodeError::Format(b) => write!(f, "unknown row format {b}"),
            RowDecodeError::SchemaVersion { found, expected } => {
                write!(
                    f,
                    "row has schema version {found}, the table has {expected}"
                )
            }
            RowDecodeError::Length { found, expected } => {
                write!(f, "row has {found} bytes, its layout says {expected}")
            }
            RowDecodeError::Truncated(n) => {
                write!(f, "row of {n} bytes is shorter than its header")
            }
            RowDecodeError::VarEnds => write!(f, "row's variable-width offsets do not ascend"),
            RowDecodeError::Checksum => write!(
                f,
                "row's checksum does not match its key and bytes (damaged, or moved under \
                 another key)"
            ),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The checksum of a row whose LMDB key is the concatenation of `key` (the full
/// key, or the entity encoding and the big-endian table id) and whose bytes before
/// the checksum are `body`.
#[inline]
pub fn checksum(key: &[&[u8]], body: &[u8]) -> u32 {
    match key {
        [k] => crc32c_parts(&[k, body]),
        [a, b] => crc32c_parts(&[a, b, body]),
        _ => crc32c_append(crc32c_parts(key), body),
    }
}

/// Writes the checksum into the last [`CHECKSUM_LEN`] bytes of `row`, stored under
/// `key` (see [`checksum`]).
#[inline]
pub fn seal(key: &[&[u8]], row: &mut [u8]) {
    let at = row.len() - CHECKSUM_LEN;
    let crc = checksum(key, &row[..at]);
    row[at..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the format byte and the checksum of a row stored under `key` (all that can
/// be checked without the table's layout: what [`crate::online::verify`] checks of
/// every stored row).
#[inline]
pub fn check(key: &[&[u8]], bytes: &[u8]) -> Result<(), RowDecodeError> {
    check_with(key, bytes, true)
}

/// [`check`] except that the data of a segmented row (format 3) is left to be
/// checked segment by segment as it is read ([`super::segments::Lazy`]); every other
/// byte of the row is checked. The same as [`check`] for a format-2 row.
#[inline]
pub fn check_lazy(key: &[&[u8]], bytes: &[u8]) -> Result<(), RowDecodeError> {
    check_with(key, bytes, false)
}

#[inline]
fn check_with(key: &[&[u8]], bytes: &[u8], whole: bool) -> Result<(), RowDecodeError> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(RowDecodeError::Truncated(bytes.len()));
    }
    match bytes[0] {
        ROW_FORMAT => {
            let at = bytes.len() - CHECKSUM_LEN;
            if checksum(key, &bytes[..at]) != u32_at(bytes, at) {
                return Err(RowDecodeError::Checksum);
            }
            Ok(())
        }
        ROW_FORMAT_SEGMENTED if whole => segments::check(key, bytes),
        ROW_FORMAT_SEGMENTED => segments::check_lazy(key, bytes).map(|_| ()),
        b => Err(RowDecodeError::Format(b)),
    }
}

/// The stamp of a row stored under `key`, checking the header and the checksum only
/// (what the writer needs to compare; the data of a segmented row is not read).
#[inline]
pub fn stamp(key: &[&[u8]], bytes: &[u8]) -> Result<Stamp, RowDecodeError> {
    check_lazy(key, bytes)?;
    Ok(Stamp {
        event: i64_at(bytes, 5),
        created: i64_at(bytes, 13),
    })
}

impl RowLayout {
    pub fn new(schema_version: u32, types: Vec<ValueType>) -> Self {
        let bitmap_len = types.len().div_ceil(8);
        let mut offset = HEADER_LEN + bitmap_len;
        let mut n_var = 0;
        let slots = types
            .iter()
            .map(|t| match t.width() {
                Some(width) => {
                    let s = Slot::Fixed { offset, width };
                    offset += width;
                    s
                }
                None => {
                    n_var += 1;
                    Slot::Var { index: n_var - 1 }
                }
            })
            .collect();
        RowLayout {
            schema_version,
            types,
            slots,
            bitmap_len,
            ends_start: offset,
            n_var,
            data_start: offset + 4 * n_var,
        }
    }

    pub fn n_columns(&self) -> usize {
        self.types.len()
    }

    /// The length of a row holding `var_len` bytes of variable-width values.
    #[inline]
    pub fn row_len(&self, var_len: usize) -> usize {
        self.data_start + var_len + segments::trailer_len(var_len) + CHECKSUM_LEN
    }

    /// Seals a row of [`RowLayout::row_len`] bytes whose header, values and ends are
    /// written: format 2 with one checksum, or format 3 (segmented) for large data.
    #[inline]
    pub fn seal(&self, key: &[&[u8]], row: &mut [u8]) {
        let data_len = match self.n_var {
            0 => 0,
            n => u32_at(row, self.ends_start + 4 * (n - 1)) as usize,
        };
        if segments::trailer_len(data_len) > 0 {
            segments::seal(key, row, self.data_start, data_len);
        } else {
            seal(key, row);
        }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `row` and clears the
    /// bitmap; `row` must be at least `data_start` long.
    #[inline]
    pub fn write_header(&self, row: &mut [u8], stamp: Stamp) {
        row[0] = ROW_FORMAT;
        row[1..5].copy_from_slice(&self.schema_version.to_le_bytes());
        row[5..13].copy_from_slice(&stamp.event.to_le_bytes());
        row[13..21].copy_from_slice(&stamp.created.to_le_bytes());
        row[HEADER_LEN..HEADER_LEN + self.bitmap_len].fill(0);
    }

    #[inline]
    pub fn set_null(&self, row: &mut [u8], col: usize) {
        row[HEADER_LEN + col / 8] |= 1 << (col % 8);
    }

    /// Records the end (relative to `data_start`) of variable-width column `index`.
    #[inline]
    pub fn write_var_end(&self, row: &mut [u8], index: usize, end: u32) {
        let at = self.ends_start + 4 * index;
        row[at..at + 4].copy_from_slice(&end.to_le_bytes());
    }

    /// Encodes one row stored under `key` from per-column values (`None` = null); the
    /// reference encoder the batch encoder in [`super::columns`] is tested against.
    pub fn encode(&self, key: &[&[u8]], stamp: Stamp, values: &[Option<&[u8]>]) -> Vec<u8> {
        assert_eq!(values.len(), self.types.len());
        let var_len: usize = values
            .iter()
            .zip(&self.slots)
            .filter(|(_, s)| matches!(s, Slot::Var { .. }))
            .map(|(v, _)| v.map_or(0, <[u8]>::len))
            .sum();
        let mut row = vec![0u8; self.row_len(var_len)];
        self.write_header(&mut row, stamp);
        let mut end = 0usize;
        for (col, (v, slot)) in values.iter().zip(&self.slots).enumerate() {
            if v.is_none() {
                self.set_null(&mut row, col);
            }
            match *slot {
                Slot::Fixed { offset, width } => {
                    if let Some(v) = v {
                        row[offset..offset + width].copy_from_slice(&v[..width]);
                    }
                }
                Slot::Var { index } => {
                    let v = v.unwrap_or(&[]);
                    let at = self.data_start + end;
                    row[at..at + v.len()].copy_from_slice(v);
                    end += v.len();
                    self.write_var_end(&mut row, index, end as u32);
                }
            }
        }
        self.seal(key, &mut row);
        row
    }
}

/// A validated row: accessors cannot go out of bounds.
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    bytes: &'a [u8],
    layout: &'a RowLayout,
}

impl<'a> RowView<'a> {
    /// Checks `bytes`, stored under `key`, against `layout` (format, checksum, schema
    /// version, exact length, ascending variable-width ends). Cost: the checksum plus
    /// a few compares and one load per var column.
    #[inline]
    pub fn parse(
        layout: &'a RowLayout,
        key: &[&[u8]],
        bytes: &'a [u8],
    ) -> Result<Self, RowDecodeError> {
        check(key, bytes)?;
        Self::parse_checked(layout, bytes)
    }

    /// [`RowView::parse`] of a row whose checksum [`check`] has already accepted (the
    /// reader checks rows on its lookup threads, right after finding them, and parses
    /// them later on one thread).
    #[inline]
    pub fn parse_checked(layout: &'a RowLayout, bytes: &'a [u8]) -> Result<Self, RowDecodeError> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(RowDecodeError::Truncated(bytes.len()));
        }
        let segmented = match bytes[0] {
            ROW_FORMAT => false,
            ROW_FORMAT_SEGMENTED => true,
            b => return Err(RowDecodeError::Format(b)),
        };
        let version = u32_at(bytes, 1);
        if version != layout.schema_version {
            return Err(RowDecodeError::SchemaVersion {
                found: version,
                expected: layout.schema_version,
            });
        }
        if bytes.len() < layout.data_start + CHECKSUM_LEN {
            return Err(RowDecodeError::Length {
                found: bytes.len(),
                expected: layout.data_start + CHECKSUM_LEN,
            });
        }
        let mut prev = 0u32;
        for i in 0..layout.n_var {
            let end = u32_at(bytes, layout.ends_start + 4 * i);
            if end < prev {
                return Err(RowDecodeError::VarEnds);
            }
            prev = end;
        }
        let data_len = prev as usize;
        let trailer = if segmented {
            if segments::lengths(bytes)? != (layout.data_start, data_len) {
                return Err(RowDecodeError::VarEnds);
            }
            segments::segmented_trailer_len(data_len)
        } else {
            0
        };
        let expected = layout.data_start + data_len + trailer + CHECKSUM_LEN;
        if bytes.len() != expected {
            return Err(RowDecodeError::Length {
                found: bytes.len(),
                expected,
            });
        }
        Ok(RowView { bytes, layout })
    }

    pub fn stamp(&self) -> Stamp {
        Stamp {
            event: i64_at(self.bytes, 5),
            created: i64_at(self.bytes, 13),
        }
    }

    /// The segments of a segmented row's variable-width data (None in format 2): what
    /// a reader of a row accepted by [`check_lazy`] checks before using its bytes.
    pub fn segments(&self) -> Option<Segments<'a>> {
        if self.bytes[0] != ROW_FORMAT_SEGMENTED {
            return None;
        }
        segments::parsed(self.bytes, self.layout.data_start)
    }

    #[inline]
    pub fn is_null(&self, col: usize) -> bool {
        self.bytes[HEADER_LEN + col / 8] & (1 << (col % 8)) != 0
    }

    /// The bytes of column `col`'s value (zeros or empty when null).
    #[inline]
    pub fn value(&self, col: usize) -> &'a [u8] {
        match self.layout.slots[col] {
            Slot::Fixed { offset, width } => &self.bytes[offset..offset + width],
            Slot::Var { index } => &self.bytes[self.var_range(index)],
        }
    }

    fn var_range(&self, index: usize) -> Range<usize> {
        let l = self.layout;
        let start = if index == 0 {
            0
        } else {
            u32_at(self.bytes, l.ends_start + 4 * (index - 1)) as usize
        };
        let end = u32_at(self.bytes, l.ends_start + 4 * index) as usize;
        l.data_start + start..l.data_start + end
    }

    /// Float32 columns `col..col + out.len()`, stored one after another from byte `at`
    /// on (their fixed slots), into `out`: NaN where null. One bounds check and a
    /// straight copy, then the null bits of the run checked a byte at a time.
    #[inline]
    pub fn f32_run(&self, col: usize, at: usize, out: &mut [f32]) {
        let src = &self.bytes[at..at + 4 * out.len()];
        for (d, s) in out.iter_mut().zip(src.chunks_exact(4)) {
            *d = f32::from_le_bytes(s.try_into().expect("4 bytes"));
        }
        let Some(last) = (col + out.len()).checked_sub(1) else {
            return;
        };
        let bits = &self.bytes[HEADER_LEN + col / 8..=HEADER_LEN + last / 8];
        let mut any = 0u8;
        for (k, &b) in bits.iter().enumerate() {
            let byte = col / 8 + k;
            let lo = if byte == col / 8 { col % 8 } else { 0 };
            let hi = if byte == last / 8 { last % 8 } else { 7 };
            any |= b & ((0xFFu16 << lo) as u8) & (0xFFu8 >> (7 - hi));
        }
        if any != 0 {
            for (i, d) in out.iter_mut().enumerate() {
                if self.is_null(col + i) {
                    *d = f32::NAN;
                }
            }
        }
    }

    /// Column `col` as a float (for model inputs): NaN when null. The column must be
    /// numeric ([`ValueType::is_numeric`]).
    #[inline]
    pub fn f32(&self, col: usize) -> f32 {
        if self.is_null(col) {
            return f32::NAN;
        }
        let v = self.value(col);
        match self.layout.types[col] {
            ValueType::F32 => f32::from_le_bytes(v.try_into().unwrap()),
            ValueType::F64 => f64::from_le_bytes(v.try_into().unwrap()) as f32,
            ValueType::Bool => v[0] as f32,
            ValueType::I8 => v[0] as i8 as f32,
            ValueType::U8 => v[0] as f32,
            ValueType::I16 => i16::from_le_bytes(v.try_into().unwrap()) as f32,
            ValueType::U16 => u16::from_le_bytes(v.try_into().unwrap()) as f32,
            ValueType::I32 => i32::from_le_bytes(v.try_into().unwrap()) as f32,
            ValueType::U32 => u32::from_le_bytes(v.try_into().unwrap()) as f32,
            ValueType::I64 => i64::from_le_bytes(v.try_into().unwrap()) as f32,
            ValueType::U64 => u64::from_le_bytes(v.try_into().unwrap()) as f32,
            _ => f32::NAN,
        }
    }
}

#[cfg(test)]
#[path = "row_tests.rs"]
mod tests;
