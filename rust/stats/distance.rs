//! Drift distances between a reference sample and a current one.
//!
//! Numeric (both samples sorted, NaN and nulls removed):
//! - **PSI** over 10 bins cut at the reference's deciles (numpy-linear quantiles at
//!   0.1 … 0.9): bin i is `[e_i, e_{i+1})` with `e_0 = -∞`, `e_10 = +∞`; with `r_i`,
//!   `c_i` the fractions of each sample per bin, an empty bin's fraction is floored at
//!   1e-4, and `PSI = Σ (c_i - r_i) ln(c_i / r_i)`. Repeated deciles (a discrete or
//!   constant column) give bins empty on both sides, which add 0. O(bins log n).
//! - **KS D** `= max_x |F_r(x) - F_c(x)|` and **Wasserstein-1** `= ∫ |F_r - F_c| dx`,
//!   both exact, by one merge of the two sorted arrays (O(n + m)): at each distinct value
//!   both pointers move past it, and between consecutive distinct values the empirical
//!   CDFs are constant. Naive equivalents: `scipy.stats.ks_2samp(r, c).statistic` and
//!   `scipy.stats.wasserstein_distance(r, c)`.
//! - **KS p-value**, asymptotic: Kolmogorov's limiting distribution at
//!   `D √(nm / (n + m))` (`scipy.stats.kstwobign.sf`). Reported, never deciding: on a
//!   million rows every tiny shift is "significant".
//!
//! Categorical (counts over the same bins on both sides): PSI as above, and the
//! **Jensen–Shannon distance** in base 2 (`scipy.spatial.distance.jensenshannon(p, q,
//! base=2)`, in [0, 1]).

/// The fraction floor of an empty bin in PSI.
pub const PSI_FLOOR: f64 = 1e-4;

/// PSI between two count vectors over the same bins; NaN when a side has no values.
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let (nr, nc) = (reference.iter().sum::<u64>(), current.iter().sum::<u64>());
    if nr == 0 || nc == 0 {
        return f64::NAN;
    }
    let frac = |c: u64, n: u64| {
        if c == 0 {
            PSI_FLOOR
        } else {
            c as f64 / n as f64
        }
    };
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (r, c) = (frac(r, nr), frac(c, nc));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (base 2) between two count vectors; NaN when a side is
/// empty.
pub fn js_distance(reference: &[u64], current: &[u64]) -> f64 {
    let (nr, nc) = (reference.iter().sum::<u64>(), current.iter().sum::<u64>());
    if nr == 0 || nc == 0 {
        return f64::NAN;
    }
    let mut div = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let (p, q) = (r as f64 / nr as f64, c as f64 / nc as f64);
        let m = 0.5 * (p + q);
        if p > 0.0 {
            div += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            div += 0.5 * q * (q / m).log2();
        }
    }
    div.max(0.0).sqrt()
}

/// The counts of sorted values in the PSI bins cut at `cuts` (ascending, may repeat):
/// `[−∞, cuts_0), [cuts_0, cuts_1), …, [cuts_last, +∞]`.
pub fn bin_counts(sorted: &[f64], cuts: &[f64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0usize;
    for &e in cuts {
        let at = sorted.partition_point(|&x| x < e);
        out.push(at.saturating_sub(prev) as u64);
        prev = prev.max(at);
    }
    out.push((sorted.len() - prev) as u64);
    out
}

/// KS D and Wasserstein-1 of two sorted samples, by one merge; NaN if one is empty.
pub fn ks_w1(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (nf, mf) = (n as f64, m as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut d, mut area) = (0.0f64, 0.0f64);
    let mut comp = 0.0f64; // Kahan compensation of `area`
    while i < n || j < m {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!(),
        };
        while i < n && a[i] <= v {
            i += 1;
        }
        while j < m && b[j] <= v {
            j += 1;
        }
        let gap = (i as f64 / nf - j as f64 / mf).abs();
        d = d.max(gap);
        if i < n || j < m {
            let next = match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) => x.min(y),
                (Some(&x), None) => x,
                (None, Some(&y)) => y,
                (None, None) => unreachable!(),
            };
            let y = gap * (next - v) - comp;
            let t = area + y;
            comp = (t - area) - y;
            area = t;
        }
    }
    (d, area)
}

/// The asymptotic two-sided KS p-value of statistic `d` for samples of `n` and `m`:
/// `Q(D √(nm/(n+m)))` with `Q(z) = 2 Σ_{k≥1} (-1)^{k-1} e^{-2k²z²}` (for small z, the
/// complementary theta series `1 - √(2π)/z Σ e^{-(2k-1)²π²/(8z²)}`).
pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
    if !d.is_finite() || n == 0 || m == 0 {
        return f64::NAN;
    }
    let en = (n as f64 * m as f64) / (n as f64 + m as f64);
    kolmogorov_sf(d * en.sqrt())
}

/// The survival function of Kolmogorov's limiting distribution.
pub fn kolmogorov_sf(z: f64) -> f64 {
    if z <= 0.0 {
        return 1.0;
    }
    if z < 1.0 {
        let w = std::f64::consts::PI * std::f64::consts::PI / (8.0 * z * z);
        let mut s = 0.0;
        for k in 1..=20 {
            let j = (2 * k - 1) as f64;
            s += (-j * j * w).exp();
        }
        let cdf = (2.0 * std::f64::consts::PI).sqrt() / z * s;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    let mut s = 0.0;
    for k in 1..=100 {
        let kf = k as f64;
        let t = (-2.0 * kf * kf * z * z).exp();
        s += if k % 2 == 1 { t } else { -t };
        if t < 1e-300 {
            break;
        }
    }
    (2.0 * s).clamp(0.0, 1.0)
}
