//! GGUF K-quants (Q4_K, Q5_K, Q6_K) read in place: dequantization bit for bit against the `gguf` package, the Q4_K
//! quantizer against llama.cpp's `quantize_row_q4_K_ref`, the Q8_K activations against ggml's
//! `quantize_row_q8_K_ref` (fixtures by tools/scripts/gguf_block_refs.py), the K-quant GEMV/GEMM on every ISA this
//! host has (each int8 dot-product variant) bit for bit against `kernels::reference::linear_kblocks`, and the
//! shapes a file may lie about refused with errors.

use kernels::{
    reference, ActBlocks, BlockError, BlockType, Kernels, Layout, PackError, PackedWeight, Part, QuantizedBlocks,
    SharedOut, Weight, WeightData, QK_K,
};

mod common;

use common::{block_fixture, dot_variants, f32s, rand_vec};

const KTYPES: [BlockType; 3] = [BlockType::Q4_K, BlockType::Q5_K, BlockType::Q6_K];

fn fixture(name: &str) -> Vec<u8> {
    block_fixture(name)
}

/// Bitwise equal, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn kquant_dequantize_matches_the_gguf_package() {
    for ty in KTYPES {
        for set in ["raw", "quant"] {
            let name = ty.name().to_lowercase();
            let bytes = fixture(&format!("{name}.{set}"));
            let want = f32s(&fixture(&format!("{name}.{set}.f32")));
            let mut got = vec![0.0f32; want.len()];
            ty.dequantize(&bytes, &mut got).unwrap();
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(same(g, w), "{ty} {set} value {i}: {g} vs gguf {w}");
            }
        }
    }
}

#[test]
fn q4_k_quantize_matches_llama_cpp() {
    let x = f32s(&fixture("input_k.f32"));
    let want = fixture("q4_k.quant");
    let mut got = vec![0u8; want.len()];
    BlockType::Q4_K.quantize(&x, &mut got).unwrap();
    for (b, (g, w)) in got.chunks(144).zip(want.chunks(144)).enumerate() {
        assert_eq!(
            g, w,
            "Q4_K super-block {b}: qkv's bytes vs llama.cpp's quantize_row_q4_K_ref"
        );
    }
}

#[test]
fn q8_k_activations_match_ggml() {
    let x = f32s(&fixture("input_k.f32"));
    let want = fixture("q8_k.quant"); // per super-block: d f32, qs[256] i8, bsums[16] i16
    let n = x.len() / QK_K;
    assert_eq!(want.len(), n * 292);
    // Q8_K quantization is one plain-Rust path for every ISA (run here on each all the same).
    for k in kernels::testing::kernels("q8_k_activations_match_ggml") {
        let mut xq = QuantizedBlocks::default();
        // One row of all the super-blocks, and 8 rows of 2 (rows do not interact).
        for rows in [1usize, n] {
            k.quantize_blocks_for(BlockType::Q4_K, &x, x.len() / rows, &mut xq);
            assert_eq!(xq.acts(), ActBlocks::Q8K);
            for b in 0..n {
                let (r, j) = (b / (n / rows), b % (n / rows));
                let blk = &want[b * 292..(b + 1) * 292];
                let d = f32::from_le_bytes(blk[..4].try_into().unwrap());
                assert!(
                    same(xq.scales(r)[j], d),
                    "super-block {b}: d {} vs ggml {d}",
                    xq.scales(r)[j]
                );
                let q = &xq.row(r)[j * QK_K..(j + 1) * QK_K];
                assert!(
                    q.iter().zip(&blk[4..260]).all(|(&a, &w)| a == w as i8),
                    "super-block {b}: values"
                );
                for (g, s) in blk[260..].chunks_exact(2).enumerate() {
                    let s = i16::from_le_bytes([s[0], s[1]]) as i32;
                    assert_eq!(xq.bsums(r)[j * 16 + g], s, "super-block {b}: sum {g}");
                }
            }
        }
    }
}

/// Random K-quant bytes with finite f16 scales (`d`, `dmin` of about `scale`).
fn kmatrix(ty: BlockType, seed: u64, out_dim: usize, in_dim: usize, scale: f32) -> Vec<u8> {
    let n = ty.matrix_bytes(out_dim, in_dim).unwrap();
    let noise = rand_vec(seed, n, 1.0);
    let mut w: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
    let scales = rand_vec(seed + 1, 2 * n / ty.block_bytes(), scale);
    let f16 = |v: f32| kernels::f16::from_f32(v).to_bits().to_le_bytes();
    for (b, blk) in w.chunks_exact_mut(ty.block_bytes()).enumerate() {
        if ty == BlockType::Q6_K {
            blk[208..210].copy_from_slice(&f16(scales[2 * b]));
        } else {
            blk[0..2].copy_from_slice(&f16(scales[2 * b]));
            blk[2..4].copy_from_slice(&f16(scales[2 * b + 1]));
        }
    }
    w
}

