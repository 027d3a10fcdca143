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
