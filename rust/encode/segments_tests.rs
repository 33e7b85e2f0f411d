//! Tests of segmented rows: the format switch, round trips, where damage is caught.

use super::*;
use crate::encode::row::{self, RowLayout, RowView, Stamp, ValueType};
use proptest::prelude::*;

const KEY: &[&[u8]] = &[b"\x21\x07", &[0, 0, 0, 3]];

fn layout() -> RowLayout {
    RowLayout::new(2, vec![ValueType::Binary, ValueType::I32, ValueType::Utf8])
}

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(seed) ^ (i >> 9)) as u8)
        .collect()
}

fn row_of(a: &[u8], b: &[u8]) -> Vec<u8> {
    let x = 42i32.to_le_bytes();
    layout().encode(
        KEY,
        Stamp {
            event: 5,
            created: 6,
        },
        &[Some(a), Some(&x), Some(b)],
    )
}

#[test]
fn large_rows_switch_format_and_round_trip() {
    let l = layout();
    for (a_len, b_len) in [
        (0, 0),
        (65_535, 0),
        (65_536, 0),
        (60_000, 5_536),
        (70_001, 4_096),
    ] {
        let (a, b) = (pattern(a_len, 7), pattern(b_len, 13));
        let row = row_of(&a, &b);
        let total = a_len + b_len;
        let segmented = total >= SEGMENTED_FROM;
        assert_eq!(row[0] == ROW_FORMAT_SEGMENTED, segmented, "{total}");
        assert_eq!(row.len(), l.row_len(total));
        for whole in [true, false] {
            let ok = if whole {
                row::check(KEY, &row)
            } else {
                row::check_lazy(KEY, &row)
            };
            assert!(ok.is_ok(), "{total}");
        }
        let v = RowView::parse(&l, KEY, &row).unwrap();
        assert_eq!(
            v.stamp(),
            Stamp {
                event: 5,
                created: 6
            }
        );
        assert_eq!(row::stamp(KEY, &row).unwrap(), v.stamp());
        assert_eq!((v.value(0), v.value(2)), (&a[..], &b[..]));
        assert_eq!(v.value(1), &42i32.to_le_bytes()[..]);
        match v.segments() {
            Some(s) => {
                assert!(segmented);
                assert_eq!(s.len(), total.div_ceil(4096));
                assert!((0..s.len()).all(|i| s.verify(i)));
            }
            None => assert!(!segmented),
        }
    }
}

#[test]
fn damage_is_caught_by_the_whole_check_and_by_the_segment_read() {
    let l = layout();
    let (a, b) = (pattern(70_000, 7), pattern(3_000, 11));
    let row = row_of(&a, &b);
    let ds =
        RowView::parse(&l, KEY, &row).unwrap().value(0).as_ptr() as usize - row.as_ptr() as usize;
    let data = ds..ds + 73_000;
    for bit in (0..row.len() * 8).step_by(331) {
        let mut bad = row.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(row::check(KEY, &bad).is_err(), "bit {bit}");
        assert!(RowView::parse(&l, KEY, &bad).is_err(), "bit {bit}");
        let at = bit / 8;
        if data.contains(&at) {
            // Only the data of the damaged segment is wrong: the lazy check passes,
            // that segment fails, every other one passes.
            assert!(row::check_lazy(KEY, &bad).is_ok(), "bit {bit}");
            let v = RowView::parse_checked(&l, &bad).unwrap();
            let s = v.segments().unwrap();
            let hit = (at - ds) / 4096;
            for i in 0..s.len() {
                assert_eq!(s.verify(i), i != hit, "bit {bit}, segment {i}");
            }
            let lazy = Lazy::new(s);
            let value = v.value(0);
            lazy.touch(value, 0, (hit * 4096).min(value.len()));
            assert!(!lazy.damaged(), "bit {bit}: untouched");
            lazy.touch(&s.data[at - ds..], 0, 1);
            assert!(lazy.damaged(), "bit {bit}: touched");
        } else {
            assert!(row::check_lazy(KEY, &bad).is_err(), "bit {bit}");
            assert!(row::stamp(KEY, &bad).is_err(), "bit {bit}");
        }
    }
    let (e8, t3): (&[u8], &[u8]) = (b"\x21\x08", &[0, 0, 0, 3]);
    assert_eq!(
        row::check_lazy(&[e8, t3], &row),
        Err(RowDecodeError::Checksum)
    );
    assert_eq!(row::check(&[&KEY.concat()], &row), Ok(()));
}

#[test]
fn a_segment_from_another_row_or_place_fails() {
    let (a, b) = (pattern(70_000, 7), pattern(70_000, 9));
    let (r1, r2) = (row_of(&a, &[]), row_of(&b, &[]));
    let ds = r1.len() - 4 - 8 - 4 * 70_000usize.div_ceil(4096) - 70_000;
    let mut swapped = r1.clone();
    swapped[ds..ds + 4096].copy_from_slice(&r2[ds..ds + 4096]);
    assert!(row::check(KEY, &swapped).is_err());
    let mut moved = r1.clone();
    moved.copy_within(ds + 4096..ds + 8192, ds);
    assert!(row::check(KEY, &moved).is_err());
}

proptest! {
    #[test]
    fn damaged_trailers_and_garbage_never_panic(
        cut in 0usize..80_000, at in 0usize..80_000, byte in any::<u8>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let l = layout();
        let row = row_of(&pattern(66_000, 7), b"xyz");
        let mut bad = row.clone();
        let at = at % bad.len();
        bad[at] = byte;
        bad.truncate(cut.max(1));
        for bytes in [&bad[..], &row[..cut.min(row.len())], &garbage[..]] {
            let mut bytes = bytes.to_vec();
            if let Some(b) = bytes.first_mut() {
                *b = ROW_FORMAT_SEGMENTED;
            }
            let _ = row::stamp(KEY, &bytes);
            let _ = row::check(KEY, &bytes);
            if row::check_lazy(KEY, &bytes).is_ok() {
                if let Ok(v) = RowView::parse_checked(&l, &bytes) {
                    let s = v.segments().expect("a segmented row");
                    let lazy = Lazy::new(s);
                    let value = v.value(0);
                    lazy.touch(value, 0, value.len());
                    let _ = (v.value(2), lazy.damaged());
                }
            }
        }
    }
}
