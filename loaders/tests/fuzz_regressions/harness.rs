//! What each fuzz target does with one input, shared by the cargo-fuzz targets (`loaders/fuzz`) and the
//! regression test (`loaders/tests/fuzz_regressions.rs`), so a saved crash replays exactly.
//!
//! Every public entry point is called on the input and each step's result is recorded; on success the
//! result is checked against the loader's own invariants (`assert!`: a failure is a bug the fuzzer reports).
//! A panic anywhere is a finding: the library must return an `Err` for any input.

#![allow(dead_code)] // each includer uses a subset

use std::path::{Path, PathBuf};

use loaders::config::{GenerationConfig, ModelConfig};
use loaders::gguf::{self, GgufFile, ImportOptions, LlamaParams};
use loaders::safetensors::SafeTensors;
use loaders::tokenizer::spm_proto::SpmModelProto;
use loaders::tokenizer::{load_tokenizer, HfTokenizer, Llama2cTokenizer, SentencePiece, Tokenizer, VocabFileTokenizer};
use loaders::{Dtype, Error, Result};

/// The result of every step run on one input, in order: (step name, Ok or the error).
#[derive(Debug, Default)]
pub struct Steps(pub Vec<(String, Result<()>)>);

impl Steps {
    /// Record the result of `step`; the value if it succeeded.
    fn run<T>(&mut self, step: impl Into<String>, r: Result<T>) -> Option<T> {
        let (r, value) = match r {
            Ok(v) => (Ok(()), Some(v)),
            Err(e) => (Err(e), None),
        };
        self.0.push((step.into(), r));
        value
    }

    /// The recorded result of `step` (None if the step did not run).
    pub fn get(&self, step: &str) -> Option<&Result<()>> {
        self.0.iter().find(|(s, _)| s == step).map(|(_, r)| r)
    }

    /// The error of `step` (None when it succeeded or did not run).
    pub fn err(&self, step: &str) -> Option<&Error> {
        self.get(step)?.as_ref().err()
    }
}

/// A scratch directory for the files a target writes: `$QKV_FUZZ_TMP`, else the system temp dir; one per
/// process so that parallel fuzzing jobs do not share files.
pub fn scratch_dir(target: &str) -> PathBuf {
    let base = std::env::var_os("QKV_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("qkv-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("scratch dir {}: {e}", dir.display()));
    dir
}

/// The fixture whose shards the index target fuzzes an index against.
pub const SHARDED_FIXTURE: &str = "loaders-tiny-llama-sharded";

/// Copy the shards of [`SHARDED_FIXTURE`] (not its index) into `dir`.
pub fn copy_sharded_fixture(dir: &Path) {
    let src = loaders::paths::fixture(SHARDED_FIXTURE);
    let entries = std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    for entry in entries {
        let path = entry.expect("a fixture dir entry").path();
        let name = path.file_name().expect("a file name").to_owned();
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::fs::copy(&path, dir.join(&name)).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        }
    }
}

/// Check a tensor handed out by `SafeTensors::get` against the [`loaders::Tensor`] invariants.
fn check_tensor(st: &SafeTensors, name: &str, t: &loaders::Tensor) {
    let (dtype_name, shape) = st.info(name).expect("a listed tensor has info");
    assert_eq!(t.shape(), shape, "{name}: shape of get vs info");
    assert_eq!(t.dtype().to_string(), dtype_name, "{name}: dtype of get vs info");
    assert_eq!(t.bytes().len(), t.numel() * t.dtype().size(), "{name}: byte length");
    assert_eq!(t.to_f32_vec().len(), t.numel(), "{name}: values");
    assert_eq!(t.as_f32().is_some(), t.dtype() == Dtype::F32, "{name}: as_f32");
}

/// `SafeTensors::open` on a file, then every tensor: `get` (twice: the misaligned copy is cached),
/// `get_shaped` with its own and a wrong shape, its values; and a missing name.
pub fn safetensors(path: &Path) -> Steps {
    let mut steps = Steps::default();
    let Some(st) = steps.run("open", SafeTensors::open(path)) else {
        return steps;
    };
    assert_eq!(st.names().len(), st.len());
    let _ = st.metadata();
    for name in st.names() {
        let Some(t) = steps.run(format!("get {name}"), st.get(name)) else {
            continue;
        };
        check_tensor(&st, name, &t);
        let again = st.get(name).expect("a second get of a tensor that loaded");
        assert_eq!(again.bytes(), t.bytes(), "{name}: second get");
        let shaped = st.get_shaped(name, t.shape());
        assert!(shaped.is_ok(), "{name}: get_shaped with its own shape: {shaped:?}");
        let mut wrong = t.shape().to_vec();
        wrong.push(2);
        assert!(matches!(st.get_shaped(name, &wrong), Err(Error::TensorShape { .. })));
    }
    let missing = format!("{}.missing", st.names().first().copied().unwrap_or(""));
    if !st.contains(&missing) {
        assert!(matches!(st.get(&missing), Err(Error::MissingTensor { .. })));
    }
    steps
}

