//! AVX2 + FMA + F16C: 8 f32 lanes.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::Simd;
use crate::isa::Isa;

/// Token: the CPU has AVX2, FMA and F16C.
#[derive(Clone, Copy, Debug)]
pub struct Avx2 {
    _private: (),
}

impl Avx2 {
    /// `Some` when the CPU supports AVX2, FMA and F16C.
    pub fn try_new() -> Option<Self> {
        Isa::Avx2.is_supported().then_some(Self { _private: () })
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C (e.g. [`Isa::Avx2`] was checked).
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Self { _private: () }
    }
}

/// Token for the int8 x int8 kernels on rows quantized to the reduced range (`±63`, [`crate::I8Range::Reduced`]):
/// AVX2 as [`Avx2`], a different [`super::DotI8`].
#[derive(Clone, Copy, Debug)]
pub struct Avx2Reduced {
    _private: (),
}

impl Avx2Reduced {
    /// # Safety
    /// The CPU must support [`Isa::Avx2`].
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Self { _private: () }
    }
}

/// Runs AVX2/FMA/F16C intrinsics; only used in methods of [`Avx2`] and [`Avx2Reduced`].
macro_rules! tf {
    ($e:expr) => {
        // SAFETY: expanded only in methods of `Avx2` and `Avx2Reduced`, tokens that exist only on CPUs with AVX2,
        // FMA and F16C.
        unsafe { $e }
    };
}

