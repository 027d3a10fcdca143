//! Block-quantized weights in GGUF's own layouts (Q8_0, Q4_0, Q4_1) and the integer GEMV/GEMM that reads them.
//!
//! A row of `in_dim` weights is `in_dim / 32` blocks, each 32 weights with f16 scale(s), exactly as ggml stores
//! them (little-endian), so a GGUF tensor's bytes are a [`BlockType`] matrix as they are:
//!
//! ```text
//! type   bytes  layout                                      weight j (0 <= j < 32)
//! Q8_0   34     d f16 @0 | qs[32] i8 @2                      d · qs[j]
//! Q4_0   18     d f16 @0 | qs[16] u8 @2                      d · (q4(j) - 8)
//! Q4_1   20     d f16 @0 | m f16 @2 | qs[16] u8 @4           d · q4(j) + m
//! q4(j) = qs[j] & 15 for j < 16, qs[j - 16] >> 4 for j >= 16
//! ```
//!
//! Activations are quantized once per call to Q8 blocks of 32 ([`QuantizedBlocks`]: `dx = max|x| / 127` in f32
//! per block, `qx = round(x / dx)` in `-127 ..= 127`, and `sx = dx · Σ qx` for Q4_1's offset, as llama.cpp's
//! q8_0/q8_1 with an f32 scale), then each output is
//!
//! ```text
//! y[r, o] = Σ_b f32(Σ_{j in b} qw[o, j] · qx[r, j]) · (dw[o, b] · dx[r, b])   (+ Σ_b mw[o, b] · sx[r, b] for Q4_1)
//! ```
//!
//! with exact integer sums inside each block (i8 x i8 products of one block never leave i32; on AVX2
//! `vpmaddubsw` pairs stay below its i16 saturation) and the block scales applied in f32 registers.
//!
//! Two layouts ([`BlockLayout`]). `Rows` reads ggml's bytes in place, one output row at a time: per block a
//! 32-value dot product, its horizontal sum and a scale, about 6 instructions per 34 bytes, which is compute
//! bound (measured slower than the f32 GEMV). `Groups`, the default, interleaves 16 rows at load so that the
//! GEMV's inner loop is the int8 panel GEMV's: per 64 bytes of weights one load and one `vpdpbusd` (4 activation
//! bytes broadcast against 16 rows x 4 inputs), the 16 rows' sums in the lanes of one vector, and per block per
//! group one conversion, one multiply by the 16 f16 scales (times the activation block's scale) and one add.
//!
//! Error bounds (derived in [`crate::reference::linear_blocks_bound`] and
//! [`crate::reference::blocks_vs_dequantized_bound`]): against the exact value of that formula every ISA is within
//! `γ_(in_dim + nb + 3) · T` (`T` the sum of the magnitudes of the f32 terms, `γ_n = n·u / (1 - n·u)`, `u = 2^-24`);
//! against the f32 product with the dequantized weights, the activations' rounding adds at most
//! `Σ_b dx_b · (1/2 + 384·u) · Σ_{j in b} |w_j|`.

use std::ops::Range;

use super::driver::OutPtr;
use crate::simd::{DotG, DotQ, Simd, GROUP};

/// Weights per block (every type here).
pub const QK: usize = 32;

/// A GGUF block type the kernels read directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockType {
    Q8_0,
    Q4_0,
    Q4_1,
}

/// Why bytes are not a block matrix of the claimed shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("{ty}: a row of {in_dim} values is not whole blocks of {QK}")]
    Row { ty: BlockType, in_dim: usize },
    #[error("{ty}: {found} bytes, expected {expected} ({out_dim} rows of {in_dim} values)")]
    Size {
        ty: BlockType,
        out_dim: usize,
        in_dim: usize,
        expected: usize,
        found: usize,
    },
}

impl BlockType {
    pub const ALL: [BlockType; 3] = [BlockType::Q8_0, BlockType::Q4_0, BlockType::Q4_1];

