//! Properties of the stored state: the in-place merge equals the reference merge
//! ([`State::merge`] then `encode`), and reads through block summaries equal reads
//! that scan every event (the same state without summaries, format PSA1).

use proptest::prelude::*;

use super::layout::{merge, BLOCK_BYTES, HEADER, MAGIC_V1, SHIFT};
use super::serve::{lags_ns, Served, StateView};
use super::state::{Event, State, Tag, Val};
use super::{Closed, Op};

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
        let ops = [Op::Count, Op::Sum, Op::Mean, Op::Std, Op::Min, Op::Max, Op::Last, Op::Distinct];
        for (t, w) in lookups {
            for closed in [Closed::Left, Closed::Right, Closed::Both] {
                for op in ops {
                    for col in [None, Some(0), Some(1), Some(2)] {
                        let numeric = matches!(col, Some(0) | Some(1));
                        if col.is_none() && op != Op::Count
                            || !numeric && matches!(op, Op::Sum | Op::Mean | Op::Std | Op::Min | Op::Max)
                        {
                            continue;
                        }
                        let lags = lags_ns(Some(w + 1), closed);
                        let (a, b) = (fast.serve(op, col, lags, t), scan.serve(op, col, lags, t));
                        prop_assert!(close(&a, &b), "{:?} {:?} at {} w {}: {:?} vs {:?}", op, col, t, w, a, b);
                    }
                }
            }
        }
    }
}
