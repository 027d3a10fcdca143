//! The C ABI (tools/capi) from C and C++: the examples, compiled with the system `cc` / `c++` against the
//! built library, give the tokens of `qkv generate --greedy` and `qkv translate` on the shared stories260k
//! and aren models; `tests/c/capi_test.c` runs every error path and the thread sharing from C.

use std::path::{Path, PathBuf};
use std::process::Command;

use loaders::paths::{fixture, shared_model};

/// Where cargo put libqkv_capi.so / .a: beside this test binary (target/<profile>/deps).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        if dir.join("libqkv_capi.so").is_file() && dir.join("libqkv_capi.a").is_file() {
            return dir;
        }
    }
    panic!(
        "libqkv_capi.so/.a not found beside {} (qkv-capi is a dev-dependency of tools)",
        exe.display()
    );
}

fn capi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("capi")
}

#[derive(Clone, Copy)]
enum Link {
    /// libqkv_capi.so, found at run time through an rpath.
    Shared,
    /// libqkv_capi.a and what the Rust standard library needs from the system.
    Static,
}

#[derive(Clone, Copy)]
enum Lang {
    C,
    Cpp,
}

/// Compile `source` with the system `cc` (C11) or `c++` (C++17), warnings as errors, into a temporary
/// directory: the directory (the executable lives as long as it) and the executable.
fn build(lang: Lang, source: &Path, link: Link) -> (tempfile::TempDir, PathBuf) {
    let (compiler, std) = match lang {
        Lang::C => ("cc", "c11"),
        Lang::Cpp => ("c++", "c++17"),
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(source.file_stem().unwrap());
    let lib = lib_dir();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(capi_dir().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&out);
    match link {
        Link::Shared => {
            cmd.arg(format!("-L{}", lib.display()))
                .arg("-lqkv_capi")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
        Link::Static => {
            cmd.arg(lib.join("libqkv_capi.a"));
        }
    }
    cmd.args(["-lpthread", "-ldl", "-lm"]);
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        o.status.success(),
        "{compiler} {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    (dir, out)
}

/// A source of tools/capi.
fn capi_source(path: &str) -> PathBuf {
    capi_dir().join(path)
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

fn stories() -> PathBuf {
    shared_model("stories260k").expect("shared model")
}

fn aren() -> PathBuf {
    shared_model("aren-transliteration-ct2").expect("shared model")
}

/// `(text, tokens)` of `qkv generate --greedy --json`.
fn cli_generate(model: &Path, prompt: &str, max_new: usize) -> (String, Vec<u32>) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["generate", "--greedy", "--json", "--model"])
        .arg(model)
        .args(["--prompt", prompt, "--max-new-tokens", &max_new.to_string()]));
    text_and_tokens(&out)
}

/// `(text, tokens)` of one JSON object of the CLI.
fn text_and_tokens(json: &str) -> (String, Vec<u32>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let tokens = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    (v["text"].as_str().unwrap().to_string(), tokens)
}

/// `(text, tokens)` per sentence of `qkv translate --json` with `extra` options.
fn cli_translate(model: &Path, texts: &[&str], extra: &[&str]) -> Vec<(String, Vec<u32>)> {
    let out = run(Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["translate", "--json", "--model"])
        .arg(model)
        .args(extra)
        .args(texts));
    out.lines().map(text_and_tokens).collect()
}

/// The examples' generate output: the streamed text, a newline, "tokens: ...", "stop: ...".
fn parse_generate(out: &str) -> (String, Vec<u32>, String) {
    let (text, rest) = out.rsplit_once("\ntokens:").expect("a tokens line");
    let (ids, stop) = rest.split_once("\nstop: ").expect("a stop line");
    let tokens = ids.split_whitespace().map(|t| t.parse().unwrap()).collect();
    (text.to_string(), tokens, stop.trim_end().to_string())
}

/// The examples' translate output: "text<TAB>ids" per line.
fn parse_translate(out: &str) -> Vec<(String, Vec<u32>)> {
    out.lines()
        .map(|l| {
            let (text, ids) = l.split_once('\t').expect("text<TAB>ids");
            (
                text.to_string(),
                ids.split_whitespace().map(|t| t.parse().unwrap()).collect(),
            )
        })
        .collect()
}

const PROMPTS: [&str; 2] = ["Once upon a time", "Lily went to the park"];
const MAX_NEW_TOKENS: usize = 64;

