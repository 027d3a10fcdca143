//! marian-tiny (random HF MarianMTModel, tools/fixtures/marian-tiny) against transformers: encoder output,
//! teacher-forced logits at every step, greedy and beam-4 `generate` on a batch of varied-length sources.

mod translate_support;

use loaders::paths::fixture;
use qkv::beam::{search, SearchOptions};
use qkv::seq2seq::Seq2Seq;
use qkv::{Decoder, Kernels};
use translate_support::*;

/// Max |ours - HF| for encoder outputs and logits (f32 math in a different order, d_model 32).
const LOGITS_TOL: f32 = 1e-4;
/// Max |ours - HF| for beam scores (length-normalised sums of log-probs).
const SCORE_TOL: f32 = 1e-4;

fn model() -> Seq2Seq {
    let dir = fixture("marian-tiny");
    let st = read_weights(&dir.join("model.safetensors"));
    Seq2Seq::load(&st, marian_config(&dir), Kernels::detect().expect("isa")).expect("load marian-tiny")
}

struct Case {
    sources: Vec<Vec<u32>>,
    json: serde_json::Value,
    tensors: std::collections::HashMap<String, RefTensor>,
}

fn case() -> Case {
    let dir = fixture("marian-tiny");
    let json = read_json(&dir.join("reference.json"));
    let rows = id_rows(&json["source_ids"]);
    let lens = ids(&json["source_lengths"]);
    let sources = rows.iter().zip(&lens).map(|(r, &l)| r[..l as usize].to_vec()).collect();
    let tensors = read_reference(&dir.join("reference.safetensors"));
    Case { sources, json, tensors }
}

fn options(json: &serde_json::Value, num_beams: usize) -> SearchOptions {
    marian_search_options(json, num_beams)
}

fn src_refs(c: &Case) -> Vec<&[u32]> {
    c.sources.iter().map(|s| s.as_slice()).collect()
}

#[test]
fn encoder_output_matches_hf() {
    let m = model();
    let c = case();
    let st = m.start(&src_refs(&c), 4, 4).unwrap();
    let r = &c.tensors["encoder_output"];
    let (len, d) = (r.shape[1], r.shape[2]);
    assert_eq!(st.src_len(), len);
    let mut worst = 0.0f32;
    for (b, s) in c.sources.iter().enumerate() {
        let n = s.len() * d;
        let off = b * len * d;
        worst = worst.max(max_abs_diff(&st.encoder_output()[off..off + n], &r.data[off..off + n]));
    }
    println!("encoder max |diff| = {worst:e}");
    assert!(worst < LOGITS_TOL, "encoder output differs by {worst}");
}

#[test]
fn teacher_forced_logits_match_hf_at_every_step() {
    let m = model();
    let c = case();
    let dec_in = ids(&c.json["teacher_forced_decoder_input_ids"]);
    let r = &c.tensors["teacher_forced_logits"]; // [batch, steps, vocab]
    let (batch, steps, vocab) = (r.shape[0], r.shape[1], r.shape[2]);
    assert_eq!(steps, dec_in.len());
    let mut st = m.start(&src_refs(&c), batch, steps).unwrap();
    let mut logits = vec![0.0f32; batch * vocab];
    let mut worst = 0.0f32;
    for (t, &tok) in dec_in.iter().enumerate() {
        m.step(&mut st, &vec![tok; batch], 1, &mut logits).unwrap();
        for b in 0..batch {
            let want = &r.data[(b * steps + t) * vocab..(b * steps + t + 1) * vocab];
            worst = worst.max(max_abs_diff(&logits[b * vocab..(b + 1) * vocab], want));
        }
    }
    println!("teacher-forced logits max |diff| = {worst:e}");
    assert!(worst < LOGITS_TOL, "logits differ by {worst}");
    assert_eq!(m.cached_len(&st), steps);
}

#[test]
fn teacher_forced_prefill_equals_stepwise() {
    // feeding the whole target prefix at once (causal prefill) gives the last step's logits
    let m = model();
    let c = case();
    let dec_in = ids(&c.json["teacher_forced_decoder_input_ids"]);
    let r = &c.tensors["teacher_forced_logits"];
    let (batch, steps, vocab) = (r.shape[0], r.shape[1], r.shape[2]);
    let mut st = m.start(&src_refs(&c), batch, steps).unwrap();
    let tokens: Vec<u32> = (0..batch).flat_map(|_| dec_in.iter().copied()).collect();
    let mut logits = vec![0.0f32; batch * vocab];
    m.step(&mut st, &tokens, steps, &mut logits).unwrap();
    let mut worst = 0.0f32;
    for b in 0..batch {
        let t = steps - 1;
        let want = &r.data[(b * steps + t) * vocab..(b * steps + t + 1) * vocab];
        worst = worst.max(max_abs_diff(&logits[b * vocab..(b + 1) * vocab], want));
    }
    assert!(worst < LOGITS_TOL, "prefill logits differ by {worst}");
}

#[test]
fn greedy_matches_hf_generate() {
    let m = model();
    let c = case();
    let opts = options(&c.json, 1);
    let want = id_rows(&c.json["greedy_tokens"]);
    let start = vec![m.config().decoder_start_token_id; c.sources.len()];
    let mut st = m.start(&src_refs(&c), c.sources.len(), opts.max_new_tokens).unwrap();
    let got = search(&m, &mut st, &start, &opts).unwrap();
    for (b, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(&g[0].tokens, w, "greedy source {b}");
    }
    // each source alone gives the same tokens
    for (b, s) in c.sources.iter().enumerate() {
        let mut st = m.start(&[s.as_slice()], 1, opts.max_new_tokens).unwrap();
        let one = search(&m, &mut st, &start[..1], &opts).unwrap();
        assert_eq!(one[0][0].tokens, want[b], "greedy source {b} alone");
    }
}

#[test]
fn beam4_matches_hf_generate() {
    let m = model();
    let c = case();
    let opts = options(&c.json, 4);
    let rows: Vec<usize> = ids(&c.json["beam_rows"]).iter().map(|&r| r as usize).collect();
    let want = id_rows(&c.json["beam_tokens"]);
    let want_scores: Vec<f32> =
        c.json["beam_sequences_scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let sources: Vec<&[u32]> = rows.iter().map(|&r| c.sources[r].as_slice()).collect();
    let start = vec![m.config().decoder_start_token_id; sources.len()];
    let mut st = m.start(&sources, sources.len() * 4, opts.max_new_tokens).unwrap();
    let got = search(&m, &mut st, &start, &opts).unwrap();
    for (j, g) in got.iter().enumerate() {
        assert_eq!(g[0].tokens, want[j], "beam source {}", rows[j]);
        let diff = (g[0].score - want_scores[j]).abs();
        assert!(diff < SCORE_TOL, "beam score of source {}: {} vs {}", rows[j], g[0].score, want_scores[j]);
    }
}
