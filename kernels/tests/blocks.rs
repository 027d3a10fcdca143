//! GGUF block weights (Q8_0, Q4_0, Q4_1): (de)quantization bit for bit against the `gguf` package (fixtures by
//! tools/scripts/gguf_block_refs.py), the activations' Q8 blocks, and the block GEMV/GEMM on every ISA this host has
//! (each int8 dot-product variant, forced one by one and checked to have run) against `kernels::reference`:
//! exactly where every f32 operation is exact, within the derived bound elsewhere; and the reference against
//! dequantize-then-f32 within the bound the activations' rounding implies.
#![allow(clippy::needless_range_loop)]

use kernels::{
    f16_bits_to_f32, isa, reference, BlockLayout, BlockType, Kernels, Layout, PackError, PackedWeight, Part,
    QuantizedBlocks,
};
use kernels::{SharedOut, Weight, WeightData, QK};

mod common;

/// The types of 32-value blocks (the K-quants are tested in kblocks.rs).
const TYPES32: [BlockType; 3] = [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1];

use common::{block_fixture, dot_variants, f32s, rand_vec};

fn fixture(name: &str) -> Vec<u8> {
    block_fixture(name)
}

fn file_name(ty: BlockType) -> String {
    ty.name().to_lowercase()
}

/// Bitwise equal, or both NaN (NaN payloads of `inf · 0` differ between CPUs).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn f16_conversion_is_exact_for_every_value() {
    for h in 0..=u16::MAX {
        let want = kernels::f16::from_bits(h).to_f32();
        assert!(
            same(f16_bits_to_f32(h), want),
            "{h:#06x}: {} vs {want}",
            f16_bits_to_f32(h)
        );
    }
}

#[test]
fn dequantize_matches_the_gguf_package() {
    for ty in TYPES32 {
        for set in ["raw", "quant"] {
            let bytes = fixture(&format!("{}.{set}", file_name(ty)));
            let want = f32s(&fixture(&format!("{}.{set}.f32", file_name(ty))));
            let mut got = vec![0.0f32; want.len()];
            ty.dequantize(&bytes, &mut got).unwrap();
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(same(g, w), "{ty} {set} value {i}: {g} vs gguf {w}");
            }
        }
        let mut out = vec![0.0f32; 32];
        assert!(ty.dequantize(&vec![0u8; ty.block_bytes() + 1], &mut out).is_err());
    }
}

#[test]
fn quantize_matches_the_gguf_package() {
    let x = f32s(&fixture("input.f32"));
    for ty in TYPES32 {
        let want = fixture(&format!("{}.quant", file_name(ty)));
        let mut got = vec![0u8; want.len()];
        ty.quantize(&x, &mut got).unwrap();
        for (b, (g, w)) in got
            .chunks(ty.block_bytes())
            .zip(want.chunks(ty.block_bytes()))
            .enumerate()
        {
            assert_eq!(g, w, "{ty} block {b} ({:?})", &x[b * QK..(b + 1) * QK]);
        }
    }
}

/// Activation rows with the quantizer's edge cases: zeros, a NaN, an infinity, ties, tiny and huge magnitudes.
fn act_rows(seed: u64, rows: usize, in_dim: usize) -> Vec<f32> {
    let mut x = rand_vec(seed, rows * in_dim, 3.0);
    let nb = x.len() / QK;
    for b in 0..nb {
        let blk = &mut x[b * QK..(b + 1) * QK];
        match b % 11 {
            3 => blk.fill(0.0),
            5 => blk.iter_mut().for_each(|v| *v *= 1e-30),
            7 => blk.iter_mut().for_each(|v| *v *= 1e30),
            9 => {
                // max 127: every value k + 1/2 is a tie.
                blk[0] = 127.0;
                for (j, v) in blk.iter_mut().enumerate().skip(1) {
                    *v = j as f32 - 15.5;
                }
            }
            _ => {}
        }
    }
    x
}

