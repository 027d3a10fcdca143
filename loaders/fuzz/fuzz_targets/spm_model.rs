//! A SentencePiece model (`.spm` / `.model` protobuf) from any bytes, then normalize / encode / decode of fixed
//! texts (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::spm_model(data);
});