// SAFETY: `Avx2` is only constructed after detecting AVX2, FMA and F16C, all that its methods use.
unsafe impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    const ISA: Isa = Isa::Avx2;

    #[inline(always)]
    fn zero(self) -> __m256 {
        tf!(_mm256_setzero_ps())
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        tf!(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller makes 8 floats at `p` readable and 32-byte aligned; the token proves AVX.
        unsafe { _mm256_load_ps(p) }
    }
    #[inline(always)]
    unsafe fn loadu(self, p: *const f32) -> __m256 {
        // SAFETY: the caller makes 8 floats at `p` readable; the token proves AVX.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller makes 8 floats at `p` writable and 32-byte aligned; the token proves AVX.
        unsafe { _mm256_store_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn storeu(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller makes 8 floats at `p` writable; the token proves AVX.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> __m256 {
        // SAFETY: the caller makes 8 halves (16 bytes) at `p` readable; the token proves F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> __m256 {
        // SAFETY: the caller makes 8 bf16 (16 bytes) at `p` readable; the token proves AVX2.
        // bf16 is the top half of an f32: widen to u32 and shift left by 16.
        unsafe {
            let h = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
    #[inline(always)]
    unsafe fn load_i8(self, p: *const i8) -> __m256 {
        // SAFETY: the caller makes 8 bytes at `p` readable (`_mm_loadl_epi64` reads exactly 8, unaligned);
        // the token proves AVX2.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const bf16) -> (__m256, __m256) {
        // SAFETY: the caller makes 16 bf16 (32 bytes) at `p` readable; the token proves AVX2.
        // Lane j holds p[2j] in its low half and p[2j + 1] in its high half: shift the low one up, mask the
        // high one (a bf16 is the top half of an f32).
        unsafe {
            let x = _mm256_loadu_si256(p as *const __m256i);
            let even = _mm256_slli_epi32::<16>(x);
            let odd = _mm256_and_si256(x, _mm256_set1_epi32(0xffff_0000_u32 as i32));
            (_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd))
        }
    }
    #[inline(always)]
    unsafe fn load_i8_quads(self, p: *const i8) -> [__m256; 4] {
        // SAFETY: the caller makes 32 bytes at `p` readable; the token proves AVX2.
        // Byte t of each 32-bit lane moved to the top and shifted back arithmetically: sign-extended.
        unsafe {
            let x = _mm256_loadu_si256(p as *const __m256i);
            [
                _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(x))),
                _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<16>(x))),
                _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<8>(x))),
                _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(x)),
            ]
        }
    }
    #[inline(always)]
    fn mask_ge(self, a: __m256, b: __m256) -> u32 {
        tf!(_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(a, b)) as u32)
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> __m256 {
        debug_assert!(n <= 8);
        // SAFETY: the mask enables lanes 0..n only, which the caller makes readable; masked-off
        // lanes are not accessed (no fault); the token proves AVX.
        unsafe { _mm256_maskload_ps(p, tail_mask(n)) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: __m256, n: usize) {
        debug_assert!(n <= 8);
        // SAFETY: the mask enables lanes 0..n only, which the caller makes writable; the token proves AVX.
        unsafe { _mm256_maskstore_ps(p, tail_mask(n), v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        tf!(_mm256_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        tf!(_mm256_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        tf!(_mm256_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        tf!(_mm256_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        tf!(_mm256_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // vmaxps returns the second operand when either is NaN.
        tf!(_mm256_max_ps(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        tf!(_mm256_min_ps(a, b))
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        tf!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), a))
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        tf!(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        tf!(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127)
        ))))
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m256) -> f32 {
        tf!({
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        tf!({
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
}

/// Lanes `0..n` set (sign bit), for maskload/maskstore.
#[inline(always)]
fn tail_mask(n: usize) -> __m256i {
    const IDX: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    // SAFETY: only called from `Avx2` methods (token proves AVX2); IDX is 8 readable i32.
    unsafe {
        let idx = _mm256_loadu_si256(IDX.as_ptr() as *const __m256i);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }
}

// SAFETY: `Avx2` exists only on CPUs with AVX2 (all these integer instructions are AVX2).
unsafe impl super::DotI8 for Avx2 {
    type S = Avx2;
    type Acc = __m256i;
    type W = __m256i;
    /// `(|x|, m)` broadcast, `m` = 0xff where x < 0: `vpmaddubsw` takes the unsigned `|x|` times the signed
    /// `w · sign(x) = (w ^ m) - m`.
    type A = (__m256i, __m256i);
    const MR: usize = crate::linear::packed::AVX2.mr_i8;
    /// `|x|`, then the sign masks.
    const A_BYTES: usize = 8;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        // |x| <= 127: the quantizer never makes -128.
        let a = x.map(|v| v.unsigned_abs() as i8);
        let m = x.map(|v| if v < 0 { -1 } else { 0 });
        [a[0], a[1], a[2], a[3], m[0], m[1], m[2], m[3]]
    }
    #[inline(always)]
    fn simd(self) -> Avx2 {
        self
    }
    #[inline(always)]
    fn zero(self) -> __m256i {
        tf!(_mm256_setzero_si256())
    }
    #[inline(always)]
    fn w_zero(self) -> __m256i {
        tf!(_mm256_setzero_si256())
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> __m256i {
        // SAFETY: the caller makes 32 bytes at `p` readable; the token proves AVX.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> (__m256i, __m256i) {
        // SAFETY: the caller makes 8 bytes at `p` readable (|x|, then the masks); the token proves AVX2.
        unsafe {
            let ax = _mm256_set1_epi32((p as *const i32).read_unaligned());
            let m = _mm256_set1_epi32((p.add(4) as *const i32).read_unaligned());
            (ax, m)
        }
    }
    #[inline(always)]
    fn dot(self, acc: __m256i, (ax, m): (__m256i, __m256i), w: __m256i) -> __m256i {
        // |x| · (w · sign(x)) = x · w (x = 0 gives |x| = 0). `vpmaddubsw` adds two such products in i16 with
        // saturation: with |x| and |w| at most 127 a pair is at most 2 · 127 · 127 = 32258 < 32767, so it never
        // saturates. `vpmaddwd` by ones adds the pairs into i32. The sign goes on with xor and subtract (any ALU
        // pipe) rather than `vpsignb`, which shares a pipe with the multiplies (Zen 4: 125 vs 180 GOP/s).
        tf!({
            let sw = _mm256_sub_epi8(_mm256_xor_si256(w, m), m);
            let pairs = _mm256_maddubs_epi16(ax, sw);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        })
    }
    #[inline(always)]
    unsafe fn finish(self, acc: __m256i, _col_sums: *const i32) -> __m256 {
        tf!(_mm256_cvtepi32_ps(acc))
    }
}

// SAFETY: `Avx2Reduced` exists only on CPUs with AVX2 (all these integer instructions are AVX2).
unsafe impl super::DotI8 for Avx2Reduced {
    type S = Avx2;
    type Acc = __m256i;
    type W = __m256i;
    /// `x + 64` broadcast (unsigned, at most 127).
    type A = __m256i;
    const MR: usize = 6;
    /// `x + 64`.
    const A_BYTES: usize = 4;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        // Reduced rows hold -63 ..= 63: x + 64 is 1 ..= 127.
        let u = x.map(|v| v.wrapping_add(64));
        [u[0], u[1], u[2], u[3], 0, 0, 0, 0]
    }
    #[inline(always)]
    fn simd(self) -> Avx2 {
        // SAFETY: this token is made only where AVX2 was checked.
        unsafe { Avx2::new_unchecked() }
    }
    #[inline(always)]
    fn zero(self) -> __m256i {
        tf!(_mm256_setzero_si256())
    }
    #[inline(always)]
    fn w_zero(self) -> __m256i {
        tf!(_mm256_setzero_si256())
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> __m256i {
        // SAFETY: the caller makes 32 bytes at `p` readable; the token proves AVX.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> __m256i {
        // SAFETY: the caller makes 4 bytes at `p` readable (x + 64); the token proves AVX2.
        unsafe { _mm256_set1_epi32((p as *const i32).read_unaligned()) }
    }
    #[inline(always)]
    fn dot(self, acc: __m256i, a: __m256i, w: __m256i) -> __m256i {
        // (x + 64) · w in `vpmaddubsw` pairs: at most 2 · 127 · 127 = 32258 < 32767, no saturation, no sign flip
        // (three instructions per 32 products instead of five). The offset is removed in `finish`.
        tf!(_mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), _mm256_set1_epi16(1))
        ))
    }
    #[inline(always)]
    unsafe fn finish(self, acc: __m256i, col_sums: *const i32) -> __m256 {
        // SAFETY: the caller makes 8 i32 at `col_sums` readable; the token proves AVX2. Σ (x + 64) w - 64 Σ w.
        unsafe {
            let offset = _mm256_slli_epi32::<6>(_mm256_loadu_si256(col_sums as *const __m256i));
            _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, offset))
        }
    }
}

/// The AVX2 block dot products, shared by [`Avx2`] and [`Avx2Reduced`] (the same instructions).
macro_rules! dot_q_avx2 {
    ($t:ty) => {
        // SAFETY: the token exists only on CPUs with AVX2, FMA and F16C, all that these methods use.
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
                // |w| (unsigned: -128 reads as 128) times x · sign(w) (x is never -128, so the sign flip is exact):
                // a `vpmaddubsw` pair is at most 2 · 128 · 127 = 32512 < 32767, no saturation; `vpmaddwd` by ones
                // adds the pairs into i32.
                tf!({
                    let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                    let sums = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(scale), acc)
                })
            }
            #[inline(always)]
            fn dot_add_u4(self, acc: __m256, w: __m256i, x: __m256i, scale: f32) -> __m256 {
                // w in 0 ..= 15 is already the unsigned operand: pairs at most 2 · 15 · 127.
                tf!({
                    let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(scale), acc)
                })
            }
            #[inline(always)]
            fn reduce(self, acc: __m256) -> f32 {
                <Avx2 as Simd>::reduce_sum(Avx2 { _private: () }, acc)
            }
        }
    };
}
dot_q_avx2!(Avx2);
dot_q_avx2!(Avx2Reduced);