#[test]
fn activation_blocks_are_the_reference_on_every_isa() {
    let in_dim = 4 * QK;
    let mut x = act_rows(3, 5, in_dim);
    x[2 * in_dim + 40] = f32::NAN;
    x[3 * in_dim + 70] = f32::NEG_INFINITY;
    let want = reference::quantize_blocks(&x, in_dim);
    let u = f32::EPSILON / 2.0;
    for r in 0..want.rows() {
        for (b, &d) in want.scales(r).iter().enumerate() {
            let xs = &x[r * in_dim + b * QK..r * in_dim + (b + 1) * QK];
            if !d.is_finite() {
                assert!(xs.iter().any(|v| !v.is_finite()));
                continue;
            }
            // |x - qx · dx| <= dx · (1/2 + 384·u) (see QuantizedBlocks).
            for (j, &v) in xs.iter().enumerate() {
                let q = want.row(r)[b * QK + j];
                assert!(
                    q != i8::MIN && (v - q as f32 * d).abs() <= d * (0.5 + 384.0 * u),
                    "row {r} block {b}"
                );
            }
        }
    }
    kernels::testing::each_isa("quantize_blocks", true, |k| {
        let mut got = QuantizedBlocks::default();
        k.quantize_blocks(&x, in_dim, &mut got);
        for r in 0..want.rows() {
            assert_eq!(got.row(r), want.row(r), "{}: row {r}", k.isa());
            for (g, w) in [(got.scales(r), want.scales(r)), (got.sums(r), want.sums(r))] {
                assert!(
                    g.iter().zip(w).all(|(&a, &b)| same(a, b)),
                    "{}: row {r}: {g:?} vs {w:?}",
                    k.isa()
                );
            }
        }
    });
}

/// Random block bytes of `ty` with the f16 scales set to `scale(o, b)` (and Q4_1's min to `min(o, b)`).
fn block_matrix(ty: BlockType, seed: u64, out_dim: usize, in_dim: usize, scale: impl Fn(usize) -> f32) -> Vec<u8> {
    let n = ty.matrix_bytes(out_dim, in_dim).unwrap();
    let noise = rand_vec(seed, n, 1.0);
    let mut w: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
    for (b, blk) in w.chunks_exact_mut(ty.block_bytes()).enumerate() {
        blk[..2].copy_from_slice(&kernels::f16::from_f32(scale(2 * b)).to_bits().to_le_bytes());
        if ty == BlockType::Q4_1 {
            blk[2..4].copy_from_slice(&kernels::f16::from_f32(scale(2 * b + 1)).to_bits().to_le_bytes());
        }
    }
    if ty == BlockType::Q8_0 && n > 8 {
        w[2..6].copy_from_slice(&[0x80, 0x80, 0x7f, 0x81]); // -128 twice (a file may hold it), 127, -127
    }
    w
}

const LAYOUTS: [BlockLayout; 2] = [BlockLayout::Rows, BlockLayout::Groups];

/// `got` within `bound` of `want` everywhere (or both NaN).
fn check_within(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    for i in 0..got.len() {
        let ok = (got[i] - want[i]).abs() <= bound[i] || (got[i].is_nan() && want[i].is_nan());
        assert!(ok, "{what}: y[{i}] {} vs {} (bound {})", got[i], want[i], bound[i]);
    }
}

/// Every dot-product variant of every ISA of this host.
fn all_kernels(test: &str) -> Vec<Kernels> {
    kernels::testing::kernels(test)
        .into_iter()
        .flat_map(|k| dot_variants(test, k))
        .collect()
}

/// Run `linear_blocks` (and, for the GEMV shapes, its parts over 3 threads) on `k`, checking it dispatched.
fn run(k: Kernels, x: &QuantizedBlocks, w: &PackedWeight, bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![f32::NAN; x.rows() * w.out_dim()];
    let before = isa::exercised(k.isa());
    k.linear_blocks(x, w, bias, &mut y);
    assert!(isa::exercised(k.isa()) > before, "{} path not exercised", k.isa());
    let mut yp = vec![f32::NAN; y.len()];
    let shared = SharedOut::new(&mut yp);
    for index in 0..3 {
        k.linear_blocks_part(x, w, bias, &shared, Part { index, count: 3 });
    }
    assert!(
        y.iter().zip(&yp).all(|(&a, &b)| same(a, b)),
        "{}: parts differ from the whole",
        k.isa()
    );
    y
}

