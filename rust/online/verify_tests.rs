//! Tests of the structural check: real environments pass (after writes, drops and map
//! growth), damaged copies of their data file are reported, and a copy the check
//! passes reads back exactly what was written.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{ArrayRef, BinaryArray, Float32Array, Int64Array, StringArray};
use arrow_array::{Float64Array, TimestampMicrosecondArray};

use super::super::{KeyValue, Keys, OnlineStore, WriteSpec};
use super::walk::{Meta, META_LEN, PAGE_HEADER};
use super::*;
use crate::error::Error;
use crate::table::Table;
use crate::test_util::{table, TempDir};

fn write(store: &OnlineStore, name: &str, key: &str, data: &Table) {
    store
        .write(&WriteSpec {
            table: name,
            data,
            keys: &[key.to_string()],
            event_time: "ts",
            created_time: None,
        })
        .unwrap();
}

/// The value of feature `x` of entity `i` after `round` rewrites.
fn x_of(i: i64, round: i64) -> f32 {
    (i * 3 + round) as f32 * 0.5
}

const N: i64 = 3000;

/// Writes tables `a` (int keys, f32 + short string), `big` (int keys, values of a few
/// KB: overflow pages) and `named` (string keys, f64) over several transactions, with
/// rewrites and a dropped table, so the file has branch pages, overflow runs and a
/// free list. Returns how many rounds `a` was written.
fn fill(store: &OnlineStore) -> i64 {
    let rounds = 3;
    for round in 0..rounds {
        let ids: Vec<i64> = (0..N).collect();
        write(
            store,
            "a",
            "id",
            &table(vec![
                ("id", Arc::new(Int64Array::from(ids.clone()))),
                ("ts", ts(round, N as usize)),
                (
                    "x",
                    Arc::new(Float32Array::from(
                        ids.iter().map(|&i| x_of(i, round)).collect::<Vec<_>>(),
                    )),
                ),
                (
                    "s",
                    Arc::new(StringArray::from(
                        ids.iter().map(|i| format!("s{i}")).collect::<Vec<_>>(),
                    )),
                ),
            ]),
        );
    }
    let big: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 1000 + 300 * i]).collect();
    write(
        store,
        "big",
        "id",
        &table(vec![
            (
                "id",
                Arc::new(Int64Array::from((0..40).collect::<Vec<i64>>())),
            ),
            ("ts", ts(0, 40)),
            (
                "v",
                Arc::new(BinaryArray::from(
                    big.iter().map(|v| v.as_slice()).collect::<Vec<_>>(),
                )),
            ),
        ]),
    );
    for name in ["dropped", "named"] {
        write(
            store,
            name,
            "user",
            &table(vec![
                (
                    "user",
                    Arc::new(StringArray::from(
                        (0..N).map(|i| format!("user-{i:05}")).collect::<Vec<_>>(),
                    )),
                ),
                ("ts", ts(0, N as usize)),
                (
                    "y",
                    Arc::new(Float64Array::from(
                        (0..N).map(|i| i as f64).collect::<Vec<_>>(),
                    )),
                ),
            ]),
        );
    }
    assert!(store.drop_table("dropped").unwrap());
    rounds
}

fn ts(t: i64, n: usize) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(vec![t; n]))
}

/// Table `a`'s feature `x` for every entity, as the store returns it.
fn read_a(store: &OnlineStore) -> Result<Vec<Option<f32>>, Error> {
    let keys: Vec<KeyValue> = (0..N).map(|i| KeyValue::Int(i as i128)).collect();
    let b = store.read(
        "a",
        &Keys::Values {
            arity: 1,
            values: &keys,
        },
        Some(&["x".to_string()]),
        None,
        0,
    )?;
    Ok(b.column(0).as_primitive::<Float32Type>().iter().collect())
}

/// A store filled by [`fill`] and closed; its directory.
fn made() -> (TempDir, i64) {
    let dir = TempDir::created();
    let store = OnlineStore::open(&dir.0, Some(1 << 20), false).unwrap();
    let rounds = fill(&store);
    store.close();
    (dir, rounds)
}

