//! Int8 weights: `quantize_i8` (round trip, edge rows, layouts, dtypes) and `linear` / `embed` on int8
//! weights on every ISA this host has (forced one by one, checked with `isa::exercised`), against
//! `kernels::reference`.
#![allow(clippy::needless_range_loop)]

use kernels::{bf16, f16, isa, quantize_i8, reference, Isa, Kernels, Layout, Weight, WeightData, I8_MAX};
use proptest::prelude::*;

mod common;
mod linear_shapes;

use common::rand_vec;

/// linear on int8: |y - ref| <= INT8_LINEAR_REL_TOL * scale * Σ|q·x| (+ bias). Kernel and reference compute the
/// same Σ q·x, then × scale; only the f32 summation order differs (as for float weights in `kernels.rs`).
const INT8_LINEAR_REL_TOL: f32 = 2e-6;
/// Round trip: |w - q * scale| <= scale * (1/2 + ROUND_TRIP_SLACK): the f32 rounding of `w / scale` (|w / scale|
/// <= 127, relative error 2^-24) and of `q * scale`, in units of the scale.
const ROUND_TRIP_SLACK: f32 = 127.0 * 2.0 * f32::EPSILON;
/// embed on int8 scales by `row_scale * scale` in one product, the reference by the two in turn: 1 ulp apart.
const EMBED_I8_REL_TOL: f32 = 2.0 * f32::EPSILON;

/// The kernels of every ISA this host has (the ones it lacks are reported as skipped).
fn kernels_all(test: &str) -> Vec<Kernels> {
    kernels::testing::kernels(test)
}

/// `[out, in]` values with row-dependent magnitudes (some rows tiny, one all zero, one a single spike).
fn test_matrix(seed: u64, out_dim: usize, in_dim: usize) -> Vec<f32> {
    let mut w = rand_vec(seed, out_dim * in_dim, 1.0);
    for o in 0..out_dim {
        let mag = [0.5f32, 3.0, 1e-3, 40.0][o % 4];
        for v in &mut w[o * in_dim..(o + 1) * in_dim] {
            *v *= mag;
        }
    }
    if out_dim > 2 {
        w[2 * in_dim..3 * in_dim].fill(0.0);
    }
    if out_dim > 3 && in_dim > 0 {
        w[3 * in_dim..4 * in_dim].fill(0.0);
        w[3 * in_dim + in_dim / 2] = -7.5;
    }
    w
}

/// `[out, in]` transposed to `[in, out]`.
fn transpose(w: &[f32], out_dim: usize, in_dim: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for o in 0..out_dim {
        for i in 0..in_dim {
            t[i * out_dim + o] = w[o * in_dim + i];
        }
    }
    t
}

#[test]
fn quantize_round_trip_and_edge_rows() {
    for &(out_dim, in_dim) in &[(1usize, 1usize), (5, 7), (9, 64), (130, 65), (70, 300)] {
        let w = test_matrix(out_dim as u64 * 31 + in_dim as u64, out_dim, in_dim);
        let qm = quantize_i8(&Weight::new(WeightData::F32(&w), out_dim, in_dim, Layout::OutIn).unwrap());
        assert_eq!(
            (qm.out_dim, qm.in_dim, qm.q.len(), qm.scales.len()),
            (out_dim, in_dim, w.len(), out_dim)
        );
        for o in 0..out_dim {
            let row = &w[o * in_dim..(o + 1) * in_dim];
            let (qr, s) = (&qm.q[o * in_dim..(o + 1) * in_dim], qm.scales[o]);
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(s.is_finite() && s >= 0.0, "row {o}: scale {s}");
            assert_eq!(s, max / I8_MAX, "row {o}: scale is max|w| / 127");
            if max == 0.0 {
                assert!(qr.iter().all(|&q| q == 0), "all-zero row {o} quantizes to zeros");
                continue;
            }
            // The largest magnitude maps to ±127; nothing reaches -128.
            assert!(qr.iter().any(|&q| q.unsigned_abs() == 127) && qr.iter().all(|&q| q != i8::MIN));
            for i in 0..in_dim {
                let err = (row[i] - qr[i] as f32 * s).abs();
                assert!(
                    err <= s * (0.5 + ROUND_TRIP_SLACK),
                    "({out_dim}x{in_dim}) w[{o},{i}]={} q={} scale={s}: error {err:e} > scale/2",
                    row[i],
                    qr[i]
                );
            }
        }
        // The same matrix stored [in, out] (GPT-2 Conv1D) gives the same OutIn result, bit for bit.
        let t = transpose(&w, out_dim, in_dim);
        let qt = quantize_i8(&Weight::new(WeightData::F32(&t), out_dim, in_dim, Layout::InOut).unwrap());
        assert_eq!(qt, qm, "InOut {out_dim}x{in_dim} quantizes like OutIn");
        // Quantizing int8 again keeps it.
        assert_eq!(quantize_i8(&qm.weight()), qm, "int8 re-quantized {out_dim}x{in_dim}");
    }
}

