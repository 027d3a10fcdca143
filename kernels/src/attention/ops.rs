//! The inner loops of attention, generic over [`Simd`]: register-blocked `Q·Kᵀ` on packed panels,
//! `Q·k` dot products for decode, `P·V`, and the row operations of the online softmax.
//!
//! Everything here is `#[inline(always)]` so it is compiled inside the `#[target_feature]` wrapper
//! of its ISA (see `super::attention`). Shapes are asserted once per call; the micro-kernels then
//! use unchecked vector loads whose bounds those asserts establish.

use super::TILE_KEYS;
use crate::simd::Simd;

/// Register block `(rows, vectors)` of the two GEMM-like micro-kernels for a vector width:
/// 16 accumulators on AVX-512 (32 registers), 8 on AVX2 / NEON (16 registers).
macro_rules! blocked {
    ($s:ty, $f:ident :: <$mr:tt>, $($arg:expr),*) => {
        if <$s as Simd>::LANES >= 16 {
            $f::<$s, $mr, 4>($($arg),*)
        } else if <$s as Simd>::LANES >= 4 {
            $f::<$s, $mr, 2>($($arg),*)
        } else {
            $f::<$s, $mr, 4>($($arg),*)
        }
    };
}

/// `n` rows of `head_dim` floats read in place: row `c` starts at `data[c * stride]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct KvRows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub n: usize,
}

impl KvRows<'_> {
    /// Assert that every row lies in `data`.
    #[inline(always)]
    fn check(&self, head_dim: usize) {
        assert!(self.n <= TILE_KEYS);
        if self.n > 0 {
            assert!(self.data.len() >= (self.n - 1) * self.stride + head_dim);
        }
    }
}

// The widest column block of `qk_blocks` (4 vectors of 16 lanes) must divide the tile.
const _: () = assert!(TILE_KEYS.is_multiple_of(4 * crate::simd::MAX_LANES));

/// Register rows of the `Q·Kᵀ` and `P·V` micro-kernels.
const MR: usize = 4;

/// `dst = src * c`.
#[inline(always)]
pub(super) fn scale_copy<S: Simd>(s: S, src: &[f32], c: f32, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let cv = s.splat(c);
    let mut x = 0;
    while x + S::LANES <= src.len() {
        s.write(&mut dst[x..], s.mul(s.read(&src[x..]), cv));
        x += S::LANES;
    }
    if x < src.len() {
        s.write_partial(&mut dst[x..], s.mul(s.read_partial(&src[x..]), cv));
    }
}

/// `x *= c`.
#[inline(always)]
pub(super) fn scale<S: Simd>(s: S, x: &mut [f32], c: f32) {
    let cv = s.splat(c);
    let mut i = 0;
    while i + S::LANES <= x.len() {
        let v = s.read(&x[i..]);
        s.write(&mut x[i..], s.mul(v, cv));
        i += S::LANES;
    }
    if i < x.len() {
        let v = s.read_partial(&x[i..]);
        s.write_partial(&mut x[i..], s.mul(v, cv));
    }
}

/// Largest value of `x`, whose length is a multiple of `LANES` (`-inf` when empty).
#[inline(always)]
pub(super) fn max<S: Simd>(s: S, x: &[f32]) -> f32 {
    debug_assert_eq!(x.len() % S::LANES, 0);
    let mut m = s.splat(f32::NEG_INFINITY);
    for chunk in x.chunks_exact(S::LANES) {
        m = s.max(s.read(chunk), m);
    }
    s.reduce_max(m)
}

/// `x = exp(x - m)` in place (`-inf` gives exactly 0); returns the sum. `x.len()` is a multiple of `LANES`.
#[inline(always)]
pub(super) fn exp_sub_sum<S: Simd>(s: S, x: &mut [f32], m: f32) -> f32 {
    debug_assert_eq!(x.len() % S::LANES, 0);
    let mv = s.splat(m);
    let mut sum = s.zero();
    for chunk in x.chunks_exact_mut(S::LANES) {
        let p = s.exp(s.sub(s.read(chunk), mv));
        s.write(chunk, p);
        sum = s.add(sum, p);
    }
    s.reduce_sum(sum)
}

