//! Row and elementwise kernels, generic over [`Simd`].

use crate::simd::Simd;

pub(crate) mod beam;

/// `acc += x`.
#[inline(always)]
pub(crate) fn add<S: Simd>(s: S, acc: &mut [f32], x: &[f32]) {
    let l = S::LANES;
    let n = acc.len().min(x.len());
    let mut i = 0;
    while i + l <= n {
        let v = s.add(s.read(&acc[i..]), s.read(&x[i..]));
        s.write(&mut acc[i..], v);
        i += l;
    }
    if i < n {
        let v = s.add(s.read_partial(&acc[i..n]), s.read_partial(&x[i..n]));
        s.write_partial(&mut acc[i..n], v);
    }
}

/// Sum of `x`, vectorized.
#[inline(always)]
fn sum<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let n = x.len();
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * l <= n {
        a0 = s.add(a0, s.read(&x[i..]));
        a1 = s.add(a1, s.read(&x[i + l..]));
        i += 2 * l;
    }
    if i + l <= n {
        a0 = s.add(a0, s.read(&x[i..]));
        i += l;
    }
    if i < n {
        a1 = s.add(a1, s.read_partial(&x[i..]));
    }
    s.reduce_sum(s.add(a0, a1))
}

/// Sum of `(x - c)²`, vectorized (partial lanes are zero and contribute nothing).
#[inline(always)]
fn sum_sq_centered<S: Simd>(s: S, x: &[f32], c: f32) -> f32 {
    let l = S::LANES;
    let n = x.len();
    let cv = s.splat(c);
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * l <= n {
        let d0 = s.sub(s.read(&x[i..]), cv);
        let d1 = s.sub(s.read(&x[i + l..]), cv);
        a0 = s.fma(d0, d0, a0);
        a1 = s.fma(d1, d1, a1);
        i += 2 * l;
    }
    if i + l <= n {
        let d = s.sub(s.read(&x[i..]), cv);
        a0 = s.fma(d, d, a0);
        i += l;
    }
    let mut total = s.reduce_sum(s.add(a0, a1));
    for &v in &x[i..] {
        total += (v - c) * (v - c);
    }
    total
}

/// LayerNorm of every row of `x` (rows of `gamma.len()`).
#[inline(always)]
pub(crate) fn layer_norm<S: Simd>(s: S, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = gamma.len();
    let l = S::LANES;
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        // mean and variance (two passes: exact enough in f32 for any scale of x).
        let mean = sum(s, xr) / n as f32;
        let var = sum_sq_centered(s, xr, mean) / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        let (mv, iv) = (s.splat(mean), s.splat(inv));
        let mut i = 0;
        while i < n {
            let m = (n - i).min(l);
            let xv = s.read_partial(&xr[i..i + m]);
            let v = s.mul(s.sub(xv, mv), iv);
            let v = s.fma(v, s.read_partial(&gamma[i..i + m]), s.read_partial(&beta[i..i + m]));
            s.write_partial(&mut or[i..i + m], v);
            i += m;
        }
    }
}

/// RMSNorm of every row of `x` (rows of `weight.len()`).
#[inline(always)]
pub(crate) fn rms_norm<S: Simd>(s: S, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    let l = S::LANES;
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ms = sum_sq_centered(s, xr, 0.0) / n as f32;
        let iv = s.splat(1.0 / (ms + eps).sqrt());
        let mut i = 0;
        while i < n {
            let m = (n - i).min(l);
            let v = s.mul(
                s.mul(s.read_partial(&xr[i..i + m]), iv),
                s.read_partial(&weight[i..i + m]),
            );
            s.write_partial(&mut or[i..i + m], v);
            i += m;
        }
    }
}

/// Largest value of `x` ignoring NaN (`-inf` for an empty or all-NaN row).
#[inline(always)]
pub(crate) fn max<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let n = x.len();
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut a0, mut a1) = (ninf, ninf);
    let mut i = 0;
    // `max(v, acc)`: a NaN `v` leaves `acc` unchanged, so the accumulators never hold NaN.
    while i + 2 * l <= n {
        a0 = s.max(s.read(&x[i..]), a0);
        a1 = s.max(s.read(&x[i + l..]), a1);
        i += 2 * l;
    }
    if i + l <= n {
        a0 = s.max(s.read(&x[i..]), a0);
        i += l;
    }
    let mut m = s.reduce_max(s.max(a0, a1));
    for &v in &x[i..] {
        if v > m {
            m = v;
        }
    }
    m
}

