//! `GgufFile::open` on any bytes written to a file, then dequantisation of every tensor, the tokenizer, the
//! llama parameters and the whole import (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let (file, out_dir) = PATHS.get_or_init(|| {
        let dir = harness::scratch_dir("gguf");
        (dir.join("input.gguf"), dir.join("imported"))
    });
    std::fs::write(file, data).expect("write the input");
    harness::gguf(file, out_dir);
});
