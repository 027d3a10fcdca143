//! GEMV for decoding: one to a few `x` rows against a weight matrix read in its stored dtype.
#![allow(clippy::needless_range_loop)] // small fixed-size accumulator tiles read best with indices
//!
//! Every function here works on one task's share of the outputs (the caller splits the work over
//! threads) and is generic over the SIMD token and the weight element type.

use super::WElem;
use crate::simd::Simd;

/// What is applied to each output row's dot product: `y = dot * scale + bias` (int8 weights carry a scale
/// per output row; float weights have none).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowScale<'a> {
    pub scales: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
}

impl RowScale<'_> {
    /// Output `o` from its dot product.
    #[inline(always)]
    pub(crate) fn apply(&self, o: usize, dot: f32) -> f32 {
        let v = match self.scales {
            Some(s) => dot * s[o],
            None => dot,
        };
        v + self.bias.map_or(0.0, |b| b[o])
    }
}

/// `y[r][o] = dot(w[o, :], x[r, :]) * scale[o] + bias[o]` for `NX` rows of `x`, `w` being `[n_out, in_dim]` (OutIn).
///
/// `ys[r]` is row `r` of this task's outputs (`n_out` long). Processes `NR` weight rows at a time so each
/// `x` vector load serves `NR` rows and each weight load serves `NX` rows.
#[inline(always)]
fn outin_block<S: Simd, T: WElem, const NR: usize, const NX: usize>(
    s: S,
    x: &[f32],
    in_dim: usize,
    w: &[T],
    rs: RowScale<'_>,
    ys: &mut [&mut [f32]],
) {
    let l = S::LANES;
    let n_out = ys.first().map_or(0, |y| y.len());
    assert!(ys.len() == NX && x.len() == NX * in_dim && w.len() == n_out * in_dim);
    assert!(ys.iter().all(|y| y.len() == n_out));
    assert!(rs.bias.is_none_or(|b| b.len() == n_out) && rs.scales.is_none_or(|s| s.len() == n_out));
    let n_full = in_dim / l * l;
    let mut o = 0;
    while o + NR <= n_out {
        let mut acc = [[s.zero(); NR]; NX];
        let mut i = 0;
        while i < n_full {
            let mut xv = [s.zero(); NX];
            for (r, xv) in xv.iter_mut().enumerate() {
                // SAFETY: i + LANES <= n_full <= in_dim, so row r of x (NX * in_dim floats, asserted) has them.
                *xv = unsafe { s.loadu(x.as_ptr().add(r * in_dim + i)) };
            }
            for k in 0..NR {
                // SAFETY: (o + k) < n_out and i + LANES <= in_dim: inside w ([n_out, in_dim], asserted).
                let wv = unsafe { T::load(s, w.as_ptr().add((o + k) * in_dim + i)) };
                for r in 0..NX {
                    acc[r][k] = s.fma(wv, xv[r], acc[r][k]);
                }
            }
            i += l;
        }
        if n_full < in_dim {
            let mut xv = [s.zero(); NX];
            for (r, xv) in xv.iter_mut().enumerate() {
                *xv = s.read_partial(&x[r * in_dim + n_full..(r + 1) * in_dim]);
            }
            for k in 0..NR {
                let wv = T::read_partial(s, &w[(o + k) * in_dim + n_full..(o + k + 1) * in_dim]);
                for r in 0..NX {
                    acc[r][k] = s.fma(wv, xv[r], acc[r][k]);
                }
            }
        }
        for r in 0..NX {
            for k in 0..NR {
                ys[r][o + k] = rs.apply(o + k, s.reduce_sum(acc[r][k]));
            }
        }
        o += NR;
    }
    // Leftover weight rows, one at a time.
    while o < n_out {
        for r in 0..NX {
            let xr = &x[r * in_dim..(r + 1) * in_dim];
            ys[r][o] = rs.apply(o, dot_w(s, &w[o * in_dim..(o + 1) * in_dim], xr));
        }
        o += 1;
    }
}

/// `dot(w, x)`, `w` in its stored dtype.
#[inline(always)]
fn dot_w<S: Simd, T: WElem>(s: S, w: &[T], x: &[f32]) -> f32 {
    let l = S::LANES;
    let n = w.len().min(x.len());
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * l <= n {
        a0 = s.fma(T::read(s, &w[i..]), s.read(&x[i..]), a0);
        a1 = s.fma(T::read(s, &w[i + l..]), s.read(&x[i + l..]), a1);
        i += 2 * l;
    }
    while i + l <= n {
        a0 = s.fma(T::read(s, &w[i..]), s.read(&x[i..]), a0);
        i += l;
    }
    if i < n {
        a1 = s.fma(T::read_partial(s, &w[i..n]), s.read_partial(&x[i..n]), a1);
    }
    s.reduce_sum(s.add(a0, a1))
}

