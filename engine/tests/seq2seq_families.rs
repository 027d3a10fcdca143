//! The encoder-decoder families (M2M100 / NLLB, BART, mBART-50, T5, Flan-T5) against Hugging Face transformers on
//! random-weight models made from their published configs (tools/scripts/make_seq2seq_fixtures.py;
//! tools/fixtures/seq2seq/README.md) with the published vocabularies (32k-256k ids) and heads: the logits of
//! every greedy step of every source on every ISA, greedy and beam-4 outputs under each model's generation rules
//! (length penalty, early stopping, no-repeat n-grams, forced BOS / EOS), batched translation with padding equal
//! to one by one, and T5's relative position buckets. The weights are not committed: they are rebuilt here from
//! the hash formula the script used, once per family (up to 1.1 GB for the 250k-id ones), for all its checks.
//! The references keep, per step, HF's top-64 logits with their ids, the logits of 64 fixed probe ids and the
//! row's log-sum-exp (decoder_support::Rows).

mod decoder_support;
#[path = "hash_weights/mod.rs"]
mod hash_weights;

use std::path::PathBuf;

use decoder_support::{ids, load_on, open, Rows};
use qkv::{LogitsFor, Model, TranslateOptions};

/// Max-abs difference allowed between our logits and HF's: both compute in f32 and differ only in summation order
/// (and the sinusoids, which HF computes in f32 and qkv in f64 then rounds: ~1e-6 at these positions); the logits
/// have |max| ≲ 10, so rounding differences stay near 1e-5; 1e-4 is the bound.
const LOGITS_TOL: f32 = 1e-4;
/// Score difference allowed against `sequences_scores`: a length-normalised sum of log-probabilities, each within
/// twice the logits' tolerance (log-softmax moves by at most twice the largest logit difference).
const SCORE_TOL: f32 = 2.0 * LOGITS_TOL;

fn fixture(name: &str) -> PathBuf {
    loaders::paths::fixture("seq2seq").join(name)
}

/// The fixture's model directory (with its tokenizer), its weights rebuilt into a directory of this call's own.
fn model_dir(name: &str) -> (PathBuf, serde_json::Value) {
    hash_weights::fixture_model_dir(&fixture(name), &format!("seq2seq-{name}"))
}