/// Some aren sources (Arabic names) from the CTranslate2 fixture.
fn aren_sources() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("aren-ct2").join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["sources"].as_array().unwrap()[..12]
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn check_generate(exe: &Path, mode: Option<&str>) {
    for prompt in PROMPTS {
        let (want_text, want_tokens) = cli_generate(&stories(), prompt, MAX_NEW_TOKENS);
        let mut cmd = Command::new(exe);
        cmd.args(mode)
            .arg(stories())
            .arg(prompt)
            .arg(MAX_NEW_TOKENS.to_string());
        let (text, tokens, stop) = parse_generate(&run(&mut cmd));
        assert_eq!(tokens, want_tokens, "{} {prompt:?}", exe.display());
        assert_eq!(text, want_text, "{} {prompt:?}", exe.display());
        let want_stop = if tokens.len() == MAX_NEW_TOKENS {
            "max_tokens"
        } else {
            "eos"
        };
        assert_eq!(stop, want_stop);
    }
}

fn check_translate(exe: &Path, mode: Option<&str>) {
    let sources = aren_sources();
    let texts: Vec<&str> = sources.iter().map(String::as_str).collect();
    let mut beams: Vec<Vec<&str>> = vec![vec![]];
    // the C example also takes a beam size: greedy as well as the model's default (beam 2)
    if mode.is_none() {
        beams.push(vec!["--beam-size", "1"]);
    }
    for beam in beams {
        let want = cli_translate(&aren(), &texts, &beam);
        assert_eq!(want.len(), texts.len());
        let mut cmd = Command::new(exe);
        cmd.args(mode).arg(aren()).args(&beam).args(&texts);
        let got = parse_translate(&run(&mut cmd));
        assert_eq!(got, want, "{} {beam:?}", exe.display());
    }
}

#[test]
fn c_generate_example_gives_the_cli_tokens() {
    let (_dir, exe) = build(Lang::C, &capi_source("examples/generate.c"), Link::Shared);
    check_generate(&exe, None);
}

#[test]
fn c_translate_example_gives_the_cli_tokens() {
    let (_dir, exe) = build(Lang::C, &capi_source("examples/translate.c"), Link::Shared);
    check_translate(&exe, None);
}

#[test]
fn cpp_example_linked_statically_gives_the_cli_tokens() {
    let (_dir, exe) = build(Lang::Cpp, &capi_source("examples/example.cpp"), Link::Static);
    check_generate(&exe, Some("generate"));
    check_translate(&exe, Some("translate"));
}

#[test]
fn c_error_paths_callback_stop_and_threads() {
    let (_dir, exe) = build(Lang::C, &capi_source("tests/c/capi_test.c"), Link::Shared);
    let out = run(Command::new(&exe).arg(stories()).arg(aren()));
    let last = out.lines().last().unwrap_or_default();
    let (passed, failed) = last
        .split_once(" passed, ")
        .map(|(p, f)| {
            (
                p.parse::<usize>().unwrap(),
                f.trim_end_matches(" failed").parse::<usize>().unwrap(),
            )
        })
        .unwrap_or_else(|| panic!("no summary line in {out:?}"));
    assert_eq!(failed, 0, "{out}");
    // every CHECK of capi_test.c ran (a count that drops means a section stopped early)
    assert!(passed >= 150, "only {passed} checks ran:\n{out}");
    println!("capi_test.c: {last}");
}

/// The fenced code block of `lang` in `section` of README.md.
fn readme_block(section: &str, lang: &str) -> String {
    let path = loaders::paths::repo_root().join("README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(&format!("## {section}"))
        .unwrap_or_else(|| panic!("no section {section:?}"));
    let fence = format!("```{lang}\n");
    let body = &text[start..];
    let open = body
        .find(&fence)
        .unwrap_or_else(|| panic!("no {lang} block in {section:?}"))
        + fence.len();
    let close = body[open..].find("```").unwrap();
    body[open..open + close].to_string()
}

#[test]
fn readme_c_example_runs_as_written() {
    let snippet = readme_block("Use from C", "c");
    assert!(snippet.lines().count() <= 5, "five lines:\n{snippet}");
    let models = format!("{}/", loaders::paths::shared_models_dir().display());
    let program = format!(
        "#include <stdio.h>\n#include \"qkv.h\"\nint main(void) {{\n{}\nreturn 0;\n}}\n",
        snippet.replace("../shared/models/", &models)
    );
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("app.c");
    std::fs::write(&source, program).unwrap();
    let (_dir, exe) = build(Lang::C, &source, Link::Shared);
    let out = run(&mut Command::new(&exe));
    let (want, _) = cli_generate(&stories(), "Once upon a time", 128);
    assert_eq!(out, format!("{want}\n"));
}
