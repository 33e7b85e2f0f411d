//! The per-key sweep: every label's window as an index range of its key's events, and
//! each op computed from prefix sums, a monotonic deque, distinct counts or a chain of
//! previous non-null events (see the module doc of `agg` for the algorithm and cost).

use std::collections::VecDeque;

use hashbrown::HashMap;
use rayon::prelude::*;

use super::plan::{Input, Kind, Plan, Prepared, Resolved};
use super::sums::Sums;
use super::Op;

/// No event (for `last`).
pub const NO_ROW: u32 = u32::MAX;

/// One aggregation's result, indexed by spine row.
pub enum Out {
    I64 {
        vals: Vec<i64>,
        valid: Vec<bool>,
    },
    F64 {
        vals: Vec<f64>,
        valid: Vec<bool>,
    },
    /// `last`: the event row, or NO_ROW.
    Rows(Vec<u32>),
    /// `last_k`: the event rows, newest first (empty: null).
    Lists(Vec<Vec<u32>>),
}

/// Raw pointers to output slots that the keys' tasks write disjointly.
pub(super) struct Slots<T>(*mut T);
// SAFETY: a Slots is only used to write slots that no other task writes (each spine
// row belongs to exactly one key, and each key is one task), while the owning Vec is
// alive and not otherwise accessed.
unsafe impl<T: Send> Send for Slots<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Slots<T> {}

impl<T> Slots<T> {
    fn of(v: &mut [T]) -> Self {
        Slots(v.as_mut_ptr())
    }
    /// SAFETY: `i` is in bounds and no other thread reads or writes slot `i`.
    #[inline]
    pub(super) unsafe fn set(&self, i: usize, value: T) {
        *self.0.add(i) = value;
    }
}

pub(super) enum Sink {
    I64(Slots<i64>, Slots<bool>),
    F64(Slots<f64>, Slots<bool>),
    Rows(Slots<u32>),
    Lists(Slots<Vec<u32>>),
}

impl Sink {
    /// SAFETY: as [`Slots::set`] for slot `row`.
    #[inline]
    pub(super) unsafe fn int(&self, row: usize, v: Option<i64>) {
        if let Sink::I64(vals, valid) = self {
            vals.set(row, v.unwrap_or(0));
            valid.set(row, v.is_some());
        }
    }
    /// SAFETY: as [`Slots::set`] for slot `row`.
    #[inline]
    pub(super) unsafe fn float(&self, row: usize, v: Option<f64>) {
        if let Sink::F64(vals, valid) = self {
            vals.set(row, v.unwrap_or(0.0));
            valid.set(row, v.is_some());
        }
    }
}

pub(super) fn new_out(op: Op, n: usize, int_input: bool) -> Out {
    match op {
        Op::Count | Op::Distinct => Out::I64 {
            vals: crate::huge::filled(n, 0),
            valid: crate::huge::filled(n, false),
        },
        Op::Min | Op::Max if int_input => Out::I64 {
            vals: crate::huge::filled(n, 0),
            valid: crate::huge::filled(n, false),
        },
        Op::Sum | Op::Mean | Op::Std | Op::Min | Op::Max => Out::F64 {
            vals: crate::huge::filled(n, 0.0),
            valid: crate::huge::filled(n, false),
        },
        Op::Last => Out::Rows(crate::huge::filled(n, NO_ROW)),
        Op::LastK(_) => Out::Lists(vec![Vec::new(); n]),
    }
}

