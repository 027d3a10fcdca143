//! int8 x int8 GEMM/GEMV: activations quantized per row ([`QuantizedRows`]), int8 weights with one scale per output
//! (a [`PackedWeight`] of int8), exact i32 sums over all inputs, scales applied at the store:
//!
//! ```text
//! y[r, o] = f32(Σ_i qx[r, i] · qw[o, i]) · (sx[r] · sw[o]) + bias[o]
//! ```
//!
//! Every ISA computes the same integers (`vpdpbusd` on AVX512_VNNI with `x + 128` and a column-sum correction,
//! `vpmaddubsw`/`vpmaddwd` with `|x| · ±w` on AVX-512BW and AVX2, `sdot` or `smull`/`sadalp` on NEON, plain Rust on
//! scalar), so results agree across ISAs to the bit. Loops: for each block of rows (the packed int8 rows take half of
//! L2, all inputs at once), for each panel of this share, for each row tile: all inputs in registers, then the store.
//!
//! Error against the f32 product with the same int8 weights `W = qw · sw` (derived in [`QuantizedRows`]):
//! `|y - x·Wᵀ| <= sx/2 · sw · Σ_i |qw[o, i]|` plus the f32 rounding of the store (a few ulps of `|y|`).
#![allow(clippy::needless_range_loop)] // register tiles read best with indices

use std::ops::Range;

use super::driver::{row_tiles, take, Blocking, OutPtr, Scratch};
use super::packed::NV_MAX;
use crate::simd::{DotI8, Simd};

/// Most inputs of an int8 x int8 product: every partial sum stays exact in i32 (`127 · 127 · 133143 < 2^31`).
pub const I8_DOT_MAX_IN: usize = (i32::MAX / (127 * 127)) as usize;

/// The range activations are quantized to ([`crate::Kernels::quantize_rows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum I8Range {
    /// `-127 ..= 127`.
    #[default]
    Full,
    /// `-63 ..= 63` (FBGEMM's "reduce range"): twice the rounding error, but AVX2 (and AVX-512 without VNNI) can
    /// take `x + 64` as the unsigned operand of `vpmaddubsw` without saturating and without flipping signs: 1.4x
    /// faster there (measured on Zen 4). Other ISAs run both ranges at the same speed.
    Reduced,
}

impl I8Range {
    /// Largest magnitude of a quantized activation.
    pub fn max(self) -> f32 {
        match self {
            I8Range::Full => 127.0,
            I8Range::Reduced => 63.0,
        }
    }

    /// The faster range for the int8 x int8 kernels of `k` (`Reduced` where only `vpmaddubsw` is available).
    pub fn fastest_for(k: &crate::Kernels) -> I8Range {
        match k.isa() {
            crate::Isa::Avx2 => I8Range::Reduced,
            _ => I8Range::Full,
        }
    }
}

/// Rows of f32 activations quantized to int8 for [`crate::Kernels::linear_q`]: symmetric, one scale per row.
///
/// Row `r`, with `Q` = [`I8Range::max`] (127 or 63): `sx[r] = max_i |x[r, i]| / Q` and
/// `qx[r, i] = round(x[r, i] · (Q / max))` (nearest, ties to even) in `-Q ..= Q`, so `|x - qx · sx| <= sx / 2` (up
/// to f32 rounding). An all-zero row gets scale 0, a row holding a NaN or an infinity a NaN scale (its outputs are
/// NaN, as with f32 arithmetic).
///
/// Made once per step for each distinct input (q, k and v share theirs) with [`crate::Kernels::quantize_rows`],
/// which reuses the buffers: a warm `QuantizedRows` allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct QuantizedRows {
    /// `[rows, in_pad]`, zero padded.
    pub(crate) q: Vec<i8>,
    /// `[rows]`.
    pub(crate) scales: Vec<f32>,
    pub(crate) rows: usize,
    pub(crate) in_dim: usize,
    /// `in_dim` rounded up to 4 (the int8 group).
    pub(crate) in_pad: usize,
    pub(crate) range: I8Range,
}

impl QuantizedRows {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn range(&self) -> I8Range {
        self.range
    }

