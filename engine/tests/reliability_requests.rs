//! Bad requests (issue 7 item 2): every one ends in a clear `Err` naming what is wrong, never a panic.
//! Decoder-only requests run on the real stories260k model, translation requests on aren-ct2 (with
//! tokenizer) and marian-tiny (ids only); broken model directories are copies of them in a tempdir.

use std::path::{Path, PathBuf};

use qkv::{Error, GenerateOptions, LoadOptions, LogitsFor, Model, SampleParams, TranslateOptions};

fn stories() -> PathBuf {
    loaders::paths::shared_model("stories260k").expect("shared model stories260k")
}

fn aren() -> PathBuf {
    loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model aren-transliteration-ct2")
}

/// The error text of `r`, which must be an error.
fn err_text<T>(r: qkv::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Assert `text` contains every one of `parts`.
fn assert_mentions(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "error {text:?} should mention {p:?}");
    }
}

/// A copy of model directory `src` in a fresh tempdir (only regular files, not SOURCE.md).
fn copy_dir(src: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    loaders::paths::copy_files(src, tmp.path()).unwrap();
    tmp
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let m = Model::load(stories()).unwrap();
    assert_eq!(m.info().architecture, "llama", "stories260k is a Llama");
    let ctx = m.info().max_positions;
    let prompt = vec![1u32; ctx + 1];
    let e = err_text(m.stream_ids(prompt, &GenerateOptions::default()));
    assert_mentions(&e, &[&format!("{}", ctx + 1), &format!("{ctx}")]);
    // A prompt of exactly the context fills it: one token is generated, then the context stop.
    let g = m
        .stream_ids(vec![1u32; ctx], &GenerateOptions::default())
        .unwrap()
        .run()
        .unwrap();
    assert_eq!(g.tokens.len(), 1);
    assert_eq!(g.stop_reason, qkv::StopReason::Length);
}

#[test]
fn empty_prompt_is_an_error() {
    let m = Model::load(stories()).unwrap();
    let e = err_text(m.stream_ids(vec![], &GenerateOptions::default()));
    assert_mentions(&e, &["prompt", "no tokens"]);
}

#[test]
fn out_of_range_ids_are_errors() {
    let m = Model::load(stories()).unwrap();
    let vocab = m.tokenizer().unwrap().vocab_size() as u32;
    // stream_ids: the error comes from the first step (prefill) and ends the stream.
    let mut g = m.stream_ids(vec![1, vocab], &GenerateOptions::default()).unwrap();
    let e = g.next().expect("one event").expect_err("out-of-range id");
    assert_mentions(&e.to_string(), &[&format!("token id {vocab}"), "embedding"]);
    assert!(g.next().is_none(), "an error ends the generation");
    // u32::MAX too (no overflow in the check).
    let e = err_text(m.stream_ids(vec![u32::MAX], &GenerateOptions::default()).unwrap().run());
    assert_mentions(&e, &[&format!("token id {}", u32::MAX)]);
    // Session::step directly.
    assert_eq!(m.info().architecture, "llama", "stories260k is a Llama");
    let mut cache = m.session(1, 8).unwrap();
    let mut logits = vec![0.0; m.info().vocab_size];
    let e = err_text(cache.step(&[vocab + 5], 1, LogitsFor::Last, &mut logits));
    assert_mentions(&e, &[&format!("token id {}", vocab + 5)]);
    assert_eq!(cache.len(), 0, "a refused step leaves the cache as it was");
    // Wrong shapes are errors, not panics.
    assert!(cache.step(&[1, 2, 3], 2, LogitsFor::Last, &mut logits).is_err());
    assert!(cache.step(&[1], 1, LogitsFor::Last, &mut logits[..3]).is_err());
}

#[test]
fn translate_out_of_range_ids_are_errors() {
    let t = Model::load(aren()).unwrap();
    let src_vocab = t.info().src_vocab_size as u32;
    let e = err_text(t.translate_ids(&[vec![src_vocab]], &TranslateOptions::default()));
    assert_mentions(&e, &[&format!("token id {src_vocab}")]);
    let e = err_text(t.translate_ids(&[vec![3, 4], vec![u32::MAX]], &TranslateOptions::default()));
    assert_mentions(&e, &[&format!("token id {}", u32::MAX)]);
}