    /// ggml's name (`Q8_0`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
        }
    }

    /// ggml's type id (`GGMLQuantizationType`).
    pub fn ggml_type(self) -> u32 {
        match self {
            BlockType::Q8_0 => 8,
            BlockType::Q4_0 => 2,
            BlockType::Q4_1 => 3,
        }
    }

    /// The block type of ggml type id `id` (`GGMLQuantizationType`), `None` for a type no kernel here runs: a
    /// GGUF tensor of a type this maps runs on the block kernels as stored.
    pub fn from_ggml_type(id: u32) -> Option<BlockType> {
        BlockType::ALL.into_iter().find(|t| t.ggml_type() == id)
    }

    /// Bytes of one block of [`QK`] weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
        }
    }

    /// Bytes of a `[out_dim, in_dim]` matrix (checked: `in_dim` whole blocks, no overflow).
    pub fn matrix_bytes(self, out_dim: usize, in_dim: usize) -> Result<usize, BlockError> {
        if !in_dim.is_multiple_of(QK) {
            return Err(BlockError::Row { ty: self, in_dim });
        }
        (in_dim / QK)
            .checked_mul(self.block_bytes())
            .and_then(|r| r.checked_mul(out_dim))
            .ok_or(BlockError::Size {
                ty: self,
                out_dim,
                in_dim,
                expected: usize::MAX,
                found: 0,
            })
    }

    /// Check that `bytes` is a `[out_dim, in_dim]` matrix of this type.
    pub fn check(self, bytes: usize, out_dim: usize, in_dim: usize) -> Result<(), BlockError> {
        let expected = self.matrix_bytes(out_dim, in_dim)?;
        if bytes != expected {
            return Err(BlockError::Size {
                ty: self,
                out_dim,
                in_dim,
                expected,
                found: bytes,
            });
        }
        Ok(())
    }

    /// Dequantize one block (`b.len() == block_bytes`) into `out`, bit for bit as the `gguf` package's
    /// `dequantize` (f32 `d · q`; Q4_1 `(d · q) + m`, two roundings).
    pub fn dequantize_block(self, b: &[u8], out: &mut [f32; QK]) {
        assert_eq!(b.len(), self.block_bytes(), "dequantize_block: not one {self} block");
        let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        match self {
            BlockType::Q8_0 => {
                for (o, &q) in out.iter_mut().zip(&b[2..]) {
                    *o = (q as i8) as f32 * d;
                }
            }
            BlockType::Q4_0 => {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = d * (q4(&b[2..], j) as i32 - 8) as f32;
                }
            }
            BlockType::Q4_1 => {
                let m = f16_bits_to_f32(u16::from_le_bytes([b[2], b[3]]));
                for (j, o) in out.iter_mut().enumerate() {
                    *o = d * q4(&b[4..], j) as f32 + m;
                }
            }
        }
    }

    /// Dequantize whole blocks: `out.len()` values from `bytes` (an error unless the sizes agree).
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) -> Result<(), BlockError> {
        self.check(bytes.len(), 1, out.len())?;
        let mut buf = [0.0f32; QK];
        for (b, o) in bytes.chunks_exact(self.block_bytes()).zip(out.chunks_exact_mut(QK)) {
            self.dequantize_block(b, &mut buf);
            o.copy_from_slice(&buf);
        }
        Ok(())
    }

    /// Quantize one block of 32 values as llama.cpp's reference quantizer (`quantize_row_*_ref`) and the `gguf`
    /// package's `quantize` do, bit for bit: Q8_0 `d = max|x| / 127`, `q = roundf(x / d)` (ties away from zero);
    /// Q4_0 `d = x_m / -8` (`x_m` the value of largest magnitude, the first on ties), `q = min(15, trunc(x / d +
    /// 8.5))`; Q4_1 `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - min) / d + 0.5))`; the division is
    /// a multiplication by `1 / d` (0 when `d` is 0) and the scales are stored rounded to f16.
    pub fn quantize_block(self, x: &[f32; QK], out: &mut [u8]) {
        assert_eq!(out.len(), self.block_bytes(), "quantize_block: not one {self} block");
        let inv = |d: f32| if d == 0.0 { 0.0 } else { 1.0 / d };
        let f16 = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
        match self {
            BlockType::Q8_0 => {
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = inv(d);
                out[..2].copy_from_slice(&f16(d));
                for (o, &v) in out[2..].iter_mut().zip(x) {
                    *o = ((v * id).round() as i8) as u8;
                }
            }
            BlockType::Q4_0 => {
                // The first value of largest magnitude, with its sign (numpy's argmax of |x|).
                let mut xm = 0.0f32;
                for &v in x {
                    if v.abs() > xm.abs() {
                        xm = v;
                    }
                }
                let d = xm / -8.0;
                let id = inv(d);
                out[..2].copy_from_slice(&f16(d));
                pack_nibbles(|j| ((x[j] * id + 8.5) as u8).min(15), &mut out[2..]);
            }
            BlockType::Q4_1 => {
                let (mut min, mut max) = (x[0], x[0]);
                for &v in x {
                    min = min.min(v);
                    max = max.max(v);
                }
                let d = (max - min) / 15.0;
                let id = inv(d);
                out[..2].copy_from_slice(&f16(d));
                out[2..4].copy_from_slice(&f16(min));
                pack_nibbles(|j| (((x[j] - min) * id + 0.5) as u8).min(15), &mut out[4..]);
            }
        }
    }

    /// Quantize whole blocks (`x.len()` a multiple of 32) into `out` (its exact size).
    pub fn quantize(self, x: &[f32], out: &mut [u8]) -> Result<(), BlockError> {
        self.check(out.len(), 1, x.len())?;
        for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(self.block_bytes())) {
            self.quantize_block(xb.try_into().expect("32 values"), ob);
        }
        Ok(())
    }
}