/// Every dot-product variant of every ISA of this host.
fn all_kernels(test: &str) -> Vec<Kernels> {
    kernels::testing::kernels(test)
        .into_iter()
        .flat_map(|k| dot_variants(test, k))
        .collect()
}

#[test]
fn kquant_products_equal_the_reference_on_every_isa() {
    // Every ISA does the integer sums exactly and the same f32 operations in the same order (see kblocks.rs):
    // bit for bit equal to the reference, also when split in parts.
    for ty in KTYPES {
        for &(out_dim, in_dim) in &[(1usize, 256usize), (7, 512), (17, 256), (40, 1024)] {
            let seed = (out_dim * 131 + in_dim) as u64 + ty.ggml_type() as u64;
            let wb = kmatrix(ty, seed, out_dim, in_dim, 0.01);
            let bias = rand_vec(seed + 3, out_dim, 1.0);
            for k in all_kernels("kquant_products_equal_the_reference_on_every_isa") {
                let w = PackedWeight::from_blocks(&k, ty, &wb, out_dim, in_dim).unwrap();
                assert_eq!(w.block_type(), Some(ty));
                for rows in [1usize, 2, 5] {
                    let mut xf = rand_vec(seed + rows as u64, rows * in_dim, 2.0);
                    xf[3] = 0.0;
                    let mut xq = QuantizedBlocks::default();
                    k.quantize_blocks_for(ty, &xf, in_dim, &mut xq);
                    let mut want = vec![0.0f32; rows * out_dim];
                    reference::linear_kblocks(&xq, ty, &wb, out_dim, Some(&bias), &mut want);
                    let mut got = vec![f32::NAN; rows * out_dim];
                    k.linear_blocks(&xq, &w, Some(&bias), &mut got);
                    let what = format!(
                        "{ty} {} {:?} out {out_dim} in {in_dim} rows {rows}",
                        k.isa(),
                        k.i8_dot()
                    );
                    for i in 0..got.len() {
                        assert!(
                            same(got[i], want[i]),
                            "{what}: y[{i}] {} vs reference {}",
                            got[i],
                            want[i]
                        );
                    }
                    let mut yp = vec![f32::NAN; got.len()];
                    let shared = SharedOut::new(&mut yp);
                    for index in 0..3 {
                        k.linear_blocks_part(&xq, &w, Some(&bias), &shared, Part { index, count: 3 });
                    }
                    assert!(got.iter().zip(&yp).all(|(&a, &b)| same(a, b)), "{what}: parts differ");
                    // linear_packed quantizes the activations itself, as Q8_K for these weights.
                    let mut y2 = vec![f32::NAN; got.len()];
                    k.linear_packed(&xf, rows, &w, Some(&bias), &mut y2);
                    assert!(
                        got.iter().zip(&y2).all(|(&a, &b)| same(a, b)),
                        "{what}: linear_packed differs"
                    );
                }
            }
        }
    }
}

#[test]
fn kquant_reference_is_the_dequantized_product() {
    // The formula equals Σ_j w_j · x_j of the exact weights `w = dl·q - ml` and the Q8_K activations. Against that
    // sum in f64 with the f32-dequantized weights, the difference is bounded by
    // - the formula's f32 roundings: per super-block dw·dx, the i32 -> f32 conversion and the product (3), the
    //   additions of the super-blocks' two terms in order (2·nb): γ_(3 + 2·nb) · T, with
    //   T = Σ_B |dw·dx·Σ sc·q·qx| + |dmin·dx·Σ m·qx| <= Σ_j (|dl·q| + |ml|)·|x_j| <= Σ_j (|w_j| + 2|ml_j|)·|x_j|;
    // - the dequantization's roundings: d·sc, dmin·m and dl·q are exact in f32 (11 + 6 + 6 bits; Q6_K's dl·(q - 32)
    //   rounds once), then one subtraction: |Δw_j| <= u·|w_j| (Q6_K: ml = 0 and T <= Σ|w|·|x|·(1 + u)).
    // `ml_j` is read by dequantizing the block with every q = 0 (Q4_K/Q5_K: then w_j = -ml_j exactly).
    let k = Kernels::scalar();
    let u = f32::EPSILON as f64 / 2.0;
    for ty in KTYPES {
        let (out_dim, in_dim) = (9usize, 768usize);
        let wb = kmatrix(ty, 77 + ty.ggml_type() as u64, out_dim, in_dim, 0.01);
        let xf = rand_vec(5, in_dim, 3.0);
        let mut xq = QuantizedBlocks::default();
        k.quantize_blocks_for(ty, &xf, in_dim, &mut xq);
        let mut y = vec![0.0f32; out_dim];
        reference::linear_kblocks(&xq, ty, &wb, out_dim, None, &mut y);
        let mut wd = vec![0.0f32; out_dim * in_dim];
        ty.dequantize(&wb, &mut wd).unwrap();
        let mut mins = vec![0.0f32; out_dim * in_dim];
        if ty != BlockType::Q6_K {
            let mut zq = wb.clone();
            for blk in zq.chunks_exact_mut(ty.block_bytes()) {
                blk[16..].fill(0);
            }
            ty.dequantize(&zq, &mut mins).unwrap();
        }
        let nb = in_dim / QK_K;
        let xd: Vec<f64> = (0..in_dim)
            .map(|j| xq.row(0)[j] as f64 * xq.scales(0)[j / QK_K] as f64)
            .collect();
        for o in 0..out_dim {
            let (row, ml) = (&wd[o * in_dim..(o + 1) * in_dim], &mins[o * in_dim..(o + 1) * in_dim]);
            let exact: f64 = row.iter().zip(&xd).map(|(&w, &x)| w as f64 * x).sum();
            let t: f64 = (0..in_dim)
                .map(|j| (row[j].abs() as f64 + 2.0 * ml[j].abs() as f64) * xd[j].abs() * (1.0 + u))
                .sum();
            let deq: f64 = (0..in_dim)
                .map(|j| u * (row[j] as f64 * xd[j]).abs() * (1.0 + 2.0 * u))
                .sum();
            let bound = reference::gamma_f32(3 + 2 * nb) * t + deq;
            assert!(
                (y[o] as f64 - exact).abs() <= bound,
                "{ty} out {o}: {} vs dequantized {exact} (bound {bound})",
                y[o]
            );
        }
    }
}