/// Copies `from`'s data file into a new directory, applies `damage` to its bytes,
/// and checks it with a raw LMDB handle (LMDB walks nothing before the check).
fn check_copy(from: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> (TempDir, Result<Report>) {
    let dir = TempDir::created();
    let mut bytes = std::fs::read(from.join("online/data.mdb")).unwrap();
    damage(&mut bytes);
    std::fs::write(dir.0.join("data.mdb"), &bytes).unwrap();
    let opts = lmdb::EnvOptions {
        map_size: 1 << 30,
        max_readers: 16,
        max_dbs: 4,
        readonly: false,
    };
    let result = match lmdb::Env::open(&dir.0, opts) {
        Ok(raw) => check_env(&dir.0, &raw),
        Err(e) => Err(corrupt(&dir.0, format!("LMDB refuses it: {e}"))),
    };
    (dir, result)
}

fn meta_of(bytes: &[u8]) -> Meta {
    let psize = 4096;
    let metas: Vec<Meta> = (0..2)
        .filter_map(|i| {
            let at = i * psize + PAGE_HEADER;
            Meta::parse(&bytes[at..at + META_LEN]).ok()
        })
        .collect();
    *metas.iter().max_by_key(|m| m.txnid).unwrap()
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

/// The page of `rows` holding its first leaf, and the root of `rows`.
fn rows_pages(bytes: &[u8]) -> (usize, usize) {
    let psize = 4096;
    let main = meta_of(bytes).main;
    assert_eq!(main.depth, 1);
    let page = &bytes[main.root as usize * psize..][..psize];
    let n = (u16_at(page, 12) - PAGE_HEADER) / 2;
    let rows = (0..n)
        .map(|i| u16_at(page, PAGE_HEADER + 2 * i))
        .find(|&o| &page[o + 8..o + 8 + u16_at(page, o + 6)] == b"rows")
        .unwrap();
    let rec = &page[rows + 8 + 4..][..48];
    let root = u64::from_le_bytes(rec[40..48].try_into().unwrap()) as usize;
    let mut at = root;
    loop {
        let p = &bytes[at * psize..][..psize];
        if u16_at(p, 10) == 2 {
            return (at, root);
        }
        let o = u16_at(p, PAGE_HEADER);
        at = u16_at(p, o) | u16_at(p, o + 2) << 16;
    }
}

fn assert_corrupt(result: &Result<Report>, what: &str) {
    match result {
        Err(e @ Error::CorruptStore { detail, .. }) => {
            eprintln!("{what}: {detail}");
            assert!(e.to_string().contains("pitstop repair"), "{e}");
        }
        other => panic!("{what}: expected a corrupt store, got {other:?}"),
    }
}

#[test]
fn undamaged_stores_pass_after_writes_drops_and_growth() {
    let (dir, rounds) = made();
    // Reopening checks the file (Env::open) and reads back what was written.
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    let want: Vec<Option<f32>> = (0..N).map(|i| Some(x_of(i, rounds - 1))).collect();
    assert_eq!(read_a(&store).unwrap(), want);
    assert!(store.map_size().unwrap() > 1 << 20, "the map grew");
    store.close();
    let (_copy, report) = check_copy(&dir.0, |_| {});
    let report = report.unwrap();
    assert_eq!(report.tables, 3);
    assert_eq!(report.rows, N as u64 * 2 + 40);
    assert!(report.walk.free_pages > 0, "{report:?}");
    assert!(report.walk.pages > 100, "{report:?}");
    // A new environment passes too.
    let fresh = TempDir::created();
    OnlineStore::open(&fresh.0, None, false).unwrap().close();
    OnlineStore::open(&fresh.0, None, false).unwrap().close();
}

#[test]
fn targeted_damage_is_reported() {
    let (dir, _) = made();
    let bytes = std::fs::read(dir.0.join("online/data.mdb")).unwrap();
    let psize = 4096;
    let (leaf, root) = rows_pages(&bytes);
    let leaf_at = leaf * psize;
    let first_node = u16_at(&bytes, leaf_at + PAGE_HEADER);
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("page number", Box::new(move |b| b[leaf_at] ^= 1)),
        ("leaf2 flag", Box::new(move |b| b[leaf_at + 10] |= 0x20)),
        ("lower bound", Box::new(move |b| b[leaf_at + 12] += 2)),
        ("upper bound", Box::new(move |b| b[leaf_at + 15] = 0xFF)),
        (
            "node offset",
            Box::new(move |b| b[leaf_at + PAGE_HEADER + 1] ^= 0x40),
        ),
        (
            "key size",
            Box::new(move |b| b[leaf_at + first_node + 7] = 0x30),
        ),
        (
            "value size",
            Box::new(move |b| b[leaf_at + first_node + 1] ^= 0x10),
        ),
        (
            "value bit",
            Box::new(move |b| b[leaf_at + first_node + 40] ^= 4),
        ),
        (
            "key bit",
            Box::new(move |b| b[leaf_at + first_node + 9] ^= 1),
        ),
        (
            "child pointer to the root (a cycle)",
            Box::new(move |b| {
                let at = root * psize;
                let o = at + u16_at(b, at + PAGE_HEADER + 2);
                b[o..o + 2].copy_from_slice(&(root as u16).to_le_bytes());
                b[o + 2..o + 4].copy_from_slice(&((root >> 16) as u16).to_le_bytes());
            }),
        ),
        (
            "whole page zeroed",
            Box::new(move |b| b[leaf_at..leaf_at + psize].fill(0)),
        ),
        (
            "main DB entry count",
            Box::new(move |b| {
                let slot = (meta_of(b).txnid & 1) as usize;
                b[slot * psize + PAGE_HEADER + 72 + 32] ^= 1;
            }),
        ),
        (
            "free list names a page in use",
            Box::new(move |b| {
                let m = meta_of(b);
                let at = m.free.root as usize * psize;
                assert_eq!(u16_at(b, at + 10), 2, "a free DB of one leaf");
                let o = at + u16_at(b, at + PAGE_HEADER);
                assert_eq!(b[o + 4], 0, "an inline free list");
                let list = o + 8 + 8;
                b[list + 8..list + 16].copy_from_slice(&(leaf as u64).to_le_bytes());
            }),
        ),
    ];
    for (what, damage) in &cases {
        let (_copy, result) = check_copy(&dir.0, damage);
        assert_corrupt(&result, what);
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random damage: whatever the check lets through must read back exactly (or fail
/// with an error); nothing may crash. Runs in this process: a crash fails the suite.
#[test]
fn random_damage_never_crashes_nor_reads_wrong() {
    let (dir, rounds) = made();
    let want: Vec<Option<f32>> = (0..N).map(|i| Some(x_of(i, rounds - 1))).collect();
    let len = std::fs::metadata(dir.0.join("online/data.mdb"))
        .unwrap()
        .len() as usize;
    let pages = len / 4096;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut caught, mut passed) = (0, 0);
    for round in 0..120 {
        let (copy, result) = check_copy(&dir.0, |b| {
            let page = 2 + rng.below(pages - 2);
            let at = page * 4096;
            match round % 4 {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        b[at + rng.below(PAGE_HEADER)] = rng.next() as u8;
                    }
                }
                1 => {
                    for x in &mut b[at..at + 4096] {
                        *x = rng.next() as u8;
                    }
                }
                2 => {
                    for _ in 0..1 + rng.below(8) {
                        let bit = rng.below(len * 8);
                        b[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                _ => {
                    let start = rng.below(len - 64);
                    for x in &mut b[start..start + 1 + rng.below(64)] {
                        *x = rng.next() as u8;
                    }
                }
            }
        });
        match result {
            Err(Error::CorruptStore { .. }) => caught += 1,
            Err(e) => panic!("round {round}: {e}"),
            Ok(_) => {
                passed += 1;
                let store = OnlineStore::open(&copy.0, None, false);
                if let Ok(store) = store {
                    if let Ok(got) = read_a(&store) {
                        assert_eq!(got, want, "round {round}");
                    }
                    store.close();
                }
            }
        }
    }
    eprintln!("random damage: caught {caught}, passed {passed}");
    assert!(
        caught > 20 && passed > 5,
        "caught {caught}, passed {passed}"
    );
}

#[test]
fn an_older_format_is_refused_with_the_fix() {
    let (dir, _) = made();
    {
        let online = dir.0.join("online");
        let opts = lmdb::EnvOptions {
            map_size: 1 << 30,
            max_readers: 16,
            max_dbs: 4,
            readonly: false,
        };
        let raw = lmdb::Env::open(&online, opts).unwrap();
        let mut txn = raw.begin_write().unwrap();
        let meta = txn.open_db("meta").unwrap().unwrap();
        let mut old = catalog::FORMAT_MAGIC.to_vec();
        old.extend_from_slice(&1u32.to_le_bytes());
        txn.put(meta, catalog::FORMAT_KEY, &old).unwrap();
        txn.commit().unwrap();
    }
    let err = OnlineStore::open(&dir.0, None, false).err().unwrap();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert!(err.to_string().contains("pitstop repair"), "{err}");
}

#[test]
fn a_store_whose_tables_were_all_dropped_passes() {
    let (dir, _) = made();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    for t in store.tables().unwrap() {
        assert!(store.drop_table(&t).unwrap());
    }
    store.close();
    let store = OnlineStore::open(&dir.0, None, false).unwrap();
    assert!(store.tables().unwrap().is_empty());
    store.close();
    let (_copy, report) = check_copy(&dir.0, |_| {});
    assert_eq!(report.unwrap().rows, 0);
}
