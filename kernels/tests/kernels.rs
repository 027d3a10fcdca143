//! Every kernel on every ISA this host supports (forced one by one), against `kernels::reference`,
//! on edge shapes and unaligned slices. Each test also checks the forced ISA really ran
//! (`kernels::isa::exercised`).
#![allow(clippy::needless_range_loop)]

use kernels::{bf16, f16, isa, reference, Activation, Isa, Kernels, Layout, RopeLayout, RopeTable, Weight, WeightData};
use proptest::prelude::*;

mod common;
mod linear_shapes;

use common::{max_abs, rand_vec, unaligned};

/// linear: |y - ref| <= LINEAR_REL_TOL * Σ|w·x| (+ bias): f32 accumulation in a different order.
const LINEAR_REL_TOL: f32 = 2e-6;
/// linear: normalised mean squared error bound (a sequential f32 sum over ~100 terms reaches ~2e-12).
const LINEAR_NMSE_TOL: f64 = 1e-11;
/// layer_norm / rms_norm outputs (O(1) values), max-abs.
const NORM_TOL: f32 = 4e-6;
/// softmax probabilities, max-abs (exp within 2 ulp, f32 sum).
const SOFTMAX_TOL: f32 = 1e-6;
/// activations and swiglu: |got - ref| <= ACT_ABS_TOL + ACT_REL_TOL |ref|.
const ACT_ABS_TOL: f32 = 1e-6;
const ACT_REL_TOL: f32 = 2e-6;
/// rope: a rotation of O(1) values; FMA vs separate rounding.
const ROPE_TOL: f32 = 1e-6;

const LENS: [usize; 11] = [0, 1, 7, 15, 16, 17, 63, 64, 65, 1000, 1029];

/// Edge lengths; under Miri (interpreted, ~1000x slower) only the short ones.
fn lens() -> &'static [usize] {
    if cfg!(miri) {
        &LENS[..6]
    } else {
        &LENS
    }
}

/// The kernels of every ISA this host has (the ones it lacks are reported as skipped).
fn kernels_all(test: &str) -> Vec<Kernels> {
    kernels::testing::kernels(test)
}

/// Run `f` with each ISA, checking that it dispatched to that ISA at least once.
fn each_isa(name: &str, f: impl FnMut(Kernels)) {
    kernels::testing::each_isa(name, true, f)
}

/// Like [`each_isa`]; the exercised check only when `must_run` (empty shapes return before any dispatch).
fn each_isa_if(name: &str, must_run: bool, f: impl FnMut(Kernels)) {
    kernels::testing::each_isa(name, must_run, f)
}

fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

#[derive(Clone, Copy, Debug)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

struct OwnedWeight {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    bf16s: Vec<bf16>,
}

impl OwnedWeight {
    fn new(vals: &[f32]) -> Self {
        Self {
            f32s: vals.to_vec(),
            f16s: vals.iter().map(|&v| f16::from_f32(v)).collect(),
            bf16s: vals.iter().map(|&v| bf16::from_f32(v)).collect(),
        }
    }
    fn weight(&self, dt: Dtype, out_dim: usize, in_dim: usize, layout: Layout) -> Weight<'_> {
        let data = match dt {
            Dtype::F32 => WeightData::F32(&self.f32s),
            Dtype::F16 => WeightData::F16(&self.f16s),
            Dtype::Bf16 => WeightData::Bf16(&self.bf16s),
        };
        Weight::new(data, out_dim, in_dim, layout).expect("consistent shape")
    }
}

