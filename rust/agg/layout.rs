//! The bytes of a stored aggregation state, and how an insert merges into them
//! without decoding them.
//!
//! ```text
//! "PSA2"  n: u32  columns: u16  shift: u8           header (11 bytes)
//! e[n] c[n] seq[n]                                 i64 LE each, sorted by (e, c, seq)
//! per column: tag u8 (0 f64, 1 i64, 2 bytes), validity bitmap (ceil(n/8) bytes),
//!             n × 8 value bytes, or (n + 1) u32 offsets and the bytes
//! per numeric column: one summary per full block of 2^shift events   (BLOCK_BYTES each)
//!     valid count u32, +inf count u32, -inf count u32, 0 u32,
//!     sum hi, sum lo, sum of squares hi, lo (f64, double-double over the finite values),
//!     min, max (f64 bits, or i64 for an i64 column; over the valid values)
//! ```
//! "PSA1" (the first format) is the same without `shift` and the summaries; it is
//! still read (a lookup then scans its windows) and rewritten as PSA2 by the next
//! insert of its entity.
//!
//! **Why blocks.** A lookup's window is an index range `[tail, head)` (two binary
//! searches). With summaries of every full block of B = 2^shift events, count, sum,
//! mean, std, min and max of the range read at most 2B events at its two ends plus one
//! summary per block in between: O(log n + n/B + B) per feature instead of O(window).
//! B = 64 costs 64 bytes per 64 events of a numeric column (~1 byte per event, 12%
//! of what the event already takes) and keeps an entity with 100,000 events in its
//! window at ~1,600 summaries plus 128 events per window.
//!
//! **Merging without decoding** ([`merge`]). The old state is read in place; the
//! new events are sorted; one linear two-way merge decides the order of the kept
//! events (old and new interleaved, events before `newest - keep` dropped, each
//! `last` column's newest value kept), then the output is written column by column
//! straight from the two sources: no per-event allocation, so an insert costs a
//! copy of its entity's state plus its own events.

use std::collections::HashSet;

use super::dd::DD;
use super::serve::{Moments, StateView};
use super::state::{Event, Tag, Val};

pub(super) const MAGIC_V1: &[u8; 4] = b"PSA1";
pub(super) const MAGIC: &[u8; 4] = b"PSA2";
/// log2 of the events per summarized block.
pub(super) const SHIFT: u8 = 6;
pub(super) const HEADER_V1: usize = 10;
pub(super) const HEADER: usize = 11;
pub(super) const BLOCK_BYTES: usize = 64;

/// One block's summary of a numeric column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Block {
    pub cnt: u32,
    pub pinf: u32,
    pub ninf: u32,
    pub s: DD,
    pub q: DD,
    /// Bits of an f64, or an i64, as the column's tag says.
    pub min: u64,
    pub max: u64,
}

impl Block {
    pub(super) fn read(b: &[u8]) -> Block {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let f = |i: usize| f64::from_bits(w(i));
        Block {
            cnt: u(0),
            pinf: u(4),
            ninf: u(8),
            s: DD {
                hi: f(16),
                lo: f(24),
            },
            q: DD {
                hi: f(32),
                lo: f(40),
            },
            min: w(48),
            max: w(56),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for x in [self.cnt, self.pinf, self.ninf, 0] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for x in [self.s.hi, self.s.lo, self.q.hi, self.q.lo] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
    }
}

/// Where an output event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    Old(usize),
    New(usize),
}

/// The two sources of a merge.
struct Sources<'a, 'b> {
    old: Option<&'b StateView<'a>>,
    new: &'b [Event],
}

impl Sources<'_, '_> {
    #[inline]
    fn ecs(&self, p: Pick) -> (i64, i64, i64) {
        match p {
            Pick::Old(i) => {
                let v = self.old.expect("old events come from a state");
                (v.e_at(i), v.c_at(i), v.seq_at(i))
            }
            Pick::New(i) => {
                let ev = &self.new[i];
                (ev.e, ev.c, ev.seq)
            }
        }
    }

