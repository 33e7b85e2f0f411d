//! Criterion benches for the point-in-time join: the slice kernel alone (sort + probe)
//! and the whole Arrow join, on size-S-like data (spine and features 1M rows, 100k
//! entities, one year of timestamps). Run with `make bench-rust`.

use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, Criterion};
use pitstop::join::kernel::{probe, sort_features, sort_spine, Params};
use pitstop::join::{pit_join, FeatureSpec, JoinSpec};
use pitstop::table::Table;

const YEAR_US: u64 = 365 * 86_400 * 1_000_000;

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 17
}

fn columns(n: usize, keys: u64, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut s = seed;
    let k = (0..n).map(|_| (lcg(&mut s) % keys) as i64).collect();
    let t = (0..n).map(|_| (lcg(&mut s) % YEAR_US) as i64).collect();
    (k, t)
}

fn table(name: &str, n: usize, keys: u64, seed: u64, features: usize) -> Table {
    let (k, t) = columns(n, keys, seed);
    let mut fields = vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ];
    let mut cols: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(Int64Array::from(k)),
        Arc::new(TimestampMicrosecondArray::from(t)),
    ];
    for f in 0..features {
        fields.push(Field::new(format!("{name}_f{f}"), DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| (i * (f + 1)) as f64),
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    Table::new(name, schema, vec![batch])
}

fn bench(c: &mut Criterion) {
    let n = 1_000_000;
    let keys = 100_000u64;
    let (fk, ft) = columns(n, keys, 1);
    let (sk, st) = columns(n, keys, 2);
    let fk: Vec<u32> = fk.iter().map(|&k| k as u32).collect();
    let sk: Vec<u32> = sk.iter().map(|&k| k as u32).collect();
    let p = Params {
        allow_exact_matches: true,
        ttl: None,
        knowledge_time: false,
    };
    let mut g = c.benchmark_group("pit_join_1M");
    g.sample_size(10);
    g.bench_function("kernel_sort", |b| {
        b.iter(|| sort_features(&fk, keys as usize, &ft, None))
    });
    let sorted = sort_features(&fk, keys as usize, &ft, None);
    g.bench_function("kernel_sort_spine", |b| {
        b.iter(|| sort_spine(&sk, keys as usize, |i| Some(st[i])))
    });
    let spine = sort_spine(&sk, keys as usize, |i| Some(st[i]));
    g.bench_function("kernel_probe", |b| b.iter(|| probe(&sorted, &spine, p)));
    let spec = JoinSpec {
        spine: table("spine", n, keys, 2, 0),
        spine_time: "ts".into(),
        features: (0..3)
            .map(|j| FeatureSpec {
                table: table(&format!("t{j}"), n, keys, 10 + j as u64, 5),
                spine_keys: vec!["user_id".into()],
                keys: vec!["user_id".into()],
                time: "ts".into(),
                created_time: None,
                ttl_ns: None,
                prefix: None,
            })
            .collect(),
        allow_exact_matches: true,
        knowledge_time: false,
    };
    g.bench_function("arrow_3_tables", |b| b.iter(|| pit_join(&spec).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
