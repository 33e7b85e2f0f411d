//! Tests of the row format: layout, round trips, checksums, garbage.

use super::*;
use proptest::prelude::*;

const KEY: &[&[u8]] = &[b"\x21\x07", &[0, 0, 0, 3]];

fn layout() -> RowLayout {
    RowLayout::new(
        3,
        vec![
            ValueType::F32,
            ValueType::Utf8,
            ValueType::I64,
            ValueType::Binary,
            ValueType::Bool,
            ValueType::U16,
            ValueType::F64,
            ValueType::Timestamp(TimeUnit::Microsecond),
            ValueType::I8,
        ],
    )
}

#[test]
fn fixed_offsets_follow_the_header_and_bitmap() {
    let l = layout();
    assert_eq!(l.bitmap_len, 2);
    assert_eq!(
        l.slots[0],
        Slot::Fixed {
            offset: 23,
            width: 4
        }
    );
    assert_eq!(l.slots[1], Slot::Var { index: 0 });
    assert_eq!(
        l.slots[2],
        Slot::Fixed {
            offset: 27,
            width: 8
        }
    );
    assert_eq!(l.n_var, 2);
    let floats = RowLayout::new(1, vec![ValueType::F32; 20]);
    assert_eq!(floats.data_start, 104);
    let row = floats.encode(KEY, Stamp::default(), &[Some(&[0; 4][..]); 20]);
    assert_eq!(row.len(), 108);
}

#[test]
fn round_trip_with_nulls() {
    let l = layout();
    let stamp = Stamp {
        event: -5,
        created: 9,
    };
    let f = 1.5f32.to_le_bytes();
    let i = (-7i64).to_le_bytes();
    let u = 513u16.to_le_bytes();
    let d = 2.25f64.to_le_bytes();
    let t = 1_700_000_000_000_000i64.to_le_bytes();
    let values: Vec<Option<&[u8]>> = vec![
        Some(&f),
        Some(b"hello"),
        Some(&i),
        None,
        Some(&[1]),
        Some(&u),
        None,
        Some(&t),
        Some(&[0xFF]),
    ];
    let row = l.encode(KEY, stamp, &values);
    let v = RowView::parse(&l, KEY, &row).unwrap();
    assert_eq!(v.stamp(), stamp);
    assert_eq!(super::stamp(KEY, &row).unwrap(), stamp);
    for (col, want) in values.iter().enumerate() {
        assert_eq!(v.is_null(col), want.is_none(), "column {col}");
        if let Some(w) = want {
            assert_eq!(v.value(col), *w);
        }
    }
    assert_eq!(v.value(3), b"");
    assert_eq!(v.f32(0), 1.5);
    assert_eq!(v.f32(2), -7.0);
    assert_eq!(v.f32(4), 1.0);
    assert_eq!(v.f32(5), 513.0);
    assert!(v.f32(6).is_nan());
    assert_eq!(v.f32(8), -1.0);
    let _ = d;
}

#[test]
fn rejects_other_versions_and_lengths() {
    let l = layout();
    let row = l.encode(
        KEY,
        Stamp {
            event: 1,
            created: 0,
        },
        &[None, None, None, None, None, None, None, None, None],
    );
    let other = RowLayout::new(4, l.types.clone());
    assert!(matches!(
        RowView::parse(&other, KEY, &row),
        Err(RowDecodeError::SchemaVersion {
            found: 3,
            expected: 4
        })
    ));
    assert!(RowView::parse(&l, KEY, &row[..row.len() - 1]).is_err());
    let mut longer = row.clone();
    longer.push(0);
    assert!(RowView::parse(&l, KEY, &longer).is_err());
    let mut bad = row;
    bad[0] = 9;
    assert_eq!(
        RowView::parse(&l, KEY, &bad).unwrap_err(),
        RowDecodeError::Format(9)
    );
}

