//! Configs: every field against what Hugging Face transformers resolves from the same file
//! (expected.json written by tools/scripts/make_loaders_fixtures.py), the real configs in
//! ../shared/models, and one test per kind of bad config asserting the variant and the field.

use std::path::{Path, PathBuf};

use loaders::config::{EarlyStopping, GenerationConfig, LlamaConfig, ModelConfig};
use loaders::safetensors::SafeTensors;
use loaders::{Error, TensorData};
use serde_json::Value;

/// f32 fields (eps) are compared with transformers' f64 values to f32 precision.
const F32_REL_TOL: f64 = f32::EPSILON as f64;
/// Sums of a tensor's values in f64: the order of summation differs from torch's.
const SUM_ABS_TOL: f64 = 1e-9;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every key of `expected` must be in `ours` with the same value (numbers to f32 precision).
fn assert_fields_match(what: &str, ours: &Value, expected: &Value) {
    let Value::Object(exp) = expected else {
        panic!("{what}: expected an object")
    };
    for (k, e) in exp {
        if k == "model_type" {
            continue;
        }
        let o = ours.get(k).unwrap_or(&Value::Null);
        let same = match (o, e) {
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                (a - b).abs() <= F32_REL_TOL * b.abs()
            }
            (Value::Object(_), Value::Object(_)) => {
                assert_fields_match(&format!("{what}.{k}"), o, e);
                true
            }
            _ => o == e,
        };
        assert!(same, "{what}: field {k}: ours {o}, transformers {e}");
    }
}

fn fixture_configs() -> PathBuf {
    loaders::paths::fixture("loaders-configs")
}

/// Compare a config dir with its expected.json (model and generation config).
fn check_against_transformers(dir: &Path, expected_path: &Path) -> ModelConfig {
    let expected = read_json(expected_path);
    let cfg = ModelConfig::from_dir(dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.model_type(), expected["model"]["model_type"].as_str().unwrap());
    let what = dir.display().to_string();
    assert_fields_match(&what, &serde_json::to_value(&cfg).unwrap(), &expected["model"]);

    let generation = GenerationConfig::from_dir(dir).unwrap();
    match (&generation, &expected["generation"]) {
        (None, Value::Null) => {}
        (Some(g), e @ Value::Object(exp)) => {
            let ours = serde_json::to_value(g).unwrap();
            assert_fields_match(&format!("{what} generation"), &ours, e);
            // And nothing set here that transformers leaves unset.
            for (k, v) in ours.as_object().unwrap() {
                if !v.is_null() && k != "transformers_version" {
                    assert!(
                        exp.contains_key(k),
                        "{what} generation: {k} = {v} is unset in transformers"
                    );
                }
            }
        }
        (g, e) => panic!("{what}: generation config {g:?} vs expected {e}"),
    }
    cfg
}

#[test]
fn fixture_configs_match_transformers() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixture_configs()).expect("fixtures dir") {
        let dir = entry.unwrap().path();
        if dir.file_name().unwrap() == "shared" {
            continue;
        }
        check_against_transformers(&dir, &dir.join("expected.json"));
        n += 1;
    }
    assert!(n >= 8, "found only {n} config fixtures");
}

#[test]
fn llama_defaults_and_derived_fields() {
    let cfg = check_against_transformers(
        &fixture_configs().join("llama-gqa-saved"),
        &fixture_configs().join("llama-gqa-saved/expected.json"),
    );
    let ModelConfig::Llama(c) = cfg else { panic!("llama") };
    assert_eq!(c.n_groups(), 4);
    assert_eq!(c.rope_theta, 50000.0);
    let ModelConfig::Llama(smol) = ModelConfig::from_dir(&fixture_configs().join("smollm2-135m-style")).unwrap() else {
        panic!("llama")
    };
    assert_eq!(
        (smol.num_attention_heads, smol.num_key_value_heads, smol.head_dim),
        (9, 3, 64)
    );
    assert!(smol.tie_word_embeddings);
    assert_eq!(smol.rope_scaling, None);
    let ModelConfig::Llama(l3) = ModelConfig::from_dir(&fixture_configs().join("llama3-rope-scaling")).unwrap() else {
        panic!("llama")
    };
    assert_eq!(l3.rope_scaling.as_ref().unwrap().rope_type, "llama3");
    let g = GenerationConfig::from_dir(&fixture_configs().join("llama3-rope-scaling"))
        .unwrap()
        .unwrap();
    assert_eq!(g.early_stopping, Some(EarlyStopping::Never));
}

