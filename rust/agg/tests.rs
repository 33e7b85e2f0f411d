//! Unit tests of the sweep against a direct computation on small cases.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::*;

fn table(name: &str, cols: Vec<(&str, ArrayRef)>) -> Table {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), cols.into_iter().map(|c| c.1).collect()).unwrap();
    Table::new(name, schema, vec![batch])
}

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v))
}

fn spec(closed: Closed, aggs: Vec<AggSpec>) -> WindowAggSpec {
    let spine = table(
        "spine",
        vec![
            (
                "k",
                Arc::new(Int64Array::from(vec![1, 1, 1, 2])) as ArrayRef,
            ),
            ("t", ts(vec![10, 20, 30, 10])),
        ],
    );
    let events = table(
        "events",
        vec![
            (
                "k",
                Arc::new(Int64Array::from(vec![1, 1, 1, 1, 1])) as ArrayRef,
            ),
            ("e", ts(vec![10, 0, 20, 25, 19])),
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(2.0),
                    Some(4.0),
                    None,
                    Some(8.0),
                ])) as ArrayRef,
            ),
        ],
    );
    WindowAggSpec {
        spine,
        spine_time: "t".into(),
        events,
        spine_keys: vec!["k".into()],
        event_keys: vec!["k".into()],
        event_time: "e".into(),
        created_time: None,
        aggs,
        closed,
        knowledge_time: false,
    }
}

fn agg(op: Op, column: Option<&str>, window_us: Option<i64>, name: &str) -> AggSpec {
    AggSpec {
        op,
        column: column.map(String::from),
        window_ns: window_us.map(|w| w * 1000),
        name: name.into(),
    }
}

#[test]
fn windows_exclude_the_label_time_by_default() {
    let s = spec(
        Closed::Left,
        vec![
            agg(Op::Count, None, Some(10), "c"),
            agg(Op::Sum, Some("x"), Some(10), "s"),
            agg(Op::Max, Some("x"), Some(100), "m"),
        ],
    );
    let (_, batches) = window_agg(&s).unwrap();
    let b = &batches[0];
    let c: Vec<i64> = b.column(2).as_primitive::<Int64Type>().values().to_vec();
    // t=10: [0,10) holds e=0; t=20: [10,20) holds 10, 19; t=30: [20,30) holds 20, 25.
    assert_eq!(c, vec![1, 2, 2, 0]);
    let s = b.column(3).as_primitive::<Float64Type>();
    assert_eq!(s.value(0), 2.0);
    assert_eq!(s.value(1), 9.0);
    assert_eq!(s.value(2), 4.0); // the null at 25 is skipped
    assert!(s.is_null(3));
    let m = b.column(4).as_primitive::<Float64Type>();
    assert_eq!((m.value(0), m.value(1), m.value(2)), (2.0, 8.0, 8.0));
}

#[test]
fn right_and_both_include_the_label_time() {
    for (closed, want) in [
        (Closed::Right, vec![1, 2, 1, 0]),
        (Closed::Both, vec![2, 3, 2, 0]),
    ] {
        let s = spec(closed, vec![agg(Op::Count, None, Some(10), "c")]);
        let (_, batches) = window_agg(&s).unwrap();
        let c: Vec<i64> = batches[0]
            .column(2)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(c, want, "{closed:?}");
    }
}

#[test]
fn bad_windows_and_names_fail_before_work() {
    let s = spec(Closed::Left, vec![agg(Op::Sum, Some("x"), Some(0), "s")]);
    assert!(window_agg(&s).is_err());
    let s = spec(Closed::Left, vec![agg(Op::Sum, Some("k"), Some(5), "t")]);
    assert!(matches!(
        window_agg(&s),
        Err(crate::error::Error::OutputNameTaken { .. })
    ));
    let s = spec(Closed::Left, vec![agg(Op::Sum, Some("nope"), Some(5), "s")]);
    assert!(matches!(
        window_agg(&s),
        Err(crate::error::Error::MissingColumn { .. })
    ));
    let _ = DataType::Int64;
    let _ = TimeUnit::Second;
}
