//! Shared helpers of the translation tests: reading references, the hash-initialised weights of
//! `marian-base-shape`, comparing logits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use loaders::safetensors::SafeTensors;

#[path = "../hash_weights/mod.rs"]
mod hash_weights;
#[allow(unused_imports)]
pub use hash_weights::{hash_init_tensors as marian_base_shape_tensors, hash_tensor, write_model_dir};

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
            ..Default::default()
        },
    }
}
