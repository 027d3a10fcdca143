//! Replays of what the fuzzers (loaders/fuzz, tools/scripts/fuzz.sh) found: each crashing input, kept under
//! `fuzz_regressions/<target>/`, must now give a clean `Err` naming the defect, through the same harness the fuzz
//! target runs. Every file of those directories is also replayed, and the harness is checked on valid files
//! (real models and fixtures), so that it is known to reach the code it fuzzes.

#[path = "fuzz_regressions/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use loaders::paths::{fixture, shared_model};

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
        _ => panic!("unknown target {target}"),
    }
}

#[test]
fn every_saved_input_replays_without_panic() {
    for target in ["safetensors", "safetensors_index", "config", "gguf"] {
        for input in inputs(target) {
            let tmp = scratch(target);
            let steps = replay(target, &input, tmp.path());
            assert!(
                steps.0.iter().any(|(_, r)| r.is_err()),
                "{}: a saved crash input must now fail cleanly somewhere: {steps:?}",
                input.display()
            );
        }
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

/// A slim llama GGUF written by the `gguf` package (tools/scripts/fuzz_seeds.py from the shared SmolLM2 GGUF:
/// its tokenizer cut to 320 tokens, one Q4_1 block of random weights): one of the fuzz seeds, imported whole.
#[test]
fn harness_passes_slim_gguf() {
    let path = regressions("valid").join("slim_q4_1_tied.gguf");
    let tmp = scratch("gguf");
    let steps = harness::gguf(&path, &tmp.path().join("imported"));
    assert_all_ok("slim gguf", &steps);
    assert!(steps.get("import").is_some(), "{steps:?}");
    assert!(steps.0.len() >= 15, "{steps:?}");
}
