//! Naive scalar references: the specification of every kernel, written for clarity.
//! Same signatures and contracts as the methods of [`crate::Kernels`].

use crate::types::*;
use crate::I8Range;

/// `y[rows, out] = x[rows, in] · Wᵀ + bias`.
pub fn linear(x: &[f32], rows: usize, w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), rows * w.in_dim, "linear: x is not [rows, in_dim]");
    assert_eq!(y.len(), rows * w.out_dim, "linear: y is not [rows, out_dim]");
    if let Some(b) = bias {
        assert_eq!(b.len(), w.out_dim, "linear: bias is not [out_dim]");
    }
    for r in 0..rows {
        let xr = &x[r * w.in_dim..(r + 1) * w.in_dim];
        for o in 0..w.out_dim {
            let dot = match w.data {
                // int8: Σ q·x, then the row's scale (OutIn).
                WeightData::I8 { q, scales } => {
                    assert_eq!(w.layout, Layout::OutIn, "linear: int8 weights must be OutIn");
                    let qr = &q[o * w.in_dim..(o + 1) * w.in_dim];
                    let acc: f64 = qr.iter().zip(xr).map(|(&q, &x)| q as f64 * x as f64).sum();
                    acc * scales[o] as f64
                }
                _ => (0..w.in_dim).map(|i| w.at(o, i) as f64 * xr[i] as f64).sum(),
            };
            y[r * w.out_dim + o] = dot as f32 + bias.map_or(0.0, |b| b[o]);
        }
    }
}

/// Activations quantized per row (the contract of [`crate::Kernels::quantize_rows`]): `(values [rows, in_dim],
/// scales [rows])`. With `Q = range.max()`: scale `max|x| / Q`, values `round(x · (Q / max|x|))` (ties to even) in
/// `-Q ..= Q`; an all-zero row gets scale 0, a row with a NaN or an infinity scale NaN (values 0).
pub fn quantize_rows(x: &[f32], in_dim: usize, range: I8Range) -> (Vec<i8>, Vec<f32>) {
    let qmax = range.max();
    let rows = x.len().checked_div(in_dim).unwrap_or(0);
    let mut q = vec![0i8; rows * in_dim];
    let mut scales = vec![0.0f32; rows];
    for r in 0..rows {
        let xr = &x[r * in_dim..(r + 1) * in_dim];
        if !xr.iter().all(|v| v.is_finite()) {
            scales[r] = f32::NAN;
            continue;
        }
        let max = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if max == 0.0 {
            continue;
        }
        scales[r] = max / qmax;
        let inv = qmax / max;
        for (d, &v) in q[r * in_dim..(r + 1) * in_dim].iter_mut().zip(xr) {
            *d = (v * inv).round_ties_even().clamp(-qmax, qmax) as i8;
        }
    }
    (q, scales)
}

/// int8 x int8 `linear` (the contract of [`crate::Kernels::linear_q`]): `x` quantized as [`quantize_rows`] gives
/// (`q [rows, in_dim]`, `scales [rows]`), `w` int8 `OutIn`: `y[r, o] = f32(Σ_i q[r, i] · qw[o, i]) · (sx[r] · sw[o])
/// + bias[o]`, the sum exact (in i64), each product and sum in f32 in that order.
pub fn linear_q(q: &[i8], scales: &[f32], rows: usize, w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    let WeightData::I8 { q: qw, scales: sw } = w.data else {
        panic!("linear_q: the weight is not int8")
    };
    assert_eq!(w.layout, Layout::OutIn, "linear_q: int8 weights must be OutIn");
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    assert_eq!(q.len(), rows * in_dim, "linear_q: x is not [rows, in_dim]");
    assert_eq!(y.len(), rows * out_dim, "linear_q: y is not [rows, out_dim]");
    for r in 0..rows {
        let xr = &q[r * in_dim..(r + 1) * in_dim];
        for o in 0..out_dim {
            let wr = &qw[o * in_dim..(o + 1) * in_dim];
            let sum: i64 = xr.iter().zip(wr).map(|(&a, &b)| a as i64 * b as i64).sum();
            let v = sum as f32 * (scales[r] * sw[o]);
            y[r * out_dim + o] = v + bias.map_or(0.0, |b| b[o]);
        }
    }
}

/// Scaled-dot-product attention, materialising every score row.
pub fn attention(a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    attention_impl(a, q, k, v, out, None);
}

