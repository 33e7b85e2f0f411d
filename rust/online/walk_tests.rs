//! The page walker against the cursor path: random stores (int or string keys of
//! many lengths, several tables, values from empty to several pages long, rewrites,
//! a dropped table's keys deleted), random requests (present, missing, repeated
//! keys); then a damaged page under an open store.

use std::sync::Arc;

use arrow_array::TimestampMicrosecondArray;
use arrow_array::{ArrayRef, BinaryArray, Float32Array, Int64Array, StringArray};
use proptest::prelude::*;

use super::super::read::{lookup, ReadPlan};
use super::super::{KeyValue, Keys, OnlineStore, WriteSpec};
use super::*;
use crate::error::Error;
use crate::test_util::{table, TempDir};

/// One table's contents: (entity index, x, blob length) per row.
type Rows = Vec<(usize, f32, usize)>;

fn key_value(strings: bool, i: usize) -> KeyValue {
    if strings {
        // Lengths from 1 to ~200 bytes, sharing prefixes: page splits everywhere.
        KeyValue::Str(format!("{}{i}", "k".repeat(i * 37 % 200)))
    } else {
        KeyValue::Int(i as i128 * 7919 - 40_000)
    }
}

fn write_table(store: &OnlineStore, name: &str, strings: bool, rows: &Rows, t: i64) {
    let key: ArrayRef = if strings {
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| match key_value(true, r.0) {
                    KeyValue::Str(s) => s,
                    _ => unreachable!(),
                })
                .collect::<Vec<_>>(),
        ))
    } else {
        Arc::new(Int64Array::from(
            rows.iter()
                .map(|r| r.0 as i64 * 7919 - 40_000)
                .collect::<Vec<_>>(),
        ))
    };
    let blobs: Vec<Vec<u8>> = rows.iter().map(|r| vec![r.0 as u8; r.2]).collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", key),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![t; rows.len()])),
        ),
        (
            "x",
            Arc::new(Float32Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
        ),
        (
            "b",
            Arc::new(BinaryArray::from(
                blobs.iter().map(|b| b.as_slice()).collect::<Vec<_>>(),
            )),
        ),
    ];
    store
        .write(&WriteSpec {
            table: name,
            data: &table(cols),
            keys: &["id".to_string()],
            event_time: "ts",
            created_time: None,
        })
        .unwrap();
}

/// What `lookup` found with the walker on or off, as comparable values.
type Seen = Vec<(String, Option<(i64, Vec<Option<Vec<u8>>>)>)>;

fn read_both(store: &OnlineStore, tables: &[String], keys: &[KeyValue]) -> (Seen, Seen) {
    let env = store.env().unwrap();
    let keys = Keys::Values {
        arity: 1,
        values: keys,
    };
    let mut seen = Vec::new();
    for walk in [true, false] {
        let mut plan = ReadPlan::new(&env, tables, vec![None; tables.len()]).unwrap();
        plan.set_walk(walk);
        let got = env
            .with_reads(1, |txns| {
                if walk {
                    // The walker must take this snapshot, not step aside.
                    Snapshot::of(&env, &txns[0]).map_err(|e| {
                        Error::InvalidArgument(format!("the walker refused: {e:?}"))
                    })?;
                }
                let found = lookup(&env, txns, &plan, &keys, 0)?;
                let t = found.n_tables;
                Ok(found
                    .rows
                    .iter()
                    .zip(&found.status)
                    .enumerate()
                    .map(|(i, (row, status))| {
                        let width = plan.tables[i % t].layout.n_columns();
                        let row = row.map(|v| {
                            let cols = (0..width)
                                .map(|c| (!v.is_null(c)).then(|| v.value(c).to_vec()))
                                .collect();
                            (v.stamp().event, cols)
                        });
                        (status.name().to_string(), row)
                    })
                    .collect::<Seen>())
            })
            .unwrap();
        seen.push(got);
    }
    let cursor = seen.pop().unwrap();
    (seen.pop().unwrap(), cursor)
}

fn rows_strategy(pool: usize) -> impl Strategy<Value = Rows> {
    prop::collection::vec(
        (
            0..pool,
            any::<f32>(),
            prop_oneof![8 => 0usize..60, 1 => 1500usize..9000],
        ),
        0..pool,
    )
    .prop_map(|mut rows| {
        rows.sort_by_key(|r| r.0);
        rows.dedup_by_key(|r| r.0);
        rows
    })
}

