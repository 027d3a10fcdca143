//! ggml's quantised block formats: one struct per type that overlays the file's bytes, and the value of each
//! element. This is the one description of the formats: the dequantiser ([`super::dequant`]) and any kernel
//! that reads quantised weights in place (a GEMV over `&[BlockQ4K]` cast from the memory map) use these.
//!
//! Every struct is `#[repr(C)]` of byte arrays only (alignment 1, no padding), so a byte slice of whole blocks
//! casts to a block slice wherever it lies in the file ([`as_blocks`]); multi-byte fields are little-endian
//! ([`F16Le`], [`F32Le`], [`I16Le`], and the `qh` words of Q5_0 / Q5_1). Layouts follow llama.cpp's
//! `ggml-common.h`; offsets are bytes from the start of the block.
//!
//! ```text
//! type  elems bytes  fields @offset                                                  element j
//! Q8_0    32   34    d f16 @0 | qs[32] i8 @2                                         d * qs[j]
//! Q4_0    32   18    d f16 @0 | qs[16] @2                                            d * (q4(j) - 8)
//! Q4_1    32   20    d f16 @0 | m f16 @2 | qs[16] @4                                 d * q4(j) + m
//! Q5_0    32   22    d f16 @0 | qh u32 @2 | qs[16] @6                                d * ((q4(j) | h(j) << 4) - 16)
//! Q5_1    32   24    d f16 @0 | m f16 @2 | qh u32 @4 | qs[16] @8                     d * (q4(j) | h(j) << 4) + m
//! Q4_K   256  144    d f16 @0 | dmin f16 @2 | scales[12] @4 | qs[128] @16            (d*sc[s]) * q4k(j) - dmin*mn[s]
//! Q5_K   256  176    d f16 @0 | dmin f16 @2 | scales[12] @4 | qh[32] @16 | qs[128] @48
//!                                                                                   (d*sc[s]) * (q4k(j) | hk(j) << 4) - dmin*mn[s]
//! Q6_K   256  210    ql[128] @0 | qh[64] @128 | scales[16] i8 @192 | d f16 @208      (d*scales[j/16]) * (q6(j) - 32)
//! Q8_K   256  292    d f32 @0 | qs[256] i8 @4 | bsums[16] i16 @260                   d * qs[j]
//! ```
//! - 32-element blocks: `q4(j)` is the low nibble of `qs[j]` for `j < 16`, the high nibble of `qs[j - 16]` after;
//!   `h(j)` is bit `j` of the little-endian `qh`.
//! - K-quants (256 elements, "super-blocks"): Q4_K / Q5_K have 8 sub-blocks of 32 (`s = j / 32`), each with a
//!   6-bit scale `sc[s]` and a 6-bit min `mn[s]` packed into `scales[12]` ([`BlockQ4K::scale_min`]): for `s < 4`
//!   `sc = scales[s] & 63`, `mn = scales[s + 4] & 63`; for `s >= 4` the low 4 bits are the nibbles of
//!   `scales[s + 4]` (`sc` low, `mn` high) and the top 2 bits are the top 2 bits of `scales[s - 4]` (`sc`) and
//!   `scales[s]` (`mn`). `q4k(j)`: the 64 elements `64c..64c + 64` read `qs[32c..32c + 32]`, low nibbles first
//!   (sub-block `2c`) then high nibbles (sub-block `2c + 1`). `hk(j)` (Q5_K) is bit `s` of `qh[j % 32]`.
//! - Q6_K: 16 sub-blocks of 16 with an i8 scale each. Element `j = 128h + 32t + l` (`h < 2`, `t < 4`, `l < 32`)
//!   has low 4 bits from `ql[64h + 32(t & 1) + l]` (low nibble for `t < 2`, high for `t >= 2`) and high 2 bits
//!   `(qh[32h + l] >> 2t) & 3`.
//! - Q8_K is llama.cpp's activation format for K-quant dot products (never a stored weight): `bsums[g]` is the
//!   sum of `qs[16g..16g + 16]`.
//!
//! The dequantisation is the f32 arithmetic of ggml's `dequantize_row_*` and of the `gguf` Python package, in
//! the same order (one rounding per multiply and per add, no fused multiply-add): results are bit-exact.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// A little-endian f16 at any alignment.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    pub fn get(self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.0)).to_f32()
    }
}

/// A little-endian f32 at any alignment.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct F32Le(pub [u8; 4]);

impl F32Le {
    pub fn get(self) -> f32 {
        f32::from_le_bytes(self.0)
    }
}

