//! Shared helpers of the translation tests: reading references, the hash-initialised weights of
//! `marian-base-shape`, comparing logits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use qkv::layers::TensorMap;

/// A reference tensor: shape and f32 values.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every tensor of a reference `.safetensors` file, widened to f32.
pub fn read_reference(path: &Path) -> HashMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, RefTensor { shape: view.shape().to_vec(), data })
        })
        .collect()
}

/// A model's `.safetensors` as an in-memory tensor map (f32 tensors).
pub fn read_weights(path: &Path) -> TensorMap {
    let mut map = TensorMap::new(path);
    for (name, t) in read_reference(path) {
        map.insert_f32(&name, &t.shape, &t.data).expect("tensor");
    }
    map
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub fn id_rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().expect("array of arrays").iter().map(ids).collect()
}

/// Largest |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

// --- the deterministic weights of marian-base-shape (tools/scripts/hashinit.py, tools/fixtures/README.md)

fn fnv1a64(name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in name.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// `offset + scale * r`, `r` in [-1, 1) from the hash of (name, flat index).
pub fn hash_tensor(name: &str, n: usize, scale: f32, offset: f32) -> Vec<f32> {
    let h0 = fnv1a64(name);
    (0..n as u64)
        .map(|i| {
            let u = (splitmix64(h0 ^ i) as u32) >> 8;
            let r = (u as i32 - 8388608) as f32 * (1.0 / 8388608.0);
            offset + scale * r
        })
        .collect()
}
