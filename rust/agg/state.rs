//! Online aggregation state: per entity, the raw events its windows can still see,
//! kept in the online store as one binary value, merged on insert and aggregated at
//! read time by the same rules as the offline sweep.
//!
//! **What is kept.** For a key whose newest event is at `E`, every later lookup is at
//! some `T >= E`, whose windows `[T - W, T)` start at or after `E - W`: events older
//! than `E - Wmax` (the longest window) can never count again and are dropped, except
//! each `last` column's newest non-null event (`last` has no window). So state is
//! bounded by the events of one longest window per key. Late events merge in at their
//! place; an event already present (same insertion sequence number) is not added
//! twice, so replaying a commit changes nothing.
//!
//! **Reads** compute each op over the window's index range (two binary searches):
//! O(events in the window) per feature, exact (sums in double-double, as offline).
//!
//! **Format** (little-endian): `"PSA1"`, n: u32, columns: u16; event times, created
//! times and sequence numbers (n × i64 each, sorted by (event, created, sequence));
//! then per column a tag (0 f64, 1 i64, 2 bytes), a validity bitmap and the values
//! (n × 8 bytes, or n + 1 u32 offsets and the bytes). Every read is bounds-checked: a
//! damaged value is an error, never a crash or a wrong answer.

use std::collections::HashSet;

use super::dd::DD;
use super::{Closed, Op};

const MAGIC: &[u8; 4] = b"PSA1";

/// One value of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    F(f64),
    I(i64),
    B(Vec<u8>),
}

impl Val {
    fn valid(&self) -> bool {
        match self {
            Val::Null => false,
            Val::F(x) => !x.is_nan(),
            _ => true,
        }
    }
}

/// The column kinds a state stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    F64 = 0,
    I64 = 1,
    Bytes = 2,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub e: i64,
    pub c: i64,
    pub seq: i64,
    pub vals: Vec<Val>,
}

/// A decoded state: events sorted by (e, c, seq).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub tags: Vec<Tag>,
    pub events: Vec<Event>,
}

struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64s(&mut self, n: usize) -> Option<Vec<i64>> {
        let b = self.take(n.checked_mul(8)?)?;
        Some(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }
}

impl State {
    pub fn new(tags: Vec<Tag>) -> State {
        State {
            tags,
            events: Vec::new(),
        }
    }