/// Computes every aggregation for every spine row.
///
/// The sweep writes each label's results at its position in key order (`label_rows`
/// order: one key's labels are adjacent, so each task writes one contiguous range of
/// every output), and one pass per output then moves them to spine order: sequential
/// writes while sweeping instead of a random write per label and aggregation.
pub fn run(plan: &Plan, prepared: Prepared) -> Vec<Out> {
    let p = &prepared;
    let n = p.spine_ids.len();
    let m = p.label_rows.len();
    let int_input = |a: &Resolved| a.input.is_some_and(|i| plan.inputs[i].1 == Kind::I64);
    let mut outs: Vec<Out> = plan
        .aggs
        .iter()
        .map(|a| new_out(a.op, m, int_input(a)))
        .collect();
    let positions: Vec<u32> = (0..m as u32).collect();
    let sinks: Vec<Sink> = outs
        .iter_mut()
        .map(|o| match o {
            Out::I64 { vals, valid } => Sink::I64(Slots::of(vals), Slots::of(valid)),
            Out::F64 { vals, valid } => Sink::F64(Slots::of(vals), Slots::of(valid)),
            Out::Rows(r) => Sink::Rows(Slots::of(r)),
            Out::Lists(l) => Sink::Lists(Slots::of(l)),
        })
        .collect();
    let knowledge = plan.spec.knowledge_time;
    // Inputs whose prefix sums need squares (some std reads them).
    let squares: Vec<bool> = (0..plan.inputs.len())
        .map(|i| {
            plan.aggs
                .iter()
                .any(|a| a.op == Op::Std && a.input == Some(i))
        })
        .collect();
    // The longest finite window (None when some aggregation has no window: `last`).
    let longest = (plan.aggs.iter())
        .map(|a| (a.lags.1 != i64::MAX).then_some(a.lags.1))
        .collect::<Option<Vec<i64>>>()
        .map(|l| l.into_iter().max().unwrap_or(0));
    let tasks = tasks(p, knowledge, longest.is_some());
    // A hot key's parts are neighbours in `tasks`: they go first, one per rayon leaf (or
    // one thread would sweep them all in a row), chained with the other keys in key
    // order, which a thread done with its parts steals from.
    let (hot, cold): (Vec<_>, Vec<_>) = tasks
        .into_iter()
        .partition(|t| t.1 > 0 || t.2 < p.label_off[t.0 + 1] - p.label_off[t.0]);
    crate::trace::phase("agg   keys' sweeps", || {
        let run = |(k, from, to): (usize, usize, usize)| {
            let labels = &positions[p.label_off[k] + from..p.label_off[k] + to];
            if labels.is_empty() {
                return;
            }
            // A part of a hot key's labels reads its events from the oldest one
            // its first label's longest window holds (every later window starts
            // there or later: labels are in time order) ...
            let (lo, hi) = (p.event_off[k], p.event_off[k + 1]);
            let base = match longest {
                Some(w) if from > 0 => {
                    let t = p.label_t[labels[0] as usize];
                    let oldest = t.saturating_sub(w);
                    p.e[lo..hi].partition_point(|&x| x < oldest)
                }
                _ => 0,
            };
            // ... and up to the newest its last label can see.
            let top = if to - from < p.label_off[k + 1] - p.label_off[k] {
                let t = p.label_t[labels[labels.len() - 1] as usize];
                lo + p.e[lo..hi].partition_point(|&x| x <= t)
            } else {
                hi
            };
            let key = Key {
                p,
                lo: lo + base,
                hi: top.max(lo + base),
            };
            // Windows and prefix sums are shared by the aggregations that have the same
            // window or read the same column.
            let mut cache = Cache::default();
            for (a, sink) in plan.aggs.iter().zip(&sinks) {
                // SAFETY: the labels of key k are written by this task only.
                unsafe {
                    if knowledge {
                        key.naive(a, labels, sink)
                    } else {
                        key.sweep(a, labels, sink, &mut cache, &squares)
                    }
                }
            }
        };
        (hot.into_par_iter().with_max_len(1))
            .chain(cold.into_par_iter().with_min_len(16))
            .for_each(run);
    });
    drop(sinks);
    // The sorted events and inputs go before the outputs are copied to spine order.
    let Prepared { label_rows, .. } = prepared;
    crate::trace::phase("agg   spine order", || {
        outs.into_par_iter()
            .zip(plan.aggs.par_iter())
            .map(|(out, a)| {
                let spine = super::output::to_spine_order(out, a, &label_rows, n, int_input(a));
                super::output::release_freed();
                spine
            })
            .collect()
    })
}

/// A key with this many labels and events is swept in parts, in parallel.
const HOT_LABELS: usize = 8192;
const HOT_EVENTS: usize = 1 << 16;