#[test]
fn quantize_half_dtypes_and_non_finite_rows() {
    let (out_dim, in_dim) = (6, 33);
    let w = test_matrix(5, out_dim, in_dim);
    let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let b: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    for data in [WeightData::F16(&h), WeightData::Bf16(&b)] {
        let widened: Vec<f32> = (0..w.len()).map(|i| data.get(i)).collect();
        let want = quantize_i8(&Weight::new(WeightData::F32(&widened), out_dim, in_dim, Layout::OutIn).unwrap());
        let got = quantize_i8(&Weight::new(data, out_dim, in_dim, Layout::OutIn).unwrap());
        assert_eq!(got, want, "{data:?} quantizes as its f32 values");
    }
    // NaN or infinity in a row: that row's scale is NaN (never a silent finite scale), the others are unaffected.
    let mut bad = w.clone();
    bad[in_dim + 3] = f32::NAN;
    bad[4 * in_dim] = f32::NEG_INFINITY;
    let qb = quantize_i8(&Weight::new(WeightData::F32(&bad), out_dim, in_dim, Layout::OutIn).unwrap());
    let qw = quantize_i8(&Weight::new(WeightData::F32(&w), out_dim, in_dim, Layout::OutIn).unwrap());
    for o in 0..out_dim {
        if o == 1 || o == 4 {
            assert!(qb.scales[o].is_nan(), "row {o} holds a non-finite value");
        } else {
            assert_eq!(qb.scales[o], qw.scales[o]);
        }
    }
    // Empty shapes.
    let e = quantize_i8(&Weight::new(WeightData::F32(&[]), 3, 0, Layout::OutIn).unwrap());
    assert_eq!((e.q.len(), e.scales.len()), (0, 3));
    assert!(e.scales.iter().all(|&s| s == 0.0));
}

#[test]
fn weight_new_checks_int8() {
    let q = [1i8, 2, 3, 4, 5, 6];
    let s = [0.5f32, 0.25];
    let ok = WeightData::I8 { q: &q, scales: &s };
    assert!(Weight::new(ok, 2, 3, Layout::OutIn).is_some());
    assert!(Weight::new(ok, 2, 3, Layout::InOut).is_none(), "int8 is OutIn only");
    assert!(Weight::new(WeightData::I8 { q: &q, scales: &s[..1] }, 2, 3, Layout::OutIn).is_none());
    let w = Weight::new(ok, 2, 3, Layout::OutIn).unwrap();
    assert_eq!((w.at(0, 2), w.at(1, 0)), (1.5, 1.0));
    assert_eq!((ok.get(5), ok.bytes(), ok.elem_bytes()), (1.5, 6 + 8, 1));
}

