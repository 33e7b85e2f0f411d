//! Serving aggregations from stored states ([`super::state`]): a state is read in
//! place ([`StateView`]: the header parsed, the columns sliced, every slice
//! bounds-checked once), the window of a lookup found by two binary searches, and each
//! op computed from the block summaries inside the window and the events at its two
//! ends, straight from the bytes, by the rules of the offline sweep
//! ([`super::sums::window_value`]). [`matrix`] goes from keys to a float32 model input
//! in one call.

use std::collections::HashSet;

use super::dd::DD;
use super::layout::{Block, BLOCK_BYTES, HEADER, HEADER_V1, MAGIC, MAGIC_V1};
use super::state::{Event, Rd, Tag, Val};
use super::sums::window_value;
use super::{Closed, Op};
use crate::encode::segments::Lazy;

/// One op's value at a lookup.
#[derive(Clone, Debug, PartialEq)]
pub enum Served {
    Null,
    Int(i64),
    Float(f64),
    /// Indices of events (for last / last_k), newest first.
    Events(Vec<usize>),
}

/// The inclusive lag range of a window in nanoseconds (None: `last`, no window).
pub fn lags_ns(window_ns: Option<i64>, closed: Closed) -> (i64, i64) {
    let min = if closed == Closed::Left { 1 } else { 0 };
    match window_ns {
        None => (min, i64::MAX),
        Some(w) if closed == Closed::Right => (0, w - 1),
        Some(w) => (min, w),
    }
}

/// A stored state read in place: the serving path parses only the header and slices
/// the columns, then reads the window's values straight from the bytes (no copy, no
/// allocation per event). Every slice is bounds-checked once at parse time.
pub struct StateView<'a> {
    n: usize,
    e: &'a [u8],
    c: &'a [u8],
    seq: &'a [u8],
    cols: Vec<ColView<'a>>,
    /// log2 of the events per summarized block; 0 when the state has no summaries
    /// (format PSA1).
    shift: u32,
    /// The segment checks of a state read from a segmented row without checking its
    /// data first: every accessor touches the bytes it reads, and [`Self::damaged`]
    /// says whether any of them failed (None: the bytes were checked whole).
    lazy: Option<Lazy<'a>>,
}

struct ColView<'a> {
    tag: Tag,
    bits: &'a [u8],
    /// n × 8 bytes (numbers), or n + 1 u32 offsets (bytes).
    vals: &'a [u8],
    data: &'a [u8],
    /// One summary per full block (numeric columns of PSA2 states), BLOCK_BYTES each.
    blocks: &'a [u8],
}

