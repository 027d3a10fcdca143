//! Register tiles of the packed GEMM/GEMV with f32 activations: `MR` rows of `x` times one panel (`NV` vectors of
//! output columns), accumulated in `MR x NV` vector registers over a range of inputs. Written once over [`Simd`];
//! the ISA fixes `NV` and the largest `MR` ([`super::packed::Geometry`]), the caller the actual `MR` (a const, so
//! every loop here unrolls and the accumulators live in registers).
#![allow(clippy::needless_range_loop)] // tile indices read best as indices

use half::{bf16, f16};

use super::packed::{Elem, Geometry, NV_MAX};
use crate::simd::Simd;

/// The tiling of an ISA, as constants of its token.
pub(crate) trait Tile: Simd {
    const GEOM: Geometry;
    /// Vectors per panel.
    const NV: usize = Self::GEOM.nv;
}

impl Tile for crate::simd::Scalar {
    const GEOM: Geometry = super::packed::SCALAR;
}
#[cfg(target_arch = "x86_64")]
impl Tile for crate::simd::Avx2 {
    const GEOM: Geometry = super::packed::AVX2;
}
#[cfg(target_arch = "x86_64")]
impl Tile for crate::simd::Avx512 {
    const GEOM: Geometry = super::packed::AVX512;
}
#[cfg(target_arch = "aarch64")]
impl Tile for crate::simd::Neon {
    const GEOM: Geometry = super::packed::NEON;
}

/// A panel element widened to f32 in registers.
pub(crate) trait PanelElem: Elem {
    /// The `LANES` columns of input `t` (`t < G`) of the group at `p` (`LANES · G` elements).
    ///
    /// # Safety
    /// `p .. p + LANES · G` must be readable.
    unsafe fn load_t<S: Simd>(s: S, p: *const Self, t: usize) -> S::V;
}

impl PanelElem for f32 {
    #[inline(always)]
    unsafe fn load_t<S: Simd>(s: S, p: *const f32, _t: usize) -> S::V {
        // SAFETY: forwarded contract (G = 1: LANES floats).
        unsafe { s.loadu(p) }
    }
}

impl PanelElem for f16 {
    #[inline(always)]
    unsafe fn load_t<S: Simd>(s: S, p: *const f16, _t: usize) -> S::V {
        // SAFETY: forwarded contract (G = 1: LANES halves).
        unsafe { s.load_f16(p) }
    }
}

impl PanelElem for bf16 {
    #[inline(always)]
    unsafe fn load_t<S: Simd>(s: S, p: *const bf16, t: usize) -> S::V {
        // SAFETY: forwarded contract (G = 2: 2 · LANES values). The unused half is dead code after inlining.
        let (even, odd) = unsafe { s.load_bf16_pairs(p) };
        if t == 0 {
            even
        } else {
            odd
        }
    }
}

impl PanelElem for i8 {
    #[inline(always)]
    unsafe fn load_t<S: Simd>(s: S, p: *const i8, t: usize) -> S::V {
        // SAFETY: forwarded contract (G = 4: 4 · LANES bytes). The unused quarters are dead code after inlining.
        unsafe { s.load_i8_quads(p)[t] }
    }
}

/// Accumulators of one tile.
pub(crate) type Acc<S, const MR: usize> = [[<S as Simd>::V; NV_MAX]; MR];

/// A zeroed tile.
#[inline(always)]
pub(crate) fn zero_acc<S: Tile, const MR: usize>(s: S) -> Acc<S, MR> {
    [[s.zero(); NV_MAX]; MR]
}