impl std::fmt::Display for BlockType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Nibble `j` of a block's 16 bytes (see the module docs).
#[inline(always)]
fn q4(qs: &[u8], j: usize) -> u8 {
    if j < QK / 2 {
        qs[j] & 15
    } else {
        qs[j - QK / 2] >> 4
    }
}

fn pack_nibbles(q: impl Fn(usize) -> u8, out: &mut [u8]) {
    for (j, o) in out.iter_mut().enumerate().take(QK / 2) {
        *o = q(j) | (q(j + QK / 2) << 4);
    }
}

/// f16 bits to f32, exact (subnormals, infinities and NaN payloads included), without branches: exponent and
/// mantissa moved to f32 position and scaled by 2^112 (rebias 15 -> 127; subnormals become normals through the
/// multiply), the exponent set to all ones for infinities and NaN.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = ((h & 0x7fff) as u32) << 13;
    let f = f32::from_bits(em) * f32::from_bits(0x7780_0000);
    let special = if em >= 0x0f80_0000 { 0x7f80_0000 } else { 0 };
    f32::from_bits(f.to_bits() | special | sign)
}

/// Rows of activations quantized to Q8 blocks of [`QK`] for [`crate::Kernels::linear_blocks`]: per block
/// `dx = max|x| / 127`, `qx = round(x · (127 / max|x|))` (nearest, ties to even) in `-127 ..= 127`, and
/// `sx = dx · Σ qx`; so `|x - qx · dx| <= dx · (1/2 + 384·u)` (`u = 2^-24`: the rounding of `dx` and of
/// `x · 127 / max`). An all-zero block gets `dx = 0`; a block holding a NaN or an infinity `dx = NaN` (its outputs
/// are NaN, as with f32 arithmetic). The same bits on every ISA. A warm `QuantizedBlocks` allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct QuantizedBlocks {
    /// `[rows, in_dim]`.
    pub(crate) q: Vec<i8>,
    /// `[rows, in_dim / 32]`.
    pub(crate) d: Vec<f32>,
    /// `[rows, in_dim / 32]`.
    pub(crate) s: Vec<f32>,
    /// `Σ qx` per block, `[rows, in_dim / 32]` (the grouped kernels' offset corrections).
    pub(crate) qs: Vec<i32>,
    pub(crate) rows: usize,
    pub(crate) in_dim: usize,
}

impl QuantizedBlocks {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The quantized values of row `r`.
    pub fn row(&self, r: usize) -> &[i8] {
        assert!(r < self.rows, "QuantizedBlocks::row: row {r} of {}", self.rows);
        &self.q[r * self.in_dim..(r + 1) * self.in_dim]
    }

    /// The block scales `dx` of row `r`.
    pub fn scales(&self, r: usize) -> &[f32] {
        let nb = self.in_dim / QK;
        assert!(r < self.rows, "QuantizedBlocks::scales: row {r} of {}", self.rows);
        &self.d[r * nb..(r + 1) * nb]
    }

    /// The block offsets `sx = dx · Σ qx` of row `r`.
    pub fn sums(&self, r: usize) -> &[f32] {
        let nb = self.in_dim / QK;
        assert!(r < self.rows, "QuantizedBlocks::sums: row {r} of {}", self.rows);
        &self.s[r * nb..(r + 1) * nb]
    }

