//! Shared helpers of the translation tests: reading references, the hash-initialised weights of
//! `marian-base-shape`, comparing logits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use loaders::safetensors::SafeTensors;

/// A reference tensor: shape and f32 values.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every tensor of a reference `.safetensors` file, widened to f32.
pub fn read_reference(path: &Path) -> HashMap<String, RefTensor> {
    let st = SafeTensors::open(path).unwrap_or_else(|e| panic!("{e}"));
    st.names()
        .into_iter()
        .map(|name| {
            let t = st.get(name).expect("listed tensor");
            (
                name.to_string(),
                RefTensor {
                    shape: t.shape().to_vec(),
                    data: t.to_f32_vec(),
                },
            )
        })
        .collect()
}

/// A model's `.safetensors`, memory-mapped.
pub fn read_weights(path: &Path) -> SafeTensors {
    SafeTensors::open(path).unwrap_or_else(|e| panic!("{e}"))
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
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

/// transformers' search options of a Marian reference (`generate_options` of reference.json).
pub fn marian_search_options(json: &serde_json::Value, num_beams: usize) -> qkv::search::SearchOptions {
    use qkv::search::{BeamStyle, EarlyStopping, LogitsRules, SearchOptions};
    let g = &json["generate_options"];
    SearchOptions {
        num_beams,
        max_new_tokens: g["max_new_tokens"].as_u64().unwrap() as usize,
        min_new_tokens: (g["min_length"].as_u64().unwrap() as usize).saturating_sub(1),
        length_penalty: g["beam"]["length_penalty"].as_f64().unwrap() as f32,
        num_return_sequences: 1,
        style: BeamStyle::HuggingFace {
            early_stopping: EarlyStopping::Heuristic,
        },
        rules: LogitsRules {
            eos: vec![g["eos_token_id"].as_u64().unwrap() as u32],
            bad_words: id_rows(&g["bad_words_ids"]),
            forced_eos: Some(g["forced_eos_token_id"].as_u64().unwrap() as u32),
            renormalize: g["renormalize_logits"].as_bool().unwrap(),
        },
    }
}

/// The hash-initialised weights of `marian-base-shape` as `(name, shape, values)`, checked against the
/// first values and f64 sums that Python recorded in reference.json.
pub fn marian_base_shape_tensors(json: &serde_json::Value) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for t in json["hash_init"].as_array().expect("hash_init") {
        let name = t["name"].as_str().unwrap();
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n = shape.iter().product();
        let v = hash_tensor(
            name,
            n,
            t["scale"].as_f64().unwrap() as f32,
            t["offset"].as_f64().unwrap() as f32,
        );
        let first: Vec<f32> = t["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(&v[..first.len()], &first[..], "first values of {name}");
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let want = t["sum_f64"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "sum of {name}: {sum} vs {want}"
        );
        out.push((name.to_string(), shape, v));
    }
    out
}

/// A model directory in `tmp`: `fixture_dir`'s config.json and generation_config.json plus a
/// model.safetensors holding `tensors` (f32).
pub fn write_model_dir(tmp: &Path, fixture_dir: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) {
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(fixture_dir.join(f), tmp.join(f)).expect("copy config");
    }
    let tensors: Vec<(String, loaders::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, v)| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, loaders::Dtype::F32, shape, bytes)
        })
        .collect();
    loaders::safetensors::write(&tmp.join("model.safetensors"), &tensors, None).expect("write safetensors");
}
