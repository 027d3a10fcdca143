//! CTranslate2 source/target vocabulary files from any bytes (split at 0xFF), then encode / decode of fixed
//! texts and ids (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    harness::vocab_file(data, DIR.get_or_init(|| harness::scratch_dir("vocab_file")));
});
