//! Packed weights ([`PackedWeight`]): `linear_packed` (f32 activations, every weight dtype and layout) and the
//! int8 x int8 `linear_q` with its activation quantizer, on every ISA this host has (forced one by one, checked with
//! `isa::exercised`), against `kernels::reference`, on edge shapes (m, k, n in 1, 7, 17, 63, 65, 1000+), unaligned
//! slices, forced small cache blocks, and with proptest.
#![allow(clippy::needless_range_loop)]

use kernels::{
    bf16, f16, isa, quantize_i8, reference, GemmBlocking, I8Activations, I8Range, Isa, Kernels, Layout, PackError,
    PackedWeight, QuantizedRows, Weight, WeightData,
};
use proptest::prelude::*;

mod common;

use common::{dot_variants, rand_vec, unaligned};

/// f32 rounding unit.
const EPS: f32 = f32::EPSILON / 2.0;
/// `linear_packed`: every output is a chain of `k` fused multiply-adds in f32 (split into blocks that are added in
/// order), so `|y - ref| <= (k + PACKED_SLACK_TERMS) · EPS · Σ|w·x|` with the reference exact (f64): one rounding per
/// term, plus the int8 row scale and the bias add.
const PACKED_SLACK_TERMS: f32 = 3.0;
/// int8 x int8 against f32 activations: beyond the quantization term `sx/2 · sw · Σ|qw|`, the rounding of
/// `x · (Q / max)` before it is rounded to an integer and of the scale `max / Q` move a value by at most
/// `I8_ACT_REL_SLACK · |x|`, and the store (integer to f32, `sx · sw`, the product, the bias) adds at most
/// `I8_STORE_REL_SLACK · |y|`.
const I8_ACT_REL_SLACK: f32 = 4.0 * EPS;
const I8_STORE_REL_SLACK: f32 = 4.0 * EPS;

/// (m, k, n): every edge of each dimension (1, 7, 17, 63, 65, 1000+), the GEMV row counts (1..=8), GEMM tiles with
/// remainders (9, 17, 63, 65, 130 rows), partial panels and partial groups (k % 4 != 0).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 17),
    (1, 17, 63),
    (1, 63, 65),
    (1, 65, 7),
    (1, 1029, 130),
    (1, 1000, 1000),
    (2, 17, 65),
    (3, 65, 33),
    (4, 1, 7),
    (7, 63, 17),
    (8, 1029, 65),
    (9, 7, 1000),
    (17, 65, 63),
    (33, 1, 17),
    (63, 17, 130),
    (65, 1029, 33),
    (130, 63, 65),
];

/// Small blocks, so the shapes above cross every block boundary (inputs, rows, panels).
const SMALL_BLOCKS: GemmBlocking = GemmBlocking { kc: 12, mc: 5, ncp: 1 };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    Bf16,
    I8,
}

/// One matrix in every dtype: `[out, in]` values, their halves, and their int8 quantization.
struct Owned {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    bf16s: Vec<bf16>,
    i8s: kernels::QuantizedI8,
    /// `[in, out]` copies for the InOut layout.
    t_f32: Vec<f32>,
    t_f16: Vec<f16>,
    t_bf16: Vec<bf16>,
    out_dim: usize,
    in_dim: usize,
}

impl Owned {
    fn new(seed: u64, out_dim: usize, in_dim: usize) -> Self {
        let v = rand_vec(seed, out_dim * in_dim, 0.5);
        let mut t = vec![0.0f32; v.len()];
        for o in 0..out_dim {
            for i in 0..in_dim {
                t[i * out_dim + o] = v[o * in_dim + i];
            }
        }
        let i8s = quantize_i8(&Weight::new(WeightData::F32(&v), out_dim, in_dim, Layout::OutIn).unwrap());
        Self {
            f16s: v.iter().map(|&x| f16::from_f32(x)).collect(),
            bf16s: v.iter().map(|&x| bf16::from_f32(x)).collect(),
            t_f16: t.iter().map(|&x| f16::from_f32(x)).collect(),
            t_bf16: t.iter().map(|&x| bf16::from_f32(x)).collect(),
            f32s: v,
            t_f32: t,
            i8s,
            out_dim,
            in_dim,
        }
    }

