//! `SafeTensors::open` on any bytes written to a file, then every tensor (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = FILE.get_or_init(|| harness::scratch_dir("safetensors").join("input.safetensors"));
    std::fs::write(path, data).expect("write the input");
    harness::safetensors(path);
});
