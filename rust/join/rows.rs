//! Row groups: several value columns of a feature table gathered with one random read
//! per output row instead of one per column.
//!
//! A join's gather reads each feature column at the matched row of every spine row,
//! at random. Column by column, a table of six value columns costs six cache misses
//! per spine row, each in a different column; on a machine whose cache does not hold
//! the columns they are memory latency, and they were most of the join. Here the
//! columns that allow it are first rewritten, sequentially, as one fixed-width record
//! per feature row (16, 32 or 64 bytes, never straddling a cache line): each value's
//! bytes at a fixed offset (fixed-width types), or its 16-byte cell (short byte
//! arrays, see [`super::cells`]), and a 64-bit validity word for the fixed-width
//! columns that have nulls. The gather then copies, per block of 256 output rows, each
//! row's record (one independent random read each, many in flight at once) and
//! splits the block into the output columns in one sequential pass per column.
//!
//! When: a table of at least [`MIN_ROWS`] rows (smaller ones stay in the cache, where
//! a read per column costs little), a spine of at least a quarter as many rows (or a
//! table in several batches, which had to be copied anyway), and at least two columns
//! that fit one record. Records are as wide as fits in [`MAX_STORE`] bytes (64 bytes
//! up to 2M rows, narrower above; none under 16 bytes, so from 8.4M rows the columns
//! go one by one as before). Other columns (booleans, nested types, long strings)
//! keep the column-at-a-time gather.
//!
//! Cost: `rows x width` bytes while the group is gathered (on huge pages: its reads
//! are random), up to [`MAX_STORE`], and a store per thread at a time: more than the
//! column-at-a-time gather holds (one copied column per thread, none for a table in
//! one batch), so a join's peak memory grows by up to twice [`MAX_STORE`]. One
//! sequential pass builds a store, then one random read per output row per group.
//! Measured on the S join (AMD EPYC VM, 2026-12-01): see BENCHMARKS.md.

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_buffer::{BooleanBuffer, Buffer, MutableBuffer, NullBuffer};
use arrow_schema::DataType;
use rayon::prelude::*;

use super::cells::{self, Sink};
use crate::error::Result;
use crate::prefetch::prefetch;

/// Smaller tables keep the column-at-a-time gather.
const MIN_ROWS: usize = 1 << 16;

/// The largest store a group may have: caps the record width for large tables.
const MAX_STORE: usize = 128 << 20;

/// Record widths: powers of two from 16 to a cache line.
const MAX_WIDTH: usize = 64;
const MIN_WIDTH: usize = 16;

/// Output rows per block of the gather.
const BLOCK: usize = 256;

/// How many rows ahead the gather prefetches (16: 13% faster than none, and than 64,
/// in a 1M-row test on the AMD EPYC VM, 2026-12-01).
const AHEAD: usize = 16;

/// Feature rows per tile while the store is built: the records being written stay in
/// the cache while each column is copied into them.
const TILE: usize = 1024;

/// Feature rows per task while the store is built.
const PIECE: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// A fixed-width value of this many bytes.
    Fixed(usize),
    /// A 16-byte cell (a short byte-array value, its length and validity).
    Cell,
}

#[derive(Debug)]
struct Field {
    /// Position among the table's value columns, and index in the table.
    pos: usize,
    col: usize,
    kind: Kind,
    /// Byte offset in the record.
    at: usize,
    /// Bit in the record's validity word (fixed-width columns with nulls).
    bit: Option<u32>,
}

/// Columns gathered together, each feature row one record of `width` bytes.
#[derive(Debug)]
pub struct Group {
    width: usize,
    fields: Vec<Field>,
}

/// How a table's value columns are gathered: in groups, and one by one (`rest`,
/// positions among the value columns).
#[derive(Debug)]
pub struct Layout {
    pub groups: Vec<Group>,
    pub rest: Vec<usize>,
}

/// When [`layout`] groups columns: tables of at least `min_rows` rows, records of at
/// most `max_width` bytes. [`LIMITS`] but for tests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub min_rows: usize,
    pub max_width: usize,
}

pub const LIMITS: Limits = Limits {
    min_rows: MIN_ROWS,
    max_width: MAX_WIDTH,
};

