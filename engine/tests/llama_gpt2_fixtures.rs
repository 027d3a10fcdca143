//! Llama (GQA, tied) and GPT-2 against Hugging Face transformers: logits at every prompt position and
//! at every greedy step, and the greedy tokens (fixtures made by tools/scripts/make_fixtures.py).

use std::path::Path;

use qkv::gpt2::{Gpt2, Gpt2Params};
use qkv::llama::{Llama, LlamaParams, LogitsFor};
use qkv::{Kernels, TensorMap, TensorSource};

/// Max-abs difference allowed between our logits and HF's (f32 model, f64-accumulating reference kernels).
const LOGITS_TOL: f32 = 1e-4;

fn load_tensors(path: &Path) -> TensorMap {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut m = TensorMap::new(path);
    for (name, view) in st.tensors() {
        let vals: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        m.insert_f32(&name, view.shape(), &vals).unwrap();
    }
    m
}

struct Reference {
    prompts: Vec<Vec<u32>>,
    greedy: Vec<Vec<u32>>,
    tensors: TensorMap,
}

fn reference(dir: &Path) -> Reference {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(meta[k].clone()).unwrap() };
    Reference {
        prompts: ids("prompts"),
        greedy: ids("greedy_tokens"),
        tensors: load_tensors(&dir.join("reference.safetensors")),
    }
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn llama_params(c: &serde_json::Value) -> LlamaParams {
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let theta = c["rope_theta"]
        .as_f64()
        .or_else(|| c["rope_parameters"]["rope_theta"].as_f64())
        .unwrap();
    LlamaParams {
        hidden_size: u("hidden_size"),
        intermediate_size: u("intermediate_size"),
        n_layers: u("num_hidden_layers"),
        n_heads: u("num_attention_heads"),
        n_kv_heads: u("num_key_value_heads"),
        head_dim: u("head_dim"),
        vocab_size: u("vocab_size"),
        max_positions: u("max_position_embeddings"),
        rms_norm_eps: c["rms_norm_eps"].as_f64().unwrap() as f32,
        rope_theta: theta,
        tie_word_embeddings: c["tie_word_embeddings"].as_bool().unwrap(),
        attention_bias: false,
        mlp_bias: false,
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn get_f32(m: &TensorMap, name: &str) -> Vec<f32> {
    m.get(name).unwrap().to_f32_vec()
}

/// Prompt logits at every position (prefill), then greedy decoding one token at a time.
fn check_model<C>(
    name: &str,
    vocab: usize,
    new_cache: impl Fn(usize) -> C,
    forward: impl Fn(&mut C, &[u32], LogitsFor, &mut [f32]),
) {
    let r = reference(&loaders::paths::fixture(name));
    let k = Kernels::scalar();
    for (i, prompt) in r.prompts.iter().enumerate() {
        let n = prompt.len();
        let n_new = r.greedy[i].len();
        // Prefill: logits at every prompt position.
        let mut cache = new_cache(n + n_new);
        let mut all = vec![0.0; n * vocab];
        forward(&mut cache, prompt, LogitsFor::All, &mut all);
        let diff = max_abs(&all, &get_f32(&r.tensors, &format!("prompt{i}_logits")));
        assert!(diff <= LOGITS_TOL, "{name} prompt {i}: prefill logits differ by {diff}");
        eprintln!("{name} prompt {i}: prefill max-abs {diff:.2e}");
        // Greedy: step logits and tokens.
        let steps = get_f32(&r.tensors, &format!("greedy{i}_step_logits"));
        let mut cache = new_cache(n + n_new);
        let mut logits = vec![0.0; vocab];
        forward(&mut cache, prompt, LogitsFor::Last, &mut logits);
        let mut tokens = vec![];
        let mut worst = 0.0f32;
        for t in 0..n_new {
            let diff = max_abs(&logits, &steps[t * vocab..(t + 1) * vocab]);
            assert!(
                diff <= LOGITS_TOL,
                "{name} prompt {i} step {t}: logits differ by {diff}"
            );
            worst = worst.max(diff);
            let next = k.argmax(&logits).unwrap() as u32;
            tokens.push(next);
            if t + 1 < n_new {
                forward(&mut cache, &[next], LogitsFor::Last, &mut logits);
            }
        }
        eprintln!("{name} prompt {i}: greedy steps max-abs {worst:.2e}");
        assert_eq!(tokens, r.greedy[i], "{name} prompt {i}: greedy tokens");
    }
}

fn check_llama(name: &str) {
    let dir = loaders::paths::fixture(name);
    let p = llama_params(&config(&dir));
    let m = Llama::new(&load_tensors(&dir.join("model.safetensors")), &p, Kernels::scalar()).unwrap();
    check_model(
        name,
        p.vocab_size,
        |cap| m.new_cache(1, cap).unwrap(),
        |c, t, w, l| m.forward(c, t, t.len(), w, l).unwrap(),
    );
}

#[test]
fn llama_tiny_gqa_matches_hf() {
    check_llama("llama-tiny-gqa");
}

#[test]
fn llama_tiny_tied_matches_hf() {
    check_llama("llama-tiny-tied");
}

#[test]
fn gpt2_tiny_matches_hf() {
    let dir = loaders::paths::fixture("gpt2-tiny");
    let c = config(&dir);
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let p = Gpt2Params {
        vocab_size: u("vocab_size"),
        n_positions: u("n_positions"),
        n_embd: u("n_embd"),
        n_layer: u("n_layer"),
        n_head: u("n_head"),
        n_inner: 4 * u("n_embd"),
        layer_norm_epsilon: c["layer_norm_epsilon"].as_f64().unwrap() as f32,
        activation: Gpt2Params::activation_from_name(c["activation_function"].as_str().unwrap()).unwrap(),
        scale_attn_weights: true,
    };
    let m = Gpt2::new(&load_tensors(&dir.join("model.safetensors")), &p, Kernels::scalar()).unwrap();
    check_model(
        "gpt2-tiny",
        p.vocab_size,
        |cap| m.new_cache(1, cap).unwrap(),
        |c, t, w, l| m.forward(c, t, t.len(), w, l).unwrap(),
    );
}
