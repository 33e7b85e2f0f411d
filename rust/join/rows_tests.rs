//! Tests of the row groups ([`super`]): gathered like Arrow's `take`, and when they are used.

use super::*;
use std::sync::Arc;

use arrow_array::*;
use arrow_schema::{Field as ArrowField, Schema};

/// A table of every kind of column, `n` rows in batches of `chunk`, each a slice
/// of a larger array (non-zero offsets); nulls in some columns.
fn table(n: usize, chunk: usize) -> (Vec<RecordBatch>, Vec<ArrayRef>) {
    let pool = [
        "",
        "a",
        "h\u{e9}llo \u{4e2d}",
        "exactly fifteen",
        "category_07",
    ];
    let m = n + 3;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from_iter(
            (0..m).map(|i| (i % 5 != 1).then_some(i as i8)),
        )),
        Arc::new(UInt16Array::from_iter_values(
            (0..m).map(|i| (i * 7) as u16),
        )),
        Arc::new(Int32Array::from_iter(
            (0..m).map(|i| (i % 3 != 0).then_some(-(i as i32))),
        )),
        Arc::new(Float32Array::from_iter_values(
            (0..m).map(|i| i as f32 / 3.0),
        )),
        Arc::new(Float64Array::from_iter_values(
            (0..m).map(|i| i as f64 * 1.5),
        )),
        Arc::new(Int64Array::from_iter(
            (0..m).map(|i| (i % 7 != 2).then_some(i as i64 * 1_000_003)),
        )),
        Arc::new(
            Decimal128Array::from_iter_values((0..m).map(|i| i as i128 * 10_000_000_019))
                .with_precision_and_scale(38, 2)
                .unwrap(),
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values((0..m).map(|i| i as i64 * 86_400))
                .with_timezone("+01:00"),
        ),
        Arc::new(Date32Array::from_iter(
            (0..m).map(|i| (i % 11 != 4).then_some(i as i32)),
        )),
        Arc::new(StringArray::from_iter(
            (0..m).map(|i| (i % 4 != 3).then(|| pool[i % 5])),
        )),
        Arc::new(LargeBinaryArray::from_iter_values(
            (0..m).map(|i| pool[(i * 3) % 5].as_bytes()),
        )),
        Arc::new(BooleanArray::from_iter((0..m).map(|i| Some(i % 2 == 0)))),
        Arc::new(StringArray::from_iter_values(
            (0..m).map(|i| "x".repeat(i % 40)),
        )),
    ];
    let fields: Vec<ArrowField> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| ArrowField::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let whole: Vec<ArrayRef> = cols.iter().map(|c| c.slice(3, n)).collect();
    let batches = (0..n)
        .step_by(chunk)
        .map(|s| {
            let len = chunk.min(n - s);
            RecordBatch::try_new(
                schema.clone(),
                cols.iter().map(|c| c.slice(3 + s, len)).collect(),
            )
            .unwrap()
        })
        .collect();
    (batches, whole)
}

#[test]
fn groups_gather_like_arrow_take_across_batches_types_nulls_and_masks() {
    let n = 3_000;
    for chunk in [n, 1_000, 333] {
        let (batches, whole) = table(n, chunk);
        let cols: Vec<usize> = (0..whole.len()).collect();
        let layout = layout(&batches, &cols, n, 0);
        // Booleans and long strings go one by one; every other column is grouped.
        assert_eq!(layout.rest, vec![11, 12], "{layout:?}");
        assert!(layout.groups.len() >= 2 && layout.groups.iter().all(|g| g.width == 64));
        // Three spine batches: matched rows, some unmatched, none matched.
        let idx: Vec<Vec<u32>> = (0..3)
            .map(|b| {
                (0..700u32)
                    .map(|i| (i * 7919 + b * 13) % n as u32)
                    .collect()
            })
            .collect();
        let masks = [
            None,
            Some(NullBuffer::from_iter((0..700).map(|i| i % 6 != 1))),
            Some(NullBuffer::new_null(700)),
        ];
        let picks: Vec<_> = idx
            .iter()
            .zip(&masks)
            .map(|(i, m)| Some((i.as_slice(), m.as_ref())))
            .collect();
        let mut picks = picks;
        picks.push(None);
        let lens = [700, 700, 700, 5];
        let mut seen = 0;
        for g in &layout.groups {
            for (pos, arrays) in g.gather(&batches, &picks, &lens).unwrap() {
                seen += 1;
                assert_eq!(arrays.len(), 4);
                assert_eq!((arrays[3].len(), arrays[3].null_count()), (5, 5));
                for b in 0..3 {
                    let got = &arrays[b];
                    got.to_data().validate_full().unwrap();
                    let want = arrow_select::take::take(
                        &whole[pos],
                        &UInt32Array::from(idx[b].clone()),
                        None,
                    )
                    .unwrap();
                    assert_eq!(got.data_type(), want.data_type());
                    let want_nulls = NullBuffer::union(want.nulls(), masks[b].as_ref());
                    assert_eq!(got.logical_nulls(), want_nulls, "column {pos}, batch {b}");
                    for i in (0..got.len()).filter(|&i| got.is_valid(i)) {
                        assert_eq!(
                            arrow_cast::display::array_value_to_string(got, i).unwrap(),
                            arrow_cast::display::array_value_to_string(&want, i).unwrap(),
                            "column {pos}, batch {b}, row {i}"
                        );
                    }
                }
            }
        }
        assert_eq!(seen, 11);
    }
}

#[test]
fn layout_declines_small_tables_short_spines_and_caps_the_width() {
    let (batches, _) = table(2_000, 2_000);
    let cols: Vec<usize> = (0..13).collect();
    assert!(layout(&batches, &cols, 2_000, 2_001).groups.is_empty()); // too few rows
    assert!(layout(&batches, &cols, 499, 0).groups.is_empty()); // spine < a quarter
    assert!(!layout(&batches, &cols, 500, 0).groups.is_empty());
    let (split, _) = table(2_000, 700); // copied anyway: any spine
    assert!(!layout(&split, &cols, 1, 0).groups.is_empty());
    assert!(layout(&split, &[1], 2_000, 0).groups.is_empty()); // one column: nothing to share
    assert_eq!(record_width(1_000_000), Some(64));
    assert_eq!(record_width(2_097_152), Some(64));
    assert_eq!(record_width(3_000_000), Some(32));
    assert_eq!(record_width(8_000_000), Some(16));
    assert_eq!(record_width(10_000_000), None);
}