/// `SafeTensors::open_index` on `index_path` (the shards beside it), then every tensor as above.
pub fn safetensors_index(index_path: &Path) -> Steps {
    let mut steps = Steps::default();
    let Some(st) = steps.run("open_index", SafeTensors::open_index(index_path)) else {
        return steps;
    };
    for name in st.names() {
        if let Some(t) = steps.run(format!("get {name}"), st.get(name)) {
            check_tensor(&st, name, &t);
        }
    }
    steps
}

/// `ModelConfig::from_json` and `GenerationConfig::from_json` on the text; a config that parses must
/// serialize (what the fixture tests compare against transformers).
pub fn config(text: &str) -> Steps {
    let mut steps = Steps::default();
    if let Some(m) = steps.run("model", ModelConfig::from_json(Path::new("fuzz/config.json"), text)) {
        let _ = m.model_type();
        serde_json::to_value(&m).expect("a parsed model config serializes");
    }
    let generation = GenerationConfig::from_json(Path::new("fuzz/generation_config.json"), text);
    if let Some(g) = steps.run("generation", generation) {
        serde_json::to_value(&g).expect("a parsed generation config serializes");
    }
    steps
}

/// `GgufFile::open`, then every tensor dequantised, the llama parameters read, the whole import to a Hugging Face
/// directory (`out_dir`, replaced), whose result must load with the loaders, and the tokenizer built.
pub fn gguf(path: &Path, out_dir: &Path) -> Steps {
    let mut steps = Steps::default();
    let Some(f) = steps.run("open", GgufFile::open(path)) else {
        return steps;
    };
    for info in f.tensor_infos() {
        assert_eq!(f.tensor_bytes(info).len() as u64, info.n_bytes, "{}: bytes", info.name);
        assert_eq!(f.tensor_info(&info.name), Some(info));
        assert_eq!(info.shape().iter().product::<usize>(), info.numel());
        if let Some(v) = steps.run(format!("dequantize {}", info.name), f.dequantize_info(info)) {
            assert_eq!(v.len(), info.numel(), "{}: dequantized length", info.name);
        }
    }
    for key in f.metadata().keys() {
        let _ = (f.get_u64(key), f.get_f64(key), f.get_str(key), f.get_bool(key));
        let _ = (
            f.get_usize(key),
            f.get_str_array(key),
            f.get_int_array(key),
            f.get_f32_array(key),
        );
    }
    let arch = f.get_str("general.architecture").unwrap_or("llama");
    steps.run("llama_params", LlamaParams::read(&f, arch));

    // The import builds the tokenizer (slow: its regexes compile); build it on its own only if the import failed.
    let _ = std::fs::remove_dir_all(out_dir);
    let import = gguf::import_to_hf_dir(path, out_dir, &ImportOptions::default());
    if steps.run("import", import).is_some() {
        // What the importer wrote must load: it checked the same things the loaders check.
        let cfg = ModelConfig::from_dir(out_dir);
        assert!(cfg.is_ok(), "imported config.json does not load: {cfg:?}");
        let st = SafeTensors::open_dir(out_dir);
        assert!(st.is_ok(), "imported model.safetensors does not load: {st:?}");
        let text = std::fs::read_to_string(out_dir.join("tokenizer.json")).expect("imported tokenizer.json");
        let tk = text.parse::<tokenizers::Tokenizer>();
        assert!(tk.is_ok(), "imported tokenizer.json does not load: {tk:?}");
    } else {
        steps.run("tokenizer", gguf::tokenizer::build(&f));
    }
    steps
}

// --- Tokenizers ----------------------------------------------------------------------------------------------