#[test]
fn block_products_are_exact_where_f32_is() {
    // Scales powers of two (one per matrix) and at most 8 blocks: every integer sum, product by a scale and f32
    // sum is exact (|Σ| <= 8 · 32 · 128 · 127 < 2^24), so every ISA must give the reference's values exactly.
    for ty in TYPES32 {
        for &(rows, out_dim, in_dim) in &[
            (1usize, 1usize, 32usize),
            (3, 37, 64),
            (4, 16, 256),
            (9, 21, 96),
            (1, 70, 32),
        ] {
            let wb = block_matrix(ty, rows as u64 + 7 * out_dim as u64, out_dim, in_dim, |i| {
                if i % 2 == 0 {
                    0.125
                } else {
                    -0.5
                }
            });
            let q: Vec<i8> = rand_vec(in_dim as u64, rows * in_dim, 127.0)
                .iter()
                .map(|v| v.round() as i8)
                .collect();
            let x = QuantizedBlocks::from_parts(q, vec![0.0625; rows * in_dim / QK], in_dim);
            let bias = rand_vec(5, out_dim, 4.0)
                .iter()
                .map(|v| v.round())
                .collect::<Vec<f32>>();
            let mut want = vec![0.0f32; rows * out_dim];
            reference::linear_blocks(&x, ty, &wb, out_dim, Some(&bias), &mut want);
            for k in all_kernels("block_products_are_exact_where_f32_is") {
                for layout in LAYOUTS {
                    let w = PackedWeight::from_blocks_in(&k, ty, layout, &wb, out_dim, in_dim).unwrap();
                    let got = run(k, &x, &w, Some(&bias));
                    assert_eq!(
                        got,
                        want,
                        "{ty} {layout:?} {}, {:?} rows {rows} out {out_dim} in {in_dim}",
                        k.isa(),
                        k.i8_dot()
                    );
                }
            }
        }
    }
}

#[test]
fn block_products_within_the_derived_bound() {
    for ty in TYPES32 {
        for &(rows, out_dim, in_dim) in &[
            (1usize, 1usize, 32usize),
            (1, 65, 576),
            (2, 7, 1536),
            (8, 33, 96),
            (17, 19, 160),
        ] {
            let seed = (rows * 1000 + out_dim * 10 + in_dim) as u64;
            let scales = rand_vec(seed, 2 * out_dim * in_dim / QK, 1.0);
            let wb = block_matrix(ty, seed, out_dim, in_dim, |i| scales[i] * 0.05);
            let xf = act_rows(seed + 1, rows, in_dim);
            let x = reference::quantize_blocks(&xf, in_dim);
            let bias = rand_vec(seed + 2, out_dim, 1.0);
            let mut want = vec![0.0f32; rows * out_dim];
            reference::linear_blocks(&x, ty, &wb, out_dim, Some(&bias), &mut want);
            let bound = reference::linear_blocks_bound(&x, ty, &wb, out_dim, Some(&bias));
            for k in all_kernels("block_products_within_the_derived_bound") {
                for layout in LAYOUTS {
                    let w = PackedWeight::from_blocks_in(&k, ty, layout, &wb, out_dim, in_dim).unwrap();
                    let got = run(k, &x, &w, Some(&bias));
                    check_within(
                        &format!("{ty} {layout:?} {} {:?}", k.isa(), k.i8_dot()),
                        &got,
                        &want,
                        &bound,
                    );
                }
            }
        }
    }
}