/// OutIn GEMV on this task's rows of `w` for `x` rows (`x.len() / in_dim` of them, at most 4 per pass).
#[inline(always)]
pub(crate) fn outin<S: Simd, T: WElem>(
    s: S,
    x: &[f32],
    in_dim: usize,
    w: &[T],
    rs: RowScale<'_>,
    ys: &mut [&mut [f32]],
) {
    let n_x = ys.len();
    assert_eq!(x.len(), n_x * in_dim);
    let mut r = 0;
    while r < n_x {
        let g = (n_x - r).min(4);
        let xg = &x[r * in_dim..(r + g) * in_dim];
        let yg = &mut ys[r..r + g];
        // int8 weights convert in two instructions per vector (sign-extend, to f32): wider tiles spread that cost
        // over more FMAs (4 x rows share each converted vector with 32 registers; AVX2 has 16).
        let byte = std::mem::size_of::<T>() == 1;
        let wide = S::LANES >= 16;
        match g {
            1 if byte => outin_block::<S, T, 8, 1>(s, xg, in_dim, w, rs, yg),
            2 if byte => outin_block::<S, T, 4, 2>(s, xg, in_dim, w, rs, yg),
            3 if byte && wide => outin_block::<S, T, 4, 3>(s, xg, in_dim, w, rs, yg),
            4 if byte && wide => outin_block::<S, T, 4, 4>(s, xg, in_dim, w, rs, yg),
            1 => outin_block::<S, T, 4, 1>(s, xg, in_dim, w, rs, yg),
            2 => outin_block::<S, T, 2, 2>(s, xg, in_dim, w, rs, yg),
            3 => outin_block::<S, T, 2, 3>(s, xg, in_dim, w, rs, yg),
            _ => outin_block::<S, T, 2, 4>(s, xg, in_dim, w, rs, yg),
        }
        r += g;
    }
}

/// InOut (`w` is `[in_dim, out_dim]`): `acc[r, :] += Σ_{i in i0..i1} x[r, i] w[i, :]` for every row `r`
/// of `x` (`acc` is `[n_x, out_dim]`). Streams `w` rows contiguously, four at a time, in column blocks
/// small enough that the four row segments stay in L1 while each `x` row uses them.
#[inline(always)]
pub(crate) fn inout_rows<S: Simd, T: WElem>(
    s: S,
    x: &[f32],
    w: &[T],
    out_dim: usize,
    rows: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    const BLOCK: usize = 256;
    let l = S::LANES;
    let in_dim = w.len() / out_dim.max(1);
    let n_x = acc.len() / out_dim.max(1);
    assert!(w.len() == in_dim * out_dim && x.len() == n_x * in_dim && acc.len() == n_x * out_dim);
    assert!(rows.start <= rows.end && rows.end <= in_dim);
    for cb in (0..out_dim).step_by(BLOCK) {
        let ce = (cb + BLOCK).min(out_dim);
        let mut i = rows.start;
        while i < rows.end {
            let g = (rows.end - i).min(4);
            for r in 0..n_x {
                let xr = &x[r * in_dim + i..r * in_dim + i + g];
                let xv = [0, 1, 2, 3].map(|j| s.splat(if j < g { xr[j] } else { 0.0 }));
                let y = &mut acc[r * out_dim..(r + 1) * out_dim];
                let mut c = cb;
                if g == 4 {
                    while c + l <= ce {
                        let mut v = s.read(&y[c..]);
                        for j in 0..4 {
                            // SAFETY: i + j < rows.end <= in_dim and c + LANES <= ce <= out_dim: inside w (asserted).
                            let wv = unsafe { T::load(s, w.as_ptr().add((i + j) * out_dim + c)) };
                            v = s.fma(wv, xv[j], v);
                        }
                        s.write(&mut y[c..], v);
                        c += l;
                    }
                }
                // Column tail (or a group of fewer than 4 rows): partial vectors.
                while c < ce {
                    let n = (ce - c).min(l);
                    let mut v = s.read_partial(&y[c..c + n]);
                    for j in 0..g {
                        let row = (i + j) * out_dim + c;
                        v = s.fma(T::read_partial(s, &w[row..row + n]), xv[j], v);
                    }
                    s.write_partial(&mut y[c..c + n], v);
                    c += n;
                }
            }
            i += g;
        }
    }
}