/// A little-endian i16 at any alignment.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct I16Le(pub [u8; 2]);

impl I16Le {
    pub fn get(self) -> i16 {
        i16::from_le_bytes(self.0)
    }
}

/// Elements per block of the 32-element types.
pub const QK: usize = 32;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// One quantised block: a ggml type's fixed-size unit of `ELEMS` values in `size_of::<Self>()` bytes.
pub trait QuantBlock: Pod {
    /// ggml's type id (`enum ggml_type`).
    const GGML_ID: u32;
    /// ggml's type name.
    const NAME: &'static str;
    /// Elements per block.
    const ELEMS: usize;
    /// Bytes per block.
    const BYTES: usize = std::mem::size_of::<Self>();

    /// The block's values, in order. Caller contract: `out.len() == Self::ELEMS`.
    fn dequantize(&self, out: &mut [f32]);
}

/// A byte slice of whole blocks as blocks (in place; any alignment). `None` when the length is not a whole
/// number of blocks.
pub fn as_blocks<B: QuantBlock>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// The byte and element counts of a [`dequantize_blocks`] call do not agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeMismatch {
    pub bytes: usize,
    pub elems: usize,
}

/// Dequantise whole blocks of `B` from `src` into `dst`; `src` must hold exactly `dst.len()` elements.
pub fn dequantize_blocks<B: QuantBlock>(src: &[u8], dst: &mut [f32]) -> Result<(), SizeMismatch> {
    let mismatch = SizeMismatch {
        bytes: src.len(),
        elems: dst.len(),
    };
    let blocks = as_blocks::<B>(src).ok_or(mismatch)?;
    if blocks.len().checked_mul(B::ELEMS) != Some(dst.len()) {
        return Err(mismatch);
    }
    for (b, out) in blocks.iter().zip(dst.chunks_exact_mut(B::ELEMS)) {
        b.dequantize(out);
    }
    Ok(())
}

/// The 4-bit value of element `j` of a 32-element block: `qs[j]` low nibble, then `qs[j - 16]` high nibble.
fn nibble32(qs: &[u8; QK / 2], j: usize) -> u8 {
    if j < QK / 2 {
        qs[j] & 0x0F
    } else {
        qs[j - QK / 2] >> 4
    }
}

/// The 5-bit value of element `j` of a Q5_0 / Q5_1 block: [`nibble32`] plus bit `j` of `qh` as bit 4.
fn q5_32(qs: &[u8; QK / 2], qh: [u8; 4], j: usize) -> u8 {
    nibble32(qs, j) | ((((u32::from_le_bytes(qh) >> j) & 1) as u8) << 4)
}

/// Q8_0: 32 signed bytes and one f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; QK],
}

impl QuantBlock for BlockQ8_0 {
    const GGML_ID: u32 = 8;
    const NAME: &'static str = "Q8_0";
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.get();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Q4_0: 32 nibbles with an implicit offset of 8, one f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}

impl QuantBlock for BlockQ4_0 {
    const GGML_ID: u32 = 2;
    const NAME: &'static str = "Q4_0";
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.get();
        for (j, o) in out.iter_mut().enumerate() {
            *o = d * (nibble32(&self.qs, j) as i32 - 8) as f32;
        }
    }
}

/// Q4_1: 32 nibbles, an f16 scale and an f16 min.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; QK / 2],
}

impl QuantBlock for BlockQ4_1 {
    const GGML_ID: u32 = 3;
    const NAME: &'static str = "Q4_1";
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.get(), self.m.get());
        for (j, o) in out.iter_mut().enumerate() {
            *o = d * nibble32(&self.qs, j) as f32 + m;
        }
    }
}

/// Q5_0: 32 5-bit values (low nibbles in `qs`, fifth bits in `qh`) with an implicit offset of 16, one f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: F16Le,
    /// Bit `j` (little-endian u32) is bit 4 of element `j`.
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

impl BlockQ5_0 {
    /// The unsigned 5-bit value of element `j` (0..=31).
    pub fn q5(&self, j: usize) -> u8 {
        q5_32(&self.qs, self.qh, j)
    }
}

impl QuantBlock for BlockQ5_0 {
    const GGML_ID: u32 = 6;
    const NAME: &'static str = "Q5_0";
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.get();
        for (j, o) in out.iter_mut().enumerate() {
            *o = d * (self.q5(j) as i32 - 16) as f32;
        }
    }
}

/// Q5_1: 32 5-bit values, an f16 scale and an f16 min.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: F16Le,
    pub m: F16Le,
    /// Bit `j` (little-endian u32) is bit 4 of element `j`.
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