/// The AVX2 group dot products, shared by [`Avx2`] and [`Avx2Reduced`] (the same instructions): a group's 16 rows
/// are two vectors of 8, sharing each broadcast of 4 activation bytes.
macro_rules! dot_g_avx2 {
    ($t:ty) => {
        // SAFETY: the token exists only on CPUs with AVX2, FMA and F16C, all that these methods use.
        unsafe impl super::DotG for $t {
            type S = Avx2;
            type I = [__m256i; 2];
            const Q8_EXCESS: i32 = 0;

            #[inline(always)]
            fn simd(self) -> Avx2 {
                Avx2 { _private: () }
            }
            #[inline(always)]
            unsafe fn q8<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [[__m256i; 2]; R] {
                // `vpmaddubsw` takes |w| (unsigned: -128 reads as 128) times x · sign(w) (x is never -128, so the
                // sign flip is exact): a pair is at most 2 · 128 · 127 = 32512 < 32767, no saturation; `vpmaddwd`
                // by ones adds the pairs into i32.
                // SAFETY: the caller makes w .. w + 512 (aligned) and x[r] .. x[r] + 32 readable; the token proves
                // AVX2.
                unsafe {
                    let ones = _mm256_set1_epi16(1);
                    let mut acc = init.map(|c| [_mm256_set1_epi32(c); 2]);
                    for k in 0..8 {
                        let xv: [__m256i; R] = std::array::from_fn(|r| {
                            _mm256_set1_epi32((x[r].add(4 * k) as *const i32).read_unaligned())
                        });
                        for h in 0..2 {
                            let wv = _mm256_load_si256(w.add(64 * k + 32 * h) as *const __m256i);
                            let aw = _mm256_abs_epi8(wv);
                            for r in 0..R {
                                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv[r], wv));
                                acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(p, ones));
                            }
                        }
                    }
                    acc
                }
            }
            #[inline(always)]
            unsafe fn q4<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [[__m256i; 2]; R] {
                // Nibbles (0 ..= 15) are `vpmaddubsw`'s unsigned operand as they are: a pair is at most
                // 2 · 15 · 127 = 3810, so a block's 8 quads add up in i16 (<= 30480 < 32767) before one `vpmaddwd`.
                // SAFETY: the caller makes w .. w + 256 (aligned) and x[r] .. x[r] + 32 readable; the token proves
                // AVX2.
                unsafe {
                    let m = _mm256_set1_epi8(15);
                    let mut p = [[_mm256_setzero_si256(); 2]; R];
                    for k in 0..4 {
                        let xl: [__m256i; R] = std::array::from_fn(|r| {
                            _mm256_set1_epi32((x[r].add(4 * k) as *const i32).read_unaligned())
                        });
                        let xh: [__m256i; R] = std::array::from_fn(|r| {
                            _mm256_set1_epi32((x[r].add(16 + 4 * k) as *const i32).read_unaligned())
                        });
                        for h in 0..2 {
                            let v = _mm256_load_si256(w.add(64 * k + 32 * h) as *const __m256i);
                            let lo = _mm256_and_si256(v, m);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m);
                            for r in 0..R {
                                let s =
                                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl[r]), _mm256_maddubs_epi16(hi, xh[r]));
                                p[r][h] = _mm256_add_epi16(p[r][h], s);
                            }
                        }
                    }
                    let ones = _mm256_set1_epi16(1);
                    std::array::from_fn(|r| {
                        let c = _mm256_set1_epi32(init[r]);
                        [
                            _mm256_add_epi32(c, _mm256_madd_epi16(p[r][0], ones)),
                            _mm256_add_epi32(c, _mm256_madd_epi16(p[r][1], ones)),
                        ]
                    })
                }
            }
            #[inline(always)]
            fn cvt(self, i: &[__m256i; 2], v: usize) -> __m256 {
                tf!(_mm256_cvtepi32_ps(i[v]))
            }
        }
    };
}
dot_g_avx2!(Avx2);
dot_g_avx2!(Avx2Reduced);

