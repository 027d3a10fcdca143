//! T5 and M2M100 (the NLLB-shape fixture) against CTranslate2 4.x: the random-weight models of
//! tools/fixtures/seq2seq converted by CTranslate2's `TransformersConverter`, and `translate_batch` greedy and
//! beam 4 (four hypotheses each, their order and scores) on sources clear of ties (tools/fixtures/seq2seq-ct2, made
//! by tools/scripts/make_seq2seq_ct2_fixtures.py), batched and one by one, on every ISA the CPU has.

mod decoder_support;
#[path = "hash_weights/mod.rs"]
mod hash_weights;

use decoder_support::{ids, load_on};
use qkv::search::{BeamStyle, LogitsRules, SearchOptions};
use qkv::{Model, TranslateOptions};

/// Logits may differ from the reference by this much (seq2seq_families.rs checks qkv's against transformers' at
/// every step within 1e-4; CTranslate2's log-probs on these models are within 2e-6 of transformers', measured by
/// the script's author with `score_batch`). The sources were chosen so that every beam decision is at least
/// 2 · 2 · LOGITS_TOL per token from a tie (`min_margin.required`): each log-prob moves by at most twice the logits'
/// difference, and two candidates' by twice that.
const LOGITS_TOL: f32 = 1e-4;
/// A score is a length-normalised sum of log-probs, each within twice the logits' tolerance.
const SCORE_TOL: f32 = 2.0 * LOGITS_TOL;

fn fixture(name: &str) -> (std::path::PathBuf, serde_json::Value) {
    let (dir, _) =
        hash_weights::fixture_model_dir(&loaders::paths::fixture("seq2seq").join(name), &format!("ct2-{name}"));
    let json = decoder_support::json(&loaders::paths::fixture("seq2seq-ct2").join(name).join("reference.json"));
    (dir, json)
}

/// CTranslate2's `translate_batch` options as recorded: `max_decoding_length` (the target prefix counted),
/// `min_decoding_length` (EOS banned before it), length penalty and patience, the target prefix as a forced first
/// token, `num_hypotheses` = beam size.
fn ct2_search(m: &Model, json: &serde_json::Value, beam: usize) -> SearchOptions {
    let o = &json["translate_options"];
    let mut s = m
        .search_options(&TranslateOptions {
            beam_size: Some(beam),
            max_length: Some(o["max_decoding_length"].as_u64().unwrap() as usize),
            min_length: Some(o["min_decoding_length"].as_u64().unwrap() as usize),
            length_penalty: Some(o["length_penalty"].as_f64().unwrap() as f32),
            num_hypotheses: beam,
            ..Default::default()
        })
        .unwrap();
    s.style = BeamStyle::CTranslate2 {
        patience: o["patience"].as_f64().unwrap() as f32,
    };
    let prefix = (!json["target_prefix_ids"].is_null()).then(|| ids(&json["target_prefix_ids"]));
    if let Some(p) = &prefix {
        assert_eq!(p.len(), 1, "a one-token target prefix (the target language)");
    }
    s.rules = LogitsRules {
        eos: s.rules.eos.clone(),
        forced_bos: prefix.map(|p| p[0]),
        ..Default::default()
    };
    s
}

fn check(name: &str) {
    let (dir, json) = fixture(name);
    let sources: Vec<Vec<u32>> = json["sources"].as_array().unwrap().iter().map(ids).collect();
    for k in kernels::testing::kernels(&format!("seq2seq_ct2::{name}")) {
        let m = load_on(&dir, k);
        let mut worst = 0.0f32;
        for run in json["runs"].as_object().unwrap().values() {
            let beam = run["beam_size"].as_u64().unwrap() as usize;
            let opts = ct2_search(&m, &json, beam);
            for batch in [sources.len(), 1] {
                let got = m.translate_ids_with(&sources, batch, &opts).unwrap();
                for (s, (hyps, (want, scores))) in got
                    .iter()
                    .zip(
                        run["hypotheses"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .zip(run["scores"].as_array().unwrap()),
                    )
                    .enumerate()
                {
                    let toks: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
                    let want: Vec<Vec<u32>> = want.as_array().unwrap().iter().map(ids).collect();
                    assert_eq!(
                        toks,
                        want,
                        "{name} on {}: beam {beam}, batch {batch}, source {s}",
                        k.isa()
                    );
                    for (h, w) in hyps.iter().zip(scores.as_array().unwrap()) {
                        let diff = (h.score - w.as_f64().unwrap() as f32).abs();
                        assert!(
                            diff <= SCORE_TOL,
                            "{name} on {}: beam {beam}, source {s}: score {} vs CTranslate2 {w}",
                            k.isa(),
                            h.score
                        );
                        worst = worst.max(diff);
                    }
                }
            }
        }
        eprintln!(
            "{name} on {}: greedy and beam 4 = CTranslate2, scores max-abs {worst:.2e}",
            k.isa()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn t5_matches_ctranslate2() {
    check("t5");
}

#[test]
fn m2m100_matches_ctranslate2() {
    check("nllb");
}