    /// One scale per row.
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.rows]
    }

    /// The quantized values of row `r` (`in_dim` of them).
    pub fn row(&self, r: usize) -> &[i8] {
        assert!(r < self.rows, "QuantizedRows::row: row {r} of {}", self.rows);
        &self.q[r * self.in_pad..r * self.in_pad + self.in_dim]
    }

    /// Make room for `rows` rows of `in_dim` (buffers grow, never shrink).
    pub(crate) fn shape(&mut self, rows: usize, in_dim: usize, range: I8Range) {
        self.range = range;
        self.rows = rows;
        self.in_dim = in_dim;
        self.in_pad = in_dim.next_multiple_of(4);
        let n = rows * self.in_pad;
        if self.q.len() < n {
            self.q.resize(n, 0);
        }
        if self.scales.len() < rows {
            self.scales.resize(rows, 0.0);
        }
    }
}

/// Quantize the rows of `x` (`[rows, in_dim]`) into `out` (see [`QuantizedRows`]).
#[inline(always)]
pub(crate) fn quantize_rows<S: Simd>(s: S, x: &[f32], in_dim: usize, out: &mut QuantizedRows) {
    let l = S::LANES;
    let in_pad = out.in_pad;
    for (r, xr) in x.chunks_exact(in_dim).enumerate() {
        // max |x| and a finiteness probe in one pass: x · 0 is 0 for finite x, NaN for an infinity or a NaN.
        let (mut mx, mut probe) = (s.zero(), s.zero());
        let mut i = 0;
        while i + l <= in_dim {
            let v = s.read(&xr[i..]);
            mx = s.max(s.abs(v), mx);
            probe = s.fma(v, s.zero(), probe);
            i += l;
        }
        let mut max = s.reduce_max(mx);
        let mut finite = s.reduce_sum(probe) == 0.0;
        for &v in &xr[i..] {
            max = max.max(v.abs());
            finite &= v.is_finite();
        }
        let q = &mut out.q[r * in_pad..(r + 1) * in_pad];
        if !finite || max == 0.0 {
            out.scales[r] = if finite { 0.0 } else { f32::NAN };
            q.fill(0);
            continue;
        }
        let qmax = out.range.max();
        out.scales[r] = max / qmax;
        let inv = qmax / max;
        let (iv, lo, hi) = (s.splat(inv), s.splat(-qmax), s.splat(qmax));
        let mut buf = [0.0f32; crate::simd::MAX_LANES];
        let mut i = 0;
        while i < in_dim {
            let n = l.min(in_dim - i);
            let v = s.min(s.max(s.round(s.mul(s.read_partial(&xr[i..i + n]), iv)), lo), hi);
            s.write(&mut buf[..l], v);
            for (d, &b) in q[i..i + n].iter_mut().zip(&buf[..n]) {
                *d = b as i8;
            }
            i += n;
        }
        q[in_dim..].fill(0);
    }
}

/// One int8 x int8 call.
pub(crate) struct QJob<'a> {
    pub x: &'a QuantizedRows,
    pub out_dim: usize,
    /// Panels `[n_panels, in_pad, NR]` in groups of 4.
    pub panels: &'a [i8],
    /// Weight row scales and column sums, padded to whole panels.
    pub scales: &'a [f32],
    pub col_sums: &'a [i32],
    pub bias: Option<&'a [f32]>,
    pub y: OutPtr,
}

/// `acc[r][v] = Σ_q Σ_t A[q, r, t] · B[q, v·LANES + j, t]` over `kq` groups: `a` is a packed row tile
/// (`[kq, MR, A_BYTES]`, see [`DotI8::prep`]), `b` a panel (`[kq, NR, 4]`).
///
/// # Safety
/// `a .. a + kq · MR · A_BYTES` and `b .. b + kq · NR · 4` readable.
#[inline(always)]
unsafe fn tile<D: DotI8, const MR: usize>(
    d: D,
    nv: usize,
    a: *const i8,
    b: *const i8,
    kq: usize,
) -> [[D::Acc; NV_MAX]; MR] {
    let l = <D::S as Simd>::LANES;
    let nr = nv * l;
    let mut c = [[d.zero(); NV_MAX]; MR];
    // SAFETY: group q < kq of the tile and of the panel (caller's ranges).
    unsafe {
        for q in 0..kq {
            let mut w = [d.w_zero(); NV_MAX];
            for v in 0..nv {
                w[v] = d.load_w(b.add((q * nr + v * l) * 4));
            }
            for r in 0..MR {
                let av = d.load_a(a.add((q * MR + r) * D::A_BYTES));
                for v in 0..nv {
                    c[r][v] = d.dot(c[r][v], av, w[v]);
                }
            }
        }
    }
    c
}

