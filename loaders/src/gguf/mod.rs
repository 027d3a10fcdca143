//! GGUF (llama.cpp's model format): a bounds-checked reader over a memory map, the quantised block formats
//! ([`blocks`]: one struct per type, readable in place), dequantisation to f32, and an importer to a Hugging Face
//! model directory.
//!
//! ```no_run
//! use loaders::gguf::{GgufFile, ImportOptions, import_to_hf_dir};
//! # fn main() -> loaders::Result<()> {
//! let f = GgufFile::open("model.gguf".as_ref())?;
//! let embd = f.dequantize("token_embd.weight")?; // f32, row-major over TensorInfo::shape()
//! let info = f.tensor_info("blk.0.ffn_down.weight").unwrap();
//! let q4k: &[loaders::gguf::blocks::BlockQ4K] = f.blocks(info)?; // in place over the memory map
//! import_to_hf_dir("model.gguf".as_ref(), "out_dir".as_ref(), &ImportOptions::default())?;
//! # Ok(()) }
//! ```

pub mod arch;
pub mod blocks;
pub mod dequant;
pub mod import;
pub mod reader;
pub mod tokenizer;

pub use arch::Arch;
pub use import::{import_to_hf_dir, HfModel, HfTensor, ImportOptions, LlamaParams};
pub use reader::{GgmlType, GgufArray, GgufFile, GgufValue, TensorInfo, DEFAULT_ALIGNMENT};