/// Softmax of one row in place; an all-`-inf` row becomes zeros.
#[inline(always)]
pub(crate) fn softmax<S: Simd>(s: S, x: &mut [f32]) {
    let l = S::LANES;
    let n = x.len();
    let m = max(s, x);
    if m == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    // e = exp(x - max), summed as we go.
    let mv = s.splat(m);
    let mut acc = s.zero();
    let mut i = 0;
    while i + l <= n {
        let e = s.exp(s.sub(s.read(&x[i..]), mv));
        acc = s.add(acc, e);
        s.write(&mut x[i..], e);
        i += l;
    }
    let mut total = s.reduce_sum(acc);
    if i < n {
        // Zero lanes of a partial read would add exp(0 - max) each: sum the tail lanes one by one.
        let e = s.exp(s.sub(s.read_partial(&x[i..]), mv));
        s.write_partial(&mut x[i..], e);
        total += x[i..].iter().sum::<f32>();
    }
    // normalise
    let inv = s.splat(1.0 / total);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(l);
        let v = s.mul(s.read_partial(&x[i..i + k]), inv);
        s.write_partial(&mut x[i..i + k], v);
        i += k;
    }
}

/// Log-softmax of one row in place, `(x - max) - ln Σ exp(x - max)` over the entries that are not NaN (NaN
/// entries stay NaN); a row with no value above `-inf` is left as it is.
#[inline(always)]
pub(crate) fn log_softmax<S: Simd>(s: S, x: &mut [f32]) {
    let m = max(s, x);
    if m == f32::NEG_INFINITY {
        return;
    }
    let (l, n) = (S::LANES, x.len());
    // Σ exp(x - max), compensated (Kahan, per lane): a plain f32 sum over a 150k-260k vocabulary (n / LANES terms
    // per lane) drops the small terms' low bits against the growing sum, a bias that put beam scores 2-4e-4 per token
    // off transformers' on the scalar path. `exp` maps a NaN lane to exp(-88) ≈ 0, the tail skips NaN.
    let mv = s.splat(m);
    let (mut acc, mut lost) = (s.zero(), s.zero());
    let mut i = 0;
    while i + l <= n {
        let y = s.sub(s.exp(s.sub(s.read(&x[i..]), mv)), lost);
        let t = s.add(acc, y);
        lost = s.sub(s.sub(t, acc), y);
        acc = t;
        i += l;
    }
    let tail: f64 = x[i..]
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| (v - m).exp() as f64)
        .sum();
    let sum = s.reduce_sum(acc) as f64 - s.reduce_sum(lost) as f64 + tail;
    let lse = s.splat(sum.ln() as f32);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(l);
        let v = s.sub(s.sub(s.read_partial(&x[i..i + k]), mv), lse);
        s.write_partial(&mut x[i..i + k], v);
        i += k;
    }
}

