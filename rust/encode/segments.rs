//! Large rows (format 3): the variable-width bytes checksummed in 4 KiB segments, so
//! a reader that needs a few kilobytes of a megabyte value checks only those.
//!
//! ```text
//! offset 0   u8       3 (ROW_FORMAT_SEGMENTED); header, bitmap, fixed values and
//!                     variable-width ends exactly as format 2 (see [`super::row`])
//!        ds  data     D bytes of variable-width values (ds = the layout's data start)
//!            table    u32 LE per SEGMENT bytes of data: CRC-32C of that piece
//!            ds u32 LE, D u32 LE
//!            checksum u32 LE: CRC-32C of the LMDB key, the bytes before `ds`, the
//!                     table and the two lengths (everything but the data itself)
//! ```
//!
//! **Why.** Every row is checked against its checksum before use ([`super::row`]).
//! An aggregation state of a busy entity is one value of megabytes, of which a lookup
//! reads the block summaries and a few events at each window's edges: a checksum over
//! the whole value cost 4x the aggregation itself (~170 µs for 3.3 MB). A writer
//! turns to this format once the data reaches [`SEGMENTED_FROM`] bytes (a smaller row
//! keeps format 2); a row of either format is read by every reader.
//!
//! **What is checked when.** [`check`] (every generic reader, the store verifier, the
//! writer's decode) checks the outer checksum and every segment: the same guarantee
//! as format 2. [`check_lazy`] checks the outer checksum only — header, lengths, fixed
//! values, and the table of segment CRCs are then trusted — and the reader checks each
//! segment before using bytes in it, through [`Lazy::touch`]. A damaged segment a
//! read never touches cannot change what it returns; one it touches marks the read
//! damaged ([`Lazy::damaged`]), and the reader turns the result into an error.
//! The table is positional (segment i's CRC at entry i), so pieces swapped or
//! replaced from another row fail too; a row moved under another key fails the
//! outer checksum, which covers the key.
//!
//! Cost: the writer computes the segment CRCs three at a time (the same throughput as
//! one CRC of the whole value, [`super::crc::crc32c_segments`]); a lazy reader pays
//! ~0.4 µs per segment it touches, plus one bit test per access.

use std::cell::Cell;

use super::crc::{crc32c_append, crc32c_parts, crc32c_segments, SEGMENT};
use super::row::{RowDecodeError, CHECKSUM_LEN, HEADER_LEN};

/// The format byte of a segmented row.
pub const ROW_FORMAT_SEGMENTED: u8 = 3;
/// Rows with at least this many bytes of variable-width data are written segmented.
pub const SEGMENTED_FROM: usize = 64 << 10;
/// The two lengths before the checksum.
const LENGTHS: usize = 8;

/// Segments of `data_len` bytes of data.
#[inline]
fn count(data_len: usize) -> usize {
    data_len.div_ceil(SEGMENT)
}

/// Bytes a row with `data_len` bytes of variable-width data carries between its data
/// and its checksum: 0 in format 2, the table and the lengths in format 3.
#[inline]
pub fn trailer_len(data_len: usize) -> usize {
    if data_len >= SEGMENTED_FROM {
        segmented_trailer_len(data_len)
    } else {
        0
    }
}

/// The trailer of a segmented row with `data_len` bytes of data.
#[inline]
pub fn segmented_trailer_len(data_len: usize) -> usize {
    4 * count(data_len) + LENGTHS
}

/// The outer checksum: key parts, the bytes before the data, the trailer.
fn outer(key: &[&[u8]], prefix: &[u8], trailer: &[u8]) -> u32 {
    let k = match key {
        [k] => crc32c_parts(&[k, prefix]),
        _ => crc32c_append(crc32c_parts(key), prefix),
    };
    crc32c_append(k, trailer)
}

