//! Grouping and ordering for the sweep: rows grouped by key with a stable counting
//! sort, then each key's run ordered by (time, created time, row) on packed values.

use rayon::prelude::*;

use crate::join::keys::NO_KEY;

/// Rows grouped by key id (stable counting sort); rows with NO_KEY or failing `keep`
/// are left out. Returns (offsets by key, rows).
pub(super) fn group(
    ids: &[u32],
    n_keys: usize,
    keep: impl Fn(usize) -> bool,
) -> (Vec<usize>, Vec<u32>) {
    let mut off = vec![0usize; n_keys + 1];
    for (i, &k) in ids.iter().enumerate() {
        if k != NO_KEY && keep(i) {
            off[k as usize + 1] += 1;
        }
    }
    for k in 0..n_keys {
        off[k + 1] += off[k];
    }
    let mut next = off[..n_keys].to_vec();
    let mut rows = vec![0u32; off[n_keys]];
    for (i, &k) in ids.iter().enumerate() {
        if k != NO_KEY && keep(i) {
            rows[next[k as usize]] = i as u32;
            next[k as usize] += 1;
        }
    }
    (off, rows)
}

/// A run this long is sorted in parallel.
const HOT_RUN: usize = 1 << 16;

/// Sorts each key's run of `rows` by (time, created time, row) — the input order
/// breaks full ties, as a stable sort would — and fills `t` with the sorted times;
/// returns the sorted created times when given. The sort runs on packed (time,
/// created, row) values, not on row indices (no random access per comparison), runs
/// in parallel, and a run already in order (input sorted by time) costs one pass.
pub(super) fn sort_runs(
    off: &[usize],
    rows: &mut [u32],
    t: &mut [i64],
    t_raw: &[i64],
    c_raw: Option<&[i64]>,
) -> Option<Vec<i64>> {
    let mut c_out = c_raw.map(|_| vec![0i64; rows.len()]);
    let mut runs = Vec::with_capacity(off.len().saturating_sub(1));
    let (mut rest_r, mut rest_t) = (rows, t);
    let mut rest_c = c_out.as_deref_mut();
    for w in off.windows(2) {
        let len = w[1] - w[0];
        let (r, tr) = rest_r.split_at_mut(len);
        let (tt, ttail) = rest_t.split_at_mut(len);
        let (cc, ctail) = match rest_c {
            Some(c) => {
                let (a, b) = c.split_at_mut(len);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        runs.push((r, tt, cc));
        rest_r = tr;
        rest_t = ttail;
        rest_c = ctail;
    }
    runs.into_par_iter()
        .with_min_len(64)
        .for_each(|(r, tt, cc)| {
            if c_raw.is_none() && sort_packed(r, tt, t_raw) {
                return;
            }
            // One read of each row's times (the only random access), then all in the run.
            let mut packed: Vec<(i64, i64, u32)> = r
                .iter()
                .map(|&row| {
                    (
                        t_raw[row as usize],
                        c_raw.map_or(0, |c| c[row as usize]),
                        row,
                    )
                })
                .collect();
            if !packed.windows(2).all(|w| w[0] < w[1]) {
                // A hot key (skewed data) is sorted on every thread, not on one.
                if packed.len() >= HOT_RUN {
                    packed.par_sort_unstable();
                } else {
                    packed.sort_unstable();
                }
            }
            for ((slot, t), p) in r.iter_mut().zip(tt.iter_mut()).zip(&packed) {
                *slot = p.2;
                *t = p.0;
            }
            if let Some(cc) = cc {
                for (slot, p) in cc.iter_mut().zip(&packed) {
                    *slot = p.1;
                }
            }
        });
    c_out
}

/// Sorts one run by (time, input order) on single 64-bit keys — the time's offset
/// from the run's earliest in the high bits, the row's place in the run in the low
/// ones — ~1.8x faster than sorting (time, created, row) tuples. False (nothing done)
/// when the run's time span does not fit beside its index bits.
fn sort_packed(r: &mut [u32], tt: &mut [i64], t_raw: &[i64]) -> bool {
    let times: Vec<i64> = r.iter().map(|&row| t_raw[row as usize]).collect();
    let (Some(&lo), Some(&hi)) = (times.iter().min(), times.iter().max()) else {
        return true; // an empty run
    };
    let bits = usize::BITS - r.len().leading_zeros();
    let span = hi.abs_diff(lo);
    if bits >= 64 || span >= 1u64 << (64 - bits) {
        return false;
    }
    let mut keys: Vec<u64> = (times.iter().enumerate())
        .map(|(j, &t)| (t.abs_diff(lo) << bits) | j as u64)
        .collect();
    if !keys.windows(2).all(|w| w[0] < w[1]) {
        if keys.len() >= HOT_RUN {
            keys.par_sort_unstable();
        } else {
            keys.sort_unstable();
        }
    }
    let rows = r.to_vec();
    let mask = (1u64 << bits) - 1;
    for ((slot, t), k) in r.iter_mut().zip(tt.iter_mut()).zip(&keys) {
        let j = (k & mask) as usize;
        *slot = rows[j];
        *t = times[j];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sort paths give (time, created, row) order: packed keys when the span
    /// fits, tuples when it does not (times spread over the whole i64 range).
    #[test]
    fn packed_and_tuple_sorts_agree() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (n, spread) in [
            (0, 10),
            (1, 10),
            (5, 3),
            (300, 50),
            (70_000, 1 << 40),
            (500, u64::MAX),
        ] {
            let t_raw: Vec<i64> = (0..n)
                .map(|_| ((rnd() % spread.max(1)) as i64).wrapping_sub(5))
                .collect();
            let mut ids: Vec<u32> = (0..n).map(|_| (rnd() % 3) as u32).collect();
            ids.iter_mut().take(1).for_each(|k| *k = NO_KEY);
            let (off, mut rows) = group(&ids, 3, |_| true);
            let mut t = vec![0i64; rows.len()];
            sort_runs(&off, &mut rows, &mut t, &t_raw, None);
            let c_raw = vec![0i64; n];
            let (_, mut want) = group(&ids, 3, |_| true);
            let mut wt = vec![0i64; want.len()];
            sort_runs(&off, &mut want, &mut wt, &t_raw, Some(&c_raw));
            assert_eq!((&rows, &t), (&want, &wt), "{n} events over {spread}");
            for w in off.windows(2) {
                let run = &rows[w[0]..w[1]];
                assert!(run
                    .windows(2)
                    .all(|p| (t_raw[p[0] as usize], p[0]) < (t_raw[p[1] as usize], p[1])));
            }
        }
    }
}