/// [`attention`] that also writes the softmax weights `probs` (`[batch, n_heads, q_len, kv_len]`): each visible
/// row sums to 1 (computed in f64, rounded once to f32), masked keys are exactly 0, and a row that sees no key
/// is all zeros. What a recording forward pass runs to show attention maps.
pub fn attention_probs(a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], probs: &mut [f32]) {
    assert_eq!(
        probs.len(),
        a.batch * a.n_heads * a.q_len * a.kv_len,
        "attention_probs: probs is not [batch, n_heads, q_len, kv_len]"
    );
    attention_impl(a, q, k, v, out, Some(probs));
}

fn attention_impl(a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], mut probs: Option<&mut [f32]>) {
    assert!(
        a.n_kv_heads > 0 && a.n_heads.is_multiple_of(a.n_kv_heads),
        "attention: n_heads must be a multiple of n_kv_heads"
    );
    if let Some(l) = a.key_lens {
        assert_eq!(l.len(), a.batch, "attention: key_lens is not [batch]");
    }
    let group = a.n_heads / a.n_kv_heads;
    let d = a.head_dim;
    let mut scores = vec![0.0f64; a.kv_len];
    for b in 0..a.batch {
        for h in 0..a.n_heads {
            let kh = h / group;
            for i in 0..a.q_len {
                let qo = a.q_strides.offset(b, i, h);
                let qv = &q[qo..qo + d];
                let mut max = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = f64::NEG_INFINITY;
                    if a.visible(b, i, j) {
                        let ko = a.kv_strides.offset(b, j, kh);
                        let dot: f64 = qv.iter().zip(&k[ko..ko + d]).map(|(&x, &y)| x as f64 * y as f64).sum();
                        *s = dot * a.scale as f64;
                        if let Some(pb) = a.position_bias {
                            *s += pb.get(h, a.mask.query_pos(i), j) as f64;
                        }
                        if let Some(cap) = a.softcap {
                            *s = cap as f64 * (*s / cap as f64).tanh();
                        }
                        max = max.max(*s);
                    }
                }
                let oo = a.out_strides.offset(b, i, h);
                let o = &mut out[oo..oo + d];
                o.fill(0.0);
                let row = probs.as_deref_mut().map(|p| {
                    let r0 = ((b * a.n_heads + h) * a.q_len + i) * a.kv_len;
                    let row = &mut p[r0..r0 + a.kv_len];
                    row.fill(0.0);
                    row
                });
                if max == f64::NEG_INFINITY {
                    continue; // no visible key: zeros
                }
                let mut acc = vec![0.0f64; d];
                let mut sum = 0.0f64;
                for (j, s) in scores.iter_mut().enumerate() {
                    if *s == f64::NEG_INFINITY {
                        continue;
                    }
                    let p = (*s - max).exp();
                    *s = p;
                    sum += p;
                    let vo = a.kv_strides.offset(b, j, kh);
                    for (c, &vv) in acc.iter_mut().zip(&v[vo..vo + d]) {
                        *c += p * vv as f64;
                    }
                }
                for (oc, c) in o.iter_mut().zip(acc) {
                    *oc = (c / sum) as f32;
                }
                if let Some(row) = row {
                    for (r, &s) in row.iter_mut().zip(&scores) {
                        if s != f64::NEG_INFINITY {
                            *r = (s / sum) as f32;
                        }
                    }
                }
            }
        }
    }
}

pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = gamma.len();
    assert!(
        n > 0 && x.len().is_multiple_of(n) && beta.len() == n && out.len() == x.len(),
        "layer_norm: bad shapes"
    );
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..n {
            or[i] = ((xr[i] as f64 - mean) * inv) as f32 * gamma[i] + beta[i];
        }
    }
}

pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    assert!(
        n > 0 && x.len().is_multiple_of(n) && out.len() == x.len(),
        "rms_norm: bad shapes"
    );
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ms = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..n {
            or[i] = (xr[i] as f64 * inv) as f32 * weight[i];
        }
    }
}

/// Softmax of one row in place. `-inf` entries get 0; an all-`-inf` row becomes zeros.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    for v in x.iter_mut() {
        *v = (((*v - max) as f64).exp() / sum) as f32;
    }
}

/// Log-softmax of one row in place: `(x - max) - ln Σ exp(x - max)`, the sum in f64 over the entries that are not
/// NaN (NaN entries stay NaN). A row with no value above `-inf` is left as it is.
pub fn log_softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let sum: f64 = x
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| ((v - max) as f64).exp())
        .sum();
    let lse = sum.ln();
    for v in x.iter_mut() {
        *v = ((*v - max) as f64 - lse) as f32;
    }
}