    /// Blocks made from given values (tests: scales chosen so that every f32 operation is exact). `sx` is
    /// computed as the quantizer computes it.
    pub fn from_parts(q: Vec<i8>, d: Vec<f32>, in_dim: usize) -> Self {
        assert!(in_dim > 0 && in_dim.is_multiple_of(QK), "from_parts: in_dim {in_dim}");
        let rows = q.len() / in_dim;
        assert_eq!(q.len(), rows * in_dim, "from_parts: q is not [rows, in_dim]");
        assert_eq!(d.len(), rows * (in_dim / QK), "from_parts: d is not [rows, blocks]");
        assert!(
            q.iter().all(|&v| v != i8::MIN),
            "from_parts: -128 is outside -127 ..= 127"
        );
        let qs: Vec<i32> = q.chunks_exact(QK).map(|b| b.iter().map(|&v| v as i32).sum()).collect();
        let s = qs.iter().zip(&d).map(|(&q, &d)| d * q as f32).collect();
        Self {
            q,
            d,
            s,
            qs,
            rows,
            in_dim,
        }
    }

    /// Make room for `rows` rows of `in_dim` (buffers grow, never shrink).
    pub(crate) fn shape(&mut self, rows: usize, in_dim: usize) {
        self.rows = rows;
        self.in_dim = in_dim;
        let (n, nb) = (rows * in_dim, rows * (in_dim / QK));
        if self.q.len() < n {
            self.q.resize(n, 0);
        }
        if self.d.len() < nb {
            self.d.resize(nb, 0.0);
            self.s.resize(nb, 0.0);
            self.qs.resize(nb, 0);
        }
    }
}

/// Quantize `x` (`[rows, in_dim]`, shaped into `out` already) block by block (see [`QuantizedBlocks`]).
#[inline(always)]
pub(crate) fn quantize_x<S: Simd>(s: S, x: &[f32], out: &mut QuantizedBlocks) {
    let l = S::LANES;
    let mut buf = [0.0f32; crate::simd::MAX_LANES];
    let n = out.rows * out.in_dim;
    for (b, xb) in x[..n].chunks_exact(QK).enumerate() {
        // max |x| and a finiteness probe in one pass: x · 0 is 0 for finite x, NaN for an infinity or a NaN.
        let (mut mx, mut probe) = (s.zero(), s.zero());
        for i in (0..QK).step_by(l) {
            let v = s.read(&xb[i..]);
            mx = s.max(s.abs(v), mx);
            probe = s.fma(v, s.zero(), probe);
        }
        let max = s.reduce_max(mx);
        let q = &mut out.q[b * QK..(b + 1) * QK];
        if s.reduce_sum(probe) != 0.0 || max == 0.0 {
            out.d[b] = if max == 0.0 { 0.0 } else { f32::NAN };
            out.s[b] = out.d[b];
            out.qs[b] = 0;
            q.fill(0);
            continue;
        }
        let d = max / 127.0;
        let iv = s.splat(127.0 / max);
        let mut sum = 0i32;
        for i in (0..QK).step_by(l) {
            // |x · 127 / max| <= 127 up to one rounding: the nearest integer is within -127 ..= 127.
            s.write(&mut buf[..l], s.round(s.mul(s.read(&xb[i..]), iv)));
            for (dst, &v) in q[i..i + l].iter_mut().zip(&buf[..l]) {
                *dst = v as i8;
                sum += v as i32;
            }
        }
        out.d[b] = d;
        out.s[b] = d * sum as f32;
        out.qs[b] = sum;
    }
}

/// One block type's decoding for [`DotQ`].
pub(crate) trait Kind {
    const TY: BlockType;
    /// The block at `p` (its `block_bytes` readable): its 32 values in registers (as the dot product wants them),
    /// `d`, and `m` (Q4_1; 0 otherwise).
    ///
    /// # Safety
    /// `p .. p + block_bytes` readable.
    unsafe fn load<D: DotQ>(d: D, p: *const u8) -> (D::Q, f32, f32);
    /// `acc + f32(Σ w · x) · scale` for this type's values.
    fn dot<D: DotQ>(d: D, acc: D::F, w: D::Q, x: D::Q, scale: f32) -> D::F;
}

/// Read a little-endian f16 at `p` as f32.
///
/// # Safety
/// `p .. p + 2` readable.
#[inline(always)]
unsafe fn scale_at(p: *const u8) -> f32 {
    // SAFETY: the caller makes 2 bytes at `p` readable.
    f16_bits_to_f32(u16::from_le(unsafe { (p as *const u16).read_unaligned() }))
}

