//! AVX-512 F + BW + VL (with AVX2/FMA/F16C): 16 f32 lanes.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::Simd;
use crate::isa::Isa;

/// Token: the CPU has AVX-512 F/BW/VL and AVX2/FMA/F16C.
#[derive(Clone, Copy, Debug)]
pub struct Avx512 {
    _private: (),
}

impl Avx512 {
    /// `Some` when the CPU supports AVX-512 F/BW/VL (and AVX2/FMA/F16C).
    pub fn try_new() -> Option<Self> {
        Isa::Avx512.is_supported().then_some(Self { _private: () })
    }

    /// # Safety
    /// The CPU must support [`Isa::Avx512`].
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Self { _private: () }
    }
}

/// Token: the CPU has AVX-512 F/BW/VL, AVX2/FMA/F16C and AVX512_VNNI (`vpdpbusd`).
#[derive(Clone, Copy, Debug)]
pub struct Avx512Vnni {
    _private: (),
}

impl Avx512Vnni {
    /// `Some` when the CPU supports AVX-512 F/BW/VL and AVX512_VNNI.
    pub fn try_new() -> Option<Self> {
        crate::isa::Feature::Avx512Vnni
            .is_present()
            .then_some(Self { _private: () })
    }

    /// # Safety
    /// The CPU must support [`Isa::Avx512`] and AVX512_VNNI.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Self { _private: () }
    }
}

/// Runs AVX-512 intrinsics; only used in methods of [`Avx512`] and [`Avx512Vnni`].
macro_rules! tf {
    ($e:expr) => {
        // SAFETY: expanded only in methods of `Avx512` and `Avx512Vnni`, tokens that exist only on CPUs with
        // AVX-512 F/BW/VL (and VNNI for the latter, whose methods alone use it).
        unsafe { $e }
    };
}

#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

