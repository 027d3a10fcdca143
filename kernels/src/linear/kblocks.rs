//! GGUF's K-quants (Q4_K, Q5_K, Q6_K: 256-value super-blocks) read in place, against ggml's Q8_K activations.
//!
//! ```text
//! type  bytes  layout (little-endian)                                             value j (0 <= j < 256)
//! Q4_K  144    d f16 @0 | dmin f16 @2 | scales[12] @4 | qs[128] @16               d·sc[s]·q4(j) - dmin·m[s]
//! Q5_K  176    d f16 @0 | dmin f16 @2 | scales[12] @4 | qh[32] @16 | qs[128] @48  d·sc[s]·q5(j) - dmin·m[s]
//! Q6_K  210    ql[128] @0 | qh[64] @128 | scales[16] i8 @192 | d f16 @208         d·sc[j/16]·(q6(j) - 32)
//! s = j / 32; (sc[s], m[s]) 6 bits each from scales[12] (ggml's get_scale_min_k4, [`scale_min`]);
//! q4(j) = qs[32·(j/64) + j%32] >> (4·((j/32)&1)) & 15; q5(j) = q4(j) | bit (j/32) of qh[j%32] << 4;
//! q6(j) = ql[64·h + 32·(t&1) + l] >> (4·(t>>1)) & 15 | (qh[32·h + l] >> 2t & 3) << 4, (h, t, l) = (j/128, j/32%4, j%32)
//! ```
//!
//! Activations are ggml's Q8_K ([`QuantizedBlocks`] with [`ActBlocks::Q8K`]): per 256 values an f32 `dx`, 256
//! int8 and the 16 sums of 16. Each output is then, as llama.cpp's `ggml_vec_dot_q4_K_q8_K` (and q5_K, q6_K)
//! computes it up to the order of its f32 additions:
//!
//! ```text
//! Q4_K/Q5_K: y = Σ_B  (dw·dx)·f32(Σ_s sc[s]·Σ_{j in s} q(j)·qx(j))  -  (dmin·dx)·f32(Σ_s m[s]·(bsum[2s] + bsum[2s+1]))
//! Q6_K:      y = Σ_B  (dw·dx)·f32(Σ_g sc[g]·Σ_{j in g} q6(j)·qx(j) - 32·Σ_g sc[g]·bsum[g])
//! ```
//!
//! the integer sums exact (i32: at most 256·63·127·128 < 2^31), the f32 operations per super-block in that order
//! (products rounded, then added; no FMA), super-blocks added in order: the same bits on every ISA
//! ([`crate::reference::linear_kblocks`] is the specification, tested bit for bit).
//!
//! The GEMV reads ggml's bytes row by row ([`BlockLayout::Rows`](super::BlockLayout)); per 32 values the ISA's
//! [`DotK`] decodes the 4-6 bit values from the packed bytes in registers and makes the scaled products
//! (AVX2/AVX-512 `vpmaddubsw` + `vpmaddwd` by the sub-block scales, with VNNI `vpdpwssd`; NEON `smull` +
//! `smlal`, with `dotprod` `sdot`). Rows are not interleaved for K-quants (not done yet).

use std::ops::Range;

use super::blocks::{f16_bits_to_f32, ActBlocks, BJob, BlockType, QuantizedBlocks};
use crate::simd::DotK;

