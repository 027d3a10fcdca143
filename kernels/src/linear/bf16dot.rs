//! AVX-512 BF16 GEMV: `vdpbf16ps` multiplies bf16 weight pairs by `x` rounded to bf16 pairs and
//! accumulates in f32. One instruction per 32 weights instead of widen + FMA; the price is `x`
//! rounded to bf16 (relative error <= 2^-9 per element), see [`crate::Kernels::linear`].
#![allow(clippy::needless_range_loop)] // small fixed tiles read best with indices

use std::arch::x86_64::*;

use half::bf16;

/// Inputs per `vdpbf16ps` (32 bf16 = 16 pairs).
const STEP: usize = 32;

/// `x[n_x, in_dim]` rounded to bf16 (nearest even), each row zero padded to a multiple of 32.
pub(crate) fn x_to_bf16(x: &[f32], in_dim: usize) -> (Vec<bf16>, usize) {
    let in_pad = in_dim.next_multiple_of(STEP);
    let n_x = x.len() / in_dim.max(1);
    let mut out = vec![bf16::ZERO; n_x * in_pad];
    for (o, xr) in out.chunks_exact_mut(in_pad).zip(x.chunks_exact(in_dim)) {
        for (d, &v) in o.iter_mut().zip(xr) {
            *d = bf16::from_f32(v);
        }
    }
    (out, in_pad)
}

/// `NR` weight rows by `NX` x rows, accumulated over the whole input.
#[inline(always)]
fn block<const NR: usize, const NX: usize>(
    xb: &[bf16],
    in_pad: usize,
    w: &[bf16],
    in_dim: usize,
    o: usize,
) -> [[f32; NR]; NX] {
    assert!(xb.len() >= NX * in_pad && in_pad >= in_dim.next_multiple_of(STEP) && w.len() >= (o + NR) * in_dim);
    let mut out = [[0.0f32; NR]; NX];
    // SAFETY: only called from `outin`, whose `target_feature` covers AVX-512 F/BW and BF16 (checked by the
    // caller); every load is inside `w` or `xb` by the assert above (the last partial step is masked).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NR]; NX];
        let mut i = 0;
        while i < in_dim {
            let n = (in_dim - i).min(STEP);
            let mask: __mmask32 = if n == STEP { u32::MAX } else { (1u32 << n) - 1 };
            let mut xv = [_mm512_setzero_si512(); NX];
            for (r, xv) in xv.iter_mut().enumerate() {
                // x rows are padded to in_pad >= i + STEP.
                *xv = _mm512_loadu_si512(xb.as_ptr().add(r * in_pad + i) as *const __m512i);
            }
            for k in 0..NR {
                let wv = _mm512_maskz_loadu_epi16(mask, w.as_ptr().add((o + k) * in_dim + i) as *const i16);
                let wbh: __m512bh = std::mem::transmute(wv);
                for r in 0..NX {
                    acc[r][k] = _mm512_dpbf16_ps(acc[r][k], wbh, std::mem::transmute::<__m512i, __m512bh>(xv[r]));
                }
            }
            i += STEP;
        }
        for r in 0..NX {
            for k in 0..NR {
                out[r][k] = _mm512_reduce_add_ps(acc[r][k]);
            }
        }
    }
    out
}

/// OutIn GEMV on this task's rows of `w` (`[n_out, in_dim]`), for the bf16 rows of `xb` (`[n_x, in_pad]`).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and AVX512_BF16 ([`crate::Isa::has_avx512_bf16`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn outin(
    xb: &[bf16],
    in_pad: usize,
    in_dim: usize,
    w: &[bf16],
    bias: Option<&[f32]>,
    ys: &mut [&mut [f32]],
) {
    let n_x = ys.len();
    let n_out = ys.first().map_or(0, |y| y.len());
    assert!(w.len() == n_out * in_dim && xb.len() == n_x * in_pad && bias.is_none_or(|b| b.len() == n_out));
    let b = |o: usize| bias.map_or(0.0, |b| b[o]);
    let mut r = 0;
    while r < n_x {
        let g = (n_x - r).min(4);
        let xg = &xb[r * in_pad..(r + g) * in_pad];
        let mut o = 0;
        while o + 4 <= n_out {
            macro_rules! run {
                ($nx:literal) => {{
                    let t = block::<4, $nx>(xg, in_pad, w, in_dim, o);
                    for j in 0..$nx {
                        for k in 0..4 {
                            ys[r + j][o + k] = t[j][k] + b(o + k);
                        }
                    }
                }};
            }
            match g {
                1 => run!(1),
                2 => run!(2),
                3 => run!(3),
                _ => run!(4),
            }
            o += 4;
        }
        while o < n_out {
            for j in 0..g {
                let t = block::<1, 1>(&xg[j * in_pad..], in_pad, w, in_dim, o);
                ys[r + j][o] = t[0][0] + b(o);
            }
            o += 1;
        }
        r += g;
    }
}
