//! `qkv explain`: the toy trace equals an independent NumPy recomputation number for number
//! (tools/scripts/explain_toy.py, fixture tools/fixtures/explain-toy), its text shows the textbook numbers, and
//! on a real model (stories260k) the traced head's weights are the ones `qkv attention` reports.

use std::process::Command;

/// Max |qkv - NumPy| of a toy number. Both compute in f64 from the same exact weights (quarters) but sum in
/// different orders: a few ulps of values below 10 (~1e-15); 1e-12 leaves room for exp/sin/cos implementations.
const TOY_TOL: f64 = 1e-12;

/// Max |explain - attention| of a weight: both are the same recording pass (f32 weights printed in full), so
/// they are equal; explain prints them widened to f64.
const SAME_PASS_TOL: f64 = 0.0;

fn qkv(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .output()
        .expect("run qkv");
    assert!(
        out.status.success(),
        "qkv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every number of `want` (recursively) equals `got`'s within `tol`; nulls, strings and shapes equal.
fn compare(path: &str, got: &serde_json::Value, want: &serde_json::Value, tol: f64) -> usize {
    use serde_json::Value::*;
    match (got, want) {
        (Number(g), Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= tol, "{path}: qkv {g} vs NumPy {w}");
            1
        }
        (Array(g), Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: length");
            g.iter()
                .zip(w)
                .enumerate()
                .map(|(i, (g, w))| compare(&format!("{path}[{i}]"), g, w, tol))
                .sum()
        }
        (Object(g), Object(w)) => w
            .iter()
            .map(|(k, w)| {
                compare(
                    &format!("{path}.{k}"),
                    g.get(k).unwrap_or_else(|| panic!("{path}.{k} missing")),
                    w,
                    tol,
                )
            })
            .sum(),
        (g, w) => {
            assert_eq!(g, w, "{path}");
            0
        }
    }
}

#[test]
fn toy_trace_matches_numpy_number_for_number() {
    let got: serde_json::Value = serde_json::from_str(&qkv(&["explain", "--toy", "--json"])).unwrap();
    let path = loaders::paths::fixture("explain-toy").join("reference.json");
    let mut want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    want.as_object_mut().unwrap().remove("made_by");
    let n = compare("trace", &got, &want, TOY_TOL);
    eprintln!("explain --toy: {n} numbers equal NumPy's within {TOY_TOL:e}");
    // 7 tables of 6 x 4, 21 visible scores, 36 weights, 36 statistics, sums, ids, top tokens, the warm-up
    assert!(n >= 290, "only {n} numbers compared");
}

#[test]
fn toy_text_shows_the_textbook_numbers() {
    let text = qkv(&["explain", "--toy"]);
    for part in [
        "LayerNorm of (1, 3, 5): μ = 3, σ = √(Σ(x-μ)²/n) = 1.633, (x - μ)/σ = (-1.2247, 0.0000, 1.2247)",
        "Cat is sleeping on the mat".split(' ').next().unwrap(),
        "-inf",
        "sum 1.000000",
        "α₁,₀ = exp(",
        "positional encoding (sinusoidal)",
        "Most likely next tokens after \"mat\"",
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

#[test]
fn model_trace_weights_are_the_attention_maps() {
    let stories = loaders::paths::shared_model("stories260k").expect("shared model");
    let m = stories.to_str().unwrap();
    let args = [
        "explain",
        "--model",
        m,
        "--layer",
        "4",
        "--head",
        "3",
        "Cat is sleeping on the mat",
    ];
    let trace: serde_json::Value = serde_json::from_str(&qkv(&[&args[..], &["--json"]].concat())).unwrap();
    let ids: Vec<String> = trace["ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let att: serde_json::Value =
        serde_json::from_str(&qkv(&["attention", "--model", m, "--ids", &ids.join(","), "--json"])).unwrap();
    let n = compare("weights", &trace["weights"], &att["attentions"][4][3], SAME_PASS_TOL);
    assert_eq!(n, ids.len() * ids.len());
    assert_eq!(trace["position_kind"], "rotary");
    assert!(trace["positions"].is_null());
    for (i, s) in trace["row_sums"].as_array().unwrap().iter().enumerate() {
        assert!((s.as_f64().unwrap() - 1.0).abs() < 1e-6, "row {i} sums to {s}");
        let scores = trace["scores"][i].as_array().unwrap();
        assert!(scores[i + 1..].iter().all(|s| s.is_null()), "masked scores are null");
    }
    assert_eq!(trace["top_next"].as_array().unwrap().len(), 5);
    // the text form prints the same trace
    let text = qkv(&args);
    assert!(
        text.contains("Layer 4, head 3") && text.contains("RMSNorm (pre-norm)"),
        "{text}"
    );
}