/// Texts every tokenizer built from a fuzzed file encodes: plain, whitespace runs, non-ASCII, special-token
/// spellings, SentencePiece and byte-fallback spellings.
pub const TEXTS: &[&str] = &[
    "",
    " ",
    "Hello, world! It's 42.",
    "  two  spaces\n\ttab  ",
    "ünïcödé 日本語 🙂 \u{0301}e",
    "<unk></s><s><pad><|endoftext|>",
    "a\u{0}b\u{7f}",
    "\u{3000}\u{a0}x\u{200b}",
    "▁▁ ▁x",
    "<0x41><0xFF>",
];

/// How a tokenizer's encode ids relate to its decode side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSpace {
    /// Encode ids are decode ids (one vocabulary): they must be below `vocab_size` and decode.
    Shared,
    /// Source and target vocabularies differ (CTranslate2 vocabulary files): encode ids are not decodable.
    SourceTarget,
}

/// Encode every text (ids in range for a shared vocabulary, then decoded back), decode `ids` (Ok when every id
/// names a token, else [`Error::TokenIdUnassigned`] or [`Error::TokenIdOutOfRange`]), and look tokens and ids up.
pub fn exercise(steps: &mut Steps, what: &str, tok: &dyn Tokenizer, texts: &[&str], ids: &[u32], space: IdSpace) {
    let n = tok.vocab_size();
    for text in texts {
        let Some(encoded) = steps.run(format!("{what}: encode {text:?}"), tok.encode(text)) else {
            continue;
        };
        if space == IdSpace::Shared {
            assert!(
                encoded.iter().all(|&i| (i as usize) < n),
                "{what}: {text:?} -> {encoded:?}, vocab {n}"
            );
            for skip in [false, true] {
                let r = tok.decode(&encoded, skip);
                assert!(r.is_ok(), "{what}: decode(encode({text:?})) = {r:?}");
            }
        }
        let _ = tok.token_to_id(text);
    }
    for skip in [false, true] {
        let r = tok.decode(ids, skip);
        // The first id that names no token decides: none decodes; inside 0..n it is a gap in the file's ids,
        // beyond it out of range. Either error names that id.
        match ids.iter().find(|&&i| (i as usize) >= n || tok.id_to_token(i).is_none()) {
            None => assert!(r.is_ok(), "{what}: decode({ids:?}) with vocab {n}: {r:?}"),
            Some(&bad) if (bad as usize) < n => assert!(
                matches!(r, Err(Error::TokenIdUnassigned { id, .. }) if id == bad),
                "{what}: decode({ids:?}), id {bad} unassigned, vocab {n}: {r:?}"
            ),
            Some(&bad) => assert!(
                matches!(r, Err(Error::TokenIdOutOfRange { id, .. }) if id == bad),
                "{what}: decode({ids:?}), id {bad} out of range, vocab {n}: {r:?}"
            ),
        }
    }
    for &id in ids {
        if let Some(t) = tok.id_to_token(id) {
            let _ = tok.token_to_id(&t);
        }
    }
}

/// Ids to decode: every id of the vocabulary up to 300, and a few beyond it.
fn probe_ids(n: usize) -> Vec<u32> {
    let n = n.min(u32::MAX as usize - 2) as u32;
    (0..n.min(300)).chain([n, n + 1, u32::MAX]).collect()
}

/// The in-range prefix of [`probe_ids`] and the whole list, both exercised.
fn exercise_file_tokenizer(steps: &mut Steps, what: &str, tok: &dyn Tokenizer, space: IdSpace) {
    let ids = probe_ids(tok.vocab_size());
    let in_range = &ids[..ids.len() - 3];
    exercise(steps, what, tok, TEXTS, in_range, space);
    exercise(steps, what, tok, &[], &ids, space);
}

/// `SpmModelProto::parse` + `SentencePiece::from_proto` on the bytes, then normalize / encode / decode TEXTS.
pub fn spm_model(bytes: &[u8]) -> Steps {
    let mut steps = Steps::default();
    let Some(proto) = steps.run("parse", SpmModelProto::parse(Path::new("fuzz.spm"), bytes)) else {
        return steps;
    };
    let Some(spm) = steps.run("from_proto", SentencePiece::from_proto(proto)) else {
        return steps;
    };
    for text in TEXTS {
        steps.run(format!("normalize {text:?}"), spm.normalize(text));
        let Some(pieces) = steps.run(format!("encode {text:?}"), spm.encode_pieces(text)) else {
            continue;
        };
        for p in &pieces {
            let id = spm.piece_to_id(p);
            assert!(
                (id as usize) < spm.len() || spm.is_empty(),
                "piece {p:?} -> id {id} of {}",
                spm.len()
            );
            let _ = spm.id_to_piece(id);
        }
        let _ = spm.decode_pieces(&pieces);
    }
    let _ = (spm.unk_id(), spm.id_to_piece(u32::MAX));
    steps
}