/// Values per K-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// Sub-block `s`'s (scale, min) of a Q4_K / Q5_K super-block, 6 bits each, from its 12 packed bytes.
#[inline(always)]
pub(crate) fn scale_min(scales: &[u8], s: usize) -> (u8, u8) {
    if s < 4 {
        (scales[s] & 63, scales[s + 4] & 63)
    } else {
        (
            (scales[s + 4] & 15) | ((scales[s - 4] >> 6) << 4),
            (scales[s + 4] >> 4) | ((scales[s] >> 6) << 4),
        )
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Value `j` of a super-block in `0 ..= 15` (Q4_K), `0 ..= 31` (Q5_K), `0 ..= 63` (Q6_K, before `- 32`).
pub(crate) fn value(ty: BlockType, b: &[u8], j: usize) -> u8 {
    match ty {
        BlockType::Q4_K | BlockType::Q5_K => {
            let qs = &b[b.len() - 128..];
            let q4 = (qs[32 * (j / 64) + j % 32] >> (4 * ((j / 32) & 1))) & 15;
            if ty == BlockType::Q5_K {
                q4 | (((b[16 + j % 32] >> (j / 32)) & 1) << 4)
            } else {
                q4
            }
        }
        BlockType::Q6_K => {
            let (h, t, l) = (j / 128, (j / 32) % 4, j % 32);
            let lo = (b[64 * h + 32 * (t & 1) + l] >> (4 * (t >> 1))) & 15;
            let hi = (b[128 + 32 * h + l] >> (2 * t)) & 3;
            lo | (hi << 4)
        }
        _ => unreachable!("{ty} is not a K-quant"),
    }
}

/// Dequantize one super-block as the `gguf` package does (f32: `(d·sc)·q - dmin·m`; Q6_K `(d·sc)·(q - 32)`).
pub(crate) fn dequantize(ty: BlockType, b: &[u8], out: &mut [f32]) {
    match ty {
        BlockType::Q4_K | BlockType::Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            for (s, sub) in out.chunks_exact_mut(32).enumerate() {
                let (sc, m) = scale_min(&b[4..16], s);
                let (dl, ml) = (d * sc as f32, dmin * m as f32);
                for (l, o) in sub.iter_mut().enumerate() {
                    *o = dl * value(ty, b, 32 * s + l) as f32 - ml;
                }
            }
        }
        BlockType::Q6_K => {
            let d = f16_at(b, 208);
            for (g, sub) in out.chunks_exact_mut(16).enumerate() {
                let dl = d * (b[192 + g] as i8) as f32;
                for (l, o) in sub.iter_mut().enumerate() {
                    *o = dl * (value(ty, b, 16 * g + l) as i32 - 32) as f32;
                }
            }
        }
        _ => unreachable!("{ty} is not a K-quant"),
    }
}

/// ggml's `nearest_int` (round half to even, for `|v| <= 2^22`).
#[inline(always)]
fn nearest(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// One super-block of f32 quantized to Q4_K as llama.cpp's `quantize_row_q4_K_ref` (no importance weights):
/// per sub-block of 32, weights `w = sqrt(Σx²/32) + |x|`, a scale and min by [`fit_scale_min`] (ggml's
/// `make_qkx2_quants(32, 15, .., rmin -1, rdelta 0.1, 20 steps)`); the 8 scales and mins quantized to 6 bits
/// against their largest (`d = max_scale / 63`, `dmin = max_min / 63` as f16), then each value
/// `q = clamp(round((x + dmin·m) / (d·sc)), 0, 15)`.
pub(crate) fn quantize_q4k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    for s in 0..8 {
        let xs = &x[32 * s..32 * (s + 1)];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av = (sum_x2 / 32.0).sqrt();
        let w: [f32; 32] = std::array::from_fn(|l| av + xs[l].abs());
        (scales[s], mins[s]) = fit_scale_min(xs, &w, &mut levels[32 * s..32 * (s + 1)]);
    }
    let max_scale = scales.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut out[4..16];
    sc.fill(0);
    for s in 0..8 {
        // ggml stores `nearest_int` in a uint8_t, then clamps to 63.
        let ls = (nearest(inv_scale * scales[s]) as u8).min(63);
        let lm = (nearest(inv_min * mins[s]) as u8).min(63);
        if s < 4 {
            sc[s] = ls;
            sc[s + 4] = lm;
        } else {
            sc[s + 4] = (ls & 15) | ((lm & 15) << 4);
            sc[s - 4] |= (ls >> 4) << 6;
            sc[s] |= (lm >> 4) << 6;
        }
    }
    let f16 = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    out[0..2].copy_from_slice(&f16(max_scale / 63.0));
    out[2..4].copy_from_slice(&f16(max_min / 63.0));
    let (d, dmin) = (f16_at(out, 0), f16_at(out, 2));
    for s in 0..8 {
        let (sc, m) = scale_min(&out[4..16], s);
        let dl = d * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for l in 0..32 {
            levels[32 * s + l] = nearest((x[32 * s + l] + dm) / dl).clamp(0, 15) as u8;
        }
    }
    for c in 0..4 {
        for l in 0..32 {
            out[16 + 32 * c + l] = levels[64 * c + l] | (levels[64 * c + 32 + l] << 4);
        }
    }
}

/// The scale and (negated) min of 32 values on 16 levels, with weights `w` (llama.cpp's `make_qkx2_quants`
/// semantics): start from the range `[min(x, 0), max x]`, then try 21 grids `(nmax - 1 + 0.1·k) / (max - min)`,
/// each with the weighted least-squares scale and min of its levels (the min clamped to ≤ 0), keeping the
/// smallest weighted squared error. Returns `(scale, -min)` and the levels in `levels`.
fn fit_scale_min(x: &[f32], w: &[f32; 32], levels: &mut [u8]) -> (f32, f32) {
    const NMAX: f32 = 15.0;
    let (mut min, mut max) = (x[0], x[0]);
    let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
    for i in 1..32 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = NMAX / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..32 {
        let l = nearest(iscale * (x[i] - min)).clamp(0, 15);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best += w[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for step in 0..=20 {
        iscale = (-1.0 + 0.1 * step as f32 + NMAX) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..32 {
            let l = nearest(iscale * (x[i] - min)).clamp(0, 15);
            aux[i] = l as u8;
            let lf = l as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0.0f32;
            for i in 0..32 {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if err < best {
                levels.copy_from_slice(&aux);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantize `x` (`[rows, in_dim]`, shaped into `out` already as Q8_K) as ggml's `quantize_row_q8_K_ref`, bit for
/// bit (see [`QuantizedBlocks`]); a super-block holding a NaN or an infinity gets `dx = NaN` and zero values (its
/// outputs are NaN, as with f32 arithmetic), an all-zero one `dx = 0`.
pub(crate) fn quantize_q8k(x: &[f32], out: &mut QuantizedBlocks) {
    debug_assert_eq!(out.acts, ActBlocks::Q8K);
    let n = out.rows * out.in_dim;
    for (b, xb) in x[..n].chunks_exact(QK_K).enumerate() {
        let q = &mut out.q[b * QK_K..(b + 1) * QK_K];
        let sums = &mut out.qs[b * 16..(b + 1) * 16];
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        let mut finite = true;
        for &v in xb {
            finite &= v.is_finite();
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if !finite || amax == 0.0 {
            out.d[b] = if finite { 0.0 } else { f32::NAN };
            q.fill(0);
            sums.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (o, &v) in q.iter_mut().zip(xb) {
            *o = nearest(iscale * v).min(127) as i8;
        }
        for (s, g) in sums.iter_mut().zip(q.chunks_exact(16)) {
            *s = g.iter().map(|&v| v as i32).sum();
        }
        out.d[b] = 1.0 / iscale;
    }
}

/// One K-quant type's decoding for [`DotK`].
pub(crate) trait KKind {
    const TY: BlockType;
    /// The 32 values `32c .. 32c + 32` (`c < 8`) of the super-block at `p` (unsigned; Q6_K before `- 32`).
    ///
    /// # Safety
    /// `p .. p + block_bytes` readable.
    unsafe fn chunk<D: DotK>(d: D, p: *const u8, c: usize) -> D::Q;
    /// `(dw, dmin, sc, m)`: the scale of each 16 values and what multiplies each 16-value sum of activations
    /// (Q4_K/Q5_K: the min; Q6_K: `32 · sc`, subtracted in integers).
    fn header(b: &[u8]) -> (f32, f32, [i32; 16], [i32; 16]);
}

#[allow(non_camel_case_types)]
pub(crate) struct KQ4_K;
#[allow(non_camel_case_types)]
pub(crate) struct KQ5_K;
#[allow(non_camel_case_types)]
pub(crate) struct KQ6_K;

fn header_45(b: &[u8]) -> (f32, f32, [i32; 16], [i32; 16]) {
    let (mut sc, mut m) = ([0i32; 16], [0i32; 16]);
    for s in 0..8 {
        let (a, c) = scale_min(&b[4..16], s);
        (sc[2 * s], sc[2 * s + 1]) = (a as i32, a as i32);
        (m[2 * s], m[2 * s + 1]) = (c as i32, c as i32);
    }
    (f16_at(b, 0), f16_at(b, 2), sc, m)
}

impl KKind for KQ4_K {
    const TY: BlockType = BlockType::Q4_K;
    #[inline(always)]
    unsafe fn chunk<D: DotK>(d: D, p: *const u8, c: usize) -> D::Q {
        // SAFETY: qs (128 bytes at 16) within the block (caller).
        unsafe { d.nibbles(p.add(16 + 32 * (c / 2)), 4 * (c as u32 & 1)) }
    }
    fn header(b: &[u8]) -> (f32, f32, [i32; 16], [i32; 16]) {
        header_45(b)
    }
}

impl KKind for KQ5_K {
    const TY: BlockType = BlockType::Q5_K;
    #[inline(always)]
    unsafe fn chunk<D: DotK>(d: D, p: *const u8, c: usize) -> D::Q {
        // SAFETY: qh (32 bytes at 16) and qs (128 at 48) within the block (caller).
        unsafe {
            let q = d.nibbles(p.add(48 + 32 * (c / 2)), 4 * (c as u32 & 1));
            d.or_high(q, p.add(16), c as u32, 1)
        }
    }
    fn header(b: &[u8]) -> (f32, f32, [i32; 16], [i32; 16]) {
        header_45(b)
    }
}

impl KKind for KQ6_K {
    const TY: BlockType = BlockType::Q6_K;
    #[inline(always)]
    unsafe fn chunk<D: DotK>(d: D, p: *const u8, c: usize) -> D::Q {
        let (h, t) = (c / 4, c % 4);
        // SAFETY: ql (128 bytes at 0) and qh (64 at 128) within the block (caller).
        unsafe {
            let q = d.nibbles(p.add(64 * h + 32 * (t & 1)), 4 * (t as u32 >> 1));
            d.or_high(q, p.add(128 + 32 * h), 2 * t as u32, 3)
        }
    }
    fn header(b: &[u8]) -> (f32, f32, [i32; 16], [i32; 16]) {
        let sc: [i32; 16] = std::array::from_fn(|g| b[192 + g] as i8 as i32);
        let d = f16_at(b, 208);
        (d, d, sc, sc.map(|v| 32 * v))
    }
}

/// Activation rows per pass over a weight row (each super-block's values decoded once for all of them).
const ROWS: usize = 4;

/// One super-block's contribution, added to `y` (see the module docs; the same f32 operations on every ISA).
#[inline(always)]
pub(crate) fn fold(ty: BlockType, y: f32, dw: f32, dmin: f32, dx: f32, sumi: i32, summ: i32) -> f32 {
    if ty == BlockType::Q6_K {
        y + (dw * dx) * (sumi - summ) as f32
    } else {
        y + (dw * dx) * sumi as f32 - (dmin * dx) * summ as f32
    }
}

/// Output rows `outs` of `job` (one share) on the K-quant type of `K` (weights in ggml's row order).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best with indices
pub(crate) fn run_share<D: DotK, K: KKind>(d: D, job: &BJob<'_>, outs: Range<usize>) {
    let x = job.x;
    let in_dim = x.in_dim;
    let nb = in_dim / QK_K;
    let bb = K::TY.block_bytes();
    let rb = nb * bb;
    assert_eq!(x.acts, ActBlocks::Q8K, "{} weights need Q8_K activations", K::TY);
    assert!(outs.end <= job.out_dim && job.w.len() >= job.out_dim * rb);
    assert!(x.q.len() >= x.rows * in_dim && x.d.len() >= x.rows * nb && x.qs.len() >= x.rows * nb * 16);
    assert!(job.bias.is_none_or(|b| b.len() >= job.out_dim));
    let mut r0 = 0;
    while r0 < x.rows {
        let h = ROWS.min(x.rows - r0);
        for o in outs.clone() {
            let wrow = &job.w[o * rb..(o + 1) * rb];
            let mut y = [0.0f32; ROWS];
            for b in 0..nb {
                let blk = &wrow[b * bb..(b + 1) * bb];
                let (dw, dmin, sc, m) = K::header(blk);
                let mut acc = [d.izero(); ROWS];
                for c in 0..8 {
                    // SAFETY: `blk` is one whole super-block.
                    let w = unsafe { K::chunk(d, blk.as_ptr(), c) };
                    for r in 0..h {
                        // SAFETY: row r0 + r < rows, values b·256 + 32c .. + 32 < in_dim (asserted above).
                        let xq = unsafe { d.load_q8(x.q.as_ptr().add((r0 + r) * in_dim + b * QK_K + 32 * c)) };
                        acc[r] = d.idot(acc[r], w, xq, sc[2 * c], sc[2 * c + 1]);
                    }
                }
                for r in 0..h {
                    let row = r0 + r;
                    let bs = &x.qs[(row * nb + b) * 16..(row * nb + b + 1) * 16];
                    let summ: i32 = m.iter().zip(bs).map(|(&m, &s)| m * s).sum();
                    y[r] = fold(K::TY, y[r], dw, dmin, x.d[row * nb + b], d.ireduce(acc[r]), summ);
                }
            }
            for r in 0..h {
                let mut v = y[r];
                if let Some(bias) = job.bias {
                    v += bias[o];
                }
                // SAFETY: y is [rows, out_dim] (the caller's check) and output o of every row is this share's.
                unsafe { *job.y.0.add((r0 + r) * job.out_dim + o) = v };
            }
        }
        r0 += h;
    }
}
