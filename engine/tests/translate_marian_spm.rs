//! The text path of a Marian model with a real opus-mt tokenizer (source.spm, target.spm, vocab.json of
//! ../shared/models/opus-mt-tc-big-en-pt-tokenizer, which has no weights): a tiny hash-initialised Marian with
//! that vocabulary is written to a tempdir and loaded with `qkv::Model::load`. There is no reference translation
//! for these weights, so this checks the plumbing: text -> source ids (with `</s>`) -> search -> decoded text
//! equals the tokenizer's own decode of the id-level result, in input order, without pad tokens.

mod translate_support;

use loaders::paths::shared_model;
use qkv::{Model, TranslateOptions};
use translate_support::*;

#[test]
fn marian_text_translation_goes_through_the_spm_tokenizer() {
    let tok_dir = shared_model("opus-mt-tc-big-en-pt-tokenizer").expect("shared tokenizer");
    let real = read_json(&tok_dir.join("config.json"));
    let vocab = real["vocab_size"].as_u64().unwrap() as usize;
    let (d, ffn) = (16usize, 32usize);
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "source.spm",
        "target.spm",
        "vocab.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(tok_dir.join(f), tmp.path().join(f)).unwrap();
    }
    // the real config with a tiny network
    let mut cfg = real.clone();
    for (k, v) in [
        ("d_model", d),
        ("encoder_layers", 1),
        ("decoder_layers", 1),
        ("encoder_attention_heads", 2),
        ("decoder_attention_heads", 2),
        ("encoder_ffn_dim", ffn),
        ("decoder_ffn_dim", ffn),
        ("max_length", 12),
    ] {
        cfg[k] = serde_json::json!(v);
    }
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        tok_dir.join("generation_config.json"),
        tmp.path().join("generation_config.json"),
    )
    .unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let v = hash_tensor(&name, shape.iter().product(), scale, offset);
        tensors.push((name, shape, v));
    };
    add("model.shared.weight".into(), vec![vocab, d], 0.5, 0.0);
    add("final_logits_bias".into(), vec![1, vocab], 0.5, 0.0);
    for side in ["encoder", "decoder"] {
        let p = format!("model.{side}.layers.0");
        let mut attn = vec!["self_attn"];
        if side == "decoder" {
            attn.push("encoder_attn");
        }
        for a in attn {
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                add(format!("{p}.{a}.{proj}.weight"), vec![d, d], 0.3, 0.0);
                add(format!("{p}.{a}.{proj}.bias"), vec![d], 0.05, 0.0);
            }
            add(format!("{p}.{a}_layer_norm.weight"), vec![d], 0.1, 1.0);
            add(format!("{p}.{a}_layer_norm.bias"), vec![d], 0.05, 0.0);
        }
        add(format!("{p}.fc1.weight"), vec![ffn, d], 0.3, 0.0);
        add(format!("{p}.fc1.bias"), vec![ffn], 0.05, 0.0);
        add(format!("{p}.fc2.weight"), vec![d, ffn], 0.3, 0.0);
        add(format!("{p}.fc2.bias"), vec![d], 0.05, 0.0);
        add(format!("{p}.final_layer_norm.weight"), vec![d], 0.1, 1.0);
        add(format!("{p}.final_layer_norm.bias"), vec![d], 0.05, 0.0);
    }
    let tensors: Vec<(String, loaders::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| {
            (
                n,
                loaders::Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    loaders::safetensors::write(&tmp.path().join("model.safetensors"), &tensors, None).unwrap();

    let model = Model::load(tmp.path()).expect("Model::load");
    let t = &model;
    let tok = t.tokenizer().unwrap();
    let texts = [
        "Hello world.",
        "The quick brown fox jumps over the lazy dog.",
        "",
        "Olá, tudo bem?",
    ];
    let opts = TranslateOptions {
        batch_size: 3,
        ..Default::default()
    };
    // defaults from generation_config.json: beam 4, max_length 512 -> 511 new tokens, pad banned, forced EOS
    let d = t.search_defaults().unwrap();
    assert_eq!((d.num_beams, d.max_new_tokens, d.rules.renormalize), (4, 511, true));
    assert_eq!(
        d.rules.bad_words,
        vec![vec![real["pad_token_id"].as_u64().unwrap() as u32]]
    );
    let opts_short = TranslateOptions {
        max_length: Some(10),
        ..opts.clone()
    };
    let out = model.translate(&texts, &opts_short).unwrap();
    let sources: Vec<Vec<u32>> = texts.iter().map(|x| tok.encode(x).unwrap()).collect();
    let eos = real["eos_token_id"].as_u64().unwrap() as u32;
    let pad = real["pad_token_id"].as_u64().unwrap() as u32;
    for s in &sources {
        assert_eq!(s.last(), Some(&eos), "MarianTokenizer appends </s>");
    }
    let ids = model.translate_ids(&sources, &opts_short).unwrap();
    assert_eq!(out.len(), texts.len());
    for (o, h) in out.iter().zip(&ids) {
        assert_eq!(o.tokens, h[0].tokens);
        assert_eq!(o.text, tok.decode(&h[0].tokens, true).unwrap());
        assert!(!o.tokens.contains(&pad), "pad is a bad word");
        assert!(
            o.tokens.len() <= 10 && o.tokens.last() == Some(&eos),
            "forced EOS at the maximum length"
        );
    }
}