/// The layout of the value columns `cols` of a table of `batches`, for a spine of
/// `spine_rows` rows.
pub fn layout(
    batches: &[RecordBatch],
    cols: &[usize],
    spine_rows: usize,
    limits: Limits,
) -> Layout {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let one_by_one = Layout {
        groups: Vec::new(),
        rest: (0..cols.len()).collect(),
    };
    let copied_anyway = batches.len() > 1;
    if rows == 0
        || rows < limits.min_rows
        || (spine_rows.saturating_mul(4) < rows && !copied_anyway)
    {
        return one_by_one;
    }
    let Some(width) = record_width(rows, limits.max_width) else {
        return one_by_one;
    };
    // (position, column, kind, has nulls), widest first (a stable sort: ties keep the
    // table's order), so that each value sits at a multiple of its width.
    let mut candidates: Vec<(usize, usize, Kind, bool)> = cols
        .iter()
        .enumerate()
        .filter_map(|(pos, &c)| {
            let chunks: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            let dt = chunks[0].data_type();
            // Every chunk of the type the schema gives (a caller's table in Rust could
            // be built otherwise; Arrow's concat then reports it).
            let same = chunks.iter().all(|a| a.data_type() == dt);
            let fixed = dt
                .primitive_width()
                .filter(|w| same && dt.is_primitive() && w.is_power_of_two() && *w <= 16);
            match fixed {
                Some(w) => Some((
                    pos,
                    c,
                    Kind::Fixed(w),
                    chunks.iter().any(|a| a.null_count() > 0),
                )),
                None if cells::all_short(&chunks) => Some((pos, c, Kind::Cell, false)),
                None => None,
            }
        })
        .collect();
    candidates.sort_by_key(|&(_, _, kind, _)| std::cmp::Reverse(size(kind)));
    // First fit; a group holding a nullable column keeps its last 8 bytes for the
    // validity word.
    let mut groups: Vec<(usize, u32, Vec<Field>)> = Vec::new(); // (bytes used, bits, fields)
    for (pos, col, kind, nullable) in candidates {
        let fits = |&(used, bits, _): &(usize, u32, Vec<Field>)| {
            let word = if bits > 0 || nullable { 8 } else { 0 };
            used + size(kind) + word <= width && bits < 64
        };
        let g = match groups.iter().position(fits) {
            Some(g) => g,
            None if size(kind) + if nullable { 8 } else { 0 } <= width => {
                groups.push((0, 0, Vec::new()));
                groups.len() - 1
            }
            None => continue,
        };
        let (used, bits, fields) = &mut groups[g];
        let bit = nullable.then(|| {
            *bits += 1;
            *bits - 1
        });
        fields.push(Field {
            pos,
            col,
            kind,
            at: *used,
            bit,
        });
        *used += size(kind);
    }
    let mut out = Layout {
        groups: Vec::new(),
        rest: Vec::new(),
    };
    for (_, _, fields) in groups {
        if fields.len() > 1 {
            out.groups.push(Group { width, fields });
        }
    }
    let grouped = |pos: &usize| {
        out.groups
            .iter()
            .flat_map(|g| &g.fields)
            .any(|f| f.pos == *pos)
    };
    out.rest = (0..cols.len()).filter(|p| !grouped(p)).collect();
    out
}

/// The widest record (a power of two, at most `max_width`) of which `rows` fit in
/// [`MAX_STORE`]; None under [`MIN_WIDTH`].
fn record_width(rows: usize, max_width: usize) -> Option<usize> {
    let fit = (MAX_STORE / rows.max(1)).min(max_width);
    (fit >= MIN_WIDTH).then(|| 1 << fit.ilog2())
}

fn size(kind: Kind) -> usize {
    match kind {
        Kind::Fixed(w) => w,
        Kind::Cell => 16,
    }
}

impl Group {
    /// The group's columns for every spine batch, as `(position, arrays per batch)`:
    /// `picks[b]` holds spine batch `b`'s take indices and matched mask (None: nothing
    /// matched), `bounds[b]` its `(start, length)`.
    pub fn gather(
        &self,
        batches: &[RecordBatch],
        picks: &[Option<(&[u32], Option<&NullBuffer>)>],
        bounds: &[(usize, usize)],
    ) -> Result<Vec<(usize, Vec<ArrayRef>)>> {
        let dts: Vec<DataType> = self
            .fields
            .iter()
            .map(|f| batches[0].column(f.col).data_type().clone())
            .collect();
        let store = crate::trace::phase("row store", || self.store(batches));
        // In parallel over the spine's batches.
        let per_batch: Vec<Vec<ArrayRef>> = crate::trace::phase("row gather", || {
            picks
                .par_iter()
                .zip(bounds)
                .map(|(pick, &(_, n))| match pick {
                    None => Ok(dts.iter().map(|dt| new_null_array(dt, n)).collect()),
                    Some((idx, matched)) => match self.width {
                        16 => self.take::<16>(&store, idx, *matched, &dts),
                        32 => self.take::<32>(&store, idx, *matched, &dts),
                        _ => self.take::<64>(&store, idx, *matched, &dts),
                    },
                })
                .collect::<Result<_>>()
        })?;
        let mut cols: Vec<Vec<ArrayRef>> = self.fields.iter().map(|_| Vec::new()).collect();
        for arrays in per_batch {
            for (col, a) in cols.iter_mut().zip(arrays) {
                col.push(a);
            }
        }
        Ok(self.fields.iter().map(|f| f.pos).zip(cols).collect())
    }

