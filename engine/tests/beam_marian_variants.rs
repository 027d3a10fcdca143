//! Beam search options beyond the defaults against transformers `generate` on marian-tiny
//! (tools/fixtures/marian-tiny-beam, made by tools/scripts/make_beam_variants.py): early_stopping
//! true / false / "never", length penalties, num_return_sequences, min_length, beam sizes 2..8.

mod translate_support;

use loaders::paths::fixture;
use qkv::search::{BeamStyle, EarlyStopping};
use qkv::{Model, TranslateOptions};
use translate_support::*;

/// Max |ours - HF| for sequence scores.
const SCORE_TOL: f32 = 1e-4;

#[test]
fn beam_variants_match_hf_generate() {
    let t = Model::load(fixture("marian-tiny")).expect("load");
    let main = read_json(&fixture("marian-tiny").join("reference.json"));
    let rows = id_rows(&main["source_ids"]);
    let lens = ids(&main["source_lengths"]);
    let sources: Vec<Vec<u32>> = rows.iter().zip(&lens).map(|(r, &l)| r[..l as usize].to_vec()).collect();
    let json = read_json(&fixture("marian-tiny-beam").join("reference.json"));
    for run in json["runs"].as_array().unwrap() {
        let u = |k: &str| run[k].as_u64().unwrap() as usize;
        let mut opts = t
            .search_options(&TranslateOptions {
                beam_size: Some(u("num_beams")),
                max_length: Some(u("max_new_tokens")),
                // transformers counts the decoder start token in min_length
                min_length: Some(u("min_length").saturating_sub(1)),
                length_penalty: Some(run["length_penalty"].as_f64().unwrap() as f32),
                num_hypotheses: u("num_return_sequences"),
                ..Default::default()
            })
            .unwrap();
        let early_stopping = match &run["early_stopping"] {
            serde_json::Value::Bool(true) => EarlyStopping::Eager,
            serde_json::Value::Bool(false) => EarlyStopping::Heuristic,
            _ => EarlyStopping::Never,
        };
        opts.style = BeamStyle::HuggingFace { early_stopping };
        let got = t.translate_ids_with(&sources, 4, &opts).unwrap();
        let want_scores = run["scores"].as_array().unwrap();
        for (s, want) in run["tokens"].as_array().unwrap().iter().enumerate() {
            let want = id_rows(want);
            let tokens: Vec<Vec<u32>> = got[s].iter().map(|h| h.tokens.clone()).collect();
            assert_eq!(tokens, want, "{run}: source {s}");
            for (h, w) in got[s].iter().zip(want_scores[s].as_array().unwrap()) {
                let w = w.as_f64().unwrap() as f32;
                assert!(
                    (h.score - w).abs() < SCORE_TOL,
                    "{run}: source {s} score {} vs {w}",
                    h.score
                );
            }
        }
    }
}