/// Rows `rows` x panels `panels` of `job` (one share). `nv`: vectors per panel of this ISA.
#[inline(always)]
pub(crate) fn run_share<D: DotI8>(
    d: D,
    nv: usize,
    job: &QJob<'_>,
    rows: Range<usize>,
    panels: Range<usize>,
    blk: Blocking,
) {
    let s = d.simd();
    let l = <D::S as Simd>::LANES;
    let nr = nv * l;
    let x = job.x;
    let (in_pad, out_dim) = (x.in_pad, job.out_dim);
    let kq = in_pad / 4;
    assert!(rows.end <= x.rows && job.panels.len() >= panels.end * in_pad * nr);
    assert!(job.scales.len() >= panels.end * nr && job.col_sums.len() >= panels.end * nr);
    if rows.is_empty() || panels.is_empty() {
        return;
    }
    let y = job.y.0;
    let mc_max = blk.mc_i8(in_pad, D::MR).min(rows.len());
    let mut sc = Scratch::take_local();
    let ab = D::A_BYTES;
    let a_pack: &mut [i8] = take(&mut sc.a, mc_max.next_multiple_of(D::MR) * kq * ab);
    let mut ic = rows.start;
    while ic < rows.end {
        let mc = mc_max.min(rows.end - ic);
        // Pack rows ic .. ic + mc tile by tile: tile (r0, h) at offset r0 · kq · A_BYTES, [kq, h, A_BYTES].
        for (r0, h) in row_tiles(mc, D::MR) {
            let dst = &mut a_pack[r0 * kq * ab..(r0 + h) * kq * ab];
            for r in 0..h {
                let src = &x.q[(ic + r0 + r) * in_pad..(ic + r0 + r + 1) * in_pad];
                for (q, quad) in src.chunks_exact(4).enumerate() {
                    let prepped = D::prep([quad[0], quad[1], quad[2], quad[3]]);
                    dst[(q * h + r) * ab..(q * h + r + 1) * ab].copy_from_slice(&prepped[..ab]);
                }
            }
        }
        for j in panels.clone() {
            let c0 = j * nr;
            let n = nr.min(out_dim - c0);
            let bp = job.panels[j * in_pad * nr..].as_ptr();
            for (r0, h) in row_tiles(mc, D::MR) {
                let ap = a_pack[r0 * kq * ab..].as_ptr();
                super::driver::with_rows!(h, H => {
                    // SAFETY: the packed tile holds [kq, H, A_BYTES] bytes, panel j [kq, NR, 4] (asserted above).
                    let acc = unsafe { tile::<D, H>(d, nv, ap, bp, kq) };
                    for r in 0..H {
                        let row = ic + r0 + r;
                        let sx = s.splat(x.scales[row]);
                        for v in 0..nv {
                            let cv = v * l;
                            if cv >= n {
                                break;
                            }
                            let w = l.min(n - cv);
                            let cc = c0 + cv;
                            // SAFETY: scales and col_sums are padded to whole panels (asserted); y row `row`,
                            // columns cc .. cc + w < out_dim belong to this share.
                            unsafe {
                                let sums = d.finish(acc[r][v], job.col_sums.as_ptr().add(cc));
                                // (Σ · (sx · sw)) + bias: the reference's order of f32 operations.
                                let mut val = s.mul(sums, s.mul(sx, s.loadu(job.scales.as_ptr().add(cc))));
                                if let Some(b) = job.bias {
                                    val = s.add(val, s.read_partial(&b[cc..cc + w]));
                                }
                                let yp = y.add(row * out_dim + cc);
                                if w == l {
                                    s.storeu(yp, val);
                                } else {
                                    s.store_partial(yp, val, w);
                                }
                            }
                        }
                    }
                })
            }
        }
        ic += mc;
    }
    sc.put_local();
}
