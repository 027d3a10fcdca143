//! `SafeTensors::open_index` on any bytes as `model.safetensors.index.json`, beside the three shards of the
//! `loaders-tiny-llama-sharded` fixture (see the shared harness).
#![no_main]

#[path = "../../tests/fuzz_regressions/harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static INDEX: OnceLock<std::path::PathBuf> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let dir = harness::scratch_dir("safetensors_index");
        harness::copy_sharded_fixture(&dir);
        dir.join("model.safetensors.index.json")
    });
    std::fs::write(index, data).expect("write the input");
    harness::safetensors_index(index);
});