#[test]
fn kquant_shapes_are_checked() {
    let k = Kernels::scalar();
    assert_eq!(BlockType::from_ggml_type(12), Some(BlockType::Q4_K));
    assert_eq!(BlockType::from_ggml_type(14), Some(BlockType::Q6_K));
    assert_eq!(BlockType::from_ggml_type(8), Some(BlockType::Q8_0));
    assert_eq!(BlockType::from_ggml_type(10), None); // Q2_K: not read by the kernels
    for ty in BlockType::ALL {
        assert_eq!(BlockType::from_ggml_type(ty.ggml_type()), Some(ty));
    }
    for ty in KTYPES {
        assert_eq!(ty.block_size(), 256);
        // SmolLM2's 576-wide rows are not whole super-blocks (llama.cpp falls back to Q5_0/Q8_0 there).
        let e = PackedWeight::from_blocks(&k, ty, &vec![0u8; 10 * ty.block_bytes()], 4, 576).unwrap_err();
        assert!(
            matches!(
                e,
                PackError::Blocks(BlockError::Row {
                    in_dim: 576,
                    block: 256,
                    ..
                })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("576") && e.to_string().contains("256"), "{e}");
        // A lying byte count: one byte short, one byte over.
        for n in [2 * ty.block_bytes() - 1, 2 * ty.block_bytes() + 1] {
            let e = PackedWeight::from_blocks(&k, ty, &vec![0u8; n], 2, 256).unwrap_err();
            assert!(
                matches!(e, PackError::Blocks(BlockError::Size { found, .. }) if found == n),
                "{e}"
            );
        }
        // Overflowing shapes are an error, not a wrap.
        assert!(ty.matrix_bytes(usize::MAX / 8, 1 << 20).is_err());
    }
    // Q4_K can be made from f32 (whole super-blocks only); Q5_K and Q6_K are read, not made.
    let data = rand_vec(1, 3 * 512, 1.0);
    let w = Weight {
        data: WeightData::F32(&data),
        out_dim: 3,
        in_dim: 512,
        layout: Layout::OutIn,
    };
    let q = PackedWeight::quantize_blocks(&k, &[w], BlockType::Q4_K).unwrap();
    assert_eq!(q.block_type(), Some(BlockType::Q4_K));
    let mut bytes = vec![0u8; BlockType::Q4_K.matrix_bytes(3, 512).unwrap()];
    BlockType::Q4_K.quantize(&data, &mut bytes).unwrap();
    for o in 0..3 {
        for i in [0, 255, 256, 511] {
            let mut deq = vec![0.0f32; 512];
            BlockType::Q4_K
                .dequantize(&bytes[o * 288..(o + 1) * 288], &mut deq)
                .unwrap();
            assert!(same(q.at(o, i), deq[i]), "quantize_blocks Q4_K row {o} value {i}");
        }
    }
    for ty in [BlockType::Q5_K, BlockType::Q6_K] {
        let e = PackedWeight::quantize_blocks(&k, &[w], ty).unwrap_err();
        assert!(matches!(e, PackError::Blocks(BlockError::NoQuantizer { .. })), "{e}");
    }
    let odd_data = vec![0.5f32; 2 * 576];
    let odd = Weight {
        data: WeightData::F32(&odd_data),
        out_dim: 2,
        in_dim: 576,
        layout: Layout::OutIn,
    };
    assert!(PackedWeight::quantize_blocks(&k, &[odd], BlockType::Q4_K).is_err());
}