    /// The records of every row of `batches`, on huge pages from 4 MiB (they are read
    /// at random).
    fn store(&self, batches: &[RecordBatch]) -> Buffer {
        let w = self.width;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        crate::huge::buffer(rows * w, |out| {
            // Pieces of at most PIECE rows of one batch each, filled in parallel.
            let mut pieces: Vec<(&RecordBatch, usize, &mut [u8])> = Vec::new();
            let mut rest = out;
            for batch in batches {
                for s in (0..batch.num_rows()).step_by(PIECE) {
                    let n = PIECE.min(batch.num_rows() - s);
                    let (piece, tail) = rest.split_at_mut(n * w);
                    rest = tail;
                    pieces.push((batch, s, piece));
                }
            }
            pieces
                .into_par_iter()
                .for_each(|(batch, s, piece)| self.fill(batch, s, piece));
        })
    }

    /// Writes the records of the rows of `batch` from `start` on into `out` (a whole
    /// number of records), a tile at a time.
    fn fill(&self, batch: &RecordBatch, start: usize, out: &mut [u8]) {
        let w = self.width;
        let data: Vec<_> = self
            .fields
            .iter()
            .map(|f| batch.column(f.col).to_data())
            .collect();
        for (t, tile) in out.chunks_mut(TILE * w).enumerate() {
            let t0 = start + t * TILE;
            let t1 = t0 + tile.len() / w;
            for (f, d) in self.fields.iter().zip(&data) {
                match f.kind {
                    Kind::Fixed(fw) => {
                        let from = (d.offset() + t0) * fw;
                        let vals = &d.buffers()[0].as_slice()[from..from + (t1 - t0) * fw];
                        match fw {
                            1 => put::<1>(vals, tile, w, f.at),
                            2 => put::<2>(vals, tile, w, f.at),
                            4 => put::<4>(vals, tile, w, f.at),
                            8 => put::<8>(vals, tile, w, f.at),
                            _ => put::<16>(vals, tile, w, f.at),
                        }
                        if let Some(bit) = f.bit {
                            let valid = |i: usize| d.nulls().is_none_or(|v| v.is_valid(i));
                            for (i, row) in (t0..t1).zip(tile.chunks_exact_mut(w)) {
                                let word = &mut row[w - 8..];
                                let bits = u64::from_le_bytes(word.try_into().expect("8 bytes"))
                                    | (valid(i) as u64) << bit;
                                word.copy_from_slice(&bits.to_le_bytes());
                            }
                        }
                    }
                    Kind::Cell => {
                        cells::write_cells(batch.column(f.col).as_ref(), t0..t1, tile, w, f.at)
                    }
                }
            }
        }
    }

    /// The group's columns at rows `idx` of `store`, null where `matched` says no row
    /// matched (or the value is null).
    fn take<const W: usize>(
        &self,
        store: &Buffer,
        idx: &[u32],
        matched: Option<&NullBuffer>,
        dts: &[DataType],
    ) -> Result<Vec<ArrayRef>> {
        let records: &[[u8; W]] = store.as_slice().as_chunks::<W>().0;
        let Some(last) = records.len().checked_sub(1) else {
            return Ok(dts.iter().map(|dt| new_null_array(dt, idx.len())).collect());
        };
        let mut outs: Vec<Out> = self
            .fields
            .iter()
            .zip(dts)
            .map(|(f, dt)| Out::new(f, dt, idx.len()))
            .collect();
        let mut block = [[0u8; W]; BLOCK];
        for (b, chunk) in idx.chunks(BLOCK).enumerate() {
            // The block's records: independent random reads. Row `r` is read as
            // `min(r, last)`: the indices come from the probe and are in range.
            // Each read also starts the one AHEAD rows later (a prefetch), so that more
            // of them are in flight than the core's window alone would keep.
            let ahead = idx.get(b * BLOCK + AHEAD..).unwrap_or_default();
            for (k, (slot, &r)) in block.iter_mut().zip(chunk).enumerate() {
                debug_assert!(r as usize <= last, "take index {r} past the table's end");
                if let Some(&next) = ahead.get(k) {
                    prefetch(records[(next as usize).min(last)].as_ptr());
                }
                *slot = records[(r as usize).min(last)];
            }
            let got = &block[..chunk.len()];
            for (f, out) in self.fields.iter().zip(&mut outs) {
                out.push(f, got, matched, b * BLOCK)?;
            }
        }
        Ok(outs
            .into_iter()
            .zip(dts)
            .map(|(o, dt)| o.finish(dt, idx.len(), matched))
            .collect())
    }
}

