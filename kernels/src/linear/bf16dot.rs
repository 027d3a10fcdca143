//! AVX-512 BF16 GEMV: `vdpbf16ps` multiplies bf16 weight pairs by `x` rounded to bf16 pairs and
//! accumulates in f32. One instruction per 32 weights instead of widen + FMA; the price is `x`
//! rounded to bf16 (relative error <= 2^-8 per element: 8 significant bits), see [`crate::Kernels::linear`].
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

/// `acc[r][v] += Σ_q A[q, r] · B[q, v]` over `kq` input pairs with `vdpbf16ps`: `a` a packed row tile (`[kq, MR]`
/// bf16 pairs, 4 bytes each), `b` a bf16 panel (`[kq, 32, 2]`).
///
/// # Safety
/// AVX512_BF16 present; `a .. a + kq · MR` pairs and `b .. b + kq · 64` values readable.
#[inline(always)]
unsafe fn tile<const MR: usize>(a: *const u32, b: *const bf16, kq: usize) -> [[__m512; super::packed::NV_MAX]; MR] {
    // SAFETY: the caller's ranges; the intrinsics need AVX-512 F/BF16, which the caller's target features enable.
    unsafe {
        let mut c = [[_mm512_setzero_ps(); super::packed::NV_MAX]; MR];
        for q in 0..kq {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * 64) as *const __m512i));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * 64 + 32) as *const __m512i));
            for r in 0..MR {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(q * MR + r) as i32));
                c[r][0] = _mm512_dpbf16_ps(c[r][0], av, w0);
                c[r][1] = _mm512_dpbf16_ps(c[r][1], av, w1);
            }
        }
        c
    }
}

/// One share (`rows` x `panels`) of a packed bf16 product with `vdpbf16ps` ([`crate::Bf16Gemv::DotBf16`]): the rows
/// of `x` rounded to bf16 pairs while packed, all inputs of a panel per tile (f32 accumulators), bias at the store.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and AVX512_BF16; the job's panels are AVX-512 panels (32 columns).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub(crate) unsafe fn gemm_share(
    job: &super::driver::Job<'_, bf16>,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    blk: super::driver::Blocking,
) {
    use super::driver::{row_tiles, take, BView, Scratch};
    use super::tile::{store_row, Cols, Store};
    let BView::Packed { panels: data, in_pad } = job.b else {
        unreachable!("vdpbf16ps runs packed weights only")
    };
    let (in_dim, out_dim, nr, mr) = (job.in_dim, job.out_dim, 32, super::packed::AVX512.mr);
    let kq = in_pad / 2;
    assert!(data.len() >= panels.end * in_pad * nr && rows.end <= job.m && job.x.len() == job.m * in_dim);
    if rows.is_empty() || panels.is_empty() {
        return;
    }
    // SAFETY: this function's target features include AVX-512 F/BW/VL.
    let s = unsafe { crate::simd::Avx512::new_unchecked() };
    let mc_max = blk.mc_i8(kq * 4, mr).min(rows.len());
    let mut sc = Scratch::take_local();
    let a_pack: &mut [u32] = take(&mut sc.a, mc_max.next_multiple_of(mr) * kq);
    let mut ic = rows.start;
    while ic < rows.end {
        let mc = mc_max.min(rows.end - ic);
        // Tile (r0, h) at offset r0 · kq: [kq, h] pairs, inputs past in_dim zero.
        for (r0, h) in row_tiles(mc, mr) {
            let dst = &mut a_pack[r0 * kq..(r0 + h) * kq];
            for r in 0..h {
                let xr = &job.x[(ic + r0 + r) * in_dim..(ic + r0 + r + 1) * in_dim];
                for q in 0..kq {
                    let lo = xr.get(2 * q).map_or(0, |&v| bf16::from_f32(v).to_bits());
                    let hi = xr.get(2 * q + 1).map_or(0, |&v| bf16::from_f32(v).to_bits());
                    dst[q * h + r] = lo as u32 | (hi as u32) << 16;
                }
            }
        }
        for j in panels.clone() {
            let c0 = j * nr;
            let n = nr.min(out_dim - c0);
            let cols = Cols {
                scales: None,
                bias: job.bias.map(|b| &b[c0..c0 + n]),
            };
            let bp = data[j * in_pad * nr..].as_ptr();
            for (r0, h) in row_tiles(mc, mr) {
                let ap = a_pack[r0 * kq..].as_ptr();
                super::driver::with_rows!(h, H => {
                    // SAFETY: the packed tile holds [kq, H] pairs, panel j [kq, 32, 2] values (asserted above); y rows
                    // ic + r0 .. + H, columns c0 .. c0 + n belong to this share.
                    unsafe {
                        let acc = tile::<H>(ap, bp, kq);
                        for r in 0..H {
                            store_row(s, &acc[r], job.y.0.add((ic + r0 + r) * out_dim + c0), n, Store::Final, cols);
                        }
                    }
                })
            }
        }
        ic += mc;
    }
    sc.put_local();
}
