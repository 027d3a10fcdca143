//! `qkv translate --source-lang / --target-lang / --list-languages` on the NLLB-shape and mBART-50 fixtures and
//! `qkv generate` on the T5 fixture, against transformers' tokenizers and `generate` (tools/fixtures/seq2seq-text,
//! made by tools/scripts/make_seq2seq_text_fixtures.py), and their errors.

#[path = "../../engine/tests/hash_weights/mod.rs"]
mod hash_weights;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn qkv(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .args(["--threads", "1"])
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn model(name: &str) -> (PathBuf, serde_json::Value) {
    let (dir, _) =
        hash_weights::fixture_model_dir(&loaders::paths::fixture("seq2seq").join(name), &format!("cli-{name}"));
    let path = loaders::paths::fixture("seq2seq-text")
        .join(name)
        .join("reference.json");
    let refs = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (dir, refs)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn translate_with_languages_matches_hf() {
    for name in ["nllb", "mbart50"] {
        let (dir, refs) = model(name);
        let max_new = refs["max_new_tokens"].to_string();
        for case in refs["cases"].as_array().unwrap() {
            let out = &case["outputs"].as_array().unwrap()[1];
            assert_eq!(out["num_beams"], 4);
            let mut args = vec![
                "translate",
                "--model",
                path(&dir),
                "--beam-size",
                "4",
                "--max-length",
                &max_new,
            ];
            args.extend(["--json", case["text"].as_str().unwrap()]);
            args.extend(["--target-lang", case["target_lang"].as_str().unwrap()]);
            if let Some(src) = case["source_lang"].as_str() {
                args.extend(["--source-lang", src]);
            }
            let r = qkv(&args);
            assert!(r.ok, "{name}: {}", r.stderr);
            let got: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
            assert_eq!(ids(&got["tokens"]), ids(&out["tokens"]), "{name}: {args:?}");
            assert_eq!(got["text"], out["text"], "{name}: {args:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn list_languages_and_unknown_codes() {
    let (dir, _) = model("nllb");
    let r = qkv(&["translate", "--model", path(&dir), "--list-languages"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "deu_Latn\neng_Latn\nfra_Latn\n");
    let r = qkv(&["translate", "--model", path(&dir), "--target-lang", "xx_Latn", "w10"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("unknown target language \"xx_Latn\""), "{}", r.stderr);
    assert!(r.stderr.contains("--list-languages"), "{}", r.stderr);
    assert_eq!(
        r.stderr.lines().filter(|l| l.contains("error")).count(),
        1,
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);

    let (dir, _) = model("t5");
    let r = qkv(&["translate", "--model", path(&dir), "--source-lang", "en", "w10"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("t5 is not a multilingual translation model"),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_on_t5_matches_hf_greedy() {
    let (dir, refs) = model("t5");
    let max_new = refs["max_new_tokens"].to_string();
    // `qkv generate` on the prompt, with `extra` arguments
    let generate = |prompt: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            path(&dir),
            "--prompt",
            prompt,
            "--max-new-tokens",
            &max_new,
        ];
        args.extend(extra);
        let r = qkv(&args);
        assert!(r.ok, "{}", r.stderr);
        r.stdout
    };
    for case in refs["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let got: serde_json::Value = serde_json::from_str(generate(prompt, &["--json"]).trim()).unwrap();
        assert_eq!(ids(&got["tokens"]), ids(&case["greedy"]["tokens"]), "{prompt}");
        assert_eq!(got["text"], case["greedy"]["text"], "{prompt}");
    }
    // streamed text: the same as the JSON's, one line
    let case = &refs["cases"][0];
    let streamed = generate(case["prompt"].as_str().unwrap(), &[]);
    assert_eq!(streamed, format!("{}\n", case["greedy"]["text"].as_str().unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
}
