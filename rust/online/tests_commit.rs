//! End-to-end tests of the store's write transactions: a full map aborts, grows and
//! replays; a batch keeps exactly one row per key even when long keys share their
//! first 16 bytes (the sort's prefix); a rebuilt table is swapped in with its
//! watermark; several tables and stream positions commit in one transaction; a damaged
//! position is an error. The helpers (`write`, `read_x`, ...) are `tests.rs`'s.
//!
//! Each test opens a store in its own [`TempDir`] and writes a few rows (the full-map
//! test a few megabytes into a 1 MiB map), so each runs in milliseconds.

use super::*;

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