    /// Parses a stored state; None when the bytes are not one (damage).
    pub fn decode(bytes: &[u8]) -> Option<State> {
        let mut r = Rd(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let n = r.u32()? as usize;
        let ncols = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        if n > bytes.len() / 24 {
            return None;
        }
        let e = r.i64s(n)?;
        let c = r.i64s(n)?;
        let seq = r.i64s(n)?;
        let mut tags = Vec::with_capacity(ncols);
        let mut cols: Vec<Vec<Val>> = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let tag = match r.take(1)?[0] {
                0 => Tag::F64,
                1 => Tag::I64,
                2 => Tag::Bytes,
                _ => return None,
            };
            let bits = r.take(n.div_ceil(8))?;
            let valid = |i: usize| bits[i / 8] & (1 << (i % 8)) != 0;
            let col: Vec<Val> = match tag {
                Tag::F64 | Tag::I64 => {
                    let raw = r.i64s(n)?;
                    (0..n)
                        .map(|i| match (valid(i), tag) {
                            (false, _) => Val::Null,
                            (true, Tag::F64) => Val::F(f64::from_bits(raw[i] as u64)),
                            _ => Val::I(raw[i]),
                        })
                        .collect()
                }
                Tag::Bytes => {
                    let mut offs = Vec::with_capacity(n + 1);
                    for _ in 0..=n {
                        offs.push(r.u32()? as usize);
                    }
                    let total = *offs.last()?;
                    let data = r.take(total)?;
                    let mut col = Vec::with_capacity(n);
                    for i in 0..n {
                        let (a, b) = (offs[i], offs[i + 1]);
                        if a > b || b > total {
                            return None;
                        }
                        col.push(if valid(i) {
                            Val::B(data[a..b].to_vec())
                        } else {
                            Val::Null
                        });
                    }
                    col
                }
            };
            tags.push(tag);
            cols.push(col);
        }
        if !r.0.is_empty() {
            return None;
        }
        let mut events: Vec<Event> = (0..n)
            .map(|i| Event {
                e: e[i],
                c: c[i],
                seq: seq[i],
                vals: Vec::with_capacity(ncols),
            })
            .collect();
        for col in cols {
            for (ev, v) in events.iter_mut().zip(col) {
                ev.vals.push(v);
            }
        }
        let sorted = events
            .windows(2)
            .all(|w| (w[0].e, w[0].c, w[0].seq) < (w[1].e, w[1].c, w[1].seq));
        sorted.then_some(State { tags, events })
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.events.len();
        let mut out = Vec::with_capacity(16 + n * (24 + 9 * self.tags.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&(self.tags.len() as u16).to_le_bytes());
        for f in [|e: &Event| e.e, |e: &Event| e.c, |e: &Event| e.seq] {
            for ev in &self.events {
                out.extend_from_slice(&f(ev).to_le_bytes());
            }
        }
        for (j, tag) in self.tags.iter().enumerate() {
            out.push(*tag as u8);
            let mut bits = vec![0u8; n.div_ceil(8)];
            for (i, ev) in self.events.iter().enumerate() {
                if !matches!(ev.vals[j], Val::Null) {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            out.extend_from_slice(&bits);
            match tag {
                Tag::F64 | Tag::I64 => {
                    for ev in &self.events {
                        let raw = match &ev.vals[j] {
                            Val::F(x) => x.to_bits() as i64,
                            Val::I(x) => *x,
                            _ => 0,
                        };
                        out.extend_from_slice(&raw.to_le_bytes());
                    }
                }
                Tag::Bytes => {
                    let mut off = 0u32;
                    out.extend_from_slice(&off.to_le_bytes());
                    for ev in &self.events {
                        if let Val::B(b) = &ev.vals[j] {
                            off += b.len() as u32;
                        }
                        out.extend_from_slice(&off.to_le_bytes());
                    }
                    for ev in &self.events {
                        if let Val::B(b) = &ev.vals[j] {
                            out.extend_from_slice(b);
                        }
                    }
                }
            }
        }
        out
    }

    /// Adds `new` events (any order; ones already present by sequence number are
    /// skipped), then drops what no future lookup can see: events older than the
    /// newest minus `keep_ns`, except each column of `last_cols`' newest valid one.
    pub fn merge(&mut self, new: Vec<Event>, keep_ns: i64, last_cols: &[usize]) {
        let seen: HashSet<i64> = self.events.iter().map(|e| e.seq).collect();
        self.events
            .extend(new.into_iter().filter(|e| !seen.contains(&e.seq)));
        self.events.sort_by_key(|e| (e.e, e.c, e.seq));
        let Some(newest) = self.events.last().map(|e| e.e) else {
            return;
        };
        let oldest = newest.saturating_sub(keep_ns);
        let mut keep: Vec<bool> = self.events.iter().map(|e| e.e >= oldest).collect();
        for &j in last_cols {
            if let Some(i) = self.events.iter().rposition(|e| e.vals[j].valid()) {
                keep[i] = true;
            }
        }
        let mut i = 0;
        self.events.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    /// The newest event time (the state's stamp in the online store).
    pub fn newest(&self) -> Option<i64> {
        self.events.last().map(|e| e.e)
    }
}

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

/// Computes `op` over column `col` (None: count rows) of `state` at time `t`.
pub fn serve(state: &State, op: Op, col: Option<usize>, lags: (i64, i64), t: i64) -> Served {
    let ev = &state.events;
    let newest = t.saturating_sub(lags.0);
    let oldest = t.saturating_sub(lags.1);
    let head = ev.partition_point(|e| e.e <= newest);
    let tail = if lags.1 == i64::MAX {
        0
    } else {
        ev[..head].partition_point(|e| e.e < oldest)
    };
    let window = &ev[tail..head];
    let vals = || {
        window
            .iter()
            .filter_map(move |e| col.map(|j| &e.vals[j]).filter(|v| v.valid()))
    };
    match op {
        Op::Count => Served::Int(match col {
            None => window.len() as i64,
            Some(_) => vals().count() as i64,
        }),
        Op::Sum | Op::Mean | Op::Std => {
            let (mut n, mut pinf, mut ninf) = (0usize, false, false);
            let (mut s, mut q) = (DD::ZERO, DD::ZERO);
            for v in vals() {
                let x = match v {
                    Val::F(x) => *x,
                    Val::I(x) => *x as f64,
                    _ => continue,
                };
                n += 1;
                if x == f64::INFINITY {
                    pinf = true;
                } else if x == f64::NEG_INFINITY {
                    ninf = true;
                } else {
                    s = s.add_f64(x);
                    q = q.add(DD::product(x, x));
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
                    vals().filter_map(|v| match v {
                        Val::F(x) => Some(*x),
                        Val::I(x) => Some(*x as f64),
                        _ => None,
                    })
                }),
            })
        }
        Op::Min | Op::Max => {
            let pick = |a: f64, b: f64| if op == Op::Min { a.min(b) } else { a.max(b) };
            let mut best_f: Option<f64> = None;
            let mut best_i: Option<i64> = None;
            for v in vals() {
                match v {
                    Val::F(x) => best_f = Some(best_f.map_or(*x, |b| pick(b, *x))),
                    Val::I(x) => {
                        best_i = Some(best_i.map_or(*x, |b| {
                            if op == Op::Min {
                                b.min(*x)
                            } else {
                                b.max(*x)
                            }
                        }))
                    }
                    _ => {}
                }
            }
            match (best_f, best_i) {
                (Some(f), _) => Served::Float(f),
                (_, Some(i)) => Served::Int(i),
                _ => Served::Null,
            }
        }
        Op::Last | Op::LastK(_) => {
            let k = if let Op::LastK(k) = op { k } else { 1 };
            let j = col.expect("last reads a column");
            let picked: Vec<usize> = (tail..head)
                .rev()
                .filter(|&i| ev[i].vals[j].valid())
                .take(k)
                .collect();
            if picked.is_empty() {
                Served::Null
            } else {
                Served::Events(picked)
            }
        }
        Op::Distinct => {
            let mut set: HashSet<Vec<u8>> = HashSet::new();
            for v in vals() {
                set.insert(match v {
                    Val::F(x) => (if *x == 0.0 { 0.0f64 } else { *x })
                        .to_bits()
                        .to_le_bytes()
                        .to_vec(),
                    Val::I(x) => x.to_le_bytes().to_vec(),
                    Val::B(b) => b.clone(),
                    Val::Null => continue,
                });
            }
            Served::Int(set.len() as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(e: i64, seq: i64, x: Option<f64>, s: &str) -> Event {
        Event {
            e,
            c: 0,
            seq,
            vals: vec![x.map_or(Val::Null, Val::F), Val::B(s.as_bytes().to_vec())],
        }
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_detected() {
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![ev(5, 1, Some(1.5), "a"), ev(3, 2, None, "bc")],
            100,
            &[],
        );
        let bytes = s.encode();
        assert_eq!(State::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(State::decode(&bytes[..cut]).is_none());
        }
    }

    #[test]
    fn merge_is_idempotent_and_prunes_to_the_longest_window() {
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![ev(10, 1, Some(1.0), "a"), ev(100, 2, Some(2.0), "b")],
            50,
            &[],
        );
        assert_eq!(s.events.len(), 1);
        let before = s.clone();
        s.merge(vec![ev(100, 2, Some(2.0), "b")], 50, &[]);
        assert_eq!(s, before);
        // `last` keeps its column's newest valid event even when old.
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![ev(10, 1, Some(1.0), "a"), ev(100, 2, None, "b")],
            50,
            &[0],
        );
        assert_eq!(s.events.len(), 2);
        let got = serve(&s, Op::Last, Some(0), lags_ns(None, Closed::Left), 200);
        assert_eq!(got, Served::Events(vec![0]));
    }

    #[test]
    fn windows_at_a_lookup() {
        let mut s = State::new(vec![Tag::F64, Tag::Bytes]);
        s.merge(
            vec![
                ev(10, 1, Some(1.0), "a"),
                ev(20, 2, Some(2.0), "b"),
                ev(30, 3, Some(4.0), "a"),
            ],
            1000,
            &[],
        );
        let at = |op, w, closed, t| serve(&s, op, Some(0), lags_ns(Some(w), closed), t);
        assert_eq!(at(Op::Sum, 10, Closed::Left, 30), Served::Float(2.0));
        assert_eq!(at(Op::Sum, 10, Closed::Both, 30), Served::Float(6.0));
        assert_eq!(at(Op::Sum, 10, Closed::Right, 30), Served::Float(4.0));
        assert_eq!(at(Op::Count, 100, Closed::Left, 31), Served::Int(3));
        assert_eq!(
            serve(
                &s,
                Op::Distinct,
                Some(1),
                lags_ns(Some(100), Closed::Left),
                31
            ),
            Served::Int(2)
        );
        assert_eq!(at(Op::Max, 100, Closed::Left, 25), Served::Float(2.0));
    }
}

/// A stored state read in place: the serving path parses only the header and slices
/// the columns, then reads the window's values straight from the bytes (no copy, no
/// allocation per event). Every slice is bounds-checked once at parse time.
pub struct StateView<'a> {
    n: usize,
    e: &'a [u8],
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
        r.take(n.checked_mul(16)?)?; // created times and sequence numbers
        let mut cols = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let tag = match r.take(1)?[0] {
                0 => Tag::F64,
                1 => Tag::I64,
                2 => Tag::Bytes,
                _ => return None,
            };
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
        Some(StateView { n, e, cols })
    }

    pub fn tag(&self, col: usize) -> Option<Tag> {
        self.cols.get(col).map(|c| c.tag)
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

    /// Event `i`'s value of column `j` (valid or not).
    pub fn value(&self, j: usize, i: usize) -> Val {
        let c = &self.cols[j];
        if !self.valid(j, i) {
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

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn the_view_serves_what_the_decoded_state_serves() {
        let mut s = State::new(vec![Tag::F64, Tag::I64, Tag::Bytes]);
        let evs = (0..50)
            .map(|i| Event {
                e: (i * 7) % 40,
                c: 0,
                seq: i,
                vals: vec![
                    if i % 5 == 0 {
                        Val::Null
                    } else {
                        Val::F(i as f64 * 0.5)
                    },
                    Val::I(100 - i),
                    Val::B(format!("m{}", i % 3).into_bytes()),
                ],
            })
            .collect();
        s.merge(evs, 1000, &[]);
        let bytes = s.encode();
        let v = StateView::parse(&bytes).unwrap();
        let ops = [
            Op::Count,
            Op::Sum,
            Op::Mean,
            Op::Std,
            Op::Min,
            Op::Max,
            Op::Last,
            Op::LastK(3),
            Op::Distinct,
        ];
        for op in ops {
            for col in [Some(0), Some(1), Some(2)] {
                if matches!(op, Op::Sum | Op::Mean | Op::Std | Op::Min | Op::Max) && col == Some(2)
                {
                    continue;
                }
                for closed in [Closed::Left, Closed::Right, Closed::Both] {
                    for t in [0, 10, 25, 39, 40, 100] {
                        let lags = lags_ns(if op == Op::Last { None } else { Some(12) }, closed);
                        assert_eq!(
                            v.serve(op, col, lags, t),
                            serve(&s, op, col, lags, t),
                            "{op:?} {col:?} {t}"
                        );
                    }
                }
            }
        }
        for cut in 0..bytes.len() {
            assert!(StateView::parse(&bytes[..cut]).is_none());
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
