//! Text-level translation API on the shared CTranslate2 model: `Translator::load` (custom config, vocabulary
//! files), batches sorted by length, results in input order, vs CTranslate2 `translate_batch` (fixture aren-ct2).

mod translate_support;

use loaders::paths::{fixture, shared_model};
use qkv::search::BeamStyle;
use qkv::{Model, TranslateOptions};
use translate_support::*;

/// Max |ours - CT2| for translation scores.
const SCORE_TOL: f32 = 1e-5;

#[test]
fn translate_text_matches_ctranslate2() {
    let t = Model::load(shared_model("aren-transliteration-ct2").expect("shared model")).expect("load");
    // CTranslate2's translate_batch defaults
    let d = t.search_defaults().unwrap();
    assert_eq!(
        (d.num_beams, d.max_new_tokens, d.min_new_tokens, d.length_penalty),
        (2, 256, 1, 1.0)
    );
    assert_eq!(d.style, BeamStyle::CTranslate2 { patience: 1.0 });

    let json = read_json(&fixture("aren-ct2").join("reference.json"));
    let names: Vec<&str> = json["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // the tokenizer gives the reference's source ids (one id per character, <unk> for unknown ones)
    let tok = t.tokenizer().unwrap();
    for (name, want) in names.iter().zip(id_rows(&json["source_ids"])) {
        assert_eq!(tok.encode(name).unwrap(), want, "{name}");
    }
    for (beams, key) in [(1, "greedy"), (4, "beam4")] {
        let opts = TranslateOptions {
            beam_size: Some(beams),
            batch_size: 5,
            ..Default::default()
        };
        let got = t.translate(&names, &opts).unwrap();
        assert_eq!(got.len(), names.len());
        let mut worst = 0.0f32;
        for (i, r) in json[key].as_array().unwrap().iter().enumerate() {
            let want: String = r["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(got[i].text, want, "{key} {}", names[i]);
            worst = worst.max((got[i].score - r["score"].as_f64().unwrap() as f32).abs());
        }
        println!("{key}: {} names, max |score diff| {worst:e}", names.len());
        assert!(worst < SCORE_TOL, "{key} scores differ by {worst}");
    }

    // n-best: sorted, the first is the 1-best
    let opts = TranslateOptions {
        beam_size: Some(4),
        num_hypotheses: 3,
        ..Default::default()
    };
    let nbest = t.translate_n_best(&names[..4], &opts).unwrap();
    let best = t.translate(&names[..4], &opts).unwrap();
    for (n, b) in nbest.iter().zip(&best) {
        assert_eq!(n.len(), 3);
        assert_eq!(&n[0], b);
        assert!(n.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // empty input and an empty sentence
    assert!(t.translate(&[], &opts).unwrap().is_empty());
    let e = t.translate(&[""], &opts).unwrap();
    assert_eq!(e.len(), 1);
}

#[test]
fn model_load_translates_the_same() {
    let dir = shared_model("aren-transliteration-ct2").expect("shared model");
    let m = qkv::Model::load(&dir).expect("Model::load");
    let t = Model::load(&dir).expect("Model::load");
    let names = ["محمد", "زينب", "عائشة"];
    let opts = TranslateOptions::default();
    assert_eq!(m.translate(&names, &opts).unwrap(), t.translate(&names, &opts).unwrap());
    // generate on a translation model encodes the prompt and decodes greedily: the greedy translation
    let g = m.generate("محمد", &qkv::GenerateOptions::default()).unwrap();
    let greedy = TranslateOptions {
        beam_size: Some(1),
        ..Default::default()
    };
    assert_eq!(g.tokens, m.translate(&["محمد"], &greedy).unwrap()[0].tokens);
}