#[inline]
fn word(b: &[u8], i: usize) -> i64 {
    i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

impl<'a> StateView<'a> {
    /// None when the bytes are not a state (damage). Cost: O(columns), plus O(n) for
    /// a string column's offsets; every slice is bounds-checked here, so reads cannot
    /// fail later. (The row's checksum, checked by the online store before, is what
    /// catches damaged values.)
    pub fn parse(bytes: &'a [u8]) -> Option<StateView<'a>> {
        Self::parse_lazy(bytes, None)
    }

    /// [`StateView::parse`] of bytes whose segments are checked as they are read
    /// (`lazy`, from the row they were read from): the header and the column
    /// directory here, the rest by the accessors. The caller checks
    /// [`StateView::damaged`] after its reads and discards them if it says so.
    pub fn parse_lazy(bytes: &'a [u8], lazy: Option<Lazy<'a>>) -> Option<StateView<'a>> {
        let mut r = Rd(bytes);
        // The header and the directory are checked as they are read (every read is
        // bounds-checked, so damage only leads to a result the caller discards).
        let touch = |part: &[u8], from: usize, to: usize| {
            if let Some(l) = &lazy {
                l.touch(part, from, to);
            }
        };
        let magic = r.take(4)?;
        let v2 = magic == MAGIC;
        if !v2 && magic != MAGIC_V1 {
            return None;
        }
        let n = r.u32()? as usize;
        let ncols = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        let shift = if v2 { u32::from(r.take(1)?[0]) } else { 0 };
        if v2 && !(1..=16).contains(&shift) {
            return None;
        }
        debug_assert_eq!(bytes.len() - r.0.len(), if v2 { HEADER } else { HEADER_V1 });
        touch(bytes, 0, bytes.len() - r.0.len());
        let e = r.take(n.checked_mul(8)?)?;
        let c = r.take(n.checked_mul(8)?)?;
        let seq = r.take(n.checked_mul(8)?)?;
        let mut cols = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let at = bytes.len() - r.0.len();
            touch(bytes, at, at + 1);
            let tag = Tag::from_code(r.take(1)?[0])?;
            let bits = r.take(n.div_ceil(8))?;
            let (vals, data) = match tag {
                Tag::Bytes => {
                    let offs = r.take((n + 1).checked_mul(4)?)?;
                    let off =
                        |i: usize| u32::from_le_bytes(offs[i * 4..i * 4 + 4].try_into().unwrap());
                    let total = off(n) as usize;
                    touch(offs, 0, offs.len());
                    if (0..n).any(|i| off(i) > off(i + 1)) {
                        return None;
                    }
                    (offs, r.take(total)?)
                }
                _ => (r.take(n.checked_mul(8)?)?, &[][..]),
            };
            cols.push(ColView {
                tag,
                bits,
                vals,
                data,
                blocks: &[],
            });
        }
        if v2 {
            let nb = n >> shift;
            for col in cols.iter_mut().filter(|c| c.tag != Tag::Bytes) {
                col.blocks = r.take(nb.checked_mul(BLOCK_BYTES)?)?;
            }
        }
        if !r.0.is_empty() {
            return None;
        }
        let view = StateView {
            n,
            e,
            c,
            seq,
            cols,
            shift,
            lazy,
        };
        // A PSA1 state is checked for order here (its reads scan); a PSA2 one is
        // sorted by construction and covered by the row checksum, so a lookup reads
        // only the part of it that its windows need.
        if !v2 && (1..n).any(|i| view.e_at(i - 1) > view.e_at(i)) {
            return None;
        }
        Some(view)
    }

    /// Whether bytes read from this view failed their segment check: every value
    /// read from it must then be discarded (the state is damaged).
    pub fn damaged(&self) -> bool {
        self.lazy.as_ref().is_some_and(Lazy::damaged)
    }

    /// Segments checked so far by a lazily checked view (0 otherwise).
    pub fn lazy_checked(&self) -> usize {
        self.lazy.as_ref().map_or(0, Lazy::checked)
    }

    /// Checks `part[from..to]` before it is read, when the view is lazily checked.
    #[inline]
    fn touch(&self, part: &[u8], from: usize, to: usize) {
        if let Some(l) = &self.lazy {
            l.touch(part, from, to);
        }
    }

    /// Word `i` of a column of 8-byte values.
    #[inline]
    fn word_at(&self, part: &[u8], i: usize) -> i64 {
        self.touch(part, i * 8, i * 8 + 8);
        word(part, i)
    }

    /// Validity bit `i` of column `j`.
    #[inline]
    fn bit(&self, j: usize, i: usize) -> bool {
        let bits = self.cols[j].bits;
        self.touch(bits, i / 8, i / 8 + 1);
        bits[i / 8] & (1 << (i % 8)) != 0
    }

    /// The bytes of event `i` of bytes column `j`.
    #[inline]
    fn bytes_at(&self, j: usize, i: usize) -> &'a [u8] {
        let c = &self.cols[j];
        self.touch(c.vals, i * 4, i * 4 + 8);
        let off =
            |k: usize| u32::from_le_bytes(c.vals[k * 4..k * 4 + 4].try_into().unwrap()) as usize;
        let (from, to) = (off(i), off(i + 1));
        self.touch(c.data, from, to);
        &c.data[from..to]
    }

    #[inline]
    pub(super) fn e_at(&self, i: usize) -> i64 {
        self.word_at(self.e, i)
    }

    #[inline]
    pub(super) fn c_at(&self, i: usize) -> i64 {
        self.word_at(self.c, i)
    }

    #[inline]
    pub(super) fn seq_at(&self, i: usize) -> i64 {
        self.word_at(self.seq, i)
    }

    /// Column `j` of event `i` as stored (numbers), None where the validity bit is off.
    #[inline]
    pub(super) fn stored_word(&self, j: usize, i: usize) -> Option<u64> {
        if self.cols[j].tag == Tag::Bytes || !self.bit(j, i) {
            return None;
        }
        Some(self.word_at(self.cols[j].vals, i) as u64)
    }

    /// Column `j` of event `i` as stored (bytes), None where the validity bit is off.
    #[inline]
    pub(super) fn stored_bytes(&self, j: usize, i: usize) -> Option<&'a [u8]> {
        if self.cols[j].tag != Tag::Bytes || !self.bit(j, i) {
            return None;
        }
        Some(self.bytes_at(j, i))
    }

    /// The summary of full block `b` of numeric column `j`.
    #[inline]
    fn block(&self, j: usize, b: usize) -> Block {
        let blocks = self.cols[j].blocks;
        self.touch(blocks, b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
        Block::read(&blocks[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES])
    }

    /// `[tail, head)` as (events to scan, blocks to read): the blocks inside the range
    /// and the events at its two ends outside them (all events when the column has no
    /// summaries).
    fn split(
        &self,
        j: usize,
        tail: usize,
        head: usize,
    ) -> (impl Iterator<Item = usize>, std::ops::Range<usize>) {
        let summarized = self.shift > 0 && !self.cols[j].blocks.is_empty();
        let b = 1usize << self.shift;
        let (bt, bh) = if summarized {
            (tail.div_ceil(b), head / b)
        } else {
            (0, 0)
        };
        if bt >= bh {
            return ((tail..head).chain(0..0), 0..0);
        }
        ((tail..bt * b).chain(bh * b..head), bt..bh)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn tag(&self, col: usize) -> Option<Tag> {
        self.cols.get(col).map(|c| c.tag)
    }

    pub fn tags(&self) -> Vec<Tag> {
        self.cols.iter().map(|c| c.tag).collect()
    }

    /// Event `i` as stored (a NaN stays a value, as it was written).
    pub fn event(&self, i: usize) -> Event {
        Event {
            e: self.e_at(i),
            c: self.c_at(i),
            seq: self.seq_at(i),
            vals: (0..self.cols.len()).map(|j| self.stored(j, i)).collect(),
        }
    }

    #[inline]
    fn valid(&self, j: usize, i: usize) -> bool {
        let c = &self.cols[j];
        self.bit(j, i)
            && (c.tag != Tag::F64 || !f64::from_bits(self.word_at(c.vals, i) as u64).is_nan())
    }

    #[inline]
    fn number(&self, j: usize, i: usize) -> f64 {
        let c = &self.cols[j];
        match c.tag {
            Tag::F64 => f64::from_bits(self.word_at(c.vals, i) as u64),
            _ => self.word_at(c.vals, i) as f64,
        }
    }

    /// Event `i`'s value of column `j`, Null when missing (NaN included).
    pub fn value(&self, j: usize, i: usize) -> Val {
        if !self.valid(j, i) {
            return Val::Null;
        }
        self.stored(j, i)
    }

    /// Event `i`'s value of column `j` as stored: Null only where the validity bit is off.
    fn stored(&self, j: usize, i: usize) -> Val {
        let c = &self.cols[j];
        if !self.bit(j, i) {
            return Val::Null;
        }
        match c.tag {
            Tag::F64 => Val::F(f64::from_bits(self.word_at(c.vals, i) as u64)),
            Tag::I64 => Val::I(self.word_at(c.vals, i)),
            Tag::Bytes => Val::B(self.bytes_at(j, i).to_vec()),
        }
    }

    /// The window `[tail, head)` of a lookup at `t`.
    pub fn window(&self, (min_lag, max_lag): (i64, i64), t: i64) -> (usize, usize) {
        let newest = t.saturating_sub(min_lag);
        let oldest = t.saturating_sub(max_lag);
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.e_at(mid) <= newest {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        let head = lo;
        if max_lag == i64::MAX {
            return (0, head);
        }
        let (mut lo, mut hi) = (0, head);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.e_at(mid) < oldest {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        (lo, head)
    }

    /// `op` over column `col` (None: rows) in the window of a lookup at `t`: the same
    /// rules as [`serve`] on the decoded state.
    pub fn serve(&self, op: Op, col: Option<usize>, lags: (i64, i64), t: i64) -> Served {
        let (tail, head) = self.window(lags, t);
        if let Some(j) = col {
            if j >= self.cols.len() {
                return Served::Null;
            }
        }
        let valid = |i: usize| col.is_none_or(|j| self.valid(j, i));
        match op {
            Op::Count if col.is_none() => Served::Int((head - tail) as i64),
            Op::Count => {
                let j = col.expect("a column");
                let (scan, blocks) = self.split(j, tail, head);
                let n = scan.filter(|&i| valid(i)).count()
                    + blocks.map(|b| self.block(j, b).cnt as usize).sum::<usize>();
                Served::Int(n as i64)
            }
            Op::Sum | Op::Mean | Op::Std => {
                let j = col.expect("a column");
                let (scan, blocks) = self.split(j, tail, head);
                let mut acc = Moments::default();
                for i in scan.filter(|&i| valid(i)) {
                    acc.push(self.number(j, i));
                }
                for b in blocks {
                    acc.merge(&self.block(j, b));
                }
                acc.get(op, || {
                    super::sums::two_pass_std(|| {
                        (tail..head)
                            .filter(move |&i| valid(i))
                            .map(move |i| self.number(j, i))
                    })
                })
            }
            Op::Min | Op::Max => {
                let j = col.expect("a column");
                let int = self.cols[j].tag == Tag::I64;
                let (scan, blocks) = self.split(j, tail, head);
                let words = scan
                    .filter(|&i| valid(i))
                    .map(|i| self.word_at(self.cols[j].vals, i) as u64)
                    .chain(blocks.filter_map(|b| {
                        let blk = self.block(j, b);
                        (blk.cnt > 0).then_some(if op == Op::Min { blk.min } else { blk.max })
                    }));
                let best = if int {
                    let it = words.map(|w| w as i64);
                    if op == Op::Min { it.min() } else { it.max() }.map(Served::Int)
                } else {
                    words
                        .map(f64::from_bits)
                        .reduce(|b, x| if op == Op::Min { b.min(x) } else { b.max(x) })
                        .map(Served::Float)
                };
                best.unwrap_or(Served::Null)
            }
            Op::Last | Op::LastK(_) => {
                let k = if let Op::LastK(k) = op { k } else { 1 };
                let picked: Vec<usize> = (tail..head).rev().filter(|&i| valid(i)).take(k).collect();
                if picked.is_empty() {
                    Served::Null
                } else {
                    Served::Events(picked)
                }
            }
            Op::Distinct => {
                let j = col.expect("a column");
                let set: HashSet<Vec<u8>> = (tail..head)
                    .filter(|&i| valid(i))
                    .map(|i| match self.value(j, i) {
                        Val::F(x) => (if x == 0.0 { 0.0f64 } else { x })
                            .to_bits()
                            .to_le_bytes()
                            .to_vec(),
                        Val::I(x) => x.to_le_bytes().to_vec(),
                        Val::B(b) => b,
                        Val::Null => Vec::new(),
                    })
                    .collect();
                Served::Int(set.len() as i64)
            }
        }
    }
}

/// Count, sum and sum of squares of a window's values, from events and block
/// summaries (double-double, ±inf counted apart as in the offline sweep).
#[derive(Default)]
pub(super) struct Moments {
    pub(super) n: u64,
    pub(super) pinf: u64,
    pub(super) ninf: u64,
    pub(super) s: DD,
    pub(super) q: DD,
}

impl Moments {
    #[inline]
    pub(super) fn push(&mut self, x: f64) {
        self.n += 1;
        if x == f64::INFINITY {
            self.pinf += 1;
        } else if x == f64::NEG_INFINITY {
            self.ninf += 1;
        } else {
            self.s = self.s.add_f64(x);
            self.q = self.q.add(DD::product(x, x));
        }
    }

    #[inline]
    fn merge(&mut self, b: &Block) {
        self.n += u64::from(b.cnt);
        self.pinf += u64::from(b.pinf);
        self.ninf += u64::from(b.ninf);
        self.s = self.s.add(b.s);
        self.q = self.q.add(b.q);
    }

    /// Sum, mean or std; `two_pass` computes the std from the window's values when
    /// the one-pass formula would lose digits (a spread far below the mean).
    fn get(&self, op: Op, two_pass: impl FnOnce() -> f64) -> Served {
        let squares = || {
            // Σx² - (Σx)²/n in double-double: each sum is within ~n·2^-104 of Σx² (all
            // terms of the second are bounded by it too), so the result keeps ten
            // digits unless it is below 1e10 times that noise.
            let noise = self.q.hi.abs() * f64::EPSILON.powi(2) * (self.n as f64 + 2.0);
            (self.q, noise * 1e10)
        };
        window_value(op, self.n, self.pinf, self.ninf, self.s, squares, two_pass)
            .map_or(Served::Null, Served::Float)
    }
}

/// Fills `out` (`keys × specs` float32, row-major) with aggregation features served
/// from the states stored in online table `table` at `now`: count and distinct are 0
/// for an entity with no state, everything else NaN when empty or null. `specs` are
/// (op, value column, lag range); `last` of a number gives that number. States are
/// read in place from the snapshot (no copy); from 8 entities on, entities are
/// served in parallel on the pool.
pub fn matrix(
    store: &crate::online::OnlineStore,
    table: &str,
    keys: &crate::online::Keys,
    specs: &[(Op, Option<usize>, (i64, i64))],
    now: i64,
    out: &mut [f32],
) -> crate::error::Result<()> {
    let rows = crate::online::read::RowsPlan::new(table);
    matrix_prepared(store, &rows, keys, specs, now, out)
}

/// [`matrix`] with the table resolved once for many calls (a prepared reader).
pub fn matrix_prepared(
    store: &crate::online::OnlineStore,
    rows: &crate::online::read::RowsPlan,
    keys: &crate::online::Keys,
    specs: &[(Op, Option<usize>, (i64, i64))],
    now: i64,
    out: &mut [f32],
) -> crate::error::Result<()> {
    use rayon::prelude::*;

    use crate::error::Error;

    let width = specs.len();
    if width == 0 {
        return Ok(());
    }
    let unreadable = || Error::CorruptStore {
        path: store.dir().display().to_string(),
        detail: format!(
            "an aggregation state of table '{}' is unreadable",
            rows.table()
        ),
    };
    let fill = |row: &mut [f32], view: Option<&StateView>| {
        for (slot, &(op, col, lags)) in row.iter_mut().zip(specs) {
            *slot = match view {
                None if matches!(op, Op::Count | Op::Distinct) => 0.0,
                None => f32::NAN,
                Some(v) => match v.serve(op, col, lags, now) {
                    Served::Int(x) => x as f32,
                    Served::Float(x) => x as f32,
                    Served::Null => f32::NAN,
                    Served::Events(ix) => match v.value(col.unwrap_or(0), ix[0]) {
                        Val::F(x) => x as f32,
                        Val::I(x) => x as f32,
                        _ => f32::NAN,
                    },
                },
            };
        }
    };
    let got = store.with_rows_prepared(rows, keys, now, |rows, def| {
        let state = def.schema.index_of("state").map_err(|_| unreadable())?;
        let one = |(row, found): (&mut [f32], &Option<crate::encode::row::RowView>)| {
            let view = match found {
                Some(r) if !r.is_null(state) => {
                    let lazy = r.segments().map(Lazy::new);
                    Some(StateView::parse_lazy(r.value(state), lazy).ok_or_else(unreadable)?)
                }
                _ => None,
            };
            fill(row, view.as_ref());
            if view.as_ref().is_some_and(StateView::damaged) {
                return Err(unreadable());
            }
            Ok(())
        };
        if rows.len() >= 8 {
            crate::online::env::pool().install(|| {
                out.par_chunks_mut(width)
                    .zip(rows.par_iter())
                    .try_for_each(one)
            })
        } else {
            out.chunks_mut(width).zip(rows.iter()).try_for_each(one)
        }
    });
    match got {
        Err(Error::UnknownTable { .. }) => {
            out.chunks_mut(width).for_each(|row| fill(row, None));
            Ok(())
        }
        other => other,
    }
}