pub(crate) struct KQ8_0;
pub(crate) struct KQ4_0;
pub(crate) struct KQ4_1;

impl Kind for KQ8_0 {
    const TY: BlockType = BlockType::Q8_0;
    #[inline(always)]
    unsafe fn load<D: DotQ>(d: D, p: *const u8) -> (D::Q, f32, f32) {
        // SAFETY: 34 bytes at `p` (caller): the scale, then 32 values.
        unsafe { (d.load_q8(p.add(2) as *const i8), scale_at(p), 0.0) }
    }
    #[inline(always)]
    fn dot<D: DotQ>(d: D, acc: D::F, w: D::Q, x: D::Q, scale: f32) -> D::F {
        d.dot_add(acc, w, x, scale)
    }
}

impl Kind for KQ4_0 {
    const TY: BlockType = BlockType::Q4_0;
    #[inline(always)]
    unsafe fn load<D: DotQ>(d: D, p: *const u8) -> (D::Q, f32, f32) {
        // SAFETY: 18 bytes at `p` (caller): the scale, then 16 bytes of nibbles.
        unsafe { (d.offset8(d.load_q4(p.add(2))), scale_at(p), 0.0) }
    }
    #[inline(always)]
    fn dot<D: DotQ>(d: D, acc: D::F, w: D::Q, x: D::Q, scale: f32) -> D::F {
        d.dot_add(acc, w, x, scale)
    }
}

impl Kind for KQ4_1 {
    const TY: BlockType = BlockType::Q4_1;
    #[inline(always)]
    unsafe fn load<D: DotQ>(d: D, p: *const u8) -> (D::Q, f32, f32) {
        // SAFETY: 20 bytes at `p` (caller): two scales, then 16 bytes of nibbles.
        unsafe { (d.load_q4(p.add(4)), scale_at(p), scale_at(p.add(2))) }
    }
    #[inline(always)]
    fn dot<D: DotQ>(d: D, acc: D::F, w: D::Q, x: D::Q, scale: f32) -> D::F {
        d.dot_add_u4(acc, w, x, scale)
    }
}

/// One block-weight call.
pub(crate) struct BJob<'a> {
    pub x: &'a QuantizedBlocks,
    pub w: &'a [u8],
    pub out_dim: usize,
    pub bias: Option<&'a [f32]>,
    pub y: OutPtr,
}

/// Activation rows per pass over a weight row (each block's weights decoded once for all of them).
const ROWS: usize = 4;

/// Output rows `outs` of `job` (one share), on the block type of `K`.
#[inline(always)]
pub(crate) fn run_share<D: DotQ, K: Kind>(d: D, job: &BJob<'_>, outs: Range<usize>) {
    let x = job.x;
    let in_dim = x.in_dim;
    let nb = in_dim / QK;
    let rb = nb * K::TY.block_bytes();
    assert!(outs.end <= job.out_dim && job.w.len() >= job.out_dim * rb);
    assert!(x.q.len() >= x.rows * in_dim && x.d.len() >= x.rows * nb && x.s.len() >= x.rows * nb);
    let y = job.y.0;
    let mut r0 = 0;
    while r0 < x.rows {
        let h = ROWS.min(x.rows - r0);
        for o in outs.clone() {
            let wrow = &job.w[o * rb..(o + 1) * rb];
            let mut acc = [d.fzero(); ROWS];
            let mut offs = [0.0f32; ROWS];
            for b in 0..nb {
                // SAFETY: block b of row o lies within `wrow` (rb = nb · block_bytes, asserted above).
                let (wq, dw, mw) = unsafe { K::load(d, wrow.as_ptr().add(b * K::TY.block_bytes())) };
                for r in 0..h {
                    let row = r0 + r;
                    // SAFETY: row < rows, block b < nb: 32 values within `x.q` (asserted above).
                    let xq = unsafe { d.load_q8(x.q.as_ptr().add(row * in_dim + b * QK)) };
                    acc[r] = K::dot(d, acc[r], wq, xq, dw * x.d[row * nb + b]);
                    if K::TY == BlockType::Q4_1 {
                        offs[r] += mw * x.s[row * nb + b];
                    }
                }
            }
            for r in 0..h {
                let mut v = d.reduce(acc[r]) + offs[r];
                if let Some(bias) = job.bias {
                    v += bias[o];
                }
                // SAFETY: y is [rows, out_dim] (the caller's check) and output o of every row is this share's.
                unsafe { *y.add((r0 + r) * job.out_dim + o) = v };
            }
        }
        r0 += h;
    }
}

