//! Llama (GQA, tied) and GPT-2 against Hugging Face transformers: logits at every prompt position and
//! at every greedy step, and the greedy tokens (fixtures made by tools/scripts/make_fixtures.py).

mod decoder_support;

use decoder_support::{ids, json, llama_params, max_abs, open, tensor};
use loaders::safetensors::SafeTensors;
use qkv::gpt2::{Gpt2, Gpt2Params};
use qkv::llama::{Llama, LogitsFor};
use qkv::Kernels;

/// Max-abs difference allowed between our logits and HF's (f32 model, f64-accumulating reference kernels).
const LOGITS_TOL: f32 = 1e-4;

/// Prompt logits at every position (prefill), then greedy decoding one token at a time.
fn check_model<C>(
    name: &str,
    vocab: usize,
    new_cache: impl Fn(usize) -> C,
    forward: impl Fn(&mut C, &[u32], LogitsFor, &mut [f32]),
) {
    let dir = loaders::paths::fixture(name);
    let meta = json(&dir.join("reference.json"));
    let refs = open(&dir.join("reference.safetensors"));
    let prompts: Vec<Vec<u32>> = serde_json::from_value(meta["prompts"].clone()).unwrap();
    let k = Kernels::scalar();
    for (i, prompt) in prompts.iter().enumerate() {
        let greedy = ids(&meta["greedy_tokens"][i]);
        let n = prompt.len();
        let n_new = greedy.len();
        // Prefill: logits at every prompt position.
        let mut cache = new_cache(n + n_new);
        let mut all = vec![0.0; n * vocab];
        forward(&mut cache, prompt, LogitsFor::All, &mut all);
        let diff = max_abs(&all, &tensor(&refs, &format!("prompt{i}_logits")));
        assert!(diff <= LOGITS_TOL, "{name} prompt {i}: prefill logits differ by {diff}");
        eprintln!("{name} prompt {i}: prefill max-abs {diff:.2e}");
        // Greedy: step logits and tokens.
        let steps = tensor(&refs, &format!("greedy{i}_step_logits"));
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
        assert_eq!(tokens, greedy, "{name} prompt {i}: greedy tokens");
    }
}

fn check_llama(name: &str) {
    let dir = loaders::paths::fixture(name);
    let p = llama_params(&dir);
    let m = Llama::new(&SafeTensors::open_dir(&dir).unwrap(), &p, Kernels::scalar()).unwrap();
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
    let c = json(&dir.join("config.json"));
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
    let m = Gpt2::new(&SafeTensors::open_dir(&dir).unwrap(), &p, Kernels::scalar()).unwrap();
    check_model(
        "gpt2-tiny",
        p.vocab_size,
        |cap| m.new_cache(1, cap).unwrap(),
        |c, t, w, l| m.forward(c, t, t.len(), w, l).unwrap(),
    );
}