proptest! {
    #[test]
    fn compare_is_slice_order(
        a in prop::collection::vec(0u8..4, 0..40),
        b in prop::collection::vec(0u8..4, 0..40),
        shared in prop::collection::vec(any::<u8>(), 0..30),
    ) {
        let (a, b) = ([&shared[..], &a].concat(), [&shared[..], &b].concat());
        prop_assert_eq!(compare(&a, &b), a.cmp(&b));
        prop_assert_eq!(compare(&a, &a), std::cmp::Ordering::Equal);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_walker_reads_what_the_cursor_reads(
        strings in any::<bool>(),
        tables in prop::collection::vec(rows_strategy(400), 1..4),
        rewrite in rows_strategy(400),
        drop_first in any::<bool>(),
        request in prop::collection::vec(0usize..500, 0..300),
    ) {
        let dir = TempDir::new();
        let store = OnlineStore::open(&dir.0, Some(1 << 22), false).unwrap();
        let names: Vec<String> = (0..tables.len()).map(|j| format!("t{j}")).collect();
        for (name, rows) in names.iter().zip(&tables) {
            write_table(&store, name, strings, rows, 1);
        }
        write_table(&store, &names[0], strings, &rewrite, 2);
        let mut read: Vec<String> = names.clone();
        if drop_first && names.len() > 1 {
            // Deletes the first table's keys, between the others' on every leaf.
            prop_assert!(store.drop_table(&names[0]).unwrap());
            read.remove(0);
        }
        // Entities past the pool (>= 400) were never written: missing.
        let keys: Vec<KeyValue> = request.iter().map(|&i| key_value(strings, i)).collect();
        let (walked, cursor) = read_both(&store, &read, &keys);
        prop_assert_eq!(walked, cursor);
        // Each table alone, and in the reverse order, too.
        for name in &read {
            let (walked, cursor) = read_both(&store, std::slice::from_ref(name), &keys);
            prop_assert_eq!(walked, cursor);
        }
        let reversed: Vec<String> = read.iter().rev().cloned().collect();
        let (walked, cursor) = read_both(&store, &reversed, &keys);
        prop_assert_eq!(walked, cursor);
    }
}

#[test]
fn an_empty_table_and_an_empty_request_read_nothing() {
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    write_table(&store, "t", false, &vec![], 1);
    let (walked, cursor) = read_both(&store, &["t".to_string()], &[KeyValue::Int(3)]);
    assert_eq!(walked, cursor);
    assert_eq!(walked[0].0, "missing");
    let (walked, cursor) = read_both(&store, &["t".to_string()], &[]);
    assert_eq!((walked.len(), cursor.len()), (0, 0));
}

/// Damages the bytes of `data.mdb` under an open store (as another process could):
/// each damaged page gives an error or the right answer, never a crash.
#[test]
fn a_page_damaged_after_open_is_an_error_not_a_crash() {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new();
    let store = OnlineStore::open(&dir.0, Some(1 << 24), false).unwrap();
    let rows: Rows = (0..3000).map(|i| (i, i as f32, 10 + i % 40)).collect();
    write_table(&store, "t", false, &rows, 1);
    let keys: Vec<KeyValue> = (0..3000).step_by(7).map(|i| key_value(false, i)).collect();
    let (good, _) = read_both(&store, &["t".to_string()], &keys);
    let path = dir.0.join("online/data.mdb");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&path)
        .unwrap();
    let psize = store.env().unwrap().raw_env().page_size() as u64;
    // Only the rows database's pages: LMDB itself reads the others (catalog).
    let pages = rows_pages(&std::fs::read(&path).unwrap(), psize as usize);
    assert!(pages.len() > 10);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    for _ in 0..300 {
        let pgno = pages[(rand() % pages.len() as u64) as usize];
        let mut page = vec![0u8; psize as usize];
        file.read_exact_at(&mut page, pgno * psize).unwrap();
        let saved = page.clone();
        for _ in 0..1 + rand() % 8 {
            let at = (rand() % psize) as usize;
            page[at] = rand() as u8;
        }
        if rand() % 4 == 0 {
            // A plausible but wrong header: page number or node count.
            let at = [0usize, 12, 16][(rand() % 3) as usize];
            page[at..at + 2].copy_from_slice(&(rand() as u16).to_le_bytes());
        }
        file.write_all_at(&page, pgno * psize).unwrap();
        let env = store.env().unwrap();
        let plan = ReadPlan::new(&env, &["t".to_string()], vec![None]).unwrap();
        let ks = Keys::Values {
            arity: 1,
            values: &keys,
        };
        let out = env.with_reads(1, |txns| {
            lookup(&env, txns, &plan, &ks, 0).map(|f| f.status)
        });
        match out {
            Ok(status) => {
                let want: Vec<&str> = good.iter().map(|g| g.0.as_str()).collect();
                let got: Vec<&str> = status.iter().map(|s| s.name()).collect();
                // A damaged key may hide its row (the open check finds it), never
                // show a wrong one: every row found passed its checksum.
                for (g, w) in got.iter().zip(&want) {
                    assert!(g == w || *g == "missing", "{g} vs {w}");
                }
            }
            Err(Error::CorruptStore { .. }) => errors += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
        file.write_all_at(&saved, pgno * psize).unwrap();
    }
    assert!(errors > 0, "some damage must be reported");
}

/// The pages of the rows database's tree (branch and leaf) in a data file.
fn rows_pages(file: &[u8], psize: usize) -> Vec<u64> {
    use super::super::verify::walk::{u16_at, DbRecord, Meta, META_LEN, PAGE_HEADER, P_BRANCH};
    let meta = |i: usize| Meta::parse(&file[i * psize + PAGE_HEADER..][..META_LEN]).unwrap();
    let m = if meta(0).txnid > meta(1).txnid {
        meta(0)
    } else {
        meta(1)
    };
    let page = |p: u64| &file[p as usize * psize..][..psize];
    let u16 = |b: &[u8], at: usize| u16_at(b, at).unwrap() as usize;
    let nodes = |b: &[u8]| -> Vec<usize> {
        (0..(u16(b, 12) - PAGE_HEADER) / 2)
            .map(|i| u16(b, PAGE_HEADER + 2 * i))
            .collect()
    };
    assert_eq!(m.main.depth, 1);
    let main = page(m.main.root);
    let rows = nodes(main)
        .into_iter()
        .find_map(|off| {
            let k = u16(main, off + 6);
            (&main[off + 8..off + 8 + k] == b"rows")
                .then(|| DbRecord::parse(&main[off + 8 + k..off + 8 + k + 48]).unwrap())
        })
        .unwrap();
    let mut out = Vec::new();
    let mut stack = vec![rows.root];
    while let Some(p) = stack.pop() {
        out.push(p);
        let b = page(p);
        if u16(b, 10) as u16 == P_BRANCH {
            for off in nodes(b) {
                stack.push((u16(b, off) | u16(b, off + 2) << 16 | u16(b, off + 4) << 32) as u64);
            }
        }
    }
    out
}
