//! ggml tensor types to f32: the plain types here, the quantised blocks through [`super::blocks`] (where each
//! block layout and its formula are described once).
//!
//! The arithmetic is the same f32 multiply (and add) ggml and the `gguf` Python package do, so results are
//! bit-exact (tests/gguf_blocks.rs checks every type against `gguf.quants.dequantize`).

use half::f16;

use super::blocks::{self, QuantBlock};
use super::reader::GgmlType;

/// The types [`dequantize_into`] handles.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

pub fn is_supported(ty: GgmlType) -> bool {
    SUPPORTED.contains(&ty)
}

/// Why [`dequantize_into`] did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DequantError {
    /// A ggml type it does not handle.
    Unsupported(GgmlType),
    /// `src` does not hold exactly `dst.len()` elements of the type.
    Size { bytes: usize, elems: usize },
}

/// Dequantise `src` (whole blocks of `ty`) into `dst`, which it must fill exactly.
pub fn dequantize_into(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), DequantError> {
    let size = DequantError::Size {
        bytes: src.len(),
        elems: dst.len(),
    };
    let plain = |elem_bytes: usize, f: &dyn Fn(&[u8]) -> f32, dst: &mut [f32]| {
        if Some(src.len()) != dst.len().checked_mul(elem_bytes) {
            return Err(size);
        }
        for (o, c) in dst.iter_mut().zip(src.chunks_exact(elem_bytes)) {
            *o = f(c);
        }
        Ok(())
    };
    fn quant<B: QuantBlock>(src: &[u8], dst: &mut [f32]) -> Result<(), DequantError> {
        blocks::dequantize_blocks::<B>(src, dst).map_err(|e| DequantError::Size {
            bytes: e.bytes,
            elems: e.elems,
        })
    }
    match ty {
        GgmlType::F32 => plain(4, &|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]), dst),
        GgmlType::F16 => plain(2, &|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32(), dst),
        // The bf16 bits are the top half of the f32 (NaN payloads kept, as ggml does).
        GgmlType::BF16 => plain(
            2,
            &|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16),
            dst,
        ),
        GgmlType::Q8_0 => quant::<blocks::BlockQ8_0>(src, dst),
        GgmlType::Q4_0 => quant::<blocks::BlockQ4_0>(src, dst),
        GgmlType::Q4_1 => quant::<blocks::BlockQ4_1>(src, dst),
        GgmlType::Q5_0 => quant::<blocks::BlockQ5_0>(src, dst),
        GgmlType::Q5_1 => quant::<blocks::BlockQ5_1>(src, dst),
        GgmlType::Q4_K => quant::<blocks::BlockQ4K>(src, dst),
        GgmlType::Q5_K => quant::<blocks::BlockQ5K>(src, dst),
        GgmlType::Q6_K => quant::<blocks::BlockQ6K>(src, dst),
        GgmlType::Q8_K => quant::<blocks::BlockQ8K>(src, dst),
        _ => Err(DequantError::Unsupported(ty)),
    }
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
    fn unsupported_type_and_wrong_sizes_are_errors() {
        let q2k = GgmlType::from_id(10).unwrap();
        let mut out = [0f32; 256];
        assert_eq!(
            dequantize_into(q2k, &[0u8; 84], &mut out),
            Err(DequantError::Unsupported(q2k))
        );
        assert!(dequantize_into(GgmlType::Q4_K, &[0u8; 144], &mut out).is_ok());
        for (ty, bytes) in [(GgmlType::Q4_K, 143), (GgmlType::Q6_K, 144), (GgmlType::F32, 1023)] {
            assert_eq!(
                dequantize_into(ty, &vec![0u8; bytes], &mut out),
                Err(DequantError::Size { bytes, elems: 256 }),
                "{ty}"
            );
        }
    }

    #[test]
    fn every_supported_block_type_matches_the_type_table() {
        for &(id, name, elems, bytes) in blocks::LAYOUTS {
            let t = GgmlType::from_id(id).unwrap();
            assert_eq!(
                (t.name(), t.block_size(), t.type_size()),
                (name, elems as u64, bytes as u64)
            );
            assert!(is_supported(t), "{name}");
        }
    }
}
