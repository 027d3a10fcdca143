//! AArch64 NEON: 4 f32 lanes.

use std::arch::aarch64::*;

use half::{bf16, f16};

use super::Simd;
use crate::isa::Isa;

/// Token: the CPU has NEON (every AArch64 Linux CPU does).
#[derive(Clone, Copy, Debug)]
pub struct Neon {
    _private: (),
}

impl Neon {
    /// `Some` when the CPU supports NEON.
    pub fn try_new() -> Option<Self> {
        Isa::Neon.is_supported().then_some(Self { _private: () })
    }

    /// # Safety
    /// The CPU must support NEON.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Self { _private: () }
    }
}

/// Token: the CPU has NEON and the Armv8.2 dot product (`sdot`).
#[derive(Clone, Copy, Debug)]
pub struct NeonDot {
    _private: (),
}

impl NeonDot {
    /// `Some` when the CPU supports NEON and `dotprod`.
    pub fn try_new() -> Option<Self> {
        crate::isa::Feature::NeonDot
            .is_present()
            .then_some(Self { _private: () })
    }

    /// # Safety
    /// The CPU must support NEON and `dotprod`.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Self { _private: () }
    }
}

/// Runs NEON intrinsics; only used in methods of [`Neon`] and [`NeonDot`].
macro_rules! tf {
    ($e:expr) => {
        // SAFETY: expanded only in methods of `Neon`, a token that exists only on CPUs with NEON.
        #[allow(unused_unsafe)]
        unsafe {
            $e
        }
    };
}

// SAFETY: `Neon` is only constructed after detecting NEON, all that its methods use.
unsafe impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;
    const ISA: Isa = Isa::Neon;

    #[inline(always)]
    fn zero(self) -> float32x4_t {
        tf!(vdupq_n_f32(0.0))
    }
    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        tf!(vdupq_n_f32(x))
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        // SAFETY: the caller makes 4 floats at `p` readable.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn loadu(self, p: *const f32) -> float32x4_t {
        // SAFETY: the caller makes 4 floats at `p` readable (vld1q has no alignment requirement).
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller makes 4 floats at `p` writable.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn storeu(self, p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller makes 4 floats at `p` writable.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> float32x4_t {
        // SAFETY: the caller makes 4 halves at `p` readable.
        let h = unsafe { vld1_u16(p as *const u16) };
        tf!({
            // Exponent and mantissa moved to f32 position, then scaled by 2^112 (rebias 15 -> 127;
            // f16 subnormals become f32 normals through the multiply). Inf/NaN: exponent set to all ones.
            let w = vmovl_u16(h);
            let sign = vshlq_n_u32::<16>(vandq_u32(w, vdupq_n_u32(0x8000)));
            let em = vshlq_n_u32::<13>(vandq_u32(w, vdupq_n_u32(0x7fff)));
            let f = vmulq_f32(vreinterpretq_f32_u32(em), vdupq_n_f32(f32::from_bits(0x7780_0000)));
            let is_special = vcgeq_u32(em, vdupq_n_u32(0x0f80_0000));
            let bits = vorrq_u32(
                vreinterpretq_u32_f32(f),
                vandq_u32(is_special, vdupq_n_u32(0x7f80_0000)),
            );
            vreinterpretq_f32_u32(vorrq_u32(bits, sign))
        })
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> float32x4_t {
        // SAFETY: the caller makes 4 bf16 at `p` readable.
        let h = unsafe { vld1_u16(p as *const u16) };
        tf!(vreinterpretq_f32_u32(vshlq_n_u32::<16>(vmovl_u16(h))))
    }
    #[inline(always)]
    unsafe fn load_i8(self, p: *const i8) -> float32x4_t {
        // SAFETY: the caller makes 4 bytes at `p` readable (read as one unaligned u32).
        let bits = unsafe { (p as *const u32).read_unaligned() };
        // i8x8 (the 4 bytes twice) -> i16x8 -> low i16x4 -> i32x4 -> f32x4.
        tf!(vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u32(
            vdup_n_u32(bits)
        ))))))
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const bf16) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller makes 8 bf16 (16 bytes) at `p` readable.
        let x = unsafe { vreinterpretq_u32_u16(vld1q_u16(p as *const u16)) };
        // Lane j holds p[2j] in its low half and p[2j + 1] in its high half.
        tf!((
            vreinterpretq_f32_u32(vshlq_n_u32::<16>(x)),
            vreinterpretq_f32_u32(vandq_u32(x, vdupq_n_u32(0xffff_0000)))
        ))
    }
    #[inline(always)]
    unsafe fn load_i8_quads(self, p: *const i8) -> [float32x4_t; 4] {
        // SAFETY: the caller makes 16 bytes at `p` readable.
        let x = unsafe { vreinterpretq_s32_s8(vld1q_s8(p)) };
        // Byte t of each 32-bit lane moved to the top and shifted back arithmetically: sign-extended.
        tf!([
            vcvtq_f32_s32(vshrq_n_s32::<24>(vshlq_n_s32::<24>(x))),
            vcvtq_f32_s32(vshrq_n_s32::<24>(vshlq_n_s32::<16>(x))),
            vcvtq_f32_s32(vshrq_n_s32::<24>(vshlq_n_s32::<8>(x))),
            vcvtq_f32_s32(vshrq_n_s32::<24>(x)),
        ])
    }
    #[inline(always)]
    fn mask_ge(self, a: float32x4_t, b: float32x4_t) -> u32 {
        const BITS: [u32; 4] = [1, 2, 4, 8];
        // SAFETY (of the load inside `tf!`): BITS is 4 readable u32.
        tf!(vaddvq_u32(vandq_u32(vcgeq_f32(a, b), vld1q_u32(BITS.as_ptr()))))
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        tf!(vaddq_f32(a, b))
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        tf!(vsubq_f32(a, b))
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        tf!(vmulq_f32(a, b))
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        tf!(vdivq_f32(a, b))
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        tf!(vfmaq_f32(c, a, b))
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // maxNum: a NaN operand yields the other one.
        tf!(vmaxnmq_f32(a, b))
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        tf!(vminnmq_f32(a, b))
    }
    #[inline(always)]
    fn abs(self, a: float32x4_t) -> float32x4_t {
        tf!(vabsq_f32(a))
    }
    #[inline(always)]
    fn round(self, a: float32x4_t) -> float32x4_t {
        tf!(vrndnq_f32(a))
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        tf!(vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n),
            vdupq_n_s32(127)
        ))))
    }
    #[inline(always)]
    fn reduce_sum(self, a: float32x4_t) -> f32 {
        tf!(vaddvq_f32(a))
    }
    #[inline(always)]
    fn reduce_max(self, a: float32x4_t) -> f32 {
        tf!(vmaxnmvq_f32(a))
    }
}