// SAFETY: `Avx512` is only constructed after detecting AVX-512 F/BW/VL + AVX2/FMA/F16C, all its methods use.
unsafe impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    const ISA: Isa = Isa::Avx512;

    #[inline(always)]
    fn zero(self) -> __m512 {
        tf!(_mm512_setzero_ps())
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        tf!(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller makes 16 floats at `p` readable and 64-byte aligned; the token proves AVX-512F.
        unsafe { _mm512_load_ps(p) }
    }
    #[inline(always)]
    unsafe fn loadu(self, p: *const f32) -> __m512 {
        // SAFETY: the caller makes 16 floats at `p` readable; the token proves AVX-512F.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller makes 16 floats at `p` writable and 64-byte aligned; the token proves AVX-512F.
        unsafe { _mm512_store_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn storeu(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller makes 16 floats at `p` writable; the token proves AVX-512F.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> __m512 {
        // SAFETY: the caller makes 16 halves (32 bytes) at `p` readable; the token proves AVX-512F.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> __m512 {
        // SAFETY: the caller makes 16 bf16 (32 bytes) at `p` readable; the token proves AVX-512F.
        // bf16 is the top half of an f32: widen to u32 and shift left by 16.
        unsafe {
            let h = _mm256_loadu_si256(p as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    #[inline(always)]
    unsafe fn load_i8(self, p: *const i8) -> __m512 {
        // SAFETY: the caller makes 16 bytes at `p` readable (unaligned load); the token proves AVX-512F.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))) }
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const bf16) -> (__m512, __m512) {
        // SAFETY: the caller makes 32 bf16 (64 bytes) at `p` readable; the token proves AVX-512F.
        // Lane j holds p[2j] in its low half and p[2j + 1] in its high half: shift the low one up, mask the
        // high one (a bf16 is the top half of an f32).
        unsafe {
            let x = _mm512_loadu_si512(p as *const __m512i);
            let even = _mm512_slli_epi32::<16>(x);
            let odd = _mm512_and_si512(x, _mm512_set1_epi32(0xffff_0000_u32 as i32));
            (_mm512_castsi512_ps(even), _mm512_castsi512_ps(odd))
        }
    }
    #[inline(always)]
    unsafe fn load_i8_quads(self, p: *const i8) -> [__m512; 4] {
        // SAFETY: the caller makes 64 bytes at `p` readable; the token proves AVX-512F.
        // Byte t of each 32-bit lane moved to the top and shifted back arithmetically: sign-extended.
        unsafe {
            let x = _mm512_loadu_si512(p as *const __m512i);
            [
                _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(x))),
                _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(x))),
                _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(x))),
                _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(x)),
            ]
        }
    }
    #[inline(always)]
    fn mask_ge(self, a: __m512, b: __m512) -> u32 {
        tf!(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, b) as u32)
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> __m512 {
        debug_assert!(n <= 16);
        // SAFETY: masked-off lanes are not accessed (no fault); lanes 0..n the caller makes readable.
        unsafe { _mm512_maskz_loadu_ps(tail_mask(n), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: __m512, n: usize) {
        debug_assert!(n <= 16);
        // SAFETY: masked-off lanes are not accessed; lanes 0..n the caller makes writable.
        unsafe { _mm512_mask_storeu_ps(p, tail_mask(n), v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        tf!(_mm512_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        tf!(_mm512_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        tf!(_mm512_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        tf!(_mm512_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        tf!(_mm512_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // vmaxps returns the second operand when either is NaN.
        tf!(_mm512_max_ps(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        tf!(_mm512_min_ps(a, b))
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        tf!(_mm512_abs_ps(a))
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        tf!(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        tf!(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127)
        ))))
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m512) -> f32 {
        tf!({
            let s = _mm256_add_ps(
                _mm512_castps512_ps256(a),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a))),
            );
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        tf!({
            let s = _mm256_max_ps(
                _mm512_castps512_ps256(a),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a))),
            );
            let s = _mm_max_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
}

// SAFETY: `Avx512` exists only on CPUs with AVX-512 F/BW (all these instructions are F or BW).
unsafe impl super::DotI8 for Avx512 {
    type S = Avx512;
    type Acc = __m512i;
    type W = __m512i;
    /// `(|x|, lanes where x < 0)` broadcast: `vpmaddubsw` takes the unsigned `|x|` times the signed `w · sign(x)`.
    type A = (__m512i, __mmask64);
    /// 24 accumulators, 2 weight vectors, |x|, 0, the ones and two temporaries within 32 registers.
    const MR: usize = 12;
    /// `x`, then `|x|`.
    const A_BYTES: usize = 8;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        // |x| <= 127: the quantizer never makes -128.
        let a = x.map(|v| v.unsigned_abs() as i8);
        [x[0], x[1], x[2], x[3], a[0], a[1], a[2], a[3]]
    }

    #[inline(always)]
    fn simd(self) -> Avx512 {
        self
    }
    #[inline(always)]
    fn zero(self) -> __m512i {
        tf!(_mm512_setzero_si512())
    }
    #[inline(always)]
    fn w_zero(self) -> __m512i {
        tf!(_mm512_setzero_si512())
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> __m512i {
        // SAFETY: the caller makes 64 bytes at `p` readable; the token proves AVX-512F.
        unsafe { _mm512_loadu_si512(p as *const __m512i) }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> (__m512i, __mmask64) {
        // SAFETY: the caller makes 8 bytes at `p` readable (x, then |x|); the token proves AVX-512 F/BW.
        unsafe {
            let x = _mm512_set1_epi32((p as *const i32).read_unaligned());
            let ax = _mm512_set1_epi32((p.add(4) as *const i32).read_unaligned());
            (ax, _mm512_movepi8_mask(x))
        }
    }
    #[inline(always)]
    fn dot(self, acc: __m512i, (ax, neg): (__m512i, __mmask64), w: __m512i) -> __m512i {
        // As AVX2's: |x| · (w · sign(x)); AVX-512 has no `vpsignb`, so w is negated under the mask of negative x
        // (x = 0 gives |x| = 0). A `vpmaddubsw` pair is at most 2 · 127 · 127 = 32258: no saturation.
        tf!({
            let sw = _mm512_mask_sub_epi8(w, neg, _mm512_setzero_si512(), w);
            let pairs = _mm512_maddubs_epi16(ax, sw);
            _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
        })
    }
    #[inline(always)]
    unsafe fn finish(self, acc: __m512i, _col_sums: *const i32) -> __m512 {
        tf!(_mm512_cvtepi32_ps(acc))
    }
}

// SAFETY: `Avx512Vnni` exists only on CPUs with AVX-512 F/BW/VL and AVX512_VNNI.
unsafe impl super::DotI8 for Avx512Vnni {
    type S = Avx512;
    type Acc = __m512i;
    type W = __m512i;
    /// `x + 128` (unsigned) broadcast: `vpdpbusd` multiplies unsigned by signed bytes.
    type A = __m512i;
    /// 28 accumulators, 2 weight vectors and the broadcast within 32 registers.
    const MR: usize = crate::linear::packed::AVX512.mr_i8;
    /// `x + 128`.
    const A_BYTES: usize = 4;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        // x + 128 as a byte is x ^ 0x80.
        let u = x.map(|v| (v as u8 ^ 0x80) as i8);
        [u[0], u[1], u[2], u[3], 0, 0, 0, 0]
    }

    #[inline(always)]
    fn simd(self) -> Avx512 {
        // SAFETY: AVX-512 VNNI implies the AVX-512 F/BW/VL this token was built on.
        unsafe { Avx512::new_unchecked() }
    }
    #[inline(always)]
    fn zero(self) -> __m512i {
        tf!(_mm512_setzero_si512())
    }
    #[inline(always)]
    fn w_zero(self) -> __m512i {
        tf!(_mm512_setzero_si512())
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> __m512i {
        // SAFETY: the caller makes 64 bytes at `p` readable; the token proves AVX-512F.
        unsafe { _mm512_loadu_si512(p as *const __m512i) }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> __m512i {
        // SAFETY: the caller makes 4 bytes at `p` readable (x + 128, see `prep`); the token proves AVX-512F.
        unsafe { _mm512_set1_epi32((p as *const i32).read_unaligned()) }
    }
    #[inline(always)]
    fn dot(self, acc: __m512i, a: __m512i, w: __m512i) -> __m512i {
        // Σ (x + 128) · w: exact, wrapping in i32 (the offset is removed in `finish`, also wrapping, so the result
        // is exact whenever the true sum fits in i32).
        tf!(_mm512_dpbusd_epi32(acc, a, w))
    }
    #[inline(always)]
    unsafe fn finish(self, acc: __m512i, col_sums: *const i32) -> __m512 {
        // SAFETY: the caller makes 16 i32 at `col_sums` readable; the token proves AVX-512F.
        unsafe {
            let offset = _mm512_slli_epi32::<7>(_mm512_loadu_si512(col_sums as *const __m512i));
            _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, offset))
        }
    }
}

/// The block dot products on 256-bit vectors (one block of 32 values per register), shared by [`Avx512`] and
/// [`Avx512Vnni`]; `$dot` makes the i32 sums of `|w|` (unsigned) times `x · sign(w)` (signed).
macro_rules! dot_q_avx512 {
    ($t:ty, |$u:ident, $s:ident| $dot:expr) => {
        // SAFETY: the token exists only on CPUs with AVX-512 F/BW/VL and AVX2/FMA/F16C (and VNNI for
        // `Avx512Vnni`, whose `$dot` alone uses it).
        unsafe impl super::DotQ for $t {
            type Q = __m256i;
            type F = __m256;

            #[inline(always)]
            fn fzero(self) -> __m256 {
                tf!(_mm256_setzero_ps())
            }
            #[inline(always)]
            unsafe fn load_q8(self, p: *const i8) -> __m256i {
                // SAFETY: the caller makes 32 bytes at `p` readable; the token proves AVX.
                unsafe { _mm256_loadu_si256(p as *const __m256i) }
            }
            #[inline(always)]
            unsafe fn load_q4(self, p: *const u8) -> __m256i {
                // SAFETY: the caller makes 16 bytes at `p` readable; the token proves AVX2.
                unsafe {
                    let b = _mm_loadu_si128(p as *const __m128i);
                    let m = _mm_set1_epi8(15);
                    let lo = _mm_and_si128(b, m);
                    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
                    _mm256_set_m128i(hi, lo)
                }
            }
            #[inline(always)]
            fn offset8(self, q: __m256i) -> __m256i {
                tf!(_mm256_sub_epi8(q, _mm256_set1_epi8(8)))
            }
            #[inline(always)]
            fn dot_add(self, acc: __m256, w: __m256i, x: __m256i, scale: f32) -> __m256 {
                // |w| reads as unsigned (-128 as 128); x is never -128, so x · sign(w) is exact.
                tf!({
                    let ($u, $s) = (_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps($dot), _mm256_set1_ps(scale), acc)
                })
            }
            #[inline(always)]
            fn dot_add_u4(self, acc: __m256, w: __m256i, x: __m256i, scale: f32) -> __m256 {
                // w in 0 ..= 15 is already the unsigned operand.
                tf!({
                    let ($u, $s) = (w, x);
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps($dot), _mm256_set1_ps(scale), acc)
                })
            }
            #[inline(always)]
            fn reduce(self, acc: __m256) -> f32 {
                tf!({
                    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
                    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
                })
            }
        }
    };
}
// `vpmaddubsw` pairs are at most 2 · 128 · 127 = 32512 < 32767 (no saturation), `vpmaddwd` by ones adds them.
dot_q_avx512!(Avx512, |u, s| _mm256_madd_epi16(
    _mm256_maddubs_epi16(u, s),
    _mm256_set1_epi16(1)
));
// `vpdpbusd`: four u8 x i8 products into each i32, no intermediate saturation.
dot_q_avx512!(Avx512Vnni, |u, s| _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));

// SAFETY: `Avx512Vnni` exists only on CPUs with AVX-512 F/BW/VL and AVX512_VNNI, all that these methods use.
unsafe impl super::DotG for Avx512Vnni {
    type S = Avx512;
    type I = __m512i;
    /// The stored `w + 128` is `vpdpbusd`'s unsigned operand, the broadcast activations its signed one.
    const Q8_EXCESS: i32 = 128;

    #[inline(always)]
    fn simd(self) -> Avx512 {
        // SAFETY: AVX-512 VNNI implies the AVX-512 F/BW/VL this token was built on.
        unsafe { Avx512::new_unchecked() }
    }
    #[inline(always)]
    unsafe fn q8<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [__m512i; R] {
        // Two chains per row (even and odd quads) halve the dependent `vpdpbusd`s; sums exact in i32
        // (|Σ| <= 32 · 255 · 127 + |init|).
        // SAFETY: the caller makes w .. w + 512 (aligned) and x[r] .. x[r] + 32 readable; the token proves the ISA.
        unsafe {
            let mut a0 = init.map(|c| _mm512_set1_epi32(c));
            let mut a1 = [_mm512_setzero_si512(); R];
            for k in 0..8 {
                let wv = _mm512_load_si512(w.add(64 * k) as *const __m512i);
                for r in 0..R {
                    let xv = _mm512_set1_epi32((x[r].add(4 * k) as *const i32).read_unaligned());
                    if k % 2 == 0 {
                        a0[r] = _mm512_dpbusd_epi32(a0[r], wv, xv);
                    } else {
                        a1[r] = _mm512_dpbusd_epi32(a1[r], wv, xv);
                    }
                }
            }
            std::array::from_fn(|r| _mm512_add_epi32(a0[r], a1[r]))
        }
    }
    #[inline(always)]
    unsafe fn q4<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [__m512i; R] {
        // One AND (low nibbles: quad k) and one shift + AND (high nibbles: quad k + 4) per 128 weights.
        // SAFETY: the caller makes w .. w + 256 (aligned) and x[r] .. x[r] + 32 readable; the token proves the ISA.
        unsafe {
            let m = _mm512_set1_epi8(15);
            let mut a0 = init.map(|c| _mm512_set1_epi32(c));
            let mut a1 = [_mm512_setzero_si512(); R];
            for k in 0..4 {
                let v = _mm512_load_si512(w.add(64 * k) as *const __m512i);
                let lo = _mm512_and_si512(v, m);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m);
                for r in 0..R {
                    let xl = _mm512_set1_epi32((x[r].add(4 * k) as *const i32).read_unaligned());
                    let xh = _mm512_set1_epi32((x[r].add(16 + 4 * k) as *const i32).read_unaligned());
                    a0[r] = _mm512_dpbusd_epi32(a0[r], lo, xl);
                    a1[r] = _mm512_dpbusd_epi32(a1[r], hi, xh);
                }
            }
            std::array::from_fn(|r| _mm512_add_epi32(a0[r], a1[r]))
        }
    }
    #[inline(always)]
    fn cvt(self, i: &__m512i, _v: usize) -> __m512 {
        tf!(_mm512_cvtepi32_ps(*i))
    }
}

// SAFETY: `Avx512` exists only on CPUs with AVX-512 F/BW/VL, all that these methods use.
unsafe impl super::DotG for Avx512 {
    type S = Avx512;
    type I = __m512i;
    /// The same groups as [`Avx512Vnni`]'s (the layout belongs to the ISA), XOR 0x80 back to `w` in registers.
    const Q8_EXCESS: i32 = 0;

    #[inline(always)]
    fn simd(self) -> Avx512 {
        self
    }
    #[inline(always)]
    unsafe fn q8<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [__m512i; R] {
        // Without VNNI: the stored byte XOR 0x80 is w; `vpmaddubsw` takes |w| (unsigned: -128 reads as 128) times
        // x with w's sign (x is never -128, so negating it is exact; AVX-512 has no `vpsignb`, so x is negated
        // under the mask of negative w). A pair is at most 2 · 128 · 127 = 32512 < 32767: no saturation.
        // SAFETY: the caller makes w .. w + 512 (aligned) and x[r] .. x[r] + 32 readable; the token proves the ISA.
        unsafe {
            let ones = _mm512_set1_epi16(1);
            let mut acc = init.map(|c| _mm512_set1_epi32(c));
            for k in 0..8 {
                let wv = _mm512_xor_si512(
                    _mm512_load_si512(w.add(64 * k) as *const __m512i),
                    _mm512_set1_epi8(-128),
                );
                let aw = _mm512_abs_epi8(wv);
                let neg = _mm512_movepi8_mask(wv);
                for r in 0..R {
                    let xv = _mm512_set1_epi32((x[r].add(4 * k) as *const i32).read_unaligned());
                    let sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
                    acc[r] = _mm512_add_epi32(acc[r], _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), ones));
                }
            }
            acc
        }
    }
    #[inline(always)]
    unsafe fn q4<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [__m512i; R] {
        // Nibbles (0 ..= 15) are `vpmaddubsw`'s unsigned operand as they are: a pair is at most 2 · 15 · 127 = 3810,
        // so the 8 pairs of a block's 8 quads add up in i16 (<= 30480 < 32767) before one `vpmaddwd`.
        // SAFETY: the caller makes w .. w + 256 (aligned) and x[r] .. x[r] + 32 readable; the token proves the ISA.
        unsafe {
            let m = _mm512_set1_epi8(15);
            let mut p = [_mm512_setzero_si512(); R];
            for k in 0..4 {
                let v = _mm512_load_si512(w.add(64 * k) as *const __m512i);
                let lo = _mm512_and_si512(v, m);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m);
                for r in 0..R {
                    let xl = _mm512_set1_epi32((x[r].add(4 * k) as *const i32).read_unaligned());
                    let xh = _mm512_set1_epi32((x[r].add(16 + 4 * k) as *const i32).read_unaligned());
                    let s = _mm512_add_epi16(_mm512_maddubs_epi16(lo, xl), _mm512_maddubs_epi16(hi, xh));
                    p[r] = _mm512_add_epi16(p[r], s);
                }
            }
            let ones = _mm512_set1_epi16(1);
            std::array::from_fn(|r| _mm512_add_epi32(_mm512_set1_epi32(init[r]), _mm512_madd_epi16(p[r], ones)))
        }
    }
    #[inline(always)]
    fn cvt(self, i: &__m512i, _v: usize) -> __m512 {
        tf!(_mm512_cvtepi32_ps(*i))
    }
}

// The K-quant dot products: AVX2's 256-bit ones (the AVX-512 tokens have AVX2), with VNNI's `vpdpwssd`.
super::avx2::dot_k_avx2!(Avx512, |acc, pairs, sc| _mm256_add_epi32(
    acc,
    _mm256_madd_epi16(pairs, sc)
));
// VNNI: `vpdpwssd` multiplies the pairs by the scales and accumulates in one instruction.
super::avx2::dot_k_avx2!(Avx512Vnni, |acc, pairs, sc| _mm256_dpwssd_epi32(acc, pairs, sc));
