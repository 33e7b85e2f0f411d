//! Double-double arithmetic: a value as an unevaluated sum `hi + lo` of two f64s,
//! about 106 bits of significand. Window sums are differences of prefix sums; kept
//! in double-double, a difference loses only `2^-106 * |prefix|`, so a window's sum
//! stays within ~1e-16 of the exact (`math.fsum`) value unless the prefix sum of its
//! key exceeds the window's sum by more than ~10^15 (documented in `mod.rs`).
//!
//! The error-free transformations are Knuth's two-sum and the FMA two-product.

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DD {
    pub hi: f64,
    pub lo: f64,
}

#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

#[inline]
fn quick_two_sum(a: f64, b: f64) -> DD {
    let s = a + b;
    DD {
        hi: s,
        lo: b - (s - a),
    }
}

// Named methods, not operator traits: every double-double step stays visible at the
// call site, where a `+` would read like f64 arithmetic.
#[allow(clippy::should_implement_trait)]
impl DD {
    pub const ZERO: DD = DD { hi: 0.0, lo: 0.0 };

    /// `a * b`, exactly.
    #[inline]
    pub fn product(a: f64, b: f64) -> DD {
        let p = a * b;
        DD {
            hi: p,
            lo: a.mul_add(b, -p),
        }
    }

    #[inline]
    pub fn add_f64(self, b: f64) -> DD {
        let (s, e) = two_sum(self.hi, b);
        quick_two_sum(s, e + self.lo)
    }

    #[inline]
    pub fn add(self, o: DD) -> DD {
        let (s, e) = two_sum(self.hi, o.hi);
        let (t, f) = two_sum(self.lo, o.lo);
        let r = quick_two_sum(s, e + t);
        quick_two_sum(r.hi, r.lo + f)
    }

    #[inline]
    pub fn neg(self) -> DD {
        DD {
            hi: -self.hi,
            lo: -self.lo,
        }
    }

    #[inline]
    pub fn sub(self, o: DD) -> DD {
        self.add(o.neg())
    }

    #[inline]
    pub fn mul(self, o: DD) -> DD {
        let p = DD::product(self.hi, o.hi);
        quick_two_sum(p.hi, p.lo + (self.hi * o.lo + self.lo * o.hi))
    }

    /// `self / b` to double-double precision (two correction steps).
    #[inline]
    pub fn div_f64(self, b: f64) -> DD {
        let q1 = self.hi / b;
        let r = self.sub(DD::product(q1, b));
        let q2 = r.hi / b;
        let r = r.sub(DD::product(q2, b));
        let q3 = r.hi / b;
        quick_two_sum(q1, q2).add_f64(q3)
    }

    #[inline]
    pub fn value(self) -> f64 {
        self.hi + self.lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cancel_exactly() {
        let xs = [1e16, 1.0, -1e16, 3.5, 1e-3, -2.25];
        let mut s = DD::ZERO;
        for x in xs {
            s = s.add_f64(x);
        }
        assert_eq!(s.value(), 2.251); // correctly rounded, where f64 gives 2.2510000000000003
                                      // A difference of prefixes keeps the small window exact.
        let mut p = vec![DD::ZERO];
        for x in [1e17, 0.1, 0.2, 0.3] {
            let last = *p.last().unwrap();
            p.push(last.add_f64(x));
        }
        // Within a few ulps of 0.6 although the prefix is 1e17 (f64 alone gives 0.0).
        assert!((p[4].sub(p[1]).value() - 0.6).abs() < 4e-16);
    }

    #[test]
    fn division_and_products() {
        let third = DD { hi: 1.0, lo: 0.0 }.div_f64(3.0);
        assert!((third.mul(DD { hi: 3.0, lo: 0.0 }).value() - 1.0).abs() < 1e-30);
        let sq = DD::product(1.0 + 2f64.powi(-30), 1.0 + 2f64.powi(-30));
        assert_eq!(sq.lo, 2f64.powi(-60));
    }
}
