//! Shared helpers of the translation tests: reading references, the hash-initialised weights of
//! `marian-base-shape`, comparing logits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use loaders::safetensors::SafeTensors;
use qkv::layers::TensorMap;

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

/// The runtime config of an HF Marian `config.json` (swish/relu/gelu, post-norm, tied, static positions).
pub fn marian_config(dir: &Path) -> qkv::seq2seq::Seq2SeqConfig {
    use qkv::seq2seq::{NormPlacement, Positions, Seq2SeqConfig, WeightNames};
    let c = read_json(&dir.join("config.json"));
    let u = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    let activation = match c["activation_function"].as_str().unwrap() {
        "swish" | "silu" => kernels::Activation::Silu,
        "relu" => kernels::Activation::Relu,
        other => panic!("activation {other}"),
    };
    Seq2SeqConfig {
        names: WeightNames::Marian,
        d_model: u("d_model"),
        n_encoder_layers: u("encoder_layers"),
        n_decoder_layers: u("decoder_layers"),
        n_encoder_heads: u("encoder_attention_heads"),
        n_decoder_heads: u("decoder_attention_heads"),
        encoder_ffn_dim: u("encoder_ffn_dim"),
        decoder_ffn_dim: u("decoder_ffn_dim"),
        activation,
        norm: NormPlacement::PostNorm,
        layer_norm_eps: 1e-5,
        embed_scale: (u("d_model") as f32).sqrt(),
        positions: Positions {
            kind: kernels::Sinusoid::Marian,
            first: 0,
            max: u("max_position_embeddings"),
        },
        src_vocab_size: u("vocab_size"),
        tgt_vocab_size: u("decoder_vocab_size"),
        tied_lm_head: true,
        decoder_start_token_id: u("decoder_start_token_id") as u32,
        eos_token_id: u("eos_token_id") as u32,
        pad_token_id: u("pad_token_id") as u32,
    }
}

/// transformers' search options of a Marian reference (`generate_options` of reference.json).
pub fn marian_search_options(json: &serde_json::Value, num_beams: usize) -> qkv::beam::SearchOptions {
    use qkv::beam::{BeamStyle, EarlyStopping, LogitsRules, SearchOptions};
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

/// The hash-initialised weights of `marian-base-shape`, checked against the first values and f64 sums
/// that Python recorded in reference.json.
pub fn marian_base_shape_weights(json: &serde_json::Value) -> TensorMap {
    let mut map = TensorMap::new("marian-base-shape (hash-initialised)");
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
        map.insert_f32(name, &shape, &v).expect("tensor");
    }
    map
}