/// Copies each value of `vals` (`FW` bytes each) to byte `at` of consecutive
/// `w`-byte records of `tile`.
fn put<const FW: usize>(vals: &[u8], tile: &mut [u8], w: usize, at: usize) {
    for (v, row) in vals
        .as_chunks::<FW>()
        .0
        .iter()
        .zip(tile.chunks_exact_mut(w))
    {
        row[at..at + FW].copy_from_slice(v);
    }
}

/// One output column being built.
enum Out {
    Fixed {
        width: usize,
        values: MutableBuffer,
        /// Validity from the records (columns with nulls).
        valid: Option<Vec<bool>>,
    },
    Cells(Sink<i32>),
    LargeCells(Sink<i64>),
}

impl Out {
    fn new(f: &Field, dt: &DataType, n: usize) -> Self {
        match f.kind {
            Kind::Fixed(width) => Out::Fixed {
                width,
                values: MutableBuffer::new(n * width),
                valid: f.bit.map(|_| Vec::with_capacity(n)),
            },
            Kind::Cell if matches!(dt, DataType::LargeUtf8 | DataType::LargeBinary) => {
                Out::LargeCells(Sink::new(n))
            }
            Kind::Cell => Out::Cells(Sink::new(n)),
        }
    }

    /// Appends field `f` of `records`, output rows `first..`.
    fn push<const W: usize>(
        &mut self,
        f: &Field,
        records: &[[u8; W]],
        matched: Option<&NullBuffer>,
        first: usize,
    ) -> Result<()> {
        let cell =
            |r: &[u8; W]| u128::from_le_bytes(r[f.at..f.at + 16].try_into().expect("16 bytes"));
        match self {
            Out::Fixed {
                width,
                values,
                valid,
            } => {
                match *width {
                    1 => extend::<W, 1>(values, records, f.at),
                    2 => extend::<W, 2>(values, records, f.at),
                    4 => extend::<W, 4>(values, records, f.at),
                    8 => extend::<W, 8>(values, records, f.at),
                    _ => extend::<W, 16>(values, records, f.at),
                }
                if let (Some(valid), Some(bit)) = (valid, f.bit) {
                    let word =
                        |r: &[u8; W]| u64::from_le_bytes(r[W - 8..].try_into().expect("8 bytes"));
                    valid.extend(records.iter().map(|r| word(r) >> bit & 1 == 1));
                }
                Ok(())
            }
            Out::Cells(sink) => sink.push(records.iter().map(cell), matched, first),
            Out::LargeCells(sink) => sink.push(records.iter().map(cell), matched, first),
        }
    }

    fn finish(self, dt: &DataType, n: usize, matched: Option<&NullBuffer>) -> ArrayRef {
        match self {
            Out::Fixed { values, valid, .. } => {
                let nulls = match valid {
                    None => matched.cloned(),
                    Some(v) => NullBuffer::union(
                        Some(&NullBuffer::new(BooleanBuffer::collect_bool(n, |i| v[i]))),
                        matched,
                    ),
                };
                let data = arrow_data::ArrayDataBuilder::new(dt.clone())
                    .len(n)
                    .buffers(vec![values.into()])
                    .nulls(nulls.filter(|m| m.null_count() > 0));
                // SAFETY: `values` holds `n` values of `dt`'s width (each copied from a
                // valid array of type `dt`, whose every bit pattern is a value), in a
                // 64-byte aligned buffer; `nulls` has one bit per row.
                arrow_array::make_array(unsafe { data.build_unchecked() })
            }
            Out::Cells(sink) => sink.finish(dt),
            Out::LargeCells(sink) => sink.finish(dt),
        }
    }
}

/// Appends the `FW`-byte value at byte `at` of each record to `values`.
fn extend<const W: usize, const FW: usize>(
    values: &mut MutableBuffer,
    records: &[[u8; W]],
    at: usize,
) {
    values.reserve(records.len() * FW);
    let (dst, len) = (values.as_mut_ptr(), values.len());
    for (k, r) in records.iter().enumerate() {
        let v: [u8; FW] = r[at..at + FW].try_into().expect("FW bytes");
        // SAFETY: the reservation above leaves room for `records.len() * FW` bytes past
        // `len`; the write is unaligned-safe.
        unsafe { std::ptr::write_unaligned(dst.add(len + k * FW) as *mut [u8; FW], v) };
    }
    // SAFETY: the bytes up to the new length were all written above.
    unsafe { values.set_len(len + records.len() * FW) };
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
