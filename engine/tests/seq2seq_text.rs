//! Text in, text out on the encoder-decoder fixtures against transformers' tokenizers and `generate`
//! (tools/fixtures/seq2seq-text, made by tools/scripts/make_seq2seq_text_fixtures.py).
//!
//! Source and target languages of the multilingual fixtures (NLLB's `eng_Latn` codes on the M2M100 architecture,
//! mBART-50's `en_XX`) against transformers' tokenizers (`NllbTokenizerFast`, `MBart50TokenizerFast` with
//! `src_lang`) and `generate(forced_bos_token_id=<target>)`, greedy and beam 4, on texts clear of ties
//! ; M2M100's `en` codes (`__en__` tokens) on the NLLB
//! fixture with its language tokens renamed; the errors for unknown codes. T5's text-to-text prompts through
//! `Model::generate` (encode the prompt, decode greedily) against `generate(max_new_tokens=12)`.

mod decoder_support;
#[path = "hash_weights/mod.rs"]
mod hash_weights;

use decoder_support::{ids, json, load_on};
use qkv::{GenerateOptions, Model, PromptFormat, StopReason, TranslateOptions};

/// As seq2seq_families.rs: scores are length-normalised sums of log-probs within twice the logits' 1e-4.
const SCORE_TOL: f32 = 2e-4;

fn model(name: &str) -> (std::path::PathBuf, Model, serde_json::Value) {
    let (dir, _) =
        hash_weights::fixture_model_dir(&loaders::paths::fixture("seq2seq").join(name), &format!("lang-{name}"));
    let m = load_on(&dir, kernels::Kernels::detect().unwrap());
    let refs = json(
        &loaders::paths::fixture("seq2seq-text")
            .join(name)
            .join("reference.json"),
    );
    (dir, m, refs)
}

fn options(case: &serde_json::Value, beams: usize, max_new: usize) -> TranslateOptions {
    TranslateOptions {
        beam_size: Some(beams),
        max_length: Some(max_new),
        source_lang: case["source_lang"].as_str().map(str::to_string),
        target_lang: case["target_lang"].as_str().map(str::to_string),
        ..Default::default()
    }
}

/// Every case of the fixture's text references on `m`.
fn check_cases(name: &str, m: &Model, refs: &serde_json::Value) {
    let max_new = refs["max_new_tokens"].as_u64().unwrap() as usize;
    for case in refs["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let label = format!("{name} {} -> {}", case["source_lang"], case["target_lang"]);
        let opts = options(case, 1, max_new);
        assert_eq!(
            m.source_ids(text, &opts).unwrap(),
            ids(&case["input_ids"]),
            "{label}: source ids"
        );
        let forced = m.search_options(&opts).unwrap().rules.forced_bos;
        assert_eq!(
            forced,
            case["forced_bos_token_id"].as_u64().map(|i| i as u32),
            "{label}"
        );
        for out in case["outputs"].as_array().unwrap() {
            let beams = out["num_beams"].as_u64().unwrap() as usize;
            let t = m.translate(&[text], &options(case, beams, max_new)).unwrap().remove(0);
            assert_eq!(t.tokens, ids(&out["tokens"]), "{label}: beam {beams}");
            assert_eq!(t.text, out["text"].as_str().unwrap(), "{label}: beam {beams}");
            if let Some(s) = out["score"].as_f64() {
                assert!(
                    (t.score - s as f32).abs() <= SCORE_TOL,
                    "{label}: score {} vs HF {s}",
                    t.score
                );
            }
        }
    }
}