// SAFETY: `Neon` exists only on CPUs with NEON, all these instructions are NEON.
unsafe impl super::DotI8 for Neon {
    type S = Neon;
    /// Two i32x4 of pair sums (`sadalp` of the low and the high 8 products), combined in `finish`.
    type Acc = (int32x4_t, int32x4_t);
    type W = int8x16_t;
    type A = int8x16_t;
    /// 24 accumulator registers, 3 weight vectors and the broadcast within 32.
    const MR: usize = 4;
    const A_BYTES: usize = 4;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        [x[0], x[1], x[2], x[3], 0, 0, 0, 0]
    }

    #[inline(always)]
    fn simd(self) -> Neon {
        self
    }
    #[inline(always)]
    fn zero(self) -> (int32x4_t, int32x4_t) {
        tf!((vdupq_n_s32(0), vdupq_n_s32(0)))
    }
    #[inline(always)]
    fn w_zero(self) -> int8x16_t {
        tf!(vdupq_n_s8(0))
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> int8x16_t {
        // SAFETY: the caller makes 16 bytes at `p` readable.
        unsafe { vld1q_s8(p) }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> int8x16_t {
        // SAFETY: the caller makes 4 bytes at `p` readable.
        let bits = unsafe { (p as *const i32).read_unaligned() };
        tf!(vreinterpretq_s8_s32(vdupq_n_s32(bits)))
    }
    #[inline(always)]
    fn dot(self, (lo, hi): (int32x4_t, int32x4_t), a: int8x16_t, w: int8x16_t) -> (int32x4_t, int32x4_t) {
        // Products of i8 fit i16 (|p| <= 16384); `sadalp` adds neighbouring pairs into the i32 lanes:
        // lo = [c0 t01, c0 t23, c1 t01, c1 t23], hi the same for columns 2 and 3.
        tf!((
            vpadalq_s16(lo, vmull_s8(vget_low_s8(w), vget_low_s8(a))),
            vpadalq_s16(hi, vmull_high_s8(w, a))
        ))
    }
    #[inline(always)]
    unsafe fn finish(self, (lo, hi): (int32x4_t, int32x4_t), _col_sums: *const i32) -> float32x4_t {
        tf!(vcvtq_f32_s32(vpaddq_s32(lo, hi)))
    }
}

// SAFETY: `NeonDot` exists only on CPUs with NEON and `dotprod` (the only instructions used).
unsafe impl super::DotI8 for NeonDot {
    type S = Neon;
    type Acc = int32x4_t;
    type W = int8x16_t;
    type A = int8x16_t;
    const MR: usize = crate::linear::packed::NEON.mr_i8;
    const A_BYTES: usize = 4;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        [x[0], x[1], x[2], x[3], 0, 0, 0, 0]
    }

    #[inline(always)]
    fn simd(self) -> Neon {
        // SAFETY: `dotprod` implies NEON.
        unsafe { Neon::new_unchecked() }
    }
    #[inline(always)]
    fn zero(self) -> int32x4_t {
        tf!(vdupq_n_s32(0))
    }
    #[inline(always)]
    fn w_zero(self) -> int8x16_t {
        tf!(vdupq_n_s8(0))
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> int8x16_t {
        // SAFETY: the caller makes 16 bytes at `p` readable.
        unsafe { vld1q_s8(p) }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> int8x16_t {
        // SAFETY: the caller makes 4 bytes at `p` readable.
        let bits = unsafe { (p as *const i32).read_unaligned() };
        tf!(vreinterpretq_s8_s32(vdupq_n_s32(bits)))
    }
    #[inline(always)]
    fn dot(self, mut acc: int32x4_t, a: int8x16_t, w: int8x16_t) -> int32x4_t {
        // `sdot` (its intrinsic is not stable in Rust yet): acc[j] += Σ_t w[4j + t] · a[4j + t], exact, wrapping.
        // SAFETY: the token proves `dotprod`; the instruction touches registers only.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
    #[inline(always)]
    unsafe fn finish(self, acc: int32x4_t, _col_sums: *const i32) -> float32x4_t {
        tf!(vcvtq_f32_s32(acc))
    }
}

/// The NEON block dot products, shared by [`Neon`] (`smull` + `sadalp`) and [`NeonDot`] (`sdot`): `$sums` makes
/// the i32 sums of the signed bytes `w` and `x` (two registers of 16 each).
macro_rules! dot_q_neon {
    ($t:ty, |$w:ident, $x:ident| $sums:expr) => {
        // SAFETY: the token exists only on CPUs with NEON (and `dotprod` for `NeonDot`, whose `$sums` alone uses
        // it).
        unsafe impl super::DotQ for $t {
            type Q = (int8x16_t, int8x16_t);
            type F = float32x4_t;

            #[inline(always)]
            fn fzero(self) -> float32x4_t {
                tf!(vdupq_n_f32(0.0))
            }
            #[inline(always)]
            unsafe fn load_q8(self, p: *const i8) -> (int8x16_t, int8x16_t) {
                // SAFETY: the caller makes 32 bytes at `p` readable.
                unsafe { (vld1q_s8(p), vld1q_s8(p.add(16))) }
            }
            #[inline(always)]
            unsafe fn load_q4(self, p: *const u8) -> (int8x16_t, int8x16_t) {
                // SAFETY: the caller makes 16 bytes at `p` readable.
                let b = unsafe { vld1q_u8(p) };
                tf!((
                    vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))),
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(b))
                ))
            }
            #[inline(always)]
            fn offset8(self, (a, b): (int8x16_t, int8x16_t)) -> (int8x16_t, int8x16_t) {
                tf!((vsubq_s8(a, vdupq_n_s8(8)), vsubq_s8(b, vdupq_n_s8(8))))
            }
            #[inline(always)]
            fn dot_add(
                self,
                acc: float32x4_t,
                $w: (int8x16_t, int8x16_t),
                $x: (int8x16_t, int8x16_t),
                scale: f32,
            ) -> float32x4_t {
                let sums: int32x4_t = { $sums };
                tf!(vfmaq_n_f32(acc, vcvtq_f32_s32(sums), scale))
            }
            #[inline(always)]
            fn reduce(self, acc: float32x4_t) -> f32 {
                tf!(vaddvq_f32(acc))
            }
        }
    };
}
// Products of i8 fit i16 (|p| <= 128 · 127); `sadalp` adds neighbouring pairs into i32.
dot_q_neon!(Neon, |w, x| tf!({
    let p = vpaddlq_s16(vmull_s8(vget_low_s8(w.0), vget_low_s8(x.0)));
    let p = vpadalq_s16(p, vmull_high_s8(w.0, x.0));
    let p = vpadalq_s16(p, vmull_s8(vget_low_s8(w.1), vget_low_s8(x.1)));
    vpadalq_s16(p, vmull_high_s8(w.1, x.1))
}));
dot_q_neon!(NeonDot, |w, x| {
    let mut acc = { tf!(vdupq_n_s32(0)) };
    // `sdot` (its intrinsic is not stable in Rust yet): acc[j] += Σ_t w[4j + t] · x[4j + t], exact.
    // SAFETY: the token proves `dotprod`; the instruction touches registers only.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {w0:v}.16b, {x0:v}.16b",
            "sdot {acc:v}.4s, {w1:v}.16b, {x1:v}.16b",
            acc = inout(vreg) acc,
            w0 = in(vreg) w.0,
            x0 = in(vreg) x.0,
            w1 = in(vreg) w.1,
            x1 = in(vreg) x.1,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
});

