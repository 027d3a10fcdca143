//! The `qkv` binary on bad requests (issue 7 item 2): a non-zero exit and a one-line `qkv: error: ...`
//! naming the problem, never a Rust panic or backtrace. Runs the built binary on the real stories260k
//! and aren-transliteration-ct2 models.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Exit code of a failed command (`ExitCode::FAILURE`).
const FAILURE: i32 = 1;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `qkv args...` with `stdin` piped in.
fn qkv(args: &[&str], stdin: &[u8]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qkv");
    let mut input = child.stdin.take().unwrap();
    // The process may exit before reading everything (a load error): ignore a broken pipe.
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Assert a clean failure: exit 1, the last stderr line is `qkv: error: ...` containing each of `parts`,
/// and nothing on stderr looks like a panic.
fn assert_fails(out: &Out, parts: &[&str]) {
    assert_eq!(out.code, Some(FAILURE), "stderr: {}", out.stderr);
    for bad in ["panicked", "backtrace", "internal error", "RUST_BACKTRACE"] {
        assert!(!out.stderr.contains(bad), "stderr looks like a panic: {}", out.stderr);
    }
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("qkv: error: "), "last stderr line: {last:?}");
    assert_eq!(
        out.stderr.lines().filter(|l| l.starts_with("qkv: error")).count(),
        1,
        "one error line: {}",
        out.stderr
    );
    for p in parts {
        assert!(last.contains(p), "{last:?} should mention {p:?}");
    }
}

fn stories() -> String {
    path(loaders::paths::shared_model("stories260k").expect("shared model stories260k"))
}

fn aren() -> String {
    path(loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model aren"))
}

fn path(p: PathBuf) -> String {
    p.to_str().unwrap().to_string()
}

fn copy_dir(src: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    loaders::paths::copy_files(src, tmp.path()).unwrap();
    tmp
}

#[test]
fn generate_succeeds_on_a_good_request() {
    // The baseline the failures are measured against.
    let out = qkv(
        &[
            "generate",
            "--model",
            &stories(),
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "8",
        ],
        b"",
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(!out.stdout.trim().is_empty());
}

#[test]
fn generate_invalid_utf8_on_stdin_names_line_and_byte() {
    let out = qkv(
        &["generate", "--model", &stories(), "--max-new-tokens", "4"],
        b"Once upon\na ti\xC3\x28me\n",
    );
    assert_fails(&out, &["line 2", "byte 5", "0xc3", "UTF-8"]);
}

#[test]
fn translate_invalid_utf8_on_stdin_names_line_and_byte() {
    let out = qkv(&["translate", "--model", &aren()], b"salam\nkitab\n\xFFbayt\n");
    assert_fails(&out, &["line 3", "byte 1", "0xff"]);
}

#[test]
fn generate_bad_sampling_options() {
    let s = stories();
    for (flag, value, name) in [
        ("--top-p", "1.5", "top_p"),
        ("--top-p", "0", "top_p"),
        ("--temperature", "-1", "temperature"),
        ("--temperature", "NaN", "temperature"),
        ("--min-p", "2", "min_p"),
    ] {
        // `--flag=value`: a separate "-1" would be read as an option.
        let out = qkv(
            &[
                "generate",
                "--model",
                &s,
                "--prompt",
                "Once",
                &format!("{flag}={value}"),
            ],
            b"",
        );
        assert_fails(&out, &[name]);
    }
}

#[test]
fn generate_prompt_longer_than_context() {
    // stories260k holds 512 positions; 600 words are more tokens than that.
    let prompt = "cat ".repeat(600);
    let out = qkv(&["generate", "--model", &stories(), "--prompt", &prompt], b"");
    assert_fails(&out, &["prompt", "512"]);
}

#[test]
fn generate_missing_or_broken_model_dir() {
    let out = qkv(&["generate", "--model", "/nonexistent/qkv", "--prompt", "x"], b"");
    assert_fails(&out, &["/nonexistent/qkv"]);
    let dir = copy_dir(Path::new(&stories()));
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let out = qkv(&["generate", "--model", &path(dir.path().into()), "--prompt", "x"], b"");
    assert_fails(&out, &["config.json"]);
    let dir = copy_dir(Path::new(&stories()));
    std::fs::write(dir.path().join("model.safetensors"), b"not a safetensors file").unwrap();
    let out = qkv(&["generate", "--model", &path(dir.path().into()), "--prompt", "x"], b"");
    assert_fails(&out, &["model.safetensors"]);
}

#[test]
fn translate_bad_requests() {
    let a = aren();
    assert_fails(
        &qkv(&["translate", "--model", &a, "--beam-size", "0", "salam"], b""),
        &["beam"],
    );
    assert_fails(
        &qkv(&["translate", "--model", &a, "--max-length", "0", "salam"], b""),
        &["max_new_tokens"],
    );
    assert_fails(
        &qkv(&["translate", "--model", &a, "--batch-size", "0", "salam"], b""),
        &["batch_size"],
    );
    // A source longer than the model's positions.
    let long = "س".repeat(2000);
    assert_fails(&qkv(&["translate", "--model", &a, &long], b""), &["positions"]);
    // A decoder-only model is not a translation model (generate on a translation model encodes the prompt and
    // decodes: tools/tests/seq2seq_cli.rs).
    assert_fails(
        &qkv(&["translate", "--model", &stories(), "x"], b""),
        &["encoder-decoder"],
    );
}

#[test]
fn import_gguf_bad_files() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = path(out_dir.path().join("m"));
    assert_fails(
        &qkv(&["import-gguf", "/nonexistent/x.gguf", "--out", &out], b""),
        &["/nonexistent/x.gguf"],
    );
    let junk = out_dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").unwrap();
    assert_fails(&qkv(&["import-gguf", &path(junk), "--out", &out], b""), &["junk.gguf"]);
}

#[test]
fn bad_arguments_are_usage_errors_not_panics() {
    let out = qkv(&["generate", "--max-new-tokens", "-3"], b"");
    assert_eq!(out.code, Some(2), "clap usage error: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn empty_inputs_have_documented_results() {
    // An empty prompt is BOS alone for stories260k (its tokenizer adds BOS): generation runs.
    let out = qkv(
        &[
            "generate",
            "--model",
            &stories(),
            "--prompt",
            "",
            "--max-new-tokens",
            "5",
        ],
        b"",
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("prompt 1 tokens"), "{}", out.stderr);
    // Empty stdin: no sentences, no output, success.
    let out = qkv(&["translate", "--model", &aren()], b"");
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "");
    // An empty line still gets its output line, so output lines stay aligned with input lines.
    let out = qkv(&["translate", "--model", &aren()], "سلام\n\nكتاب\n".as_bytes());
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 3, "{:?}", out.stdout);
}

