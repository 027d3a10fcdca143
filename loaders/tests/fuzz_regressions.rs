//! Replays of what the fuzzers (loaders/fuzz, tools/scripts/fuzz.sh) found: each crashing input, kept under
//! `fuzz_regressions/<target>/`, must now give a clean `Err` naming the defect, through the same harness the fuzz
//! target runs. Every file of those directories is also replayed, and the harness is checked on valid files
//! (real models and fixtures), so that it is known to reach the code it fuzzes.

#[path = "fuzz_regressions/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use loaders::paths::{fixture, shared_model};
use loaders::Error;

use harness::Steps;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fuzz_regressions")
        .join(target)
}

/// The files of `fuzz_regressions/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = regressions(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.expect("a dir entry").path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    files
}

fn scratch(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("qkv-fuzz-regression-{test}-"))
        .tempdir()
        .expect("a temp dir")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fuzz target (loaders/fuzz/Cargo.toml).
const TARGETS: &[&str] = &[
    "safetensors",
    "safetensors_index",
    "config",
    "gguf",
    "spm_model",
    "llama2c_tokenizer",
    "vocab_file",
    "hf_tokenizer_json",
    "tokenizer_text",
];

/// Run the target's harness on one regression input (a copy, for the targets that write beside it).
fn replay(target: &str, input: &Path, tmp: &Path) -> Steps {
    match target {
        "safetensors" => harness::safetensors(input),
        "safetensors_index" => {
            harness::copy_sharded_fixture(tmp);
            let index = tmp.join("model.safetensors.index.json");
            std::fs::copy(input, &index).expect("copy the input");
            harness::safetensors_index(&index)
        }
        "config" => harness::config(&std::fs::read_to_string(input).expect("a UTF-8 input")),
        "gguf" => harness::gguf(input, &tmp.join("imported")),
        "spm_model" => harness::spm_model(&read(input)),
        "llama2c_tokenizer" => harness::llama2c_tokenizer(&read(input)),
        "vocab_file" => harness::vocab_file(&read(input), tmp),
        "hf_tokenizer_json" => harness::hf_tokenizer_json(&read(input), tmp),
        "tokenizer_text" => harness::tokenizer_text(&harness::text_tokenizers(), &read(input)),
        _ => panic!("unknown target {target}"),
    }
}

/// Replay `fuzz_regressions/<target>/<file>`; the steps and the scratch dir (kept alive for inspection).
fn replay_saved(target: &str, file: &str) -> (Steps, tempfile::TempDir) {
    let tmp = scratch(target);
    let steps = replay(target, &regressions(target).join(file), tmp.path());
    (steps, tmp)
}

/// The error of `step` (which must have run and failed).
fn failed<'a>(steps: &'a Steps, step: &str) -> &'a Error {
    steps
        .err(step)
        .unwrap_or_else(|| panic!("step {step:?} did not fail: {steps:?}"))
}

/// Every saved input, including any not yet named by a test below, replays through its target without a panic
/// (the harness asserts the loaders' invariants on whatever succeeds).
#[test]
fn every_saved_input_replays_without_panic() {
    let mut n_inputs = 0;
    for target in TARGETS {
        for input in inputs(target) {
            let tmp = scratch(target);
            let steps = replay(target, &input, tmp.path());
            assert!(!steps.0.is_empty(), "{}: nothing ran", input.display());
            n_inputs += 1;
        }
    }
    assert!(
        n_inputs >= 3,
        "only {n_inputs} saved inputs found under {}",
        regressions("").display()
    );
}

// --- One test per crash found, asserting the clean error it now gives. ---------------------------------------------