impl BlockQ5_1 {
    /// The unsigned 5-bit value of element `j` (0..=31).
    pub fn q5(&self, j: usize) -> u8 {
        q5_32(&self.qs, self.qh, j)
    }
}

impl QuantBlock for BlockQ5_1 {
    const GGML_ID: u32 = 7;
    const NAME: &'static str = "Q5_1";
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.get(), self.m.get());
        for (j, o) in out.iter_mut().enumerate() {
            *o = d * self.q5(j) as f32 + m;
        }
    }
}

/// The 6-bit scale and min of sub-block `s` (0..8) from the 12 packed bytes of a Q4_K / Q5_K block.
pub fn k_scale_min(scales: &[u8; 12], s: usize) -> (u8, u8) {
    if s < 4 {
        (scales[s] & 63, scales[s + 4] & 63)
    } else {
        (
            (scales[s + 4] & 0x0F) | ((scales[s - 4] >> 6) << 4),
            (scales[s + 4] >> 4) | ((scales[s] >> 6) << 4),
        )
    }
}

/// Q4_K: a 256-element super-block of 8 sub-blocks of 32 4-bit values, each sub-block with a 6-bit scale and
/// min, the super-block with f16 scales of those (`d`, `dmin`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: F16Le,
    pub dmin: F16Le,
    /// 8 (scale, min) pairs of 6 bits: see [`k_scale_min`].
    pub scales: [u8; 12],
    /// 64 elements per 32 bytes: low nibbles then high nibbles.
    pub qs: [u8; QK_K / 2],
}

impl BlockQ4K {
    /// Sub-block `s`'s (scale, min), 6 bits each.
    pub fn scale_min(&self, s: usize) -> (u8, u8) {
        k_scale_min(&self.scales, s)
    }
}

/// The 4-bit value of element `j` of a Q4_K / Q5_K super-block's `qs`.
fn nibble_k(qs: &[u8; QK_K / 2], j: usize) -> u8 {
    let (c, r) = (j / 64, j % 64);
    let b = qs[32 * c + r % 32];
    if r < 32 {
        b & 0x0F
    } else {
        b >> 4
    }
}

/// `out[j] = (d * sc[s]) * q(j) - dmin * mn[s]` over the 8 sub-blocks of a Q4_K / Q5_K super-block.
fn dequantize_k_sub_blocks(d: f32, dmin: f32, scales: &[u8; 12], q: impl Fn(usize) -> u8, out: &mut [f32]) {
    for (s, sub) in out.chunks_exact_mut(QK).enumerate() {
        let (sc, mn) = k_scale_min(scales, s);
        let dl = d * sc as f32;
        let ml = dmin * mn as f32;
        for (l, o) in sub.iter_mut().enumerate() {
            *o = dl * q(QK * s + l) as f32 - ml;
        }
    }
}

impl QuantBlock for BlockQ4K {
    const GGML_ID: u32 = 12;
    const NAME: &'static str = "Q4_K";
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let q = |j| nibble_k(&self.qs, j);
        dequantize_k_sub_blocks(self.d.get(), self.dmin.get(), &self.scales, q, out);
    }
}

/// Q5_K: Q4_K's layout plus a fifth bit per element in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: F16Le,
    pub dmin: F16Le,
    /// 8 (scale, min) pairs of 6 bits: see [`k_scale_min`].
    pub scales: [u8; 12],
    /// Bit `s` of `qh[l]` is bit 4 of element `32s + l`.
    pub qh: [u8; QK_K / 8],
    /// As Q4_K's `qs`: the low 4 bits.
    pub qs: [u8; QK_K / 2],
}

impl BlockQ5K {
    /// Sub-block `s`'s (scale, min), 6 bits each.
    pub fn scale_min(&self, s: usize) -> (u8, u8) {
        k_scale_min(&self.scales, s)
    }

    /// The unsigned 5-bit value of element `j` (0..=31).
    pub fn q5(&self, j: usize) -> u8 {
        nibble_k(&self.qs, j) | (((self.qh[j % 32] >> (j / 32)) & 1) << 4)
    }
}

impl QuantBlock for BlockQ5K {
    const GGML_ID: u32 = 13;
    const NAME: &'static str = "Q5_K";
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_k_sub_blocks(self.d.get(), self.dmin.get(), &self.scales, |j| self.q5(j), out);
    }
}

