//! GEMM for prefill, written over the SIMD trait (so f16/bf16 weights are widened while packing, and the
//! AVX-512 path uses 16-lane FMAs).
//!
//! BLIS-style loops per task (a task owns a range of output columns):
//! for each `KC` slice of the inputs, pack the weights of the task's columns into `NR`-wide strips
//! (`[KC, NR]` each, zero padded, widened to f32), then for each `MC` block of rows, for each strip,
//! for each `MR` rows: an `MR x NR` register tile accumulates over the `KC` slice and is added to `y`.

use super::WElem;
use crate::simd::Simd;
use crate::types::Layout;

/// A weight matrix in its stored dtype, as the GEMM tasks see it.
#[derive(Clone, Copy)]
pub(crate) struct WView<'a, T> {
    pub w: &'a [T],
    /// Per-output-row scales of int8 weights (OutIn only), applied while packing.
    pub scales: Option<&'a [f32]>,
    pub layout: Layout,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Inputs per packed slice (a `[KC, NR]` strip is 32 KiB of f32 with AVX-512: L1 sized).
pub(crate) const KC: usize = 256;
/// Rows per block (a `[MC, KC]` block of `x` is 256 KiB: L2 sized).
const MC: usize = 256;

/// Register tile: `MR` rows by `NR = 2 * LANES` columns, added to `ys[r][col .. col + n]`.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // the micro-kernel: flat arguments, tile indices
#[inline(always)]
fn tile<S: Simd, const MR: usize>(
    s: S,
    a: &[f32],
    lda: usize,
    bp: &[f32],
    kc: usize,
    ys: &mut [&mut [f32]],
    col: usize,
    n: usize,
) {
    let l = S::LANES;
    let nr = 2 * l;
    assert!(ys.len() >= MR && bp.len() >= kc * nr && a.len() >= (MR - 1) * lda + kc);
    let mut acc = [[s.zero(); 2]; MR];
    for p in 0..kc {
        // SAFETY: p < kc, so p * nr + 2 * LANES <= kc * nr <= bp.len() (asserted).
        let (b0, b1) = unsafe { (s.loadu(bp.as_ptr().add(p * nr)), s.loadu(bp.as_ptr().add(p * nr + l))) };
        for r in 0..MR {
            // SAFETY: r < MR and p < kc: r * lda + p < (MR - 1) * lda + kc <= a.len() (asserted).
            let av = s.splat(unsafe { *a.get_unchecked(r * lda + p) });
            acc[r][0] = s.fma(av, b0, acc[r][0]);
            acc[r][1] = s.fma(av, b1, acc[r][1]);
        }
    }
    // y[r][col .. col + n] += acc[r]
    for r in 0..MR {
        let y = &mut ys[r][col..col + n];
        if n == nr {
            let v0 = s.add(s.read(y), acc[r][0]);
            s.write(y, v0);
            let v1 = s.add(s.read(&y[l..]), acc[r][1]);
            s.write(&mut y[l..], v1);
        } else {
            let n0 = n.min(l);
            let v0 = s.add(s.read_partial(&y[..n0]), acc[r][0]);
            s.write_partial(&mut y[..n0], v0);
            if n > l {
                let v1 = s.add(s.read_partial(&y[l..n]), acc[r][1]);
                s.write_partial(&mut y[l..n], v1);
            }
        }
    }
}