#[test]
fn shared_configs_match_transformers() {
    let shared = fixture_configs().join("shared");
    for model in ["stories260k", "opus-mt-tc-big-en-pt-tokenizer"] {
        let dir = loaders::paths::shared_model(model).expect("shared model");
        check_against_transformers(&dir, &shared.join(format!("{model}.expected.json")));
    }
    // transformers 5 no longer keeps generation keys in the model config; the file holds them.
    let dir = loaders::paths::shared_model("opus-mt-tc-big-en-pt-tokenizer").unwrap();
    let raw = read_json(&dir.join("config.json"));
    let ModelConfig::Marian(m) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("marian")
    };
    assert_eq!(m.num_beams as u64, raw["num_beams"].as_u64().unwrap());
    assert_eq!(m.max_length as u64, raw["max_length"].as_u64().unwrap());
    assert_eq!(serde_json::to_value(&m.bad_words_ids).unwrap(), raw["bad_words_ids"]);
    assert_eq!(
        m.static_position_embeddings,
        raw["static_position_embeddings"].as_bool().unwrap()
    );
    assert!(!m.normalize_before);
}

#[test]
fn stories260k_shapes_follow_its_config() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let ModelConfig::Llama(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("llama")
    };
    let st = SafeTensors::open_dir(&dir).unwrap();
    for (name, shape) in llama_tensor_shapes(&c) {
        st.get_shaped(&name, &shape).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The tensors a Llama model asks for, with the shapes its config implies.
fn llama_tensor_shapes(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (d, kv) = (c.hidden_size, c.num_key_value_heads * c.head_dim);
    let q = c.num_attention_heads * c.head_dim;
    let mut v = vec![
        ("model.embed_tokens.weight".to_string(), vec![c.vocab_size, d]),
        ("model.norm.weight".to_string(), vec![d]),
    ];
    if !c.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![c.vocab_size, d]));
    }
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        v.extend([
            (format!("{p}.input_layernorm.weight"), vec![d]),
            (format!("{p}.post_attention_layernorm.weight"), vec![d]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, d]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.o_proj.weight"), vec![d, q]),
            (format!("{p}.mlp.gate_proj.weight"), vec![c.intermediate_size, d]),
            (format!("{p}.mlp.up_proj.weight"), vec![c.intermediate_size, d]),
            (format!("{p}.mlp.down_proj.weight"), vec![d, c.intermediate_size]),
        ]);
    }
    v
}

#[test]
fn wrong_shape_for_the_config_and_missing_tensor() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let st = SafeTensors::open_dir(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    // A config that disagrees with the weights: 4 KV heads become 2.
    let wrong = text.replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 2");
    assert_ne!(wrong, text);
    let ModelConfig::Llama(c) = ModelConfig::from_json(&dir.join("config.json"), &wrong).unwrap() else {
        panic!()
    };
    let e = llama_tensor_shapes(&c)
        .into_iter()
        .find_map(|(name, shape)| st.get_shaped(&name, &shape).err())
        .expect("a shape error");
    match e {
        Error::TensorShape {
            name, expected, found, ..
        } => {
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!((expected, found), (vec![16, 64], vec![32, 64]));
        }
        e => panic!("expected TensorShape, got {e}"),
    }
    // Untied embeddings: the model asks for lm_head.weight, which the file does not have.
    let untied = text.replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    let ModelConfig::Llama(c) = ModelConfig::from_json(&dir.join("config.json"), &untied).unwrap() else {
        panic!()
    };
    let e = llama_tensor_shapes(&c)
        .into_iter()
        .find_map(|(name, shape)| st.get_shaped(&name, &shape).err())
        .expect("a missing tensor");
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "lm_head.weight"),
        "{e}"
    );
}