/// Run `qkv args...` with `QKV_ISA` set.
fn qkv_with_isa(isa: &str, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .env("QKV_ISA", isa)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run qkv");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn forcing_an_isa_this_cpu_lacks_is_one_line_naming_the_missing_flags() {
    let model = stories();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "Once",
        "--max-new-tokens",
        "2",
    ];
    // Every build has ISAs of another architecture; x86-64 hosts without AVX-512 add that one.
    let lacking: Vec<kernels::Isa> = kernels::Isa::ALL.into_iter().filter(|i| !i.is_supported()).collect();
    assert!(!lacking.is_empty());
    for isa in lacking {
        let out = qkv_with_isa(isa.name(), &args);
        let mut parts = vec![format!("QKV_ISA={isa}")];
        parts.extend(isa.missing().iter().map(|m| m.to_string()));
        assert_fails(&out, &parts.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.stdout.is_empty());
    }
    // The ISA this CPU has runs.
    let out = qkv_with_isa(kernels::Isa::best().name(), &args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn attention_and_explain_bad_requests_name_the_problem() {
    let (s, a) = (stories(), aren());
    let long_ids = vec!["5"; 600].join(",");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("sub");
    let under_file = under_file.to_str().unwrap();
    let png = format!("{under_file}/map.png");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["attention", "--model", &s, "--prompt", "Hi", "--layer", "9"],
            &["--layer 9", "5 layers"],
        ),
        (
            &["attention", "--model", &s, "--prompt", "Hi", "--head", "8"],
            &["--head 8", "8 heads"],
        ),
        (&["attention", "--model", &s, "--prompt", ""], &["--prompt", "empty"]),
        (
            &["attention", "--model", &s, "--ids", &long_ids],
            &["600 tokens", "context of 512"],
        ),
        (
            &["attention", "--model", &s, "--prompt", "Hi", "--out", &png],
            &["cannot write", &png],
        ),
        (
            &["attention", "--model", &a, "--prompt", "x"],
            &["attention", "encoder-decoder"],
        ),
        (
            &["translate", "--model", &a, "--attention", "--layer", "6", "x"],
            &["--layer 6", "6 layers"],
        ),
        (
            &["translate", "--model", &a, "--attention", "--head", "8", "x"],
            &["--head 8", "8 heads"],
        ),
        (
            &["translate", "--model", &a, "--attention", "--out-dir", under_file, "x"],
            &["--out-dir", under_file],
        ),
        (
            &["explain", "--model", &s, "--layer", "7", "Hi"],
            &["layer 7", "5 layers"],
        ),
        (&["explain", "--model", &s, "--head", "9", "Hi"], &["head 9", "8 heads"]),
        (&["explain", "--model", &s, ""], &["empty"]),
        (
            &["explain", "--model", &s, "--ids", &long_ids],
            &["600 tokens", "context of 512"],
        ),
        (&["explain", "--toy", "--layer", "1"], &["--layer 1", "one layer"]),
    ];
    for (args, parts) in cases {
        let out = qkv(args, b"");
        assert_fails(&out, parts);
    }
}