/// One `linear` call on every ISA against the reference.
fn check_linear(rows: usize, in_dim: usize, out_dim: usize, seed: u64) {
    let x = rand_vec(seed, rows * in_dim, 1.0);
    let wv = rand_vec(seed + 1, out_dim * in_dim, 0.5);
    let b = rand_vec(seed + 2, out_dim, 0.1);
    let ow = OwnedWeight::new(&wv);
    let (xbuf, xr) = unaligned(&x);
    for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        for layout in [Layout::OutIn, Layout::InOut] {
            let w = ow.weight(dt, out_dim, in_dim, layout);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0f32; rows * out_dim];
                reference::linear(&x, rows, &w, bias, &mut want);
                // Σ|w·x| per output: the scale of the accumulation error.
                let mut mag = vec![0.0f32; rows * out_dim];
                for r in 0..rows {
                    for o in 0..out_dim {
                        mag[r * out_dim + o] =
                            (0..in_dim).map(|i| (w.at(o, i) * x[r * in_dim + i]).abs()).sum::<f32>() + 1e-30;
                    }
                }
                let must_run = rows * in_dim * out_dim > 0;
                each_isa_if("linear", false, |k| {
                    let before = isa::exercised(k.isa());
                    let mut ybuf = vec![f32::NAN; rows * out_dim + 1];
                    k.linear(&xbuf[xr.clone()], rows, &w, bias, &mut ybuf[1..]);
                    let y = &ybuf[1..];
                    for i in 0..y.len() {
                        let err = (y[i] - want[i]).abs();
                        assert!(
                            err <= LINEAR_REL_TOL * mag[i] + 1e-7,
                            "linear {:?} {dt:?} {layout:?} rows={rows} in={in_dim} out={out_dim} bias={}: \
                             y[{i}]={} want {} (err {err:e}, scale {})",
                            k.isa(),
                            bias.is_some(),
                            y[i],
                            want[i],
                            mag[i]
                        );
                    }
                    let e = nmse(y, &want);
                    assert!(
                        e <= LINEAR_NMSE_TOL,
                        "linear {:?} {dt:?} {layout:?} nmse {e:e}",
                        k.isa()
                    );
                    if must_run {
                        assert!(
                            isa::exercised(k.isa()) > before,
                            "linear: {} path not exercised",
                            k.isa()
                        );
                    }
                });
            }
        }
    }
}

#[test]
fn linear_edge_shapes() {
    // Miri: a few shapes covering GEMV (full + partial lanes, leftover rows) and GEMM.
    let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(1, 7, 5), (3, 17, 7), (9, 5, 3)]
    } else {
        linear_shapes::EDGE
    };
    for (i, &(rows, in_dim, out_dim)) in shapes.iter().enumerate() {
        check_linear(rows, in_dim, out_dim, 100 + i as u64);
    }
}

