//! marian-tiny (random HF MarianMTModel, tools/fixtures/marian-tiny) against transformers: encoder output,
//! teacher-forced logits at every step, greedy and beam-4 `generate` on a batch of varied-length sources.

mod translate_support;

use loaders::paths::fixture;
use qkv::search::SearchOptions;
use qkv::{Kernels, LoadOptions, LogitsFor, Model, TranslateOptions};
use translate_support::*;

/// Max |ours - HF| for encoder outputs and logits (f32 math in a different order, d_model 32).
const LOGITS_TOL: f32 = 1e-4;
/// Max |ours - HF| for beam scores (length-normalised sums of log-probs).
const SCORE_TOL: f32 = 1e-4;

fn translator() -> Model {
    let opts = LoadOptions {
        kernels: Some(Kernels::detect().expect("isa")),
        ..Default::default()
    };
    Model::load_with(fixture("marian-tiny"), &opts).expect("load marian-tiny")
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

/// The search options of the reference run, as the library derives them from generation_config.json
/// (checked against the options the reference recorded).
fn options(json: &serde_json::Value, num_beams: usize) -> SearchOptions {
    let t = translator();
    let ours = t
        .search_options(&TranslateOptions {
            beam_size: Some(num_beams),
            max_length: Some(json["generate_options"]["max_new_tokens"].as_u64().unwrap() as usize),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ours, marian_search_options(json, num_beams));
    ours
}

fn src_refs(c: &Case) -> Vec<&[u32]> {
    c.sources.iter().map(|s| s.as_slice()).collect()
}

#[test]
fn encoder_output_matches_hf() {
    let t = translator();
    let m = &t;
    let c = case();
    let st = m.encode(&src_refs(&c), 4, 4).unwrap();
    let r = &c.tensors["encoder_output"];
    let (len, d) = (r.shape[1], r.shape[2]);
    assert_eq!(st.encoder().unwrap().src_len(), len);
    let mut worst = 0.0f32;
    for (b, s) in c.sources.iter().enumerate() {
        let n = s.len() * d;
        let off = b * len * d;
        worst = worst.max(max_abs_diff(
            &st.encoder().unwrap().output()[off..off + n],
            &r.data[off..off + n],
        ));
    }
    println!("encoder max |diff| = {worst:e}");
    assert!(worst < LOGITS_TOL, "encoder output differs by {worst}");
}

#[test]
fn teacher_forced_logits_match_hf_at_every_step() {
    let t = translator();
    let m = &t;
    let c = case();
    let dec_in = ids(&c.json["teacher_forced_decoder_input_ids"]);
    let r = &c.tensors["teacher_forced_logits"]; // [batch, steps, vocab]
    let (batch, steps, vocab) = (r.shape[0], r.shape[1], r.shape[2]);
    assert_eq!(steps, dec_in.len());
    let mut st = m.encode(&src_refs(&c), batch, steps).unwrap();
    let mut logits = vec![0.0f32; batch * vocab];
    let mut worst = 0.0f32;
    for (t, &tok) in dec_in.iter().enumerate() {
        st.step(&vec![tok; batch], 1, LogitsFor::Last, &mut logits).unwrap();
        for b in 0..batch {
            let want = &r.data[(b * steps + t) * vocab..(b * steps + t + 1) * vocab];
            worst = worst.max(max_abs_diff(&logits[b * vocab..(b + 1) * vocab], want));
        }
    }
    println!("teacher-forced logits max |diff| = {worst:e}");
    assert!(worst < LOGITS_TOL, "logits differ by {worst}");
    assert_eq!(st.len(), steps);
}

#[test]
fn teacher_forced_prefill_equals_stepwise() {
    // feeding the whole target prefix at once (causal prefill) gives the last step's logits
    let t = translator();
    let m = &t;
    let c = case();
    let dec_in = ids(&c.json["teacher_forced_decoder_input_ids"]);
    let r = &c.tensors["teacher_forced_logits"];
    let (batch, steps, vocab) = (r.shape[0], r.shape[1], r.shape[2]);
    let mut st = m.encode(&src_refs(&c), batch, steps).unwrap();
    let tokens: Vec<u32> = (0..batch).flat_map(|_| dec_in.iter().copied()).collect();
    let mut logits = vec![0.0f32; batch * vocab];
    st.step(&tokens, steps, LogitsFor::Last, &mut logits).unwrap();
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
    let t = translator();
    let m = &t;
    let c = case();
    let opts = options(&c.json, 1);
    let want = id_rows(&c.json["greedy_tokens"]);
    let start = vec![m.info().decoder_start_token_id.unwrap(); c.sources.len()];
    let mut st = m.encode(&src_refs(&c), c.sources.len(), opts.max_new_tokens).unwrap();
    let got = st.search(&start, &opts).unwrap();
    for (b, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(&g[0].tokens, w, "greedy source {b}");
    }
    // each source alone gives the same tokens
    for (b, s) in c.sources.iter().enumerate() {
        let mut st = m.encode(&[s.as_slice()], 1, opts.max_new_tokens).unwrap();
        let one = st.search(&start[..1], &opts).unwrap();
        assert_eq!(one[0][0].tokens, want[b], "greedy source {b} alone");
    }
}

#[test]
fn beam4_matches_hf_generate() {
    let t = translator();
    let m = &t;
    let c = case();
    let opts = options(&c.json, 4);
    let rows: Vec<usize> = ids(&c.json["beam_rows"]).iter().map(|&r| r as usize).collect();
    let want = id_rows(&c.json["beam_tokens"]);
    let want_scores: Vec<f32> = c.json["beam_sequences_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let sources: Vec<&[u32]> = rows.iter().map(|&r| c.sources[r].as_slice()).collect();
    let start = vec![m.info().decoder_start_token_id.unwrap(); sources.len()];
    let mut st = m.encode(&sources, sources.len() * 4, opts.max_new_tokens).unwrap();
    let got = st.search(&start, &opts).unwrap();
    for (j, g) in got.iter().enumerate() {
        assert_eq!(g[0].tokens, want[j], "beam source {}", rows[j]);
        let diff = (g[0].score - want_scores[j]).abs();
        assert!(
            diff < SCORE_TOL,
            "beam score of source {}: {} vs {}",
            rows[j],
            g[0].score,
            want_scores[j]
        );
    }
}

#[test]
fn cross_kv_is_projected_once_per_source_and_shared_by_beams() {
    let t = translator();
    let m = &t;
    let c = case();
    let srcs = src_refs(&c);
    let n_src = srcs.len();
    let n_layers = m.info().n_layers;
    let d = m.info().hidden_size;
    let before = m.cross_projection_count();
    let mut st = m.encode(&srcs, n_src * 4, 8).unwrap();
    assert_eq!(m.cross_projection_count() - before, n_src * n_layers);
    // K and V of every layer for every source, whatever the number of beams
    let cross_bytes = n_layers * 2 * n_src * st.encoder().unwrap().src_len() * d * 4;
    assert_eq!(st.encoder().unwrap().cross_kv_bytes(), cross_bytes);

    // expand to 4 beams per source, then decode a few steps, reordering beams each time
    let vocab = m.info().vocab_size;
    let mut logits = vec![0.0f32; n_src * 4 * vocab];
    let start = m.info().decoder_start_token_id.unwrap();
    st.step(&vec![start; n_src], 1, LogitsFor::Last, &mut logits[..n_src * vocab])
        .unwrap();
    let expand: Vec<usize> = (0..n_src).flat_map(|s| [s; 4]).collect();
    st.reorder(&expand).unwrap();
    for t in 0..6u32 {
        let tokens: Vec<u32> = (0..n_src * 4).map(|r| 1 + (r as u32 + t) % 100).collect();
        st.step(&tokens, 1, LogitsFor::Last, &mut logits).unwrap();
        // beams swap within their source
        let order: Vec<usize> = (0..n_src * 4).map(|r| r / 4 * 4 + (r + 1) % 4).collect();
        st.reorder(&order).unwrap();
    }
    assert_eq!(st.encoder().unwrap().row_sources(), expand.as_slice());
    assert_eq!(st.len(), 7);
    assert_eq!(
        m.cross_projection_count() - before,
        n_src * n_layers,
        "decode steps projected the source again"
    );
    assert_eq!(st.encoder().unwrap().cross_kv_bytes(), cross_bytes);

    // and a whole beam search does not project again either
    let opts = options(&c.json, 4);
    let mut st = m.encode(&srcs, n_src * 4, opts.max_new_tokens).unwrap();
    st.search(&vec![start; n_src], &opts).unwrap();
    assert_eq!(m.cross_projection_count() - before, 2 * n_src * n_layers);
}

#[test]
fn bad_inputs_are_errors() {
    let t = translator();
    let m = &t;
    let vocab = m.info().vocab_size as u32;
    // a source id outside the vocabulary
    assert!(m.encode(&[&[1, vocab, 0]], 1, 4).is_err());
    let mut st = m.encode(&[&[1, 2, 0]], 1, 2).unwrap();
    let mut logits = vec![0.0f32; vocab as usize];
    // wrong token count, target id outside the vocabulary
    assert!(st.step(&[1, 2], 1, LogitsFor::Last, &mut logits).is_err());
    assert!(st.step(&[vocab], 1, LogitsFor::Last, &mut logits).is_err());
    // beyond the cache capacity
    st.step(&[1], 1, LogitsFor::Last, &mut logits).unwrap();
    st.step(&[1], 1, LogitsFor::Last, &mut logits).unwrap();
    assert!(st.step(&[1], 1, LogitsFor::Last, &mut logits).is_err());
    // reorder to a row that does not exist
    assert!(st.reorder(&[1]).is_err());
    // a source longer than the position table
    let long = vec![5u32; m.info().max_positions + 1];
    assert!(m.encode(&[&long], 1, 4).is_err());
    // an empty source is masked, not a crash
    let mut st = m.encode(&[&[]], 1, 2).unwrap();
    st.step(&[1], 1, LogitsFor::Last, &mut logits).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn batched_translate_ids_keeps_input_order() {
    // batches of 3 after sorting by length: padding, several batches, results back in input order
    let t = translator();
    let c = case();
    let want_greedy = id_rows(&c.json["greedy_tokens"]);
    let want_beam = id_rows(&c.json["beam_tokens"]);
    for (beams, want) in [(1, &want_greedy), (4, &want_beam)] {
        let opts = TranslateOptions {
            beam_size: Some(beams),
            max_length: Some(20),
            batch_size: 3,
            ..Default::default()
        };
        let got = t.translate_ids(&c.sources, &opts).unwrap();
        let got: Vec<Vec<u32>> = got.into_iter().map(|h| h[0].tokens.clone()).collect();
        assert_eq!(&got, want, "beam size {beams}");
    }
    // no tokenizer files in the fixture: text translation is an error, not a panic
    assert!(t.translate(&["hello"], &TranslateOptions::default()).is_err());
}

#[test]
fn self_cache_grows_past_its_first_allocation() {
    // a 1-token source starts with room for 18 positions; decoding 50 steps grows the caches twice. The
    // same source beside a 30-token one (whose batch is allocated for all 60 positions up front) must give
    // the same logits at every step.
    let t = translator();
    let m = &t;
    let vocab = m.info().vocab_size;
    let short: Vec<u32> = vec![0];
    let long: Vec<u32> = (1..30).chain([0]).collect();
    let mut alone = m.encode(&[&short], 1, 60).unwrap();
    let mut pair = m.encode(&[&short, &long], 2, 60).unwrap();
    let (mut a, mut p) = (vec![0.0f32; vocab], vec![0.0f32; 2 * vocab]);
    let mut worst = 0.0f32;
    for s in 0..50u32 {
        let tok = if s == 0 {
            m.info().decoder_start_token_id.unwrap()
        } else {
            1 + (s * 37) % 120
        };
        alone.step(&[tok], 1, LogitsFor::Last, &mut a).unwrap();
        pair.step(&[tok, tok], 1, LogitsFor::Last, &mut p).unwrap();
        worst = worst.max(max_abs_diff(&a, &p[..vocab]));
    }
    assert!(worst < LOGITS_TOL, "logits after cache growth differ by {worst}");
    assert_eq!(alone.len(), 50);
    // beyond the maximum asked for in `start`: an error
    for _ in 50..60 {
        alone.step(&[1], 1, LogitsFor::Last, &mut a).unwrap();
    }
    assert!(alone.step(&[1], 1, LogitsFor::Last, &mut a).is_err());
}