/// `x / (1 + e^-x)`.
#[inline(always)]
fn silu_v<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    s.div(x, s.add(one, s.exp(s.sub(s.zero(), x))))
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)` (saturates correctly at both ends since `exp` does).
#[inline(always)]
fn tanh_v<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let e = s.exp(s.add(x, x));
    s.sub(one, s.div(s.splat(2.0), s.add(e, one)))
}

/// Exact GELU `0.5 x (1 + erf(x/√2))` as `0.5 (x + |x| (1 - r))`, `r = erfc(|x|/√2)` from the same
/// Chebyshev fit as [`crate::reference::erf`] (|error| < 1.2e-7).
#[inline(always)]
fn gelu_erf_v<S: Simd>(s: S, x: S::V) -> S::V {
    const C: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_8,
    ];
    let one = s.splat(1.0);
    let ax = s.abs(x);
    let z = s.mul(ax, s.splat(std::f32::consts::FRAC_1_SQRT_2));
    let t = s.div(one, s.fma(s.splat(0.5), z, one));
    let mut p = s.splat(C[9]);
    for &c in C[..9].iter().rev() {
        p = s.fma(p, t, s.splat(c));
    }
    // r = t · exp(-z² + p(t))
    let r = s.mul(t, s.exp(s.sub(p, s.mul(z, z))));
    s.mul(s.splat(0.5), s.fma(ax, s.sub(one, r), x))
}

/// GPT-2 `gelu_new`: `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`.
#[inline(always)]
fn gelu_tanh_v<S: Simd>(s: S, x: S::V) -> S::V {
    let k = s.splat((2.0 / std::f32::consts::PI).sqrt());
    let x3 = s.mul(s.mul(x, x), x);
    let u = s.mul(k, s.fma(s.splat(0.044_715), x3, x));
    let half_x = s.mul(s.splat(0.5), x);
    s.fma(half_x, tanh_v(s, u), half_x)
}

/// Apply `f` to every element of `x` in place (partial tail included).
#[inline(always)]
fn map_in_place<S: Simd>(s: S, x: &mut [f32], f: impl Fn(S::V) -> S::V) {
    let l = S::LANES;
    let n = x.len();
    let mut i = 0;
    while i < n {
        let k = (n - i).min(l);
        let v = f(s.read_partial(&x[i..i + k]));
        s.write_partial(&mut x[i..i + k], v);
        i += k;
    }
}

#[inline(always)]
pub(crate) fn activation<S: Simd>(s: S, act: crate::types::Activation, x: &mut [f32]) {
    use crate::types::Activation;
    match act {
        // max(x, 0) maps NaN to 0, like the reference's f64::max.
        Activation::Relu => map_in_place(s, x, |v| s.max(v, s.zero())),
        Activation::Silu => map_in_place(s, x, |v| silu_v(s, v)),
        Activation::GeluTanh => map_in_place(s, x, |v| gelu_tanh_v(s, v)),
        Activation::GeluErf => map_in_place(s, x, |v| gelu_erf_v(s, v)),
    }
}

/// `out = silu(gate) * up`.
#[inline(always)]
pub(crate) fn swiglu<S: Simd>(s: S, gate: &[f32], up: &[f32], out: &mut [f32]) {
    let l = S::LANES;
    let n = out.len().min(gate.len()).min(up.len());
    let mut i = 0;
    while i < n {
        let k = (n - i).min(l);
        let g = s.read_partial(&gate[i..i + k]);
        let v = s.mul(silu_v(s, g), s.read_partial(&up[i..i + k]));
        s.write_partial(&mut out[i..i + k], v);
        i += k;
    }
}

/// RoPE on `x[len, n_heads, head_dim]` in place, Hugging Face `rotate_half` pairing (`i` with `i + half`).
#[inline(always)]
pub(crate) fn rope_half<S: Simd>(s: S, table: &crate::types::RopeTable, x: &mut [f32], n_heads: usize, pos0: usize) {
    let l = S::LANES;
    let d = table.head_dim;
    let half = d / 2;
    let row = n_heads * d;
    for (t, xr) in x.chunks_exact_mut(row).enumerate() {
        let p = pos0 + t;
        let cos = &table.cos[p * half..(p + 1) * half];
        let sin = &table.sin[p * half..(p + 1) * half];
        for head in xr.chunks_exact_mut(d) {
            let (lo, hi) = head.split_at_mut(half);
            let mut i = 0;
            while i < half {
                let k = (half - i).min(l);
                let (x0, x1) = (s.read_partial(&lo[i..i + k]), s.read_partial(&hi[i..i + k]));
                let (c, sn) = (s.read_partial(&cos[i..i + k]), s.read_partial(&sin[i..i + k]));
                // x0' = x0 cos - x1 sin ; x1' = x1 cos + x0 sin
                let n0 = s.sub(s.mul(x0, c), s.mul(x1, sn));
                let n1 = s.fma(x0, sn, s.mul(x1, c));
                s.write_partial(&mut lo[i..i + k], n0);
                s.write_partial(&mut hi[i..i + k], n1);
                i += k;
            }
        }
    }
}

/// Gather rows of `table` (`[vocab, dim]`) times `scale`.
#[inline(always)]
pub(crate) fn embed<S: Simd, T: crate::linear::WElem>(
    s: S,
    table: &[T],
    row_scales: Option<&[f32]>,
    dim: usize,
    ids: &[u32],
    scale: f32,
    out: &mut [f32],
) {
    for (&id, or) in ids.iter().zip(out.chunks_exact_mut(dim)) {
        let id = id as usize;
        // int8 tables: each row has its own scale.
        let scale = row_scales.map_or(scale, |rs| rs[id] * scale);
        crate::linear::widen(s, &table[id * dim..(id + 1) * dim], scale, or);
    }
}

/// Index of the largest value (first on ties, NaN never wins), `None` if there is none.
#[inline(always)]
pub(crate) fn argmax<S: Simd>(s: S, x: &[f32]) -> Option<usize> {
    let m = max(s, x);
    // The first element equal to the maximum (NaN equals nothing; an all-NaN row finds none).
    x.iter().position(|&v| v == m)
}

/// The `k` largest values, largest first (lower index first on ties, NaN skipped): a bounded min-heap
/// over one pass (most elements lose one comparison against the current k-th best), then a sort of `k`.
pub(crate) fn top_k(x: &[f32], k: usize) -> Vec<(u32, f32)> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;

    /// Orders by value (total order), then lower index as better.
    #[derive(Clone, Copy, PartialEq)]
    struct Cand(f32, u32);
    impl Eq for Cand {}
    impl PartialOrd for Cand {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Cand {
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
        }
    }

    let k = k.min(x.len());
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(k + 1);
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let c = Cand(v, i as u32);
        if heap.len() < k {
            heap.push(Reverse(c));
        } else if let Some(mut worst) = heap.peek_mut() {
            if c > worst.0 {
                *worst = Reverse(c);
            }
        }
    }
    let mut best: Vec<Cand> = heap.into_iter().map(|r| r.0).collect();
    best.sort_unstable_by(|a, b| b.cmp(a));
    best.into_iter().map(|c| (c.1, c.0)).collect()
}
