//! End-to-end tests of the store in Rust: writes, reads, growth, errors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{
    ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema};

use super::*;
use crate::table::Table;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "pitstop-online-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    Table::new("data", schema, vec![batch])
}

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

#[test]
fn a_full_map_aborts_grows_and_replays() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, Some(1 << 20), false).unwrap();
    let env = store.env().unwrap();
    let value = vec![7u8; 1000];
    let mut attempts = 0;
    // An estimate of 0 bytes: no growth beforehand, so the map fills mid-transaction.
    env.with_write(0, |txn| {
        attempts += 1;
        for i in 0..5000u32 {
            txn.put(env.meta, format!("junk/{i}").as_bytes(), &value)?;
        }
        Ok(())
    })
    .unwrap();
    assert!(attempts > 1, "the map never filled");
    assert!(env.map_size() >= 5 << 20);
    let got = env.with_read(|t| Ok(t.get(env.meta, b"junk/4999").unwrap().map(<[u8]>::len)));
    assert_eq!(got.unwrap(), Some(1000));
}

#[test]
fn long_keys_sharing_a_prefix_dedupe_exactly() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    // Keys that agree on their first 16 encoded bytes; several versions of each, shuffled.
    let base = "k".repeat(20);
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut xs = Vec::new();
    for round in [3i64, 1, 4, 2] {
        for suffix in ["b", "a", "", "ab", "aa"] {
            ids.push(format!("{base}{suffix}"));
            times.push(round);
            xs.push(round as f32 * 10.0 + suffix.len() as f32);
        }
    }
    let t = table(vec![
        ("id", Arc::new(StringArray::from(ids.clone()))),
        ("ts", ts(times)),
        ("x", Arc::new(Float32Array::from(xs))),
    ]);
    assert_eq!(write(&store, "t", &t).unwrap().written, 5);
    let keys: Vec<KeyValue> = ["", "a", "b", "aa", "ab"]
        .iter()
        .map(|s| KeyValue::Str(format!("{base}{s}")))
        .collect();
    let b = store
        .read(
            "t",
            &Keys::Values {
                arity: 1,
                values: &keys,
            },
            None,
            None,
            0,
        )
        .unwrap();
    let x: Vec<Option<f32>> = b.column(0).as_primitive::<Float32Type>().iter().collect();
    assert_eq!(
        x,
        vec![Some(40.0), Some(41.0), Some(41.0), Some(42.0), Some(42.0)]
    );
}

#[test]
fn replace_swaps_a_rebuilt_table_in_with_its_watermark() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    let old = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2]))),
        ("ts", ts(vec![10, 10])),
        (
            "x",
            Arc::new(Float32Array::from(vec![Some(1.0), Some(2.0)])),
        ),
    ]);
    write(&store, "t", &old).unwrap();
    let new = table(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("ts", ts(vec![20])),
        ("x", Arc::new(Float32Array::from(vec![Some(9.0)]))),
    ]);
    let spec = WriteSpec {
        table: "t#rebuild",
        data: &new,
        keys: &["id".to_string()],
        event_time: "ts",
        created_time: None,
    };
    let mut p = store
        .prepare_write(
            spec.table.into(),
            new.clone(),
            vec!["id".into()],
            "ts".into(),
            None,
        )
        .unwrap();
    store.commit_write(&mut p, Some(7)).unwrap();
    store.replace_table("t", "t#rebuild").unwrap();
    assert_eq!(store.tables().unwrap(), ["t"]);
    assert_eq!(store.watermark("t").unwrap(), Some(7));
    let (x, s) = read_x(&store, "t", &[1, 2], None, 0);
    assert_eq!(x, vec![Some(9.0), None]);
    assert_eq!(s, ["found", "missing"]);
    // A reopened environment (the page walk and every checksum) agrees.
    drop(store);
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    assert_eq!(read_x(&store, "t", &[1], None, 0).0, vec![Some(9.0)]);
}

#[test]
fn commit_all_writes_tables_and_positions_in_one_transaction() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    let data = |ids: Vec<i64>, t: Vec<i64>, x: Vec<f32>| {
        table(vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("ts", ts(t)),
            ("x", Arc::new(Float32Array::from(x))),
        ])
    };
    let prep = |store: &OnlineStore, name: &str, t: Table| {
        store
            .prepare_write(name.into(), t, vec!["id".into()], "ts".into(), None)
            .unwrap()
    };
    // Tables must exist before two of them share a transaction.
    write(&store, "a", &data(vec![], vec![], vec![])).unwrap();
    let mut a = prep(&store, "a", data(vec![1, 2], vec![10, 10], vec![1.0, 2.0]));
    let mut b = prep(&store, "b", data(vec![1], vec![10], vec![5.0]));
    let pos = vec![
        ("job/p0".to_string(), Some(b"\x00\x01".to_vec())),
        ("job/p1".to_string(), Some(vec![7u8; 300])),
        ("jobber/p0".to_string(), Some(b"other".to_vec())),
    ];
    let stats = store.commit_all(&mut [&mut a, &mut b], None, &pos).unwrap();
    assert_eq!((stats.rows, stats.written), (3, 3));
    assert_eq!(
        read_x(&store, "a", &[1, 2], None, 0).0,
        vec![Some(1.0), Some(2.0)]
    );
    assert_eq!(read_x(&store, "b", &[1], None, 0).0, vec![Some(5.0)]);
    let got = store.positions("job/").unwrap();
    assert_eq!(
        got,
        vec![
            ("job/p0".to_string(), b"\x00\x01".to_vec()),
            ("job/p1".to_string(), vec![7u8; 300])
        ]
    );
    // Committed once: a second commit is refused and changes nothing.
    assert!(store.commit_all(&mut [&mut a], None, &[]).is_err());
    // Positions are overwritten and deleted with the next write; watermarks set.
    let mut c = prep(&store, "a", data(vec![1], vec![5], vec![9.0]));
    let pos = vec![
        ("job/p0".to_string(), Some(b"\x00\x02".to_vec())),
        ("job/p1".to_string(), None),
    ];
    let stats = store.commit_all(&mut [&mut c], Some(4), &pos).unwrap();
    assert_eq!(
        stats.written, 0,
        "an older event does not overwrite a newer one"
    );
    assert_eq!(
        store.positions("job/").unwrap(),
        vec![("job/p0".to_string(), b"\x00\x02".to_vec())]
    );
    assert_eq!(store.watermark("a").unwrap(), Some(4));
    // Two new tables cannot share one transaction (both would take the same id).
    let mut d = prep(&store, "d", data(vec![1], vec![1], vec![1.0]));
    let mut e = prep(&store, "e", data(vec![1], vec![1], vec![1.0]));
    assert!(store.commit_all(&mut [&mut d, &mut e], None, &[]).is_err());
    // A reopened environment reads the same positions (their checksums check out).
    drop(store);
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    assert_eq!(store.positions("jobber/").unwrap().len(), 1);
}

#[test]
fn a_damaged_position_is_an_error_not_a_value() {
    let key = super::catalog::pos_key("job/p0");
    let mut stored = super::catalog::pos_value(&key, b"12345");
    assert_eq!(
        super::catalog::pos_of(&key, &stored),
        Some(b"12345".to_vec())
    );
    stored[2] ^= 1;
    assert_eq!(super::catalog::pos_of(&key, &stored), None);
    let other = super::catalog::pos_key("job/p1");
    let moved = super::catalog::pos_value(&key, b"12345");
    assert_eq!(super::catalog::pos_of(&other, &moved), None);
    assert_eq!(super::catalog::pos_of(&key, b"ab"), None);
}
