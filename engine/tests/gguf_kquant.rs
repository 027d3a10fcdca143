//! K-quant GGUF files made by llama.cpp's own quantiser (tools/scripts/gguf_kquant_refs.py), imported by qkv's
//! importer (f32: the exact dequantised weights) and run through `qkv::Model`, against llama.cpp on the same file
//! (llama-cpp-python, `logits_all=True`) and Hugging Face transformers loading the same GGUF in f32.
//!
//! - tools/fixtures/gguf-kquant/tiny_q4_k_m.gguf: a random 2-layer Llama (hidden 256, ffn 512) quantised to
//!   Q4_K_M (Q4_K and Q6_K tensors, F32 norms). Committed; always runs.
//! - SmolLM2-135M-Instruct quantised to Q4_K_M and Q5_K_M (Q4_K / Q5_K / Q6_K and, for its 576-wide rows,
//!   llama.cpp's fallbacks Q5_0 / Q5_1 / Q8_0), made into ~/.cache/qkv/gguf-kquant by
//!   `tools/scripts/venv.sh python tools/scripts/gguf_kquant_refs.py smollm2`; skipped (with a line saying so)
//!   when absent.
//!
//! The bound against llama.cpp. qkv and transformers both compute in f32 on the same dequantised weights, so
//! they agree to f32 rounding ([`F32_TOL`], checked at every step). llama.cpp does not: it rounds each linear
//! layer's input to 8-bit blocks (Q8_K for K-quant weights, Q8_0 for the others) and keeps K and V in f16. Its
//! distance to exact f32 logits, `d_t = max|HF_t - llama.cpp_t|` over the vocabulary at step `t`, is measured
//! from the two references (0.26-0.31 on the tiny model, whose logits have a std of 4; the script shows that
//! emulating those roundings in transformers moves its logits by as much, 0.26-0.30). By the triangle inequality
//! qkv's logits are within `B_t = F32_TOL + d_t` of llama.cpp's at every step: that is the bound checked. Greedy
//! tokens are compared teacher-forced on llama.cpp's tokens: where qkv's argmax `a` is not llama.cpp's `b`,
//! `llama[b] - llama[a] <= 2 B_t` must hold (each of the two logits may move by `B_t`), and is printed.

mod decoder_support;

use std::path::{Path, PathBuf};

use decoder_support::import_f32_once as import_once;
use loaders::safetensors::SafeTensors;
use qkv::{GenerateOptions, LogitsFor, Model};

/// qkv against transformers, both f32 on the same weights: 2-30 layers of f32 sums in different orders, logits
/// of magnitude O(10): rounding differences of a few 1e-6 per layer, 1e-4 leaves room for 30 layers (the same
/// tolerance as the SmolLM2 test against HF).
const F32_TOL: f32 = 1e-4;

/// Tokens generated per prompt by the reference script.
const N_NEW: usize = 32;

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    qkv::Kernels::scalar().argmax(v).unwrap()
}

/// What one file's check found.
struct Summary {
    worst_hf: f32,
    worst_llama: f32,
    worst_bound: f32,
    equal_tokens: usize,
    partings: Vec<String>,
}