#[test]
fn sharded_checkpoint_saved_by_transformers() {
    let dir = loaders::paths::fixture("loaders-tiny-llama-sharded");
    let expected = read_json(&dir.join("expected.json"));
    let ModelConfig::Llama(c) = check_against_transformers(&dir, &dir.join("expected.json")) else {
        panic!()
    };
    let st = SafeTensors::open_dir(&dir).unwrap();
    assert!(st.shard_paths().len() > 1, "the fixture must be sharded");
    let tensors = expected["tensors"].as_object().unwrap();
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(st.names(), names);
    for (name, e) in tensors {
        let t = st.get(name).unwrap();
        assert!(t.is_mapped(), "{name}");
        assert_eq!(t.dtype().to_string(), e["dtype"].as_str().unwrap(), "{name}");
        assert_eq!(serde_json::to_value(t.shape()).unwrap(), e["shape"], "{name}");
        let TensorData::BF16(_) = t.data() else {
            panic!("{name} is BF16")
        };
        let v = t.to_f32_vec();
        let first: Vec<f64> = v.iter().take(4).map(|&x| x as f64).collect();
        assert_eq!(serde_json::to_value(&first).unwrap(), e["first"], "{name}");
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let sum_ref = e["sum"].as_f64().unwrap();
        assert!((sum - sum_ref).abs() <= SUM_ABS_TOL, "{name}: sum {sum} vs {sum_ref}");
        let shard = st
            .shard_paths()
            .into_iter()
            .find(|p| p.ends_with(e["shard"].as_str().unwrap()));
        assert!(shard.is_some(), "{name}: shard {}", e["shard"]);
    }
    for (name, shape) in llama_tensor_shapes(&c) {
        st.get_shaped(&name, &shape).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn ct2_config_of_the_aren_model() {
    let dir = loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model");
    let raw = read_json(&dir.join("config.json"));
    let ModelConfig::Ct2Transformer(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("ct2")
    };
    // Every field we read equals the file's value.
    let ours = serde_json::to_value(&c).unwrap();
    for (k, v) in ours.as_object().unwrap() {
        assert_fields_match(
            &format!("ct2 {k}"),
            &serde_json::json!({ k: raw[k] }),
            &serde_json::json!({ k: v }),
        );
    }
    // And agrees with the weights and vocabularies beside it (CT2 appends <unk> to each vocabulary).
    let st = SafeTensors::open_dir(&dir).unwrap();
    st.get_shaped("decoder/projection/weight", &[c.tgt_vocab_size, c.d_model])
        .unwrap();
    st.get_shaped("decoder/projection/bias", &[c.tgt_vocab_size]).unwrap();
    st.get_shaped(
        &c.final_layer_norm.encoder.replace("layer_norm", "layer_norm/gamma"),
        &[c.d_model],
    )
    .unwrap();
    for l in 0..c.encoder_layers {
        st.get_shaped(
            &format!("encoder/layer_{l}/self_attention/linear_0/weight"),
            &[3 * c.d_model, c.d_model],
        )
        .unwrap();
        st.get_shaped(
            &format!("encoder/layer_{l}/ffn/linear_0/weight"),
            &[c.ffn_dim, c.d_model],
        )
        .unwrap();
    }
    for (file, size) in [
        (&c.src_vocab_file, c.src_vocab_size),
        (&c.tgt_vocab_file, c.tgt_vocab_size),
    ] {
        let lines = std::fs::read_to_string(dir.join(file)).unwrap().lines().count();
        assert_eq!(lines + 1, size, "{file}");
    }
}

#[test]
fn generation_config_absent_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(GenerationConfig::from_dir(dir.path()).unwrap(), None);
    let e = ModelConfig::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

/// Parse `json` as config.json and return the error.
fn config_err(json: &str) -> Error {
    let e = ModelConfig::from_json(Path::new("/m/config.json"), json).expect_err(json);
    assert!(
        e.to_string().contains("/m/config.json"),
        "the error names the file: {e}"
    );
    e
}

fn assert_invalid_field(json: &str, field: &str) {
    match config_err(json) {
        Error::InvalidConfig { field: f, .. } if f == field => {}
        e => panic!("{json}: expected InvalidConfig on {field}, got {e:?}"),
    }
}

#[test]
fn not_json_or_not_an_object() {
    for json in ["", "{", "nope", "[1, 2]", "3"] {
        let e = config_err(json);
        assert!(matches!(e, Error::ConfigJson { .. }), "{json}: {e}");
    }
}

#[test]
fn unknown_model_type() {
    let e = config_err(r#"{"model_type": "bert", "architectures": ["BertModel"]}"#);
    assert!(
        matches!(&e, Error::UnknownModelType { found: Some(t), .. } if t == "bert"),
        "{e}"
    );
    let e = config_err(r#"{"hidden_size": 64}"#);
    assert!(matches!(e, Error::UnknownModelType { found: None, .. }), "{e}");
    assert_invalid_field(r#"{"model_type": 3}"#, "model_type");
    // No model_type: the architecture decides, as in transformers' AutoConfig.
    let c = ModelConfig::from_json(Path::new("c.json"), r#"{"architectures": ["LlamaForCausalLM"]}"#).unwrap();
    assert_eq!(c.model_type(), "llama");
}

#[test]
fn inconsistent_llama_values() {
    let base = r#""model_type": "llama", "hidden_size": 64, "num_attention_heads": 8, "vocab_size": 100"#;
    let with = |extra: &str| format!("{{{base}, {extra}}}");
    assert_invalid_field(&with(r#""num_attention_heads": 6"#), "num_attention_heads");
    assert_invalid_field(&with(r#""num_key_value_heads": 3"#), "num_key_value_heads");
    assert_invalid_field(&with(r#""num_key_value_heads": 0"#), "num_key_value_heads");
    assert_invalid_field(&with(r#""num_hidden_layers": 0"#), "num_hidden_layers");
    assert_invalid_field(&with(r#""vocab_size": 0"#), "vocab_size");
    assert_invalid_field(&with(r#""intermediate_size": 0"#), "intermediate_size");
    assert_invalid_field(&with(r#""head_dim": 7"#), "head_dim");
    assert_invalid_field(&with(r#""rms_norm_eps": 0.0"#), "rms_norm_eps");
    assert_invalid_field(&with(r#""rope_theta": -1.0"#), "rope_theta");
    assert_invalid_field(&with(r#""eos_token_id": 100"#), "eos_token_id");
    assert_invalid_field(&with(r#""eos_token_id": [2, 300]"#), "eos_token_id");
    assert_invalid_field(&with(r#""eos_token_id": -1"#), "eos_token_id");
    assert_invalid_field(&with(r#""bos_token_id": 1000"#), "bos_token_id");
    assert_invalid_field(&with(r#""hidden_size": "64""#), "hidden_size");
    assert_invalid_field(&with(r#""tie_word_embeddings": "yes""#), "tie_word_embeddings");
    assert_invalid_field(
        &with(r#""rope_scaling": {"rope_type": "linear", "factor": "x"}"#),
        "rope_scaling.factor",
    );
    // Explicit nulls mean what they mean in transformers.
    let ModelConfig::Llama(c) = ModelConfig::from_json(
        Path::new("c.json"),
        &with(r#""bos_token_id": null, "eos_token_id": null"#),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!((c.bos_token_id, c.eos_token_id.len()), (None, 0));
}

#[test]
fn inconsistent_gpt2_values() {
    assert_invalid_field(r#"{"model_type": "gpt2", "n_embd": 100}"#, "n_head");
    assert_invalid_field(r#"{"model_type": "gpt2", "n_layer": 0}"#, "n_layer");
    assert_invalid_field(r#"{"model_type": "gpt2", "n_inner": 0}"#, "n_inner");
    assert_invalid_field(r#"{"model_type": "gpt2", "vocab_size": 50000}"#, "bos_token_id");
    assert_invalid_field(
        r#"{"model_type": "gpt2", "layer_norm_epsilon": null}"#,
        "layer_norm_epsilon",
    );
}

#[test]
fn inconsistent_marian_values() {
    let base = r#""model_type": "marian", "vocab_size": 100, "pad_token_id": 99, "decoder_start_token_id": 99"#;
    let with = |extra: &str| format!("{{{base}, {extra}}}");
    assert_invalid_field(&with(r#""d_model": 1000"#), "encoder_attention_heads");
    assert_invalid_field(&with(r#""decoder_attention_heads": 7"#), "decoder_attention_heads");
    assert_invalid_field(&with(r#""encoder_layers": 0"#), "encoder_layers");
    assert_invalid_field(&with(r#""decoder_vocab_size": 90"#), "decoder_vocab_size");
    assert_invalid_field(&with(r#""pad_token_id": null"#), "pad_token_id");
    assert_invalid_field(&with(r#""eos_token_id": [1, 2]"#), "eos_token_id");
    assert_invalid_field(&with(r#""forced_eos_token_id": 100"#), "forced_eos_token_id");
    assert_invalid_field(&with(r#""bad_words_ids": [[5, 100]]"#), "bad_words_ids");
    assert_invalid_field(&with(r#""bad_words_ids": [5]"#), "bad_words_ids[0]");
    assert_invalid_field(
        r#"{"model_type": "marian"}"#.replace('}', r#", "vocab_size": 10}"#).as_str(),
        "pad_token_id",
    );
}

#[test]
fn inconsistent_ct2_values() {
    let dir = loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model");
    let good = read_json(&dir.join("config.json"));
    let with = |key: &str, v: Value| {
        let mut j = good.clone();
        j[key] = v;
        j.to_string()
    };
    assert_invalid_field(&with("head_dim", 5.into()), "head_dim");
    assert_invalid_field(&with("num_heads", 0.into()), "num_heads");
    assert_invalid_field(&with("encoder_layers", 0.into()), "encoder_layers");
    assert_invalid_field(&with("eos_token_id", 43.into()), "eos_token_id");
    assert_invalid_field(&with("src_vocab_file", "../../etc/passwd".into()), "src_vocab_file");
    assert_invalid_field(&with("scale_embeddings", "twice".into()), "scale_embeddings");
    assert_invalid_field(
        &with(
            "position_encoding",
            serde_json::json!({"type": "learned", "first_position": 0}),
        ),
        "position_encoding.type",
    );
    let mut j = good.clone();
    j.as_object_mut().unwrap().remove("d_model");
    assert_invalid_field(&j.to_string(), "d_model");
}

#[test]
fn bad_generation_configs() {
    let p = Path::new("/m/generation_config.json");
    for (json, field) in [
        (r#"{"num_beams": 0}"#, "num_beams"),
        (r#"{"top_p": 1.5}"#, "top_p"),
        (r#"{"temperature": -1.0}"#, "temperature"),
        (r#"{"repetition_penalty": 0.0}"#, "repetition_penalty"),
        (r#"{"early_stopping": "sometimes"}"#, "early_stopping"),
        (r#"{"eos_token_id": "x"}"#, "eos_token_id"),
        (r#"{"max_new_tokens": -5}"#, "max_new_tokens"),
    ] {
        match GenerationConfig::from_json(p, json) {
            Err(Error::InvalidConfig { field: f, path, .. }) if f == field && path == p => {}
            other => panic!("{json}: expected InvalidConfig on {field}, got {other:?}"),
        }
    }
    let e = GenerationConfig::from_json(p, "[]").unwrap_err();
    assert!(matches!(e, Error::ConfigJson { .. }), "{e}");
    let g = GenerationConfig::from_json(p, r#"{"early_stopping": true, "eos_token_id": 7}"#).unwrap();
    assert_eq!(g.early_stopping, Some(EarlyStopping::WhenNumBeamsDone));
    assert_eq!(g.eos_token_id, Some(vec![7]));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn real_configs() -> Vec<String> {
        [
            "stories260k",
            "opus-mt-tc-big-en-pt-tokenizer",
            "aren-transliteration-ct2",
        ]
        .iter()
        .map(|m| {
            let dir = loaders::paths::shared_model(m).expect("shared model");
            std::fs::read_to_string(dir.join("config.json")).unwrap()
        })
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Byte edits and truncations of real configs give a config or an error, never a panic.
        #[test]
        fn config_mutations_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), prop::sample::select(b"0123456789-.e,:{}[]\" tfnul".to_vec())), 0..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = real_configs()[which].clone().into_bytes();
            let n = bytes.len();
            for (i, c) in edits {
                bytes[i % n] = c;
            }
            bytes.truncate(n - cut % (n / 4).max(1));
            let text = String::from_utf8_lossy(&bytes);
            let _ = ModelConfig::from_json(Path::new("c.json"), &text);
            let _ = GenerationConfig::from_json(Path::new("g.json"), &text);
        }

        /// Any sizes (huge, zero) for the Llama fields give a config or an error, never a panic.
        #[test]
        fn llama_sizes_never_panic(
            sizes in proptest::collection::vec(prop_oneof![Just(0u64), 1u64..100, any::<u64>()], 6),
        ) {
            let json = format!(
                r#"{{"model_type": "llama", "hidden_size": {}, "num_attention_heads": {}, "num_key_value_heads": {},
                    "head_dim": {}, "vocab_size": {}, "intermediate_size": {}}}"#,
                sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5]
            );
            if let Ok(ModelConfig::Llama(c)) = ModelConfig::from_json(Path::new("c.json"), &json) {
                prop_assert_eq!(c.num_attention_heads % c.num_key_value_heads, 0);
                prop_assert!(c.n_groups() >= 1);
            }
        }
    }
}

/// The tiny models saved by transformers in tools/fixtures (h/fixtures): each config parses, and the
/// shapes it implies are the shapes of its weights.
#[test]
fn fixture_models_configs_fit_their_weights() {
    for name in [
        "llama-tiny-gqa",
        "llama-tiny-tied",
        "gpt2-tiny",
        "marian-tiny",
        "marian-base-shape",
    ] {
        let dir = loaders::paths::fixture(name);
        let cfg = ModelConfig::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let shapes: Vec<(String, Vec<usize>)> = match &cfg {
            ModelConfig::Llama(c) => llama_tensor_shapes(c),
            ModelConfig::Gpt2(c) => {
                let d = c.n_embd;
                let mut v = vec![
                    ("transformer.wte.weight".to_string(), vec![c.vocab_size, d]),
                    ("transformer.wpe.weight".to_string(), vec![c.n_positions, d]),
                    ("transformer.ln_f.weight".to_string(), vec![d]),
                ];
                for l in 0..c.n_layer {
                    let p = format!("transformer.h.{l}");
                    v.extend([
                        (format!("{p}.attn.c_attn.weight"), vec![d, 3 * d]),
                        (format!("{p}.attn.c_proj.weight"), vec![d, d]),
                        (format!("{p}.mlp.c_fc.weight"), vec![d, c.inner_dim()]),
                        (format!("{p}.mlp.c_proj.weight"), vec![c.inner_dim(), d]),
                    ]);
                }
                v
            }
            ModelConfig::Marian(c) => {
                let d = c.d_model;
                let mut v = vec![
                    ("model.shared.weight".to_string(), vec![c.vocab_size, d]),
                    ("final_logits_bias".to_string(), vec![1, c.decoder_vocab_size]),
                ];
                for l in 0..c.encoder_layers {
                    let p = format!("model.encoder.layers.{l}");
                    v.extend([
                        (format!("{p}.self_attn.q_proj.weight"), vec![d, d]),
                        (format!("{p}.fc1.weight"), vec![c.encoder_ffn_dim, d]),
                    ]);
                }
                for l in 0..c.decoder_layers {
                    let p = format!("model.decoder.layers.{l}");
                    v.extend([
                        (format!("{p}.encoder_attn.k_proj.weight"), vec![d, d]),
                        (format!("{p}.fc2.weight"), vec![d, c.decoder_ffn_dim]),
                    ]);
                }
                v
            }
            ModelConfig::Ct2Transformer(_) => panic!("{name}: unexpected ct2 config"),
        };
        if !dir.join("model.safetensors").exists() {
            continue; // marian-base-shape ships its config and references only
        }
        let st = SafeTensors::open_dir(&dir).unwrap();
        for (t, shape) in shapes {
            st.get_shaped(&t, &shape).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