/// hf_tokenizer_json target: a fuzzed SmolLM2-style tokenizer.json whose BPE vocabulary had an id changed, leaving
/// id 292 of 0..400 without a token. `decode` said "out of range" for an id inside the range (and the harness, which
/// expects in-range ids to decode, failed). Now a distinct error names the gap; ids beyond the range keep theirs.
/// Minimised by hand to `vocab_gap.json`: ids 0, 1, 2 and 4, no 3.
#[test]
fn hf_tokenizer_json_vocab_gap() {
    let tmp = scratch("hf_tokenizer_json");
    let steps = replay(
        "hf_tokenizer_json",
        &regressions("hf_tokenizer_json").join("vocab_gap.json"),
        tmp.path(),
    );
    assert!(
        steps.err("open").is_none(),
        "HF loads a vocabulary with gaps, and so do we: {steps:?}"
    );
    let tok = loaders::tokenizer::HfTokenizer::from_dir(tmp.path()).expect("opens");
    use loaders::tokenizer::Tokenizer;
    assert_eq!(tok.vocab_size(), 5);
    assert_eq!(tok.encode("ab").expect("encodes"), vec![4]);
    assert_eq!(tok.decode(&[1, 2, 4], false).expect("decodes"), "abab");
    match tok.decode(&[1, 3, 2], false) {
        Err(Error::TokenIdUnassigned {
            id: 3, vocab_size: 5, ..
        }) => {}
        other => panic!("expected TokenIdUnassigned for id 3, got {other:?}"),
    }
    match tok.decode(&[5], false) {
        Err(Error::TokenIdOutOfRange {
            id: 5, vocab_size: 5, ..
        }) => {}
        other => panic!("expected TokenIdOutOfRange for id 5, got {other:?}"),
    }
    let msg = tok.decode(&[3], true).unwrap_err().to_string();
    assert!(msg.contains("token id 3 names no token"), "{msg}");
}

/// hf_tokenizer_json target: a byte of a fuzzed tokenizer.json's "decoder" turned into 0xFF (invalid UTF-8):
/// the `tokenizers` crate's decoder deserializer `expect`s its helper to parse, and panicked. The file's JSON is
/// now checked before that crate sees it.
#[test]
fn hf_tokenizer_json_decoder_not_json() {
    let (steps, _tmp) = replay_saved("hf_tokenizer_json", "decoder_invalid_utf8.json");
    let e = failed(&steps, "open");
    assert!(
        matches!(e, Error::TokenizerFile { message, .. } if message.contains("not JSON")),
        "{e:?}"
    );
}

/// hf_tokenizer_json target: the SmolLM2-style fixture with `"<|im_start|>": 1` in the BPE vocabulary changed to
/// 2 (so the added token <|im_start|> takes the model's id 2, and id 1 names nothing) while the post-processor
/// still inserts id 1: `encode("")` gave `[1]`, which decode refused. Refused when the file opens now.
#[test]
fn hf_tokenizer_json_post_processor_id_without_token() {
    let (steps, _tmp) = replay_saved("hf_tokenizer_json", "post_processor_id_without_token.json");
    let e = failed(&steps, "open");
    assert!(
        matches!(e, Error::TokenizerFile { message, .. }
            if message.contains("post_processor: inserts token id 1, which names no token")),
        "{e:?}"
    );
}

/// hf_tokenizer_json target: the single template names special token "<|im^start|>" (one byte changed), which
/// `special_tokens` does not define: the `tokenizers` crate deserializes that without its builder's check, then
/// panics (`no entry found for key`) on the first encode. Refused when the file opens now; so are `$B` in the
/// single template and ids/tokens lists of different lengths (same check).
#[test]
fn hf_tokenizer_json_template_names_undefined_special() {
    let (steps, _tmp) = replay_saved("hf_tokenizer_json", "template_names_undefined_special.json");
    let e = failed(&steps, "open");
    assert!(
        matches!(e, Error::TokenizerFile { message, .. }
            if message.contains("the single template names special token \"<|im^start|>\", not defined")),
        "{e:?}"
    );
}

