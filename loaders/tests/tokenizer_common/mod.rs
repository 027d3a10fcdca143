//! Shared helpers of the tokenizer tests: the committed corpus and reference files, and a comparison that
//! reports every mismatch with its input.
#![allow(dead_code)]

use std::fmt::Debug;

use serde_json::Value;

pub fn corpus() -> Vec<String> {
    let path = loaders::paths::fixture("tokenizers").join("corpus.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let corpus: Vec<String> = serde_json::from_str(&text).expect("corpus.json is a list of strings");
    assert!(corpus.len() >= 1000, "corpus has {} sentences", corpus.len());
    corpus
}

pub fn reference(name: &str) -> Value {
    let path = loaders::paths::fixture("tokenizers").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON")
}

pub fn ids_list(r: &Value, key: &str) -> Vec<Vec<u32>> {
    serde_json::from_value(r[key].clone()).unwrap_or_else(|e| panic!("reference field {key}: {e}"))
}

pub fn strings(r: &Value, key: &str) -> Vec<String> {
    serde_json::from_value(r[key].clone()).unwrap_or_else(|e| panic!("reference field {key}: {e}"))
}

/// Runs `f` on every input and compares with `want`; prints the count and the first mismatches (with the
/// input), then fails unless all are identical.
pub fn check_all<T: PartialEq + Debug>(what: &str, inputs: &[String], want: &[T], mut f: impl FnMut(&str) -> T) {
    assert_eq!(
        inputs.len(),
        want.len(),
        "{what}: reference has {} entries for {} inputs",
        want.len(),
        inputs.len()
    );
    let mut n_bad = 0;
    for (i, (input, w)) in inputs.iter().zip(want).enumerate() {
        let got = f(input);
        if &got != w {
            n_bad += 1;
            if n_bad <= 20 {
                eprintln!("{what}: mismatch #{i} for {input:?}\n  want {w:?}\n  got  {got:?}");
            }
        }
    }
    eprintln!("{what}: {}/{} identical", inputs.len() - n_bad, inputs.len());
    assert_eq!(
        n_bad,
        0,
        "{what}: {n_bad} of {} differ from the reference",
        inputs.len()
    );
}