/// The NEON group dot products, shared by [`Neon`] and [`NeonDot`]: a group's 16 rows are four vectors of 4
/// (each 16 bytes of weights: 4 rows x 4 inputs), sharing each broadcast of 4 activation bytes. `$quad(acc, w, x)`
/// adds one such vector's products (`w`, `x` signed bytes) to the accumulator, `$finish(acc)` makes the 4 row sums.
macro_rules! dot_g_neon {
    ($t:ty, $acc:ty, $zero:expr, |$a:ident, $w:ident, $x:ident| $quad:expr, |$f:ident| $finish:expr) => {
        impl $t {
            /// `init + ` the 4 row sums of each accumulator.
            #[inline(always)]
            fn g_sums<const R: usize>(acc: [[$acc; 4]; R], init: [i32; R]) -> [[int32x4_t; 4]; R] {
                tf!(std::array::from_fn(|r| {
                    let c = vdupq_n_s32(init[r]);
                    std::array::from_fn(|q| {
                        let $f = acc[r][q];
                        vaddq_s32(c, $finish)
                    })
                }))
            }
        }

        // SAFETY: the token exists only on CPUs with NEON (and `dotprod` for `NeonDot`, whose `$quad` alone uses
        // it).
        unsafe impl super::DotG for $t {
            type S = Neon;
            type I = [int32x4_t; 4];
            const Q8_EXCESS: i32 = 0;

            #[inline(always)]
            fn simd(self) -> Neon {
                // SAFETY: both tokens prove NEON.
                unsafe { Neon::new_unchecked() }
            }
            #[inline(always)]
            unsafe fn q8<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [[int32x4_t; 4]; R] {
                // SAFETY: the caller makes w .. w + 512 and x[r] .. x[r] + 32 readable; the token proves NEON.
                unsafe {
                    let mut acc: [[$acc; 4]; R] = [[$zero; 4]; R];
                    for k in 0..8 {
                        let xv: [int8x16_t; R] = std::array::from_fn(|r| {
                            vreinterpretq_s8_s32(vdupq_n_s32((x[r].add(4 * k) as *const i32).read_unaligned()))
                        });
                        for q in 0..4 {
                            let $w = vld1q_s8(w.add(64 * k + 16 * q) as *const i8);
                            for r in 0..R {
                                let ($a, $x) = (acc[r][q], xv[r]);
                                acc[r][q] = $quad;
                            }
                        }
                    }
                    Self::g_sums(acc, init)
                }
            }
            #[inline(always)]
            unsafe fn q4<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [[int32x4_t; 4]; R] {
                // SAFETY: the caller makes w .. w + 256 and x[r] .. x[r] + 32 readable; the token proves NEON.
                unsafe {
                    let mut acc: [[$acc; 4]; R] = [[$zero; 4]; R];
                    for k in 0..4 {
                        let xl: [int8x16_t; R] = std::array::from_fn(|r| {
                            vreinterpretq_s8_s32(vdupq_n_s32((x[r].add(4 * k) as *const i32).read_unaligned()))
                        });
                        let xh: [int8x16_t; R] = std::array::from_fn(|r| {
                            vreinterpretq_s8_s32(vdupq_n_s32((x[r].add(16 + 4 * k) as *const i32).read_unaligned()))
                        });
                        for q in 0..4 {
                            let v = vld1q_u8(w.add(64 * k + 16 * q));
                            let lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15)));
                            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                            for r in 0..R {
                                let ($a, $w, $x) = (acc[r][q], lo, xl[r]);
                                let t = $quad;
                                let ($a, $w, $x) = (t, hi, xh[r]);
                                acc[r][q] = $quad;
                            }
                        }
                    }
                    Self::g_sums(acc, init)
                }
            }
            #[inline(always)]
            fn cvt(self, i: &[int32x4_t; 4], v: usize) -> float32x4_t {
                tf!(vcvtq_f32_s32(i[v]))
            }
        }
    };
}
// Without `sdot`: products of i8 fit i16 (|p| <= 128 · 127); `sadalp` adds neighbouring pairs into i32, in two
// accumulators (rows 0-1 and rows 2-3 of the vector, two lanes per row) that a pairwise add turns into the 4 row
// sums at the end.
dot_g_neon!(
    Neon,
    (int32x4_t, int32x4_t),
    (vdupq_n_s32(0), vdupq_n_s32(0)),
    |a, w, x| (
        vpadalq_s16(a.0, vmull_s8(vget_low_s8(w), vget_low_s8(x))),
        vpadalq_s16(a.1, vmull_high_s8(w, x))
    ),
    |f| vpaddq_s32(f.0, f.1)
);
// `sdot` (its intrinsic is not stable in Rust yet): acc[j] += Σ_t w[4j + t] · x[4j + t], exact.
dot_g_neon!(
    NeonDot,
    int32x4_t,
    vdupq_n_s32(0),
    |a, w, x| {
        let mut acc = a;
        // SAFETY: the token proves `dotprod`; the instruction touches registers only.
        std::arch::asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    },
    |f| f
);

