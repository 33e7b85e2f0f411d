//! The as-of kernel over plain slices: sort one feature table by key and time, then
//! answer every spine row with one binary search.
//!
//! Naive equivalent (what `tests/reference.py` computes): for a spine row with key id
//! `k` and time `t`, the winner is the feature row `r` with `key[r] == k`,
//! `e[r] <= t` (`e[r] < t` without exact matches), `e[r] >= t - ttl` when a TTL is
//! set, `c[r] <= t` under knowledge time, that maximizes `(e[r], c[r], r)`: latest
//! event, then latest created time, then the row that came last in input order.
//!
//! Algorithm. [`sort_features`] counting-sorts the rows by key id (`O(n + keys)`,
//! stable, so each key's rows stay in input order; two passes that keep the writes in
//! the cache, see [`group_by_key`]) and then stable-sorts each key's run by `(e, c)`
//! in parallel, which yields order `(key, e, c, row)`. Runs are mostly
//! a handful of rows: without created times an insertion sort on the bare `e` does
//! them (a comparator that looks up `c` cost more than the sort itself). [`probe`] finds,
//! for each spine row, the end of its key's rows with `e <= t` by binary search and
//! takes the row just before it: the maximum of `(e, c, r)` among them. A TTL only has
//! to check that winner. Under knowledge time the walk continues backwards past rows
//! created after `t` (stopping at the TTL floor); that walk is the one cost that can
//! grow with the number of rows per key, and only when many of a key's values were
//! backfilled after the spine time.
//!
//! Cost: memory 16 bytes per feature row (24 with created times) plus 4 per key, and
//! while grouping a copy of one bucket of keys per thread (about 1/128 to 1/256 of the
//! rows; up to all of them when one bucket of consecutive key ids holds nearly every
//! row, which then also leaves that bucket's work to one thread); time `O(n log m)`
//! for `n` spine rows and `m` rows per key. The grouping's second pass and the run
//! sorts run in parallel over pieces of 4,096 keys (one piece, serial, below that), the
//! probe over blocks of spine rows, and the result is deterministic (the
//! result never depends on the thread count: each output slot is written once from a
//! pure function of the inputs).

use rayon::prelude::*;

use super::keys::NO_KEY;

/// The index of a feature row that matches nothing: the output is null there.
pub const NO_ROW: u32 = u32::MAX;

const BLOCK: usize = 1 << 14;

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub allow_exact_matches: bool,
    /// Largest `t - e` allowed, in the same unit as the times.
    pub ttl: Option<i64>,
    /// Only rows with created time `<= t` count (needs created times).
    pub knowledge_time: bool,
}

/// One row as the sorts and the probe see it: its time next to its index, so a binary
/// search and the winner's index come from the same cache lines, and its key id in
/// what would be padding (16 bytes). For the spine `e` is the spine time.
#[derive(Clone, Copy, Debug)]
struct Entry {
    e: i64,
    key: u32,
    row: u32,
}

/// One feature table's rows grouped by key and ordered for binary search.
pub struct SortedFeatures {
    /// Key `k`'s rows are `entries[offsets[k]..offsets[k + 1]]`.
    offsets: Vec<u32>,
    /// Sorted by (key id, event time, created time, row index).
    entries: Vec<Entry>,
    /// Created time by feature row (not by entry): read only to break event-time ties
    /// while sorting and to skip rows under knowledge time, both rare.
    c: Option<Vec<i64>>,
}

/// Groups and orders feature rows; `key_ids[r]` is row `r`'s key id (NO_KEY rows are
/// dropped), `e[r]` and `c[r]` its event and created times.
pub fn sort_features(
    key_ids: &[u32],
    n_keys: usize,
    e: &[i64],
    c: Option<Vec<i64>>,
) -> SortedFeatures {
    let item = |r: usize| (key_ids[r] != NO_KEY).then(|| (key_ids[r], e[r]));
    let (offsets, entries) = group_by_key(key_ids.len(), n_keys, item, |piece, bounds| {
        sort_runs(piece, bounds, c.as_deref())
    });
    SortedFeatures {
        offsets,
        entries,
        c,
    }
}