#[test]
fn linear_empty() {
    for &(rows, in_dim, out_dim) in linear_shapes::EMPTY {
        check_linear(rows, in_dim, out_dim, 7);
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn linear_parallel_and_panels() {
    for (i, &(rows, in_dim, out_dim)) in linear_shapes::PARALLEL.iter().enumerate() {
        check_linear(rows, in_dim, out_dim, 1 + i as u64);
    }
}

#[test]
fn layer_norm_and_rms_norm() {
    for &n in lens().iter().filter(|&&n| n > 0) {
        for n_rows in [1usize, 3] {
            let x: Vec<f32> = rand_vec(n as u64, n * n_rows, 3.0).iter().map(|v| v + 1.5).collect();
            let g = rand_vec(n as u64 + 1, n, 1.0);
            let b = rand_vec(n as u64 + 2, n, 1.0);
            let (xbuf, xr) = unaligned(&x);
            let mut want = vec![0.0; x.len()];
            reference::layer_norm(&x, &g, &b, 1e-5, &mut want);
            each_isa("layer_norm", |k| {
                let mut out = vec![0.0; x.len() + 1];
                k.layer_norm(&xbuf[xr.clone()], &g, &b, 1e-5, &mut out[1..]);
                let e = max_abs(&out[1..], &want);
                assert!(e <= NORM_TOL, "layer_norm {:?} n={n}: {e:e}", k.isa());
            });
            reference::rms_norm(&x, &g, 1e-6, &mut want);
            each_isa("rms_norm", |k| {
                let mut out = vec![0.0; x.len() + 1];
                k.rms_norm(&xbuf[xr.clone()], &g, 1e-6, &mut out[1..]);
                let e = max_abs(&out[1..], &want);
                assert!(e <= NORM_TOL, "rms_norm {:?} n={n}: {e:e}", k.isa());
            });
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn norms_parallel_rows() {
    let (n, n_rows) = (768, 200);
    let x = rand_vec(9, n * n_rows, 2.0);
    let g = rand_vec(10, n, 1.0);
    let b = rand_vec(11, n, 1.0);
    let mut want = vec![0.0; x.len()];
    reference::layer_norm(&x, &g, &b, 1e-5, &mut want);
    each_isa("layer_norm", |k| {
        let mut out = vec![0.0; x.len()];
        k.layer_norm(&x, &g, &b, 1e-5, &mut out);
        assert!(max_abs(&out, &want) <= NORM_TOL);
    });
    reference::rms_norm(&x, &g, 1e-5, &mut want);
    each_isa("rms_norm", |k| {
        let mut out = vec![0.0; x.len()];
        k.rms_norm(&x, &g, 1e-5, &mut out);
        assert!(max_abs(&out, &want) <= NORM_TOL);
    });
}

#[test]
fn softmax_rows() {
    for &n in lens() {
        for scale in [1.0f32, 30.0] {
            let mut x = rand_vec(n as u64 + 3, n, scale);
            // Masked entries.
            for i in (0..n).step_by(5) {
                x[i] = f32::NEG_INFINITY;
            }
            let mut want = x.clone();
            reference::softmax(&mut want);
            each_isa("softmax", |k| {
                let (mut buf, r) = unaligned(&x);
                k.softmax(&mut buf[r.clone()]);
                let e = max_abs(&buf[r], &want);
                assert!(e <= SOFTMAX_TOL, "softmax {:?} n={n} scale={scale}: {e:e}", k.isa());
            });
        }
    }
    // All masked: zeros.
    each_isa("softmax", |k| {
        let mut x = vec![f32::NEG_INFINITY; 17];
        k.softmax(&mut x);
        assert!(x.iter().all(|&v| v == 0.0));
    });
}

fn check_act_close(name: &str, isa: Isa, got: &[f32], want: &[f32]) {
    for i in 0..got.len() {
        let tol = ACT_ABS_TOL + ACT_REL_TOL * want[i].abs();
        assert!(
            (got[i] - want[i]).abs() <= tol,
            "{name} {isa:?}: [{i}] got {} want {}",
            got[i],
            want[i]
        );
    }
}

#[test]
fn activations() {
    let acts = [
        Activation::Relu,
        Activation::Silu,
        Activation::GeluTanh,
        Activation::GeluErf,
    ];
    for &n in lens() {
        let mut x = rand_vec(n as u64 + 5, n, 8.0);
        if n > 7 {
            x[..6].copy_from_slice(&[0.0, -0.0, 100.0, -100.0, 1e-20, -90.0]);
        }
        for act in acts {
            let mut want = x.clone();
            reference::activation(act, &mut want);
            each_isa("activation", |k| {
                let (mut buf, r) = unaligned(&x);
                k.activation(act, &mut buf[r.clone()]);
                check_act_close(&format!("{act:?} n={n}"), k.isa(), &buf[r], &want);
            });
        }
        let up = rand_vec(n as u64 + 6, n, 2.0);
        let mut want = vec![0.0; n];
        reference::swiglu(&x, &up, &mut want);
        each_isa("swiglu", |k| {
            let mut out = vec![0.0; n + 1];
            let (gbuf, r) = unaligned(&x);
            k.swiglu(&gbuf[r], &up, &mut out[1..]);
            check_act_close(&format!("swiglu n={n}"), k.isa(), &out[1..], &want);
        });
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn activation_parallel() {
    let x = rand_vec(77, 300_001, 6.0);
    let mut want = x.clone();
    reference::activation(Activation::GeluErf, &mut want);
    each_isa("activation", |k| {
        let mut got = x.clone();
        k.activation(Activation::GeluErf, &mut got);
        check_act_close("gelu_erf big", k.isa(), &got, &want);
    });
}

#[test]
fn add_exact() {
    for &n in lens() {
        let a = rand_vec(n as u64 + 8, n, 1.0);
        let b = rand_vec(n as u64 + 9, n, 1.0);
        let mut want = a.clone();
        reference::add(&mut want, &b);
        each_isa("add", |k| {
            let (mut buf, r) = unaligned(&a);
            k.add(&mut buf[r.clone()], &b);
            assert_eq!(&buf[r], &want[..], "add {:?} n={n}", k.isa());
        });
    }
}

#[test]
fn rope_layouts() {
    let head_dims: &[usize] = if cfg!(miri) { &[4, 8, 80] } else { &[4, 8, 64, 80, 128] };
    for &head_dim in head_dims {
        let table = RopeTable::new(head_dim, 64, 10000.0);
        for (n_heads, len, pos0) in [(1usize, 1usize, 0usize), (3, 5, 7), (2, 2, 62)] {
            let x = rand_vec(head_dim as u64, len * n_heads * head_dim, 2.0);
            for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
                let mut want = x.clone();
                reference::rope(&table, layout, &mut want, n_heads, pos0);
                let run = |k: Kernels| {
                    let (mut buf, r) = unaligned(&x);
                    k.rope(&table, layout, &mut buf[r.clone()], n_heads, pos0);
                    let e = max_abs(&buf[r], &want);
                    assert!(e <= ROPE_TOL, "rope {:?} {layout:?} d={head_dim}: {e:e}", k.isa());
                };
                match layout {
                    RopeLayout::Half => each_isa("rope", run),
                    // Interleaved is scalar on every ISA (documented); nothing to exercise.
                    RopeLayout::Interleaved => kernels_all("rope").into_iter().for_each(run),
                }
            }
        }
    }
}

#[test]
fn embed_all_dtypes() {
    for &dim in &[1usize, 7, 17, 64, 65] {
        let vocab = 11;
        let ow = OwnedWeight::new(&rand_vec(dim as u64, vocab * dim, 1.0));
        let ids = [3u32, 0, 10, 3, 7];
        for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let table = ow.weight(dt, vocab, dim, Layout::OutIn);
            let mut want = vec![0.0; ids.len() * dim];
            reference::embed(&table, &ids, 0.125, &mut want);
            each_isa("embed", |k| {
                let mut out = vec![0.0; ids.len() * dim + 1];
                k.embed(&table, &ids, 0.125, &mut out[1..]);
                assert_eq!(&out[1..], &want[..], "embed {:?} {dt:?} dim={dim}", k.isa());
            });
        }
    }
}

#[test]
fn argmax_and_top_k() {
    for &n in lens() {
        let mut x = rand_vec(n as u64 + 11, n, 5.0);
        if n > 20 {
            x[3] = f32::NAN;
            x[19] = x[7]; // a tie
            x[n - 1] = f32::NAN;
        }
        let want = reference::argmax(&x);
        each_isa("argmax", |k| {
            let (buf, r) = unaligned(&x);
            assert_eq!(k.argmax(&buf[r]), want, "argmax {:?} n={n}", k.isa());
        });
        for kk in [0usize, 1, 5, 40, n + 3] {
            let want = reference::top_k(&x, kk);
            for k in kernels_all("top_k") {
                assert_eq!(k.top_k(&x, kk), want, "top_k {:?} n={n} k={kk}", k.isa());
            }
        }
    }
    // Ties, NaN-only and -inf rows.
    let x = [1.0, f32::NAN, 3.0, 3.0, f32::NEG_INFINITY, 3.0, -0.0, 0.0];
    each_isa("argmax", |k| {
        assert_eq!(k.argmax(&x), reference::argmax(&x));
        assert_eq!(k.argmax(&[f32::NAN; 20]), None);
        assert_eq!(k.argmax(&[f32::NEG_INFINITY; 20]), Some(0));
        assert_eq!(k.argmax(&[]), None);
    });
    for kk in 0..=9 {
        assert_eq!(Kernels::scalar().top_k(&x, kk), reference::top_k(&x, kk));
    }
}

/// Largest random matrix side (small under Miri).
const MAX_PROP_DIM: usize = if cfg!(miri) { 12 } else { 90 };

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 48 }, ..ProptestConfig::default() })]

    #[test]
    fn prop_linear(rows in 1usize..12, in_dim in 1usize..MAX_PROP_DIM, out_dim in 1usize..MAX_PROP_DIM, seed in any::<u64>()) {
        check_linear(rows, in_dim, out_dim, seed);
    }

    #[test]
    fn prop_rows(n in 1usize..300, n_rows in 1usize..4, seed in any::<u64>()) {
        let x = rand_vec(seed, n * n_rows, 4.0);
        let g = rand_vec(seed ^ 1, n, 1.0);
        let b = rand_vec(seed ^ 2, n, 1.0);
        let mut want = vec![0.0; x.len()];
        reference::layer_norm(&x, &g, &b, 1e-5, &mut want);
        each_isa("layer_norm", |k| {
            let mut out = vec![0.0; x.len()];
            k.layer_norm(&x, &g, &b, 1e-5, &mut out);
            assert!(max_abs(&out, &want) <= NORM_TOL);
        });
        let mut want = x[..n].to_vec();
        reference::softmax(&mut want);
        each_isa("softmax", |k| {
            let mut got = x[..n].to_vec();
            k.softmax(&mut got);
            assert!(max_abs(&got, &want) <= SOFTMAX_TOL);
        });
        let mut want = x.clone();
        reference::activation(Activation::Silu, &mut want);
        each_isa("activation", |k| {
            let mut got = x.clone();
            k.activation(Activation::Silu, &mut got);
            check_act_close("silu", k.isa(), &got, &want);
        });
    }
}

