//! Import a GGUF file (llama, qwen2, qwen3, phi3, gemma2, gemma3) into a Hugging Face model directory.
//!
//! `cargo run --release -p loaders --example gguf_import -- model.gguf out_dir [f32|bf16]`

use std::path::Path;
use std::time::Instant;

use loaders::gguf::{import_to_hf_dir, ImportOptions};
use loaders::Dtype;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: gguf_import <model.gguf> <out_dir> [f32|bf16]");
        std::process::exit(2);
    }
    let dtype = match args.get(3).map(String::as_str) {
        None | Some("f32") => Dtype::F32,
        Some("bf16") => Dtype::BF16,
        Some(other) => {
            eprintln!("unknown dtype {other:?} (f32 or bf16)");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    if let Err(e) = import_to_hf_dir(Path::new(&args[1]), Path::new(&args[2]), &ImportOptions { dtype }) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    eprintln!("imported {} -> {} in {:.2?}", args[1], args[2], start.elapsed());
}
