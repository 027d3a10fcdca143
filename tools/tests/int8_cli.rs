//! `--weights int8|q8_0|q4_0` on the command line: `qkv generate` gives the tokens of the library's model with those
//! weights, `qkv translate` runs int8 and says so, and an unknown weight type is a one-line usage error.

use std::process::Command;

use qkv::{GenerateOptions, LoadOptions, Model, WeightType};

fn qkv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qkv"))
}

#[test]
fn generate_quantized_matches_the_library() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let (prompt, n) = ("Once upon a time", 32);
    for weights in [WeightType::Int8, WeightType::Q8_0, WeightType::Q4_0] {
        let out = qkv()
            .args([
                "generate",
                "--model",
                dir.to_str().unwrap(),
                "--prompt",
                prompt,
                "--json",
            ])
            .args(["--max-new-tokens", &n.to_string(), "--weights", weights.name()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{weights}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The library, loaded with the same weights, greedy (the CLI default without sampling options).
        let opts = LoadOptions {
            weights,
            ..Default::default()
        };
        let want = Model::load_with(&dir, &opts)
            .unwrap()
            .generate(
                prompt,
                &GenerateOptions {
                    max_new_tokens: n,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(v["tokens"], serde_json::json!(want.tokens), "{weights}");
        assert_eq!(v["text"], serde_json::json!(want.text), "{weights}");
    }
}

#[test]
fn translate_int8_runs_and_says_so() {
    let model = loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model");
    let out = qkv()
        .args([
            "translate",
            "--model",
            model.to_str().unwrap(),
            "--weights",
            "int8",
            "--json",
        ])
        .args(["مرحبا", "كتاب"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines.iter().all(|l| !l["text"].as_str().unwrap().is_empty()),
        "{lines:?}"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("weights int8"), "{err}");
}

#[test]
fn unknown_weight_type_is_a_usage_error() {
    let out = qkv()
        .args(["generate", "--model", "x", "--prompt", "x", "--weights", "int4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("int4") && err.contains("stored, int8, q8_0, q4_0 or q4_k"),
        "{err}"
    );
}