/// Keys per bucket of [`group_by_key`]'s first pass is the smallest power of two that
/// leaves at most this many buckets.
const MAX_BUCKETS: usize = 1 << 8;

/// Keys per task of [`group_by_key`]'s second pass (at least one bucket).
const PIECE_KEYS: usize = 1 << 12;

/// The rows `0..n` that `item(i)` keeps (as `(key id, time)`, key ids below
/// `n_keys`), stably grouped by key id: ordered by (key, row); with the offsets,
/// `offsets[k]` where key `k`'s rows start (`offsets[n_keys]`: how many rows are
/// kept). `finish(piece, bounds)` then runs on consecutive pieces of whole keys, in
/// parallel, each while it is still in the cache: `bounds` are the offsets of the
/// piece's keys (`bounds[0]` where the piece starts), one more than its keys.
///
/// A counting sort in two passes. One pass counts each key's rows. Writing each row
/// straight to its key's next slot would make one random write per row over the whole
/// output (one cache line per key in use: a miss per row once there are more keys
/// than lines in the cache). Instead the first pass writes each row to the next slot
/// of its bucket of consecutive keys (at most [`MAX_BUCKETS`] buckets, so the lines
/// being filled stay in the cache), and the second pass, in parallel over pieces,
/// regroups each bucket by key through a small copy of it. Both passes keep row order,
/// so the grouping is stable.
fn group_by_key(
    n: usize,
    n_keys: usize,
    item: impl Fn(usize) -> Option<(u32, i64)>,
    finish: impl Fn(&mut [Entry], &[u32]) + Sync,
) -> (Vec<u32>, Vec<Entry>) {
    let mut offsets = vec![0u32; n_keys + 1];
    for i in 0..n {
        if let Some((k, _)) = item(i) {
            offsets[k as usize + 1] += 1;
        }
    }
    for k in 0..n_keys {
        offsets[k + 1] += offsets[k];
    }
    let shift = n_keys
        .div_ceil(MAX_BUCKETS)
        .next_power_of_two()
        .trailing_zeros();
    let blank = Entry {
        e: 0,
        key: 0,
        row: 0,
    };
    let mut out = vec![blank; offsets[n_keys] as usize];
    let mut next: Vec<u32> = offsets.iter().step_by(1 << shift).copied().collect();
    for i in 0..n {
        if let Some((key, e)) = item(i) {
            let slot = &mut next[(key >> shift) as usize];
            out[*slot as usize] = Entry {
                e,
                key,
                row: i as u32,
            };
            *slot += 1;
        }
    }
    // Pieces of whole buckets, each with its first key.
    let piece_keys = PIECE_KEYS.max(1 << shift);
    let mut pieces: Vec<(usize, &[u32], &mut [Entry])> = Vec::new();
    let mut rest = out.as_mut_slice();
    for k0 in (0..n_keys).step_by(piece_keys) {
        let k1 = (k0 + piece_keys).min(n_keys);
        let (piece, tail) = rest.split_at_mut((offsets[k1] - offsets[k0]) as usize);
        rest = tail;
        pieces.push((k0, &offsets[k0..=k1], piece));
    }
    pieces.into_par_iter().for_each(|(k0, bounds, piece)| {
        let (base, keys) = (bounds[0], bounds.len() - 1);
        let mut copy = Vec::new();
        for b0 in (0..keys).step_by(1 << shift) {
            let b1 = (b0 + (1 << shift)).min(keys);
            let bucket = &mut piece[(bounds[b0] - base) as usize..(bounds[b1] - base) as usize];
            regroup(bucket, &bounds[b0..=b1], (k0 + b0) as u32, &mut copy);
            finish(bucket, &bounds[b0..=b1]);
        }
    });
    (offsets, out)
}