/// The K-quant dot products ([`super::DotK`]), shared by [`Neon`] and [`NeonDot`]: `$half` makes the i32 sums
/// (4 lanes) of the products of 16 bytes `w` and `x`, which are then scaled by their 16 values' scale.
macro_rules! dot_k_neon {
    ($t:ty, |$w:ident, $x:ident| $half:expr) => {
        // SAFETY: the token exists only on CPUs with NEON (and `dotprod` for `NeonDot`, whose `$half` alone uses
        // it).
        unsafe impl super::DotK for $t {
            type I = int32x4_t;

            #[inline(always)]
            fn izero(self) -> int32x4_t {
                tf!(vdupq_n_s32(0))
            }
            #[inline(always)]
            unsafe fn nibbles(self, p: *const u8, shift: u32) -> (int8x16_t, int8x16_t) {
                // SAFETY: the caller makes 32 bytes at `p` readable.
                let (a, b) = unsafe { (vld1q_u8(p), vld1q_u8(p.add(16))) };
                tf!({
                    let (n, m) = (vdupq_n_s8(-(shift as i8)), vdupq_n_u8(15));
                    (
                        vreinterpretq_s8_u8(vandq_u8(vshlq_u8(a, n), m)),
                        vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b, n), m)),
                    )
                })
            }
            #[inline(always)]
            unsafe fn or_high(
                self,
                q: (int8x16_t, int8x16_t),
                p: *const u8,
                shift: u32,
                mask: u8,
            ) -> (int8x16_t, int8x16_t) {
                // SAFETY: the caller makes 32 bytes at `p` readable.
                let (a, b) = unsafe { (vld1q_u8(p), vld1q_u8(p.add(16))) };
                tf!({
                    let (n, m) = (vdupq_n_s8(-(shift as i8)), vdupq_n_u8(mask));
                    let h = |v| vreinterpretq_s8_u8(vshlq_n_u8::<4>(vandq_u8(vshlq_u8(v, n), m)));
                    (vorrq_s8(q.0, h(a)), vorrq_s8(q.1, h(b)))
                })
            }
            #[inline(always)]
            fn idot(
                self,
                acc: int32x4_t,
                w: (int8x16_t, int8x16_t),
                x: (int8x16_t, int8x16_t),
                lo: i32,
                hi: i32,
            ) -> int32x4_t {
                let half = |$w: int8x16_t, $x: int8x16_t| -> int32x4_t { $half };
                tf!(vmlaq_n_s32(
                    vmlaq_n_s32(acc, half(w.0, x.0), lo),
                    half(w.1, x.1),
                    hi
                ))
            }
            #[inline(always)]
            fn ireduce(self, acc: int32x4_t) -> i32 {
                tf!(vaddvq_s32(acc))
            }
        }
    };
}
// Products of w in 0 ..= 63 and x fit i16; `sadalp` adds neighbouring pairs into i32.
dot_k_neon!(Neon, |w, x| tf!(vpadalq_s16(
    vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x))),
    vmull_high_s8(w, x)
)));
dot_k_neon!(NeonDot, |w, x| {
    let mut acc = { tf!(vdupq_n_s32(0)) };
    // SAFETY: the token proves `dotprod`; the instruction touches registers only.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
});
