//! The deterministic weights of the fixtures too big to commit (`marian-base-shape`, the `families/` models):
//! tools/scripts/hashinit.py's formula (also in tools/fixtures/README.md), reproduced bit-exactly, and a model
//! directory written from them.
#![allow(dead_code)]

use std::path::Path;

/// FNV-1a 64 of some bytes (a tensor name here; a whole fixture file in engine/tests/families.rs).
pub fn fnv1a64(bytes: impl AsRef<[u8]>) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes.as_ref() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// `offset + scale * r`, `r` in [-1, 1) from the hash of (name, flat index).
pub fn hash_tensor(name: &str, n: usize, scale: f32, offset: f32) -> Vec<f32> {
    let h0 = fnv1a64(name);
    (0..n as u64)
        .map(|i| {
            let u = (splitmix64(h0 ^ i) as u32) >> 8;
            let r = (u as i32 - 8388608) as f32 * (1.0 / 8388608.0);
            offset + scale * r
        })
        .collect()
}

/// The hash-initialised weights a reference.json lists under `hash_init` as `(name, shape, values)`, checked
/// against the first values and f64 sums that Python recorded there.
pub fn hash_init_tensors(json: &serde_json::Value) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for t in json["hash_init"].as_array().expect("hash_init") {
        let name = t["name"].as_str().unwrap();
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n = shape.iter().product();
        let v = hash_tensor(
            name,
            n,
            t["scale"].as_f64().unwrap() as f32,
            t["offset"].as_f64().unwrap() as f32,
        );
        let first: Vec<f32> = t["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(&v[..first.len()], &first[..], "first values of {name}");
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let want = t["sum_f64"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "sum of {name}: {sum} vs {want}"
        );
        out.push((name.to_string(), shape, v));
    }
    out
}

/// A model directory in `tmp`: `fixture_dir`'s config.json and generation_config.json plus a
/// model.safetensors holding `tensors` (f32).
pub fn write_model_dir(tmp: &Path, fixture_dir: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) {
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(fixture_dir.join(f), tmp.join(f)).expect("copy config");
    }
    let tensors: Vec<(String, loaders::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, v)| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, loaders::Dtype::F32, shape, bytes)
        })
        .collect();
    loaders::safetensors::write(&tmp.join("model.safetensors"), &tensors, None).expect("write safetensors");
}

/// A fixture's model directory (`fixture_dir`'s reference.json `hash_init` rebuilt, its config files and, when
/// present, its tokenizer.json) in a directory of this call's own under the target's tmp dir, and the
/// reference.json. `tag` names the directory (the test and fixture).
pub fn fixture_model_dir(fixture_dir: &Path, tag: &str) -> (std::path::PathBuf, serde_json::Value) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let path = fixture_dir.join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_model_dir(&dir, fixture_dir, hash_init_tensors(&meta));
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        if fixture_dir.join(f).exists() {
            std::fs::copy(fixture_dir.join(f), dir.join(f)).expect("copy tokenizer");
        }
    }
    if let Some(words) = meta.get("tokenizer_words") {
        fill_word_tokenizer(&dir.join("tokenizer.json"), words);
    }
    (dir, meta)
}

/// Give every id of the vocabulary that a word-level tokenizer.json does not name the word `prefix + id`
/// (`tokenizer_words` of a reference.json: `{prefix, vocab_size}`; make_seq2seq_fixtures.py `full_tokenizer`
/// does the same), so a published vocabulary of 250k ids is not committed word by word.
pub fn fill_word_tokenizer(path: &Path, words: &serde_json::Value) {
    let prefix = words["prefix"].as_str().expect("tokenizer_words.prefix");
    let size = words["vocab_size"].as_u64().expect("tokenizer_words.vocab_size") as u32;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut t: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = t["model"]["vocab"].as_object_mut().expect("a word-level vocab");
    let named: std::collections::HashSet<u32> = vocab.values().map(|v| v.as_u64().unwrap() as u32).collect();
    for id in (0..size).filter(|id| !named.contains(id)) {
        vocab.insert(format!("{prefix}{id}"), id.into());
    }
    std::fs::write(path, serde_json::to_string(&t).unwrap()).unwrap();
}