#[test]
fn block_reference_against_dequantized_f32() {
    for ty in TYPES32 {
        for &(rows, out_dim, in_dim) in &[(1usize, 9usize, 64usize), (3, 20, 576)] {
            let seed = (rows + out_dim + in_dim) as u64;
            let wf = rand_vec(seed, out_dim * in_dim, 0.3);
            let k = Kernels::scalar();
            let w = PackedWeight::quantize_blocks(
                &k,
                &[Weight::new(WeightData::F32(&wf), out_dim, in_dim, Layout::OutIn).unwrap()],
                ty,
            )
            .unwrap();
            let mut wb = vec![0u8; ty.matrix_bytes(out_dim, in_dim).unwrap()];
            for o in 0..out_dim {
                let rb = wb.len() / out_dim;
                ty.quantize(&wf[o * in_dim..(o + 1) * in_dim], &mut wb[o * rb..(o + 1) * rb])
                    .unwrap();
            }
            let mut deq = vec![0.0f32; wf.len()];
            ty.dequantize(&wb, &mut deq).unwrap();
            for (i, &v) in deq.iter().enumerate() {
                assert!(same(w.at(i / in_dim, i % in_dim), v), "{ty}: PackedWeight::at({i})");
            }
            let xf = rand_vec(seed + 1, rows * in_dim, 2.0);
            let xq = reference::quantize_blocks(&xf, in_dim);
            let (mut yq, mut yf) = (vec![0.0f32; rows * out_dim], vec![0.0f32; rows * out_dim]);
            reference::linear_blocks(&xq, ty, &wb, out_dim, None, &mut yq);
            let dw = Weight::new(WeightData::F32(&deq), out_dim, in_dim, Layout::OutIn).unwrap();
            reference::linear(&xf, rows, &dw, None, &mut yf);
            let bound = reference::blocks_vs_dequantized_bound(&xf, &xq, ty, &wb, out_dim);
            for i in 0..yq.len() {
                assert!(
                    (yq[i] - yf[i]).abs() <= bound[i],
                    "{ty}: y[{i}] {} vs f32 {} (bound {})",
                    yq[i],
                    yf[i],
                    bound[i]
                );
            }
            // linear_packed on the block matrix quantizes x itself: the same bits as the two steps.
            let mut y1 = vec![0.0f32; yq.len()];
            k.linear_packed(&xf, rows, &w, None, &mut y1);
            let mut y2 = vec![0.0f32; yq.len()];
            let mut xk = QuantizedBlocks::default();
            k.quantize_blocks(&xf, in_dim, &mut xk);
            k.linear_blocks(&xk, &w, None, &mut y2);
            assert_eq!(y1, y2, "{ty}: linear_packed on blocks");
        }
    }
}

#[test]
fn quantize_blocks_stacks_layouts_and_dtypes() {
    let k = Kernels::scalar();
    let (in_dim, a_out, b_out) = (64, 5, 3);
    let a = rand_vec(1, a_out * in_dim, 1.0);
    let b = rand_vec(2, b_out * in_dim, 1.0);
    let bt: Vec<kernels::bf16> = {
        // b stored [in, out] in bf16.
        let mut t = vec![kernels::bf16::ZERO; b.len()];
        for o in 0..b_out {
            for i in 0..in_dim {
                t[i * b_out + o] = kernels::bf16::from_f32(b[o * in_dim + i]);
            }
        }
        t
    };
    let bw: Vec<f32> = (0..b.len())
        .map(|j| bt[(j % in_dim) * b_out + j / in_dim].to_f32())
        .collect();
    for ty in TYPES32 {
        let wa = Weight::new(WeightData::F32(&a), a_out, in_dim, Layout::OutIn).unwrap();
        let wb = Weight::new(WeightData::Bf16(&bt), b_out, in_dim, Layout::InOut).unwrap();
        let stacked = PackedWeight::quantize_blocks(&k, &[wa, wb], ty).unwrap();
        assert_eq!(
            (stacked.out_dim(), stacked.in_dim(), stacked.block_type()),
            (a_out + b_out, in_dim, Some(ty))
        );
        let mut want = vec![0u8; ty.matrix_bytes(a_out + b_out, in_dim).unwrap()];
        let rows: Vec<f32> = a.iter().chain(&bw).copied().collect();
        ty.quantize(&rows, &mut want).unwrap();
        // Groups of 16 rows: the 8 rows padded with zero rows to one group.
        assert_eq!(stacked.bytes(), ty.matrix_bytes(16, in_dim).unwrap());
        assert_eq!(stacked.block_layout(), Some(BlockLayout::Groups));
        let rows_layout =
            PackedWeight::from_blocks_in(&k, ty, BlockLayout::Rows, &want, a_out + b_out, in_dim).unwrap();
        assert_eq!(rows_layout.bytes(), want.len());
        let from = PackedWeight::from_blocks(&k, ty, &want, a_out + b_out, in_dim).unwrap();
        let mut g1 = vec![0.0f32; 2 * in_dim];
        let mut g2 = vec![0.0f32; 2 * in_dim];
        stacked.gather_rows(&[6, 1], 2.0, &mut g1);
        from.gather_rows(&[6, 1], 2.0, &mut g2);
        assert_eq!(g1, g2, "{ty}: quantize_blocks = quantize then from_blocks");
        let mut deq = vec![0.0f32; in_dim];
        ty.dequantize(&want[6 * want.len() / 8..7 * want.len() / 8], &mut deq)
            .unwrap();
        assert!(deq.iter().zip(&g1).all(|(d, g)| d * 2.0 == *g));
        // Errors name the problem.
        let odd = Weight::new(WeightData::F32(&a[..a_out * 40]), a_out, 40, Layout::OutIn).unwrap();
        let e = PackedWeight::quantize_blocks(&k, &[odd], ty).unwrap_err();
        assert!(
            matches!(e, PackError::Blocks(_)) && e.to_string().contains("40 values"),
            "{e}"
        );
        let e = PackedWeight::from_blocks(&k, ty, &want[1..], a_out + b_out, in_dim).unwrap_err();
        assert!(e.to_string().contains(&format!("{} bytes", want.len() - 1)), "{e}");
    }
}

