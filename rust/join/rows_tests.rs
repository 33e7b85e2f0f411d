//! Tests of the row groups ([`super`]): gathered like Arrow's `take`, and when they are used.

use super::cells::SHORT;
use super::*;
use std::sync::Arc;

use arrow_array::*;
use arrow_buffer::{IntervalDayTime, IntervalMonthDayNano};
use arrow_schema::{Field as ArrowField, Schema};

/// A table of every kind of column, `n` rows in batches of `chunk`, each a slice
/// of a larger array (non-zero offsets); nulls in some columns.
fn table(n: usize, chunk: usize) -> (Vec<RecordBatch>, Vec<ArrayRef>) {
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
            (0..m).map(|i| (i % 4 != 3).then(|| SHORT[i % 5])),
        )),
        Arc::new(LargeBinaryArray::from_iter_values(
            (0..m).map(|i| SHORT[(i * 3) % 5].as_bytes()),
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
        let layout = layout(&batches, &cols, n, any(64));
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
        let bounds = [(0, 700), (700, 700), (1_400, 700), (2_100, 5)];
        let mut seen = 0;
        for g in &layout.groups {
            for (pos, arrays) in g.gather(&batches, &picks, &bounds).unwrap() {
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
    let too_few = Limits {
        min_rows: 2_001,
        ..any(64)
    };
    assert!(layout(&batches, &cols, 2_000, too_few).groups.is_empty());
    assert!(layout(&batches, &cols, 499, any(64)).groups.is_empty()); // spine < a quarter
    assert!(!layout(&batches, &cols, 500, any(64)).groups.is_empty());
    let (split, _) = table(2_000, 700); // copied anyway: any spine
    assert!(!layout(&split, &cols, 1, any(64)).groups.is_empty());
    assert!(layout(&split, &[1], 2_000, any(64)).groups.is_empty()); // one column: nothing to share
    assert_eq!(record_width(1_000_000, 64), Some(64));
    assert_eq!(record_width(2_097_152, 64), Some(64));
    assert_eq!(record_width(3_000_000, 64), Some(32));
    assert_eq!(record_width(8_000_000, 64), Some(16));
    assert_eq!(record_width(10_000_000, 64), None);
}

/// Any table and spine size; records of at most `max_width` bytes.
fn any(max_width: usize) -> Limits {
    Limits {
        min_rows: 0,
        max_width,
    }
}

// From a review (2026-12-01): every record width, more types, empty batches, chunks
// sliced so that their data buffers end at their last (15-byte) value.

/// Column `k` of [`odd_table`], rows `r` (absolute), as one array: every fixed-width
/// type a record holds, nulls in some chunks only, and short byte arrays of each kind.
fn col(k: usize, r: std::ops::Range<usize>) -> ArrayRef {
    // nulls only in [1004, 2009) for "mixed" columns
    let mixed = |i: usize| !((1004..2009).contains(&i) && i.is_multiple_of(3));
    let some = |i: usize| i % 4 != 1;
    match k {
        0 => {
            let f = Float32Array::from_iter(r.map(|i| some(i).then_some(i as f32 / 8.0)));
            arrow_cast::cast(&f, &DataType::Float16).unwrap()
        }
        1 => Arc::new(IntervalYearMonthArray::from_iter_values(
            r.map(|i| i as i32 - 7),
        )),
        2 => Arc::new(IntervalDayTimeArray::from_iter(r.map(|i| {
            mixed(i).then(|| IntervalDayTime::new(i as i32, -(i as i32)))
        }))),
        3 => Arc::new(IntervalMonthDayNanoArray::from_iter(r.map(|i| {
            some(i).then(|| IntervalMonthDayNano::new(i as i32, 2, i as i64 * 99))
        }))),
        4 => Arc::new(
            Decimal128Array::from_iter(r.map(|i| mixed(i).then_some(i as i128 * 1_001 - 5)))
                .with_precision_and_scale(10, 3)
                .unwrap(),
        ),
        5 => Arc::new(Date64Array::from_iter_values(
            r.map(|i| i as i64 * 86_400_000),
        )),
        6 => Arc::new(Time32SecondArray::from_iter(
            r.map(|i| some(i).then_some((i % 86_400) as i32)),
        )),
        7 => Arc::new(Time64NanosecondArray::from_iter_values(
            r.map(|i| i as i64 * 1_000_003),
        )),
        8 => Arc::new(DurationMillisecondArray::from_iter(
            r.map(|i| mixed(i).then_some(-(i as i64))),
        )),
        9 => Arc::new(
            TimestampMicrosecondArray::from_iter(
                r.map(|i| some(i).then_some(i as i64 * 3_600_000_000)),
            )
            .with_timezone("America/New_York"),
        ),
        10 => Arc::new(UInt64Array::from_iter_values(
            r.map(|i| u64::MAX - i as u64),
        )),
        11 => Arc::new(LargeStringArray::from_iter(
            r.map(|i| some(i).then(|| SHORT[i % 5])),
        )),
        12 => Arc::new(BinaryArray::from_iter_values(
            r.map(|i| SHORT[(i * 3) % 5].as_bytes()),
        )),
        13 => Arc::new(StringArray::from_iter(
            r.map(|i| mixed(i).then(|| SHORT[i % 5])),
        )),
        14 => Arc::new(Int8Array::from_iter_values(r.map(|i| i as i8))),
        15 => Arc::new(
            Decimal64Array::from_iter(r.map(|i| some(i).then_some(i as i64)))
                .with_precision_and_scale(15, 2)
                .unwrap(),
        ),
        16 => Arc::new(LargeBinaryArray::from_iter(
            r.map(|i| mixed(i).then(|| SHORT[(i * 7) % 5].as_bytes())),
        )),
        _ => unreachable!(),
    }
}
const NCOLS: usize = 17;

/// Batches with empty ones (first, middle, last), every chunk a slice at offset 1
/// whose data buffers end at the chunk's last value.
fn odd_table(bounds: &[(usize, usize)]) -> (Vec<RecordBatch>, Vec<ArrayRef>) {
    let fields: Vec<ArrowField> = (0..NCOLS)
        .map(|k| ArrowField::new(format!("c{k}"), col(k, 0..1).data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batches: Vec<RecordBatch> = bounds
        .iter()
        .map(|&(s, e)| {
            let cols = (0..NCOLS)
                .map(|k| {
                    let lo = s.saturating_sub(1);
                    let a = col(k, lo..e);
                    a.slice(s - lo, e - s)
                })
                .collect();
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    let whole = (0..NCOLS)
        .map(|k| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(k).as_ref()).collect();
            arrow_select::concat::concat(&parts).unwrap()
        })
        .collect();
    (batches, whole)
}

fn check_layout(l: &Layout, ncols: usize) {
    let mut seen: Vec<usize> = l.rest.clone();
    for g in &l.groups {
        assert!(g.fields.len() > 1);
        let has_bits = g.fields.iter().any(|f| f.bit.is_some());
        let limit = if has_bits { g.width - 8 } else { g.width };
        let mut spans: Vec<(usize, usize)> = g
            .fields
            .iter()
            .map(|f| (f.at, f.at + size(f.kind)))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {l:?}");
        }
        assert!(spans.last().unwrap().1 <= limit, "word overlap {l:?}");
        let mut bits: Vec<u32> = g.fields.iter().filter_map(|f| f.bit).collect();
        let nb = bits.len();
        bits.sort();
        bits.dedup();
        assert_eq!(bits.len(), nb);
        assert!(bits.iter().all(|&b| b < 64));
        seen.extend(g.fields.iter().map(|f| f.pos));
    }
    seen.sort();
    assert_eq!(seen, (0..ncols).collect::<Vec<_>>());
}

#[test]
fn every_width_matches_take_on_odd_types_empty_batches_and_buffer_ends() {
    let n = 3000;
    let bounds = [
        (0, 0),
        (0, 1004),
        (1004, 1004),
        (1004, 2009),
        (2009, 3000),
        (3000, 3000),
    ];
    let (batches, whole) = odd_table(&bounds);
    let cols: Vec<usize> = (0..NCOLS).collect();
    for w in [16usize, 32, 64] {
        let l = layout(&batches, &cols, n, any(w));
        check_layout(&l, NCOLS);
        assert!(!l.groups.is_empty());
        let idx: Vec<Vec<u32>> = vec![
            (0..777u32)
                .map(|i| (i * 7919) % n as u32)
                .chain([0, n as u32 - 1, 1003, 1004, 2008, 2009])
                .collect(),
            (0..600u32)
                .map(|i| (n as u32 - 1) - (i * 13) % n as u32)
                .collect(),
            vec![n as u32 - 1],
        ];
        let masks = [
            None,
            Some(NullBuffer::from_iter((0..600).map(|i| i % 6 != 1))),
            None,
        ];
        let mut picks: Vec<_> = idx
            .iter()
            .zip(&masks)
            .map(|(i, m)| Some((i.as_slice(), m.as_ref())))
            .collect();
        picks.insert(1, None);
        let n0 = idx[0].len();
        let bounds = [(0, n0), (n0, 9), (n0 + 9, 600), (n0 + 609, 1)];
        for g in &l.groups {
            for (pos, arrays) in g.gather(&batches, &picks, &bounds).unwrap() {
                assert_eq!(arrays.len(), 4);
                assert_eq!(arrays[1].null_count(), 9);
                assert_eq!(arrays[1].data_type(), whole[pos].data_type());
                for (b, k) in [(0usize, 0usize), (2, 1), (3, 2)] {
                    let got = &arrays[b];
                    got.to_data().validate_full().unwrap();
                    let ix = UInt32Array::new(idx[k].clone().into(), masks[k].clone());
                    let want = arrow_select::take::take(&whole[pos], &ix, None).unwrap();
                    assert_eq!(got.data_type(), want.data_type(), "col {pos}");
                    assert_eq!(
                        got.to_data(),
                        want.to_data(),
                        "width {w} col {pos} batch {b}"
                    );
                    assert_eq!(
                        got.logical_nulls(),
                        want.logical_nulls(),
                        "width {w} col {pos} batch {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn layouts_never_overlap_and_many_nullable_columns_gather_right() {
    // Many nullable 1-byte columns and non-null ones at each width.
    let n = 100;
    for (nn, nv) in [(70usize, 0usize), (3, 70), (57, 9), (1, 1)] {
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for i in 0..nn {
            fields.push(ArrowField::new(format!("n{i}"), DataType::Int8, true));
            cols.push(Arc::new(Int8Array::from_iter(
                (0..n).map(|r| (r % 2 == 0).then_some(r as i8)),
            )));
        }
        for i in 0..nv {
            fields.push(ArrowField::new(format!("v{i}"), DataType::Int8, true));
            cols.push(Arc::new(Int8Array::from_iter_values(
                (0..n).map(|r| r as i8),
            )));
        }
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.clone()).unwrap();
        let c: Vec<usize> = (0..nn + nv).collect();
        for w in [16, 32, 64] {
            let l = layout(std::slice::from_ref(&b), &c, n, any(w));
            check_layout(&l, nn + nv);
            let idx: Vec<u32> = (0..n as u32).rev().collect();
            for g in &l.groups {
                for (pos, arrays) in g
                    .gather(std::slice::from_ref(&b), &[Some((&idx, None))], &[(0, n)])
                    .unwrap()
                {
                    let want =
                        arrow_select::take::take(&cols[pos], &UInt32Array::from(idx.clone()), None)
                            .unwrap();
                    assert_eq!(arrays[0].to_data(), want.to_data());
                }
            }
        }
    }
}