pub fn activation(act: Activation, x: &mut [f32]) {
    for v in x.iter_mut() {
        let t = *v as f64;
        *v = match act {
            Activation::Relu => t.max(0.0),
            Activation::Silu => t / (1.0 + (-t).exp()),
            Activation::GeluTanh => {
                0.5 * t * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (t + 0.044715 * t * t * t)).tanh())
            }
            Activation::GeluErf => 0.5 * t * (1.0 + erf(t / std::f64::consts::SQRT_2)),
        } as f32;
    }
}

/// `out = silu(gate) * up`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && out.len() == gate.len(), "swiglu: bad shapes");
    for i in 0..gate.len() {
        let g = gate[i] as f64;
        out[i] = (g / (1.0 + (-g).exp()) * up[i] as f64) as f32;
    }
}

pub fn add(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add: lengths differ");
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

pub fn rope(table: &RopeTable, layout: RopeLayout, x: &mut [f32], n_heads: usize, pos0: usize) {
    let d = table.head_dim;
    let half = d / 2;
    let row = n_heads * d;
    assert!(
        row > 0 && x.len().is_multiple_of(row),
        "rope: x is not [len, n_heads, head_dim]"
    );
    let len = x.len() / row;
    assert!(pos0 + len <= table.max_pos, "rope: position beyond the table");
    for t in 0..len {
        let p = pos0 + t;
        let (cos, sin) = (
            &table.cos[p * half..(p + 1) * half],
            &table.sin[p * half..(p + 1) * half],
        );
        for h in 0..n_heads {
            let head = &mut x[t * row + h * d..t * row + (h + 1) * d];
            for i in 0..half {
                let (a, b) = match layout {
                    RopeLayout::Half => (i, i + half),
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
}

pub fn embed(table: &Weight<'_>, ids: &[u32], scale: f32, out: &mut [f32]) {
    let dim = table.in_dim;
    assert_eq!(table.layout, Layout::OutIn, "embed: table must be [vocab, dim]");
    assert_eq!(out.len(), ids.len() * dim, "embed: out is not [ids, dim]");
    for (t, &id) in ids.iter().enumerate() {
        let id = id as usize;
        assert!(id < table.out_dim, "embed: id {id} out of range");
        for i in 0..dim {
            out[t * dim + i] = table.at(id, i) * scale;
        }
    }
}

pub fn argmax(x: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|b| v > x[b]) {
            best = Some(i);
        }
    }
    best
}

pub fn top_k(x: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = x
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Error function, |error| < 1.2e-7 (Numerical Recipes `erfc` Chebyshev fit), enough for f32 output.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - r
    } else {
        r - 1.0
    }
}

/// [`log_softmax`] of every row of `x` (rows of `n_cols`) in place.
pub fn log_softmax_rows(x: &mut [f32], n_cols: usize) {
    x.chunks_exact_mut(n_cols).for_each(log_softmax);
}

/// The `k` best `scores[r, t] + offsets[r]` (the f32 sum) over `[rows, n_cols]`, as `(r · n_cols + t, value)`,
/// best first, ties to the lower flat index, NaN skipped: a full sort.
pub fn top_k_rows(scores: &[f32], n_cols: usize, offsets: Option<&[f32]>, k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v + offsets.map_or(0.0, |o| o[i / n_cols])))
        .filter(|(_, v)| !v.is_nan())
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Q8 blocks of `x[rows, in_dim]` (the specification of [`crate::Kernels::quantize_blocks`], see
/// [`crate::QuantizedBlocks`]): per block of 32, `dx = max|x| / 127`, `qx = round_ties_even(x · (127 / max|x|))`,
/// `sx = dx · Σ qx`; an all-zero block 0, a block with a NaN or an infinity NaN scales.
pub fn quantize_blocks(x: &[f32], in_dim: usize) -> crate::QuantizedBlocks {
    use crate::QK;
    assert!(in_dim > 0 && in_dim.is_multiple_of(QK) && x.len().is_multiple_of(in_dim));
    let (mut q, mut d) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len() / QK));
    for b in x.chunks_exact(QK) {
        let max = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if b.iter().any(|v| !v.is_finite()) || max == 0.0 {
            d.push(if max == 0.0 && b.iter().all(|v| v.is_finite()) {
                0.0
            } else {
                f32::NAN
            });
            q.extend([0i8; QK]);
            continue;
        }
        d.push(max / 127.0);
        q.extend(b.iter().map(|&v| (v * (127.0 / max)).round_ties_even() as i8));
    }
    crate::QuantizedBlocks::from_parts(q, d, in_dim)
}