/// Q6_K: 16 sub-blocks of 16 6-bit values (offset 32), an i8 scale per sub-block, an f16 super-block scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits: element `128h + 32t + l` in `ql[64h + 32(t & 1) + l]`, low nibble for `t < 2`.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: element `128h + 32t + l` in bits `2t..2t + 2` of `qh[32h + l]`.
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: F16Le,
}

impl BlockQ6K {
    /// The unsigned 6-bit value of element `j` (0..=63).
    pub fn q6(&self, j: usize) -> u8 {
        let (h, t, l) = (j / 128, (j % 128) / 32, j % 32);
        let lo = (self.ql[64 * h + 32 * (t & 1) + l] >> (4 * (t >> 1))) & 0x0F;
        let hi = (self.qh[32 * h + l] >> (2 * t)) & 3;
        lo | (hi << 4)
    }
}

impl QuantBlock for BlockQ6K {
    const GGML_ID: u32 = 14;
    const NAME: &'static str = "Q6_K";
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.get();
        for (g, sub) in out.chunks_exact_mut(16).enumerate() {
            let dl = d * self.scales[g] as f32;
            for (l, o) in sub.iter_mut().enumerate() {
                *o = dl * (self.q6(16 * g + l) as i32 - 32) as f32;
            }
        }
    }
}

/// Q8_K: 256 signed bytes, an f32 scale and the sums of each 16 of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: F32Le,
    pub qs: [i8; QK_K],
    /// `bsums[g]` = sum of `qs[16g..16g + 16]`.
    pub bsums: [I16Le; QK_K / 16],
}

impl QuantBlock for BlockQ8K {
    const GGML_ID: u32 = 15;
    const NAME: &'static str = "Q8_K";
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.get();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }
}

/// (ggml id, name, elements, bytes) of every block type here, for checks against the reader's type table.
pub const LAYOUTS: &[(u32, &str, usize, usize)] = &[
    layout::<BlockQ8_0>(),
    layout::<BlockQ4_0>(),
    layout::<BlockQ4_1>(),
    layout::<BlockQ5_0>(),
    layout::<BlockQ5_1>(),
    layout::<BlockQ4K>(),
    layout::<BlockQ5K>(),
    layout::<BlockQ6K>(),
    layout::<BlockQ8K>(),
];

const fn layout<B: QuantBlock>() -> (u32, &'static str, usize, usize) {
    (B::GGML_ID, B::NAME, B::ELEMS, B::BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_ggml_s() {
        // ggml-common.h's static_asserts.
        let want = [34, 18, 20, 22, 24, 144, 176, 210, 292];
        let got: Vec<usize> = LAYOUTS.iter().map(|l| l.3).collect();
        assert_eq!(got, want);
        assert_eq!(std::mem::align_of::<BlockQ8K>(), 1);
    }

    #[test]
    fn k_scales_unpack_like_ggml() {
        // Sub-blocks 0..4 in the low 6 bits of bytes 0..8; 4..8 from nibbles of bytes 8..12 and top bits.
        let mut scales = [0u8; 12];
        let want: Vec<(u8, u8)> = (0..8).map(|s| (s as u8 * 7 + 1, 63 - s as u8 * 5)).collect();
        for (s, &(sc, mn)) in want.iter().enumerate() {
            if s < 4 {
                scales[s] |= sc;
                scales[s + 4] |= mn;
            } else {
                scales[s + 4] = (sc & 0x0F) | ((mn & 0x0F) << 4);
                scales[s - 4] |= (sc >> 4) << 6;
                scales[s] |= (mn >> 4) << 6;
            }
        }
        let got: Vec<(u8, u8)> = (0..8).map(|s| k_scale_min(&scales, s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn q6_k_element_positions() {
        // Element 128 + 32*3 + 5: ql[64 + 32 + 5] high nibble, qh[32 + 5] bits 6..8.
        let mut b = BlockQ6K::zeroed();
        b.ql[101] = 0xA0;
        b.qh[37] = 0b1100_0000;
        assert_eq!(b.q6(128 + 96 + 5), 0x3A);
        assert_eq!((0..256).filter(|&j| b.q6(j) != 0).count(), 1);
    }

    #[test]
    fn sizes_are_checked() {
        let mut out = [0f32; 64];
        assert!(dequantize_blocks::<BlockQ8_0>(&[0u8; 68], &mut out).is_ok());
        assert!(dequantize_blocks::<BlockQ8_0>(&[0u8; 67], &mut out).is_err());
        assert!(dequantize_blocks::<BlockQ8_0>(&[0u8; 34], &mut out).is_err());
    }
}