/// `Llama2cTokenizer::parse` on the bytes, then every text and id.
pub fn llama2c_tokenizer(bytes: &[u8]) -> Steps {
    let mut steps = Steps::default();
    if let Some(tok) = steps.run("parse", Llama2cTokenizer::parse(Path::new("fuzz.bin"), bytes)) {
        exercise_file_tokenizer(&mut steps, "llama2c", &tok, IdSpace::Shared);
        for text in TEXTS {
            let ids = tok.encode_with(text, true, true);
            assert!(
                ids.iter().all(|&i| (i as usize) < tok.vocab_size()),
                "{text:?} -> {ids:?}"
            );
        }
    }
    steps
}

/// The byte that separates the source and target vocabularies in a `vocab_file` input (never in UTF-8).
pub const VOCAB_SPLIT: u8 = 0xFF;

/// CTranslate2 vocabulary files: the input split at [`VOCAB_SPLIT`] into `source_vocabulary.txt` and
/// `target_vocabulary.txt` (the same file for both when there is no split) in `dir`, then every text and id.
pub fn vocab_file(bytes: &[u8], dir: &Path) -> Steps {
    let (source, target) = match bytes.iter().position(|&b| b == VOCAB_SPLIT) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, bytes),
    };
    let (source_path, target_path) = (dir.join("source_vocabulary.txt"), dir.join("target_vocabulary.txt"));
    std::fs::write(&source_path, source).expect("write the source vocabulary");
    std::fs::write(&target_path, target).expect("write the target vocabulary");
    let mut steps = Steps::default();
    if let Some(tok) = steps.run("open", VocabFileTokenizer::from_files(&source_path, &target_path)) {
        exercise_file_tokenizer(&mut steps, "vocab files", &tok, IdSpace::SourceTarget);
    }
    steps
}

/// A `tokenizer.json` (the input, written to `dir`) through `HfTokenizer::from_dir`, then every text and id.
pub fn hf_tokenizer_json(bytes: &[u8], dir: &Path) -> Steps {
    std::fs::write(dir.join("tokenizer.json"), bytes).expect("write tokenizer.json");
    let mut steps = Steps::default();
    if let Some(tok) = steps.run("open", HfTokenizer::from_dir(dir)) {
        exercise_file_tokenizer(&mut steps, "tokenizer.json", &tok, IdSpace::Shared);
    }
    steps
}

/// The real tokenizers whose encode/decode the `tokenizer_text` target fuzzes: (name, tokenizer, id space).
pub fn text_tokenizers() -> Vec<(String, Box<dyn Tokenizer>, IdSpace)> {
    let fixtures = loaders::paths::fixture("tokenizers");
    let shared = |name: &str| loaders::paths::shared_model(name).unwrap_or_else(|e| panic!("{e}"));
    [
        (fixtures.join("hf_bpe"), IdSpace::Shared),
        (fixtures.join("hf_unigram"), IdSpace::Shared),
        (shared("opus-mt-tc-big-en-pt-tokenizer"), IdSpace::Shared),
        (shared("stories260k"), IdSpace::Shared),
        (shared("aren-transliteration-ct2"), IdSpace::SourceTarget),
    ]
    .into_iter()
    .map(|(dir, space)| {
        let tok = load_tokenizer(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        (dir.display().to_string(), tok, space)
    })
    .collect()
}

/// Fuzzed text and ids through fixed tokenizers: the input as (lossy) UTF-8 text, and as little-endian u32 ids
/// both raw and folded into each vocabulary (so most decode rather than fail the range check).
pub fn tokenizer_text(tokenizers: &[(String, Box<dyn Tokenizer>, IdSpace)], bytes: &[u8]) -> Steps {
    let text = String::from_utf8_lossy(bytes);
    let raw: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    let mut steps = Steps::default();
    for (name, tok, space) in tokenizers {
        let n = tok.vocab_size().max(1) as u32;
        let folded: Vec<u32> = raw.iter().map(|&i| i % n).collect();
        exercise(&mut steps, name, tok.as_ref(), &[&text], &raw, *space);
        exercise(&mut steps, name, tok.as_ref(), &[], &folded, *space);
    }
    steps
}
