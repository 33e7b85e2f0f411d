//! End-to-end tests of the store in Rust: writes, reads, errors (transactions in
//! `tests_commit.rs`).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{
    ArrayRef, Float32Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::DataType;

use super::*;
use crate::table::Table;
use crate::test_util::{table, TempDir};

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v))
}

fn write(store: &OnlineStore, name: &str, data: &Table) -> Result<WriteStats> {
    store.write(&WriteSpec {
        table: name,
        data,
        keys: &["id".to_string()],
        event_time: "ts",
        created_time: None,
    })
}

fn ints(v: &[i64]) -> Vec<KeyValue> {
    v.iter().map(|&i| KeyValue::Int(i as i128)).collect()
}

fn read_x(
    store: &OnlineStore,
    name: &str,
    ids: &[i64],
    ttl: Option<i64>,
    now: i64,
) -> (Vec<Option<f32>>, Vec<String>) {
    let keys = ints(ids);
    let b = store
        .read(
            name,
            &Keys::Values {
                arity: 1,
                values: &keys,
            },
            Some(&["x".to_string()]),
            ttl,
            now,
        )
        .unwrap();
    let x = b.column(0).as_primitive::<Float32Type>().iter().collect();
    let s = b
        .column(1)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    (x, s)
}

#[test]
fn latest_row_wins_whatever_the_order() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    let t1 = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 1, 3, 1]))),
        ("ts", ts(vec![10, 5, 30, 7, 20])),
        (
            "x",
            Arc::new(Float32Array::from(vec![
                Some(1.0),
                Some(2.0),
                Some(3.0),
                None,
                Some(5.0),
            ])),
        ),
    ]);
    let stats = write(&store, "t", &t1).unwrap();
    assert_eq!(
        stats,
        WriteStats {
            rows: 5,
            written: 3,
            unchanged: 2
        }
    );
    let (x, s) = read_x(&store, "t", &[1, 2, 3, 4], None, 0);
    assert_eq!(x, vec![Some(3.0), Some(2.0), None, None]);
    assert_eq!(s, ["found", "found", "found", "missing"]);
    // An older event never overwrites a newer one; a newer one does; a tie: last wins.
    let t2 = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("ts", ts(vec![29, 6, 7])),
        ("x", Arc::new(Float32Array::from(vec![9.0, 8.0, 7.0]))),
    ]);
    assert_eq!(write(&store, "t", &t2).unwrap().written, 2);
    let (x, _) = read_x(&store, "t", &[1, 2, 3], None, 0);
    assert_eq!(x, vec![Some(3.0), Some(8.0), Some(7.0)]);
    // Replaying the last batch changes nothing.
    assert_eq!(write(&store, "t", &t2).unwrap().written, 0);
    // TTL: rows older than now - ttl are expired (times are in ns: 1 us = 1000 ns).
    let (x, s) = read_x(&store, "t", &[1, 2], Some(10_000), 25_000);
    assert_eq!(x, vec![Some(3.0), None]);
    assert_eq!(s, ["found", "expired"]);
}