/// The integer dot product of every block of `x` row `r` with every block of weight row `o` of a GGUF block matrix
/// `w` (`[out_dim, in_dim]`): `(Σ qw · qx, dw, mw)` per block (`mw` 0 but for Q4_1; Q4_0's `qw` are `q4 - 8`).
fn block_terms(x: &crate::QuantizedBlocks, ty: crate::BlockType, w: &[u8], r: usize, o: usize) -> Vec<(i64, f32, f32)> {
    use crate::QK;
    let in_dim = x.in_dim();
    let bb = ty.block_bytes();
    let nb = in_dim / QK;
    let row = &w[o * nb * bb..(o + 1) * nb * bb];
    let xr = x.row(r);
    let f16 = |b: &[u8]| crate::f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    let q4 = |qs: &[u8], j: usize| if j < QK / 2 { qs[j] & 15 } else { qs[j - QK / 2] >> 4 } as i64;
    (0..nb)
        .map(|b| {
            let blk = &row[b * bb..(b + 1) * bb];
            let xq = &xr[b * QK..(b + 1) * QK];
            let (qw, mw): (Vec<i64>, f32) = match ty {
                crate::BlockType::Q8_0 => (blk[2..].iter().map(|&v| v as i8 as i64).collect(), 0.0),
                crate::BlockType::Q4_0 => ((0..QK).map(|j| q4(&blk[2..], j) - 8).collect(), 0.0),
                crate::BlockType::Q4_1 => ((0..QK).map(|j| q4(&blk[4..], j)).collect(), f16(&blk[2..])),
                other => panic!("block_terms: {other} is a K-quant (see linear_kblocks)"),
            };
            let sum = qw.iter().zip(xq).map(|(&a, &b)| a * b as i64).sum();
            (sum, f16(blk), mw)
        })
        .collect()
}

/// `y[rows, out] = x · Wᵀ + bias` for Q8 blocks of activations and a GGUF block matrix `w` of type `ty`
/// (the specification of [`crate::Kernels::linear_blocks`]): `Σ_b (Σ qw·qx) · (dw · dx) + mw · sx`, every term and
/// sum in f64 (exact but for the f64 roundings, ~2^-53), then one rounding to f32. `dw · dx` is rounded to f32 first,
/// as the kernels compute it.
pub fn linear_blocks(
    x: &crate::QuantizedBlocks,
    ty: crate::BlockType,
    w: &[u8],
    out_dim: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    ty.check(w.len(), out_dim, x.in_dim())
        .expect("linear_blocks: w is not [out_dim, in_dim] blocks");
    assert_eq!(y.len(), x.rows() * out_dim, "linear_blocks: y is not [rows, out_dim]");
    for r in 0..x.rows() {
        let (dx, sx) = (x.scales(r), x.sums(r));
        for o in 0..out_dim {
            let acc: f64 = block_terms(x, ty, w, r, o)
                .iter()
                .enumerate()
                .map(|(b, &(sum, dw, mw))| sum as f64 * (dw * dx[b]) as f64 + mw as f64 * sx[b] as f64)
                .sum();
            y[r * out_dim + o] = (acc + bias.map_or(0.0, |b| b[o] as f64)) as f32;
        }
    }
}

