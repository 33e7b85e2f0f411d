//! Serving aggregations from stored states ([`super::state`]): a state is read in
//! place ([`StateView`]: the header parsed, the columns sliced, every slice
//! bounds-checked once), the window of a lookup found by two binary searches, and each
//! op computed over the window's events straight from the bytes, by the rules of the
//! offline sweep. [`matrix`] goes from keys to a float32 model input in one call.

use std::collections::HashSet;

use super::dd::DD;
use super::state::{Event, Rd, Tag, Val, MAGIC};
use super::{Closed, Op};

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
}

struct ColView<'a> {
    tag: Tag,
    bits: &'a [u8],
    /// n × 8 bytes (numbers), or n + 1 u32 offsets (bytes).
    vals: &'a [u8],
    data: &'a [u8],
}

#[inline]
fn word(b: &[u8], i: usize) -> i64 {
    i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

impl<'a> StateView<'a> {
    /// None when the bytes are not a state (damage).
    pub fn parse(bytes: &'a [u8]) -> Option<StateView<'a>> {
        let mut r = Rd(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let n = r.u32()? as usize;
        let ncols = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        let e = r.take(n.checked_mul(8)?)?;
        let c = r.take(n.checked_mul(8)?)?;
        let seq = r.take(n.checked_mul(8)?)?;
        let mut cols = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let tag = Tag::from_code(r.take(1)?[0])?;
            let bits = r.take(n.div_ceil(8))?;
            let (vals, data) = match tag {
                Tag::Bytes => {
                    let offs = r.take((n + 1).checked_mul(4)?)?;
                    let off =
                        |i: usize| u32::from_le_bytes(offs[i * 4..i * 4 + 4].try_into().unwrap());
                    let total = off(n) as usize;
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
            });
        }
        if !r.0.is_empty() || (1..n).any(|i| word(e, i - 1) > word(e, i)) {
            return None;
        }
        Some(StateView { n, e, c, seq, cols })
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
            e: word(self.e, i),
            c: word(self.c, i),
            seq: word(self.seq, i),
            vals: (0..self.cols.len()).map(|j| self.stored(j, i)).collect(),
        }
    }

    #[inline]
    fn e(&self, i: usize) -> i64 {
        word(self.e, i)
    }

    #[inline]
    fn valid(&self, j: usize, i: usize) -> bool {
        let c = &self.cols[j];
        c.bits[i / 8] & (1 << (i % 8)) != 0
            && (c.tag != Tag::F64 || !f64::from_bits(word(c.vals, i) as u64).is_nan())
    }

    #[inline]
    fn number(&self, j: usize, i: usize) -> f64 {
        let c = &self.cols[j];
        match c.tag {
            Tag::F64 => f64::from_bits(word(c.vals, i) as u64),
            _ => word(c.vals, i) as f64,
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
        if c.bits[i / 8] & (1 << (i % 8)) == 0 {
            return Val::Null;
        }
        match c.tag {
            Tag::F64 => Val::F(f64::from_bits(word(c.vals, i) as u64)),
            Tag::I64 => Val::I(word(c.vals, i)),
            Tag::Bytes => {
                let off = |k: usize| {
                    u32::from_le_bytes(c.vals[k * 4..k * 4 + 4].try_into().unwrap()) as usize
                };
                Val::B(c.data[off(i)..off(i + 1)].to_vec())
            }
        }
    }

    /// The window `[tail, head)` of a lookup at `t`.
    pub fn window(&self, (min_lag, max_lag): (i64, i64), t: i64) -> (usize, usize) {
        let newest = t.saturating_sub(min_lag);
        let oldest = t.saturating_sub(max_lag);
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.e(mid) <= newest {
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
            if self.e(mid) < oldest {
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
            Op::Count => Served::Int((tail..head).filter(|&i| valid(i)).count() as i64),
            Op::Sum | Op::Mean | Op::Std => {
                let j = col.expect("a column");
                let (mut n, mut pinf, mut ninf) = (0usize, false, false);
                let (mut s, mut q) = (DD::ZERO, DD::ZERO);
                for i in (tail..head).filter(|&i| valid(i)) {
                    let x = self.number(j, i);
                    n += 1;
                    if x == f64::INFINITY {
                        pinf = true;
                    } else if x == f64::NEG_INFINITY {
                        ninf = true;
                    } else {
                        s = s.add_f64(x);
                        if op == Op::Std {
                            q = q.add(DD::product(x, x));
                        }
                    }
                }
                if n == 0 || (op == Op::Std && n < 2) {
                    return Served::Null;
                }
                if pinf || ninf {
                    return Served::Float(match (op, pinf, ninf) {
                        (Op::Std, ..) | (_, true, true) => f64::NAN,
                        (_, true, false) => f64::INFINITY,
                        _ => f64::NEG_INFINITY,
                    });
                }
                let nf = n as f64;
                Served::Float(match op {
                    Op::Sum => s.value(),
                    Op::Mean => s.div_f64(nf).value(),
                    _ => super::sweep::two_pass_std(|| {
                        (tail..head)
                            .filter(move |&i| valid(i))
                            .map(move |i| self.number(j, i))
                    }),
                })
            }
            Op::Min | Op::Max => {
                let j = col.expect("a column");
                let c = &self.cols[j];
                let mut it = (tail..head).filter(|&i| valid(i));
                let Some(first) = it.next() else {
                    return Served::Null;
                };
                if c.tag == Tag::I64 {
                    let v = it.fold(word(c.vals, first), |b, i| {
                        let x = word(c.vals, i);
                        if op == Op::Min {
                            b.min(x)
                        } else {
                            b.max(x)
                        }
                    });
                    Served::Int(v)
                } else {
                    let v = it.fold(self.number(j, first), |b, i| {
                        let x = self.number(j, i);
                        if op == Op::Min {
                            b.min(x)
                        } else {
                            b.max(x)
                        }
                    });
                    Served::Float(v)
                }
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

/// Fills `out` (`keys × specs` float32, row-major) with aggregation features served
/// from the states stored in online table `table` at `now`: count and distinct are 0
/// for an entity with no state, everything else NaN when empty or null. `specs` are
/// (op, value column, lag range); `last` of a number gives that number.
pub fn matrix(
    store: &crate::online::OnlineStore,
    table: &str,
    keys: &crate::online::Keys,
    specs: &[(Op, Option<usize>, (i64, i64))],
    now: i64,
    out: &mut [f32],
) -> crate::error::Result<()> {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    let batch = match store.read(table, keys, Some(&["state".to_string()]), None, now) {
        Ok(b) => Some(b),
        Err(crate::error::Error::UnknownTable { .. }) => None,
        Err(e) => return Err(e),
    };
    let states = batch.as_ref().map(|b| b.column(0).as_binary::<i32>());
    let width = specs.len();
    for (i, row) in out.chunks_mut(width.max(1)).enumerate() {
        let view = match states {
            Some(s) if s.is_valid(i) => Some(StateView::parse(s.value(i)).ok_or_else(|| {
                crate::error::Error::CorruptStore {
                    path: store.dir().display().to_string(),
                    detail: format!("an aggregation state of table '{table}' is unreadable"),
                }
            })?),
            _ => None,
        };
        for (slot, &(op, col, lags)) in row.iter_mut().zip(specs) {
            *slot = match &view {
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
    }
    Ok(())
}