#[test]
fn the_checksum_catches_any_flipped_bit_and_another_key() {
    let l = layout();
    let f = 1.5f32.to_le_bytes();
    let values: Vec<Option<&[u8]>> = vec![
        Some(&f),
        Some(b"hello"),
        None,
        Some(b"xy"),
        None,
        None,
        None,
        None,
        None,
    ];
    let row = l.encode(KEY, Stamp::default(), &values);
    assert!(RowView::parse(&l, KEY, &row).is_ok());
    // The key may be given in any split.
    let whole: Vec<u8> = KEY.concat();
    assert!(RowView::parse(&l, &[&whole], &row).is_ok());
    for bit in 0..row.len() * 8 {
        let mut bad = row.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(RowView::parse(&l, KEY, &bad).is_err(), "bit {bit}");
        assert!(super::stamp(KEY, &bad).is_err(), "bit {bit}");
    }
    let (e7, e8): (&[u8], &[u8]) = (b"\x21\x07", b"\x21\x08");
    let (t3, t4): (&[u8], &[u8]) = (&[0, 0, 0, 3], &[0, 0, 0, 4]);
    for other in [[e8, t3], [e7, t4]] {
        assert_eq!(
            RowView::parse(&l, &other, &row).unwrap_err(),
            RowDecodeError::Checksum
        );
    }
}

proptest! {
    #[test]
    fn strings_round_trip(a in proptest::collection::vec(any::<u8>(), 0..50),
                          b in proptest::collection::vec(any::<u8>(), 0..50),
                          null_a in any::<bool>(), e in any::<i64>(), c in any::<i64>()) {
        let l = RowLayout::new(1, vec![ValueType::Binary, ValueType::I32, ValueType::Utf8]);
        let x = 42i32.to_le_bytes();
        let values: Vec<Option<&[u8]>> = vec![if null_a { None } else { Some(&a) }, Some(&x), Some(&b)];
        let row = l.encode(KEY, Stamp { event: e, created: c }, &values);
        let v = RowView::parse(&l, KEY, &row).unwrap();
        prop_assert_eq!(v.stamp(), Stamp { event: e, created: c });
        prop_assert_eq!(v.is_null(0), null_a);
        prop_assert_eq!(v.value(0), if null_a { &[][..] } else { &a[..] });
        prop_assert_eq!(v.value(1), &x[..]);
        prop_assert_eq!(v.value(2), &b[..]);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160),
                                             set_header in any::<bool>()) {
        let l = layout();
        let mut bytes = bytes;
        if set_header && bytes.len() >= 5 {
            bytes[0] = ROW_FORMAT;
            bytes[1..5].copy_from_slice(&3u32.to_le_bytes());
        }
        if set_header && bytes.len() >= HEADER_LEN + CHECKSUM_LEN {
            seal(KEY, &mut bytes); // so that parsing goes past the checksum
        }
        let _ = stamp(KEY, &bytes);
        if let Ok(v) = RowView::parse(&l, KEY, &bytes) {
            for col in 0..l.n_columns() {
                let _ = v.is_null(col);
                let _ = v.value(col);
                if l.types[col].is_numeric() {
                    let _ = v.f32(col);
                }
            }
        }
    }
}

proptest! {
    /// `f32_run` over every run of a row of 21 float32 columns (runs crossing bitmap
    /// bytes, nulls anywhere) equals `f32` column by column.
    #[test]
    fn f32_run_matches_f32_per_column(
        vals in proptest::collection::vec(proptest::option::weighted(0.8, any::<f32>()), 21),
    ) {
        let l = RowLayout::new(1, vec![ValueType::F32; 21]);
        let bytes: Vec<[u8; 4]> = vals.iter().map(|v| v.unwrap_or(0.0).to_le_bytes()).collect();
        let values: Vec<Option<&[u8]>> = vals
            .iter()
            .zip(&bytes)
            .map(|(v, b)| v.map(|_| &b[..]))
            .collect();
        let row = l.encode(KEY, Stamp { event: 0, created: 0 }, &values);
        let v = RowView::parse(&l, KEY, &row).unwrap();
        for col in 0..21 {
            let Slot::Fixed { offset, .. } = l.slots[col] else { panic!("fixed") };
            for len in 0..=21 - col {
                let mut out = vec![7.0f32; len];
                v.f32_run(col, offset, &mut out);
                for (i, got) in out.iter().enumerate() {
                    prop_assert_eq!(got.to_bits(), v.f32(col + i).to_bits(), "col {} len {} at {}", col, len, i);
                }
            }
        }
    }
}
