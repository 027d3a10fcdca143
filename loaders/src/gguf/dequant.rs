//! ggml tensor types to f32.
//!
//! Block layouts as ggml defines them (`ggml-common.h`), all little-endian, 32 elements per quantised block:
//! ```text
//! Q8_0: d f16 | qs[32] i8                     x[j]      = d * qs[j]
//! Q4_0: d f16 | qs[16] u8 (two nibbles)       x[j]      = d * ((qs[j] & 15) - 8)      j < 16
//!                                             x[j + 16] = d * ((qs[j] >> 4) - 8)
//! Q4_1: d f16 | m f16 | qs[16] u8             x[j]      = d * (qs[j] & 15) + m
//!                                             x[j + 16] = d * (qs[j] >> 4) + m
//! ```
//! The arithmetic is the same f32 multiply (and add) the `gguf` Python package does, so results are bit-exact.

use half::{bf16, f16};

use super::reader::GgmlType;

/// The types [`dequantize_into`] handles.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

/// Elements per quantised block of Q8_0 / Q4_0 / Q4_1.
const QK: usize = 32;

pub fn is_supported(ty: GgmlType) -> bool {
    SUPPORTED.contains(&ty)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantise `src` (whole blocks of `ty`) into `dst`; `Err(())` when `ty` is not supported.
///
/// Caller contract (a bug otherwise, so asserted): `src` holds exactly `dst.len()` elements of `ty`.
#[allow(clippy::result_unit_err)] // the one failure is "unsupported type": callers name the tensor in their Error
pub fn dequantize_into(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), ()> {
    if !is_supported(ty) {
        return Err(());
    }
    let block = ty.block_size() as usize;
    let type_size = ty.type_size() as usize;
    assert!(
        dst.len().is_multiple_of(block) && src.len() == dst.len() / block * type_size,
        "dequantize_into: {} bytes of {} for {} elements",
        src.len(),
        ty.name(),
        dst.len()
    );
    match ty {
        GgmlType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(type_size)) {
                let d = f16_at(b, 0);
                let qs = &b[2..2 + QK];
                for (o, &q) in out.iter_mut().zip(qs) {
                    *o = (q as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(type_size)) {
                let d = f16_at(b, 0);
                let qs = &b[2..2 + QK / 2];
                let (lo, hi) = out.split_at_mut(QK / 2);
                for j in 0..QK / 2 {
                    lo[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
                    hi[j] = d * ((qs[j] >> 4) as i32 - 8) as f32;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(type_size)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let qs = &b[4..4 + QK / 2];
                let (lo, hi) = out.split_at_mut(QK / 2);
                for j in 0..QK / 2 {
                    lo[j] = d * (qs[j] & 0x0F) as f32 + m;
                    hi[j] = d * (qs[j] >> 4) as f32 + m;
                }
            }
        }
        _ => return Err(()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_layout() {
        // d = 1.0, m = -8.0, nibbles: low = j % 16, high = 15 - j % 16.
        let mut b = vec![];
        b.extend_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-8.0).to_bits().to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize_into(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 - 8.0);
            assert_eq!(out[j + 16], (15 - j) as f32 - 8.0);
        }
    }

    #[test]
    fn unsupported_type_is_an_error() {
        let q4k = GgmlType::from_id(12).unwrap();
        let mut out = [0f32; 256];
        assert!(dequantize_into(q4k, &[0u8; 144], &mut out).is_err());
    }
}
