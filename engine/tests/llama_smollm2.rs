//! The real SmolLM2-135M-Instruct (Q4_1 GGUF, imported to f32 safetensors) against HF transformers
//! loading the same GGUF: full logits at steps 0-1, top-256 logits at steps 0-7, and 64 greedy tokens.

mod decoder_support;

use std::time::Instant;

use decoder_support::{check_greedy, ids, json, load_on, max_abs, open, smollm2_dir, tensor};
use loaders::safetensors::SafeTensors;
use qkv::{Kernels, LogitsFor, Model};

/// Max-abs logit difference allowed (30 layers in f32; HF and we sum in different orders; logits are O(10)).
const LOGITS_TOL: f32 = 1e-3;

#[test]
fn smollm2_matches_hf() {
    let dir = smollm2_dir();
    let m = load_on(&dir, Kernels::detect().unwrap());
    let fix = loaders::paths::fixture("smollm2");
    let meta = json(&fix.join("reference.json"));
    let refs = open(&fix.join("reference.safetensors"));
    let vocab = m.info().vocab_size;
    let runs = meta["runs"].as_array().unwrap();
    // The runs are independent: one thread each (the model is shared, each run has its own cache).
    std::thread::scope(|scope| {
        for (i, run) in runs.iter().enumerate() {
            let (m, refs) = (&m, &refs);
            scope.spawn(move || check_run(m, refs, vocab, i, run));
        }
    });
}

fn check_run(m: &Model, refs: &SafeTensors, vocab: usize, i: usize, run: &serde_json::Value) {
    let start = Instant::now();
    let prompt = ids(&run["prompt_ids"]);
    let greedy = ids(&run["greedy_ids"]);
    // Full logits at steps 0 and 1.
    let mut want = tensor(refs, &format!("run{i}_step0_logits"));
    want.extend(tensor(refs, &format!("run{i}_step1_logits")));
    // Top-256 at steps 0..8, checked on the side.
    let top_ids = tensor(refs, &format!("run{i}_topk_ids"));
    let top_vals = tensor(refs, &format!("run{i}_topk_values"));
    let n_top = top_ids.len() / 8;
    let mut step = 0;
    let mut worst_top = 0.0f32;
    let mut cache = m.session(1, prompt.len() + greedy.len()).unwrap();
    let worst = check_greedy(
        &format!("smollm2 run {i}"),
        vocab,
        |t, l| {
            cache.step(t, t.len(), LogitsFor::Last, l).unwrap();
            if step < 8 {
                let ours: Vec<f32> = top_ids[step * n_top..(step + 1) * n_top]
                    .iter()
                    .map(|&id| l[id as usize])
                    .collect();
                let diff = max_abs(&ours, &top_vals[step * n_top..(step + 1) * n_top]);
                assert!(
                    diff <= LOGITS_TOL,
                    "smollm2 run {i} step {step}: top-256 logits differ by {diff}"
                );
                worst_top = worst_top.max(diff);
            }
            step += 1;
        },
        &prompt,
        &greedy,
        &want,
        LOGITS_TOL,
    );
    eprintln!(
        "smollm2 run {i}: {} greedy tokens equal, full logits max-abs {worst:.2e}, top-256 (8 steps) {worst_top:.2e}, {:.1}s",
        greedy.len(),
        start.elapsed().as_secs_f64()
    );
}