/// Orders one bucket's rows (in row order, keys `first..`) by key, keeping row order
/// within a key, through `copy` (reused scratch); `bounds` are the offsets of the
/// bucket's keys, one more than its keys. A bucket of one key is already in order.
fn regroup(bucket: &mut [Entry], bounds: &[u32], first: u32, copy: &mut Vec<Entry>) {
    if bounds.len() <= 2 || bucket.len() <= 1 {
        return;
    }
    copy.clear();
    copy.extend_from_slice(bucket);
    let mut slots: Vec<u32> = bounds[..bounds.len() - 1]
        .iter()
        .map(|&o| o - bounds[0])
        .collect();
    for x in copy.iter() {
        let slot = &mut slots[(x.key - first) as usize];
        bucket[*slot as usize] = *x;
        *slot += 1;
    }
}

/// Stable-sorts each key's run (`piece[bounds[k] - bounds[0]..bounds[k + 1] -
/// bounds[0]]`, in row order) by (e, c), which makes it (e, c, row).
fn sort_runs(piece: &mut [Entry], bounds: &[u32], c: Option<&[i64]>) {
    let base = bounds[0];
    for w in bounds.windows(2) {
        let run = &mut piece[(w[0] - base) as usize..(w[1] - base) as usize];
        match c {
            None => sort_by_time(run),
            Some(c) => {
                let order =
                    |a: &Entry, b: &Entry| (a.e, c[a.row as usize]).cmp(&(b.e, c[b.row as usize]));
                if !run.is_sorted_by(|a, b| order(a, b).is_le()) {
                    run.sort_by(order);
                }
            }
        }
    }
}

/// A stable sort by time: runs are mostly a handful of rows, which an insertion sort
/// on the bare `e` handles in a few nanoseconds each; long ones go to the standard
/// library's stable sort.
fn sort_by_time(run: &mut [Entry]) {
    if run.len() > 32 {
        run.sort_by_key(|x| x.e);
        return;
    }
    for i in 1..run.len() {
        let x = run[i];
        let mut j = i;
        while j > 0 && run[j - 1].e > x.e {
            run[j] = run[j - 1];
            j -= 1;
        }
        run[j] = x;
    }
}

/// The spine's rows grouped by key id, so that probing walks each feature table's
/// runs in order instead of jumping around memory (built once, shared by every feature
/// table joined on the same keys). Rows with a null key or time are left out: they
/// match nothing.
pub struct SortedSpine {
    /// Sorted by (key id, row index); `e` is the spine time.
    entries: Vec<Entry>,
    /// Number of spine rows (the length of a probe's output).
    len: usize,
}

/// Groups the spine's rows by key id (a stable sort, see [`group_by_key`]); `ids[i]`
/// is row `i`'s key id and `t(i)` its time (None when null).
pub fn sort_spine(ids: &[u32], n_keys: usize, t: impl Fn(usize) -> Option<i64>) -> SortedSpine {
    let item = |i: usize| match (ids[i], t(i)) {
        (NO_KEY, _) | (_, None) => None,
        (k, Some(t)) => Some((k, t)),
    };
    SortedSpine {
        entries: group_by_key(ids.len(), n_keys, item, |_, _| {}).1,
        len: ids.len(),
    }
}

/// For every spine row the winning feature row, or NO_ROW.
pub fn probe(sorted: &SortedFeatures, spine: &SortedSpine, p: Params) -> Vec<u32> {
    let mut found = vec![NO_ROW; spine.entries.len()];
    found
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, dst)| {
            let src = &spine.entries[b * BLOCK..b * BLOCK + dst.len()];
            for (slot, x) in dst.iter_mut().zip(src) {
                *slot = winner(sorted, x.key as usize, x.e, p);
            }
        });
    let mut out = vec![NO_ROW; spine.len];
    for (x, &r) in spine.entries.iter().zip(&found) {
        out[x.row as usize] = r;
    }
    out
}