#[test]
fn tables_share_entities_and_matrix_reads_follow_feature_order() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    for (name, base) in [("a", 0.0f32), ("b", 100.0), ("c", 200.0)] {
        let ids: Vec<i64> = if name == "b" {
            vec![1, 3]
        } else {
            vec![1, 2, 3]
        };
        let n = ids.len();
        let t = table(vec![
            ("id", Arc::new(Int64Array::from(ids.clone()))),
            ("ts", ts(vec![1; n])),
            (
                "x",
                Arc::new(Float32Array::from(
                    ids.iter().map(|&i| base + i as f32).collect::<Vec<_>>(),
                )),
            ),
            (
                "y",
                Arc::new(Int32Array::from(
                    ids.iter().map(|&i| -(i as i32)).collect::<Vec<_>>(),
                )),
            ),
        ]);
        write(&store, name, &t).unwrap();
    }
    let tables: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
    let f = |t: &str, n: &str| FeatureRef {
        table: Some(t.into()),
        name: n.into(),
    };
    let plan = store
        .matrix_plan(
            &tables,
            &[f("a", "x"), f("b", "x"), f("c", "y"), f("a", "y")],
            vec![None; 3],
        )
        .unwrap();
    let keys = ints(&[2, 1, 9, 1]);
    let mut out = vec![0f32; 16];
    store
        .read_matrix(
            &plan,
            &Keys::Values {
                arity: 1,
                values: &keys,
            },
            0,
            &mut out,
            None,
        )
        .unwrap();
    let want = [
        [2.0, f32::NAN, -2.0, -2.0],
        [1.0, 101.0, -1.0, -1.0],
        [f32::NAN; 4],
        [1.0, 101.0, -1.0, -1.0],
    ];
    for (r, w) in want.iter().enumerate() {
        for (c, v) in w.iter().enumerate() {
            let got = out[r * 4 + c];
            assert!(
                got == *v || (got.is_nan() && v.is_nan()),
                "row {r} col {c}: {got} vs {v}"
            );
        }
    }
    // An unqualified name must be unique among the tables read.
    let ambiguous = store.matrix_plan(
        &tables,
        &[FeatureRef {
            table: None,
            name: "x".into(),
        }],
        vec![None; 3],
    );
    assert!(matches!(ambiguous, Err(Error::InvalidArgument(_))));
}

#[test]
fn big_reads_run_in_parallel_on_one_snapshot() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, Some(1 << 20), false).unwrap();
    let n = 60_000i64;
    let ids: Vec<i64> = (0..n).map(|i| i * 7919 % n).collect();
    for name in ["p", "q"] {
        let t = table(vec![
            ("id", Arc::new(Int64Array::from(ids.clone()))),
            ("ts", ts(vec![1; n as usize])),
            (
                "x",
                Arc::new(Float32Array::from(
                    ids.iter().map(|&i| i as f32).collect::<Vec<_>>(),
                )),
            ),
        ]);
        write(&store, name, &t).unwrap();
    }
    // The 1 MiB map had to grow, silently.
    assert!(store.map_size().unwrap() > 1 << 20);
    let tables = vec!["p".to_string(), "q".to_string()];
    let plan = store
        .matrix_plan(
            &tables,
            &[
                FeatureRef {
                    table: Some("q".into()),
                    name: "x".into(),
                },
                FeatureRef {
                    table: Some("p".into()),
                    name: "x".into(),
                },
            ],
            vec![None; 2],
        )
        .unwrap();
    let want: Vec<i64> = (0..20_000).map(|i| (i * 31 + 5) % (n + 100)).collect();
    let keys = ints(&want);
    for threads in [None, Some(1), Some(2), Some(3)] {
        let mut out = vec![0f32; want.len() * 2];
        let values = Keys::Values {
            arity: 1,
            values: &keys,
        };
        store
            .read_matrix(&plan, &values, 0, &mut out, threads)
            .unwrap();
        for (r, &id) in want.iter().enumerate() {
            if id < n {
                assert_eq!(out[2 * r], id as f32);
                assert_eq!(out[2 * r + 1], id as f32);
            } else {
                assert!(out[2 * r].is_nan() && out[2 * r + 1].is_nan());
            }
        }
    }
}