#[test]
fn empty_translation_source_is_documented() {
    // An empty sentence is still a source: the tokenizer adds EOS, the model translates that.
    let t = Model::load(aren()).unwrap();
    let out = t.translate(&[""], &TranslateOptions::default()).unwrap();
    assert_eq!(out.len(), 1);
    // Empty id sequences are masked (not skipped): each still gets one hypothesis.
    let ids = t
        .translate_ids(&[vec![], vec![5, 6]], &TranslateOptions::default())
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|h| h.len() == 1));
    // No sentences: no translations.
    assert!(t.translate(&[], &TranslateOptions::default()).unwrap().is_empty());
}

#[test]
fn translation_source_longer_than_positions_is_an_error() {
    let t = Model::load(aren()).unwrap();
    let max = t.info().max_positions;
    let e = err_text(t.translate_ids(&[vec![5; max + 1]], &TranslateOptions::default()));
    assert_mentions(&e, &[&format!("{}", max + 1), &format!("{max}")]);
}

#[test]
fn beam_size_zero_and_bad_search_options_are_errors() {
    let t = Model::load(aren()).unwrap();
    let beam0 = TranslateOptions {
        beam_size: Some(0),
        ..Default::default()
    };
    assert_mentions(&err_text(t.translate(&["salam"], &beam0)), &["beam"]);
    let len0 = TranslateOptions {
        max_length: Some(0),
        ..Default::default()
    };
    assert_mentions(&err_text(t.translate(&["salam"], &len0)), &["max_new_tokens"]);
    let batch0 = TranslateOptions {
        batch_size: 0,
        ..Default::default()
    };
    assert_mentions(&err_text(t.translate(&["salam"], &batch0)), &["batch_size"]);
    let too_many = TranslateOptions {
        beam_size: Some(2),
        num_hypotheses: 3,
        ..Default::default()
    };
    assert_mentions(
        &err_text(t.translate_n_best(&["salam"], &too_many)),
        &["num_return_sequences"],
    );
}