/// Every run of `refs_json` (with its logits in `refs`) through `model`: the checks of the module doc.
fn check_file(what: &str, model: &Model, refs_json: &serde_json::Value, refs: &SafeTensors) -> Summary {
    let arch = model.info().architecture;
    assert_eq!(arch, "llama", "{what}: imported as {arch}, not llama");
    let vocab = model.info().vocab_size;
    let mut s = Summary {
        worst_hf: 0.0,
        worst_llama: 0.0,
        worst_bound: 0.0,
        equal_tokens: 0,
        partings: vec![],
    };
    let runs = refs_json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{what}: 3 prompts");
    for (i, run) in runs.iter().enumerate() {
        let prompt = ids(&run["prompt_ids"]);
        let greedy = ids(&run["greedy_ids"]);
        assert_eq!(greedy.len(), N_NEW);
        let llama = refs.get(&format!("run{i}_llama_cpp_logits")).unwrap().to_f32_vec(); // [N_NEW, vocab]
        let hf = refs.get(&format!("run{i}_hf_logits")).unwrap().to_f32_vec(); // [N_NEW, vocab]
        assert_eq!(llama.len(), N_NEW * vocab, "{what} run {i}: llama.cpp logits");
        let mut cache = model.session(1, prompt.len() + N_NEW).unwrap();
        let mut logits = vec![0f32; vocab]; // [vocab]
        cache.step(&prompt, prompt.len(), LogitsFor::Last, &mut logits).unwrap();
        for t in 0..N_NEW {
            let (llama_t, hf_t) = (&llama[t * vocab..(t + 1) * vocab], &hf[t * vocab..(t + 1) * vocab]);
            let d_hf = max_abs(&logits, hf_t);
            assert!(
                d_hf <= F32_TOL,
                "{what} run {i} step {t}: qkv vs transformers (f32) {d_hf} > {F32_TOL}"
            );
            let bound = F32_TOL + max_abs(hf_t, llama_t);
            let d_llama = max_abs(&logits, llama_t);
            assert!(
                d_llama <= bound,
                "{what} run {i} step {t}: qkv vs llama.cpp {d_llama} > bound {bound}"
            );
            s.worst_hf = s.worst_hf.max(d_hf);
            s.worst_llama = s.worst_llama.max(d_llama);
            s.worst_bound = s.worst_bound.max(bound);
            let (ours, theirs) = (argmax(&logits), greedy[t] as usize);
            assert_eq!(
                theirs,
                argmax(llama_t),
                "{what} run {i} step {t}: the fixture's greedy token"
            );
            if ours == theirs {
                s.equal_tokens += 1;
            } else {
                let gap = llama_t[theirs] - llama_t[ours];
                assert!(
                    gap <= 2.0 * bound,
                    "{what} run {i} step {t}: qkv chose {ours}, llama.cpp {theirs}, whose logits differ by {gap} \
                     in llama.cpp's, more than 2 x the bound {bound}"
                );
                s.partings.push(format!(
                    "run {i} step {t}: qkv {ours} / llama.cpp {theirs}, llama.cpp's top-2 gap {gap:.4} <= 2 x bound \
                     {bound:.4} (qkv's own gap {:.4})",
                    logits[ours] - logits[theirs]
                ));
            }
            if t + 1 < N_NEW {
                // Teacher-forced on llama.cpp's tokens, so every step is compared on the same context.
                cache.step(&greedy[t..t + 1], 1, LogitsFor::Last, &mut logits).unwrap();
            }
        }
        // The public greedy generation follows the same tokens up to the first parting (or an EOS).
        let first_parting =
            (0..N_NEW).find(|&t| s.partings.iter().any(|p| p.starts_with(&format!("run {i} step {t}:"))));
        let want = &greedy[..first_parting.unwrap_or(N_NEW)];
        if want.is_empty() {
            continue;
        }
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let out = model.stream_ids(prompt.clone(), &opts).unwrap().run().unwrap();
        let n = out.tokens.len();
        assert_eq!(&out.tokens[..], &want[..n], "{what} run {i}: Model greedy tokens");
        assert!(
            n == want.len() || model.eos_ids().contains(&out.tokens[n - 1]),
            "{what} run {i}: Model stopped after {n} of {} tokens",
            want.len()
        );
    }
    s
}

fn report(what: &str, s: &Summary) {
    eprintln!(
        "{what}: {}/{} greedy tokens equal to llama.cpp's; logits vs transformers f32 max-abs {:.2e} (<= {F32_TOL:e}), \
         vs llama.cpp {:.4} (bound {:.4} at its largest)",
        s.equal_tokens,
        3 * N_NEW,
        s.worst_hf,
        s.worst_llama,
        s.worst_bound
    );
    for p in &s.partings {
        eprintln!("{what}: {p}");
    }
}

#[test]
fn tiny_q4_k_m_matches_llama_cpp() {
    let fix = loaders::paths::fixture("gguf-kquant");
    let gguf = fix.join("tiny_q4_k_m.gguf");
    // The file mixes the K-quant types (made by llama.cpp's quantiser, not by qkv).
    let f = loaders::gguf::GgufFile::open(&gguf).unwrap();
    let types: std::collections::BTreeSet<&str> = f.tensor_infos().iter().map(|t| t.ggml_type.name()).collect();
    assert_eq!(types, ["F32", "Q4_K", "Q6_K"].into_iter().collect());
    let dir = import_once(&gguf, "gguf-kquant-tiny-q4_k_m-f32");
    let model = Model::load(&dir).unwrap();
    let refs = SafeTensors::open(&fix.join("tiny_q4_k_m_refs.safetensors")).unwrap();
    let s = check_file("tiny Q4_K_M", &model, &json(&fix.join("tiny_q4_k_m_refs.json")), &refs);
    report("tiny Q4_K_M", &s);
}

/// The SmolLM2 K-quant files and their references, made by the script into the cache (not committed: 100 MB).
#[test]
fn smollm2_kquants_match_llama_cpp() {
    let cache = std::env::var_os("QKV_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache").join("qkv")))
        .map(|c| c.join("gguf-kquant"));
    for ftype in ["q4_k_m", "q5_k_m"] {
        let stem = format!("smollm2-135m-instruct-{ftype}");
        let files = cache.as_ref().map(|c| {
            (
                c.join(format!("{stem}.gguf")),
                c.join(format!("{stem}_refs.json")),
                c.join(format!("{stem}_refs.safetensors")),
            )
        });
        let Some((gguf, meta, refs)) = files.filter(|(g, m, r)| g.is_file() && m.is_file() && r.is_file()) else {
            kernels::testing::report(&format!(
                "skipped: {stem}.gguf and its llama.cpp references are not in {} (smollm2_kquants_match_llama_cpp); \
                 run `tools/scripts/venv.sh python tools/scripts/gguf_kquant_refs.py smollm2` to make them",
                cache
                    .as_ref()
                    .map_or("$HOME/.cache/qkv/gguf-kquant".into(), |c| c.display().to_string())
            ));
            continue;
        };
        let dir = import_once(&gguf, &format!("gguf-kquant-{stem}-f32"));
        let model = Model::load(&dir).unwrap();
        let refs = SafeTensors::open(&refs).unwrap();
        let s = check_file(&stem, &model, &json(&meta), &refs);
        report(&stem, &s);
    }
}