/// `y[rows, out] = x · Wᵀ + bias` for Q8_K activations and a K-quant matrix `w` of type `ty` (Q4_K, Q5_K, Q6_K;
/// the specification of [`crate::Kernels::linear_blocks`] on them, see `linear/kblocks.rs`): per super-block the
/// integer sums computed value by value in i64 from each value's bits, then the same f32 operations in the same
/// order as the kernels (so every ISA equals this bit for bit), super-blocks added in order, then the bias.
pub fn linear_kblocks(
    x: &crate::QuantizedBlocks,
    ty: crate::BlockType,
    w: &[u8],
    out_dim: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    use crate::linear::kblocks::{fold, scale_min, value, QK_K};
    assert_eq!(x.acts(), crate::ActBlocks::Q8K, "linear_kblocks: x is not Q8_K");
    ty.check(w.len(), out_dim, x.in_dim())
        .expect("linear_kblocks: w is not [out_dim, in_dim] blocks");
    assert_eq!(y.len(), x.rows() * out_dim, "linear_kblocks: y is not [rows, out_dim]");
    let (bb, nb) = (ty.block_bytes(), x.in_dim() / QK_K);
    let f16 = |b: &[u8]| crate::f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    for r in 0..x.rows() {
        let (xr, dx, bs) = (x.row(r), x.scales(r), x.bsums(r));
        for o in 0..out_dim {
            let mut acc = 0.0f32;
            for b in 0..nb {
                let blk = &w[(o * nb + b) * bb..(o * nb + b + 1) * bb];
                let xq = &xr[b * QK_K..(b + 1) * QK_K];
                let bsum = &bs[b * 16..(b + 1) * 16];
                // Per value j its scale, and per 16-value sum g what multiplies it.
                let (scale, off, dw, dmin): (Vec<i64>, Vec<i64>, f32, f32) = if ty == crate::BlockType::Q6_K {
                    let sc: Vec<i64> = (0..16).map(|g| blk[192 + g] as i8 as i64).collect();
                    let d = f16(&blk[208..]);
                    (
                        (0..QK_K).map(|j| sc[j / 16]).collect(),
                        sc.iter().map(|v| 32 * v).collect(),
                        d,
                        d,
                    )
                } else {
                    let sm: Vec<(u8, u8)> = (0..8).map(|s| scale_min(&blk[4..16], s)).collect();
                    (
                        (0..QK_K).map(|j| sm[j / 32].0 as i64).collect(),
                        (0..16).map(|g| sm[g / 2].1 as i64).collect(),
                        f16(blk),
                        f16(&blk[2..]),
                    )
                };
                let sumi: i64 = (0..QK_K)
                    .map(|j| scale[j] * value(ty, blk, j) as i64 * xq[j] as i64)
                    .sum();
                let summ: i64 = off.iter().zip(bsum).map(|(&m, &s)| m * s as i64).sum();
                acc = fold(ty, acc, dw, dmin, dx[b], sumi as i32, summ as i32);
            }
            if let Some(bias) = bias {
                acc += bias[o];
            }
            y[r * out_dim + o] = acc;
        }
    }
}

/// `γ_n = n·u / (1 - n·u)` with `u = 2^-24`: the relative error bound of `n` f32 roundings in a sum or product.
pub fn gamma_f32(n: usize) -> f64 {
    let nu = n as f64 * f32::EPSILON as f64 / 2.0;
    nu / (1.0 - nu)
}

/// Per output, how far any ISA's [`crate::Kernels::linear_blocks`] may be from [`linear_blocks`]: the kernels sum
/// `T`'s terms in f32 in some order: `dw · dx` rounded (1), each lane's exact integer partial sum times it (1; at
/// most `in_dim` lanes in all), the lane sums, the Q4_1 offsets `mw · sx` (1 each, `nb` of them) and the bias added
/// (at most `in_dim + nb + 1` additions): within `γ_(in_dim + nb + 3) · T`, with
/// `T = Σ_b (Σ |qw·qx|) · |dw · dx| + |mw · sx|, plus |bias|` (a lane's partial sum is bounded by the block's
/// `Σ |qw·qx|`, which `T` uses). Plus half an ulp of the reference's own final rounding.
pub fn linear_blocks_bound(
    x: &crate::QuantizedBlocks,
    ty: crate::BlockType,
    w: &[u8],
    out_dim: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let nb = x.in_dim() / crate::QK;
    let g = gamma_f32(x.in_dim() + nb + 3);
    let mut out = Vec::with_capacity(x.rows() * out_dim);
    for r in 0..x.rows() {
        let (dx, sx) = (x.scales(r), x.sums(r));
        for o in 0..out_dim {
            let (mut t, mut y) = (bias.map_or(0.0, |b| b[o].abs() as f64), 0.0f64);
            for (b, &(sum, dw, mw)) in block_terms(x, ty, w, r, o).iter().enumerate() {
                let abs_sum = abs_block_sum(x, ty, w, r, o, b);
                t += abs_sum as f64 * (dw * dx[b]).abs() as f64 + (mw as f64 * sx[b] as f64).abs();
                y += sum as f64 * (dw * dx[b]) as f64 + mw as f64 * sx[b] as f64;
            }
            out.push((g * t + y.abs() * f32::EPSILON as f64 / 2.0) as f32);
        }
    }
    out
}

