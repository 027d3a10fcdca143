//! marian-base-shape (the opus-mt base shape: d_model 512, 6+6 layers, 8 heads, FFN 2048, vocab 1000) with
//! hash-initialised weights rebuilt here bit-exactly, against transformers (tools/fixtures/marian-base-shape).

mod translate_support;

use loaders::paths::fixture;
use qkv::{Kernels, LoadOptions, LogitsFor, Model};
use translate_support::*;

/// Max |ours - HF| for encoder outputs and logits (d_model 512, 6 layers of f32 math in another order).
const LOGITS_TOL: f32 = 1e-4;
/// Max |ours - HF| for beam scores.
const SCORE_TOL: f32 = 1e-4;

#[test]
fn marian_base_shape_matches_hf() {
    let dir = fixture("marian-base-shape");
    let json = read_json(&dir.join("reference.json"));
    let tensors = read_reference(&dir.join("reference.safetensors"));
    let t0 = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    write_model_dir(tmp.path(), &dir, marian_base_shape_tensors(&json));
    let opts = LoadOptions {
        kernels: Some(Kernels::detect().unwrap()),
        ..Default::default()
    };
    let m = Model::load_with(tmp.path(), &opts).expect("load");
    println!("weights built and written in {:?}", t0.elapsed());
    let rows = id_rows(&json["source_ids"]);
    let lens = ids(&json["source_lengths"]);
    let sources: Vec<Vec<u32>> = rows.iter().zip(&lens).map(|(r, &l)| r[..l as usize].to_vec()).collect();
    let srcs: Vec<&[u32]> = sources.iter().map(|s| s.as_slice()).collect();
    let n_src = srcs.len();
    let start = m.info().decoder_start_token_id.unwrap();

    // encoder output (valid rows) and teacher-forced logits at every step
    let t0 = std::time::Instant::now();
    let dec_in = ids(&json["teacher_forced_decoder_input_ids"]);
    let r = &tensors["teacher_forced_logits"];
    let (steps, vocab) = (r.shape[1], r.shape[2]);
    let mut st = m.encode(&srcs, n_src, steps).unwrap();
    let enc = &tensors["encoder_output"];
    let (len, d) = (enc.shape[1], enc.shape[2]);
    let mut worst_enc = 0.0f32;
    for (b, s) in sources.iter().enumerate() {
        let off = b * len * d;
        let n = s.len() * d;
        worst_enc = worst_enc.max(max_abs_diff(
            &st.encoder().unwrap().output()[off..off + n],
            &enc.data[off..off + n],
        ));
    }
    let mut logits = vec![0.0f32; n_src * vocab];
    let mut worst = 0.0f32;
    for (t, &tok) in dec_in.iter().enumerate() {
        st.step(&vec![tok; n_src], 1, LogitsFor::Last, &mut logits).unwrap();
        for b in 0..n_src {
            let want = &r.data[(b * steps + t) * vocab..(b * steps + t + 1) * vocab];
            worst = worst.max(max_abs_diff(&logits[b * vocab..(b + 1) * vocab], want));
        }
    }
    println!(
        "encoder max |diff| {worst_enc:e}, teacher-forced logits max |diff| {worst:e} ({:?})",
        t0.elapsed()
    );
    assert!(worst_enc < LOGITS_TOL, "encoder output differs by {worst_enc}");
    assert!(worst < LOGITS_TOL, "logits differ by {worst}");

    // greedy on the batch
    let t0 = std::time::Instant::now();
    let opts = marian_search_options(&json, 1);
    let mut st = m.encode(&srcs, n_src, opts.max_new_tokens).unwrap();
    let got = st.search(&vec![start; n_src], &opts).unwrap();
    for (b, want) in id_rows(&json["greedy_tokens"]).iter().enumerate() {
        assert_eq!(&got[b][0].tokens, want, "greedy source {b}");
    }
    println!("greedy batch of {n_src}: {:?}", t0.elapsed());

    // beam 4 on the chosen sources
    let t0 = std::time::Instant::now();
    let opts = marian_search_options(&json, 4);
    let beam_rows: Vec<usize> = ids(&json["beam_rows"]).iter().map(|&r| r as usize).collect();
    let bsrcs: Vec<&[u32]> = beam_rows.iter().map(|&r| srcs[r]).collect();
    let mut st = m.encode(&bsrcs, bsrcs.len() * 4, opts.max_new_tokens).unwrap();
    let got = st.search(&vec![start; bsrcs.len()], &opts).unwrap();
    let want_scores = json["beam_sequences_scores"].as_array().unwrap();
    for (j, want) in id_rows(&json["beam_tokens"]).iter().enumerate() {
        assert_eq!(&got[j][0].tokens, want, "beam source {}", beam_rows[j]);
        let w = want_scores[j].as_f64().unwrap() as f32;
        assert!(
            (got[j][0].score - w).abs() < SCORE_TOL,
            "beam score {} vs {w}",
            got[j][0].score
        );
    }
    println!("beam-4 on {} sources: {:?}", bsrcs.len(), t0.elapsed());
}
