//! Prefix sums of one key's values for the sweep (count, sum, mean, std of any window
//! as a difference of two prefixes, in double-double), and the two-pass std used when
//! that difference would lose digits.

use super::dd::DD;
use super::plan::Input;
use super::Op;

/// Prefix sums of one key's values in double-double: finite values summed, values
/// and squares, and the infinities counted apart (so one does not poison every later
/// window's difference). When every value is present and finite (the usual case) the
/// counts are not kept: a window's count is its length.
pub(super) struct Sums {
    /// Whether `q` (the squares) is kept: only a std reads it.
    squares: bool,
    /// Every position holds a finite value: `cnt`, `pinf` and `ninf` stay `[0]`.
    dense: bool,
    /// Each position's value (0 where skipped), for the two-pass std.
    vals: Vec<f64>,
    cnt: Vec<u32>,
    pinf: Vec<u32>,
    ninf: Vec<u32>,
    s: Vec<DD>,
    q: Vec<DD>,
}

impl Sums {
    pub(super) fn empty() -> Sums {
        Sums {
            squares: true,
            dense: false,
            vals: Vec::new(),
            cnt: vec![0],
            pinf: vec![0],
            ninf: vec![0],
            s: vec![DD::ZERO],
            q: vec![DD::ZERO],
        }
    }

    pub(super) fn new(x: &Input, lo: usize, m: usize, squares: bool) -> Sums {
        let mut s = Sums::empty();
        s.squares = squares;
        let xs = &x.f64s[lo..lo + m];
        if x.valid.is_none() && xs.iter().all(|v| v.is_finite()) {
            s.dense = true;
            s.s.reserve_exact(m);
            let mut acc = DD::ZERO;
            s.s.extend(xs.iter().map(|&v| {
                acc = acc.add_f64(v);
                acc
            }));
            if squares {
                s.vals.extend_from_slice(xs);
                let mut acc = DD::ZERO;
                s.q.reserve_exact(m);
                s.q.extend(xs.iter().map(|&v| {
                    acc = acc.add(DD::product(v, v));
                    acc
                }));
            }
            return s;
        }
        for v in [&mut s.cnt, &mut s.pinf, &mut s.ninf] {
            v.reserve_exact(m);
        }
        s.s.reserve_exact(m);
        if squares {
            s.vals.reserve_exact(m);
            s.q.reserve_exact(m);
        }
        for i in 0..m {
            if x.is_valid(lo + i) {
                s.push(x.f64s[lo + i]);
            } else {
                s.skip();
            }
        }
        s
    }

    pub(super) fn len(&self) -> usize {
        self.s.len() - 1
    }

    /// (Not on a dense Sums: only [`Sums::new`] makes those.)
    pub(super) fn skip(&mut self) {
        let n = self.len();
        if self.squares {
            self.vals.push(0.0);
        }
        self.cnt.push(self.cnt[n]);
        self.pinf.push(self.pinf[n]);
        self.ninf.push(self.ninf[n]);
        self.s.push(self.s[n]);
        if self.squares {
            self.q.push(self.q[n]);
        }
    }

    pub(super) fn push(&mut self, v: f64) {
        let n = self.len();
        if self.squares {
            self.vals.push(v);
        }
        self.cnt.push(self.cnt[n] + 1);
        self.pinf.push(self.pinf[n] + u32::from(v == f64::INFINITY));
        self.ninf
            .push(self.ninf[n] + u32::from(v == f64::NEG_INFINITY));
        let finite = if v.is_finite() { v } else { 0.0 };
        self.s.push(self.s[n].add_f64(finite));
        if self.squares {
            self.q.push(self.q[n].add(DD::product(finite, finite)));
        }
    }

    /// Sum, mean or std of the values at `[tail, head)`.
    pub(super) fn get(&self, op: Op, tail: usize, head: usize) -> Option<f64> {
        let (n, pinf, ninf) = if self.dense {
            ((head - tail) as u64, 0, 0)
        } else {
            let d = |v: &[u32]| u64::from(v[head] - v[tail]);
            (d(&self.cnt), d(&self.pinf), d(&self.ninf))
        };
        let sum = self.s[head].sub(self.s[tail]);
        let squares = || {
            // The difference of prefix sums of squares is exact to ~2^-104 of the
            // prefixes; when the window's spread is not far above that (values tiny
            // next to the key's history, or a mean far above the spread), recompute it
            // from the window's values in two passes.
            let noise = (self.q[head].hi.abs() + self.q[tail].hi.abs()) * f64::EPSILON.powi(2);
            (self.q[head].sub(self.q[tail]), noise * 1e12)
        };
        window_value(op, n, pinf, ninf, sum, squares, || {
            self.two_pass(tail, head)
        })
    }

    /// The sample standard deviation of the values at `[tail, head)` in two passes
    /// (mean, then squared deviations), each summed in double-double.
    fn two_pass(&self, tail: usize, head: usize) -> f64 {
        let values = || {
            (tail..head)
                .filter(|&i| self.dense || self.cnt[i + 1] > self.cnt[i])
                .map(|i| self.vals[i])
        };
        two_pass_std(values)
    }
}

/// Sum, mean or sample std of a window's values from its moments — `n` values, of
/// which `pinf` are +inf and `ninf` -inf, `sum` the double-double sum of the finite
/// ones — the same rules offline (prefix differences) and online (block summaries).
/// For std, `squares()` gives the sum of their squares and the level of
/// Σx² - (Σx)²/n under which that formula has lost digits, and `two_pass()` the std
/// recomputed from the values then. One infinity makes the window infinite (NaN for
/// std, or when both signs are present). None when empty, or one value for std.
pub(super) fn window_value(
    op: Op,
    n: u64,
    pinf: u64,
    ninf: u64,
    sum: DD,
    squares: impl FnOnce() -> (DD, f64),
    two_pass: impl FnOnce() -> f64,
) -> Option<f64> {
    if n == 0 || (op == Op::Std && n < 2) {
        return None;
    }
    if pinf > 0 || ninf > 0 {
        return Some(match (op, pinf > 0, ninf > 0) {
            (Op::Std, ..) | (_, true, true) => f64::NAN,
            (_, true, false) => f64::INFINITY,
            _ => f64::NEG_INFINITY,
        });
    }
    let nf = n as f64;
    Some(match op {
        Op::Sum => sum.value(),
        Op::Mean => sum.div_f64(nf).value(),
        _ => {
            let (q, limit) = squares();
            let ss = q.sub(sum.mul(sum).div_f64(nf));
            if ss.value() <= limit {
                return Some(two_pass());
            }
            ss.div_f64(nf - 1.0).value().max(0.0).sqrt()
        }
    })
}

/// Sample std of `values()` (iterated twice), at least two values, all finite.
pub fn two_pass_std<I: Iterator<Item = f64>>(values: impl Fn() -> I) -> f64 {
    let (mut s, mut n) = (DD::ZERO, 0usize);
    for x in values() {
        s = s.add_f64(x);
        n += 1;
    }
    let mean = s.div_f64(n as f64);
    let mut ss = DD::ZERO;
    for x in values() {
        let d = DD { hi: x, lo: 0.0 }.sub(mean);
        ss = ss.add(d.mul(d));
    }
    ss.div_f64(n as f64 - 1.0).value().max(0.0).sqrt()
}