    /// The matrix in `dt` and `layout` (int8 exists only as OutIn: `None` for InOut).
    fn weight(&self, dt: Dtype, layout: Layout) -> Option<Weight<'_>> {
        let data = match (dt, layout) {
            (Dtype::F32, Layout::OutIn) => WeightData::F32(&self.f32s),
            (Dtype::F16, Layout::OutIn) => WeightData::F16(&self.f16s),
            (Dtype::Bf16, Layout::OutIn) => WeightData::Bf16(&self.bf16s),
            (Dtype::F32, Layout::InOut) => WeightData::F32(&self.t_f32),
            (Dtype::F16, Layout::InOut) => WeightData::F16(&self.t_f16),
            (Dtype::Bf16, Layout::InOut) => WeightData::Bf16(&self.t_bf16),
            (Dtype::I8, Layout::OutIn) => return Some(self.i8s.weight()),
            (Dtype::I8, Layout::InOut) => return None,
        };
        Some(Weight::new(data, self.out_dim, self.in_dim, layout).unwrap())
    }
}

/// `Σ_i |W(o, i) · x[r, i]|` (int8: with the dequantized values), `[m, n]`.
fn magnitudes(w: &Weight<'_>, x: &[f32], m: usize) -> Vec<f32> {
    let (k, n) = (w.in_dim, w.out_dim);
    let mut mag = vec![0.0f32; m * n];
    for r in 0..m {
        for o in 0..n {
            mag[r * n + o] = (0..k).map(|i| (w.at(o, i) * x[r * k + i]).abs()).sum();
        }
    }
    mag
}

/// Inputs and reference outputs of one `linear_packed` check (computed once, run on every kernel).
struct Case {
    m: usize,
    x: Vec<f32>,
    b: Vec<f32>,
    /// `Σ|w·x|` per output.
    mag: Vec<f32>,
    /// Reference without and with the bias.
    want: [Vec<f32>; 2],
}

impl Case {
    fn new(w: &Weight<'_>, m: usize, seed: u64) -> Self {
        let (kd, n) = (w.in_dim, w.out_dim);
        let x = rand_vec(seed, m * kd, 1.0);
        let b = rand_vec(seed + 1, n, 0.1);
        let mut want = [vec![0.0f32; m * n], vec![0.0f32; m * n]];
        reference::linear(&x, m, w, None, &mut want[0]);
        reference::linear(&x, m, w, Some(&b), &mut want[1]);
        Self {
            m,
            mag: magnitudes(w, &x, m),
            x,
            b,
            want,
        }
    }
}

/// `linear_packed` of one weight on one kernel against the reference, on unaligned x, bias and y.
fn check_packed(k: Kernels, w: &Weight<'_>, c: &Case, what: &str) {
    let (m, kd, n) = (c.m, w.in_dim, w.out_dim);
    let (xbuf, xr) = unaligned(&c.x);
    let (bbuf, br) = unaligned(&c.b);
    let pw = PackedWeight::new(&k, w).unwrap();
    for (bias, want) in [(None, &c.want[0]), (Some(&bbuf[br.clone()]), &c.want[1])] {
        let before = isa::exercised(k.isa());
        let mut ybuf = vec![f32::NAN; m * n + 1];
        k.linear_packed(&xbuf[xr.clone()], m, &pw, bias, &mut ybuf[1..]);
        if m * kd * n > 0 {
            assert!(
                isa::exercised(k.isa()) > before,
                "{what}: {} path not exercised",
                k.isa()
            );
        }
        let y = &ybuf[1..];
        for i in 0..y.len() {
            let tol =
                (kd as f32 + PACKED_SLACK_TERMS) * EPS * (c.mag[i] + bias.map_or(0.0, |b| b[i % n].abs())) + 1e-30;
            let err = (y[i] - want[i]).abs();
            assert!(
                err <= tol,
                "{what} {} m={m} k={kd} n={n} bias={}: y[{i}] = {} want {} (err {err:e} > {tol:e})",
                k.isa(),
                bias.is_some(),
                y[i],
                want[i]
            );
        }
    }
}

