//! AVX-512 VNNI int8 GEMV: each `x` row is quantized to i16 (symmetric, one scale per row), the int8 weights
//! are sign-extended to i16 in registers, and `vpdpwssd` multiplies pairs and accumulates in i32: two
//! instructions per 32 weights instead of sign-extend + convert + FMA per 16. The sums are exact integers;
//! the price is `x` rounded to 1/65534 of its row's largest magnitude (see [`crate::I8Gemv::DotI16`]).
#![allow(clippy::needless_range_loop)] // small fixed tiles read best with indices

use std::arch::x86_64::*;

use super::gemv::RowScale;

/// Inputs per `vpdpwssd` (32 i16 = 16 pairs).
const STEP: usize = 32;
/// Steps summed in i32 before they are added to f32: a lane gains at most `2 * 127 * 32767 < 2^23` per step,
/// so 256 steps stay below `2^31`.
const FLUSH_STEPS: usize = 256;
/// Largest magnitude of a quantized `x` value.
const X_MAX: f32 = 32767.0;

/// `x[n_x, in_dim]` quantized per row to i16, each row zero padded to a multiple of 32: (values
/// `[n_x, in_pad]`, row scales `[n_x]`, `in_pad`). A row holding NaN or an infinity gets a NaN scale (its outputs
/// are NaN, as with f32 arithmetic).
pub(crate) fn x_to_i16(x: &[f32], in_dim: usize) -> (Vec<i16>, Vec<f32>, usize) {
    let in_pad = in_dim.next_multiple_of(STEP);
    let n_x = x.len() / in_dim.max(1);
    let mut q = vec![0i16; n_x * in_pad];
    let mut scales = vec![0.0f32; n_x];
    for ((qr, xr), scale) in q.chunks_exact_mut(in_pad).zip(x.chunks_exact(in_dim)).zip(&mut scales) {
        let max = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if !xr.iter().all(|v| v.is_finite()) {
            *scale = f32::NAN;
            continue;
        }
        *scale = max / X_MAX;
        if max > 0.0 {
            let inv = X_MAX / max;
            for (d, &v) in qr.iter_mut().zip(xr) {
                *d = (v * inv).round_ties_even().clamp(-X_MAX, X_MAX) as i16;
            }
        }
    }
    (q, scales, in_pad)
}

/// `Σ_i x[r, i] q[o + k, i]` (as integers, returned as f32) for `NR` weight rows and `NX` x rows.
#[inline(always)]
fn block<const NR: usize, const NX: usize>(
    xq: &[i16],
    in_pad: usize,
    w: &[i8],
    in_dim: usize,
    o: usize,
) -> [[f32; NR]; NX] {
    assert!(xq.len() >= NX * in_pad && in_pad >= in_dim.next_multiple_of(STEP) && w.len() >= (o + NR) * in_dim);
    let mut out = [[0.0f32; NR]; NX];
    // SAFETY: only called from `outin`, whose `target_feature` covers AVX-512 F/BW/VL and VNNI (checked by the
    // caller). Loads: x rows are padded to `in_pad >= i + STEP`; weight row `o + k < o + NR` is read at
    // `i .. i + n` with `i + n <= in_dim` (full 32-byte loads when `n == STEP`, masked ones otherwise: masked-off
    // bytes are not accessed), inside `w` by the assert above.
    unsafe {
        let mut accf = [[_mm512_setzero_ps(); NR]; NX];
        let mut i = 0;
        while i < in_dim {
            let end = (i + FLUSH_STEPS * STEP).min(in_dim);
            let mut acc = [[_mm512_setzero_si512(); NR]; NX];
            while i < end {
                let n = (end - i).min(STEP);
                let mut xv = [_mm512_setzero_si512(); NX];
                for (r, xv) in xv.iter_mut().enumerate() {
                    *xv = _mm512_loadu_si512(xq.as_ptr().add(r * in_pad + i) as *const __m512i);
                }
                for k in 0..NR {
                    let p = w.as_ptr().add((o + k) * in_dim + i);
                    let wb = if n == STEP {
                        _mm256_loadu_si256(p as *const __m256i)
                    } else {
                        _mm256_maskz_loadu_epi8((1u32 << n) - 1, p)
                    };
                    let wv = _mm512_cvtepi8_epi16(wb);
                    for r in 0..NX {
                        acc[r][k] = _mm512_dpwssd_epi32(acc[r][k], wv, xv[r]);
                    }
                }
                i += STEP;
            }
            for r in 0..NX {
                for k in 0..NR {
                    accf[r][k] = _mm512_add_ps(accf[r][k], _mm512_cvtepi32_ps(acc[r][k]));
                }
            }
        }
        for r in 0..NX {
            for k in 0..NR {
                out[r][k] = _mm512_reduce_add_ps(accf[r][k]);
            }
        }
    }
    out
}

/// OutIn int8 GEMV on this task's rows of `w` (`[n_out, in_dim]`, `rs.scales` its row scales), for the i16 rows
/// of `xq` (`[n_x, in_pad]`, scales `x_scales`).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and AVX512_VNNI ([`crate::Isa::has_avx512_vnni`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn outin(
    xq: &[i16],
    x_scales: &[f32],
    in_pad: usize,
    in_dim: usize,
    w: &[i8],
    rs: RowScale<'_>,
    ys: &mut [&mut [f32]],
) {
    let n_x = ys.len();
    let n_out = ys.first().map_or(0, |y| y.len());
    assert!(w.len() == n_out * in_dim && xq.len() == n_x * in_pad && x_scales.len() == n_x);
    assert!(rs.scales.is_some_and(|s| s.len() == n_out) && rs.bias.is_none_or(|b| b.len() == n_out));
    let mut r = 0;
    while r < n_x {
        let g = (n_x - r).min(4);
        let xg = &xq[r * in_pad..(r + g) * in_pad];
        let mut o = 0;
        // NR x NX tiles: 2 * NR * NX accumulators (i32 and f32) + NX x vectors within 32 registers.
        macro_rules! run {
            ($nr:literal, $nx:literal) => {{
                while o + $nr <= n_out {
                    let t = block::<$nr, $nx>(xg, in_pad, w, in_dim, o);
                    for j in 0..$nx {
                        for k in 0..$nr {
                            ys[r + j][o + k] = rs.apply(o + k, t[j][k] * x_scales[r + j]);
                        }
                    }
                    o += $nr;
                }
            }};
        }
        match g {
            1 => run!(8, 1),
            2 => run!(4, 2),
            3 => run!(2, 3),
            _ => run!(2, 4),
        }
        while o < n_out {
            for j in 0..g {
                let t = block::<1, 1>(&xg[j * in_pad..], in_pad, w, in_dim, o);
                ys[r + j][o] = rs.apply(o, t[0][0] * x_scales[r + j]);
            }
            o += 1;
        }
        r += g;
    }
}
