//! Unit tests of the kernels against values worked out by hand or with numpy/scipy;
//! the randomized comparisons with numpy and scipy live in tests/test_monitoring*.py.

use std::sync::Arc;

use arrow_array::types::Int8Type;
use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int32Array, StringArray};

use super::distance::{bin_counts, js_distance, kolmogorov_sf, ks_w1, psi};
use super::numeric::{equal_edges, histogram, quantile, Moments};
use super::sketch::{hash_f64, Hll};
use super::*;
use crate::test_util::table_named;

fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
    table_named("t", cols)
}

#[test]
fn quantile_is_numpy_linear() {
    let x = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(quantile(&x, 0.5), 2.5);
    assert_eq!(quantile(&x, 0.0), 1.0);
    assert_eq!(quantile(&x, 1.0), 4.0);
    assert_eq!(quantile(&x, 0.25), 1.75); // h = 0.75
    assert_eq!(quantile(&[7.0], 0.3), 7.0);
    assert!(quantile(&[], 0.3).is_nan());
}

#[test]
fn moments_merge_equals_one_pass() {
    let xs: Vec<f64> = (0..1000)
        .map(|i| ((i * 37) % 101) as f64 * 0.5 - 3.0)
        .collect();
    let mut all = Moments::default();
    xs.iter().for_each(|&x| all.push(x));
    let (mut a, mut b) = (Moments::default(), Moments::default());
    xs[..300].iter().for_each(|&x| a.push(x));
    xs[300..].iter().for_each(|&x| b.push(x));
    let merged = a.merge(b);
    assert_eq!(merged.n, all.n);
    assert!((merged.mean - all.mean).abs() < 1e-12);
    assert!((merged.std() - all.std()).abs() < 1e-12);
}

#[test]
fn histogram_includes_last_edge_only_in_last_bin() {
    let x = [0.0, 0.5, 1.0, 1.0, 2.0, 3.0];
    let edges = equal_edges(0.0, 2.0, 2);
    assert_eq!(edges, vec![0.0, 1.0, 2.0]);
    assert_eq!(histogram(&x, &edges), vec![2, 3]); // 3.0 is outside
    assert_eq!(equal_edges(5.0, 5.0, 1), vec![4.5, 5.5]);
}

#[test]
fn ks_and_w1_by_hand() {
    let (d, w) = ks_w1(&[0.0, 1.0], &[0.0, 1.0]);
    assert_eq!((d, w), (0.0, 0.0));
    let (d, w) = ks_w1(&[0.0], &[1.0]);
    assert_eq!((d, w), (1.0, 1.0));
    // F_a - F_b: on [1,2): 1/3 - 0; [2,3): 2/3 - 1/2; [3,5): 1 - 1/2 -> area 1/3+1/6+1
    let (d, w) = ks_w1(&[1.0, 2.0, 3.0], &[2.0, 5.0]);
    assert!((d - 0.5).abs() < 1e-15);
    assert!((w - 1.5).abs() < 1e-15);
    assert!(ks_w1(&[], &[1.0]).0.is_nan());
}

#[test]
fn kolmogorov_matches_scipy() {
    // scipy.stats.kstwobign.sf
    assert!((kolmogorov_sf(1.0) - 0.26999967167735456).abs() < 1e-12);
    assert!((kolmogorov_sf(0.5) - 0.9639452436648751).abs() < 1e-12);
    assert!((kolmogorov_sf(2.0) - 0.0006709252557796953).abs() < 1e-12);
    assert_eq!(kolmogorov_sf(0.0), 1.0);
}

#[test]
fn psi_and_js() {
    assert_eq!(psi(&[5, 5], &[10, 10]), 0.0);
    let p = psi(&[10, 0], &[5, 5]);
    let want = (0.5 - 1.0) * (0.5f64 / 1.0).ln() + (0.5 - 1e-4) * (0.5f64 / 1e-4).ln();
    assert!((p - want).abs() < 1e-12);
    assert_eq!(js_distance(&[1, 0], &[0, 1]), 1.0);
    assert_eq!(js_distance(&[3, 1], &[6, 2]), 0.0);
    assert!(psi(&[0, 0], &[1, 1]).is_nan());
    assert_eq!(
        bin_counts(&[1.0, 2.0, 2.0, 3.0], &[2.0, 2.0]),
        vec![1, 0, 3]
    );
}

#[test]
fn hll_is_close() {
    for n in [0usize, 1, 10, 1000, 100_000] {
        let mut h = Hll::default();
        (0..n).for_each(|i| h.insert_hash(hash_f64(i as f64)));
        let e = h.estimate();
        assert!((e - n as f64).abs() <= 0.05 * n as f64 + 0.5, "{n}: {e}");
    }
}

#[test]
fn profile_numeric_and_categorical() {
    let t = table(vec![
        (
            "x",
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                None,
                Some(f64::NAN),
                Some(3.0),
            ])) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b"),
                None,
                Some("a"),
            ])) as ArrayRef,
        ),
        (
            "d",
            Arc::new(DictionaryArray::<Int8Type>::from_iter(["u", "v", "v", "v"])) as ArrayRef,
        ),
    ]);
    let cols = [
        ("x".to_string(), Kind::Numeric),
        ("s".to_string(), Kind::Categorical),
        ("d".to_string(), Kind::Categorical),
    ];
    let p = profile(&t, &cols, &Options::default()).unwrap();
    assert_eq!((p[0].rows, p[0].nulls, p[0].nan, p[0].count), (4, 1, 1, 2));
    assert_eq!(
        (p[0].mean, p[0].std, p[0].min, p[0].max),
        (2.0, 1.0, 1.0, 3.0)
    );
    assert_eq!(p[1].top, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    assert_eq!(p[1].nulls, 1);
    assert_eq!(p[2].top, vec![("v".to_string(), 3), ("u".to_string(), 1)]);
}

#[test]
fn bad_columns_fail_before_work() {
    let t = table(vec![(
        "s",
        Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
    )]);
    let e = profile(&t, &[("s".to_string(), Kind::Numeric)], &Options::default()).unwrap_err();
    assert!(matches!(e, Error::StatsColumnType { .. }), "{e}");
    let e = profile(
        &t,
        &[("zz".to_string(), Kind::Numeric)],
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::MissingColumn { .. }), "{e}");
}

#[test]
fn drift_identical_is_zero_and_categorical_bins() {
    let x: ArrayRef = Arc::new(Int32Array::from((0..100).collect::<Vec<i32>>()));
    let s: ArrayRef = Arc::new(StringArray::from(
        (0..100)
            .map(|i| Some(if i % 3 == 0 { "a" } else { "b" }))
            .collect::<Vec<_>>(),
    ));
    let t = table(vec![("x", Arc::clone(&x)), ("s", Arc::clone(&s))]);
    let cols = [
        ("x".to_string(), Kind::Numeric),
        ("s".to_string(), Kind::Categorical),
    ];
    let d = drift(&t, &t, &cols, &Options::default()).unwrap();
    assert_eq!((d[0].psi, d[0].ks_d, d[0].wasserstein), (0.0, 0.0, 0.0));
    assert_eq!(d[0].counts_ref.iter().sum::<u64>(), 100);
    assert_eq!(d[1].labels, vec!["b", "a", "(other)", "(null)"]);
    assert_eq!(d[1].counts_ref, vec![66, 34, 0, 0]);
    assert_eq!((d[1].psi, d[1].js), (0.0, 0.0));
}
