//! `qkv generate` end to end on the real stories260K: streamed text, `--json`, stdin prompts, errors.

use std::io::Write;
use std::process::{Command, Stdio};

fn qkv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qkv"))
}

fn stories() -> String {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    dir.to_str().unwrap().to_string()
}

fn reference_run(i: usize) -> serde_json::Value {
    let path = loaders::paths::fixture("stories260k").join("reference.json");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    meta["runs"][i].clone()
}

#[test]
fn streams_the_greedy_text() {
    let run = reference_run(1);
    let out = qkv()
        .args(["generate", "--model", &stories(), "--max-new-tokens", "64"])
        .args(["--prompt", run["prompt"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", run["text"].as_str().unwrap())
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("tok/s") && err.contains("TTFT"), "{err}");
}

#[test]
fn json_from_stdin() {
    let run = reference_run(2);
    let mut child = qkv()
        .args(["generate", "--model", &stories(), "--max-new-tokens", "64", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", run["prompt"].as_str().unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"], run["text"]);
    assert_eq!(v["tokens"], run["greedy_ids"]);
    assert_eq!(v["timing"]["generated_tokens"], 64);
}

/// `--beam-size 4` prints the best beam of the library's decoder-only beam search (itself checked against
/// transformers' `num_beams=4` in engine/tests/families.rs), as text or `--json`.
#[test]
fn beam_size_prints_the_best_beam() {
    let run = reference_run(1);
    let prompt = run["prompt"].as_str().unwrap();
    let model = qkv::Model::load(stories()).unwrap();
    let ids = model.prompt_ids(prompt, qkv::PromptFormat::Plain).unwrap();
    let best = model
        .generate_beam_ids(&ids, &model.beam_options(4, 24))
        .unwrap()
        .swap_remove(0);
    let out = qkv()
        .args([
            "generate",
            "--model",
            &stories(),
            "--max-new-tokens",
            "24",
            "--beam-size",
            "4",
            "--json",
        ])
        .args(["--prompt", prompt])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens"], serde_json::json!(best.tokens));
    assert!((v["score"].as_f64().unwrap() as f32 - best.score).abs() <= 1e-6);
    let text = qkv()
        .args([
            "generate",
            "--model",
            &stories(),
            "--max-new-tokens",
            "24",
            "--beam-size",
            "4",
        ])
        .args(["--prompt", prompt])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(text.stdout).unwrap(),
        format!("{}\n", v["text"].as_str().unwrap())
    );
    let bad = qkv()
        .args([
            "generate",
            "--model",
            &stories(),
            "--beam-size",
            "4",
            "--temperature",
            "0.5",
            "--prompt",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--beam-size"));
}

#[test]
fn errors_are_one_line_and_fail() {
    for args in [
        vec!["generate", "--model", "/nonexistent/dir", "--prompt", "x"],
        vec!["generate", "--model", &stories(), "--prompt", "x", "--temperature=-1"],
    ] {
        let out = qkv().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("qkv: error: "), "{err}");
    }
}