#[test]
fn composite_string_keys_by_arrow_columns() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    let t = table(vec![
        ("u", Arc::new(StringArray::from(vec!["ab", "a"]))),
        ("v", Arc::new(StringArray::from(vec!["c", "bc"]))),
        ("ts", ts(vec![1, 1])),
        ("x", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    store
        .write(&WriteSpec {
            table: "t",
            data: &t,
            keys: &["u".to_string(), "v".to_string()],
            event_time: "ts",
            created_time: None,
        })
        .unwrap();
    let keys = table(vec![
        (
            "v",
            Arc::new(StringArray::from(vec![Some("bc"), Some("c"), None])),
        ),
        ("u", Arc::new(StringArray::from(vec!["a", "ab", "a"]))),
    ]);
    let b = store
        .read("t", &Keys::Columns(&keys), None, None, 0)
        .unwrap();
    let x: Vec<Option<i64>> = b.column(0).as_primitive::<Int64Type>().iter().collect();
    assert_eq!(x, vec![Some(2), Some(1), None]);
    assert_eq!(b.schema().field(1).name(), "status");
    assert_eq!(b.schema().field(0).data_type(), &DataType::Int64);
}

#[test]
fn errors_leave_the_store_unchanged() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    let good = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("ts", ts(vec![1])),
        ("x", Arc::new(Float32Array::from(vec![1.0]))),
    ]);
    write(&store, "t", &good).unwrap();
    let extra = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("ts", ts(vec![2])),
        ("x", Arc::new(Float32Array::from(vec![2.0]))),
        ("z", Arc::new(Float32Array::from(vec![2.0]))),
    ]);
    assert!(matches!(
        write(&store, "t", &extra),
        Err(Error::SchemaMismatch { .. })
    ));
    let strings = table(vec![
        ("id", Arc::new(StringArray::from(vec!["1"]))),
        ("ts", ts(vec![2])),
        ("x", Arc::new(Float32Array::from(vec![2.0]))),
    ]);
    assert!(matches!(
        write(&store, "t", &strings),
        Err(Error::KeyType { .. })
    ));
    let wrong_type = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("ts", ts(vec![2])),
        ("x", Arc::new(StringArray::from(vec!["2"]))),
    ]);
    assert!(matches!(
        write(&store, "t", &wrong_type),
        Err(Error::ValueType { .. })
    ));
    assert!(matches!(
        read_err(&store, "nope"),
        Error::UnknownTable { .. }
    ));
    let (x, _) = read_x(&store, "t", &[1], None, 0);
    assert_eq!(x, vec![Some(1.0)]);
    drop(store);
    let ro = OnlineStore::open(&dir.0, None, true);
    // The same process already holds it read-write (shared handle) or not: either way
    // a read-only store refuses writes.
    if let Ok(ro) = ro {
        assert!(matches!(
            write(&ro, "t", &good),
            Err(Error::ReadOnly { .. })
        ));
    }
}

fn read_err(store: &OnlineStore, name: &str) -> Error {
    let keys = ints(&[1]);
    store
        .read(
            name,
            &Keys::Values {
                arity: 1,
                values: &keys,
            },
            None,
            None,
            0,
        )
        .unwrap_err()
}

#[test]
fn refuses_paths_that_are_not_stores() {
    let dir = TempDir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("notes.txt"), "hello").unwrap();
    assert!(matches!(
        OnlineStore::open(&dir.0, None, false),
        Err(Error::NotAStore { .. })
    ));
    assert!(matches!(
        OnlineStore::open(&dir.0.join("notes.txt"), None, false),
        Err(Error::NotAStore { .. })
    ));
    let online = dir.0.join("x").join("online");
    std::fs::create_dir_all(&online).unwrap();
    std::fs::write(online.join("data.mdb"), vec![7u8; 100]).unwrap();
    assert!(matches!(
        OnlineStore::open(&dir.0.join("x"), None, false),
        Err(Error::CorruptStore { .. })
    ));
}

// Write transactions: map growth, dedupe, replace, several tables with positions.
#[path = "tests_commit.rs"]
mod commit;

proptest::proptest! {
    /// The lookup's key order (16-byte prefixes, then the bytes) is the encodings'
    /// byte order, over short and long encodings, shared prefixes, zero bytes and
    /// invalid rows.
    #[test]
    fn keys_sort_in_byte_order(
        items in proptest::collection::vec(
            (proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(0u8), proptest::strategy::Just(1u8), proptest::arbitrary::any::<u8>()], 0..24), proptest::arbitrary::any::<bool>()),
            0..60,
        ),
    ) {
        let mut enc = crate::encode::columns::Encoded { bytes: Vec::new(), ends: vec![0] };
        for (e, _) in &items {
            enc.bytes.extend_from_slice(e);
            enc.ends.push(enc.bytes.len());
        }
        let valid: Vec<bool> = items.iter().map(|(_, v)| *v).collect();
        let got: Vec<&[u8]> = read::sorted(&enc, &valid).iter().map(|&r| enc.get(r as usize)).collect();
        let mut want: Vec<&[u8]> = items.iter().filter(|(_, v)| *v).map(|(e, _)| &e[..]).collect();
        want.sort();
        proptest::prop_assert_eq!(got, want);
    }
}