    /// Column `j` as stored: None where the validity bit is off.
    #[inline]
    fn word(&self, j: usize, p: Pick) -> Option<u64> {
        match p {
            Pick::Old(i) => self.old.expect("old").stored_word(j, i),
            Pick::New(i) => match &self.new[i].vals[j] {
                Val::F(x) => Some(x.to_bits()),
                Val::I(x) => Some(*x as u64),
                _ => None,
            },
        }
    }

    #[inline]
    fn bytes(&self, j: usize, p: Pick) -> Option<&[u8]> {
        match p {
            Pick::Old(i) => self.old.expect("old").stored_bytes(j, i),
            Pick::New(i) => match &self.new[i].vals[j] {
                Val::B(b) => Some(b),
                _ => None,
            },
        }
    }

    /// Whether column `j` of `p` is a value a `last` would return (not null, not NaN).
    fn valid(&self, tag: Tag, j: usize, p: Pick) -> bool {
        match tag {
            Tag::Bytes => self.bytes(j, p).is_some(),
            Tag::F64 => self.word(j, p).is_some_and(|w| !f64::from_bits(w).is_nan()),
            Tag::I64 => self.word(j, p).is_some(),
        }
    }
}

/// Merges `new` events (any order) into `old` (None: no state yet) and encodes the
/// result: events already in `old` (same sequence number) are skipped, then events
/// older than the newest minus `keep_ns` are dropped except, per `last_cols` column,
/// its newest valid value and its newest valid value before the newest event's time. The same result as [`super::state::State::merge`] then
/// `encode`. Returns the bytes and the newest event time (None: empty). Errors (as
/// None) only when `old` is not sorted, which a state never is unless damaged.
pub fn merge(
    old: Option<&StateView>,
    tags: &[Tag],
    mut new: Vec<Event>,
    keep_ns: i64,
    last_cols: &[usize],
) -> Option<(Vec<u8>, Option<i64>)> {
    let n_old = old.map_or(0, |v| v.len());
    if let Some(v) = old {
        let sorted = (1..n_old).all(|i| {
            (v.e_at(i - 1), v.c_at(i - 1), v.seq_at(i - 1)) < (v.e_at(i), v.c_at(i), v.seq_at(i))
        });
        if !sorted {
            return None;
        }
        // Sequence numbers grow with every insert: only a replay (or a store rebuilt
        // beside live writes) brings events the state may already hold.
        let max_seq = (0..n_old).map(|i| v.seq_at(i)).max().unwrap_or(i64::MIN);
        if new.iter().any(|e| e.seq <= max_seq) {
            let seen: HashSet<i64> = (0..n_old).map(|i| v.seq_at(i)).collect();
            new.retain(|e| !seen.contains(&e.seq));
        }
    }
    new.sort_by_key(|e| (e.e, e.c, e.seq));
    let src = Sources { old, new: &new };
    // The two-way merge of the sorted sources.
    let mut order = Vec::with_capacity(n_old + new.len());
    let (mut i, mut k) = (0, 0);
    while i < n_old || k < new.len() {
        let take_old =
            k == new.len() || (i < n_old && src.ecs(Pick::Old(i)) < src.ecs(Pick::New(k)));
        if take_old {
            order.push(Pick::Old(i));
            i += 1;
        } else {
            order.push(Pick::New(k));
            k += 1;
        }
    }
    let Some(&last) = order.last() else {
        return Some((encode(tags, &src, &[]), None));
    };
    let newest = src.ecs(last).0;
    let oldest = newest.saturating_sub(keep_ns);
    let cut = order.partition_point(|&p| src.ecs(p).0 < oldest);
    let mut extra: Vec<usize> = last_cols
        .iter()
        .flat_map(|&j| {
            let valid = |p: &Pick| src.valid(tags[j], j, *p);
            [
                order.iter().rposition(valid),
                order
                    .iter()
                    .rposition(|p| src.ecs(*p).0 < newest && valid(p)),
            ]
        })
        .flatten()
        .filter(|&at| at < cut)
        .collect();
    extra.sort_unstable();
    extra.dedup();
    let kept: Vec<Pick> = extra
        .into_iter()
        .map(|at| order[at])
        .chain(order[cut..].iter().copied())
        .collect();
    Some((encode(tags, &src, &kept), Some(newest)))
}

