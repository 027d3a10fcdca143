//! The real model: ../shared/models/smollm2-135m-instruct-q4_1 (GGUF v3, Q4_1 + Q8_0 + F32, gpt2 tokenizer).
//!
//! References (tools/scripts/gguf_refs.py model):
//! - smollm2_dequant.json: every tensor dequantised by the `gguf` Python package (checksum + samples);
//! - smollm2_hf_tensors.json: every tensor of transformers' own GGUF load in f32 (q/k permutation undone),
//!   and its config;
//! - smollm2_token_ids.json: ids of transformers' tokenizer built from the GGUF on corpus.json, and its decodes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use loaders::gguf::{import_to_hf_dir, GgufFile, ImportOptions};
use loaders::paths::{fixture, shared_model};
use loaders::Dtype;
use serde_json::Value;

fn gguf_path() -> PathBuf {
    shared_model("smollm2-135m-instruct-q4_1")
        .expect("shared model")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn load_json(name: &str) -> Value {
    let path = fixture("gguf").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixtures' checksum: sum_i bits(x_i) * ((i * 0x9E3779B97F4A7C15) | 1) mod 2^64 (see gguf_refs.py).
fn checksum(values: impl Iterator<Item = f32>) -> String {
    let mut total = 0u64;
    for (i, x) in values.enumerate() {
        let w = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        total = total.wrapping_add(u64::from(x.to_bits()).wrapping_mul(w));
    }
    format!("{total:016x}")
}

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// The sampled values of a fixture entry must be bit-identical to ours.
fn check_samples(name: &str, want: &Value, got: &[f32]) {
    let idx = want["index"].as_array().unwrap();
    let val = want["value"].as_array().unwrap();
    for (i, v) in idx.iter().zip(val) {
        let i = i.as_u64().unwrap() as usize;
        assert_eq!(got[i], v.as_f64().unwrap() as f32, "{name}[{i}]");
    }
}

#[test]
fn dequantize_every_tensor_matches_gguf_package() {
    let f = GgufFile::open(&gguf_path()).expect("open gguf");
    let refs = load_json("smollm2_dequant.json");
    let refs = refs["tensors"].as_object().unwrap();
    assert_eq!(f.tensor_infos().len(), refs.len());
    assert_eq!(refs.len(), 272);
    let mut types = BTreeSet::new();
    for info in f.tensor_infos() {
        let want = &refs[&info.name];
        assert_eq!(info.ggml_type.name(), want["type"].as_str().unwrap(), "{}", info.name);
        assert_eq!(info.shape(), shape_of(&want["shape"]), "{}", info.name);
        let got = f.dequantize_info(info).expect("dequantize");
        check_samples(&info.name, want, &got);
        assert_eq!(
            checksum(got.iter().copied()),
            want["checksum"].as_str().unwrap(),
            "{} not bit-exact",
            info.name
        );
        types.insert(info.ggml_type.name());
    }
    assert_eq!(types, BTreeSet::from(["F32", "Q4_1", "Q8_0"]));
}

/// Every tensor of `model.safetensors` in `dir`, widened to f32, against transformers' load.
fn check_tensors(dir: &Path, dtype: Dtype, refs: &Value) {
    let file = fs::File::open(dir.join("model.safetensors")).unwrap();
    // SAFETY: a read-only map of a file this test just wrote and nothing else touches.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let st = safetensors::SafeTensors::deserialize(&mmap).expect("parse model.safetensors");
    let refs = refs["tensors"].as_object().unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut want_names: Vec<String> = refs.keys().cloned().collect();
    want_names.sort();
    assert_eq!(names, want_names, "tensor names");
    for (name, want) in refs {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.shape(), shape_of(&want["shape"]).as_slice(), "{name}");
        let b = t.data();
        let (got, key): (Vec<f32>, &str) = match dtype {
            Dtype::BF16 => {
                assert_eq!(t.dtype(), safetensors::Dtype::BF16, "{name}");
                let v = b
                    .chunks_exact(2)
                    .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16));
                (v.collect(), "checksum_bf16")
            }
            _ => {
                assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
                let v = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                let v: Vec<f32> = v.collect();
                check_samples(name, want, &v);
                (v, "checksum")
            }
        };
        assert_eq!(
            checksum(got.into_iter()),
            want[key].as_str().unwrap(),
            "{name} ({dtype}) differs from transformers"
        );
    }
}