/// How a block matrix sits in memory ([`crate::PackedWeight::from_blocks_in`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BlockLayout {
    /// ggml's own order: row after row, each `in_dim / 32` blocks of [`BlockType::block_bytes`] (a GGUF tensor's
    /// bytes as they are). Read one row at a time: per block one 32-value dot product and a horizontal sum, so
    /// the GEMV is compute bound (see [`BlockLayout::Groups`]).
    Rows,
    /// Groups of [`GROUP`] rows interleaved block by block (as llama.cpp's repacked buffers and ik_llama.cpp's
    /// `_R4`/`_R8` types do, here with 16 rows): per group, per block, the quants of the 16 rows in quads
    /// (`quad k, row r, byte t` at `64·k + 4·r + t`: one broadcast of 4 activation bytes multiplies 16 rows, the
    /// sums land in one vector of 16 i32, one lane per row, no horizontal sum), and in a second stream the 16
    /// rows' f16 scales (Q4_1: then their 16 mins). The same bytes as [`BlockLayout::Rows`] (plus zero rows up to
    /// a whole group); the GEMV streams them at the memory's pace. Q4 quant bytes keep ggml's nibble pairs (byte
    /// `4k + t` of a row holds values `4k + t` and `16 + 4k + t`); Q8_0 bytes are stored `+ 128` (XOR 0x80) on
    /// AVX-512, where they are the unsigned operand of `vpdpbusd`.
    #[default]
    Groups,
}

/// Quant bytes of one group block (16 rows x 32 values).
pub(crate) const fn group_quant_bytes(ty: BlockType) -> usize {
    match ty {
        BlockType::Q8_0 => GROUP * QK,
        BlockType::Q4_0 | BlockType::Q4_1 => GROUP * QK / 2,
    }
}

/// f16 scales (and Q4_1 mins) of one group block.
pub(crate) const fn group_scales(ty: BlockType) -> usize {
    match ty {
        BlockType::Q8_0 | BlockType::Q4_0 => GROUP,
        BlockType::Q4_1 => 2 * GROUP,
    }
}

/// What is added to a Q8_0 value in the groups of `isa` (see [`BlockLayout::Groups`], [`DotG::Q8_EXCESS`]).
pub(crate) fn q8_offset(isa: crate::Isa) -> u8 {
    if isa == crate::Isa::Avx512 {
        0x80
    } else {
        0
    }
}

/// One group of a grouped block matrix: the quants (`nb` group blocks) and scales of up to 16 rows.
pub(crate) struct GroupMut<'a> {
    pub q: &'a mut [u8],
    pub s: &'a mut [u16],
}

/// Interleave `rows` (`n <= 16` rows of ggml blocks, `nb` blocks each) into group `g` (rows past `n` stay zero).
pub(crate) fn interleave_group(ty: BlockType, q8_off: u8, rows: &[u8], nb: usize, g: GroupMut<'_>) {
    let (bb, qb, sb) = (ty.block_bytes(), group_quant_bytes(ty), group_scales(ty));
    let rb = nb * bb;
    for (r, row) in rows.chunks_exact(rb).enumerate() {
        for b in 0..nb {
            let blk = &row[b * bb..(b + 1) * bb];
            let (q, s) = (&mut g.q[b * qb..(b + 1) * qb], &mut g.s[b * sb..(b + 1) * sb]);
            s[r] = u16::from_le_bytes([blk[0], blk[1]]);
            match ty {
                BlockType::Q8_0 => {
                    for (j, &v) in blk[2..].iter().enumerate() {
                        q[64 * (j / 4) + 4 * r + j % 4] = v ^ q8_off;
                    }
                }
                BlockType::Q4_0 | BlockType::Q4_1 => {
                    let qs = &blk[bb - QK / 2..];
                    if ty == BlockType::Q4_1 {
                        s[GROUP + r] = u16::from_le_bytes([blk[2], blk[3]]);
                    }
                    for (j, &v) in qs.iter().enumerate() {
                        q[64 * (j / 4) + 4 * r + j % 4] = v;
                    }
                }
            }
        }
    }
}