fn check_all_dtypes(test: &str, m: usize, kd: usize, n: usize, seed: u64) {
    let owned = Owned::new(seed, n, kd);
    for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::I8] {
        for layout in [Layout::OutIn, Layout::InOut] {
            let Some(w) = owned.weight(dt, layout) else { continue };
            let case = Case::new(&w, m, seed + 2);
            for k in kernels::testing::kernels(test) {
                let what = format!("{dt:?} {layout:?}");
                check_packed(k, &w, &case, &what);
                check_packed(
                    k.with_gemm_blocking(SMALL_BLOCKS),
                    &w,
                    &case,
                    &format!("{what} small blocks"),
                );
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn packed_linear_edge_shapes() {
    for (i, &(m, kd, n)) in SHAPES.iter().enumerate() {
        check_all_dtypes("packed_linear_edge_shapes", m, kd, n, 10 * i as u64);
    }
}

#[test]
fn packed_linear_small_and_empty() {
    // Miri: scalar on tiny shapes (GEMV, GEMM with remainders).
    for &(m, kd, n) in &[(1, 5, 3), (3, 7, 5), (10, 3, 6), (0, 4, 4), (2, 0, 3), (3, 5, 0)] {
        check_all_dtypes("packed_linear_small_and_empty", m, kd, n, 1000 + m as u64);
    }
}

#[test]
fn packed_weight_layout_accessors() {
    let (n, kd) = (37, 29);
    let owned = Owned::new(5, n, kd);
    for k in kernels::testing::kernels("packed_weight_layout_accessors") {
        for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::I8] {
            for layout in [Layout::OutIn, Layout::InOut] {
                let Some(w) = owned.weight(dt, layout) else { continue };
                let pw = PackedWeight::new(&k, &w).unwrap();
                assert_eq!((pw.out_dim(), pw.in_dim(), pw.isa()), (n, kd, k.isa()));
                assert_eq!(pw.n_panels(), n.div_ceil(pw.panel_width()));
                assert_eq!(pw.is_i8(), matches!(dt, Dtype::I8));
                for o in 0..n {
                    for i in 0..kd {
                        assert_eq!(pw.at(o, i), w.at(o, i), "{dt:?} {layout:?} {} ({o}, {i})", k.isa());
                    }
                }
                // One copy in the stored dtype: whole panels of inputs rounded up to the dtype's group (int8 also
                // keeps a scale and a column sum per padded output).
                let (elem, group) = match dt {
                    Dtype::F32 => (4, 1),
                    Dtype::F16 => (2, 1),
                    Dtype::Bf16 => (2, 2),
                    Dtype::I8 => (1, 4),
                };
                let cols = pw.n_panels() * pw.panel_width();
                let per_col = if pw.is_i8() { 8 } else { 0 };
                assert_eq!(
                    pw.bytes(),
                    cols * (kd.next_multiple_of(group) * elem + per_col),
                    "{dt:?} {layout:?}"
                );
                assert!(cols - n < pw.panel_width(), "at most one partial panel");
                // Embedding rows from the packed matrix (a tied head keeps one copy).
                let ids = [0u32, 36, 5, 5];
                let mut got = vec![0.0f32; ids.len() * kd];
                let mut want = vec![0.0f32; ids.len() * kd];
                pw.gather_rows(&ids, 0.5, &mut got);
                if layout == Layout::OutIn {
                    reference::embed(&w, &ids, 0.5, &mut want);
                    for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                        // int8: the kernel multiplies the row scale by 0.5 first (exact), the reference after.
                        assert!(
                            (g - e).abs() <= 2.0 * EPS * e.abs(),
                            "{dt:?} gather_rows[{j}]: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn packed_stack_is_the_concatenation() {
    let (kd, outs) = (19, [5usize, 33, 17]);
    let parts: Vec<Owned> = outs
        .iter()
        .enumerate()
        .map(|(i, &n)| Owned::new(70 + i as u64, n, kd))
        .collect();
    let total: usize = outs.iter().sum();
    let m = 11;
    let x = rand_vec(3, m * kd, 1.0);
    for k in kernels::testing::kernels("packed_stack_is_the_concatenation") {
        for (dt, layout) in [
            (Dtype::F32, Layout::InOut),
            (Dtype::Bf16, Layout::OutIn),
            (Dtype::I8, Layout::OutIn),
        ] {
            let ws: Vec<Weight<'_>> = parts.iter().map(|p| p.weight(dt, layout).unwrap()).collect();
            let stacked = PackedWeight::stack(&k, &ws).unwrap();
            assert_eq!(stacked.out_dim(), total);
            let mut y = vec![0.0f32; m * total];
            k.linear_packed(&x, m, &stacked, None, &mut y);
            let mut c0 = 0;
            for (w, &n) in ws.iter().zip(&outs) {
                let single = PackedWeight::new(&k, w).unwrap();
                let mut ys = vec![0.0f32; m * n];
                k.linear_packed(&x, m, &single, None, &mut ys);
                for r in 0..m {
                    for o in 0..n {
                        assert_eq!(stacked.at(c0 + o, 3), w.at(o, 3));
                        // Same tile shapes, same sums: identical (the stack only moves panel boundaries, and each
                        // output is reduced in the same order whatever its panel).
                        assert_eq!(
                            y[r * total + c0 + o],
                            ys[r * n + o],
                            "{dt:?} {} row {r} col {o}",
                            k.isa()
                        );
                    }
                }
                c0 += n;
            }
        }
    }
}

#[test]
fn pack_errors_name_the_problem() {
    let k = Kernels::scalar();
    let q = [1i8, -128, 3, 4];
    let scales = [1.0f32, 1.0];
    let w = Weight::new(WeightData::I8 { q: &q, scales: &scales }, 2, 2, Layout::OutIn).unwrap();
    let e = PackedWeight::new(&k, &w).unwrap_err();
    assert_eq!(e, PackError::I8Min { row: 0, col: 1 });
    assert!(e.to_string().contains("-128"), "{e}");
    let bad = Weight {
        data: WeightData::F32(&[1.0, 2.0, 3.0]),
        out_dim: 2,
        in_dim: 2,
        layout: Layout::OutIn,
    };
    let e = PackedWeight::new(&k, &bad).unwrap_err();
    assert_eq!(
        e,
        PackError::Shape {
            out_dim: 2,
            in_dim: 2,
            found: 3
        }
    );
    assert!(e.to_string().contains("found") || e.to_string().contains('3'), "{e}");
}

#[test]
fn packed_weight_refuses_other_isa_kernels() {
    let Some(other) = Isa::available().into_iter().find(|&i| i != Isa::Scalar) else {
        kernels::testing::report("skipped: packed_weight_refuses_other_isa_kernels needs a second ISA");
        return;
    };
    let v = [1.0f32; 4];
    let w = Weight::new(WeightData::F32(&v), 2, 2, Layout::OutIn).unwrap();
    let pw = PackedWeight::new(&Kernels::scalar(), &w).unwrap();
    let run = std::panic::catch_unwind(|| {
        let mut y = [0.0f32; 2];
        Kernels::new(other)
            .unwrap()
            .linear_packed(&[1.0, 1.0], 1, &pw, None, &mut y);
    });
    let msg = run.expect_err("a weight packed for scalar must not run on another ISA");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("packed for scalar"), "{msg}");
}

// ---- int8 x int8 ----

/// Rows that exercise the quantizer: random, all zero, a NaN, an infinity, one spike, tiny and huge magnitudes,
/// exact ties (x · Q/max = n + 1/2).
fn quant_rows(seed: u64, rows: usize, kd: usize) -> Vec<f32> {
    let mut x = rand_vec(seed, rows * kd, 2.0);
    for r in 0..rows {
        let row = &mut x[r * kd..(r + 1) * kd];
        match r % 8 {
            1 => row.fill(0.0),
            2 => row[kd / 2] = f32::NAN,
            3 => row[kd - 1] = f32::NEG_INFINITY,
            4 => {
                row.fill(0.0);
                row[kd / 3] = -3.5;
            }
            5 => row.iter_mut().for_each(|v| *v *= 1e-30),
            6 => row.iter_mut().for_each(|v| *v *= 1e30),
            7 => {
                // max 127 (or 63 with the reduced range): every half-integer multiple ties.
                for (i, v) in row.iter_mut().enumerate() {
                    *v = (i % 255) as f32 * 0.5 - 63.5;
                }
                row[0] = 127.0;
            }
            _ => {}
        }
    }
    x
}

#[test]
fn quantize_rows_matches_reference() {
    for &(rows, kd) in &[(1usize, 1usize), (3, 7), (8, 17), (16, 63), (9, 65), (8, 1029)] {
        let x = quant_rows(rows as u64 * 7 + kd as u64, rows, kd);
        let (xbuf, xr) = unaligned(&x);
        for range in [I8Range::Full, I8Range::Reduced] {
            let (want_q, want_s) = reference::quantize_rows(&x, kd, range);
            kernels::testing::each_isa("quantize_rows_matches_reference", true, |k| {
                let mut q = QuantizedRows::default();
                // Twice into the same buffers (the second call reuses them).
                k.quantize_rows(&rand_vec(1, 3 * kd, 1.0), kd, range, &mut q);
                k.quantize_rows(&xbuf[xr.clone()], kd, range, &mut q);
                assert_eq!((q.rows(), q.in_dim(), q.range()), (rows, kd, range));
                for r in 0..rows {
                    let (s, ws) = (q.scales()[r], want_s[r]);
                    assert!(
                        s == ws || (s.is_nan() && ws.is_nan()),
                        "{} {range:?} row {r}: scale {s} vs {ws}",
                        k.isa()
                    );
                    assert_eq!(q.row(r), &want_q[r * kd..(r + 1) * kd], "{} {range:?} row {r}", k.isa());
                    let qmax = range.max() as i8;
                    assert!(q.row(r).iter().all(|&v| (-qmax..=qmax).contains(&v)));
                }
            });
        }
    }
}

/// Inputs and references of one `linear_q` check (computed once, run on every kernel).
struct QCase {
    m: usize,
    range: I8Range,
    x: Vec<f32>,
    b: Vec<f32>,
    sx: Vec<f32>,
    /// `reference::linear_q` without and with the bias.
    want: [Vec<f32>; 2],
    /// The f32-activation product without and with the bias.
    exact: [Vec<f32>; 2],
}

impl QCase {
    fn new(w: &Weight<'_>, m: usize, range: I8Range, seed: u64) -> Self {
        let (kd, n) = (w.in_dim, w.out_dim);
        let x = rand_vec(seed, m * kd, 1.5);
        let b = rand_vec(seed + 1, n, 0.1);
        let (xq, sx) = reference::quantize_rows(&x, kd, range);
        let mut want = [vec![0.0f32; m * n], vec![0.0f32; m * n]];
        let mut exact = [vec![0.0f32; m * n], vec![0.0f32; m * n]];
        for (j, bias) in [None, Some(&b[..])].into_iter().enumerate() {
            reference::linear_q(&xq, &sx, m, w, bias, &mut want[j]);
            reference::linear(&x, m, w, bias, &mut exact[j]);
        }
        Self {
            m,
            range,
            x,
            b,
            sx,
            want,
            exact,
        }
    }
}

/// `linear_q` of one int8 weight on one kernel: bit-equal to the reference, and within the derived bound of the
/// f32-activation product.
fn check_q(k: Kernels, w: &Weight<'_>, c: &QCase) {
    let (m, range, kd, n) = (c.m, c.range, w.in_dim, w.out_dim);
    let WeightData::I8 { q: qw, scales: sw } = w.data else {
        unreachable!()
    };
    let pw = PackedWeight::new(&k, w).unwrap();
    let mut xq = QuantizedRows::default();
    k.quantize_rows(&c.x, kd, range, &mut xq);
    for (j, bias) in [None, Some(&c.b[..])].into_iter().enumerate() {
        let before = isa::exercised(k.isa());
        let mut ybuf = vec![f32::NAN; m * n + 1];
        k.linear_q(&xq, &pw, bias, &mut ybuf[1..]);
        if m * kd * n > 0 {
            assert!(
                isa::exercised(k.isa()) > before,
                "linear_q: {} path not exercised",
                k.isa()
            );
        }
        let y = &ybuf[1..];
        for r in 0..m {
            for o in 0..n {
                let (got, exp) = (y[r * n + o], c.want[j][r * n + o]);
                assert!(
                    got == exp || (got.is_nan() && exp.is_nan()),
                    "linear_q {} {:?} {range:?} m={m} k={kd} n={n}: y[{r},{o}] = {got} want {exp} (bit-equal)",
                    k.isa(),
                    k.i8_dot()
                );
                // Against f32 activations: sx/2 · sw · Σ|qw| + slack (see the constants).
                let xr = &c.x[r * kd..(r + 1) * kd];
                let wr = &qw[o * kd..(o + 1) * kd];
                let sum_q: f32 = wr.iter().map(|&v| (v as f32).abs()).sum();
                let sum_qx: f32 = wr.iter().zip(xr).map(|(&v, &xv)| (v as f32 * xv).abs()).sum();
                let bound = sw[o] * (c.sx[r] / 2.0 * sum_q + I8_ACT_REL_SLACK * sum_qx)
                    + I8_STORE_REL_SLACK * got.abs()
                    + 1e-30;
                let f = c.exact[j][r * n + o];
                assert!(
                    (got - f).abs() <= bound,
                    "linear_q {} {range:?} m={m} k={kd} n={n}: y[{r},{o}] = {got} vs f32 {f} (err {:e} > bound {bound:e})",
                    k.isa(),
                    (got - f).abs()
                );
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn linear_q_edge_shapes() {
    for (i, &(m, kd, n)) in SHAPES.iter().enumerate() {
        let owned = Owned::new(200 + i as u64, n, kd);
        let w = owned.weight(Dtype::I8, Layout::OutIn).unwrap();
        for range in [I8Range::Full, I8Range::Reduced] {
            let case = QCase::new(&w, m, range, 300 + i as u64);
            for k in kernels::testing::kernels("linear_q_edge_shapes") {
                for kv in dot_variants("linear_q_edge_shapes", k) {
                    check_q(kv, &w, &case);
                    check_q(kv.with_gemm_blocking(SMALL_BLOCKS), &w, &case);
                }
            }
        }
    }
}

#[test]
fn linear_q_small_empty_and_non_finite() {
    for &(m, kd, n) in &[(1, 5, 3), (3, 7, 5), (10, 3, 6), (0, 4, 4), (3, 5, 0)] {
        let owned = Owned::new(m as u64 + 17, n, kd);
        let w = owned.weight(Dtype::I8, Layout::OutIn).unwrap();
        let case = QCase::new(&w, m, I8Range::Full, 5);
        for k in kernels::testing::kernels("linear_q_small_empty_and_non_finite") {
            for kv in dot_variants("linear_q_small_empty_and_non_finite", k) {
                check_q(kv, &w, &case);
            }
        }
    }
    // A row with a NaN gives NaN outputs; the other rows are untouched.
    let (kd, n) = (9, 4);
    let owned = Owned::new(3, n, kd);
    let w = owned.weight(Dtype::I8, Layout::OutIn).unwrap();
    let mut x = rand_vec(8, 2 * kd, 1.0);
    x[kd + 3] = f32::NAN;
    for k in kernels::testing::kernels("linear_q_small_empty_and_non_finite") {
        let pw = PackedWeight::new(&k, &w).unwrap();
        let mut xq = QuantizedRows::default();
        k.quantize_rows(&x, kd, I8Range::Full, &mut xq);
        let mut y = vec![0.0f32; 2 * n];
        k.linear_q(&xq, &pw, None, &mut y);
        assert!(
            y[..n].iter().all(|v| v.is_finite()) && y[n..].iter().all(|v| v.is_nan()),
            "{y:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random shapes, dtypes, layouts and values: linear_packed within its bound, linear_q bit-equal to the reference.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn packed_and_q_random(m in 1usize..40, kd in 1usize..300, n in 1usize..100, dt in 0usize..4, inout in any::<bool>(),
                           seed in 0u64..1000) {
        let owned = Owned::new(seed, n, kd);
        let dt = [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::I8][dt];
        let layout = if inout { Layout::InOut } else { Layout::OutIn };
        let w = owned.weight(dt, layout);
        let case = w.as_ref().map(|w| Case::new(w, m, seed + 5));
        let wq = owned.weight(Dtype::I8, Layout::OutIn).unwrap();
        let qcase = QCase::new(&wq, m, if inout { I8Range::Reduced } else { I8Range::Full }, seed + 9);
        for k in kernels::testing::kernels("packed_and_q_random") {
            if let (Some(w), Some(case)) = (&w, &case) {
                check_packed(k, w, case, &format!("proptest {dt:?} {layout:?}"));
            }
            for kv in dot_variants("packed_and_q_random", k) {
                check_q(kv, &wq, &qcase);
            }
        }
    }
}

/// `Bf16Gemv::DotBf16` on packed bf16 weights rounds x to bf16 (unit roundoff 2^-8: 8 significant bits) before `vdpbf16ps`, which
/// accumulates in f32: `|y - ref| <= (2^-8 + (k + PACKED_SLACK_TERMS) · EPS) · Σ|w·x|` (+ the bias rounding).
#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore)]
fn packed_bf16_dot() {
    use kernels::{Bf16Gemv, Feature};
    if !kernels::testing::require("packed_bf16_dot", Feature::Avx512Bf16) {
        return;
    }
    let k = Kernels::new(Isa::Avx512).unwrap().with_bf16_gemv(Bf16Gemv::DotBf16);
    for (i, &(m, kd, n)) in SHAPES.iter().enumerate() {
        let owned = Owned::new(500 + i as u64, n, kd);
        for layout in [Layout::OutIn, Layout::InOut] {
            let w = owned.weight(Dtype::Bf16, layout).unwrap();
            let pw = PackedWeight::new(&k, &w).unwrap();
            let x = rand_vec(i as u64, m * kd, 1.0);
            let b = rand_vec(i as u64 + 1, n, 0.1);
            let mag = magnitudes(&w, &x, m);
            let mut want = vec![0.0f32; m * n];
            reference::linear(&x, m, &w, Some(&b), &mut want);
            let before = isa::exercised(Isa::Avx512);
            let mut y = vec![f32::NAN; m * n];
            k.linear_packed(&x, m, &pw, Some(&b), &mut y);
            assert!(isa::exercised(Isa::Avx512) > before);
            for j in 0..y.len() {
                let tol =
                    (1.0 / 256.0 + (kd as f32 + PACKED_SLACK_TERMS) * EPS) * mag[j] + EPS * b[j % n].abs() + 1e-30;
                assert!(
                    (y[j] - want[j]).abs() <= tol,
                    "dot_bf16 {layout:?} m={m} k={kd} n={n} [{j}]: {} vs {}",
                    y[j],
                    want[j]
                );
            }
        }
    }
}

/// A row's output does not depend on the other rows of the call (batch invariance): every output is one FMA chain
/// over the inputs in order, whatever the row count, the blocking or the split. Checked bit for bit.
#[test]
#[cfg_attr(miri, ignore)]
fn packed_linear_is_batch_invariant() {
    let (kd, n) = (77, 70);
    let owned = Owned::new(9, n, kd);
    let m = 40;
    let x = rand_vec(4, m * kd, 1.0);
    let b = rand_vec(5, n, 0.1);
    for k in kernels::testing::kernels("packed_linear_is_batch_invariant") {
        for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::I8] {
            let w = owned.weight(dt, Layout::OutIn).unwrap();
            for kb in [k, k.with_gemm_blocking(SMALL_BLOCKS)] {
                let pw = PackedWeight::new(&kb, &w).unwrap();
                let mut all = vec![0.0f32; m * n];
                kb.linear_packed(&x, m, &pw, Some(&b), &mut all);
                for rows in [1usize, 3, 8, 9, 13] {
                    for r0 in (0..m - rows).step_by(11) {
                        let mut part = vec![0.0f32; rows * n];
                        kb.linear_packed(&x[r0 * kd..(r0 + rows) * kd], rows, &pw, Some(&b), &mut part);
                        for (i, (p, a)) in part.iter().zip(&all[r0 * n..]).enumerate() {
                            assert_eq!(p.to_bits(), a.to_bits(), "{dt:?} {} rows {r0}+{rows} [{i}]", kb.isa());
                        }
                    }
                }
            }
        }
    }
}

/// `linear_packed_part` / `linear_q_part`: every part of a split run once (here from rayon threads, as a team
/// would) gives `linear_packed` / `linear_q`'s output; a part taken twice panics.
#[test]
#[cfg_attr(miri, ignore)]
fn parts_cover_the_output_once() {
    use kernels::{Part, SharedOut};
    use rayon::prelude::*;
    for &(m, kd, n) in &[
        (1usize, 300usize, 700usize),
        (9, 65, 130),
        (40, 300, 77),
        (2, 5, 3),
        (3, 0, 5),
    ] {
        let owned = Owned::new(m as u64 + 3, n, kd);
        let x = rand_vec(m as u64, m * kd, 1.0);
        let b = rand_vec(7, n, 0.1);
        for k in kernels::testing::kernels("parts_cover_the_output_once") {
            for dt in [Dtype::F32, Dtype::I8] {
                let w = owned.weight(dt, Layout::OutIn).unwrap();
                let pw = PackedWeight::new(&k, &w).unwrap();
                let mut want = vec![0.0f32; m * n];
                k.linear_packed(&x, m, &pw, Some(&b), &mut want);
                for count in [1usize, 2, 3, 7] {
                    let mut got = vec![f32::NAN; m * n];
                    let out = SharedOut::new(&mut got);
                    (0..count)
                        .into_par_iter()
                        .for_each(|index| k.linear_packed_part(&x, m, &pw, Some(&b), &out, Part { index, count }));
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), e.to_bits(), "{dt:?} {} m={m} count {count} [{i}]", k.isa());
                    }
                }
                if dt == Dtype::I8 {
                    let mut xq = QuantizedRows::default();
                    k.quantize_rows(&x, kd, I8Range::Full, &mut xq);
                    if kd > 0 || m == 0 {
                        let mut want = vec![0.0f32; m * n];
                        k.linear_q(&xq, &pw, Some(&b), &mut want);
                        let mut got = vec![f32::NAN; m * n];
                        let out = SharedOut::new(&mut got);
                        (0..3)
                            .into_par_iter()
                            .for_each(|index| k.linear_q_part(&xq, &pw, Some(&b), &out, Part { index, count: 3 }));
                        assert!(
                            got.iter().zip(&want).all(|(g, e)| g.to_bits() == e.to_bits()),
                            "{} linear_q_part",
                            k.isa()
                        );
                    }
                }
            }
        }
    }
    let k = Kernels::scalar();
    let v = [1.0f32; 6];
    let w = Weight::new(WeightData::F32(&v), 3, 2, Layout::OutIn).unwrap();
    let pw = PackedWeight::new(&k, &w).unwrap();
    let mut y = [0.0f32; 3];
    let out = SharedOut::new(&mut y);
    k.linear_packed_part(&[1.0, 2.0], 1, &pw, None, &out, Part { index: 1, count: 2 });
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        k.linear_packed_part(&[1.0, 2.0], 1, &pw, None, &out, Part { index: 1, count: 2 })
    }));
    let msg = again.expect_err("a part taken twice must panic");
    assert!(msg.downcast_ref::<String>().is_some_and(|m| m.contains("taken twice")));
}

/// [`I8Activations::Int8`]: `linear_packed` (and its parts) on an int8 matrix quantize `x` per row and run
/// `linear_q`, bit for bit, whatever the row count (batch invariance, which the server's greedy outputs rely on);
/// other dtypes are unaffected.
#[test]
#[cfg_attr(miri, ignore)]
fn int8_activations_run_linear_q() {
    use kernels::{Part, SharedOut};
    let (kd, n, m) = (300, 130, 20);
    let owned = Owned::new(11, n, kd);
    let x = rand_vec(12, m * kd, 1.0);
    let b = rand_vec(13, n, 0.1);
    for k in kernels::testing::kernels("int8_activations_run_linear_q") {
        let kq = k.with_i8_activations(I8Activations::Int8);
        let w = owned.weight(Dtype::I8, Layout::OutIn).unwrap();
        let pw = PackedWeight::new(&k, &w).unwrap();
        let mut xq = QuantizedRows::default();
        k.quantize_rows(&x, kd, I8Range::Full, &mut xq);
        let mut want = vec![0.0f32; m * n];
        k.linear_q(&xq, &pw, Some(&b), &mut want);
        let mut got = vec![f32::NAN; m * n];
        kq.linear_packed(&x, m, &pw, Some(&b), &mut got);
        assert!(
            got.iter().zip(&want).all(|(g, e)| g.to_bits() == e.to_bits()),
            "{} all rows",
            k.isa()
        );
        for rows in [1usize, 5, 8, 9] {
            let mut part = vec![0.0f32; rows * n];
            kq.linear_packed(&x[3 * kd..(3 + rows) * kd], rows, &pw, Some(&b), &mut part);
            assert!(
                part.iter().zip(&want[3 * n..]).all(|(g, e)| g.to_bits() == e.to_bits()),
                "{} rows 3+{rows}",
                k.isa()
            );
        }
        let mut parts = vec![f32::NAN; m * n];
        let out = SharedOut::new(&mut parts);
        for index in 0..3 {
            kq.linear_packed_part(&x, m, &pw, Some(&b), &out, Part { index, count: 3 });
        }
        assert!(
            parts.iter().zip(&want).all(|(g, e)| g.to_bits() == e.to_bits()),
            "{} parts",
            k.isa()
        );
        // f32 weights: the mode changes nothing.
        let wf = owned.weight(Dtype::F32, Layout::OutIn).unwrap();
        let pf = PackedWeight::new(&k, &wf).unwrap();
        let (mut a, mut c) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        k.linear_packed(&x, m, &pf, Some(&b), &mut a);
        kq.linear_packed(&x, m, &pf, Some(&b), &mut c);
        assert_eq!(a, c, "{} f32 weights", k.isa());
    }
}
