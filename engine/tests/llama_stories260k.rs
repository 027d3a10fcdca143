//! The real llama2.c stories260K (HF-layout conversion in ../shared/models/stories260k) against HF
//! transformers: last-position logits before each of 64 greedy choices, and the tokens.

mod decoder_support;

use decoder_support::{check_greedy, ids, json, llama_params, open, tensor};
use loaders::safetensors::SafeTensors;
use qkv::llama::Llama;
use qkv::{Decoder, Kernels};

/// Max-abs logit difference allowed (HF f32 vs our kernels; logits are O(10)).
const LOGITS_TOL: f32 = 1e-4;

#[test]
fn stories260k_greedy_matches_hf() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let p = llama_params(&dir);
    let m = Llama::new(&SafeTensors::open_dir(&dir).unwrap(), &p, Kernels::detect().unwrap()).unwrap();
    let fix = loaders::paths::fixture("stories260k");
    let meta = json(&fix.join("reference.json"));
    let refs = open(&fix.join("reference.safetensors"));
    for (i, run) in meta["runs"].as_array().unwrap().iter().enumerate() {
        let prompt = ids(&run["prompt_ids"]);
        let greedy = ids(&run["greedy_ids"]);
        let mut cache = m.new_cache(1, prompt.len() + greedy.len()).unwrap();
        let worst = check_greedy(
            &format!("stories260k run {i}"),
            p.vocab_size,
            |t, l| m.step(&mut cache, t, t.len(), l).unwrap(),
            &prompt,
            &greedy,
            &tensor(&refs, &format!("run{i}_step_logits")),
            LOGITS_TOL,
        );
        eprintln!("stories260k run {i}: 64 greedy tokens equal, logits max-abs {worst:.2e}");
    }
}