/// The sweep's tasks: (key, first label, end label) of each key's labels in time order;
/// a hot key (skewed data: one key can hold a tenth of the events) is cut into parts of
/// at least HOT_LABELS labels, so its sweep runs on every thread instead of one. A
/// part reads the key's events from its first window's start (see `run`), which only
/// works when every aggregation has a finite window and labels have no knowledge time.
fn tasks(p: &Prepared, knowledge: bool, finite: bool) -> Vec<(usize, usize, usize)> {
    let parts = 4 * rayon::current_num_threads().max(1);
    let mut out = Vec::with_capacity(p.n_keys);
    for k in 0..p.n_keys {
        let labels = p.label_off[k + 1] - p.label_off[k];
        let events = p.event_off[k + 1] - p.event_off[k];
        if knowledge || !finite || labels < 2 * HOT_LABELS || events < HOT_EVENTS {
            out.push((k, 0, labels));
            continue;
        }
        let size = labels.div_ceil(parts).max(HOT_LABELS);
        out.extend(
            (0..labels)
                .step_by(size)
                .map(|a| (k, a, (a + size).min(labels))),
        );
    }
    out
}

/// A window's inclusive lag range.
type Lags = (i64, i64);

/// Per key: each distinct window's `(tail, head)` for every label (in label order),
/// each distinct newest lag's heads (windows that differ only in length share them:
/// with `closed = left` every window does), and each input's prefix sums.
#[derive(Default)]
struct Cache {
    windows: Vec<(Lags, Vec<(usize, usize)>)>,
    heads: Vec<(i64, Vec<usize>)>,
    sums: Vec<(usize, Sums)>,
}

/// One key's events: positions `lo..hi` of the prepared (sorted) arrays.
pub(super) struct Key<'p> {
    pub(super) p: &'p Prepared,
    pub(super) lo: usize,
    pub(super) hi: usize,
}

