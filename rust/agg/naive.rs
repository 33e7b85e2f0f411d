//! The slow path for `knowledge_time`: an event's creation time can hide it from
//! some labels and not others, so each label's window is scanned event by event,
//! keeping the events created at or before the label's time: O(window) per label.

use super::plan::Resolved;
use super::sums::Sums;
use super::sweep::{better, Key, Sink, NO_ROW};
use super::Op;

impl Key<'_> {
    /// The slow path for knowledge time: each window scanned, keeping the events
    /// created at or before the label's time.
    ///
    /// SAFETY: as [`Key::sweep`].
    pub(super) unsafe fn naive(&self, a: &Resolved, labels: &[u32], sink: &Sink) {
        let input = self.input(a);
        let c = self
            .p
            .c
            .as_ref()
            .expect("checked: knowledge time has created times");
        for &r in labels {
            let t = self.p.label_t[r as usize];
            let (tail, head) = self.window(t, a.lags);
            let known: Vec<usize> = (tail..head)
                .filter(|&i| c[self.lo + i] <= t && self.valid(input, i))
                .collect();
            let row = r as usize;
            match a.op {
                Op::Count => sink.int(row, Some(known.len() as i64)),
                Op::Sum | Op::Mean | Op::Std => {
                    let x = input.expect("checked");
                    let mut s = Sums::empty();
                    for &i in &known {
                        s.push(x.f64s[self.lo + i]);
                    }
                    sink.float(row, s.get(a.op, 0, s.len()));
                }
                Op::Min | Op::Max => {
                    let x = input.expect("checked");
                    let best = |v: &dyn Fn(usize, usize) -> bool| {
                        known
                            .iter()
                            .copied()
                            .reduce(|b, i| if v(i, b) { i } else { b })
                    };
                    if x.i64s.is_empty() {
                        let v = &x.f64s[self.lo..self.hi];
                        sink.float(row, best(&|i, j| better(a.op, v[i], v[j])).map(|j| v[j]));
                    } else {
                        let v = &x.i64s[self.lo..self.hi];
                        sink.int(row, best(&|i, j| better(a.op, v[i], v[j])).map(|j| v[j]));
                    }
                }
                Op::Last | Op::LastK(_) => {
                    let want = if let Op::LastK(k) = a.op { k } else { 1 };
                    let rows: Vec<u32> = (known.iter().rev().take(want))
                        .map(|&i| self.p.event_rows[self.lo + i])
                        .collect();
                    match sink {
                        Sink::Rows(s) => s.set(row, rows.first().copied().unwrap_or(NO_ROW)),
                        Sink::Lists(s) => s.set(row, rows),
                        _ => unreachable!(),
                    }
                }
                Op::Distinct => {
                    let x = input.expect("checked");
                    let set: hashbrown::HashSet<u32> =
                        known.iter().map(|&i| x.ids[self.lo + i]).collect();
                    sink.int(row, Some(set.len() as i64));
                }
            }
        }
    }
}
