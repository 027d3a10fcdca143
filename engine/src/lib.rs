//! qkv: a hand-tuned CPU inference engine for Transformer models.
//!
//! Re-exports what users need from the `kernels` and `loaders` crates.

pub mod beam;
pub mod decoder;
pub mod error;

pub use decoder::Decoder;
pub use error::{Error, Result};
pub use kernels::{Isa, Kernels};
pub use loaders;