impl Key<'_> {
    fn e(&self) -> &[i64] {
        &self.p.e[self.lo..self.hi]
    }

    /// The window `[tail, head)` (key-local event indices) of a label at `t`.
    #[inline]
    pub(super) fn window(&self, t: i64, (min_lag, max_lag): (i64, i64)) -> (usize, usize) {
        let e = self.e();
        let newest = t.saturating_sub(min_lag);
        let oldest = t.saturating_sub(max_lag);
        let head = e.partition_point(|&x| x <= newest);
        let tail = if max_lag == i64::MAX {
            0
        } else {
            e[..head].partition_point(|&x| x < oldest)
        };
        (tail.min(head), head)
    }

    /// Each label's window head: how many events are at most `min_lag` before it.
    /// On a large key the head moves forward with one pointer, O(events + labels),
    /// reading the events once in order (a binary search per label would miss the
    /// cache at every step on a key with millions of events); a small key's events
    /// are in cache, where a binary search per label is cheaper.
    fn heads(&self, labels: &[u32], min_lag: i64) -> Vec<usize> {
        let e = self.e();
        let newest = |r: u32| self.p.label_t[r as usize].saturating_sub(min_lag);
        if e.len() < 4096 {
            return (labels.iter())
                .map(|&r| e.partition_point(|&x| x <= newest(r)))
                .collect();
        }
        let mut head = 0;
        (labels.iter())
            .map(|&r| {
                let newest = newest(r);
                while head < e.len() && e[head] <= newest {
                    head += 1;
                }
                head
            })
            .collect()
    }

    /// The windows of `labels` (in time order) given their `heads` (see
    /// [`Key::heads`]): each tail found the same way, below its head.
    fn windows(
        &self,
        labels: &[u32],
        (_, max_lag): (i64, i64),
        heads: &[usize],
    ) -> Vec<(usize, usize)> {
        let e = self.e();
        let oldest = |r: u32| self.p.label_t[r as usize].saturating_sub(max_lag);
        if max_lag == i64::MAX {
            return heads.iter().map(|&h| (0, h)).collect();
        }
        if e.len() < 4096 {
            return (labels.iter().zip(heads))
                .map(|(&r, &head)| (e[..head].partition_point(|&x| x < oldest(r)), head))
                .collect();
        }
        let mut tail = 0;
        (labels.iter().zip(heads))
            .map(|(&r, &head)| {
                let oldest = oldest(r);
                while tail < head && e[tail] < oldest {
                    tail += 1;
                }
                (tail.min(head), head)
            })
            .collect()
    }

    pub(super) fn input(&self, a: &Resolved) -> Option<&Input> {
        a.input.map(|i| &self.p.inputs[i])
    }

    #[inline]
    pub(super) fn valid(&self, input: Option<&Input>, i: usize) -> bool {
        input.is_none_or(|x| x.is_valid(self.lo + i))
    }

    /// The fast path: prefix sums, deques and chains over monotone windows.
    ///
    /// SAFETY: the caller is the only writer of `labels`' slots in `sink`.
    unsafe fn sweep(
        &self,
        a: &Resolved,
        labels: &[u32],
        sink: &Sink,
        cache: &mut Cache,
        squares: &[bool],
    ) {
        let m = self.hi - self.lo;
        let input = self.input(a);
        let w = match cache.windows.iter().position(|(l, _)| *l == a.lags) {
            Some(i) => i,
            None => {
                let h = match cache.heads.iter().position(|(l, _)| *l == a.lags.0) {
                    Some(h) => h,
                    None => {
                        cache.heads.push((a.lags.0, self.heads(labels, a.lags.0)));
                        cache.heads.len() - 1
                    }
                };
                let wins = self.windows(labels, a.lags, &cache.heads[h].1);
                cache.windows.push((a.lags, wins));
                cache.windows.len() - 1
            }
        };
        if matches!(a.op, Op::Sum | Op::Mean | Op::Std) {
            let i = a.input.expect("checked: a column");
            if !cache.sums.iter().any(|(j, _)| *j == i) {
                let x = &self.p.inputs[i];
                cache.sums.push((i, Sums::new(x, self.lo, m, squares[i])));
            }
        }
        let wins = &cache.windows[w].1;
        match a.op {
            Op::Count => {
                let cnt = self.valid_prefix(input);
                for (&r, &(tail, head)) in labels.iter().zip(wins) {
                    let c = match &cnt {
                        Some(c) => c[head] - c[tail],
                        None => (head - tail) as u32,
                    };
                    sink.int(r as usize, Some(c as i64));
                }
            }
            Op::Sum | Op::Mean | Op::Std => {
                let i = a.input.expect("checked: a column");
                let s = &cache
                    .sums
                    .iter()
                    .find(|(j, _)| *j == i)
                    .expect("made above")
                    .1;
                for (&r, &(tail, head)) in labels.iter().zip(wins) {
                    sink.float(r as usize, s.get(a.op, tail, head));
                }
            }
            Op::Min | Op::Max => {
                let x = input.expect("checked: a column");
                if matches!(sink, Sink::F64(..)) {
                    let v = &x.f64s[self.lo..self.hi];
                    self.extreme(
                        labels,
                        wins,
                        x,
                        |i, j| better(a.op, v[i], v[j]),
                        |i| sink.float(i.0, i.1.map(|j| v[j])),
                    );
                } else {
                    let v = &x.i64s[self.lo..self.hi];
                    self.extreme(
                        labels,
                        wins,
                        x,
                        |i, j| better(a.op, v[i], v[j]),
                        |i| sink.int(i.0, i.1.map(|j| v[j])),
                    );
                }
            }
            Op::Last | Op::LastK(_) => {
                let prev = self.prev_valid(input);
                for (&r, &(tail, head)) in labels.iter().zip(wins) {
                    let mut rows = Vec::new();
                    let want = if let Op::LastK(k) = a.op { k } else { 1 };
                    let mut j = prev[head];
                    while rows.len() < want && j > tail as u32 {
                        rows.push(self.p.event_rows[self.lo + j as usize - 1]);
                        j = prev[j as usize - 1];
                    }
                    match sink {
                        Sink::Rows(s) => s.set(r as usize, rows.first().copied().unwrap_or(NO_ROW)),
                        Sink::Lists(s) => s.set(r as usize, rows),
                        _ => unreachable!(),
                    }
                }
            }
            Op::Distinct => {
                let x = input.expect("checked: a column");
                let ids = &x.ids[self.lo..self.hi];
                let mut counts: HashMap<u32, u32> = HashMap::new();
                let (mut pushed, mut popped) = (0, 0);
                for (&r, &(tail, head)) in labels.iter().zip(wins) {
                    while pushed < head {
                        if x.is_valid(self.lo + pushed) {
                            *counts.entry(ids[pushed]).or_insert(0) += 1;
                        }
                        pushed += 1;
                    }
                    while popped < tail {
                        if x.is_valid(self.lo + popped) {
                            let c = counts.get_mut(&ids[popped]).expect("pushed before");
                            *c -= 1;
                            if *c == 0 {
                                counts.remove(&ids[popped]);
                            }
                        }
                        popped += 1;
                    }
                    sink.int(r as usize, Some(counts.len() as i64));
                }
            }
        }
    }

    /// Sliding min/max: `beats(i, j)` says event i's value is strictly better than
    /// j's; the result is the newest of the window's best values. A monotonic deque
    /// costs O(1) amortized per event up to the last head, whatever the windows'
    /// lengths; when the windows hold fewer events than that in all (short windows
    /// over a long history: a 1-hour window of a key with months of events) each is
    /// scanned instead, one comparison per event in it.
    fn extreme(
        &self,
        labels: &[u32],
        wins: &[(usize, usize)],
        x: &Input,
        beats: impl Fn(usize, usize) -> bool,
        mut emit: impl FnMut((usize, Option<usize>)),
    ) {
        let inside: usize = wins.iter().map(|&(tail, head)| head - tail).sum();
        if inside <= wins.last().map_or(0, |w| w.1) {
            for (&r, &(tail, head)) in labels.iter().zip(wins) {
                let mut best: Option<usize> = None;
                for i in tail..head {
                    if x.is_valid(self.lo + i) && best.is_none_or(|b| !beats(b, i)) {
                        best = Some(i);
                    }
                }
                emit((r as usize, best));
            }
            return;
        }
        let mut deque: VecDeque<usize> = VecDeque::new();
        // Events before the first window's tail are in no window (tails only move
        // forward): a part of a hot key, which starts at its longest window's oldest
        // event, skips them for its shorter windows.
        let mut pushed = wins.first().map_or(0, |w| w.0);
        for (&r, &(tail, head)) in labels.iter().zip(wins) {
            while pushed < head {
                if x.is_valid(self.lo + pushed) {
                    while deque.back().is_some_and(|&b| !beats(b, pushed)) {
                        deque.pop_back();
                    }
                    deque.push_back(pushed);
                }
                pushed += 1;
            }
            while deque.front().is_some_and(|&f| f < tail) {
                deque.pop_front();
            }
            emit((r as usize, deque.front().copied()));
        }
    }

    /// Prefix counts of valid values (None when every value is valid).
    fn valid_prefix(&self, input: Option<&Input>) -> Option<Vec<u32>> {
        let x = input?;
        x.valid.as_ref()?;
        let mut c = Vec::with_capacity(self.hi - self.lo + 1);
        c.push(0u32);
        for i in 0..self.hi - self.lo {
            let last = *c.last().expect("non-empty");
            c.push(last + u32::from(x.is_valid(self.lo + i)));
        }
        Some(c)
    }

    /// `prev[i]`: 1 + the index of the last valid event before `i` (0: none).
    fn prev_valid(&self, input: Option<&Input>) -> Vec<u32> {
        let m = self.hi - self.lo;
        let mut prev = Vec::with_capacity(m + 1);
        prev.push(0u32);
        for i in 0..m {
            let last = *prev.last().expect("non-empty");
            prev.push(if self.valid(input, i) {
                i as u32 + 1
            } else {
                last
            });
        }
        prev
    }
}

/// `a` must replace `b` at the back of a min (max) deque: it is no worse. (Equal
/// values keep the newer one; the value is the same either way.)
#[inline]
pub(super) fn better<T: PartialOrd>(op: Op, a: T, b: T) -> bool {
    match op {
        Op::Min => a < b,
        _ => a > b,
    }
}