fn winner(s: &SortedFeatures, k: usize, t: i64, p: Params) -> u32 {
    let run = &s.entries[s.offsets[k] as usize..s.offsets[k + 1] as usize];
    let mut j = if p.allow_exact_matches {
        run.partition_point(|x| x.e <= t)
    } else {
        run.partition_point(|x| x.e < t)
    };
    let floor = p.ttl.map(|ttl| t.saturating_sub(ttl));
    while j > 0 {
        j -= 1;
        let x = run[j];
        if floor.is_some_and(|f| x.e < f) {
            return NO_ROW;
        }
        if p.knowledge_time && s.c.as_ref().is_some_and(|c| c[x.row as usize] > t) {
            continue;
        }
        return x.row;
    }
    NO_ROW
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract, spelled out: scan every row.
    fn naive(key: &[u32], e: &[i64], c: Option<&[i64]>, k: u32, t: i64, p: Params) -> u32 {
        let mut best: Option<(i64, i64, usize)> = None;
        for r in 0..key.len() {
            let cr = c.map_or(0, |c| c[r]);
            let ok = k != NO_KEY
                && key[r] == k
                && if p.allow_exact_matches {
                    e[r] <= t
                } else {
                    e[r] < t
                }
                && p.ttl.is_none_or(|ttl| e[r] >= t - ttl)
                && (!p.knowledge_time || cr <= t);
            if ok && best.is_none_or(|b| (e[r], cr, r) > b) {
                best = Some((e[r], cr, r));
            }
        }
        best.map_or(NO_ROW, |b| b.2 as u32)
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn matches_naive_on_random_ties() {
        let mut seed = 7;
        for round in 0..300 {
            let n = (lcg(&mut seed) % 40) as usize;
            let n_keys = 1 + (lcg(&mut seed) % 5) as usize;
            let key: Vec<u32> = (0..n)
                .map(|_| {
                    let k = (lcg(&mut seed) % (n_keys as u64 + 1)) as u32;
                    if k == n_keys as u32 {
                        NO_KEY
                    } else {
                        k
                    }
                })
                .collect();
            let e: Vec<i64> = (0..n).map(|_| (lcg(&mut seed) % 6) as i64).collect();
            let c: Vec<i64> = (0..n).map(|_| (lcg(&mut seed) % 8) as i64).collect();
            let with_c = round % 2 == 0;
            let p = Params {
                allow_exact_matches: round % 3 != 0,
                ttl: if round % 4 == 0 {
                    Some((round % 3) as i64)
                } else {
                    None
                },
                knowledge_time: with_c && round % 5 == 0,
            };
            let cs = with_c.then_some(c.as_slice());
            let sorted = sort_features(&key, n_keys, &e, cs.map(|c| c.to_vec()));
            let spine_keys: Vec<u32> = (0..n_keys as u32).chain([NO_KEY]).collect();
            for &k in &spine_keys {
                for t in -1..8 {
                    let spine = sort_spine(&[k], n_keys, |_| Some(t));
                    let got = probe(&sorted, &spine, p)[0];
                    assert_eq!(got, naive(&key, &e, cs, k, t, p), "k={k} t={t} {p:?}");
                }
            }
        }
    }

    #[test]
    fn grouping_is_stable_by_key_then_row() {
        // Few keys to many (buckets of 1, 4, 32, 2,048 and 32,768 keys), runs both
        // shorter and longer than 32, a hot key.
        for (n, n_keys) in [
            (100_000, 200),
            (200_000, 900),
            (200_000, 5_000),
            (300_000, 300_000),
            (100_000, 5_000_000),
        ] {
            let mut seed = 3;
            let key: Vec<u32> = (0..n)
                .map(|_| match (lcg(&mut seed) % (n_keys as u64 + 50)) as u32 {
                    k if k >= n_keys as u32 => NO_KEY,
                    k if k % 97 == 0 => 1,
                    k => k,
                })
                .collect();
            let e: Vec<i64> = (0..n).map(|_| (lcg(&mut seed) % 4) as i64).collect();
            let sorted = sort_features(&key, n_keys, &e, None);
            let mut want: Vec<(u32, i64, u32)> = (0..n)
                .filter(|&r| key[r] != NO_KEY)
                .map(|r| (key[r], e[r], r as u32))
                .collect();
            want.sort();
            let got: Vec<_> = sorted.entries.iter().map(|x| (x.key, x.e, x.row)).collect();
            assert_eq!(got, want, "{n_keys} keys");
            let o = &sorted.offsets;
            assert!(
                (0..n_keys).all(|k| sorted.entries[o[k] as usize..o[k + 1] as usize]
                    .iter()
                    .all(|x| x.key == k as u32))
            );
            let spine = sort_spine(&key, n_keys, |i| (i % 7 != 0).then_some(e[i]));
            let mut want: Vec<(u32, u32)> = (0..n)
                .filter(|&r| key[r] != NO_KEY && r % 7 != 0)
                .map(|r| (key[r], r as u32))
                .collect();
            want.sort();
            let got: Vec<_> = spine.entries.iter().map(|x| (x.key, x.row)).collect();
            assert_eq!(got, want, "{n_keys} keys");
        }
    }

    #[test]
    fn created_times_order_runs_across_buckets() {
        let (n, n_keys) = (100_000, 5_000);
        let mut seed = 5;
        let key: Vec<u32> = (0..n)
            .map(|_| (lcg(&mut seed) % n_keys as u64) as u32)
            .collect();
        let e: Vec<i64> = (0..n).map(|_| (lcg(&mut seed) % 3) as i64).collect();
        let c: Vec<i64> = (0..n).map(|_| (lcg(&mut seed) % 3) as i64).collect();
        let sorted = sort_features(&key, n_keys, &e, Some(c.clone()));
        let mut want: Vec<(u32, i64, i64, u32)> =
            (0..n).map(|r| (key[r], e[r], c[r], r as u32)).collect();
        want.sort();
        let got: Vec<_> = sorted
            .entries
            .iter()
            .map(|x| (x.key, x.e, c[x.row as usize], x.row))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn null_spine_time_matches_nothing() {
        let sorted = sort_features(&[0, 0], 1, &[1, 2], None);
        let p = Params {
            allow_exact_matches: true,
            ttl: None,
            knowledge_time: false,
        };
        let spine = sort_spine(&[0, 0, NO_KEY], 1, |i| (i == 1).then_some(5));
        assert_eq!(probe(&sorted, &spine, p), vec![NO_ROW, 1, NO_ROW]);
        let spine = sort_spine(&[0], 1, |_| Some(i64::MIN));
        assert_eq!(probe(&sorted, &spine, p), vec![NO_ROW]);
    }

    #[test]
    fn ttl_at_extremes_does_not_overflow() {
        let p = Params {
            allow_exact_matches: true,
            ttl: Some(i64::MAX),
            knowledge_time: false,
        };
        let sorted = sort_features(&[0], 1, &[0], None);
        let at = |t: i64| sort_spine(&[0], 1, move |_| Some(t));
        assert_eq!(probe(&sorted, &at(i64::MAX), p), vec![0]);
        // t - ttl is below i64::MIN: every earlier row is within the TTL
        let sorted = sort_features(&[0], 1, &[i64::MIN], None);
        let p = Params { ttl: Some(5), ..p };
        assert_eq!(probe(&sorted, &at(i64::MIN + 1), p), vec![0]);
        assert_eq!(probe(&sorted, &at(i64::MAX), p), vec![NO_ROW]);
    }
}