#[test]
fn sampling_parameters_out_of_range_are_errors() {
    let m = Model::load(stories()).unwrap();
    let run = |p: SampleParams| m.generate("Once", &GenerateOptions::sampled(p));
    for top_p in [0.0, -0.5, 1.5, f32::NAN] {
        let e = err_text(run(SampleParams {
            top_p,
            ..Default::default()
        }));
        assert_mentions(&e, &["top_p"]);
    }
    for temperature in [-1.0, f32::NAN, f32::INFINITY] {
        let e = err_text(run(SampleParams {
            temperature,
            ..Default::default()
        }));
        assert_mentions(&e, &["temperature"]);
    }
    for min_p in [-0.1, 1.5, f32::NAN] {
        let e = err_text(run(SampleParams {
            min_p,
            ..Default::default()
        }));
        assert_mentions(&e, &["min_p"]);
    }
    // Temperature 0 is documented as "> 0" in SampleParams: greedy is Strategy::Greedy.
    assert_mentions(
        &err_text(run(SampleParams {
            temperature: 0.0,
            ..Default::default()
        })),
        &["temperature"],
    );
    // Boundary values are accepted.
    run(SampleParams {
        top_p: 1.0,
        min_p: 1.0,
        temperature: 1e-3,
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn max_new_tokens_beyond_memory_cap_is_an_error() {
    // 1 KiB of KV cache cannot hold a generation of stories260k (5 layers x 2 x 4 heads x 8 x 4 B per position).
    let opts = LoadOptions {
        max_cache_bytes: Some(1024),
        ..Default::default()
    };
    let m = Model::load_with(stories(), &opts).unwrap();
    let e = m.generate("Once", &GenerateOptions::default()).expect_err("cap");
    assert!(matches!(e, Error::CacheMemory { limit: 1024, .. }), "{e}");
    assert_mentions(&e.to_string(), &["1024"]);
    // The default cap is large: a huge max_new_tokens is clamped to the context, not refused.
    let m = Model::load(stories()).unwrap();
    let g = m
        .generate(
            "Once",
            &GenerateOptions {
                max_new_tokens: usize::MAX,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!g.tokens.is_empty());
}

#[test]
fn kv_cache_cap_counts_every_layer() {
    let m = Model::load(stories()).unwrap();
    assert_eq!(m.info().architecture, "llama", "stories260k is a Llama");
    let p = m.info();
    let per_pos = p.n_layers * 2 * p.n_kv_heads * p.head_dim * 4;
    let positions = 10;
    let need = per_pos * positions;
    let capped = |max_cache_bytes| {
        let opts = LoadOptions {
            max_cache_bytes: Some(max_cache_bytes),
            ..Default::default()
        };
        Model::load_with(stories(), &opts).unwrap()
    };
    assert!(capped(need).session(1, positions).is_ok());
    let e = capped(need - 1).session(1, positions).expect_err("one byte short");
    assert!(matches!(e, Error::CacheMemory { bytes, limit, .. } if bytes == need && limit == need - 1));
    // Absurd shapes overflow to an error, not an abort.
    let huge = usize::MAX / 2;
    assert!(capped(usize::MAX).session(huge, positions).is_err());
}

#[test]
fn missing_files_are_named() {
    let src = stories();
    for (file, what) in [("config.json", "config.json"), ("model.safetensors", "safetensors")] {
        let dir = copy_dir(&src);
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let e = err_text(Model::load(dir.path()));
        assert_mentions(&e.to_lowercase(), &[what]);
    }
    let e = err_text(Model::load("/nonexistent/qkv-model"));
    assert_mentions(&e, &["/nonexistent/qkv-model"]);
    // A translation model without its weights.
    let dir = copy_dir(&aren());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_mentions(&err_text(Model::load(dir.path())), &["safetensors"]);
}

/// Without tokenizer files a model still loads and generates from ids (the same ids as with them, empty text);
/// everything that needs text fails with an error naming the directory and the missing tokenizer.
#[test]
fn model_without_tokenizer_generates_ids_only() {
    let dir = copy_dir(&stories());
    std::fs::remove_file(dir.path().join("tok512.bin")).unwrap();
    std::fs::remove_file(dir.path().join("tok512.vocab.json")).unwrap();
    let bare = Model::load(dir.path()).unwrap();
    let full = Model::load(stories()).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 12,
        ..Default::default()
    };
    let prompt = full.tokenizer().unwrap().encode("Once upon a time").unwrap();
    let a = bare.stream_ids(prompt.clone(), &opts).unwrap().run().unwrap();
    let b = full.stream_ids(prompt, &opts).unwrap().run().unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(a.text.is_empty() && !b.text.is_empty(), "{:?} / {:?}", a.text, b.text);
    let where_ = dir.path().display().to_string();
    for e in [
        err_text(bare.generate("Once", &opts)),
        err_text(bare.tokenizer().map(|_| ())),
        err_text(bare.stream_ids(
            vec![1, 2],
            &GenerateOptions {
                stop_strings: vec!["x".into()],
                ..opts.clone()
            },
        )),
    ] {
        assert_mentions(&e, &[&where_, "tokenizer"]);
    }
}

#[test]
fn corrupt_files_are_errors() {
    // Truncated weights.
    let dir = copy_dir(&stories());
    let w = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&w).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&w).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    assert_mentions(&err_text(Model::load(dir.path())), &["model.safetensors"]);
    // Invalid JSON config.
    let dir = copy_dir(&stories());
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert_mentions(&err_text(Model::load(dir.path())), &["config.json"]);
    // A config whose shapes disagree with the weights.
    let dir = copy_dir(&stories());
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["hidden_size"] = serde_json::json!(128);
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let e = err_text(Model::load(dir.path()));
    assert!(e.contains("shape") || e.contains("128"), "{e}");
}

/// Rewrite one f32 tensor of `dir/model.safetensors` in place: element `at` becomes `value`.
fn poison(dir: &Path, tensor: &str, at: usize, value: f32) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[tensor];
    assert_eq!(t["dtype"], "F32", "{tensor}");
    let start = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize + 4 * at;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn non_finite_norm_or_embedding_weights_are_load_errors() {
    for (tensor, value) in [
        ("model.norm.weight", f32::NAN),
        ("model.layers.0.input_layernorm.weight", f32::INFINITY),
        ("model.embed_tokens.weight", f32::NAN),
    ] {
        let dir = copy_dir(&stories());
        poison(dir.path(), tensor, 3, value);
        let e = err_text(Model::load(dir.path()));
        assert_mentions(&e, &[tensor, "finite"]);
    }
}

#[test]
fn non_finite_matrix_weights_are_documented_as_unchecked() {
    // Checking every matrix would read all weights at load (slow for large models): a NaN in a projection
    // loads, and shows up as NaN logits. Greedy search then still returns a token (NaN is never the max),
    // so the documented behaviour is: garbage out, no panic, no out-of-range id.
    let dir = copy_dir(&stories());
    poison(dir.path(), "model.layers.0.self_attn.q_proj.weight", 0, f32::NAN);
    let m = Model::load(dir.path()).unwrap();
    let vocab = m.tokenizer().unwrap().vocab_size() as u32;
    let g = m
        .generate(
            "Once",
            &GenerateOptions {
                max_new_tokens: 4,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(g.tokens.iter().all(|&t| t < vocab));
}

#[test]
fn generating_with_a_translation_model_translates_and_the_reverse_is_an_error() {
    // `generate` on an encoder-decoder encodes the prompt and decodes greedily (T5's text-to-text use): on a
    // translation model that is the greedy translation; a session (decoder-only) stays a clear error.
    let model = Model::load(aren()).unwrap();
    let g = model
        .generate(
            "سلام",
            &GenerateOptions {
                max_new_tokens: 32,
                ..Default::default()
            },
        )
        .unwrap();
    let greedy = TranslateOptions {
        beam_size: Some(1),
        max_length: Some(32),
        ..Default::default()
    };
    let t = model.translate(&["سلام"], &greedy).unwrap().remove(0);
    assert_eq!(g.tokens, t.tokens, "generate = greedy translate");
    let e = err_text(model.session(1, 4));
    assert_mentions(&e, &["encoder-decoder"]);
    let e = err_text(
        Model::load(stories())
            .unwrap()
            .translate(&["x"], &TranslateOptions::default()),
    );
    assert_mentions(&e, &["not an encoder-decoder"]);
}

#[test]
fn seq2seq_step_with_out_of_range_target_id_is_an_error() {
    let t = Model::load(loaders::paths::fixture("marian-tiny")).unwrap();
    let m = &t;
    let tgt_vocab = m.info().vocab_size as u32;
    let mut state = m.encode(&[&[3, 4, 5]], 1, 8).unwrap();
    let mut logits = vec![0.0; m.info().vocab_size];
    let e = err_text(state.step(&[tgt_vocab], 1, LogitsFor::Last, &mut logits));
    assert_mentions(&e, &[&format!("token id {tgt_vocab}")]);
    assert_eq!(state.len(), 0, "a refused step leaves the cache as it was");
    // The same state still works with a valid id.
    state
        .step(
            &[m.info().decoder_start_token_id.unwrap()],
            1,
            LogitsFor::Last,
            &mut logits,
        )
        .unwrap();
    assert_eq!(state.len(), 1);
}

#[test]
fn absurd_beam_size_is_a_memory_error_not_an_abort() {
    let t = Model::load(aren()).unwrap();
    let huge = TranslateOptions {
        beam_size: Some(1 << 40),
        ..Default::default()
    };
    let e = t.translate(&["salam"], &huge).expect_err("no such memory");
    assert!(matches!(e, Error::CacheMemory { .. }), "{e}");
}
