//! Helpers shared by the kernel tests: deterministic inputs and deliberately unaligned slices.
#![allow(dead_code)] // each test binary uses its own subset

/// Deterministic xorshift values in [-scale, scale).
pub fn rand_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// `v` copied to offset 1 of a fresh buffer: the returned range is a deliberately unaligned slice.
pub fn unaligned<T: Copy + Default>(v: &[T]) -> (Vec<T>, std::ops::Range<usize>) {
    let mut buf = vec![T::default(); v.len() + 1];
    buf[1..].copy_from_slice(v);
    (buf, 1..v.len() + 1)
}

/// Largest |a - b|.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every int8 dot-product variant of `k`'s ISA this CPU can run (`Best` only where it differs from `Base`).
pub fn dot_variants(test: &str, k: kernels::Kernels) -> Vec<kernels::Kernels> {
    use kernels::{I8Dot, Isa};
    let mut out = vec![k.with_i8_dot(I8Dot::Base)];
    let ext = match k.isa() {
        Isa::Avx512 => Some(kernels::Feature::Avx512Vnni),
        Isa::Neon => Some(kernels::Feature::NeonDot),
        _ => None,
    };
    if let Some(f) = ext {
        if kernels::testing::require(test, f) {
            out.push(k.with_i8_dot(I8Dot::Best));
        }
    }
    out
}

/// A file of tools/fixtures/gguf-blocks (made by tools/scripts/gguf_block_refs.py).
pub fn block_fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tools/fixtures/gguf-blocks")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (made by tools/scripts/gguf_block_refs.py)", path.display()))
}

/// Little-endian f32 values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}
