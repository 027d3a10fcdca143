//! CTranslate2 search options beyond the defaults on the shared aren model (tools/fixtures/aren-ct2-beam, made by
//! tools/scripts/make_ct2_beam_variants.py): beam sizes 1..8, num_hypotheses, length_penalty 0 (early exit),
//! patience, min/max decoding length.

mod translate_support;

use loaders::paths::{fixture, shared_model};
use qkv::search::BeamStyle;
use qkv::{Model, TranslateOptions};
use translate_support::*;

/// Max |ours - CT2| for a length-normalised score (length_penalty 1). A score is a sum of `len` log-probs
/// divided by `len^length_penalty`, so its rounding error scales as `len^(1 - length_penalty)` times this.
const SCORE_TOL: f32 = 1e-5;

#[test]
fn ct2_variants_match_translate_batch() {
    let t = Model::load(shared_model("aren-transliteration-ct2").expect("shared model")).expect("load");
    let main = read_json(&fixture("aren-ct2").join("reference.json"));
    let sources = id_rows(&main["source_ids"]);
    let json = read_json(&fixture("aren-ct2-beam").join("reference.json"));
    let eos = t.eos_ids()[0];
    let mut worst = 0.0f32;
    for run in json["runs"].as_array().unwrap() {
        let u = |k: &str| run[k].as_u64().unwrap() as usize;
        let mut opts = t
            .search_options(&TranslateOptions {
                beam_size: Some(u("beam_size")),
                max_length: Some(u("max_decoding_length")),
                min_length: Some(u("min_decoding_length")),
                length_penalty: Some(run["length_penalty"].as_f64().unwrap() as f32),
                num_hypotheses: u("num_hypotheses"),
                ..Default::default()
            })
            .unwrap();
        opts.style = BeamStyle::CTranslate2 {
            patience: run["patience"].as_f64().unwrap() as f32,
        };
        let label = format!(
            "beam {} n {} lp {} patience {} min {} max {}",
            run["beam_size"],
            run["num_hypotheses"],
            run["length_penalty"],
            run["patience"],
            run["min_decoding_length"],
            run["max_decoding_length"]
        );
        let got = t.translate_ids_with(&sources, 7, &opts).unwrap();
        let want_scores = run["scores"].as_array().unwrap();
        for (s, want) in run["ids"].as_array().unwrap().iter().enumerate() {
            let want = id_rows(want);
            // CTranslate2 returns hypotheses without </s>
            let ours: Vec<Vec<u32>> = got[s]
                .iter()
                .map(|h| h.tokens.strip_suffix(&[eos]).unwrap_or(&h.tokens).to_vec())
                .collect();
            assert_eq!(ours, want, "{label}: source {s}");
            let lp = run["length_penalty"].as_f64().unwrap() as f32;
            for (h, w) in got[s].iter().zip(want_scores[s].as_array().unwrap()) {
                let diff = (h.score - w.as_f64().unwrap() as f32).abs();
                let tol = SCORE_TOL * (h.tokens.len() as f32).powf(1.0 - lp).max(1.0);
                assert!(
                    diff < tol,
                    "{label}: source {s}: score {} vs {w} (tolerance {tol:e})",
                    h.score
                );
                worst = worst.max(diff);
            }
        }
    }
    println!("max |score diff| {worst:e}");
}