/// Pack weight columns `c0 .. c0 + n_cols`, inputs `k0 .. k0 + kc`, into strips `[kc, NR]` (widened, zero padded;
/// int8 weights dequantized with their row's scale).
#[inline(always)]
fn pack<S: Simd, T: WElem>(s: S, wv: WView<'_, T>, c0: usize, n_cols: usize, k0: usize, kc: usize, bp: &mut [f32]) {
    let WView {
        w,
        scales,
        layout,
        in_dim,
        out_dim,
    } = wv;
    let nr = 2 * S::LANES;
    let n_strips = n_cols.div_ceil(nr);
    assert!(bp.len() >= n_strips * kc * nr);
    for j in 0..n_strips {
        let strip = &mut bp[j * kc * nr..(j + 1) * kc * nr];
        let cs = c0 + j * nr;
        let nc = nr.min(c0 + n_cols - cs);
        match layout {
            // W(o, i) = w[o * in_dim + i]: each column is a contiguous run over i.
            Layout::OutIn => {
                if nc < nr {
                    strip.fill(0.0);
                }
                for c in 0..nc {
                    let run = &w[(cs + c) * in_dim + k0..(cs + c) * in_dim + k0 + kc];
                    match scales {
                        Some(sc) => {
                            let sc = sc[cs + c];
                            for (p, &v) in run.iter().enumerate() {
                                strip[p * nr + c] = v.to_f32() * sc;
                            }
                        }
                        None => {
                            for (p, &v) in run.iter().enumerate() {
                                strip[p * nr + c] = v.to_f32();
                            }
                        }
                    }
                }
            }
            // W(o, i) = w[i * out_dim + o]: each input row is a contiguous run over the strip's columns.
            // (int8 weights are never InOut: `linear` asserts it.)
            Layout::InOut => {
                for p in 0..kc {
                    let row = (k0 + p) * out_dim + cs;
                    let dst = &mut strip[p * nr..(p + 1) * nr];
                    let n0 = nc.min(S::LANES);
                    s.write(dst, T::read_partial(s, &w[row..row + n0]));
                    let rest = if nc > S::LANES {
                        T::read_partial(s, &w[row + S::LANES..row + nc])
                    } else {
                        s.zero()
                    };
                    s.write(&mut dst[S::LANES..], rest);
                }
            }
        }
    }
}

/// `ys[r][c] += Σ_i x[r, i] W(c0 + c, i)` for every row `r` of `x` and this task's columns.
/// `bp` is scratch of at least [`packed_len`] floats.
#[inline(always)]
pub(crate) fn gemm_task<S: Simd, T: WElem>(
    s: S,
    x: &[f32],
    wv: WView<'_, T>,
    c0: usize,
    ys: &mut [&mut [f32]],
    bp: &mut [f32],
) {
    let WView { w, in_dim, out_dim, .. } = wv;
    let m = ys.len();
    let n_cols = ys.first().map_or(0, |y| y.len());
    assert!(x.len() == m * in_dim && w.len() == in_dim * out_dim && c0 + n_cols <= out_dim);
    let nr = 2 * S::LANES;
    for k0 in (0..in_dim).step_by(KC) {
        let kc = KC.min(in_dim - k0);
        pack(s, wv, c0, n_cols, k0, kc, bp);
        for i0 in (0..m).step_by(MC) {
            let mc = MC.min(m - i0);
            for (j, c) in (0..n_cols).step_by(nr).enumerate() {
                let n = nr.min(n_cols - c);
                let strip = &bp[j * kc * nr..(j + 1) * kc * nr];
                let mut i = i0;
                // Full tiles: 8 rows with 32 registers (AVX-512), else 6.
                if S::LANES >= 16 {
                    while i + 8 <= i0 + mc {
                        tile::<S, 8>(s, &x[i * in_dim + k0..], in_dim, strip, kc, &mut ys[i..i + 8], c, n);
                        i += 8;
                    }
                } else {
                    while i + 6 <= i0 + mc {
                        tile::<S, 6>(s, &x[i * in_dim + k0..], in_dim, strip, kc, &mut ys[i..i + 6], c, n);
                        i += 6;
                    }
                }
                while i < i0 + mc {
                    tile::<S, 1>(s, &x[i * in_dim + k0..], in_dim, strip, kc, &mut ys[i..i + 1], c, n);
                    i += 1;
                }
            }
        }
    }
}

/// Scratch floats `gemm_task` needs for `n_cols` columns.
pub(crate) fn packed_len(n_cols: usize) -> usize {
    n_cols.div_ceil(2 * crate::simd::MAX_LANES) * 2 * crate::simd::MAX_LANES * KC
}
