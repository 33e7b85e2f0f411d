//! Properties of the stored state: the in-place merge equals the reference merge
//! ([`State::merge`] then `encode`), and reads through block summaries equal reads
//! that scan every event (the same state without summaries, format PSA1).

use proptest::prelude::*;

use super::layout::{merge, BLOCK_BYTES, HEADER, MAGIC_V1, SHIFT};
use super::serve::{lags_ns, Served, StateView};
use super::state::{Event, State, Tag, Val};
use super::{Closed, Op};
use crate::encode::row::{RowLayout, RowView, Stamp, ValueType};
use crate::encode::segments::Lazy;

const TAGS: [Tag; 3] = [Tag::F64, Tag::I64, Tag::Bytes];

fn value() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        6 => (-1000i32..1000).prop_map(|x| Some(f64::from(x) / 8.0)),
        1 => Just(None),
        1 => Just(Some(f64::NAN)),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(1e12), Just(-0.0)].prop_map(Some),
    ]
}

/// (event time, created time, f64 value, i64 value, string of this many letters).
type Raw = (i64, i64, Option<f64>, Option<i64>, Option<u8>);

fn event() -> impl Strategy<Value = Raw> {
    (
        0i64..400,
        0i64..3,
        value(),
        proptest::option::of(-50i64..50),
        proptest::option::of(0u8..6),
    )
}

fn make(raw: Vec<Raw>, seq0: i64) -> Vec<Event> {
    raw.into_iter()
        .enumerate()
        .map(|(i, (e, c, f, n, b))| Event {
            e,
            c,
            seq: seq0 + i as i64,
            vals: vec![
                f.map_or(Val::Null, Val::F),
                n.map_or(Val::Null, Val::I),
                b.map_or(Val::Null, |b| Val::B(vec![b'a' + b; b as usize])),
            ],
        })
        .collect()
}

/// The same state as PSA1: no block byte, no summaries.
fn as_v1(bytes: &[u8], n: usize) -> Vec<u8> {
    let summaries = 2 * (n >> SHIFT) * BLOCK_BYTES;
    let mut out = MAGIC_V1.to_vec();
    out.extend_from_slice(&bytes[4..HEADER - 1]);
    out.extend_from_slice(&bytes[HEADER..bytes.len() - summaries]);
    out
}