fn check_config(dir: &Path, dtype: &str, refs: &Value) {
    let config: Value = serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let want = refs["config"].as_object().unwrap();
    for (key, w) in want {
        let got = &config[key];
        if let (Some(g), Some(w)) = (got.as_f64(), w.as_f64()) {
            assert!(g == w, "config.json {key}: {g} vs transformers {w}");
        } else {
            assert_eq!(got, w, "config.json {key}");
        }
    }
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["torch_dtype"], dtype);
    let gen: Value = serde_json::from_str(&fs::read_to_string(dir.join("generation_config.json")).unwrap()).unwrap();
    assert_eq!(gen["bos_token_id"], want["bos_token_id"]);
    assert_eq!(gen["eos_token_id"], want["eos_token_id"]);
}

fn check_tokenizer(dir: &Path, gguf: &GgufFile) {
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer.json loads");
    let corpus = load_json("corpus.json");
    let corpus = corpus.as_array().unwrap();
    let refs = load_json("smollm2_token_ids.json");
    let ids = refs["ids"].as_array().unwrap();
    let decoded = refs["decoded"].as_array().unwrap();
    assert!(corpus.len() >= 1000 && corpus.len() == ids.len());
    let (mut bad_ids, mut bad_text) = (0, 0);
    for ((text, want), want_text) in corpus.iter().zip(ids).zip(decoded) {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true).expect("encode").get_ids().to_vec();
        if got != want {
            bad_ids += 1;
            eprintln!("ids differ for {text:?}:\n  ours {got:?}\n  HF   {want:?}");
        }
        let back = tok.decode(&want, false).expect("decode");
        if back != want_text.as_str().unwrap() {
            bad_text += 1;
            eprintln!("decode differs for {want:?}: ours {back:?} HF {want_text:?}");
        }
    }
    assert_eq!((bad_ids, bad_text), (0, 0), "of {} texts", corpus.len());

    let config: Value = serde_json::from_str(&fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(
        config["chat_template"].as_str(),
        Some(gguf.get_str("tokenizer.chat_template").unwrap())
    );
    assert_eq!(config["bos_token"], "<|im_start|>");
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert_eq!(config["add_bos_token"], false);
}

#[test]
fn import_f32_matches_transformers() {
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    import_to_hf_dir(&gguf_path(), out.path(), &ImportOptions { dtype: Dtype::F32 }).expect("import");
    eprintln!("import (f32) took {:.2?}", start.elapsed());
    let refs = load_json("smollm2_hf_tensors.json");
    check_tensors(out.path(), Dtype::F32, &refs);
    check_config(out.path(), "float32", &refs);
    check_tokenizer(out.path(), &GgufFile::open(&gguf_path()).unwrap());
}

#[test]
fn import_bf16_matches_transformers_rounded() {
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    import_to_hf_dir(&gguf_path(), out.path(), &ImportOptions { dtype: Dtype::BF16 }).expect("import");
    eprintln!("import (bf16) took {:.2?}", start.elapsed());
    let refs = load_json("smollm2_hf_tensors.json");
    check_tensors(out.path(), Dtype::BF16, &refs);
    check_config(out.path(), "bfloat16", &refs);
}

#[test]
fn import_rejects_other_dtypes() {
    let out = tempfile::tempdir().unwrap();
    let e = import_to_hf_dir(&gguf_path(), out.path(), &ImportOptions { dtype: Dtype::F16 }).unwrap_err();
    assert!(matches!(e, loaders::Error::GgufImport { .. }), "{e:?}");
    assert!(!out.path().join("model.safetensors").exists());
}