/// The NLLB fixture (1.1 GB rebuilt: once for all its checks).
#[test]
fn nllb_languages_match_hf_tokenizer_and_generate() {
    let (dir, m, refs) = model("nllb");
    check_cases("nllb", &m, &refs);
    languages_are_listed_and_unknown_codes_named(&m);
    m2m100_codes_are_wrapped_tokens(&dir, &m, &refs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mbart50_languages_match_hf_tokenizer_and_generate() {
    let (dir, m, refs) = model("mbart50");
    check_cases("mbart50", &m, &refs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn t5_is_not_multilingual() {
    let (dir, t5, _) = model("t5");
    let e = t5.languages().unwrap_err().to_string();
    assert!(e.contains("t5 is not a multilingual translation model"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn languages_are_listed_and_unknown_codes_named(m: &Model) {
    // in id order (the published ids: deu_Latn 256042, eng_Latn 256047, fra_Latn 256057)
    assert_eq!(m.languages().unwrap(), ["deu_Latn", "eng_Latn", "fra_Latn"]);
    let bad = |src: Option<&str>, tgt: Option<&str>| {
        let opts = TranslateOptions {
            source_lang: src.map(str::to_string),
            target_lang: tgt.map(str::to_string),
            ..Default::default()
        };
        m.translate(&["w10 w11"], &opts).unwrap_err().to_string()
    };
    let e = bad(None, Some("spa_Latn"));
    assert!(e.contains("unknown target language \"spa_Latn\""), "{e}");
    assert!(
        e.contains("no token spa_Latn") && e.contains("deu_Latn, eng_Latn, fra_Latn"),
        "{e}"
    );
    assert!(e.contains("--list-languages"), "{e}");
    let e = bad(Some("French"), None);
    assert!(
        e.contains("unknown source language \"French\"") && e.contains("like eng_Latn"),
        "{e}"
    );
    let e = bad(Some("es"), None);
    assert!(e.contains("no token __es__"), "M2M100 form: {e}");
    // source ids carry their own language
    let opts = TranslateOptions {
        source_lang: Some("fra_Latn".into()),
        ..Default::default()
    };
    assert!(m.translate_ids(&[vec![5, 10, 2]], &opts).is_err());
}

/// M2M100 spells `en` as the token `__en__`: the NLLB fixture with its three language tokens renamed so (same ids,
/// same weights) must translate `en` -> `de` exactly as NLLB's `eng_Latn` -> `deu_Latn`.
fn m2m100_codes_are_wrapped_tokens(dir: &std::path::Path, nllb: &Model, refs: &serde_json::Value) {
    let tokenizer = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    let renamed = [("eng_Latn", "__en__"), ("fra_Latn", "__fr__"), ("deu_Latn", "__de__")]
        .iter()
        .fold(tokenizer, |t, (a, b)| {
            t.replace(&format!("\"{a}\""), &format!("\"{b}\""))
        });
    let m2m_dir = dir.with_file_name(format!("{}-m2m100", dir.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&m2m_dir).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        let (from, to) = (dir.join(f), m2m_dir.join(f));
        std::fs::hard_link(&from, &to)
            .or_else(|_| std::fs::copy(&from, &to).map(drop))
            .unwrap();
    }
    std::fs::write(m2m_dir.join("tokenizer.json"), renamed).unwrap();
    let m2m = load_on(&m2m_dir, kernels::Kernels::detect().unwrap());
    assert_eq!(m2m.languages().unwrap(), ["de", "en", "fr"]);
    let code = |c: &str| match c {
        "eng_Latn" => "en",
        "fra_Latn" => "fr",
        "deu_Latn" => "de",
        other => panic!("{other}"),
    };
    let max_new = refs["max_new_tokens"].as_u64().unwrap() as usize;
    for case in refs["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let opts = options(case, 4, max_new);
        let m2m_opts = TranslateOptions {
            source_lang: opts.source_lang.as_deref().map(|c| code(c).to_string()),
            target_lang: opts.target_lang.as_deref().map(|c| code(c).to_string()),
            ..opts.clone()
        };
        assert_eq!(
            m2m.source_ids(text, &m2m_opts).unwrap(),
            nllb.source_ids(text, &opts).unwrap()
        );
        let a = m2m.translate(&[text], &m2m_opts).unwrap().remove(0);
        let b = nllb.translate(&[text], &opts).unwrap().remove(0);
        assert_eq!(a.tokens, b.tokens, "{text}");
    }
    let _ = std::fs::remove_dir_all(&m2m_dir);
}

/// `generate` on T5 = encode the prompt (the tokenizer appends </s>), decode from the start token: HF's greedy
/// tokens and text, streamed, on every ISA.
#[test]
fn t5_generate_matches_hf_greedy() {
    let (dir, _, refs) = model("t5");
    let max_new = refs["max_new_tokens"].as_u64().unwrap() as usize;
    for k in kernels::testing::kernels("seq2seq_text::t5_generate") {
        let m = load_on(&dir, k);
        for case in refs["cases"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            assert_eq!(
                m.prompt_ids(prompt, PromptFormat::Plain).unwrap(),
                ids(&case["input_ids"]),
                "{prompt}"
            );
            let opts = GenerateOptions {
                max_new_tokens: max_new,
                ..Default::default()
            };
            let g = m.generate(prompt, &opts).unwrap();
            let want = ids(&case["greedy"]["tokens"]);
            assert_eq!(g.tokens, want, "{prompt} on {}", k.isa());
            assert_eq!(g.text, case["greedy"]["text"].as_str().unwrap(), "{prompt}");
            let want_stop = if want.last() == Some(&1) {
                StopReason::Eos
            } else {
                StopReason::MaxTokens
            };
            assert_eq!(g.stop_reason, want_stop, "{prompt}");
            assert_eq!(
                g.timings.prompt_tokens,
                ids(&case["input_ids"]).len(),
                "the source counts as the prompt"
            );
            // streamed: the same ids, the deltas adding up to the text
            let mut text = String::new();
            let mut streamed = Vec::new();
            for ev in m.stream(prompt, &opts).unwrap() {
                let ev = ev.unwrap();
                text.push_str(&ev.text);
                streamed.push(ev.id);
            }
            assert_eq!((streamed, text), (want, g.text.clone()), "{prompt}: streamed");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `generate --beam-size` on T5: the prompt ids are the source of a beam search with the model's rules, so HF's
/// beam-4 outputs of the seq2seq fixture (engine/tests/seq2seq_families.rs) come out of `generate_beam_ids` too.
#[test]
fn t5_generate_beam_is_the_translation_beam() {
    let (dir, meta) = hash_weights::fixture_model_dir(&loaders::paths::fixture("seq2seq").join("t5"), "text-t5-beam");
    let m = load_on(&dir, kernels::Kernels::detect().unwrap());
    let b = &meta["beam"];
    let opts = m.beam_options(
        b["num_beams"].as_u64().unwrap() as usize,
        b["max_new_tokens"].as_u64().unwrap() as usize,
    );
    for (src, want) in meta["sources"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["sequences"].as_array().unwrap())
    {
        let best = m.generate_beam_ids(&ids(src), &opts).unwrap().remove(0);
        assert_eq!(best.tokens, ids(want), "source {src}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