#[test]
fn grouped_blocks_round_trip_and_edge_shapes() {
    // Output rows around the group of 16 (1, 7, 17, 63, 65, 1031), activation rows 1 to 5 (the tiles of 4 and
    // their remainders), in_dim one block and SmolLM2's 576; every ISA and dot-product variant against the
    // reference within the derived bound and bit for bit equal to each other, and the grouped bytes back to
    // ggml's, bit for bit, on every ISA (the Q8_0 offset of AVX-512's groups included).
    for ty in TYPES32 {
        for &(out_dim, in_dim) in &[(1usize, 32usize), (7, 576), (17, 64), (63, 32), (65, 576), (1031, 96)] {
            let seed = (out_dim * 31 + in_dim) as u64;
            let scales = rand_vec(seed, 2 * out_dim * in_dim / QK, 1.0);
            let wb = block_matrix(ty, seed, out_dim, in_dim, |i| scales[i] * 0.05);
            let nb = in_dim / QK;
            let bb = ty.block_bytes();
            // Each output is one f32 lane through the same operations on every ISA: the same bits everywhere.
            let mut first: std::collections::HashMap<usize, Vec<f32>> = Default::default();
            for k in all_kernels("grouped_blocks_round_trip_and_edge_shapes") {
                let w = PackedWeight::from_blocks(&k, ty, &wb, out_dim, in_dim).unwrap();
                let mut blk = [0u8; kernels::MAX_BLOCK_BYTES];
                for o in 0..out_dim {
                    for b in 0..nb {
                        assert_eq!(w.block_bytes_at(o, b, &mut blk), Some(ty));
                        let at = (o * nb + b) * bb;
                        assert_eq!(&blk[..bb], &wb[at..at + bb], "{ty} {}: row {o} block {b}", k.isa());
                    }
                }
                for rows in [1usize, 2, 4, 5] {
                    let xf = act_rows(seed + rows as u64, rows, in_dim);
                    let x = reference::quantize_blocks(&xf, in_dim);
                    let bias = rand_vec(seed + 2, out_dim, 1.0);
                    let mut want = vec![0.0f32; rows * out_dim];
                    reference::linear_blocks(&x, ty, &wb, out_dim, Some(&bias), &mut want);
                    let bound = reference::linear_blocks_bound(&x, ty, &wb, out_dim, Some(&bias));
                    let got = run(k, &x, &w, Some(&bias));
                    let what = format!(
                        "{ty} {} {:?} out {out_dim} in {in_dim} rows {rows}",
                        k.isa(),
                        k.i8_dot()
                    );
                    check_within(&what, &got, &want, &bound);
                    let f = first.entry(rows).or_insert_with(|| got.clone());
                    assert!(
                        f.iter().zip(&got).all(|(&a, &b)| same(a, b)),
                        "{what}: differs from the first ISA's"
                    );
                    // One row's result does not depend on the rows beside it (tiles of 1 to 4 rows).
                    let x0 = reference::quantize_blocks(&xf[..in_dim], in_dim);
                    let one = run(k, &x0, &w, Some(&bias));
                    assert!(
                        one.iter().zip(&got).all(|(&a, &b)| same(a, b)),
                        "{what}: row 0 alone differs"
                    );
                }
            }
        }
    }
}