/// The K-quant dot products ([`super::DotK`]) on 256-bit vectors (also the AVX-512 tokens'); `$e` adds the scaled pairs `$p` (i16) times the
/// scales `$s` (i16) into `$a` (i32).
macro_rules! dot_k_avx2 {
    ($t:ty, |$a:ident, $p:ident, $s:ident| $e:expr) => {
        // SAFETY: the token exists only on CPUs with the instructions these methods use (AVX2; `$e` for VNNI).
        unsafe impl super::DotK for $t {
            type I = __m256i;

            #[inline(always)]
            fn izero(self) -> __m256i {
                tf!(_mm256_setzero_si256())
            }
            #[inline(always)]
            unsafe fn nibbles(self, p: *const u8, shift: u32) -> __m256i {
                // SAFETY: the caller makes 32 bytes at `p` readable; the token proves AVX2. The 16-bit shift moves
                // bits of a byte's neighbour only above the mask.
                unsafe {
                    let b = _mm256_loadu_si256(p as *const __m256i);
                    let b = _mm256_srl_epi16(b, _mm_cvtsi32_si128(shift as i32));
                    _mm256_and_si256(b, _mm256_set1_epi8(15))
                }
            }
            #[inline(always)]
            unsafe fn or_high(self, q: __m256i, p: *const u8, shift: u32, mask: u8) -> __m256i {
                // SAFETY: as `nibbles` (`shift + bits(mask) <= 8`); the bits moved up stay in their byte (< 64).
                unsafe {
                    let b = _mm256_loadu_si256(p as *const __m256i);
                    let b = _mm256_srl_epi16(b, _mm_cvtsi32_si128(shift as i32));
                    let h = _mm256_and_si256(b, _mm256_set1_epi8(mask as i8));
                    _mm256_or_si256(q, _mm256_slli_epi16::<4>(h))
                }
            }
            #[inline(always)]
            fn idot(self, acc: __m256i, w: __m256i, x: __m256i, lo: i32, hi: i32) -> __m256i {
                // w in 0 ..= 63 is the unsigned operand: `vpmaddubsw` pairs at most 2 · 63 · 127 = 16002, no
                // saturation; then the pairs times the scale of their 16 values (i16: |scale| <= 128).
                tf!({
                    let pairs = _mm256_maddubs_epi16(w, x);
                    let sc = _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16));
                    { let ($a, $p, $s) = (acc, pairs, sc); $e }
                })
            }
            #[inline(always)]
            fn ireduce(self, acc: __m256i) -> i32 {
                tf!({
                    let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
                    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<1>(s)))
                })
            }
        }
    };
}
dot_k_avx2!(Avx2, |acc, pairs, sc| _mm256_add_epi32(
    acc,
    _mm256_madd_epi16(pairs, sc)
));
dot_k_avx2!(Avx2Reduced, |acc, pairs, sc| _mm256_add_epi32(
    acc,
    _mm256_madd_epi16(pairs, sc)
));
pub(super) use dot_k_avx2;
