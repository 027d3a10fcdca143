//! `qkv translate` end to end on the shared CTranslate2 model, against the CTranslate2 references
//! (tools/fixtures/aren-ct2): arguments, stdin lines in order, JSON lines, errors.

use std::io::Write;
use std::process::{Command, Stdio};

use loaders::paths::{fixture, shared_model};

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("aren-ct2").join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn expected(json: &serde_json::Value, key: &str) -> Vec<String> {
    json[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn translate_stdin_lines_in_order_and_args() {
    let model = shared_model("aren-transliteration-ct2").expect("shared model");
    let json = reference();
    let names: Vec<&str> = json["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let want = expected(&json, "beam4");

    // stdin, small batches (sorted by length inside the tool), JSON lines
    let mut child = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["translate", "--model"])
        .arg(&model)
        .args(["--beam-size", "4", "--batch-size", "3", "--json", "--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all((names.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), names.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["text"].as_str().unwrap(), want[i], "line {i}");
        let score = l["score"].as_f64().unwrap();
        assert!((score - json["beam4"][i]["score"].as_f64().unwrap()).abs() < 1e-5);
        assert_eq!(l["tokens"].as_array().unwrap().last().unwrap(), 2, "ends with </s>");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tokens/s"),
        "timing on stderr"
    );

    // arguments, greedy, plain text
    let want = expected(&json, "greedy");
    let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["translate", "--model"])
        .arg(&model)
        .args(["--beam-size", "1"])
        .args(&names[..5])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        want[..5].iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[test]
fn errors_are_one_line_and_a_failure_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["translate", "--model", "/nonexistent/model", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/model"), "{err}");
}
