//! The real llama2.c stories260K (HF-layout conversion in ../shared/models/stories260k) against HF
//! transformers: last-position logits before each of 64 greedy choices, and the tokens.

mod decoder_support;

use decoder_support::{check_greedy, ids, json, load_on, open, tensor};
use qkv::{Kernels, LogitsFor};

/// Max-abs logit difference allowed (HF f32 vs our kernels; logits are O(10)).
const LOGITS_TOL: f32 = 1e-4;

#[test]
fn stories260k_greedy_matches_hf() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let m = load_on(&dir, Kernels::detect().unwrap());
    let fix = loaders::paths::fixture("stories260k");
    let meta = json(&fix.join("reference.json"));
    let refs = open(&fix.join("reference.safetensors"));
    for (i, run) in meta["runs"].as_array().unwrap().iter().enumerate() {
        let prompt = ids(&run["prompt_ids"]);
        let greedy = ids(&run["greedy_ids"]);
        let mut cache = m.session(1, prompt.len() + greedy.len()).unwrap();
        let worst = check_greedy(
            &format!("stories260k run {i}"),
            m.info().vocab_size,
            |t, l| cache.step(t, t.len(), LogitsFor::Last, l).unwrap(),
            &prompt,
            &greedy,
            &tensor(&refs, &format!("run{i}_step_logits")),
            LOGITS_TOL,
        );
        eprintln!("stories260k run {i}: 64 greedy tokens equal, logits max-abs {worst:.2e}");
    }
}
