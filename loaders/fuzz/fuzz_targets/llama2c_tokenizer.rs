//! A llama2.c `tokenizer.bin` from any bytes, then encode / decode of fixed texts and ids (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::llama2c_tokenizer(data);
});