/// hf_tokenizer_json target: as above, with `"type": "TemplateProcesLsing"` and the special token's key changed:
/// the `tokenizers` crate falls back to the object's shape for an unknown type, so the check runs on the
/// post-processor as parsed (written back canonically), not on the file's type tags.
#[test]
fn hf_tokenizer_json_template_unknown_type_tag() {
    let (steps, _tmp) = replay_saved("hf_tokenizer_json", "template_unknown_type_tag.json");
    let e = failed(&steps, "open");
    assert!(
        matches!(e, Error::TokenizerFile { message, .. }
            if message.contains("the single template names special token \"<|im_start|>\", not defined")),
        "{e:?}"
    );
}

/// gguf target: a slim llama with `rope.freq_base = -199.3` imported "successfully" to a config.json that
/// `ModelConfig` refuses (the harness checks that an import loads). Now refused when read, and nothing is written.
#[test]
fn gguf_import_negative_rope_theta() {
    let (steps, tmp) = replay_saved("gguf", "import_negative_rope_theta.gguf");
    for step in ["llama_params", "import"] {
        let e = failed(&steps, step);
        assert!(
            matches!(e, Error::GgufMetadata { key, found, .. } if key == "llama.rope.freq_base" && found == "-199.3125"),
            "{step}: {e:?}"
        );
    }
    assert!(!tmp.path().join("imported").exists(), "a refused import writes nothing");
}

/// gguf target (out of memory): `llama.block_count = 268435457` made the import list 9 tensors per block before
/// looking any up (2.4 billion entries). Now bounded by the tensors present (12 here, at least 6 per block in any
/// architecture the importer reads).
#[test]
fn gguf_import_huge_block_count() {
    let (steps, tmp) = replay_saved("gguf", "import_huge_block_count.gguf");
    for step in ["llama_params", "import"] {
        let e = failed(&steps, step);
        assert!(
            matches!(e, Error::GgufMetadata { key, expected, found, .. }
                if key == "llama.block_count" && found == "268435457" && expected.starts_with("at most 2 ")),
            "{step}: {e:?}"
        );
    }
    assert!(!tmp.path().join("imported").exists(), "a refused import writes nothing");
}

/// Crafted from reading the code (tools/scripts/fuzz_seeds.py --crafted), not found by the fuzzer:
/// `head_count = 2^33` with `key_length = 2^32` overflowed `n_heads * head_dim` in the import's shape plan.
#[test]
fn gguf_import_heads_overflow() {
    let (steps, _tmp) = replay_saved("gguf", "crafted_heads_overflow.gguf");
    for step in ["llama_params", "import"] {
        let e = failed(&steps, step);
        assert!(
            matches!(e, Error::GgufMetadata { key, found, .. }
                if key == "llama.attention.head_count" && found == "8589934592"),
            "{step}: {e:?}"
        );
    }
}

// --- The harness reaches the code: valid inputs pass every step. ---------------------------------------------

fn assert_all_ok(what: &str, steps: &Steps) {
    for (step, r) in &steps.0 {
        assert!(r.is_ok(), "{what}: step {step}: {r:?}");
    }
    assert!(!steps.0.is_empty(), "{what}: no step ran");
}

#[test]
fn harness_passes_real_safetensors() {
    for dir in ["stories260k", "aren-transliteration-ct2"] {
        let path = shared_model(dir).expect("shared model").join("model.safetensors");
        let steps = harness::safetensors(&path);
        assert_all_ok(dir, &steps);
        assert!(steps.0.len() > 10, "{dir}: {} steps", steps.0.len());
    }
}

#[test]
fn harness_passes_sharded_fixture() {
    let index = fixture(harness::SHARDED_FIXTURE).join("model.safetensors.index.json");
    let tmp = scratch("index");
    harness::copy_sharded_fixture(tmp.path());
    let copy = tmp.path().join("model.safetensors.index.json");
    std::fs::copy(&index, &copy).expect("copy the index");
    assert_all_ok("sharded fixture", &harness::safetensors_index(&copy));
}