/// Seals a segmented row stored under `key` whose layout puts the data at `ds` and
/// which holds `data_len` bytes of it; `row` is exactly
/// `ds + data_len + trailer_len(data_len) + CHECKSUM_LEN` long.
pub fn seal(key: &[&[u8]], row: &mut [u8], ds: usize, data_len: usize) {
    let n = count(data_len);
    debug_assert_eq!(row.len(), ds + data_len + 4 * n + LENGTHS + CHECKSUM_LEN);
    row[0] = ROW_FORMAT_SEGMENTED;
    let mut crcs = vec![0u32; n];
    crc32c_segments(&row[ds..ds + data_len], &mut crcs);
    let mut at = ds + data_len;
    for c in crcs {
        row[at..at + 4].copy_from_slice(&c.to_le_bytes());
        at += 4;
    }
    row[at..at + 4].copy_from_slice(&(ds as u32).to_le_bytes());
    row[at + 4..at + 8].copy_from_slice(&(data_len as u32).to_le_bytes());
    let end = row.len() - CHECKSUM_LEN;
    let crc = outer(key, &row[..ds], &row[ds + data_len..end]);
    row[end..].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// `(ds, data_len)` of a segmented row whose lengths agree with its size; the caller
/// has checked the format byte and that the row holds a header and a checksum.
pub fn lengths(bytes: &[u8]) -> Result<(usize, usize), RowDecodeError> {
    let l = bytes.len();
    if l < HEADER_LEN + LENGTHS + CHECKSUM_LEN {
        return Err(RowDecodeError::Truncated(l));
    }
    let at = l - CHECKSUM_LEN - LENGTHS;
    let (ds, d) = (u32_at(bytes, at) as usize, u32_at(bytes, at + 4) as usize);
    let expected =
        (ds.checked_add(d)).and_then(|x| x.checked_add(segmented_trailer_len(d) + CHECKSUM_LEN));
    if ds < HEADER_LEN || expected != Some(l) {
        return Err(RowDecodeError::Length {
            found: l,
            expected: expected.unwrap_or(usize::MAX),
        });
    }
    Ok((ds, d))
}

/// Checks the outer checksum of a segmented row stored under `key` and returns its
/// segments (not checked yet).
pub fn check_lazy<'a>(key: &[&[u8]], bytes: &'a [u8]) -> Result<Segments<'a>, RowDecodeError> {
    let (ds, d) = lengths(bytes)?;
    let end = bytes.len() - CHECKSUM_LEN;
    if outer(key, &bytes[..ds], &bytes[ds + d..end]) != u32_at(bytes, end) {
        return Err(RowDecodeError::Checksum);
    }
    parsed(bytes, ds).ok_or(RowDecodeError::Truncated(bytes.len()))
}

/// The segments of a segmented row whose lengths were checked ([`lengths`]) with its
/// data at `ds`.
pub fn parsed(bytes: &[u8], ds: usize) -> Option<Segments<'_>> {
    let at = bytes.len().checked_sub(CHECKSUM_LEN + LENGTHS)?;
    let d = u32_at(bytes, at + 4) as usize;
    Some(Segments {
        data: bytes.get(ds..ds + d)?,
        table: bytes.get(ds + d..ds + d + 4 * count(d))?,
    })
}

/// Checks a segmented row whole: the outer checksum and every segment.
pub fn check(key: &[&[u8]], bytes: &[u8]) -> Result<(), RowDecodeError> {
    let segs = check_lazy(key, bytes)?;
    let mut crcs = vec![0u32; segs.len()];
    crc32c_segments(segs.data, &mut crcs);
    if crcs
        .iter()
        .enumerate()
        .any(|(i, &c)| c != u32_at(segs.table, 4 * i))
    {
        return Err(RowDecodeError::Checksum);
    }
    Ok(())
}

/// The data of a segmented row and the CRC of each of its segments.
#[derive(Clone, Copy, Debug)]
pub struct Segments<'a> {
    /// The row's variable-width bytes.
    pub data: &'a [u8],
    table: &'a [u8],
}

impl<'a> Segments<'a> {
    pub fn len(&self) -> usize {
        self.table.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether segment `i` matches its CRC.
    pub fn verify(&self, i: usize) -> bool {
        let piece = &self.data[i * SEGMENT..((i + 1) * SEGMENT).min(self.data.len())];
        crc32c_append(0, piece) == u32_at(self.table, 4 * i)
    }
}

/// A lazily checked read of a segmented value: each segment is checked the first time
/// a byte in it is touched; a mismatch marks the read damaged.
#[derive(Debug)]
pub struct Lazy<'a> {
    segs: Segments<'a>,
    done: Vec<Cell<u64>>,
    bad: Cell<bool>,
}

impl<'a> Lazy<'a> {
    pub fn new(segs: Segments<'a>) -> Lazy<'a> {
        Lazy {
            segs,
            done: vec![Cell::new(0); segs.len().div_ceil(64)],
            bad: Cell::new(false),
        }
    }

    /// Checks the segments under `part[from..to]`; `part` lies inside the row's data
    /// (a slice of a value read from it).
    #[inline]
    pub fn touch(&self, part: &[u8], from: usize, to: usize) {
        if from >= to {
            return;
        }
        let base = (part.as_ptr() as usize).wrapping_sub(self.segs.data.as_ptr() as usize);
        let (start, end) = (base + from, base + to);
        if end > self.segs.data.len() || start > end {
            // Not a slice of this row's data: a caller's bug, never damage.
            debug_assert!(false, "touched bytes outside the row's data");
            self.bad.set(true);
            return;
        }
        for s in start / SEGMENT..=(end - 1) / SEGMENT {
            let (w, bit) = (s / 64, 1u64 << (s % 64));
            let word = self.done[w].get();
            if word & bit == 0 {
                if !self.segs.verify(s) {
                    self.bad.set(true);
                }
                self.done[w].set(word | bit);
            }
        }
    }

    /// Segments checked so far.
    pub fn checked(&self) -> usize {
        self.done
            .iter()
            .map(|w| w.get().count_ones() as usize)
            .sum()
    }

    /// Whether a touched segment failed its check: every result read since must be
    /// discarded.
    pub fn damaged(&self) -> bool {
        self.bad.get()
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
