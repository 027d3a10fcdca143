//! Files to typed views, with every check of untrusted input.
//!
//! A model file is hostile until validated: every loader here returns a specific
//! [`Error`] naming the file, the tensor and what was expected versus found, and never panics.

pub mod config;
pub mod error;
pub mod gguf;
pub mod paths;
pub mod safetensors;
pub mod tensor;
pub mod tokenizer;

pub use error::{Error, Result};
pub use tensor::{Dtype, Tensor, TensorData};