fn close(a: &Served, b: &Served) -> bool {
    match (a, b) {
        (Served::Float(x), Served::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

const OPS: [Op; 8] = [
    Op::Count,
    Op::Sum,
    Op::Mean,
    Op::Std,
    Op::Min,
    Op::Max,
    Op::Last,
    Op::Distinct,
];

/// Every (op, column) pair the lookups of the tests serve.
fn op_cols() -> impl Iterator<Item = (Op, Option<usize>)> {
    OPS.into_iter().flat_map(|op| {
        [None, Some(0), Some(1), Some(2)]
            .into_iter()
            .filter(move |col| {
                let numeric = matches!(col, Some(0) | Some(1));
                !(col.is_none() && op != Op::Count
                    || !numeric && matches!(op, Op::Sum | Op::Mean | Op::Std | Op::Min | Op::Max))
            })
            .map(move |col| (op, col))
    })
}

const ROW_KEY: &[&[u8]] = &[b"\x21\x07", &[0, 0, 0, 9]];

/// Serves every lookup from `row` (a state stored as a one-column row) read lazily:
/// None when the state is unreadable or a touched segment fails its check.
fn serve_lazily(row: &[u8], lookups: &[(i64, i64)]) -> Option<Vec<Served>> {
    let layout = RowLayout::new(1, vec![ValueType::Binary]);
    crate::encode::row::check_lazy(ROW_KEY, row).ok()?;
    let r = RowView::parse_checked(&layout, row).ok()?;
    let view = StateView::parse_lazy(r.value(0), r.segments().map(Lazy::new))?;
    let mut out = Vec::new();
    for &(t, w) in lookups {
        for (op, col) in op_cols() {
            out.push(view.serve(op, col, lags_ns(Some(w + 1), Closed::Left), t));
        }
    }
    (!view.damaged()).then_some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn in_place_merge_equals_the_reference(
        old in proptest::collection::vec(event(), 0..300),
        new in proptest::collection::vec(event(), 0..200),
        replay in 0usize..50,
        keep in 0i64..500,
        last in proptest::sample::subsequence(vec![0usize, 1, 2], 0..3),
    ) {
        let mut reference = State::new(TAGS.to_vec());
        reference.merge(make(old, 0), i64::MAX, &[]);
        let stored = reference.encode();
        // Some of the new events replay old ones (same sequence numbers).
        let mut new = make(new, 1000);
        new.extend(reference.events.iter().take(replay).cloned());
        let view = StateView::parse(&stored).unwrap();
        let (got, newest) = merge(Some(&view), &TAGS, new.clone(), keep, &last).unwrap();
        reference.merge(new, keep, &last);
        prop_assert_eq!(newest, reference.newest());
        prop_assert_eq!(&got, &reference.encode());
        prop_assert_eq!(State::decode(&got).unwrap().encode(), got); // (NaN != NaN in State)
    }

    #[test]
    fn summaries_give_what_a_scan_gives(
        events in proptest::collection::vec(event(), 0..700),
        lookups in proptest::collection::vec((0i64..450, 0i64..450), 1..20),
    ) {
        let mut s = State::new(TAGS.to_vec());
        s.merge(make(events, 0), i64::MAX, &[]);
        let v2 = s.encode();
        let v1 = as_v1(&v2, s.events.len());
        let (fast, scan) = (StateView::parse(&v2).unwrap(), StateView::parse(&v1).unwrap());
        prop_assert_eq!(State::decode(&v1).unwrap().encode(), v2.clone());
        for (t, w) in lookups {
            for closed in [Closed::Left, Closed::Right, Closed::Both] {
                for (op, col) in op_cols() {
                    let lags = lags_ns(Some(w + 1), closed);
                    let (a, b) = (fast.serve(op, col, lags, t), scan.serve(op, col, lags, t));
                    prop_assert!(close(&a, &b), "{:?} {:?} at {} w {}: {:?} vs {:?}", op, col, t, w, a, b);
                }
            }
        }
    }
}

fn big_event() -> impl Strategy<Value = Raw> {
    (
        0i64..100_000,
        0i64..3,
        value(),
        proptest::option::of(-50i64..50),
        proptest::option::of(0u8..6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A state large enough for a segmented row, read with its segments checked as
    /// they are touched, gives what a read of the whole-checked bytes gives; with one
    /// damaged byte anywhere in the row, a read either reports the damage or gives
    /// exactly the undamaged values (the damage was where it did not read).
    #[test]
    fn lazily_checked_states_read_as_whole_ones_or_report_damage(
        events in proptest::collection::vec(big_event(), 1600..2600),
        lookups in proptest::collection::vec((0i64..110_000, 0i64..60_000), 1..6),
        at in any::<prop::sample::Index>(), flip in 1u8..=255,
    ) {
        let mut s = State::new(TAGS.to_vec());
        s.merge(make(events, 0), i64::MAX, &[]);
        let state = s.encode();
        let whole = StateView::parse(&state).unwrap();
        let layout = RowLayout::new(1, vec![ValueType::Binary]);
        let row = layout.encode(ROW_KEY, Stamp::default(), &[Some(&state)]);
        prop_assert_eq!(row[0], crate::encode::segments::ROW_FORMAT_SEGMENTED);
        let want: Vec<Served> = lookups.iter().flat_map(|&(t, w)| {
            op_cols().map(move |(op, col)| (op, col, t, w))
        }).map(|(op, col, t, w)| whole.serve(op, col, lags_ns(Some(w + 1), Closed::Left), t)).collect();
        let got = serve_lazily(&row, &lookups).expect("an undamaged row reads");
        prop_assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            prop_assert!(close(a, b), "{:?} vs {:?}", a, b);
        }
        let mut bad = row.clone();
        bad[at.index(row.len())] ^= flip;
        if let Some(got) = serve_lazily(&bad, &lookups) {
            for (a, b) in got.iter().zip(&want) {
                prop_assert!(close(a, b), "undetected damage changed a value: {:?} vs {:?}", a, b);
            }
        }
    }
}

#[test]
fn damage_in_a_window_s_events_is_reported() {
    // 3,000 events one second apart: e[] spans ~6 segments; a lookup at the end
    // reads the events at its windows' edges.
    let raw: Vec<Raw> = (0..3000)
        .map(|i| (i * 10, 0, Some(1.0), Some(1), None))
        .collect();
    let mut s = State::new(TAGS.to_vec());
    s.merge(make(raw, 0), i64::MAX, &[]);
    let state = s.encode();
    let layout = RowLayout::new(1, vec![ValueType::Binary]);
    let row = layout.encode(ROW_KEY, Stamp::default(), &[Some(&state)]);
    let lookups = [(30_000, 99)];
    assert!(serve_lazily(&row, &lookups).is_some());
    // The newest event's time (its window's head is found by a binary search that
    // ends there): damaged, the read says so.
    let value = RowView::parse_checked(&layout, &row)
        .unwrap()
        .value(0)
        .as_ptr();
    let ds = value as usize - row.as_ptr() as usize;
    let newest = ds + HEADER + 2999 * 8;
    let mut bad = row.clone();
    bad[newest] ^= 0x40;
    assert!(serve_lazily(&bad, &lookups).is_none());
    assert!(crate::encode::row::check(ROW_KEY, &bad).is_err());
}

#[test]
fn a_lookup_checks_a_small_part_of_a_large_state() {
    // 100,000 events over 30 days (one f64 column): 3.3 MB, ~800 segments. A lookup
    // of count/sum/mean/max over 1h/1d/7d/30d touches the header, its binary
    // searches, the edge events and the block summaries: a few dozen segments.
    let month = 30 * 86_400_000_000_000i64;
    let raw: Vec<Event> = (0..100_000i64)
        .map(|i| Event {
            e: i * (month / 100_000),
            c: 0,
            seq: i,
            vals: vec![Val::F(i as f64 / 7.0)],
        })
        .collect();
    let mut s = State::new(vec![Tag::F64]);
    s.merge(raw, i64::MAX, &[]);
    let state = s.encode();
    let layout = RowLayout::new(1, vec![ValueType::Binary]);
    let row = layout.encode(ROW_KEY, Stamp::default(), &[Some(&state)]);
    let r = RowView::parse_checked(&layout, &row).unwrap();
    let segs = r.segments().unwrap();
    let view = StateView::parse_lazy(r.value(0), Some(Lazy::new(segs))).unwrap();
    let whole = StateView::parse(&state).unwrap();
    for w in [3_600i64, 86_400, 7 * 86_400, 30 * 86_400] {
        for op in [Op::Count, Op::Sum, Op::Mean, Op::Max] {
            let col = (op != Op::Count).then_some(0);
            let lags = lags_ns(Some(w * 1_000_000_000), Closed::Left);
            assert_eq!(
                view.serve(op, col, lags, month),
                whole.serve(op, col, lags, month)
            );
        }
    }
    assert!(!view.damaged());
    let checked = view.lazy_checked();
    assert!(
        checked * 10 < segs.len(),
        "{checked} of {} segments checked",
        segs.len()
    );
}