fn sources(meta: &serde_json::Value) -> Vec<Vec<u32>> {
    meta["sources"].as_array().unwrap().iter().map(ids).collect()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

/// Teacher-forced on HF's greedy tokens: the raw logits of every step of every source, on every ISA.
fn check_logits(name: &str, dir: &std::path::Path, meta: &serde_json::Value) {
    let refs = open(&fixture(name).join("reference.safetensors"));
    let greedy = rows(&meta["greedy_tokens"]);
    for k in kernels::testing::kernels(&format!("seq2seq::{name}")) {
        let m = load_on(dir, k);
        let vocab = m.info().vocab_size;
        let start = m.info().decoder_start_token_id.unwrap();
        let mut worst = 0.0f32;
        for (i, (src, toks)) in sources(meta).iter().zip(&greedy).enumerate() {
            let want = Rows::load(&refs, &format!("greedy_{i}"));
            assert_eq!(want.len(), toks.len(), "{name}: source {i}: one reference row per step");
            let mut s = m.encode(&[src], 1, toks.len()).unwrap();
            let mut logits = vec![0.0; vocab];
            let mut prev = start;
            for (t, &tok) in toks.iter().enumerate() {
                s.step(&[prev], 1, LogitsFor::Last, &mut logits).unwrap();
                let what = format!("{name} on {}: source {i} step", k.isa());
                worst = worst.max(want.check(&what, t, &logits, LOGITS_TOL));
                prev = tok;
            }
        }
        eprintln!("{name} on {}: greedy step logits max-abs {worst:.2e}", k.isa());
    }
}

/// The model's search (generation_config.json) for `beams` beams and `max_new` tokens, with the target language
/// forced as the first token for the multilingual ones.
fn search(m: &Model, meta: &serde_json::Value, beams: usize, max_new: usize) -> qkv::search::SearchOptions {
    let opts = TranslateOptions {
        beam_size: Some(beams),
        max_length: Some(max_new),
        ..Default::default()
    };
    let mut s = m.search_options(&opts).unwrap();
    if let Some(id) = meta["forced_bos_token_id"].as_u64() {
        s.rules.forced_bos = Some(id as u32);
    }
    s
}

/// Greedy and beam-4 against `generate`, batched (padded, 3 sources) and one by one.
fn check_search(name: &str, dir: &std::path::Path, meta: &serde_json::Value) {
    let m = load_on(dir, kernels::Kernels::detect().unwrap());
    let src = sources(meta);
    let greedy_new = meta["greedy_max_new_tokens"].as_u64().unwrap() as usize;
    let greedy = search(&m, meta, 1, greedy_new);
    for batch in [src.len(), 1] {
        let got: Vec<Vec<u32>> = m
            .translate_ids_with(&src, batch, &greedy)
            .unwrap()
            .into_iter()
            .map(|h| h[0].tokens.clone())
            .collect();
        assert_eq!(got, rows(&meta["greedy_tokens"]), "{name}: greedy, batch {batch}");
    }
    let b = &meta["beam"];
    let beam = search(
        &m,
        meta,
        b["num_beams"].as_u64().unwrap() as usize,
        b["max_new_tokens"].as_u64().unwrap() as usize,
    );
    let scores: Vec<f32> = serde_json::from_value(b["scores"].clone()).unwrap();
    for batch in [src.len(), 1] {
        let hyps = m.translate_ids_with(&src, batch, &beam).unwrap();
        let got: Vec<Vec<u32>> = hyps.iter().map(|h| h[0].tokens.clone()).collect();
        assert_eq!(got, rows(&b["sequences"]), "{name}: beam, batch {batch}");
        for (h, s) in hyps.iter().zip(&scores) {
            assert!(
                (h[0].score - s).abs() <= SCORE_TOL,
                "{name}: score {} vs HF {s}",
                h[0].score
            );
        }
    }
}

/// Every check of one family on one rebuilt model directory (removed after).
fn check_family(name: &str) {
    let (dir, meta) = model_dir(name);
    check_logits(name, &dir, &meta);
    check_search(name, &dir, &meta);
    if name == "t5" {
        check_t5_bias_once_per_stack(&dir, &meta);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nllb_matches_hf() {
    check_family("nllb");
}

#[test]
fn bart_matches_hf() {
    check_family("bart");
}

#[test]
fn mbart50_matches_hf() {
    check_family("mbart50");
}

#[test]
fn t5_matches_hf() {
    check_family("t5");
}

#[test]
fn flan_t5_matches_hf() {
    check_family("flan_t5");
}

/// T5's relative position bias table is built once per stack at load and never again however many layers, steps
/// and sources run (the buckets themselves: unit tests in `models/relative_position.rs`, against the naive formula
/// and against HF's buckets for distances -300..=300 that the fixture records).
fn check_t5_bias_once_per_stack(dir: &std::path::Path, meta: &serde_json::Value) {
    let m = load_on(dir, kernels::Kernels::detect().unwrap());
    assert_eq!(m.position_bias_tables(), 2, "one table per stack");
    let src = sources(meta);
    let opts = search(&m, meta, 4, 12);
    m.translate_ids_with(&src, 3, &opts).unwrap();
    m.translate_ids_with(&src, 1, &opts).unwrap();
    assert_eq!(m.position_bias_tables(), 2, "no table rebuilt per layer, step or batch");
    let b = &meta["relative_buckets"];
    for key in ["bidirectional", "causal"] {
        let hf = ids(&b[key]);
        assert_eq!(hf.len(), 601, "{key}");
    }
}