/// `acc[r][v] += Σ_{p < kc} A(r, p) · B(p, v·LANES ..)`, where `A(r, p) = a[r·rs + p·cs]` and `b` is one panel's
/// `[kc, NR]` slice in the group layout. `kc` needs not be a multiple of `G`: the last group's missing inputs are
/// skipped (their weights are zero padding, their activations may not exist).
///
/// # Safety
/// `a[r·rs + p·cs]` readable for `r < MR`, `p < kc`; `b .. b + ceil(kc / G) · NR · G` readable.
#[inline(always)]
pub(crate) unsafe fn tile<S: Tile, E: PanelElem, const MR: usize>(
    s: S,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const E,
    kc: usize,
    acc: &mut Acc<S, MR>,
) {
    let (l, nv, g) = (S::LANES, S::NV, E::G);
    let nr = l * nv;
    let groups = kc / g;
    // Accumulate in a local copy (only indexed by unrolled constants, so it lives in registers), written back once.
    let mut c = *acc;
    // SAFETY: every access is within the ranges the caller guarantees: group q < ceil(kc / G) reads
    // b[q·NR·G + v·LANES·G ..][..LANES·G] with v < NV, and a at inputs q·G + t < kc.
    unsafe {
        for q in 0..groups {
            let bq = b.add(q * nr * g);
            for t in 0..g {
                let mut bv = [s.zero(); NV_MAX];
                for v in 0..nv {
                    bv[v] = E::load_t(s, bq.add(v * l * g), t);
                }
                let p = q * g + t;
                for r in 0..MR {
                    let av = s.splat(*a.add(r * rs + p * cs));
                    for v in 0..nv {
                        c[r][v] = s.fma(av, bv[v], c[r][v]);
                    }
                }
            }
        }
        let rem = kc - groups * g;
        if rem > 0 {
            let bq = b.add(groups * nr * g);
            for t in 0..rem {
                let mut bv = [s.zero(); NV_MAX];
                for v in 0..nv {
                    bv[v] = E::load_t(s, bq.add(v * l * g), t);
                }
                let p = groups * g + t;
                for r in 0..MR {
                    let av = s.splat(*a.add(r * rs + p * cs));
                    for v in 0..nv {
                        c[r][v] = s.fma(av, bv[v], c[r][v]);
                    }
                }
            }
        }
    }
    *acc = c;
}

/// How a tile reaches `y`. Every output's sum is one chain of FMAs over all inputs in order, whatever the blocking:
/// a block continues from the previous block's raw sum (see [`load_row`]), and only the last one applies the
/// scale and the bias. So a row's result does not depend on how many rows share the call or how they are split
/// (batch invariance).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// `y = acc` (a raw partial sum: more input blocks follow).
    Partial,
    /// `y = acc · scale + bias` (the last input block).
    Final,
}

/// Load the raw partial sums of one tile row (`n <= NR` columns at `y`) to continue them.
///
/// # Safety
/// `y .. y + n` readable.
#[inline(always)]
pub(crate) unsafe fn load_row<S: Tile>(s: S, y: *const f32, n: usize) -> [S::V; NV_MAX] {
    let (l, nv) = (S::LANES, S::NV);
    let mut acc = [s.zero(); NV_MAX];
    for v in 0..nv {
        let c0 = v * l;
        if c0 >= n {
            break;
        }
        let w = l.min(n - c0);
        // SAFETY: columns c0 .. c0 + w < n of y (caller's range).
        acc[v] = unsafe {
            if w == l {
                s.loadu(y.add(c0))
            } else {
                s.load_partial(y.add(c0), w)
            }
        };
    }
    acc
}

/// Per-column data applied at the store: int8 weights' row scales and the bias, for this panel's columns.
#[derive(Clone, Copy)]
pub(crate) struct Cols<'a> {
    pub scales: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
}

/// Write one tile row: `n` (`<= NR`) columns at `y`.
///
/// # Safety
/// `y .. y + n` writable.
#[inline(always)]
pub(crate) unsafe fn store_row<S: Tile>(
    s: S,
    acc: &[S::V; NV_MAX],
    y: *mut f32,
    n: usize,
    mode: Store,
    cols: Cols<'_>,
) {
    let (l, nv) = (S::LANES, S::NV);
    for v in 0..nv {
        let c0 = v * l;
        if c0 >= n {
            break;
        }
        let w = l.min(n - c0);
        let mut val = acc[v];
        if mode == Store::Final {
            if let Some(sc) = cols.scales {
                val = s.mul(val, s.read_partial(&sc[c0..c0 + w]));
            }
            if let Some(b) = cols.bias {
                val = s.add(val, s.read_partial(&b[c0..c0 + w]));
            }
        }
        // SAFETY: columns c0 .. c0 + w < n of y are in the caller's range.
        unsafe {
            let yp = y.add(c0);
            if w == l {
                s.storeu(yp, val);
            } else {
                s.store_partial(yp, val, w);
            }
        }
    }
}