/// `Bf16Gemv::DotBf16` rounds x to bf16 (relative error <= 2^-8 per term: 8 significant bits) before `vdpbf16ps`:
/// |y - ref| <= BF16_DOT_REL_TOL * Σ|w·x|: 2^-8 per term, plus the f32 accumulation of at most 1000 terms
/// (1000 · 2^-24 < 1e-4).
const BF16_DOT_REL_TOL: f32 = 1.0 / 256.0 + 1e-4;

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore)]
fn linear_bf16_dot() {
    use kernels::{Bf16Gemv, Feature};
    if !kernels::testing::require("linear_bf16_dot", Feature::Avx512Bf16) {
        return;
    }
    let k = Kernels::new(Isa::Avx512).unwrap().with_bf16_gemv(Bf16Gemv::DotBf16);
    for &(rows, in_dim, out_dim) in &[
        (1usize, 1usize, 1usize),
        (1, 31, 5),
        (1, 33, 67),
        (2, 64, 9),
        (3, 100, 130),
        (4, 1000, 300),
        (8, 65, 17),
    ] {
        let x = rand_vec(rows as u64 + 40, rows * in_dim, 1.0);
        let ow = OwnedWeight::new(&rand_vec(in_dim as u64, out_dim * in_dim, 0.5));
        let b = rand_vec(3, out_dim, 0.1);
        let w = ow.weight(Dtype::Bf16, out_dim, in_dim, Layout::OutIn);
        let mut want = vec![0.0f32; rows * out_dim];
        reference::linear(&x, rows, &w, Some(&b), &mut want);
        let before = isa::exercised(Isa::Avx512);
        let mut y = vec![0.0f32; rows * out_dim];
        k.linear(&x, rows, &w, Some(&b), &mut y);
        assert!(isa::exercised(Isa::Avx512) > before);
        for r in 0..rows {
            for o in 0..out_dim {
                let mag: f32 = (0..in_dim).map(|i| (w.at(o, i) * x[r * in_dim + i]).abs()).sum();
                let (g, e) = (y[r * out_dim + o], want[r * out_dim + o]);
                assert!(
                    (g - e).abs() <= BF16_DOT_REL_TOL * mag + 1e-7,
                    "dot_bf16 rows={rows} in={in_dim}: {g} vs {e}"
                );
            }
        }
    }
}