/// Scores from a packed panel: `out[r, c] = q[r] · kt[:, c]` for `r < n_rows` and every column
/// `c < n_keys` rounded up to the register block (at most `TILE_KEYS`; extra columns get finite junk).
/// `q` is `[n_rows, head_dim]`, `kt` is `[head_dim, TILE_KEYS]`, `out` is `[n_rows, TILE_KEYS]`.
#[inline(always)]
pub(super) fn qk_packed<S: Simd>(s: S, q: &[f32], n_rows: usize, d: usize, kt: &[f32], n_keys: usize, out: &mut [f32]) {
    assert!(q.len() >= n_rows * d && kt.len() >= d * TILE_KEYS && out.len() >= n_rows * TILE_KEYS);
    assert!(n_keys <= TILE_KEYS && d > 0);
    blocked!(S, qk_blocks::<MR>, s, q, n_rows, d, kt, n_keys, out);
    // Rows past the last full register block.
    let done = n_rows / MR * MR;
    blocked!(
        S,
        qk_blocks::<1>,
        s,
        &q[done * d..],
        n_rows - done,
        d,
        kt,
        n_keys,
        &mut out[done * TILE_KEYS..]
    );
}

/// `qk_packed` over the first `n_rows / R * R` rows, `R` rows and `NV` vectors at a time.
#[inline(always)]
fn qk_blocks<S: Simd, const R: usize, const NV: usize>(
    s: S,
    q: &[f32],
    n_rows: usize,
    d: usize,
    kt: &[f32],
    n_keys: usize,
    out: &mut [f32],
) {
    let step = NV * S::LANES; // divides TILE_KEYS
    let n_cols = n_keys.next_multiple_of(step);
    for r0 in (0..n_rows / R * R).step_by(R) {
        for c0 in (0..n_cols).step_by(step) {
            let mut acc = [[s.zero(); NV]; R];
            for x in 0..d {
                let mut k = [s.zero(); NV];
                for (j, kj) in k.iter_mut().enumerate() {
                    // SAFETY: x < d and c0 + (j + 1) * LANES <= n_cols <= TILE_KEYS, so the vector lies in
                    // `kt[..d * TILE_KEYS]`, asserted in `qk_packed`.
                    *kj = unsafe { s.loadu(kt.as_ptr().add(x * TILE_KEYS + c0 + j * S::LANES)) };
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // SAFETY: r0 + r < n_rows and x < d: inside `q[..n_rows * d]`, asserted in `qk_packed`.
                    let qv = s.splat(unsafe { *q.get_unchecked((r0 + r) * d + x) });
                    for (a, &kj) in acc_r.iter_mut().zip(&k) {
                        *a = s.fma(qv, kj, *a);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (j, &a) in acc_r.iter().enumerate() {
                    // SAFETY: r0 + r < n_rows and c0 + (j + 1) * LANES <= TILE_KEYS: inside
                    // `out[..n_rows * TILE_KEYS]`, asserted in `qk_packed`.
                    unsafe { s.storeu(out.as_mut_ptr().add((r0 + r) * TILE_KEYS + c0 + j * S::LANES), a) };
                }
            }
        }
    }
}

/// Scores from K rows in place (decode): `out[r, c] = q[r] · k.row(c)` for `c < k.n`.
#[inline(always)]
pub(super) fn qk_rows<S: Simd>(s: S, q: &[f32], n_rows: usize, d: usize, k: KvRows<'_>, out: &mut [f32]) {
    assert!(q.len() >= n_rows * d && out.len() >= n_rows * TILE_KEYS);
    k.check(d);
    let (n_keys, k_stride, k) = (k.n, k.stride, k.data);
    for r in 0..n_rows {
        let q_row = &q[r * d..(r + 1) * d];
        let out_row = &mut out[r * TILE_KEYS..(r + 1) * TILE_KEYS];
        // Four keys at a time: four independent accumulator chains.
        let mut c = 0;
        while c + 4 <= n_keys {
            let mut acc = [s.zero(); 4];
            let mut x = 0;
            while x + S::LANES <= d {
                let qv = s.read(&q_row[x..]);
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: key c + i < n_keys and x + LANES <= d: inside `k[..(n_keys - 1) * k_stride + d]`.
                    let kv = unsafe { s.loadu(k.as_ptr().add((c + i) * k_stride + x)) };
                    *a = s.fma(qv, kv, *a);
                }
                x += S::LANES;
            }
            if x < d {
                let qv = s.read_partial(&q_row[x..]);
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as above, reading only the d - x floats left in key c + i.
                    let kv = unsafe { s.load_partial(k.as_ptr().add((c + i) * k_stride + x), d - x) };
                    *a = s.fma(qv, kv, *a);
                }
            }
            for (i, &a) in acc.iter().enumerate() {
                out_row[c + i] = s.reduce_sum(a);
            }
            c += 4;
        }
        for (cc, o) in out_row.iter_mut().enumerate().take(n_keys).skip(c) {
            *o = crate::simd::dot(s, q_row, &k[cc * k_stride..cc * k_stride + d]);
        }
    }
}