/// Encodes a state of the `events` (sorted, as [`super::state::State`] keeps them).
pub fn encode_events(tags: &[Tag], events: &[Event]) -> Vec<u8> {
    let src = Sources {
        old: None,
        new: events,
    };
    let picks: Vec<Pick> = (0..events.len()).map(Pick::New).collect();
    encode(tags, &src, &picks)
}

fn encode(tags: &[Tag], src: &Sources, picks: &[Pick]) -> Vec<u8> {
    let n = picks.len();
    let mut out = Vec::with_capacity(HEADER + n * (24 + 9 * tags.len()) + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    out.push(SHIFT);
    let ecs: Vec<(i64, i64, i64)> = picks.iter().map(|&p| src.ecs(p)).collect();
    for f in [
        |x: &(i64, i64, i64)| x.0,
        |x: &(i64, i64, i64)| x.1,
        |x: &(i64, i64, i64)| x.2,
    ] {
        for x in &ecs {
            out.extend_from_slice(&f(x).to_le_bytes());
        }
    }
    for (j, tag) in tags.iter().enumerate() {
        out.push(*tag as u8);
        let bits_at = out.len();
        out.resize(bits_at + n.div_ceil(8), 0);
        match tag {
            Tag::F64 | Tag::I64 => {
                for (i, &p) in picks.iter().enumerate() {
                    let w = src.word(j, p);
                    if w.is_some() {
                        out[bits_at + i / 8] |= 1 << (i % 8);
                    }
                    out.extend_from_slice(&w.unwrap_or(0).to_le_bytes());
                }
            }
            Tag::Bytes => {
                let mut off = 0u32;
                out.extend_from_slice(&off.to_le_bytes());
                for (i, &p) in picks.iter().enumerate() {
                    if let Some(b) = src.bytes(j, p) {
                        out[bits_at + i / 8] |= 1 << (i % 8);
                        off += b.len() as u32;
                    }
                    out.extend_from_slice(&off.to_le_bytes());
                }
                for &p in picks {
                    if let Some(b) = src.bytes(j, p) {
                        out.extend_from_slice(b);
                    }
                }
            }
        }
    }
    for (j, tag) in tags.iter().enumerate() {
        if *tag == Tag::Bytes {
            continue;
        }
        for block in picks.chunks_exact(1 << SHIFT) {
            summarize(*tag, block.iter().filter_map(|&p| src.word(j, p))).write(&mut out);
        }
    }
    out
}

/// The summary of one block's stored values (validity bit set) of a column: the
/// moments as a lookup accumulates them ([`Moments`]), and min and max.
pub(super) fn summarize(tag: Tag, words: impl Iterator<Item = u64>) -> Block {
    let mut m = Moments::default();
    let (mut min, mut max) = (0u64, 0u64);
    for w in words {
        let x = match tag {
            Tag::F64 => f64::from_bits(w),
            _ => w as i64 as f64,
        };
        if x.is_nan() {
            continue; // NaN is missing, as everywhere
        }
        if m.n == 0 {
            (min, max) = (w, w);
        } else if tag == Tag::F64 {
            min = f64::from_bits(min).min(x).to_bits();
            max = f64::from_bits(max).max(x).to_bits();
        } else {
            min = (min as i64).min(w as i64) as u64;
            max = (max as i64).max(w as i64) as u64;
        }
        m.push(x);
    }
    Block {
        cnt: m.n as u32,
        pinf: m.pinf as u32,
        ninf: m.ninf as u32,
        s: m.s,
        q: m.q,
        min,
        max,
    }
}