/// `Σ_j |qw_j · qx_j|` of block `b` (of row `o`, activation row `r`).
fn abs_block_sum(x: &crate::QuantizedBlocks, ty: crate::BlockType, w: &[u8], r: usize, o: usize, b: usize) -> i64 {
    use crate::QK;
    let bb = ty.block_bytes();
    let nb = x.in_dim() / QK;
    let blk = &w[(o * nb + b) * bb..(o * nb + b + 1) * bb];
    let xq = &x.row(r)[b * QK..(b + 1) * QK];
    let q4 = |qs: &[u8], j: usize| if j < QK / 2 { qs[j] & 15 } else { qs[j - QK / 2] >> 4 } as i64;
    (0..QK)
        .map(|j| {
            let qw = match ty {
                crate::BlockType::Q8_0 => blk[2 + j] as i8 as i64,
                crate::BlockType::Q4_0 => q4(&blk[2..], j) - 8,
                crate::BlockType::Q4_1 => q4(&blk[4..], j),
                other => panic!("abs_block_sum: {other} is a K-quant"),
            };
            (qw * xq[j] as i64).abs()
        })
        .sum()
}

/// Per output, how far [`linear_blocks`] on `quantize_blocks(x)` may be from [`linear`] on the dequantized weights
/// `W = fl(dw · q)` (Q4_1 `fl(fl(dw · q) + mw)`) and the f32 `x`. With `w` the exact block weights:
/// - activations: `|x - qx · dx| <= dx · (1/2 + 384·u)` (see [`crate::QuantizedBlocks`]: `127 · 3.02·u` from the
///   roundings of `dx`, `127 / max` and `x · (127 / max)`), so `Σ_b dx_b · (1/2 + 384·u) · Σ_j |w_j|`;
/// - dequantization: `|W - w| <= 2·u · (|W| + |mw|)` (two roundings for Q4_1), so `3·u · Σ_j (|W_j| + |mw|) · |x_j|`
///   (rounded up);
/// - the Q4_1 offset `sx = fl(dx · Σ qx)`: `u · Σ_b |mw · sx|`;
/// - the two results' own roundings: [`linear_blocks_bound`]'s `γ · T` and half an ulp of each.
pub fn blocks_vs_dequantized_bound(
    x: &[f32],
    xq: &crate::QuantizedBlocks,
    ty: crate::BlockType,
    w: &[u8],
    out_dim: usize,
) -> Vec<f32> {
    use crate::QK;
    let in_dim = xq.in_dim();
    let nb = in_dim / QK;
    let u = f32::EPSILON as f64 / 2.0;
    let kernel = linear_blocks_bound(xq, ty, w, out_dim, None);
    let bb = ty.block_bytes();
    let mut out = Vec::with_capacity(kernel.len());
    for r in 0..xq.rows() {
        let xr = &x[r * in_dim..(r + 1) * in_dim];
        let (dx, sx) = (xq.scales(r), xq.sums(r));
        for o in 0..out_dim {
            let mut bound = kernel[r * out_dim + o] as f64;
            let mut y = 0.0f64;
            for b in 0..nb {
                let blk = &w[(o * nb + b) * bb..(o * nb + b + 1) * bb];
                let mut wd = [0.0f32; QK];
                ty.dequantize_block(blk, &mut wd);
                let mw = match ty {
                    crate::BlockType::Q4_1 => crate::f16_bits_to_f32(u16::from_le_bytes([blk[2], blk[3]])).abs() as f64,
                    _ => 0.0,
                };
                let xb = &xr[b * QK..(b + 1) * QK];
                let sum_w: f64 = wd
                    .iter()
                    .map(|&v| v.abs() as f64 + 2.0 * u * (v.abs() as f64 + mw))
                    .sum();
                bound += dx[b] as f64 * (0.5 + 384.0 * u) * sum_w;
                bound += 3.0
                    * u
                    * wd.iter()
                        .zip(xb)
                        .map(|(&v, &x)| (v.abs() as f64 + mw) * x.abs() as f64)
                        .sum::<f64>();
                bound += u * (mw * sx[b] as f64).abs();
                y += wd.iter().zip(xb).map(|(&v, &x)| v as f64 * x as f64).sum::<f64>();
            }
            out.push((bound + y.abs() * u) as f32);
        }
    }
    out
}