/// Block `b` of row `r` (`< 16`) of a group (`q`, `s`: that group's), as ggml stores it (the inverse of
/// [`interleave_group`]), into `out[..block_bytes]`.
pub(crate) fn group_block(ty: BlockType, q8_off: u8, q: &[u8], s: &[u16], b: usize, r: usize, out: &mut [u8]) {
    let (bb, qb, sb) = (ty.block_bytes(), group_quant_bytes(ty), group_scales(ty));
    let (q, s) = (&q[b * qb..(b + 1) * qb], &s[b * sb..(b + 1) * sb]);
    let out = &mut out[..bb];
    out[..2].copy_from_slice(&s[r].to_le_bytes());
    match ty {
        BlockType::Q8_0 => {
            for (j, v) in out[2..].iter_mut().enumerate() {
                *v = q[64 * (j / 4) + 4 * r + j % 4] ^ q8_off;
            }
        }
        BlockType::Q4_0 | BlockType::Q4_1 => {
            if ty == BlockType::Q4_1 {
                out[2..4].copy_from_slice(&s[GROUP + r].to_le_bytes());
            }
            for (j, v) in out[bb - QK / 2..].iter_mut().enumerate() {
                *v = q[64 * (j / 4) + 4 * r + j % 4];
            }
        }
    }
}

/// One call on a grouped block matrix.
pub(crate) struct GJob<'a> {
    pub x: &'a QuantizedBlocks,
    /// `[groups, nb, group_quant_bytes]`, 64-byte aligned.
    pub q: &'a [u8],
    /// `[groups, nb, group_scales]` f16 bits.
    pub s: &'a [u16],
    pub out_dim: usize,
    pub bias: Option<&'a [f32]>,
    pub y: OutPtr,
}

