//! `ModelConfig::from_json` and `GenerationConfig::from_json` on any text (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loaders take &str (files are read with read_to_string): non-UTF-8 bytes never reach them.
    if let Ok(text) = std::str::from_utf8(data) {
        harness::config(text);
    }
});
