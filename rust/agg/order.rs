//! Grouping and ordering for the sweep: rows grouped by key with a stable counting
//! sort, then each key's run ordered by (time, created time, row) on packed values.

use rayon::prelude::*;

use crate::join::keys::NO_KEY;

/// Rows grouped by key id (stable counting sort); rows with NO_KEY or failing `keep`
/// are left out. Returns (offsets by key, rows). A large input is cut into one
/// contiguous part per thread: each part counts its keys, part p's rows of key k go
/// after those of parts before p (so the order stays the input's), and the parts
/// scatter their rows in parallel.
pub(super) fn group(
    ids: &[u32],
    n_keys: usize,
    keep: impl Fn(usize) -> bool + Sync,
) -> (Vec<usize>, Vec<u32>) {
    // Parallel only when the per-part counts are small next to the rows.
    let parts = if ids.len() >= 1 << 18 && n_keys <= ids.len() / 8 {
        rayon::current_num_threads().clamp(1, 8)
    } else {
        1
    };
    group_in(ids, n_keys, keep, parts)
}

/// Destination slots that the parts of [`group_in`] write disjointly.
struct Dest(*mut u32);
// SAFETY: each part writes only the slots reserved for its own rows (see group_in),
// while the owning Vec is alive and not otherwise accessed.
unsafe impl Send for Dest {}
// SAFETY: as above.
unsafe impl Sync for Dest {}

fn group_in(
    ids: &[u32],
    n_keys: usize,
    keep: impl Fn(usize) -> bool + Sync,
    parts: usize,
) -> (Vec<usize>, Vec<u32>) {
    let size = ids.len().div_ceil(parts.max(1)).max(1);
    let ranges: Vec<(usize, usize)> = (0..ids.len())
        .step_by(size)
        .map(|a| (a, (a + size).min(ids.len())))
        .collect();
    let kept = |i: usize, k: u32| k != NO_KEY && keep(i);
    // Per part: how many of its rows each key has, then where they start.
    let mut starts: Vec<Vec<usize>> = ranges
        .par_iter()
        .map(|&(a, b)| {
            let mut h = vec![0usize; n_keys];
            for (i, &k) in (a..b).zip(&ids[a..b]) {
                if kept(i, k) {
                    h[k as usize] += 1;
                }
            }
            h
        })
        .collect();
    let mut off = vec![0usize; n_keys + 1];
    for k in 0..n_keys {
        let mut at = off[k];
        for h in starts.iter_mut() {
            let count = h[k];
            h[k] = at;
            at += count;
        }
        off[k + 1] = at;
    }
    let mut rows = crate::huge::filled(off[n_keys], 0u32);
    let dest = Dest(rows.as_mut_ptr());
    let dest = &dest;
    (ranges.into_par_iter().zip(starts.par_iter_mut())).for_each(|((a, b), next)| {
        for (i, &k) in (a..b).zip(&ids[a..b]) {
            if kept(i, k) {
                let k = k as usize;
                // SAFETY: slots next[k].. up to this part's count of key k are this
                // part's alone, and below off[n_keys] = rows.len().
                unsafe { *dest.0.add(next[k]) = i as u32 };
                next[k] += 1;
            }
        }
    });
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
    // A hot key's run (skewed data) is read and written on every thread too.
    let hot = r.len() >= HOT_RUN;
    let times: Vec<i64> = if hot {
        r.par_iter().map(|&row| t_raw[row as usize]).collect()
    } else {
        r.iter().map(|&row| t_raw[row as usize]).collect()
    };
    let (Some(&lo), Some(&hi)) = (times.iter().min(), times.iter().max()) else {
        return true; // an empty run
    };
    let bits = usize::BITS - r.len().leading_zeros();
    let span = hi.abs_diff(lo);
    if bits >= 64 || span >= 1u64 << (64 - bits) {
        return false;
    }
    let key = |(j, &t): (usize, &i64)| (t.abs_diff(lo) << bits) | j as u64;
    let mut keys: Vec<u64> = if hot {
        times.par_iter().enumerate().map(key).collect()
    } else {
        times.iter().enumerate().map(key).collect()
    };
    if !keys.windows(2).all(|w| w[0] < w[1]) {
        if hot {
            keys.par_sort_unstable();
        } else {
            keys.sort_unstable();
        }
    }
    let rows = r.to_vec();
    let mask = (1u64 << bits) - 1;
    let place = |((slot, t), k): ((&mut u32, &mut i64), &u64)| {
        let j = (k & mask) as usize;
        *slot = rows[j];
        *t = times[j];
    };
    if hot {
        (r.par_iter_mut().zip(tt.par_iter_mut()).zip(&keys))
            .with_min_len(1 << 12)
            .for_each(place);
    } else {
        r.iter_mut().zip(tt.iter_mut()).zip(&keys).for_each(place);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grouping in parts gives the one-part (sequential) result: keys in order, rows
    /// in input order within a key, NO_KEY and unkept rows left out.
    #[test]
    fn grouping_in_parts_is_stable() {
        let mut seed = 11u64;
        for (n, n_keys) in [(0, 3), (1, 1), (17, 4), (1000, 7), (5000, 900), (3000, 1)] {
            let ids: Vec<u32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let r = (seed >> 33) as usize;
                    if r.is_multiple_of(10) {
                        NO_KEY
                    } else {
                        (r % n_keys) as u32
                    }
                })
                .collect();
            let keep = |i: usize| i % 7 != 3;
            let mut want: Vec<u32> = (0..n as u32)
                .filter(|&i| ids[i as usize] != NO_KEY && keep(i as usize))
                .collect();
            want.sort_by_key(|&i| ids[i as usize]); // stable: input order within a key
            for parts in [1, 2, 3, 8] {
                let (off, rows) = group_in(&ids, n_keys, keep, parts);
                assert_eq!(rows, want, "{n} rows, {parts} parts");
                assert_eq!(off.len(), n_keys + 1);
                for (k, w) in off.windows(2).enumerate() {
                    assert!(rows[w[0]..w[1]]
                        .iter()
                        .all(|&r| ids[r as usize] == k as u32));
                }
            }
        }
    }

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
