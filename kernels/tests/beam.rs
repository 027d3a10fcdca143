//! Beam-search bookkeeping kernels (`log_softmax_rows`, `top_k_rows`) on every ISA this host has, against
//! `kernels::reference`, on edge lengths, masked (-inf) and NaN entries, ties, and vocabulary-sized rows that split
//! over threads.

use kernels::{reference, Isa};
use proptest::prelude::*;

mod common;

use common::rand_vec;

/// f32 rounding unit.
const EPS: f32 = f32::EPSILON / 2.0;
/// `exp` of the SIMD paths: within 2 ulp (relative 2^-22).
const EXP_REL: f32 = 4.0 * EPS;

/// Lanes of an ISA's vectors (the summation bound depends on them).
fn lanes(isa: Isa) -> f32 {
    match isa {
        Isa::Scalar => 1.0,
        Isa::Avx2 => 8.0,
        Isa::Avx512 => 16.0,
        Isa::Neon => 4.0,
    }
}

/// Scores with masked tokens, ties (values on a 1/8 grid) and, where asked, NaN.
fn scores(seed: u64, n: usize, with_nan: bool) -> Vec<f32> {
    let mut x: Vec<f32> = rand_vec(seed, n, 12.0)
        .iter()
        .map(|v| (v * 8.0).round() / 8.0)
        .collect();
    for (i, v) in x.iter_mut().enumerate() {
        if i % 97 == 5 {
            *v = f32::NEG_INFINITY;
        }
        if with_nan && i % 89 == 3 {
            *v = f32::NAN;
        }
    }
    x
}

#[test]
fn log_softmax_rows_matches_reference() {
    for &n in &[1usize, 7, 16, 17, 63, 65, 1000, 50257] {
        for rows in [1usize, 3] {
            let mut x = scores(n as u64, rows * n, false);
            if rows == 3 {
                x[n..2 * n].fill(f32::NEG_INFINITY); // a fully masked row is left as it is
            }
            let mut want = x.clone();
            reference::log_softmax_rows(&mut want, n);
            kernels::testing::each_isa("log_softmax_rows_matches_reference", true, |k| {
                let mut got = x.clone();
                k.log_softmax_rows(&mut got, n);
                for r in 0..rows {
                    let xr = &x[r * n..(r + 1) * n];
                    let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    // Σ exp(x - max) in 4 vector accumulators of `LANES` lanes: a chain of n / (4 · LANES) adds each,
                    // then 2 + log2(LANES) more; exp within EXP_REL; ln and the two subtractions round once each.
                    let l = lanes(k.isa());
                    let sum_rel = (n as f32 / (4.0 * l) + 3.0 + l.log2()) * EPS + EXP_REL;
                    for i in 0..n {
                        let (g, w) = (got[r * n + i], want[r * n + i]);
                        if xr[i] == f32::NEG_INFINITY || max == f32::NEG_INFINITY {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{} row {r} [{i}]: masked stays masked",
                                k.isa()
                            );
                            continue;
                        }
                        let ls = (xr[i] - max - w).abs();
                        let tol = sum_rel + 2.0 * EPS * (xr[i].abs() + max.abs() + ls) + EPS * ls;
                        assert!(
                            (g - w).abs() <= tol,
                            "{} n={n} row {r} [{i}]: {g} vs {w} (tol {tol:e})",
                            k.isa()
                        );
                    }
                }
            });
        }
    }
}

/// `top_k_rows` on every ISA against the reference, exactly.
fn check_top_k(x: &[f32], n: usize, offsets: Option<&[f32]>, k: usize, what: &str) {
    let want = reference::top_k_rows(x, n, offsets, k);
    kernels::testing::each_isa("top_k_rows_matches_reference", x.len() * k > 0, |kern| {
        let mut got = vec![(7u32, 7.0f32)]; // cleared by the call
        kern.top_k_rows(x, n, offsets, k, &mut got);
        assert_eq!(got.len(), want.len(), "{what} {}: length", kern.isa());
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.0 == w.0 && g.1.to_bits() == w.1.to_bits(),
                "{what} {} [{j}]: {g:?} vs {w:?}",
                kern.isa()
            );
        }
    });
}

#[test]
fn top_k_rows_matches_reference() {
    for &n in &[1usize, 7, 17, 63, 65, 1000, 50257] {
        for rows in [1usize, 4] {
            let x = scores(n as u64 + 1, rows * n, true);
            let offsets: Vec<f32> = (0..rows).map(|r| -0.25 * r as f32).collect();
            for k in [0usize, 1, 2, 8, n + 5] {
                check_top_k(&x, n, None, k, &format!("n={n} rows={rows} k={k}"));
                check_top_k(&x, n, Some(&offsets), k, &format!("n={n} rows={rows} k={k} offsets"));
            }
        }
    }
    // Every value equal: the lowest flat indices win; everything masked: -inf entries in index order.
    let flat = vec![0.5f32; 3 * 70_000];
    check_top_k(&flat, 70_000, Some(&[0.0, 1.0, 0.0]), 5, "ties");
    let masked = vec![f32::NEG_INFINITY; 2 * 40_000];
    check_top_k(&masked, 40_000, None, 3, "all masked");
    let zeros: Vec<f32> = (0..100).map(|i| if i % 2 == 0 { 0.0 } else { -0.0 }).collect();
    check_top_k(&zeros, 100, None, 4, "signed zeros");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn top_k_rows_random(rows in 1usize..6, n in 1usize..3000, k in 0usize..40, seed in 0u64..1000) {
        let x = scores(seed, rows * n, seed % 2 == 0);
        let offsets = rand_vec(seed + 1, rows, 3.0);
        check_top_k(&x, n, Some(&offsets), k, "proptest");
    }
}
