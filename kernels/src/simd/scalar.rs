//! One-lane "SIMD" in plain Rust: the portable path, and the numerics twin of the vector paths.

use half::{bf16, f16};

use super::Simd;
use crate::isa::Isa;

/// Plain Rust, available on every CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalar;

// SAFETY: uses no instruction beyond the target's baseline.
unsafe impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;
    const ISA: Isa = Isa::Scalar;

    #[inline(always)]
    fn zero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32 {
        // SAFETY: the caller makes `p` readable and aligned.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn loadu(self, p: *const f32) -> f32 {
        // SAFETY: the caller makes `p` readable (f32 alignment is what any `*const f32` from a slice has;
        // read_unaligned does not even need that).
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32) {
        // SAFETY: the caller makes `p` writable and aligned.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn storeu(self, p: *mut f32, v: f32) {
        // SAFETY: the caller makes `p` writable.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> f32 {
        // SAFETY: the caller makes `p` readable.
        unsafe { p.read_unaligned() }.to_f32()
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> f32 {
        // SAFETY: the caller makes `p` readable.
        unsafe { p.read_unaligned() }.to_f32()
    }
    #[inline(always)]
    unsafe fn load_i8(self, p: *const i8) -> f32 {
        // SAFETY: the caller makes `p` readable.
        unsafe { *p as f32 }
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const bf16) -> (f32, f32) {
        // SAFETY: the caller makes `p .. p + 2` readable.
        unsafe { (p.read_unaligned().to_f32(), p.add(1).read_unaligned().to_f32()) }
    }
    #[inline(always)]
    unsafe fn load_i8_quads(self, p: *const i8) -> [f32; 4] {
        // SAFETY: the caller makes `p .. p + 4` readable.
        unsafe { [0, 1, 2, 3].map(|t| *p.add(t) as f32) }
    }
    #[inline(always)]
    fn mask_ge(self, a: f32, b: f32) -> u32 {
        (a >= b) as u32
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> f32 {
        if n == 0 {
            0.0
        } else {
            // SAFETY: n >= 1, so the caller makes `p` readable.
            unsafe { p.read_unaligned() }
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: f32, n: usize) {
        if n > 0 {
            // SAFETY: n >= 1, so the caller makes `p` writable.
            unsafe { p.write_unaligned(v) }
        }
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        // `mul_add` would be a libm call without hardware FMA; the scalar path favours speed.
        a * b + c
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b || b.is_nan() && !a.is_nan() {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b || b.is_nan() && !a.is_nan() {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn abs(self, a: f32) -> f32 {
        a.abs()
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn reduce_sum(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    fn reduce_max(self, a: f32) -> f32 {
        a
    }
}

// SAFETY: plain Rust.
unsafe impl super::DotI8 for Scalar {
    type S = Scalar;
    type Acc = i32;
    type W = [i8; 4];
    type A = [i8; 4];
    const MR: usize = crate::linear::packed::SCALAR.mr;
    const A_BYTES: usize = 4;

    #[inline(always)]
    fn prep(x: [i8; 4]) -> [i8; 8] {
        [x[0], x[1], x[2], x[3], 0, 0, 0, 0]
    }

    #[inline(always)]
    fn simd(self) -> Scalar {
        self
    }
    #[inline(always)]
    fn zero(self) -> i32 {
        0
    }
    #[inline(always)]
    fn w_zero(self) -> [i8; 4] {
        [0; 4]
    }
    #[inline(always)]
    unsafe fn load_w(self, p: *const i8) -> [i8; 4] {
        // SAFETY: the caller makes 4 bytes at `p` readable.
        unsafe { (p as *const [i8; 4]).read_unaligned() }
    }
    #[inline(always)]
    unsafe fn load_a(self, p: *const i8) -> [i8; 4] {
        // SAFETY: as above.
        unsafe { (p as *const [i8; 4]).read_unaligned() }
    }
    #[inline(always)]
    fn dot(self, acc: i32, a: [i8; 4], w: [i8; 4]) -> i32 {
        // Wrapping like the vector instructions (the final sum is exact whenever it fits in i32).
        (0..4).fold(acc, |s, t| s.wrapping_add(a[t] as i32 * w[t] as i32))
    }
    #[inline(always)]
    unsafe fn finish(self, acc: i32, _col_sums: *const i32) -> f32 {
        acc as f32
    }
}

// SAFETY: plain Rust, no instruction beyond the target's baseline.
unsafe impl super::DotQ for Scalar {
    type Q = [i8; 32];
    type F = f32;

    #[inline(always)]
    fn fzero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn load_q8(self, p: *const i8) -> [i8; 32] {
        // SAFETY: the caller makes 32 bytes at `p` readable.
        unsafe { (p as *const [i8; 32]).read_unaligned() }
    }
    #[inline(always)]
    unsafe fn load_q4(self, p: *const u8) -> [i8; 32] {
        // SAFETY: the caller makes 16 bytes at `p` readable.
        let b = unsafe { (p as *const [u8; 16]).read_unaligned() };
        std::array::from_fn(|j| {
            if j < 16 {
                (b[j] & 15) as i8
            } else {
                (b[j - 16] >> 4) as i8
            }
        })
    }
    #[inline(always)]
    fn offset8(self, q: [i8; 32]) -> [i8; 32] {
        q.map(|v| v - 8)
    }
    #[inline(always)]
    fn dot_add(self, acc: f32, w: [i8; 32], x: [i8; 32], scale: f32) -> f32 {
        let sum: i32 = w.iter().zip(&x).map(|(&a, &b)| a as i32 * b as i32).sum();
        acc + sum as f32 * scale
    }
    #[inline(always)]
    fn reduce(self, acc: f32) -> f32 {
        acc
    }
}

// SAFETY: plain Rust, no instruction beyond the target's baseline.
unsafe impl super::DotK for Scalar {
    type I = i32;

    #[inline(always)]
    fn izero(self) -> i32 {
        0
    }
    #[inline(always)]
    unsafe fn nibbles(self, p: *const u8, shift: u32) -> [i8; 32] {
        // SAFETY: the caller makes 32 bytes at `p` readable.
        let b = unsafe { (p as *const [u8; 32]).read_unaligned() };
        b.map(|v| ((v >> shift) & 15) as i8)
    }
    #[inline(always)]
    unsafe fn or_high(self, q: [i8; 32], p: *const u8, shift: u32, mask: u8) -> [i8; 32] {
        // SAFETY: the caller makes 32 bytes at `p` readable.
        let b = unsafe { (p as *const [u8; 32]).read_unaligned() };
        std::array::from_fn(|j| q[j] | ((((b[j] >> shift) & mask) << 4) as i8))
    }
    #[inline(always)]
    fn idot(self, acc: i32, w: [i8; 32], x: [i8; 32], lo: i32, hi: i32) -> i32 {
        let half = |r: std::ops::Range<usize>| -> i32 { r.map(|j| w[j] as i32 * x[j] as i32).sum() };
        acc + lo * half(0..16) + hi * half(16..32)
    }
    #[inline(always)]
    fn ireduce(self, acc: i32) -> i32 {
        acc
    }
}

// SAFETY: plain Rust, no instruction beyond the target's baseline.
unsafe impl super::DotG for Scalar {
    type S = Scalar;
    type I = [i32; super::GROUP];
    const Q8_EXCESS: i32 = 0;

    #[inline(always)]
    fn simd(self) -> Scalar {
        self
    }
    #[inline(always)]
    unsafe fn q8<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [[i32; 16]; R] {
        // SAFETY: the caller makes w .. w + 512 and x[r] .. x[r] + 32 readable.
        let (w, x) = unsafe { (&*(w as *const [u8; 512]), x.map(|p| &*(p as *const [i8; 32]))) };
        std::array::from_fn(|r| {
            std::array::from_fn(|row| {
                init[r]
                    + (0..32)
                        .map(|j| w[64 * (j / 4) + 4 * row + j % 4] as i8 as i32 * x[r][j] as i32)
                        .sum::<i32>()
            })
        })
    }
    #[inline(always)]
    unsafe fn q4<const R: usize>(self, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [[i32; 16]; R] {
        // SAFETY: the caller makes w .. w + 256 and x[r] .. x[r] + 32 readable.
        let (w, x) = unsafe { (&*(w as *const [u8; 256]), x.map(|p| &*(p as *const [i8; 32]))) };
        std::array::from_fn(|r| {
            std::array::from_fn(|row| {
                init[r]
                    + (0..16)
                        .map(|j| {
                            let b = w[64 * (j / 4) + 4 * row + j % 4];
                            (b & 15) as i32 * x[r][j] as i32 + (b >> 4) as i32 * x[r][j + 16] as i32
                        })
                        .sum::<i32>()
            })
        })
    }
    #[inline(always)]
    fn cvt(self, i: &[i32; 16], v: usize) -> f32 {
        i[v] as f32
    }
}