/// One block type's group dot product for [`DotG`].
pub(crate) trait GKind {
    const TY: BlockType;
    /// `init` per activation block is `CORR · Σ qx` plus, for Q8_0, `-Q8_EXCESS · Σ qx`.
    const CORR: i32;
    /// # Safety
    /// As [`DotG::q8`] / [`DotG::q4`].
    unsafe fn block<D: DotG, const R: usize>(d: D, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [D::I; R];
}

impl GKind for KQ8_0 {
    const TY: BlockType = BlockType::Q8_0;
    const CORR: i32 = 0;
    #[inline(always)]
    unsafe fn block<D: DotG, const R: usize>(d: D, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [D::I; R] {
        // SAFETY: forwarded contract.
        unsafe { d.q8(w, x, init) }
    }
}

impl GKind for KQ4_0 {
    const TY: BlockType = BlockType::Q4_0;
    /// The nibbles are `q4`, the weights `q4 - 8`: `Σ (q4 - 8) · x = Σ q4 · x - 8 · Σ x`.
    const CORR: i32 = -8;
    #[inline(always)]
    unsafe fn block<D: DotG, const R: usize>(d: D, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [D::I; R] {
        // SAFETY: forwarded contract.
        unsafe { d.q4(w, x, init) }
    }
}

impl GKind for KQ4_1 {
    const TY: BlockType = BlockType::Q4_1;
    const CORR: i32 = 0;
    #[inline(always)]
    unsafe fn block<D: DotG, const R: usize>(d: D, w: *const u8, x: [*const i8; R], init: [i32; R]) -> [D::I; R] {
        // SAFETY: forwarded contract.
        unsafe { d.q4(w, x, init) }
    }
}

/// Most f32 vectors per group (scalar: 16 of one lane).
const GV_MAX: usize = GROUP;

/// Groups `groups` of `job` (one share) on the block type of `K`: for each group, activation rows 4 at a time,
/// for each block: the 16 rows' exact integer sums (one [`DotG`] call, the group block's quants loaded once for
/// up to 4 rows), then per vector of rows `y += f32(Σ) · (dw · dx)` (Q4_1: `+ mw · sx`; products rounded, then
/// added), one f32 lane per output.
/// Every output's f32 operations are the same, in the same order, on every ISA and whatever the split: the same
/// bits everywhere.
#[inline(always)]
pub(crate) fn run_groups<D: DotG, K: GKind>(d: D, job: &GJob<'_>, groups: Range<usize>) {
    let x = job.x;
    let nb = x.in_dim / QK;
    let (qb, sb) = (group_quant_bytes(K::TY), group_scales(K::TY));
    assert!(groups.end * GROUP < job.out_dim + GROUP);
    assert!(job.q.len() >= groups.end * nb * qb && job.s.len() >= groups.end * nb * sb);
    assert!(
        (job.q.as_ptr() as usize).is_multiple_of(64) && qb.is_multiple_of(64),
        "group blocks are 64-byte aligned"
    );
    assert!(x.q.len() >= x.rows * x.in_dim && x.d.len() >= x.rows * nb && x.qs.len() >= x.rows * nb);
    assert!(x.s.len() >= x.rows * nb && job.bias.is_none_or(|b| b.len() >= job.out_dim));
    let mut r0 = 0;
    while r0 < x.rows {
        let h = 4.min(x.rows - r0);
        for g in groups.clone() {
            // SAFETY: group g < groups.end and rows r0 .. r0 + h < rows lie within the buffers (asserted above).
            unsafe {
                match h {
                    1 => group_tile::<D, K, 1>(d, job, g, r0),
                    2 => group_tile::<D, K, 2>(d, job, g, r0),
                    3 => group_tile::<D, K, 3>(d, job, g, r0),
                    _ => group_tile::<D, K, 4>(d, job, g, r0),
                }
            }
        }
        r0 += h;
    }
}

/// Rows `r0 .. r0 + R` of `x` times group `g` (see [`run_groups`]).
///
/// # Safety
/// Group `g` within `job.q`, `job.s` and `job.out_dim` (rounded up to a group); rows `r0 .. r0 + R` within `job.x`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles read best with indices
unsafe fn group_tile<D: DotG, K: GKind, const R: usize>(d: D, job: &GJob<'_>, g: usize, r0: usize) {
    let s = d.simd();
    let l = <D::S as Simd>::LANES;
    let nv = GROUP / l;
    let x = job.x;
    let (in_dim, nb) = (x.in_dim, x.in_dim / QK);
    let (qb, sb) = (group_quant_bytes(K::TY), group_scales(K::TY));
    let corr = K::CORR - if K::TY == BlockType::Q8_0 { D::Q8_EXCESS } else { 0 };
    let mut y = [[s.zero(); GV_MAX]; R];
    // SAFETY: block b < nb of group g (quants and scales), of rows r0 + r (values, scales, sums): the caller's ranges.
    unsafe {
        let wq = job.q.as_ptr().add(g * nb * qb);
        let ws = job.s.as_ptr().add(g * nb * sb);
        for b in 0..nb {
            let xs: [*const i8; R] = std::array::from_fn(|r| x.q.as_ptr().add((r0 + r) * in_dim + b * QK));
            let init: [i32; R] = std::array::from_fn(|r| corr * *x.qs.get_unchecked((r0 + r) * nb + b));
            let acc = K::block(d, wq.add(b * qb), xs, init);
            let dx: [f32; R] = std::array::from_fn(|r| *x.d.get_unchecked((r0 + r) * nb + b));
            let sp = ws.add(b * sb);
            for v in 0..nv {
                let dw = s.load_f16(sp.add(v * l) as *const half::f16);
                for r in 0..R {
                    // Multiply, then add (not an FMA: the scalar ISA has none, and every ISA gives the same bits).
                    y[r][v] = s.add(y[r][v], s.mul(d.cvt(&acc[r], v), s.mul(dw, s.splat(dx[r]))));
                }
                if K::TY == BlockType::Q4_1 {
                    let mw = s.load_f16(sp.add(GROUP + v * l) as *const half::f16);
                    for r in 0..R {
                        let sx = *x.s.get_unchecked((r0 + r) * nb + b);
                        y[r][v] = s.add(y[r][v], s.mul(mw, s.splat(sx)));
                    }
                }
            }
        }
        let o0 = g * GROUP;
        let n = GROUP.min(job.out_dim - o0);
        for r in 0..R {
            let yp = job.y.0.add((r0 + r) * job.out_dim + o0);
            for v in 0..nv {
                let c0 = v * l;
                if c0 >= n {
                    break;
                }
                let w = l.min(n - c0);
                let mut val = y[r][v];
                if let Some(bias) = job.bias {
                    val = s.add(val, s.read_partial(&bias[o0 + c0..o0 + c0 + w]));
                }
                // SAFETY: y is [rows, out_dim] (the caller's check); outputs o0 .. o0 + n of every row are this
                // share's.
                if w == l {
                    s.storeu(yp.add(c0), val);
                } else {
                    s.store_partial(yp.add(c0), val, w);
                }
            }
        }
    }
}