/// One int8 `linear` call on every ISA against the reference (x deliberately unaligned).
fn check_linear_i8(rows: usize, in_dim: usize, out_dim: usize, seed: u64) {
    let x = rand_vec(seed, rows * in_dim, 1.0);
    let qm = quantize_i8(
        &Weight::new(
            WeightData::F32(&test_matrix(seed + 1, out_dim, in_dim)),
            out_dim,
            in_dim,
            Layout::OutIn,
        )
        .unwrap(),
    );
    let w = qm.weight();
    let b = rand_vec(seed + 2, out_dim, 0.1);
    let mut xbuf = vec![0.0f32; x.len() + 1];
    xbuf[1..].copy_from_slice(&x);
    for bias in [None, Some(&b[..])] {
        let mut want = vec![0.0f32; rows * out_dim];
        reference::linear(&x, rows, &w, bias, &mut want);
        for k in kernels_all("linear_i8") {
            let before = isa::exercised(k.isa());
            let mut ybuf = vec![f32::NAN; rows * out_dim + 1];
            k.linear(&xbuf[1..], rows, &w, bias, &mut ybuf[1..]);
            let y = &ybuf[1..];
            for r in 0..rows {
                for o in 0..out_dim {
                    let mag: f32 = (0..in_dim)
                        .map(|i| (qm.q[o * in_dim + i] as f32 * x[r * in_dim + i]).abs())
                        .sum::<f32>()
                        * qm.scales[o];
                    let (g, e) = (y[r * out_dim + o], want[r * out_dim + o]);
                    assert!(
                        (g - e).abs() <= INT8_LINEAR_REL_TOL * mag + 1e-7,
                        "int8 linear {} rows={rows} in={in_dim} out={out_dim} bias={}: y[{r},{o}]={g} want {e} \
                         (scale {mag})",
                        k.isa(),
                        bias.is_some()
                    );
                }
            }
            if rows * in_dim * out_dim > 0 {
                assert!(
                    isa::exercised(k.isa()) > before,
                    "int8 linear: {} path not exercised",
                    k.isa()
                );
            }
        }
    }
}

#[test]
fn linear_i8_edge_shapes() {
    for (i, &(rows, in_dim, out_dim)) in linear_shapes::EDGE.iter().enumerate() {
        check_linear_i8(rows, in_dim, out_dim, 300 + i as u64);
    }
}

#[test]
fn linear_i8_empty() {
    for &(rows, in_dim, out_dim) in linear_shapes::EMPTY {
        check_linear_i8(rows, in_dim, out_dim, 9);
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn linear_i8_parallel_and_panels() {
    for (i, &(rows, in_dim, out_dim)) in linear_shapes::PARALLEL.iter().enumerate() {
        check_linear_i8(rows, in_dim, out_dim, 1 + i as u64);
    }
}

#[test]
#[should_panic(expected = "int8 weights must be OutIn")]
fn linear_i8_refuses_inout() {
    let (q, s) = ([1i8; 6], [1.0f32; 2]);
    let w = Weight {
        data: WeightData::I8 { q: &q, scales: &s },
        out_dim: 2,
        in_dim: 3,
        layout: Layout::InOut,
    };
    Kernels::scalar().linear(&[1.0; 3], 1, &w, None, &mut [0.0; 2]);
}

#[test]
fn embed_i8() {
    for &dim in &[1usize, 7, 17, 64, 65] {
        let vocab = 11;
        let qm = quantize_i8(
            &Weight::new(
                WeightData::F32(&test_matrix(dim as u64, vocab, dim)),
                vocab,
                dim,
                Layout::OutIn,
            )
            .unwrap(),
        );
        let table = qm.weight();
        let ids = [3u32, 0, 10, 3, 7, 2];
        let mut want = vec![0.0; ids.len() * dim];
        reference::embed(&table, &ids, 0.125, &mut want);
        for k in kernels_all("embed_i8") {
            let before = isa::exercised(k.isa());
            let mut out = vec![0.0; ids.len() * dim];
            k.embed(&table, &ids, 0.125, &mut out);
            for (g, e) in out.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= EMBED_I8_REL_TOL * e.abs(),
                    "embed int8 {} dim={dim}: {g} vs {e}",
                    k.isa()
                );
            }
            assert!(isa::exercised(k.isa()) > before);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 32 }, ..ProptestConfig::default() })]

    #[test]
    fn prop_linear_i8(rows in 1usize..12, in_dim in 1usize..90, out_dim in 1usize..90, seed in any::<u64>()) {
        check_linear_i8(rows, in_dim, out_dim, seed);
    }
}