#[test]
fn harness_passes_real_configs() {
    for (dir, file) in [
        ("stories260k", "config.json"),
        ("opus-mt-tc-big-en-pt-tokenizer", "config.json"),
        ("aren-transliteration-ct2", "config.json"),
    ] {
        let text = std::fs::read_to_string(shared_model(dir).expect("shared model").join(file)).expect("read");
        let steps = harness::config(&text);
        assert!(steps.get("model").is_some_and(|r| r.is_ok()), "{dir}: {steps:?}");
    }
    let text = std::fs::read_to_string(
        shared_model("stories260k")
            .expect("shared model")
            .join("generation_config.json"),
    )
    .expect("read");
    let steps = harness::config(&text);
    assert!(steps.get("generation").is_some_and(|r| r.is_ok()), "{steps:?}");
}

/// Slim llama GGUFs written by the `gguf` package (tools/scripts/fuzz_seeds.py from the shared SmolLM2 GGUF: its
/// tokenizer cut to 320 tokens, one block of random weights): fuzz seeds, imported whole. slim_q4_1_tied is all
/// Q4_1; slim_q5_0_q4_k mixes Q5_0 with a Q4_K ffn_down (quantised by llama.cpp), as a Q4_K_M file does.
#[test]
fn harness_passes_slim_gguf() {
    for file in ["slim_q4_1_tied.gguf", "slim_q5_0_q4_k.gguf"] {
        let path = regressions("valid").join(file);
        let tmp = scratch("gguf");
        let steps = harness::gguf(&path, &tmp.path().join("imported"));
        assert_all_ok(file, &steps);
        // open, 11 tensors dequantised, llama_params, import (the tokenizer step only runs when the import fails).
        assert_eq!(steps.0.len(), 14, "{file}: {steps:?}");
        assert!(steps.get("import").is_some(), "{file}: {steps:?}");
    }
}

#[test]
fn harness_passes_real_tokenizer_files() {
    let opus = shared_model("opus-mt-tc-big-en-pt-tokenizer").expect("shared model");
    for spm in ["source.spm", "target.spm"] {
        let steps = harness::spm_model(&read(&opus.join(spm)));
        assert_all_ok(spm, &steps);
        assert_eq!(steps.0.len(), 2 + 2 * harness::TEXTS.len(), "{steps:?}");
    }
    let stories = shared_model("stories260k").expect("shared model");
    let steps = harness::llama2c_tokenizer(&read(&stories.join("tok512.bin")));
    assert_all_ok("tok512.bin", &steps);
    assert!(steps.0.len() > harness::TEXTS.len(), "{steps:?}");

    let aren = shared_model("aren-transliteration-ct2").expect("shared model");
    let mut vocab = read(&aren.join("source_vocabulary.txt"));
    vocab.push(harness::VOCAB_SPLIT);
    vocab.extend(read(&aren.join("target_vocabulary.txt")));
    let tmp = scratch("vocab");
    let steps = harness::vocab_file(&vocab, tmp.path());
    assert_all_ok("aren vocabularies", &steps);
    assert!(steps.0.len() > harness::TEXTS.len(), "{steps:?}");

    for dir in ["hf_bpe", "hf_unigram"] {
        let tmp = scratch("hf");
        let steps = harness::hf_tokenizer_json(
            &read(&fixture("tokenizers").join(dir).join("tokenizer.json")),
            tmp.path(),
        );
        assert_all_ok(dir, &steps);
        assert!(steps.0.len() > harness::TEXTS.len(), "{steps:?}");
    }

    let tokenizers = harness::text_tokenizers();
    let steps = harness::tokenizer_text(&tokenizers, "Hello, world! Olá, mundo. ünïcödé 🙂".as_bytes());
    assert_all_ok("text", &steps);
    assert_eq!(steps.0.len(), tokenizers.len(), "{steps:?}");
}