/// `acc[r] += Σ_c p[r, c] · v.row(c)` for `r < n_rows`, `c < v.n`.
/// `p` is `[n_rows, TILE_KEYS]`, `acc` is `[n_rows, d]`.
#[inline(always)]
pub(super) fn pv<S: Simd>(s: S, p: &[f32], n_rows: usize, v: KvRows<'_>, d: usize, acc: &mut [f32]) {
    assert!(p.len() >= n_rows * TILE_KEYS && acc.len() >= n_rows * d);
    v.check(d);
    let mut r0 = 0;
    while r0 < n_rows {
        if r0 + MR <= n_rows {
            blocked!(S, pv_rows::<MR>, s, p, r0, v, d, acc);
            r0 += MR;
        } else {
            blocked!(S, pv_rows::<1>, s, p, r0, v, d, acc);
            r0 += 1;
        }
    }
}

/// `P·V` for rows `r0 .. r0 + R`, over the whole head in column blocks of `NV`, then 1, then a partial vector.
#[inline(always)]
fn pv_rows<S: Simd, const R: usize, const NV: usize>(
    s: S,
    p: &[f32],
    r0: usize,
    v: KvRows<'_>,
    d: usize,
    acc: &mut [f32],
) {
    let mut x0 = 0;
    while x0 + NV * S::LANES <= d {
        pv_micro::<S, R, NV, false>(s, p, r0, v, d, x0, acc);
        x0 += NV * S::LANES;
    }
    while x0 + S::LANES <= d {
        pv_micro::<S, R, 1, false>(s, p, r0, v, d, x0, acc);
        x0 += S::LANES;
    }
    if x0 < d {
        pv_micro::<S, R, 1, true>(s, p, r0, v, d, x0, acc);
    }
}

/// `acc[r0 + r, x0 ..][..NV vectors] += Σ_c p[r0 + r, c] · v[c, x0 ..]`. With `PARTIAL`, the (single)
/// vector holds only the `d - x0 < LANES` lanes left in the head.
#[inline(always)]
fn pv_micro<S: Simd, const R: usize, const NV: usize, const PARTIAL: bool>(
    s: S,
    p: &[f32],
    r0: usize,
    v: KvRows<'_>,
    d: usize,
    x0: usize,
    acc: &mut [f32],
) {
    let (n_keys, v_stride, v) = (v.n, v.stride, v.data);
    let n_left = d - x0; // lanes of a partial vector
    let mut a = [[s.zero(); NV]; R];
    for (r, a_r) in a.iter_mut().enumerate() {
        for (j, a_rj) in a_r.iter_mut().enumerate() {
            let ptr = acc.as_ptr().wrapping_add((r0 + r) * d + x0 + j * S::LANES);
            // SAFETY: row r0 + r < n_rows and x0 + (j + 1) * LANES <= d (or the n_left lanes of a partial
            // vector): inside `acc[..n_rows * d]`, asserted in `pv`.
            *a_rj = unsafe {
                if PARTIAL {
                    s.load_partial(ptr, n_left)
                } else {
                    s.loadu(ptr)
                }
            };
        }
    }
    for c in 0..n_keys {
        let mut vv = [s.zero(); NV];
        for (j, vj) in vv.iter_mut().enumerate() {
            let ptr = v.as_ptr().wrapping_add(c * v_stride + x0 + j * S::LANES);
            // SAFETY: key c < n_keys and the lanes as above: inside `v[..(n_keys - 1) * v_stride + d]`,
            // asserted in `pv` (`KvRows::check`).
            *vj = unsafe {
                if PARTIAL {
                    s.load_partial(ptr, n_left)
                } else {
                    s.loadu(ptr)
                }
            };
        }
        for (r, a_r) in a.iter_mut().enumerate() {
            // SAFETY: row r0 + r < n_rows and c < n_keys <= TILE_KEYS: inside `p[..n_rows * TILE_KEYS]`.
            let pc = s.splat(unsafe { *p.get_unchecked((r0 + r) * TILE_KEYS + c) });
            for (a_rj, &vj) in a_r.iter_mut().zip(&vv) {
                *a_rj = s.fma(pc, vj, *a_rj);
            }
        }
    }
    for (r, a_r) in a.iter().enumerate() {
        for (j, &a_rj) in a_r.iter().enumerate() {
            let ptr = acc.as_mut_ptr().wrapping_add((r0 + r) * d + x0 + j * S::LANES);
            // SAFETY: the same elements of `acc` the loads above read.
            unsafe {
                if PARTIAL {
                    s.store_partial(ptr, a_rj, n_left)
                } else {
                    s.storeu(ptr, a_rj)
                }
            }
        }
    }
}