/// `I8Gemv::DotI16` rounds each x row to i16 (step `scale_x = max|x_row| / 32767`): on top of the f32-order
/// error, |y - ref| <= scale_w * scale_x * (1/2 + DOT_I16_X_SLACK) * Σ|q| (each rounded x is off by at most half
/// a step, plus the f32 rounding of `x * (32767 / max)`, below 32767 * 2^-24 steps).
const DOT_I16_X_SLACK: f32 = 32767.0 * 2.0 * f32::EPSILON;

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore)]
fn linear_i8_dot_i16() {
    use kernels::{Feature, I8Gemv};
    if !kernels::testing::require("linear_i8_dot_i16", Feature::Avx512Vnni) {
        return;
    }
    let k = Kernels::new(Isa::Avx512).unwrap().with_i8_gemv(I8Gemv::DotI16);
    // Tails (in_dim not a multiple of 32), leftover rows, 1..=8 x rows, and in_dim past the i32 flush (8192).
    for &(rows, in_dim, out_dim) in &[
        (1usize, 1usize, 1usize),
        (1, 31, 5),
        (1, 33, 67),
        (2, 64, 9),
        (3, 100, 130),
        (4, 1000, 300),
        (5, 65, 17),
        (8, 65, 17),
        (1, 8192 + 40, 11),
        (2, 3 * 8192 + 1, 3),
    ] {
        let mut x = rand_vec(rows as u64 + 50, rows * in_dim, 1.0);
        // One outlier per row: the x scale is set by it, the other values are rounded more coarsely.
        for r in 0..rows {
            x[r * in_dim + (r * 7) % in_dim] = 20.0;
        }
        let wf = test_matrix(in_dim as u64 + out_dim as u64, out_dim, in_dim);
        let qm = quantize_i8(&Weight::new(WeightData::F32(&wf), out_dim, in_dim, Layout::OutIn).unwrap());
        let w = qm.weight();
        let b = rand_vec(4, out_dim, 0.1);
        let mut want = vec![0.0f32; rows * out_dim];
        reference::linear(&x, rows, &w, Some(&b), &mut want);
        let before = isa::exercised(Isa::Avx512);
        let mut y = vec![0.0f32; rows * out_dim];
        k.linear(&x, rows, &w, Some(&b), &mut y);
        assert!(isa::exercised(Isa::Avx512) > before);
        for r in 0..rows {
            let xr = &x[r * in_dim..(r + 1) * in_dim];
            let x_step = xr.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 32767.0;
            for o in 0..out_dim {
                let qr = &qm.q[o * in_dim..(o + 1) * in_dim];
                let sum_q: f32 = qr.iter().map(|&q| (q as f32).abs()).sum();
                let mag: f32 = qr.iter().zip(xr).map(|(&q, &x)| (q as f32 * x).abs()).sum::<f32>() * qm.scales[o];
                let tol = qm.scales[o] * x_step * (0.5 + DOT_I16_X_SLACK) * sum_q + INT8_LINEAR_REL_TOL * mag + 1e-7;
                let (g, e) = (y[r * out_dim + o], want[r * out_dim + o]);
                assert!(
                    (g - e).abs() <= tol,
                    "dot_i16 rows={rows} in={in_dim} y[{r},{o}]={g} want {e} (tolerance {tol})"
                );
            }
        }
    }
    // A non-finite x row gives NaN outputs (not a silently rounded value); the other rows are unaffected.
    let (in_dim, out_dim) = (40, 3);
    let qm = quantize_i8(
        &Weight::new(
            WeightData::F32(&test_matrix(1, out_dim, in_dim)),
            out_dim,
            in_dim,
            Layout::OutIn,
        )
        .unwrap(),
    );
    let mut x = rand_vec(9, 2 * in_dim, 1.0);
    x[in_dim + 5] = f32::NAN;
    let mut y = vec![0.0f32; 2 * out_dim];
    k.linear(&x, 2, &qm.weight(), None, &mut y);
    assert!(
        y[..out_dim].iter().all(|v| v.is_finite()) && y[out_dim..].iter().all(|v| v.is_nan()),
        "{y:?}"
    );
}
