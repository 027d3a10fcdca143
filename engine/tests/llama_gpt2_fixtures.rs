//! Llama (GQA, tied) and GPT-2 against Hugging Face transformers: logits at every prompt position and
//! at every greedy step, and the greedy tokens (fixtures made by tools/scripts/make_fixtures.py).

mod decoder_support;

use decoder_support::{ids, json, load_on, max_abs, open, tensor};
use qkv::{Kernels, LogitsFor};

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
    let m = load_on(&dir, Kernels::scalar());
    check_model(
        name,
        m.info().vocab_size,
        |cap| m.session(1, cap).unwrap(),
        |c, t, w, l| c.step(t, t.len(), w, l).unwrap(),
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
    let m = load_on(&dir, Kernels::scalar());
    check_model(
        "gpt2-tiny",
        m.info().vocab_size,
        |cap| m.session(1, cap).unwrap(),
        |c, t, w, l| c.step(t, t.len(), w, l).unwrap(),
    );
}

/// Batch rows are independent, and `reorder` (beam search) copies rows: a batch of two prompts gives
/// each prompt's own logits, and after `reorder([1, 1])` both rows continue as prompt 1.
#[test]
fn llama_batch_and_reorder_match_single_sequences() {
    let dir = loaders::paths::fixture("llama-tiny-gqa");
    let m = load_on(&dir, Kernels::detect().unwrap());
    let v = m.info().vocab_size;
    let prompts: [Vec<u32>; 2] = [vec![1, 158, 66, 249, 242, 19, 50], vec![1, 53, 48, 150, 91, 125, 61]];
    let next = [7u32, 9];
    // Each prompt alone, then one more token.
    let alone: Vec<(Vec<f32>, Vec<f32>)> = prompts
        .iter()
        .zip(next)
        .map(|(pr, nx)| {
            let mut c = m.session(1, 16).unwrap();
            let (mut a, mut b) = (vec![0.0; v], vec![0.0; v]);
            c.step(pr, pr.len(), LogitsFor::Last, &mut a).unwrap();
            c.step(&[nx], 1, LogitsFor::Last, &mut b).unwrap();
            (a, b)
        })
        .collect();
    // Both in one batch.
    let mut c = m.session(2, 16).unwrap();
    let mut l = vec![0.0; 2 * v];
    c.step(&prompts.concat(), 7, LogitsFor::Last, &mut l).unwrap();
    for b in 0..2 {
        let diff = max_abs(&l[b * v..(b + 1) * v], &alone[b].0);
        assert!(diff <= LOGITS_TOL, "batch row {b} prefill differs by {diff}");
    }
    // Row 0 becomes a copy of row 1; both continue with prompt 1's next token.
    c.reorder(&[1, 1]).unwrap();
    c.step(&[next[1], next[1]], 1, LogitsFor::Last, &mut l).unwrap();
    for b in 0..2 {
        let diff = max_abs(&l[b * v..(b + 1) * v], &alone[1].1);
        assert!(diff <= LOGITS_TOL, "row {b} after reorder differs by {diff}");
    }
    assert_eq!(c.len(), 8);
}
